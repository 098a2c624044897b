"""TensorFlow's thread pools for every model the server loads (--tensorflow_*_parallelism).

TF Serving puts the thread counts in the ConfigProto of each session it creates. The embedded
server's sessions are made without a ConfigProto and so take the eager context's, which is set
here once, before the first model loads.
"""

from __future__ import annotations

import logging

from helpers.server.flags import Flags

log = logging.getLogger("helpers.server")


def session_threads(flags: Flags) -> tuple[int, int]:
    """(intra-op, inter-op) threads, by TF Serving's rules; 0 lets TensorFlow decide.

    The intra/inter flags win when either is set; otherwise --tensorflow_session_parallelism
    sets both.
    """
    intra, inter = flags.tensorflow_intra_op_parallelism, flags.tensorflow_inter_op_parallelism
    if intra > 0 or inter > 0:
        return intra, inter
    return flags.tensorflow_session_parallelism, flags.tensorflow_session_parallelism


def apply_session_threads(flags: Flags) -> tuple[int, int]:
    """Set TensorFlow's thread pools from the flags (imports TensorFlow); returns what was set."""
    intra_op, inter_op = session_threads(flags)
    if intra_op or inter_op:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        log.info("TensorFlow session threads: intra-op %d, inter-op %d", intra_op, inter_op)
    return intra_op, inter_op
