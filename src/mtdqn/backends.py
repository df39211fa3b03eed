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
import multiprocessing.connection
import os
import socket
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from mtdqn.errors import UserError
from mtdqn.interrupts import Terminated
from mtdqn.processes import ChildProcess, join_all, stop_all

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

    def check(self, devices: set[str]) -> None:
        """Refuse, before anything is written, a learner device this machine does not have."""
        check_local_devices(devices)

    def run(self, jobs: list, log: Callable[[str], None]) -> None:
        if self.jobs == 1 or len(jobs) <= 1:
            for k, job in enumerate(jobs, 1):
                log(f"[{k}/{len(jobs)}] {job.label}: {'resuming' if job.run_dir.exists() else 'starting'}")
                job()
            return
        threads = max(1, self.cpus // self.jobs)
        workers = min(self.jobs, len(jobs))
        log(f"running {len(jobs)} groups, {workers} at a time, {threads} learner thread(s) each")
        waiting = [_quiet(job, threads) for job in jobs]
        running: dict[ChildProcess, Any] = {}
        failures: list[str] = []
        done_count = 0
        try:
            while waiting or running:
                while waiting and len(running) < workers:
                    job = waiting.pop(0)
                    running[ChildProcess(_group_main, (job,), name=f"mtdqn-{job.label}")] = job
                ended = multiprocessing.connection.wait([child.sentinel for child in running])
                for child in [c for c in running if c.sentinel in ended]:
                    job = running.pop(child)
                    outcome = child.message()
                    child.stop(0.0, terminate=False)
                    if outcome == ("done", None):
                        done_count += 1
                        log(f"[{done_count}/{len(jobs)}] {job.label}: done")
                    elif outcome is not None and outcome[0] == "user_error":
                        failures.append(f"{job.label}: {outcome[1]}")
                    elif outcome is not None and outcome[0] == "error":
                        raise RuntimeError(f"group {job.label} failed:\n{outcome[1]}")
                    else:
                        code = child.process.exitcode
                        failures.append(f"{job.label}: its process ended with exit code {code} and no result")
        except BaseException as exc:  # Ctrl-C, SIGTERM (see mtdqn.interrupts) or a bug here
            # Ctrl-C reached the groups too; SIGTERM or an error here did not
            forward = isinstance(exc, Terminated) or not isinstance(exc, KeyboardInterrupt)
            _stop(list(running), forward=forward, log=log)
            raise
        _raise_failures(failures)


def check_local_devices(devices: set[str]) -> None:
    """Refuse learner devices (``cpu``, ``cuda``, ``cuda:N``, ``auto``) that this machine cannot give."""
    from mtdqn.train import resolve_device

    for device in sorted(devices):
        resolve_device(device)


def _stop(
    children: list[ChildProcess], forward: bool, log: Callable[[str], None], grace_s: float = 30.0
) -> None:
    """Stop the running groups; each keeps its last finished epoch.

    Ctrl-C in a terminal reaches every group, which unwinds by itself: they get ``grace_s`` before SIGTERM.
    A signal sent to this process alone (``forward``: SIGTERM from a scheduler) or an error here are passed
    on at once, as SIGTERM. Each group then has ``grace_s`` to unwind before SIGKILL (which loses only the
    epoch in progress)."""
    if not forward:
        join_all(children, grace_s)
    for child in stop_all(children, grace_s):
        log(f"{child.process.name.removeprefix('mtdqn-')}: did not stop within {grace_s:.0f} s; killed")


def _group_main(conn: Connection, job) -> None:
    """A group's process: run it, send ``("done", None)``, ``("user_error", text)`` or ``("error", text)``."""
    try:
        job()
    except UserError as exc:
        conn.send(("user_error", str(exc)))
        return
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("done", None))


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
    """A group as a Ray task."""
    job()
    return job.label


