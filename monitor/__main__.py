"""`python -m monitor`: the monitor package's `weldmon` subcommands."""

import sys

from weldmon.cli import main

sys.exit(main(package="monitor"))
