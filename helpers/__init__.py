"""Shared code of the gRPC serving course: data, model, export, server, client, plots.

A notebook first shows an idea in full; later notebooks import the same function from here.
"""
