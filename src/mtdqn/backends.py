"""Where an experiment's groups run: here (one after another, or several at once in worker processes),
or as Ray tasks on a cluster.

Either way each group writes its own run folder (atomically, file by file, as every run does) and the
driver gathers ``results.csv`` from the run folders at the end. With Ray the experiment folder must
therefore lie on a filesystem that every worker sees at the same path (NFS, a cluster's shared home; on
one machine any folder). A group whose worker is lost is retried (Ray's ``max_retries``) and, being an
ordinary resumable run, continues from its last checkpoint; nothing is ever half-written.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from mtdqn.errors import UserError
from mtdqn.interrupts import Terminated, raise_on_sigterm, sigterm_received

RAY_INSTALL_HINT = 'pip install "mtdqn[ray]"'


class LocalBackend:
    """Runs the groups on this machine: one after another in this process (``jobs=1``), or ``jobs`` at a
    time, each in its own worker process with ``cpus // jobs`` learner threads.

    Several jobs pay off when one group cannot keep every core busy: a learner's update uses all its
    threads, but stepping the environments, acting and the replay are one thread, so two groups with one
    thread each on two cores overlap one's environment work with the other's update. Every group gives
    the same numbers whatever ``jobs`` is (a run's numbers do not depend on its thread count on the CPU:
    tested)."""

    def __init__(self, jobs: int = 1, cpus: int | None = None) -> None:
        if jobs < 1:
            raise UserError(f"--jobs {jobs}: give a positive number of groups to run at once")
        self.jobs = jobs
        self.cpus = cpus or os.cpu_count() or 1

    def run(self, jobs: list, log: Callable[[str], None]) -> None:
        if self.jobs == 1 or len(jobs) <= 1:
            for k, job in enumerate(jobs, 1):
                log(f"[{k}/{len(jobs)}] {job.label}: {'resuming' if job.run_dir.exists() else 'starting'}")
                job()
            return
        threads = max(1, self.cpus // self.jobs)
        workers = min(self.jobs, len(jobs))
        log(f"running {len(jobs)} groups, {workers} at a time, {threads} learner thread(s) each")
        context = multiprocessing.get_context("spawn")
        failures: list[str] = []
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=raise_on_sigterm
        ) as pool:
            pending = {pool.submit(_run_job, _quiet(job, threads)): job for job in jobs}
            done_count = 0
            try:
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        job = pending.pop(future)
                        try:
                            future.result()
                        except UserError as exc:
                            failures.append(f"{job.label}: {exc}")
                            continue
                        done_count += 1
                        log(f"[{done_count}/{len(jobs)}] {job.label}: done")
            except BaseException:  # Ctrl-C, SIGTERM (see mtdqn.interrupts) or a bug here
                _stop(pool, pending)
                raise
        _raise_failures(failures)


def _stop(pool: ProcessPoolExecutor, pending: dict, grace_s: float = 10.0) -> None:
    """Cancel the waiting groups; give the running ones ``grace_s`` to unwind, then SIGTERM their workers.

    Ctrl-C in a terminal reaches every worker, which saves nothing more and returns within the grace
    period; an interrupt sent to this process alone (``kill -INT``, a scheduler's SIGTERM) does not, so
    the workers are sent SIGTERM, which each turns into an interrupt of its run (``raise_on_sigterm``):
    its background evaluation is closed and its last finished epoch stays on disk."""
    running = [future for future in pending if not future.cancel()]
    _, still_running = wait(running, timeout=grace_s)
    if still_running:
        processes = getattr(pool, "_processes", None) or {}  # no public way to reach them before Python 3.14
        for process in list(processes.values()):
            if process.is_alive():
                process.terminate()
        wait(still_running, timeout=grace_s)


def _quiet(job, threads: int):
    """``job`` for a worker: no progress bar (bars of parallel groups would interleave), ``threads``."""
    options = dataclasses.replace(job.options, progress=False, torch_threads=threads)
    return dataclasses.replace(job, run_dir=job.run_dir.absolute(), options=options)


def _raise_failures(failures: list[str]) -> None:
    if failures:
        raise UserError(
            f"{len(failures)} group(s) failed, first {failures[0]}; finished epochs are kept: fix the "
            "cause and run the same command again to continue"
        )


def _run_job(job) -> str:
    if sigterm_received():  # a group queued to this worker before it was told to stop
        raise Terminated()
    job()
    return job.label


class RayBackend:
    """Runs every group as one Ray task (``address``: a running cluster, e.g. ``auto``; None: the Ray
    instance this process already has, or a new local one)."""

    def __init__(self, address: str | None = None, cpus_per_group: int = 2, max_retries: int = 3) -> None:
        self.address = address
        self.cpus_per_group = cpus_per_group
        self.max_retries = max_retries
        self.ray = import_ray()

    def run(self, jobs: list, log: Callable[[str], None]) -> None:
        ray = self.ray
        if not jobs:
            return
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=True)
        remote = ray.remote(num_cpus=self.cpus_per_group, max_retries=self.max_retries)(_run_job)
        pending: dict[Any, Any] = {}
        for job in jobs:  # workers do not share this working directory: absolute folders
            job = _quiet(job, self.cpus_per_group)
            pending[remote.remote(job)] = job
        log(f"submitted {len(jobs)} groups to Ray, {self.cpus_per_group} CPU(s) each")
        try:
            self._gather(pending, len(jobs), log)
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise

    def _gather(self, pending: dict[Any, Any], total: int, log: Callable[[str], None]) -> None:
        ray = self.ray
        failures = []
        done_count = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready[0])
            try:
                ray.get(ready[0])
                done_count += 1
                log(f"[{done_count}/{total}] {job.label}: done")
            except ray.exceptions.RayTaskError as exc:  # the task's own error (lost workers were retried)
                cause = getattr(exc, "cause", None)
                if not isinstance(cause, UserError):
                    raise
                failures.append(f"{job.label}: {cause}")
            except ray.exceptions.RayError as exc:  # its worker was lost more often than max_retries
                failures.append(f"{job.label}: {type(exc).__name__} after {self.max_retries} retries")
        _raise_failures(failures)


def import_ray():
    """The ``ray`` module, or a :class:`UserError` telling how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--backend ray needs Ray; install it with: {RAY_INSTALL_HINT}") from None
    return ray


def make_backend(name: str, address: str | None = None, cpus_per_group: int | None = None, jobs: int = 1):
    if name == "local":
        if address is not None:
            raise UserError("--ray-address needs --backend ray")
        return LocalBackend(jobs)
    if jobs != 1:
        raise UserError("--jobs is for --backend local; Ray runs as many groups at once as its CPUs allow")
    if name == "ray":
        return RayBackend(address, cpus_per_group or min(2, os.cpu_count() or 1))
    raise UserError(f"unknown backend {name!r}; use local or ray")
