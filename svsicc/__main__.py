"""``python -m svsicc``: the command line."""

import sys

from svsicc.cli.main import main

sys.exit(main())
