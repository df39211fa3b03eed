"""Where an experiment's groups run: one after another here, or as Ray tasks on a cluster.

Either way each group writes its own run folder (atomically, file by file, as every run does) and the
driver gathers ``results.csv`` from the run folders at the end. With Ray the experiment folder must
therefore lie on a filesystem that every worker sees at the same path (NFS, a cluster's shared home; on
one machine any folder). A group whose worker is lost is retried (Ray's ``max_retries``) and, being an
ordinary resumable run, continues from its last checkpoint; nothing is ever half-written.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from mtdqn.errors import UserError

RAY_INSTALL_HINT = 'pip install "mtdqn[ray]"'


class LocalBackend:
    """Runs the groups one after another in this process."""

    def run(self, jobs: list, log: Callable[[str], None]) -> None:
        for k, job in enumerate(jobs, 1):
            log(f"[{k}/{len(jobs)}] {job.label}: {'resuming' if job.run_dir.exists() else 'starting'}")
            job()


def _run_job(job) -> str:
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
        for job in jobs:
            # no bar per worker (they would only interleave); workers do not share this working directory
            options = dataclasses.replace(job.options, progress=False, torch_threads=self.cpus_per_group)
            job = dataclasses.replace(job, run_dir=job.run_dir.absolute(), options=options)
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
        if failures:
            raise UserError(
                f"{len(failures)} group(s) failed, first {failures[0]}; finished epochs are kept: fix the "
                "cause and run the same command again to continue"
            )


def import_ray():
    """The ``ray`` module, or a :class:`UserError` telling how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--backend ray needs Ray; install it with: {RAY_INSTALL_HINT}") from None
    return ray


def make_backend(name: str, address: str | None = None, cpus_per_group: int | None = None):
    if name == "local":
        if address is not None:
            raise UserError("--ray-address needs --backend ray")
        return LocalBackend()
    if name == "ray":
        return RayBackend(address, cpus_per_group or min(2, os.cpu_count() or 1))
    raise UserError(f"unknown backend {name!r}; use local or ray")
