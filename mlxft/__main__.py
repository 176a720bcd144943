"""`python -m mlxft` runs the CLI."""

import sys

from mlxft.cli import main

sys.exit(main())
