"""Experiment definitions: named sets of arms, each arm a way to train a group of seeds into a run folder.

Kept apart from the core (as Dopamine keeps its labs): nothing in the trainer knows about experiments.
:mod:`mtdqn.runner` plans an experiment's groups, runs them (resumably) and gathers their metrics.

An :class:`Arm` is anything with a name that can train some seeds into a run folder that ends up holding a
``metrics.csv`` in the run format (one row per epoch, seed and task): :class:`ConfigArm` trains a
:class:`~mtdqn.config.Config` with :class:`~mtdqn.train.Trainer`; another arm (a transfer run, say)
subclasses :class:`Arm` and implements :meth:`Arm.run` and :meth:`Arm.describe`. :class:`TransferArm`
starts from the best-epoch shared layers of another arm's run of the same seeds, which it names in
:attr:`Arm.depends_on` (the runner finishes those groups first). To add an experiment::

    register(Experiment("my-exp", "what it shows", arms=(ConfigArm("A", make_a), ConfigArm("B", make_b))))

An experiment that varies one setting across its arms declares it as a :class:`Sweep`; its report then
also draws every task's final J and AUC (and, after ``--analyze``, the sharing metrics) against the value.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtdqn.config import (
    HARDWARE_FIELDS,
    TASK_BALANCES,
    Config,
    ExplorationConfig,
    LearnerConfig,
    NetworkConfig,
    ReplayConfig,
    RunConfig,
    atari_run_config,
    task_preset,
)
from mtdqn.config_atari import AtariConfig, AtariNetworkConfig
from mtdqn.errors import UserError

OVERRIDE_SECTIONS = ("network", "replay", "learner", "exploration", "run", "atari", "atari_network")
_NOT_OVERRIDABLE = {
    "run.seeds": "--seeds",
    "run.epochs": "--epochs",
    "run.device": "--device",
    # only records which preset the network's shape came from: setting it would change no layer
    "network.arch": "--set network.width=N (and the other network fields) to change the network's shape",
}


@dataclass
class RunOptions:
    """How one group is run; the same for every group of an experiment."""

    epochs: int
    overrides: dict[str, str] = field(default_factory=dict)
    """``section.field`` -> value text (``run.steps_per_epoch`` -> ``"40"``), applied to every arm."""
    device: str | None = None
    progress: bool = True
    torch_threads: int | None = None
    """Learner threads (set by a backend that runs several groups per machine); None: the run's own."""


class Arm(ABC):
    """One arm of an experiment: trains a group of seeds into a run folder, resumably."""

    name: str
    depends_on: tuple[str, ...] = ()
    """Arms (earlier in the experiment) whose group of the same seeds must be complete before a group of
    this arm starts; the runner runs the arms in stages accordingly."""

    @abstractmethod
    def run(self, seeds: list[int], run_dir: Path, options: RunOptions) -> None:
        """Train ``seeds`` for ``options.epochs`` epochs into ``run_dir``, continuing what is already there.

        Must leave ``run_dir/metrics.csv`` in the run format with epochs 0..epochs for every seed and task,
        and must be safe to call again after a kill at any point (it is retried and re-run)."""

    @abstractmethod
    def describe(self, options: RunOptions) -> dict[str, Any]:
        """JSON-able description for the experiment manifest; a change makes an existing experiment
        incompatible (so the numbers of one experiment all come from the same definition)."""

    def is_complete(self, run_dir: Path, seeds: list[int], epochs: int) -> bool:
        """Whether ``run_dir`` holds the evaluation of epoch ``epochs`` for every seed and task."""
        return run_is_complete(run_dir, seeds, epochs)

    def check(self, seeds: list[int], options: RunOptions) -> str:
        """Validate what a group of ``seeds`` would run, before anything is written (raises
        :class:`UserError`); returns its learner device (``cpu``, ``cuda``, ``cuda:N`` or ``auto``)."""
        self.describe(options)
        return options.device or "cpu"


