"""`python -m deploy`: the deploy package's `weldmon` subcommands."""

import sys

from weldmon.cli import main

sys.exit(main(package="deploy"))
