"""`python -m helpers.server --port=8500 --model_name=mnist --model_base_path=/abs/path ...`"""

import sys

from helpers.server.app import main

if __name__ == "__main__":
    sys.exit(main())
