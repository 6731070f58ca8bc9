"""``python -m jobbridge_local ...`` = ``jobbridge local ...``."""

import sys

from .cli import main

raise SystemExit(main(sys.argv[1:]))
