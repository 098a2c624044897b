"""`python -m helpers.server --port=8500 --model_name=mnist --model_base_path=/abs/path ...`"""

import os
import sys

# TensorFlow's oneDNN convolution aborts the whole process when a request has the wrong rank
# (an image sent without its batch dimension) instead of returning an error; the portable CPU
# kernels answer INVALID_ARGUMENT, which a server must do for any bad input. Set before
# TensorFlow is imported; an explicit setting in the environment still wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from helpers.server.app import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
