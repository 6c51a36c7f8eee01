"""Waiting for something outside the process (a flow run, a server): one polling loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def poll(
    read: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float,
    interval: float = 2.0,
    what: str = "the run",
    on_change: Callable[[T], None] | None = None,
) -> T:
    """Call ``read()`` every ``interval`` seconds until ``done(value)``; return that value.

    ``on_change`` sees each new value (progress lines); ``TimeoutError`` names ``what``.
    """
    deadline = time.monotonic() + timeout
    previous: Any = object()
    while True:
        value = read()
        if on_change is not None and value != previous:
            on_change(value)
            previous = value
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not finished after {timeout:.0f} s")
        time.sleep(interval)
