"""Running an experiment: its groups, its manifest, resuming, and one tidy ``results.csv``.

    experiments/<name>/experiment.json      what was asked: experiment, arms, seeds, groups, epochs, version
    experiments/<name>/runs/<arm>-seeds0-4  one ordinary run folder per group (seeds of one arm trained
                                            together as a population)
    experiments/<name>/results.csv          one row per (arm, seed, task, epoch), gathered from the runs
    experiments/<name>/report/              written by :mod:`mtdqn.experiment_report` from results.csv
    experiments/<name>/partial/             results.csv and report/ of the finished groups only
                                            (``mtdqn report --partial``, while or after a run stops)

The seeds of every arm are split into groups of at most ``group_size`` consecutive seeds. A group whose run
folder already holds its last epoch is kept as it is; any other group is resumed from its checkpoint (or
started), so running the same command again after a kill continues where it stopped. Arms run in stages:
an arm that depends on others (:attr:`~mtdqn.experiments.Arm.depends_on`, e.g. a transfer from a pre-training
arm) is handed to the backend only after every group of the stages before it has finished. Every group's
configuration and learner device are checked first; then the manifest is written atomically before the
first group starts; a later command with options that would change the numbers (seeds, groups, epochs,
overrides, the arms' definitions, the mtdqn version) is refused, naming each difference. A new folder whose
start fails before any group has recorded an epoch is cleared again, so the corrected command may differ.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtdqn import __version__
from mtdqn.config import HARDWARE_FIELDS, Config
from mtdqn.errors import UserError
from mtdqn.experiments import Arm, Experiment, RunOptions
from mtdqn.runlog import atomic_write_bytes

MANIFEST = "experiment.json"
RESULTS = "results.csv"
PARTIAL = "partial"
"""Subfolder of ``mtdqn report --partial``: results.csv and report/ of the groups finished so far."""
RUNS = "runs"
RESULT_COLUMNS = ["arm", "seed", "task", "task_index", "epoch", "J", "return", "episodes", "mean_q", "group"]
"""``mean_q``: the mean Q of the epoch's learning batches (``nan`` at epoch 0); results files written before
it lack the column."""
_COMPARED = ("experiment", "mtdqn_version", "epochs", "seeds", "group_size", "overrides", "arms", "groups")


@dataclass(frozen=True)
class Group:
    """Seeds of one arm trained together, as one run, in ``folder`` (relative to the experiment folder)."""

    arm: str
    seeds: tuple[int, ...]
    folder: str


def plan_groups(experiment: Experiment, seeds: list[int], group_size: int) -> list[Group]:
    """Every arm's seeds cut into consecutive groups of at most ``group_size``."""
    if not seeds:
        raise UserError("no seed given; pass --seeds N (seeds 0..N-1) or a list like 0-9")
    if group_size <= 0:
        raise UserError(f"group size is {group_size}; it must be a positive integer")
    groups = []
    for arm in experiment.arms:
        for k in range(0, len(seeds), group_size):
            chunk = tuple(seeds[k : k + group_size])
            groups.append(Group(arm.name, chunk, f"{RUNS}/{_group_name(arm.name, chunk, k // group_size)}"))
    return groups


def _group_name(arm: str, seeds: tuple[int, ...], index: int) -> str:
    if len(seeds) == 1:
        return f"{arm}-seed{seeds[0]}"
    if list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{arm}-seeds{seeds[0]}-{seeds[-1]}"
    return f"{arm}-group{index}"


def build_manifest(
    experiment: Experiment, seeds: list[int], group_size: int, options: RunOptions, groups: list[Group]
) -> dict[str, Any]:
    return {
        "experiment": experiment.name,
        "description": experiment.description,
        "mtdqn_version": __version__,
        "epochs": options.epochs,
        "seeds": list(seeds),
        "group_size": group_size,
        "overrides": dict(sorted(options.overrides.items())),
        "baseline": experiment.baseline,
        "sweep": experiment.sweep.to_dict() if experiment.sweep is not None else None,
        "metric": experiment.metric,
        "check_epochs": list(experiment.check_epochs),
        "arms": [{"name": arm.name, **arm.describe(options)} for arm in experiment.arms],
        "groups": [{"arm": g.arm, "seeds": list(g.seeds), "folder": g.folder} for g in groups],
    }


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path} is corrupt ({exc}); restore it or start the experiment in a new folder"
        ) from None


