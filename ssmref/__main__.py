"""``python -m ssmref``: the command-line entry (see :mod:`ssmref.cli`)."""

import sys

from ssmref.cli import main

sys.exit(main())
