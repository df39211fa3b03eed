"""Child processes that stop when told and never outlive their parent.

An experiment runs its groups in worker processes and every run evaluates in a background process. Both
are plain ``multiprocessing`` processes (spawned, so nothing of the parent's threads or CUDA state is
inherited) with one pipe to the parent. Stopping one is explicit: SIGTERM (which the child turns into an
interrupt, see :mod:`mtdqn.interrupts`, so its last finished epoch stays on disk), a grace period, then
SIGKILL. Nothing is lost by the SIGKILL: checkpoints are written atomically and a resumed run repeats the
epoch that was cut off. A child whose parent dies (SIGKILL, the OOM killer) stops on its own within a
second rather than training on into the run folder alone.

(``concurrent.futures.ProcessPoolExecutor`` did this job before. Its shutdown waits for every running
call, so a stopped run waited for its in-flight evaluation, which at nice 10 on a loaded machine took
minutes; it has no public way to signal or kill its workers either.)
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from mtdqn.interrupts import exit_code, raise_on_sigterm

PARENT_POLL_S = 1.0
"""How often a child checks that its parent is alive."""


def exit_with_parent(poll_s: float = PARENT_POLL_S) -> None:
    """SIGTERM this process once its parent has died (a daemon thread polls the parent's pid)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="mtdqn-parent-watch", daemon=True).start()


def _child_main(target: Callable[..., None], conn: Connection, args: tuple, niceness: int) -> None:
    raise_on_sigterm()
    exit_with_parent()
    if niceness:
        with contextlib.suppress(OSError, AttributeError):
            os.nice(niceness)
    try:
        try:
            target(conn, *args)
        finally:
            _ignore_stop_signals()
    except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM: the target has unwound; exit quietly
        _ignore_stop_signals()  # again: a second signal may have cut the first call short
        sys.exit(exit_code(interrupt))


def _ignore_stop_signals() -> None:
    """The target is done and this process is exiting: a further stop signal (the parent's SIGTERM after a
    Ctrl-C that reached both) would only print a traceback from the exit's clean-up."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _stop_signals_held():
    """Hold Ctrl-C and SIGTERM while a child starts, then act on one that came meanwhile. An interrupt in the
    middle of ``Process.start`` would cut off the start-up data it writes to the child's pipe, and the child
    would die printing a traceback (``EOFError: Ran out of input``) on the shared stderr. A no-op outside the
    main thread (which receives the signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[tuple[int, Any]] = []
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: held.append((signum, frame))) for s in stop_signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if held:
            signum, frame = held[0]
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)


class ChildProcess:
    """``target(conn, *args)`` in a spawned process; ``conn`` is the child's end of a duplex pipe.

    ``niceness``: added to the child's nice value (a background evaluation lets the learner win the
    cores). ``daemon``: the child is terminated when this process exits normally; a daemon cannot start
    processes of its own."""

    def __init__(
        self,
        target: Callable[..., None],
        args: tuple = (),
        name: str = "mtdqn-child",
        niceness: int = 0,
        daemon: bool = False,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_child_main, args=(target, child_conn, args, niceness), name=name, daemon=daemon
        )
        try:
            with _stop_signals_held():
                self.process.start()
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM during the start: the child has its data; end it too
            if self.process.pid is not None:
                self.process.terminate()
                self.process.join(10)
            raise
        finally:
            child_conn.close()

    @property
    def sentinel(self) -> int:
        """Becomes ready (``multiprocessing.connection.wait``) when the process ends."""
        return self.process.sentinel

    def message(self) -> Any | None:
        """The message the child sent before it ended, or None if it sent none."""
        try:
            return self.conn.recv() if self.conn.poll() else None
        except (EOFError, OSError):
            return None

    def stop(self, grace_s: float, terminate: bool = True) -> bool:
        """End the process: SIGTERM (unless ``terminate`` is False: it was told another way), up to
        ``grace_s`` to unwind, then SIGKILL. Returns whether it had to be killed."""
        return bool(stop_all([self], grace_s, terminate))


def join_all(children: list[ChildProcess], timeout_s: float) -> None:
    """Wait until every child has ended, or ``timeout_s`` in all has passed."""
    deadline = time.monotonic() + timeout_s
    for child in children:
        child.process.join(max(0.0, deadline - time.monotonic()))


def stop_all(children: list[ChildProcess], grace_s: float, terminate: bool = True) -> list[ChildProcess]:
    """End several children at once: SIGTERM (unless ``terminate`` is False), one shared grace period,
    then SIGKILL for the ones still running, which are returned. Their pipes are closed."""
    if terminate:
        for child in children:
            if child.process.is_alive():
                child.process.terminate()
    join_all(children, grace_s)
    killed = [child for child in children if child.process.is_alive()]
    for child in killed:
        child.process.kill()
        child.process.join()
    for child in children:
        child.conn.close()
    return killed
