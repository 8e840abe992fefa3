"""``python -m punchcard``: the console script."""

import sys

from punchcard.server.cli import main

sys.exit(main())
