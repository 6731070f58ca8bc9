"""``python -m jobbridge_client ...``: the same as ``jobbridge-jobs ...``."""

from .cli import main

raise SystemExit(main(prog="python -m jobbridge_client"))
