"""Shared helpers: small configurations that run in seconds."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from mtdqn.config import Config, ExplorationConfig, LearnerConfig, ReplayConfig, RunConfig, TaskConfig

TINY_TRAIN = ["--steps-per-epoch", "40", "--eval-steps", "30", "--warmup", "10", "--batch-size", "8"]
TINY_TRAIN += ["--no-progress", "--no-background-eval"]
"""`mtdqn train` options for a run of seconds per epoch (inline evaluation, no progress bars)."""


def small_config(**run_overrides) -> Config:
    """Cart-Pole + Acrobot + Car-On-Hill, tiny budget: distinct obs sizes (4, 6, 2) and actions (2, 3, 2)."""
    run = dataclasses.replace(
        RunConfig(epochs=2, steps_per_epoch=60, eval_steps=50, background_eval=False), **run_overrides
    )
    return Config(
        tasks=[
            TaskConfig("CartPole-v1", gamma=0.99, horizon=500),
            TaskConfig("Acrobot-v1", gamma=0.99, horizon=1000),
            TaskConfig("mtdqn/CarOnHill-v0", gamma=0.95, horizon=100),
        ],
        replay=ReplayConfig(capacity=100, warmup=20),
        learner=LearnerConfig(batch_size=16, target_update_every=10),
        exploration=ExplorationConfig(eps_decay_steps=50),
        run=run,
    )


@pytest.fixture
def one_ray_instance():
    """Holds a lock while a test runs its local Ray instance, so that two such tests never run at once
    (the suite runs its files in two pytest-xdist workers; two Ray instances would fight for two cores)."""
    with open(Path(tempfile.gettempdir()) / "mtdqn-tests-ray.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture
def config() -> Config:
    return small_config()


def fake_reference(root: Path, values: dict[str, np.ndarray]) -> Path:
    """A reference folder in the published format: ``values[arm]`` is a (runs, 5, evaluations) J array
    saved where :data:`mtdqn.reference.PUBLISHED` expects that arm's file."""
    from mtdqn.reference import PUBLISHED

    root = Path(root)
    for arm, scores in values.items():
        path = root / PUBLISHED[arm].path
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.asarray(scores, dtype=np.float64))
    return root


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def default_sigint() -> None:
    """``preexec_fn`` for a CLI subprocess a test will Ctrl-C: a shell's background job (pytest started with
    ``&``) ignores SIGINT, and so would the CLI; give it the terminal's default."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def sigterm_when(
    proc: subprocess.Popen, ready: Callable[[], bool], timeout_s: float = 120, group_sigint: bool = False
) -> tuple[str, set[int]]:
    """Wait until ``ready()``, SIGTERM ``proc`` alone (``group_sigint``: SIGINT to its process group, as
    Ctrl-C in a terminal; start it with ``start_new_session``); its stderr and the processes below it."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    children = descendants(proc.pid)
    if group_sigint:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        for pid in (*children, proc.pid):  # leave no stuck process behind the failing test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate()
        raise AssertionError(f"still running 150 s after the signal; its stderr: {err[-2000:]}") from None
    return err, children
