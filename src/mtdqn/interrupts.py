"""SIGTERM unwinds like Ctrl-C.

A scheduler (Slurm, Kubernetes, ``kill PID``) stops a process with SIGTERM, whose default action ends it at
once: no ``finally`` block runs, so a run's background evaluation process or an experiment's worker
processes would be left running. While SIGTERM is turned into :class:`Terminated` (a ``KeyboardInterrupt``)
every path that handles Ctrl-C handles it too: the last finished epoch is on disk (writes are atomic),
child processes are stopped, and the command exits with 143 (130 for Ctrl-C).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (raised in the main thread by the handler of :func:`raise_on_sigterm`)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def raise_on_sigterm() -> None:
    """From now on SIGTERM raises :class:`Terminated` in this process's main thread."""
    signal.signal(signal.SIGTERM, _raise_terminated)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` inside the block (a no-op outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """The shell's convention: 128 + the signal number (143 for SIGTERM, 130 for Ctrl-C)."""
    return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)
