"""``python -m vmm.testhost run|prepare|status`` (same as ``vmm testhost ...``)."""

import sys

from vmm.testhost.cli import main

sys.exit(main())
