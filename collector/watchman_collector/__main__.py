"""`python -m watchman_collector`: the same command line as the `watchman` console script."""

from __future__ import annotations

import sys

from watchman_collector.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