@dataclass(frozen=True)
class ConfigArm(Arm):
    """An arm that trains ``factory()`` (with the group's seeds, the epochs and the overrides)."""

    name: str
    factory: Callable[[], Config]
    """Builds the arm's configuration; must be picklable (a module-level function or functools.partial) for
    the Ray backend."""

    def config(self, seeds: list[int], options: RunOptions) -> Config:
        return arm_config(self.factory, seeds, options)

    def check(self, seeds: list[int], options: RunOptions) -> str:
        return self.config(seeds, options).run.device

    def describe(self, options: RunOptions) -> dict[str, Any]:
        return {"kind": "config", "config": _description(self.config([0], options))}

    def run(self, seeds: list[int], run_dir: Path, options: RunOptions) -> None:
        from mtdqn.runlog import load_config
        from mtdqn.threads import set_compute_threads
        from mtdqn.train import Trainer

        config = self.config(seeds, options)
        run_dir = Path(run_dir)
        if (run_dir / "config.json").is_file():
            saved = load_config(run_dir)
            if saved.learning_fingerprint() != config.learning_fingerprint():
                raise UserError(
                    f"run folder {run_dir} holds another configuration than arm {self.name} now defines; "
                    "delete that folder or use another experiment --name"
                )
            trainer = Trainer.resume(
                run_dir, epochs=options.epochs, device=options.device, progress=options.progress
            )
        else:  # new, or killed before its config was written: start afresh
            trainer = Trainer.create(config, run_dir, overwrite=True, progress=options.progress)
        if options.torch_threads:
            set_compute_threads(options.torch_threads)
        trainer.run()


def arm_config(factory: Callable[[], Config], seeds: list[int], options: RunOptions) -> Config:
    """``factory()`` with the overrides, the group's seeds, the epochs and the device; validated."""
    config = apply_overrides(factory(), options.overrides)
    config.run.seeds = list(seeds)
    config.run.epochs = options.epochs
    if options.device is not None:
        config.run.device = options.device
    config.validate()
    return config


def _description(config: Config) -> dict[str, Any]:
    """A configuration for the manifest: without the seeds and the settings that change no number."""
    data = config.to_dict()
    for key in ("seeds", *HARDWARE_FIELDS):
        data["run"].pop(key)
    return data


@dataclass(frozen=True)
class TransferArm(Arm):
    """Trains ``factory()`` as a transfer run (spec 1.11) from the best-epoch shared layers of arm
    ``source``'s run of the same seeds in the same experiment folder (member of seed s from source member
    of seed s), with the freeze schedule ``unfreeze_epoch`` (None: frozen for the whole run).

    The run's network is the arm's own (``factory()`` and the overrides); it must match the source's shared
    layers (checked when the run is created). ``config.json`` records the source folder in the form the
    run folder was given (relative to the working directory, or absolute under Ray), the source's weight
    digest and the source member of every seed.
    """

    name: str
    factory: Callable[[], Config]
    """The target task(s) and learning settings (picklable, as for :class:`ConfigArm`)."""
    source: str
    """Name of the source arm (multi-task, earlier in the experiment)."""
    unfreeze_epoch: int | None = 0

    @property
    def depends_on(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.source,)

    def config(self, seeds: list[int], options: RunOptions) -> Config:
        """The configuration before the source is attached (what the manifest records)."""
        return arm_config(self.factory, seeds, options)

    def check(self, seeds: list[int], options: RunOptions) -> str:
        return self.config(seeds, options).run.device

    def describe(self, options: RunOptions) -> dict[str, Any]:
        return {
            "kind": "transfer",
            "source_arm": self.source,
            "unfreeze_epoch": self.unfreeze_epoch,
            "config": _description(self.config([0], options)),
        }

    def source_dir(self, seeds: list[int], run_dir: Path) -> Path:
        """The run folder of the source arm's group with these seeds, from the experiment's manifest
        (``run_dir`` is ``<experiment>/runs/<group>``)."""
        from mtdqn.runner import read_manifest

        folder = Path(run_dir).parent.parent
        manifest = read_manifest(folder) or {}
        for group in manifest.get("groups", []):
            if group["arm"] == self.source and list(group["seeds"]) == list(seeds):
                return folder / group["folder"]
        raise UserError(
            f"transfer arm {self.name}: {folder} holds no group of arm {self.source} with seeds {seeds}; "
            "run the experiment with the same seeds and group size"
        )

    def run(self, seeds: list[int], run_dir: Path, options: RunOptions) -> None:
        from mtdqn.runlog import load_config
        from mtdqn.threads import set_compute_threads
        from mtdqn.train import Trainer
        from mtdqn.transfer import make_transfer_config, read_source

        run_dir = Path(run_dir)
        source_dir = self.source_dir(seeds, run_dir)
        if not run_is_complete(source_dir, seeds, options.epochs):
            raise UserError(
                f"transfer arm {self.name}: its source {source_dir} has not finished epoch {options.epochs}; "
                f"run arm {self.source} first (run the same command again)"
            )
        config = make_transfer_config(
            self.config(seeds, options), source_dir, self.unfreeze_epoch, keep_network=True
        )
        if (run_dir / "config.json").is_file() and (run_dir / "checkpoint.pt").is_file():
            saved = load_config(run_dir)
            if not _same_transfer(saved, config, read_source(source_dir).digest):
                raise UserError(
                    f"run folder {run_dir} holds another transfer than arm {self.name} now defines (or its "
                    f"source {source_dir} changed); delete that folder or use another experiment --name"
                )
            trainer = Trainer.resume(
                run_dir, epochs=options.epochs, device=options.device, progress=options.progress
            )
        else:  # new, or killed before its first checkpoint (nothing learnt yet): start afresh
            trainer = Trainer.create(config, run_dir, overwrite=True, progress=options.progress)
        if options.torch_threads:
            set_compute_threads(options.torch_threads)
        trainer.run()


