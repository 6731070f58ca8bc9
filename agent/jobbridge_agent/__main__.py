"""``python -m jobbridge_agent run`` is ``jobbridge agent run``."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
