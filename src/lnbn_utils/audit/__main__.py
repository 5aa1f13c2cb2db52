"""``python -m lnbn_utils.audit``: the same command line as ``lnbn-audit``."""

import sys

from lnbn_audit import main

sys.exit(main())
