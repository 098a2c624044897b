"""`python -m helpers.server --port=8500 --model_name=mnist --model_base_path=/abs/path ...`"""

import os
import sys

# TensorFlow's oneDNN convolution aborts the whole process when a request has the wrong rank
# (an image sent without its batch dimension) instead of returning an error; the portable CPU
# kernels answer INVALID_ARGUMENT, which a server must do for any bad input. Set before
# TensorFlow is imported; an explicit setting in the environment still wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# TensorFlow's __init__ imports Keras (and through it scikit-learn, SciPy, pandas and
# Matplotlib) only to register Keras's optimizers for `tf.saved_model.load`. The server loads
# models with the TF1 loader into a Session, as TF Serving does, and never needs them: marking
# the module absent (TensorFlow expects that it may be) halves the CPU a server takes to start.
sys.modules.setdefault("keras.src.optimizers", None)  # type: ignore[arg-type]

from helpers.server.app import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
