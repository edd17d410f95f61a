"""The one kind of failure the command reports as a single line."""

from __future__ import annotations

__all__ = ["CommandError"]


class CommandError(Exception):
    """A failure a person can act on (a port in use, a bad source, an origin
    that cannot be reached at start-up).

    ``str(error)`` is the whole line to print after ``trio-msink: error: ``,
    and names what failed first, e.g. ``--http 127.0.0.1:8080: address
    already in use``. The command prints it and exits non-zero; the
    traceback is shown only with ``-v``.
    """
