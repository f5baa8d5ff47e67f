"""``python -m monitor.watch``: the same as ``weldmon watch``."""

import sys

from monitor.watch.app import main

sys.exit(main())
