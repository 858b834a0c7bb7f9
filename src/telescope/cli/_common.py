"""What every command shares: progress lines and error exits."""

from __future__ import annotations

import sys

__all__ = ["say", "fail"]


def say(msg: str, quiet: bool = False, *, err: bool = False) -> None:
    """Print a ``[telescope]`` progress line (to stderr with ``err``) unless ``quiet``."""
    if not quiet:
        print(f"[telescope] {msg}", file=sys.stderr if err else sys.stdout, flush=True)


def fail(msg: str) -> int:
    """Print ``telescope: error: msg`` to stderr; returns the exit code 2."""
    print(f"telescope: error: {msg}", file=sys.stderr)
    return 2
