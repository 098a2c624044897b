"""Shared code of the gRPC serving course: data, model, export, server, client, plots.

A notebook first shows an idea in full; later notebooks import the same function from here.
"""

import os

# gRPC's fork handlers can crash a child process between fork and exec when gRPC threads are
# busy (measured here: about 1 start in 10 of a server process from a client with live
# channels). The course starts servers and tools as subprocesses, so it keeps them off. This
# only takes effect when set before gRPC starts; the course's Jupyter kernel and the test
# configuration set it at process start as well.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