def _same_transfer(saved: Config, config: Config, source_digest: str) -> bool:
    """Whether a saved transfer run is ``config`` from the same source folder and source weights (the
    source's path may be written differently: relative here, absolute under Ray)."""
    if saved.transfer is None or config.transfer is None:
        return False
    if Path(saved.transfer.source).name != Path(config.transfer.source).name:
        return False
    if saved.transfer.source_fingerprint != source_digest:
        return False
    expected = dataclasses.replace(
        config,
        transfer=dataclasses.replace(
            config.transfer,
            source=saved.transfer.source,
            source_fingerprint=saved.transfer.source_fingerprint,
            source_seeds=list(saved.transfer.source_seeds),
        ),
    )
    return saved.learning_fingerprint() == expected.learning_fingerprint()


@dataclass(frozen=True)
class Sweep:
    """One setting varied across an experiment's arms: the report draws results against its value."""

    parameter: str
    """The configuration field, ``section.field`` (e.g. ``network.feature_width``); ``--set`` may not
    change it."""
    label: str
    """Axis label in the report, e.g. ``shared feature width``."""
    values: dict[str, float]
    """Arm name -> value of the parameter in that arm."""

    def to_dict(self) -> dict[str, Any]:
        return {"parameter": self.parameter, "label": self.label, "values": dict(self.values)}


@dataclass(frozen=True)
class Experiment:
    """A named experiment: its arms (run on the same seeds) and how its report compares them."""

    name: str
    description: str
    arms: tuple[Arm, ...]
    baseline: str | None = None
    """Arm every other arm is compared with in the report (difference of means, Welch p); None: none."""
    epochs: int = 50
    sweep: Sweep | None = None
    """The setting the arms vary, if they vary one (the report then draws results against it)."""
    metric: str = "J"
    """The score of the report: ``J`` (the paper's discounted return) or ``return`` (the undiscounted
    return: an Atari game's raw score)."""
    check_epochs: tuple[int, ...] = (10, 25, 50)
    """Epochs at which the report tables the score; the last one also ends the area under the curve and is
    the epoch of the arms' comparison with the baseline."""

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)