def prepare_folder(folder: Path, manifest: dict[str, Any]) -> bool:
    """Write the manifest of a new experiment folder (returns True), or check that an existing one asks for
    the same (returns False)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} exists and is not a folder; choose another --name or --out")
    old = read_manifest(folder)
    if old is None:
        if folder.exists() and any(folder.iterdir()):
            raise UserError(
                f"{folder} exists and is not an experiment folder; choose another --name or --out"
            )
        atomic_write_bytes(folder / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
        return True
    for key in _COMPARED:
        before, now = _compared(old, key), _compared(manifest, key)
        if before != now:
            hint = ""
            if key == "arms" and _predates(old, manifest, "kernels", "torch"):
                hint = " (it predates --kernels; add --set learner.kernels=torch to continue it)"
            elif key == "arms" and _predates(old, manifest, "task_balance_max_weight", 0.0):
                hint = (
                    " (its param-norm predates the bound on the weights; add "
                    "--set learner.task_balance_max_weight=0 to continue it)"
                )
            changes = _differences(before, now)
            shown = "; ".join(changes[:4]) + (f"; and {len(changes) - 4} more" if len(changes) > 4 else "")
            raise UserError(
                f"{folder} was started with other {key.replace('_', ' ')} ({shown}){hint}; repeat its "
                "options to continue it, or choose another --name"
            )
    return False


def _compared(manifest: dict[str, Any], key: str) -> Any:
    """The manifest entry that must match to continue; overrides of settings that change no number
    (``run.torch_threads`` and the like) may differ."""
    value = manifest.get(key)
    if key == "overrides" and value is not None:
        # compared through the arms' configurations, which record them (and complete older ones)
        ignored = {f"run.{field}" for field in HARDWARE_FIELDS}
        ignored |= {"learner.kernels", "learner.task_balance_max_weight"}
        value = {name: v for name, v in value.items() if name not in ignored}
    if key == "arms" and value is not None:
        value = json.loads(json.dumps(value))
        for arm in value:
            if isinstance(arm.get("config"), dict):
                arm["config"] = _completed(arm["config"])
    return value


def _completed(described: dict[str, Any]) -> dict[str, Any]:
    """An arm's configuration with the fields added to mtdqn after the manifest was written, at the values
    that reproduce what the arm then did (as :meth:`Config.from_dict` reads an old ``config.json``:
    ``learner.kernels`` torch, ``task_balance`` none, ...), so an older experiment can be continued."""
    try:
        full = Config.from_dict(described).to_dict()
    except UserError:  # not a whole configuration: compared as it is (kernels as before the field)
        if isinstance(described.get("learner"), dict):
            described["learner"].setdefault("kernels", "torch")
        return described
    for key in ("seeds", *HARDWARE_FIELDS):  # left out of an arm's description (experiments._description)
        full["run"].pop(key, None)
    if full["learner"]["task_balance"] != "param-norm":  # settings of param-norm alone
        for key in ("task_balance_every", "task_balance_max_weight"):
            full["learner"].pop(key)
    return full


def _predates(old: dict[str, Any], new: dict[str, Any], field: str, value: Any) -> bool:
    """Whether every arm of the ``old`` manifest that records ``learner.<field>`` has ``value`` (what arms
    saved before the field did) and the ``new`` one asks for something else."""
    was = _learner_values(old, field)
    return was == {value} and _learner_values(new, field) != was


def _learner_values(manifest: dict[str, Any], field: str) -> set[Any]:
    """The values of ``learner.<field>`` over the manifest's completed arms (those that record it: every arm
    records ``kernels``; only ``param-norm`` arms keep ``task_balance_max_weight``)."""
    arms = _compared(manifest, "arms") or []
    learners = [arm["config"]["learner"] for arm in arms if "config" in arm]
    return {learner[field] for learner in learners if field in learner}


def _short(value: Any, limit: int = 60) -> str:
    if value is _UNSET:
        return "not set"
    # an override's text, a mode, a version: as typed; anything else as JSON
    text = value if isinstance(value, str) and value else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_UNSET = object()


def _differences(before: Any, now: Any, path: str = "") -> list[str]:
    """``path: old, now new`` for every entry where two manifest values differ: dictionaries key by key,
    lists of the same length item by item (an arm named by its name), anything else as a whole (without
    ``path: `` at the top level)."""
    if isinstance(before, dict) and isinstance(now, dict):
        out = []
        for key in [*before, *(k for k in now if k not in before)]:
            old, new = before.get(key, _UNSET), now.get(key, _UNSET)
            if old != new:
                out += _differences(old, new, f"{path}.{key}" if path else str(key))
        return out
    if isinstance(before, list) and isinstance(now, list) and len(before) == len(now):
        out = []
        for k, (old, new) in enumerate(zip(before, now, strict=True)):
            if old != new:
                named = (
                    isinstance(old, dict)
                    and isinstance(new, dict)
                    and old.get("name", _UNSET) == new.get("name")
                )
                out += _differences(old, new, str(old["name"]) if named else f"{path}[{k}]")
        return out
    change = f"{_short(before)}, now {_short(now)}"
    return [f"{path}: {change}" if path else change]


@dataclass(frozen=True)
class Job:
    """One group to run: the arm, its seeds and its run folder (picklable: backends ship it)."""

    arm: Arm
    group: Group
    run_dir: Path
    options: RunOptions

    @property
    def label(self) -> str:
        return self.group.folder

    def __call__(self) -> None:
        self.arm.run(list(self.group.seeds), self.run_dir, self.options)


def run_experiment(
    experiment: Experiment,
    folder: Path,
    seeds: list[int],
    options: RunOptions,
    group_size: int | None = None,
    backend: Any = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Run (or continue) every unfinished group of ``experiment`` in ``folder``; returns results.csv."""
    from mtdqn.backends import LocalBackend

    folder = Path(folder)
    group_size = group_size or len(seeds)
    sweep = experiment.sweep
    if sweep is not None and sweep.parameter in options.overrides:
        raise UserError(
            f"--set {sweep.parameter} is not allowed: it is the setting experiment {experiment.name} varies"
        )
    groups = plan_groups(experiment, seeds, group_size)
    manifest = build_manifest(experiment, seeds, group_size, options, groups)
    backend = backend or LocalBackend()
    check_groups(experiment, groups, options, backend)  # before anything is written
    existed = folder.exists()
    if prepare_folder(folder, manifest):
        try:
            return _run_groups(experiment, folder, groups, options, backend, log)
        except BaseException:
            _forget_failed_start(folder, groups, existed, log)
            raise
    return _run_groups(experiment, folder, groups, options, backend, log)


