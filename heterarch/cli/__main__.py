"""``python -m heterarch.cli``: the same as the ``heterarch`` command."""

import sys

from .main import main

sys.exit(main())
