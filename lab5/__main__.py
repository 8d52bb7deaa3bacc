"""Entry point for ``python -m lab5``."""

from lab5.cli import main

raise SystemExit(main())