EXPERIMENTS: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to :data:`EXPERIMENTS` (names and arm names must be unique)."""
    if experiment.name in EXPERIMENTS:
        raise ValueError(f"experiment {experiment.name!r} is already registered")
    names = [arm.name for arm in experiment.arms]
    if len(set(names)) != len(names):
        raise ValueError(f"experiment {experiment.name!r} repeats an arm name: {names}")
    if experiment.baseline is not None and experiment.baseline not in names:
        raise ValueError(f"baseline {experiment.baseline!r} is not an arm of {experiment.name!r}")
    for k, arm in enumerate(experiment.arms):
        for dep in arm.depends_on:
            if dep not in names[:k]:
                raise ValueError(f"arm {arm.name!r} depends on {dep!r}, which is not an earlier arm")
    if experiment.sweep is not None and set(experiment.sweep.values) != set(names):
        raise ValueError(f"the sweep of {experiment.name!r} must give a value for every arm: {names}")
    EXPERIMENTS[experiment.name] = experiment
    return experiment


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise UserError(f"unknown experiment {name!r}; use one of {', '.join(sorted(EXPERIMENTS))}")
    return EXPERIMENTS[name]


# --- overrides -----------------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[str, str]:
    """``section.field=value`` -> (``section.field``, ``value``), checked against :class:`Config`."""
    key, sep, value = text.partition("=")
    key = key.strip()
    section, dot, name = key.partition(".")
    if not sep or not dot or section not in OVERRIDE_SECTIONS:
        raise UserError(
            f"--set {text!r} is not SECTION.FIELD=VALUE with SECTION one of {', '.join(OVERRIDE_SECTIONS)} "
            "(e.g. --set run.steps_per_epoch=200)"
        )
    if key in _NOT_OVERRIDABLE:
        raise UserError(f"--set {key} is not allowed; use {_NOT_OVERRIDABLE[key]}")
    fields = {f.name for f in dataclasses.fields(_SECTION_TYPES[section])}
    if name not in fields:
        raise UserError(f"--set {key}: {section} has no field {name!r}; it has {', '.join(sorted(fields))}")
    return key, value.strip()


_SECTION_TYPES = {
    "network": NetworkConfig,
    "replay": ReplayConfig,
    "learner": LearnerConfig,
    "exploration": ExplorationConfig,
    "run": RunConfig,
    "atari": AtariConfig,
    "atari_network": AtariNetworkConfig,
}
"""The configuration section each ``--set SECTION.FIELD`` names (``atari*``: Atari arms only)."""

MULTI_TASK_ONLY = ("run.gradient_batches", "learner.task_balance")
"""Settings about the shared layers: a single-task arm of an experiment keeps its default (checked all the
same), so that ``--set learner.task_balance=param-norm`` balances the MDQN arm against a plain DQN."""


def apply_overrides(config: Config, overrides: dict[str, str]) -> Config:
    """``config`` with each ``section.field`` set to its value, converted to the field's current type
    (the settings of ``MULTI_TASK_ONLY`` on the multi-task arms only)."""
    for key, text in overrides.items():
        section, name = key.split(".", 1)
        part = getattr(config, section)
        if part is None:
            raise UserError(f"--set {key}: this experiment's runs are not Atari runs; drop it")
        value = _convert(key, text, getattr(part, name))
        if key == "learner.task_balance" and value not in TASK_BALANCES:
            raise UserError(f"--set {key}={text}: use one of {', '.join(TASK_BALANCES)}")
        if key in MULTI_TASK_ONLY and config.mode != "multi":
            continue
        setattr(config, section, dataclasses.replace(part, **{name: value}))
    return config


def _convert(key: str, text: str, current: Any) -> Any:
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, float):
            value = float(text)
            if not math.isfinite(value):
                raise UserError(f"--set {key}={text}: give a finite number (no setting takes nan or inf)")
            return value
    except ValueError:
        raise UserError(f"--set {key}={text}: {text!r} is not a valid {type(current).__name__}") from None
    return text


# --- run folders ---------------------------------------------------------------------------------------


def run_is_complete(run_dir: Path, seeds: list[int], epochs: int) -> bool:
    """Whether ``run_dir/metrics.csv`` has, for every (seed, task) of epoch 0, a row of epoch ``epochs``."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return False
    first: set[tuple[int, int]] = set()
    last: set[tuple[int, int]] = set()
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            key = (int(row["seed"]), int(row["task"]))
            if int(row["epoch"]) == 0:
                first.add(key)
            if int(row["epoch"]) == epochs:
                last.add(key)
    return bool(first) and {s for s, _ in first} == set(seeds) and first <= last


# --- the registry --------------------------------------------------------------------------------------


def deramo_gym_config(mode: str) -> Config:
    """The paper's protocol on its five tasks (spec section 6); ``single`` is its DQN baseline."""
    return Config(tasks=task_preset("deramo-gym"), mode=mode)