def check_groups(experiment: Experiment, groups: list[Group], options: RunOptions, backend: Any) -> None:
    """Validate every group's configuration and the learner devices (with ``backend.check``; a backend
    without one runs here) before anything is written, so a mistake leaves no manifest behind."""
    from mtdqn.backends import check_local_devices

    devices = {experiment.arm(g.arm).check(list(g.seeds), options) for g in groups}
    check = getattr(backend, "check", None)
    if check is not None:
        check(devices)
    else:
        check_local_devices(devices)


def _forget_failed_start(
    folder: Path, groups: list[Group], existed: bool, log: Callable[[str], None]
) -> None:
    """After a failure in a new experiment folder before any group recorded an epoch, remove what this
    start wrote (the manifest, empty group folders), so a corrected command is not refused as a change."""
    group_dirs = [folder / g.folder for g in groups]
    if any((d / "metrics.csv").exists() or (d / "checkpoint.pt").exists() for d in group_dirs):
        return  # something was learnt: kept, to be continued by the same command
    for group_dir in group_dirs:
        if group_dir.is_dir():
            shutil.rmtree(group_dir)
    (folder / MANIFEST).unlink(missing_ok=True)
    for empty in (folder / RUNS, folder) if not existed else (folder / RUNS,):
        with contextlib.suppress(OSError):  # not empty: something else is there, kept
            empty.rmdir()
    log(
        f"{folder}: nothing was learnt yet; removed what this start wrote, so that a corrected command "
        "starts afresh"
    )


