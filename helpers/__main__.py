"""``python -m helpers``: the command line (see :mod:`helpers.cli` and ``--help``)."""
import sys

from .cli import main

sys.exit(main())
