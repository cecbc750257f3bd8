"""``python -m bigxanes.cli``."""

import sys

from . import main

sys.exit(main())
