"""``python -m ssmref.ssm``: the SSM self-test; exit 0 iff every case passes."""

import sys

from ssmref.ssm.selftest import ssm_selftest

sys.exit(ssm_selftest())