register(
    Experiment(
        name="deramo-gym",
        description="MDQN (one network, shared layers) vs single-task DQN on the paper's five tasks "
        "(D'Eramo et al. 2020, Figure 'MDQN vs DQN')",
        arms=(
            ConfigArm("MDQN", functools.partial(deramo_gym_config, "multi")),
            ConfigArm("DQN", functools.partial(deramo_gym_config, "single")),
        ),
        baseline="DQN",
    )
)


# deramo-transfer: the paper's transfer to Acrobot (spec 1.11, 5.4).

TRANSFER_TARGET = "Acrobot"
"""The held-out task of the paper's transfer experiment (its name in the ``deramo-gym`` task preset)."""
UNFREEZE_ARMS = {"unfreeze0": 0, "unfreeze10": 10, "unfreeze-never": None}
"""The paper's freeze schedules (``unfreeze51`` there: frozen for its whole 50-epoch run)."""


def transfer_source_config() -> Config:
    """MDQN on the paper's tasks without Acrobot (Cart-Pole, Mountain-Car, Car-On-Hill, Inverted-Pendulum)."""
    return Config(tasks=[t for t in task_preset("deramo-gym") if t.name != TRANSFER_TARGET], mode="multi")


def transfer_target_config(mode: str) -> Config:
    """Acrobot alone (gamma 0.99, horizon 1000); ``single`` is the paper's 'No initialization' DQN. With one
    task both modes build the same network from a seed and learn identically (tested)."""
    return Config(tasks=[t for t in task_preset("deramo-gym") if t.name == TRANSFER_TARGET], mode=mode)


register(
    Experiment(
        name="deramo-transfer",
        description="Transfer to the held-out Acrobot (D'Eramo et al. 2020, spec 1.11): MDQN pre-trained on "
        "Cart-Pole, Mountain-Car, Car-On-Hill and Inverted-Pendulum (arm pretrain), then Acrobot from its "
        "best-epoch shared layers, unfrozen from the start, from epoch 10 or never, against Acrobot from "
        "scratch (DQN)",
        arms=(
            ConfigArm("pretrain", transfer_source_config),
            ConfigArm("DQN", functools.partial(transfer_target_config, "single")),
            *(
                TransferArm(name, functools.partial(transfer_target_config, "multi"), "pretrain", unfreeze)
                for name, unfreeze in UNFREEZE_ARMS.items()
            ),
        ),
        baseline="DQN",
    )
)


# feature-width-review, feature-width-deramo: the review's claim that a narrow shared feature layer fails;
# feature-width-review-relu, feature-width-deramo-relu: the same sweeps with ReLU shared features, to tell the
# width from the sigmoid.

FEATURE_WIDTHS = (80, 40, 20, 10, 5)


def feature_width_config(preset: str, feature_width: int, activation: str = "sigmoid") -> Config:
    """MDQN on the task preset ``preset`` with ``feature_width`` units of ``activation`` in the shared
    feature layer."""
    config = Config(tasks=task_preset(preset), mode="multi")
    config.network.feature_width = feature_width
    config.network.feature_activation = activation
    return config


def _feature_width_experiment(name: str, preset: str, tasks: str, activation: str = "sigmoid") -> Experiment:
    arms = tuple(
        ConfigArm(f"w{w}", functools.partial(feature_width_config, preset, w, activation))
        for w in FEATURE_WIDTHS
    )
    claim = "the review reported that shrinking it from 80 to 10 made every task fail"
    if activation != "sigmoid":
        claim += " (with sigmoid units; this sweep tells the width from the sigmoid)"
    return Experiment(
        name=name,
        description=f"MDQN on {tasks} with {', '.join(map(str, FEATURE_WIDTHS))} units in the shared "
        f"({activation}) feature layer: {claim}",
        arms=arms,
        baseline="w80",
        sweep=Sweep("network.feature_width", "shared feature width", {f"w{w}": w for w in FEATURE_WIDTHS}),
    )


