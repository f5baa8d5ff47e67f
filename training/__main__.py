"""`python -m training`: the training package's `weldmon` subcommands."""

import sys

from weldmon.cli import main

sys.exit(main(package="training"))
