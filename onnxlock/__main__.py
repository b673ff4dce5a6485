"""``python -m onnxlock``."""

import sys

from .cli import main

sys.exit(main())