register(_feature_width_experiment("feature-width-review", "review-control", "the review's three tasks"))
register(_feature_width_experiment("feature-width-deramo", "deramo-gym", "the paper's five tasks"))
register(
    _feature_width_experiment(
        "feature-width-review-relu", "review-control", "the review's three tasks", activation="relu"
    )
)
register(
    _feature_width_experiment(
        "feature-width-deramo-relu", "deramo-gym", "the paper's five tasks", activation="relu"
    )
)


# atari-review-exp1, atari-review-mtqn: the review's two Atari experiments at its budget, over seeds (README,
# Atari). Each (arm, seed) takes about 1-2.5 hours on a 2-core CPU: give them --group-size 1 and a cluster
# (--backend ray), or run them one after another (--jobs 1, the default).

ATARI_REVIEW_GAMES = ("ALE/Pong-v5", "ALE/Breakout-v5")
ATARI_REVIEW_EPOCHS = 14
"""14 epochs of 25,000 learning steps per game: the review's budget of 350,000 steps per game."""


def atari_review_config(arch: str, **learner: Any) -> Config:
    """Pong + Breakout, the ``review`` protocol at its budget of 350,000 steps per game as the README's Atari
    runs: batch 32 per game, epsilon 1 -> 0.01 over 100k steps, a 20k random warm-up, a 100k replay per game,
    life loss as a terminal for learning, 25,000-step epochs each evaluated over 12,500 steps per game at
    epsilon 0.05; ``learner`` sets the learner's other fields."""
    config = atari_run_config("review", list(ATARI_REVIEW_GAMES))
    config.atari_network.arch = arch
    config.atari.terminal_on_life_loss = True
    config.replay = ReplayConfig(capacity=100_000, warmup=20_000)
    config.learner = dataclasses.replace(config.learner, batch_size=32, **learner)
    config.exploration.eps_decay_steps = 100_000
    config.run = dataclasses.replace(
        config.run, epochs=ATARI_REVIEW_EPOCHS, steps_per_epoch=25_000, eval_steps=12_500
    )
    return config


def atari_review_mtqn_config(remedies: bool) -> Config:
    """``review-mtqn`` in float32 (bfloat16 rounds away its state signal, README): with the review's
    PyTorch-default init, or with every remedy the README found (Xavier init, per-layer Adam rates at fan-in
    256 with the convolutions' fan-in counted in channels, the Q layer started at zero, param-norm)."""
    if not remedies:
        return atari_review_config("review-mtqn", precision="fp32")
    config = atari_review_config(
        "review-mtqn", precision="fp32", lr_fan_in=256, lr_fan_in_conv="channels", task_balance="param-norm"
    )
    config.atari_network.init = "xavier"
    config.atari_network.zero_q_layer = True
    return config


_ATARI_SCORES = "raw game scores (random play: Pong about -20.7, Breakout about 1.7)"

register(
    Experiment(
        name="atari-review-exp1",
        description="The review's first Atari experiment (review-exp1 network: conv1 per game, the rest "
        "shared) on Pong + Breakout at its budget of 350,000 steps per game, bfloat16: the paper's joint "
        f"loss against param-norm's balanced one; {_ATARI_SCORES}",
        arms=(
            ConfigArm("joint", functools.partial(atari_review_config, "review-exp1", precision="bf16")),
            ConfigArm(
                "param-norm",
                functools.partial(
                    atari_review_config, "review-exp1", precision="bf16", task_balance="param-norm"
                ),
            ),
        ),
        baseline="joint",
        epochs=ATARI_REVIEW_EPOCHS,
        metric="return",
        check_epochs=(7, ATARI_REVIEW_EPOCHS),
    )
)
register(
    Experiment(
        name="atari-review-mtqn",
        description="The review's second Atari architecture (review-mtqn) on Pong + Breakout at 350,000 "
        "steps per game, float32: the review's init against the README's remedies (Xavier init, --lr-fan-in "
        f"256 --lr-fan-in-conv channels, --zero-q-layer, --task-balance param-norm); {_ATARI_SCORES}",
        arms=(
            ConfigArm("review", functools.partial(atari_review_mtqn_config, False)),
            ConfigArm("remedies", functools.partial(atari_review_mtqn_config, True)),
        ),
        baseline="review",
        epochs=ATARI_REVIEW_EPOCHS,
        metric="return",
        check_epochs=(7, ATARI_REVIEW_EPOCHS),
    )
)
