"""``python -m ssmref.crosscheck vectors|check ...``: the same command line as
``python -m ssmref`` (see :mod:`ssmref.crosscheck.cli`)."""

import sys

from ssmref.crosscheck.cli import main

sys.exit(main())
