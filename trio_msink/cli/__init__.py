"""The ``trio-msink`` command (built only from the public API)."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Console entry point."""
    from ._main import main as run

    sys.exit(run())