def _run_groups(
    experiment: Experiment,
    folder: Path,
    groups: list[Group],
    options: RunOptions,
    backend: Any,
    log: Callable[[str], None],
) -> Path:
    """Run the unfinished groups of a prepared experiment folder, stage by stage; gather results.csv."""
    log(f"experiment folder: {folder}")
    stage_of = arm_stages(experiment)
    stages: list[list[Job]] = [[] for _ in range(max(stage_of.values()) + 1)]
    for group in groups:
        arm = experiment.arm(group.arm)
        if arm.is_complete(folder / group.folder, list(group.seeds), options.epochs):
            log(f"{group.folder}: complete, kept")
        else:
            stages[stage_of[arm.name]].append(Job(arm, group, folder / group.folder, options))
    stages = [jobs for jobs in stages if jobs]
    for k, jobs in enumerate(stages, 1):
        if len(stages) > 1:
            log(f"stage {k}/{len(stages)}: arms {', '.join(dict.fromkeys(j.group.arm for j in jobs))}")
        backend.run(jobs, log)
    missing = [
        g.folder
        for g in groups
        if not experiment.arm(g.arm).is_complete(folder / g.folder, list(g.seeds), options.epochs)
    ]
    if missing:
        raise UserError(f"groups {', '.join(missing)} did not finish; run the same command again to continue")
    return gather_results(folder, groups, options.epochs)


def arm_stages(experiment: Experiment) -> dict[str, int]:
    """Stage of every arm: 0 without dependencies, else one more than its latest dependency's."""
    stage: dict[str, int] = {}
    for arm in experiment.arms:  # dependencies are earlier arms (checked by register)
        stage[arm.name] = 1 + max((stage[d] for d in arm.depends_on), default=-1)
    return stage


def gather_finished(folder: Path) -> tuple[Path, int, int]:
    """Write ``folder/partial/results.csv`` from the groups that have finished so far (an experiment still
    running, or stopped); returns its path and the numbers of finished and planned groups."""
    from mtdqn.experiments import run_is_complete

    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise UserError(
            f"{folder} holds no {MANIFEST}; give an experiment folder (e.g. experiments/deramo-gym)"
        )
    groups = [Group(g["arm"], tuple(g["seeds"]), g["folder"]) for g in manifest["groups"]]
    epochs = int(manifest["epochs"])
    done = [g for g in groups if run_is_complete(folder / g.folder, list(g.seeds), epochs)]
    if not done:
        raise UserError(
            f"no group of {folder} has finished yet (0 of {len(groups)}); a partial report needs at least one"
        )
    return gather_results(folder, done, epochs, folder / PARTIAL / RESULTS), len(done), len(groups)


def gather_results(folder: Path, groups: list[Group], epochs: int, path: Path | None = None) -> Path:
    """Write ``results.csv`` (or ``path``) from the groups' metrics.csv: rows in arm, seed, task, epoch
    order."""
    arm_order = {arm: k for k, arm in enumerate(dict.fromkeys(g.arm for g in groups))}
    rows = []
    for group in groups:
        with (folder / group.folder / "metrics.csv").open(newline="") as f:
            for row in csv.DictReader(f):
                if int(row["epoch"]) > epochs or int(row["seed"]) not in group.seeds:
                    continue
                rows.append(
                    {
                        "arm": group.arm,
                        "seed": row["seed"],
                        "task": row["task_name"],
                        "task_index": row["task"],
                        "epoch": row["epoch"],
                        "J": row["J"],
                        "return": row["return"],
                        "episodes": row["episodes"],
                        "mean_q": row["mean_q"],
                        "group": Path(group.folder).name,
                    }
                )
    rows.sort(key=lambda r: (arm_order[r["arm"]], int(r["seed"]), int(r["task_index"]), int(r["epoch"])))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = path or folder / RESULTS
    atomic_write_bytes(path, buf.getvalue().encode())
    return path