class RayBackend:
    """Runs every group as one Ray task (``address``: a running cluster, e.g. ``auto``; None: the Ray
    instance this process already has, or a new local one).

    Each task reserves ``cpus_per_group`` CPUs and ``gpus_per_group`` GPUs (None: see :meth:`gpus_for`).
    Ray shows a task only the GPUs it reserved (it sets ``CUDA_VISIBLE_DEVICES``), so a group meant for a
    GPU must reserve one, or a fraction of one to share it with other groups."""

    def __init__(
        self,
        address: str | None = None,
        cpus_per_group: int = 2,
        max_retries: int = 3,
        gpus_per_group: float | None = None,
    ) -> None:
        self.address = address
        self.cpus_per_group = cpus_per_group
        self.max_retries = max_retries
        self.gpus_per_group = gpus_per_group
        self.ray = import_ray()

    def gpus_for(self, device: str, cluster_gpus: float) -> float:
        """GPUs each group of a run on ``device`` (cpu, cuda, auto) reserves on a cluster with
        ``cluster_gpus``: ``gpus_per_group`` when set, else 1 for cuda, and for auto 1 when the cluster has
        a GPU; refuses a reservation that contradicts the device or that no machine of the cluster has."""
        check_gpu_request(device, self.gpus_per_group)
        gpus = self.gpus_per_group
        if gpus is None:
            cuda = device.startswith("cuda") or (device == "auto" and cluster_gpus >= 1)
            gpus = 1.0 if cuda else 0.0
        if gpus > cluster_gpus:
            raise UserError(
                f"each group would reserve {gpus:g} GPU(s) but the Ray cluster has {cluster_gpus:g}; "
                "use --device cpu, a smaller --gpus-per-group, or a cluster with GPUs"
            )
        return gpus

    def check(self, devices: set[str]) -> None:
        """Refuse, before anything is written, a cluster address where no Ray cluster answers (the devices
        are checked against the cluster's GPUs once it is joined: this machine may have none)."""
        if not self.ray.is_initialized():
            check_ray_address(self.address)

    def run(self, jobs: list, log: Callable[[str], None]) -> None:
        ray = self.ray
        if not jobs:
            return
        if not ray.is_initialized():
            check_ray_address(self.address)  # ray.init would retry an unreachable address forever
            ray.init(address=self.address, include_dashboard=False, log_to_driver=True)
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0.0))
        gpus = max(self.gpus_for(job.options.device or "cpu", cluster_gpus) for job in jobs)
        remote = ray.remote(num_cpus=self.cpus_per_group, num_gpus=gpus, max_retries=self.max_retries)(
            _run_job
        )
        pending: dict[Any, Any] = {}
        for job in jobs:  # workers do not share this working directory: absolute folders
            job = _quiet(job, self.cpus_per_group)
            pending[remote.remote(job)] = job
        log(f"submitted {len(jobs)} groups to Ray, {self.cpus_per_group} CPU(s) and {gpus:g} GPU(s) each")
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


RAY_CONNECT_TIMEOUT_S = 5.0


def check_ray_address(address: str | None, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Refuse an explicit ``HOST:PORT`` (or ``ray://HOST:PORT``) where nothing accepts a TCP connection
    within ``timeout_s``: ``ray.init`` would retry it forever. None, ``auto``, ``local`` and other schemes
    are Ray's own to resolve (``auto`` finds the cluster started on this machine, or fails by itself)."""
    target = (address or "").removeprefix("ray://")
    if address is None or address in ("auto", "local") or "://" in target:  # another scheme: Ray's own
        return
    host, sep, port = target.rpartition(":")
    host = host.strip("[]")  # an IPv6 address: [::1]:6379
    if not sep or not host or not port.isdigit():
        raise UserError(
            f"--ray-address {address!r} is not auto, HOST:PORT or ray://HOST:PORT; give the address that "
            "`ray start --head` printed (e.g. 10.0.0.1:6379), or auto"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UserError(
            f"no Ray cluster answers at {address} ({exc.strerror or exc}); start one there with "
            "`ray start --head`, or fix --ray-address"
        ) from None


def check_gpu_request(device: str, gpus_per_group: float | None) -> None:
    """Refuse a GPU reservation that contradicts the learner's device (``None``: no explicit request)."""
    if gpus_per_group is None:
        return
    if gpus_per_group > 0 and device == "cpu":
        raise UserError(
            f"--gpus-per-group {gpus_per_group:g} reserves GPUs for groups that learn on the CPU; "
            "add --device cuda (or auto), or leave out --gpus-per-group"
        )
    if gpus_per_group == 0 and device.startswith("cuda"):
        raise UserError(
            "--device cuda with --gpus-per-group 0: Ray hides the GPUs from a task that reserves none; "
            "give a positive --gpus-per-group (e.g. 1, or 0.5 to put two groups on one GPU)"
        )


def import_ray():
    """The ``ray`` module, or a :class:`UserError` telling how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"--backend ray needs Ray; install it with: {RAY_INSTALL_HINT}") from None
    return ray


def make_backend(
    name: str,
    address: str | None = None,
    cpus_per_group: int | None = None,
    jobs: int = 1,
    gpus_per_group: float | None = None,
    device: str | None = None,
):
    """The backend of ``--backend NAME`` and its options; ``device`` (the runs' ``--device``) is checked
    against ``gpus_per_group`` here, before anything starts."""
    if name == "local":
        if address is not None:
            raise UserError("--ray-address needs --backend ray")
        for flag, value in (("--cpus-per-group", cpus_per_group), ("--gpus-per-group", gpus_per_group)):
            if value is not None:
                raise UserError(f"{flag} is for --backend ray; locally use --jobs (and --device)")
        return LocalBackend(jobs)
    if jobs != 1:
        raise UserError("--jobs is for --backend local; Ray runs as many groups at once as its CPUs allow")
    if name == "ray":
        check_gpu_request(device or "cpu", gpus_per_group)
        return RayBackend(
            address, cpus_per_group or min(2, os.cpu_count() or 1), gpus_per_group=gpus_per_group
        )
    raise UserError(f"unknown backend {name!r}; use local or ray")
