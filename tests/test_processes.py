"""Child processes: stopped with SIGTERM then SIGKILL, never outliving their parent; the background
evaluator's errors and early close."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pytest
from conftest import alive

from mtdqn.evaluate import EvalResult, Evaluator
from mtdqn.processes import ChildProcess, stop_all


def _sleep_forever(conn: Connection, ignore_sigterm: bool) -> None:
    if ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn.send("ready")
    while True:
        time.sleep(0.1)


def _ready(child: ChildProcess) -> None:
    assert child.conn.poll(60) and child.conn.recv() == "ready"


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    polite = ChildProcess(_sleep_forever, (False,))
    stubborn = ChildProcess(_sleep_forever, (True,))
    _ready(polite)
    _ready(stubborn)
    start = time.monotonic()
    killed = stop_all([polite, stubborn], grace_s=1.0)
    assert killed == [stubborn] and time.monotonic() - start < 10
    assert polite.process.exitcode == 128 + signal.SIGTERM  # unwound (Terminated), exit code 143
    assert stubborn.process.exitcode == -signal.SIGKILL


def test_a_stop_signal_during_the_start_waits_for_it_then_ends_the_child_too(monkeypatch) -> None:
    """SIGTERM in the middle of Process.start (here: right after the spawn, before it returns) used to cut off
    the child's start-up data: a traceback from the child. Now it is held until the start is done, then raised
    here, and the started child is ended too."""
    import multiprocessing.context

    from mtdqn.interrupts import Terminated, raise_on_sigterm

    start = multiprocessing.context.SpawnProcess.start

    def start_then_sigterm(process) -> None:
        start(process)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives before start() returns

    previous = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(multiprocessing.context.SpawnProcess, "start", start_then_sigterm)
    try:
        raise_on_sigterm()
        with pytest.raises(Terminated):
            ChildProcess(_sleep_forever, (False,))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not multiprocessing.active_children()


def test_a_child_stops_by_itself_when_its_parent_is_killed() -> None:
    code = (
        "import sys, time\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from test_processes import _sleep_forever, _ready\n"
        "from mtdqn.processes import ChildProcess\n"
        "child = ChildProcess(_sleep_forever, (False,))\n"
        "_ready(child)\n"
        "print(child.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    tests = str(Path(__file__).parent)
    parent = subprocess.Popen([sys.executable, "-c", code, tests], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    parent.kill()  # SIGKILL: no cleanup of any kind in the parent
    parent.wait()
    deadline = time.monotonic() + 10
    while alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(child_pid)


class _Failing:
    def run(self):
        raise ValueError("no such task")


class _Slow:
    def run(self):
        time.sleep(600)


def test_background_evaluation_errors_come_back_with_the_childs_traceback() -> None:
    evaluator = Evaluator(background=True)
    try:
        with pytest.raises(ValueError, match="no such task") as info:
            evaluator.submit(_Failing()).result(timeout=120)
        assert "raised in the background evaluation process" in "".join(info.value.__notes__)
    finally:
        evaluator.close()


def test_closing_during_an_evaluation_does_not_wait_for_it() -> None:
    evaluator = Evaluator(background=True)
    evaluator.submit(_Slow())
    (child,) = evaluator._children
    time.sleep(1.0)
    start = time.monotonic()
    evaluator.close()
    assert time.monotonic() - start < 10 and not child.process.is_alive()


class _Quick:
    def run(self) -> EvalResult:
        return EvalResult(0, np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1), np.int64), np.zeros((1, 1)))


class _Dies:
    def run(self):
        os._exit(3)


class _HalfDies:
    """A job split in two: one slice scores, the other's process dies."""

    def split(self, n: int):
        return [_Quick(), _Dies()]


def test_a_dead_evaluation_worker_is_a_clear_error_not_a_hang() -> None:
    evaluator = Evaluator(background=True, workers=2)
    try:
        with pytest.raises(RuntimeError, match=r"background evaluation process ended \(exit code"):
            evaluator.submit(_HalfDies()).result(timeout=120)
    finally:
        evaluator.close()
    assert evaluator._children == []
