"""Starting subprocesses from a process with busy gRPC channels must not crash the children.

Notebooks and tests start model servers with subprocess while their own channels are live.
With gRPC's fork handlers on, about one child in ten died between fork and exec (-6 / -11);
importing `helpers` first turns them off (helpers/__init__.py).
"""

import os
import subprocess
import sys
import textwrap

from helpers import kernel

SCRIPT = textwrap.dedent(
    """
    import helpers  # first, as every course process does
    import subprocess, threading
    from concurrent import futures
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(4))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    busy = True

    def keep_grpc_busy():
        while busy:
            try:
                channel.unary_unary("/course.Nothing/Here")(b"", timeout=0.05)
            except grpc.RpcError:
                pass

    threading.Thread(target=keep_grpc_busy, daemon=True).start()
    codes = [subprocess.run(["true"], preexec_fn=lambda: None).returncode for _ in range(200)]
    busy = False
    print(sum(code != 0 for code in codes))
    """
)


def test_children_survive_fork_while_grpc_is_busy():
    # The child starts without the setting, so only `import helpers` can turn the handlers off.
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0", f"children that crashed: {done.stdout}"


def test_the_course_kernel_turns_fork_handlers_off_at_start():
    assert kernel.kernel_spec()["env"]["GRPC_ENABLE_FORK_SUPPORT"] == "false"
