"""Entry point for ``python -m deputy.demo``."""

from deputy.demo.server import main

if __name__ == "__main__":
    raise SystemExit(main())
