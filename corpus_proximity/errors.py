"""The one exception type the stage scripts turn into a one-line error message."""

from __future__ import annotations

import functools
import sys
from typing import Callable


class InputError(Exception):
    """Bad input (file, field, config value, cache): the message names it and says the fix."""


def cli_errors(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a script's ``main`` so an :class:`InputError`, or a write that failed on a full, read-only
    or forbidden disk anywhere, prints one line and exits 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except OSError as e:
            from corpus_proximity.cache import disk_error

            err = disk_error(e.filename or "a file", e)
            if err is None:
                raise
            print(f"error: {err}", file=sys.stderr)
            return 2
        except InputError as e:
            from corpus_proximity.untrusted import strip_control

            # one line: the message may quote a file's content (control characters dropped)
            print(f"error: {strip_control(str(e)).replace(chr(10), ' ')}", file=sys.stderr)
            return 2

    return wrapper
