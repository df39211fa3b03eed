"""Typed, documented configuration: one dataclass per concern, and the presets.

A run is fully described by one :class:`Config`; it is saved as ``config.json`` in every run folder and a
run is reproducible from it. Defaults are the paper's (D'Eramo et al. 2020, code ``dqn/run_gym.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from mtdqn.config_atari import ATARI_ARCHS, AtariConfig, AtariNetworkConfig
from mtdqn.errors import UserError

ACTIVATIONS = ("relu", "sigmoid", "tanh", "identity")
INITS = ("xavier", "torch")
MODES = ("multi", "single")
KERNELS = ("auto", "numpy", "torch")
TASK_BALANCES = ("none", "param-norm", "feature-norm")
"""``LearnerConfig.task_balance``: the paper's joint loss, or the rule of :mod:`mtdqn.task_balance`."""
OPTIMIZERS = ("adam", "rmsprop-centered")
PRECISIONS = ("fp32", "bf16")
LR_FAN_IN_CONV = ("kernel", "channels")
HARDWARE_FIELDS = ("device", "background_eval", "torch_threads", "eval_workers")
"""RunConfig fields that never change a run's numbers (left out of the learning fingerprint and of an
experiment arm's description; an experiment may be continued with other values of them)."""


@dataclass
class TaskConfig:
    """One task: a Gymnasium environment with a discrete action space and a flat Box observation."""

    env_id: str
    """Gymnasium id, e.g. ``CartPole-v1`` or ``mtdqn/CarOnHill-v0``."""
    gamma: float = 0.99
    """Discount of this task, used in its TD target and in its evaluation score J."""
    horizon: int | None = None
    """Episode length limit (a truncation: bootstrapped, never a terminal). None: the env's registered one."""
    name: str = ""
    """Display name in tables and plots; empty means the env id."""

    @property
    def label(self) -> str:
        return self.name or self.env_id


@dataclass
class NetworkConfig:
    """Task input layers -> shared layers (the last gives the shared features) -> task head layers."""

    arch: str = "deramo"
    """Name of the preset the fields below came from (``deramo`` or ``tiny``); informational."""
    width: int = 80
    """Units of every hidden layer (and of the shared feature layer unless ``feature_width`` is set)."""
    feature_width: int = 0
    """Units of the shared feature layer (the last shared layer); 0 = ``width``. The review reported that
    shrinking it from 80 to 10 made every control task fail (``mtdqn train --feature-width 10``)."""
    n_input_layers: int = 1
    """Task-specific layers at the bottom (the first reads the task's own observation columns)."""
    n_shared_layers: int = 2
    """Shared layers in the middle; the output of the last one is the shared feature vector."""
    n_head_layers: int = 1
    """Task-specific layers at the top; the last outputs one Q value per action."""
    hidden_activation: str = "relu"
    """Activation of every hidden layer except the feature layer."""
    feature_activation: str = "sigmoid"
    """Activation of the last shared layer (the paper's results use sigmoid)."""
    init: str = "xavier"
    """``xavier``: the paper's Xavier-uniform (gain sqrt(2) for hidden layers, 1 for the Q layer) with
    PyTorch's default bias init; ``torch``: PyTorch's default Linear init (the review's nets)."""

    @property
    def n_features(self) -> int:
        """Width of the shared feature vector."""
        return self.feature_width or self.width


@dataclass
class ReplayConfig:
    """Per-task replay memories (uniform sampling)."""

    capacity: int = 5000
    """Transitions kept per task (ring buffer)."""
    warmup: int = 100
    """Random-action steps per task stored before learning starts (no update during warm-up)."""


@dataclass
class LearnerConfig:
    """The DQN update."""

    lr: float = 1e-3
    """Adam learning rate (one optimizer over all parameters)."""
    adam_eps: float = 1e-8
    """Adam's epsilon (RMSProp's with ``optimizer="rmsprop-centered"``); CLI ``--optimizer-eps``."""
    batch_size: int = 100
    """Samples per task in every update (a multi-task batch holds batch_size x n_tasks)."""
    target_update_every: int = 100
    """Hard copy of the online network into the target network every this many updates."""
    train_frequency: int = 1
    """One update every this many joint steps (a joint step = one env step in every task)."""
    double_dqn: bool = False
    """Double DQN target: argmax by the online net, value by the target net."""
    huber_delta: float = 1.0
    """Threshold of the Huber (smooth L1) loss."""
    clip_targets: bool = False
    """Clamp every TD target into the interval of values the task's rewards allow,
    ``[min(r_min, 0), max(r_max, 0)] / (1 - gamma_t)``, with ``r_min``/``r_max`` the smallest and largest
    reward of the member's task in the learner's batches so far (the current one included, so no reward it
    learns from is ever cut). Stops a task's values from diverging by bootstrapping beyond what any policy
    could earn (ReLU features on Mountain-Car, README). Not in the paper. CLI ``--clip-targets``."""
    optimizer: str = "adam"
    """``adam`` (one Adam over all parameters) or ``rmsprop-centered`` (PyTorch's centred RMSProp, momentum 0,
    the Nature DQN's choice; ``adam_eps`` is then its epsilon, added outside the square root)."""
    rmsprop_decay: float = 0.95
    """Squared-gradient (and gradient) moving-average decay of ``rmsprop-centered``; unused by Adam."""
    lr_fan_in: int = 0
    """0: one learning rate for all parameters. N > 0: each layer's weights and bias learn at
    ``lr * min(1, N / fan_in)`` (fan_in: a unit's inputs; a convolution's in-channels x kernel area), the
    muP rule for Adam's hidden layers (Yang et al. 2021): with Adam every weight moves by about ``lr`` per
    step whatever its gradient, so a unit's input sum moves by about ``lr * fan_in`` times its mean input,
    which saturates sigmoid units behind wide layers. CLI ``--lr-fan-in``."""
    lr_fan_in_conv: str = "kernel"
    """What ``lr_fan_in`` counts as a convolution's fan-in: ``kernel`` (in-channels x kernel area, a unit's
    inputs) or ``channels`` (in-channels only: muP counts only the dimensions that grow with the width, so
    for N >= 64 the Nature convolutions keep ``lr`` and only the dense layers are slowed). Dense layers
    count their in-features either way. CLI ``--lr-fan-in-conv``."""
    precision: str = "fp32"
    """``fp32``, or ``bf16``: forward and backward under CPU/CUDA autocast to bfloat16 (weights, optimizer
    state, loss and TD targets stay float32). Measured 1.3x faster for the Atari update on the 2-core CPU."""
    kernels: str = "auto"
    """How the update's forwards and backward run: ``torch`` (PyTorch autograd), ``numpy`` (the backward
    written out in :mod:`mtdqn.backprop`, with numpy's OpenBLAS matmuls: the same gradients up to float
    rounding, about 2x faster on the AMD development CPU, where PyTorch's MKL is slow; float32 control
    networks on a CPU only), or ``auto`` (numpy where it applies, torch elsewhere). Runs saved before this
    field existed load as ``torch``, so they resume with the numbers they started with. CLI ``--kernels``."""
    task_balance: str = "none"
    """``none``: the paper's joint loss, the plain mean over tasks. ``param-norm``: ``mean_t w_t L_t`` with
    weights that equalise the tasks' gradient norms on the shared parameters (measured every
    ``task_balance_every`` updates). ``feature-norm``: each task's gradient at the shared features rescaled
    to the tasks' mean norm there in every update. :mod:`mtdqn.task_balance`; not in the paper or the
    review. Multi-task runs, with either kernels. CLI ``--task-balance``."""
    task_balance_every: int = 100
    """``param-norm``: updates between two measurements of the tasks' gradient norms (each costs one backward
    per task with the torch kernels, one backward with the numpy kernels). CLI ``--task-balance-every``."""
    task_balance_max_weight: float = 10.0
    """``param-norm``: the largest loss weight a task can get (0: no bound). Without a bound a task whose
    gradient on the shared layers vanishes (a Mountain-Car whose values have settled at -1/(1-gamma) before it
    ever reached the goal) gets an unbounded weight (6e11-3e18 measured on ``deramo-gym``). The smallest
    weight is at least 1/T by construction. Runs saved before this field load with 0, their behaviour.
    CLI ``--task-balance-max-weight``."""


@dataclass
class ExplorationConfig:
    """Epsilon-greedy exploration, one linear schedule per task over its own learning steps."""

    eps_start: float = 1.0
    eps_end: float = 0.01
    """Floor: epsilon is held here after the decay (the review's schedule fell below zero)."""
    eps_decay_steps: int = 5000
    """Learning steps of a task over which epsilon goes linearly from eps_start to eps_end."""
    eval_epsilon: float = 0.0
    """Epsilon during evaluation (0 = greedy, the paper's protocol)."""


@dataclass
class RunConfig:
    """Length of the run, evaluation protocol, seed and hardware."""

    epochs: int = 50
    steps_per_epoch: int = 1000
    """Learning steps per task in one epoch."""
    eval_steps: int = 2000
    """Greedy evaluation steps per task after every epoch (and once before learning)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """One independent agent per seed, trained together as a population (one batched update for all).
    A seed fixes every random stream of its agent (network init, exploration, replay sampling,
    environments), so an agent's numbers do not depend on which other seeds share the run."""
    device: str = "cpu"
    """``cpu``, ``cuda`` or ``auto`` (CUDA when available)."""
    background_eval: bool = True
    """Evaluate in a second process while the next epoch trains (same numbers, faster on 2+ cores)."""
    torch_threads: int = 0
    """Threads of the learner (PyTorch's intra-op pool; with the numpy kernels also the slices of members
    whose products run at once); no number depends on it. 0 = automatic: 1 for a single seed (its small
    matmuls are fastest on one core while the other evaluates), every core for a population."""
    eval_workers: int = 0
    """Processes that share each background evaluation, each playing a contiguous slice of the members
    (the same numbers: members are independent). 0 = automatic: 1 when the learner is on the CPU (its threads
    want the cores), else one per 25 members, at most half the cores."""
    gradient_batches: int = 0
    """Multi-task runs: after the warm-up and after every epoch's learning, measure each task's gradient on
    the shared layers over this many replay batches (:mod:`mtdqn.analysis.gradients`) into gradients.csv.
    From its own random stream: no learning number changes. 0 = off."""


@dataclass
class TransferConfig:
    """Start the shared layers from another run's best-epoch shared weights (the paper's transfer, spec 1.11).

    The run's task input layers and heads are fresh (from its own seeds); its shared layers are copied from
    the source run's ``best_shared.pt`` before learning. Build one with
    :func:`mtdqn.transfer.make_transfer_config`.
    """

    source: str
    """Folder of the source run (multi-task), as given: relative to the working directory, or absolute."""
    unfreeze_epoch: int | None = 0
    """First epoch whose updates train the shared layers (the paper's ``--unfreeze-epoch``): they are frozen
    during epochs 1 .. unfreeze_epoch - 1. 0 (or 1): never frozen; None: frozen for the whole run."""
    source_fingerprint: str = ""
    """Digest of the source's best-epoch shared weights; empty: filled in when the run is created."""
    source_seeds: list[int] = field(default_factory=list)
    """Per member of this run, the seed of the source member whose shared weights it starts from; empty:
    filled in when the run is created (the source member of the same seed, else the source's member number
    ``seed mod n_source_members``)."""


@dataclass
class Config:
    """Everything that defines a run."""

    tasks: list[TaskConfig]
    mode: str = "multi"
    """``multi``: one network, shared middle layers (MDQN). ``single``: one independent network of the same
    shape per task, trained in lockstep with the same budget (the paper's DQN baseline)."""
    network: NetworkConfig = field(default_factory=NetworkConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    run: RunConfig = field(default_factory=RunConfig)
    transfer: TransferConfig | None = None
    """Shared layers from another run (None: a run from scratch)."""
    atari: AtariConfig | None = None
    """The Atari preprocessing of a run whose tasks are ALE games (``ALE/Pong-v5``); None for vector tasks."""
    atari_network: AtariNetworkConfig | None = None
    """The Atari network of such a run (``network`` then describes nothing and is left at its defaults)."""

    @property
    def is_atari(self) -> bool:
        return self.atari is not None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """The configuration saved as ``data`` (:meth:`to_dict`, e.g. from a run's config.json).

        Every value must have its field's type (an integer is taken for a float); a missing section or
        field, an unknown one, or a value of another type is a :class:`UserError` that names the field.
        Fields added after a run was saved take their defaults (``learner.kernels``: ``torch``, the only
        kernels before the field existed); ``transfer``, ``atari`` and ``atari_network`` may be absent.
        """
        if not isinstance(data, dict):
            raise UserError(
                f"the configuration is {_shown(data)}; it must be an object of sections "
                f"({', '.join(_REQUIRED_SECTIONS)}); {_FILE_FIX}"
            )
        for name in _REQUIRED_SECTIONS:
            if name not in data:
                raise UserError(f"the configuration has no {name!r} section; {_FILE_FIX}")
        data = dict(data)
        if isinstance(data["learner"], dict):
            # fields added later, with the value that reproduces what runs saved before them did
            data["learner"] = {"kernels": "torch", "task_balance_max_weight": 0.0, **data["learner"]}
        return _dataclass_from_json(cls, data, "")

    def learning_fingerprint(self) -> str:
        """Hash of everything that changes the learning (not epochs, device or eval placement)."""
        # read back as from config.json, so that an integer in a float field (gamma=1 from Python, or 1.0
        # rewritten as 1 by a JSON tool) hashes as the float it stands for
        data = Config.from_dict(self.to_dict()).to_dict()
        for key in ("epochs", *HARDWARE_FIELDS):
            data["run"].pop(key)
        data["run"].pop("gradient_batches")  # a measurement from its own random stream: learning unchanged
        if data["transfer"] is None:  # runs from scratch keep the fingerprint they had before transfers
            data.pop("transfer")
        if data["network"]["feature_width"] == 0:  # likewise for runs from before --feature-width
            data["network"].pop("feature_width")
        # Fields added with the Atari runs join the hash only when set, so older runs keep resuming.
        for key in ("atari", "atari_network"):
            if data[key] is None:
                data.pop(key)
        if data.get("atari_network") and not data["atari_network"]["init"]:  # runs from before --init
            data["atari_network"].pop("init")
        if data.get("atari_network") and not data["atari_network"]["zero_q_layer"]:  # before --zero-q-layer
            data["atari_network"].pop("zero_q_layer")
        if self.learner.task_balance != "param-norm":  # read by param-norm only
            data["learner"].pop("task_balance_every")
        if self.learner.task_balance != "param-norm" or not self.learner.task_balance_max_weight:
            data["learner"].pop("task_balance_max_weight")  # param-norm runs saved before it: no bound
        defaults = LearnerConfig()
        for key in (
            "optimizer",
            "rmsprop_decay",
            "precision",
            "lr_fan_in",
            "lr_fan_in_conv",
            "task_balance",
            "clip_targets",
        ):
            if data["learner"][key] == getattr(defaults, key):
                data["learner"].pop(key)
        if data["learner"]["kernels"] == "torch":  # the only kernels of runs from before the field
            data["learner"].pop("kernels")
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def validate(self) -> None:
        """Raise :class:`UserError` on a value no run can use."""
        if not self.tasks:
            raise UserError(
                "no task given (tasks is empty); give at least one: mtdqn train takes --task ENV_ID "
                "(repeatable) or --preset NAME"
            )
        if self.mode not in MODES:
            raise UserError(f"unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        for task in self.tasks:
            if not 0.0 <= task.gamma <= 1.0:
                raise UserError(f"gamma of {task.label} is {task.gamma}; it must lie in [0, 1]")
            if task.horizon is not None and task.horizon <= 0:
                raise UserError(f"horizon of {task.label} is {task.horizon}; it must be a positive integer")
        for i, task in enumerate(self.tasks):
            if task in self.tasks[:i]:
                j = self.tasks.index(task)
                raise UserError(
                    f"task {task.label} is listed twice (tasks[{j}] and tasks[{i}] are the same); list each "
                    "task once (one environment twice needs a different gamma, horizon or name per copy)"
                )
        atari_ids = [t.env_id for t in self.tasks if t.env_id.startswith("ALE/")]
        if self.atari is None and atari_ids:
            raise UserError(
                f"{atari_ids[0]} is an Atari game but the configuration has no Atari settings; "
                "build it with mtdqn train (which adds them) or set Config.atari = AtariConfig()"
            )
        if self.atari is not None:
            if len(atari_ids) != len(self.tasks):
                other = next(t.env_id for t in self.tasks if not t.env_id.startswith("ALE/"))
                raise UserError(
                    f"{other} is not an Atari game; a run takes Atari games (ALE/<Game>-v5) or vector "
                    "tasks, not both"
                )
            if self.transfer is not None:
                raise UserError("transfer between Atari runs is not supported yet; train from scratch")
            if any(t.horizon is not None for t in self.tasks):
                raise UserError(
                    "Atari games take their time limit from the Atari settings, not per task; "
                    "use --max-episode-steps instead of --horizon"
                )
            self.atari.validate()
            if self.atari_network is None:
                raise UserError("an Atari run needs Config.atari_network (mtdqn train --arch sets it)")
        if self.run.eval_workers < 0:
            raise UserError(
                f"eval_workers is {self.run.eval_workers}; give 0 (automatic) or a positive count"
            )
        if self.run.gradient_batches < 0:
            raise UserError(
                f"gradient_batches is {self.run.gradient_batches}; give 0 (off) or a positive count"
            )
        if self.run.gradient_batches and self.mode != "multi":
            raise UserError(
                "--gradient-batches measures how the tasks pull on the shared layers, and a single-task "
                "baseline (--mode single) has none; drop --gradient-batches or use --mode multi"
            )
        if self.learner.optimizer not in OPTIMIZERS:
            raise UserError(
                f"unknown optimizer {self.learner.optimizer!r}; use one of {', '.join(OPTIMIZERS)}"
            )
        if self.learner.precision not in PRECISIONS:
            raise UserError(
                f"unknown precision {self.learner.precision!r}; use one of {', '.join(PRECISIONS)}"
            )
        if self.learner.kernels not in KERNELS:
            raise UserError(f"unknown kernels {self.learner.kernels!r}; use one of {', '.join(KERNELS)}")
        if self.learner.kernels == "numpy" and (self.learner.precision != "fp32" or self.atari is not None):
            raise UserError(
                "--kernels numpy runs the float32 update of a control network only; "
                "use --kernels auto (or torch) with --precision bf16 or Atari games"
            )
        if self.learner.task_balance not in TASK_BALANCES:
            raise UserError(
                f"unknown task balance {self.learner.task_balance!r}; use one of {', '.join(TASK_BALANCES)}"
            )
        max_weight = self.learner.task_balance_max_weight
        if not (max_weight == 0 or 1 <= max_weight < math.inf):
            raise UserError(
                f"task_balance_max_weight is {max_weight}; give a number of at least 1, or 0 for no bound"
            )
        if self.learner.task_balance_every < 1:
            raise UserError(
                f"task_balance_every is {self.learner.task_balance_every}; give a positive number of updates"
            )
        if self.learner.task_balance != "none" and self.mode != "multi":
            raise UserError(
                "--task-balance balances the tasks' pull on the shared layers, and a single-task baseline "
                "(--mode single) has none; drop --task-balance or use --mode multi"
            )
        if not 0.0 < self.learner.rmsprop_decay < 1.0:
            raise UserError(f"RMSProp decay is {self.learner.rmsprop_decay}; it must lie in (0, 1)")
        defaults = LearnerConfig()
        _positive_finite("learner.lr", self.learner.lr, defaults.lr, "--lr")
        _positive_finite("learner.adam_eps", self.learner.adam_eps, defaults.adam_eps, "--optimizer-eps")
        _positive_finite("learner.huber_delta", self.learner.huber_delta, defaults.huber_delta)
        net = self.network
        if self.atari is None and net.arch not in ARCH_PRESETS:
            atari = " (an Atari network: it applies to ALE/ games only)" if net.arch in ATARI_ARCHS else ""
            raise UserError(
                f"network.arch is {net.arch!r}{atari}; a control network is one of {', '.join(ARCH_PRESETS)} "
                "(mtdqn train --arch NAME sets it with the preset's shape)"
            )
        _positive("network width", net.width)
        if net.feature_width < 0:
            raise UserError(f"feature width is {net.feature_width}; give a positive integer (0 = --width)")
        _positive("number of task input layers", net.n_input_layers)
        _positive("number of shared layers", net.n_shared_layers)
        _positive("number of head layers", net.n_head_layers)
        for name, act in (("hidden", net.hidden_activation), ("feature", net.feature_activation)):
            if act not in ACTIVATIONS:
                raise UserError(f"unknown {name} activation {act!r}; use one of {', '.join(ACTIVATIONS)}")
        if net.init not in INITS:
            raise UserError(f"unknown init {net.init!r}; use one of {', '.join(INITS)}")
        _positive("replay capacity", self.replay.capacity)
        _positive("replay warm-up", self.replay.warmup)
        _positive("batch size", self.learner.batch_size)
        _positive("target update period", self.learner.target_update_every)
        _positive("train frequency", self.learner.train_frequency)
        if self.learner.lr_fan_in < 0:
            raise UserError(f"--lr-fan-in is {self.learner.lr_fan_in}; give 0 (off) or a positive fan-in")
        if self.learner.lr_fan_in_conv not in LR_FAN_IN_CONV:
            choices = ", ".join(LR_FAN_IN_CONV)
            raise UserError(f"unknown --lr-fan-in-conv {self.learner.lr_fan_in_conv!r}; use one of {choices}")
        if self.learner.lr_fan_in_conv != "kernel" and not self.learner.lr_fan_in:
            raise UserError("--lr-fan-in-conv applies to per-layer rates only; give --lr-fan-in N as well")
        _positive("epsilon decay steps", self.exploration.eps_decay_steps)
        for name in ("eps_start", "eps_end", "eval_epsilon"):
            value = getattr(self.exploration, name)
            if not 0.0 <= value <= 1.0:
                raise UserError(f"{name} is {value}; it must lie in [0, 1]")
        if self.run.epochs < 0:
            raise UserError(f"epochs is {self.run.epochs}; it must be zero or positive")
        _positive("steps per epoch", self.run.steps_per_epoch)
        _positive("evaluation steps", self.run.eval_steps)
        if self.run.torch_threads < 0:
            raise UserError(
                f"torch threads is {self.run.torch_threads}; use 0 (automatic) or a positive count"
            )
        seeds, wrong = self.run.seeds, ""
        if not seeds:
            wrong = "it is empty"
        elif min(seeds) < 0:
            wrong = f"{min(seeds)} is negative"
        elif len(set(seeds)) != len(seeds):
            wrong = "a seed repeats"
        if wrong:
            raise UserError(
                f"run.seeds is {seeds}: {wrong}; it must be a non-empty list of distinct non-negative "
                "integers (mtdqn train sets it with --seed N or --seeds 0-9)"
            )
        if self.run.device not in ("cpu", "cuda", "auto") and not self.run.device.startswith("cuda:"):
            raise UserError(f"unknown device {self.run.device!r}; use cpu, cuda, cuda:N or auto")
        if self.transfer is not None:
            if not self.transfer.source:
                raise UserError("transfer without a source run; pass --from RUN_DIR")
            unfreeze = self.transfer.unfreeze_epoch
            if unfreeze is not None and unfreeze < 0:
                raise UserError(
                    f"unfreeze epoch is {unfreeze}; use 0 (never frozen), a positive epoch or never"
                )
            if self.transfer.source_seeds and len(self.transfer.source_seeds) != len(self.run.seeds):
                raise UserError(
                    f"transfer source_seeds {self.transfer.source_seeds} do not give one source member per "
                    f"seed ({len(self.run.seeds)} seeds); give one per seed or none"
                )


def _positive(what: str, value: int) -> None:
    if value <= 0:
        raise UserError(f"{what} is {value}; it must be a positive integer")


def _positive_finite(where: str, value: float, default: float, flag: str = "") -> None:
    """Refuse a ``value`` of the float field ``where`` that is not positive and finite (NaN included)."""
    if not (math.isfinite(value) and value > 0):
        how = f"{flag}, " if flag else ""
        raise UserError(f"{where} is {value}; it must be a positive finite number ({how}default {default})")


# --- reading a saved configuration ---------------------------------------------------------------------

_REQUIRED_SECTIONS = ("tasks", "mode", "network", "replay", "learner", "exploration", "run")
"""Sections every saved configuration has; ``transfer``, ``atari`` and ``atari_network`` may be absent."""
_FILE_FIX = (
    "the file was written by another version of mtdqn or edited by hand: fix or restore it, "
    "or start a new run with --overwrite"
)
_SCALARS: dict[type, str] = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _shown(value: Any) -> str:
    """``value`` as a message shows it: JSON's null, true and false; Python's repr otherwise (shortened)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected(hint: Any) -> str:
    """The type ``hint`` in words (``an integer or null``, ``a list of integers``)."""
    if dataclasses.is_dataclass(hint):
        return f"an object of {hint.__name__} fields"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _expected(a) for a in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        plural = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}
        if item in plural:
            return f"a list of {plural[item]}"
        return f"a list of objects of {item.__name__} fields"
    return _SCALARS[hint]


def _json_value(hint: Any, value: Any, where: str, expected: Any = None) -> Any:
    """``value`` (parsed JSON) as a value of type ``hint``; a :class:`UserError` naming ``where`` if it is
    none (``expected``: the type the message names, when ``hint`` is one arm of a union)."""
    wrong = UserError(f"{where} is {_shown(value)}, not {_expected(expected or hint)}; {_FILE_FIX}")
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise wrong
        return _dataclass_from_json(hint, value, where)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None:
            if type(None) in args:
                return None
            raise wrong
        (arm,) = [a for a in args if a is not type(None)]  # only optional fields: X | None
        return _json_value(arm, value, where, expected=hint)
    if origin is list:
        if not isinstance(value, list):
            raise wrong
        (item,) = typing.get_args(hint)
        return [_json_value(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint not in _SCALARS:
        raise TypeError(f"{where}: no JSON reading for the type {hint!r}")
    is_bool = isinstance(value, bool)
    ok = {
        bool: is_bool,
        int: isinstance(value, int) and not is_bool,
        float: isinstance(value, int | float) and not is_bool,  # a hand-written 1 is the float 1.0
        str: isinstance(value, str),
    }[hint]
    if not ok:
        raise wrong
    return float(value) if hint is float else value  # 1 (as jq and hand edits write 1.0) is 1.0


def _dataclass_from_json(cls: type, data: dict[str, Any], where: str) -> Any:
    """An instance of the dataclass ``cls`` from its fields in ``data`` (every value checked)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    owner, kind = (where, "field") if where else ("the configuration", "section")
    for name in data:
        if name not in fields:
            raise UserError(
                f"{owner} has an unknown {kind} {name!r} (it has {', '.join(fields)}); {_FILE_FIX}"
            )
    for name, f in fields.items():
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"{owner} has no {kind} {name!r}, which it needs; {_FILE_FIX}")
    values = {
        name: _json_value(hints[name], v, f"{where}.{name}" if where else name) for name, v in data.items()
    }
    return cls(**values)


# --- presets -------------------------------------------------------------------------------------------

TASK_PRESETS: dict[str, list[TaskConfig]] = {
    # The paper's five tasks in the paper's order, horizons and discounts (spec section 1.3).
    "deramo-gym": [
        TaskConfig("CartPole-v1", gamma=0.99, horizon=500, name="Cart-Pole"),
        TaskConfig("Acrobot-v1", gamma=0.99, horizon=1000, name="Acrobot"),
        TaskConfig("MountainCar-v0", gamma=0.99, horizon=1000, name="Mountain-Car"),
        TaskConfig("mtdqn/CarOnHill-v0", gamma=0.95, horizon=100, name="Car-On-Hill"),
        TaskConfig("mtdqn/InvertedPendulumDiscrete-v1", gamma=0.95, horizon=3000, name="Inverted-Pendulum"),
    ],
    # The review's three tasks (csreid/atari-mtdqn replica.py), gamma 0.99, with the paper's horizons.
    "review-control": [
        TaskConfig("CartPole-v1", gamma=0.99, horizon=500, name="CartPole"),
        TaskConfig("Acrobot-v1", gamma=0.99, horizon=1000, name="Acrobot"),
        TaskConfig("MountainCar-v0", gamma=0.99, horizon=1000, name="MountainCar"),
    ],
}

ARCH_PRESETS: dict[str, NetworkConfig] = {
    # D'Eramo et al.: obs -> 80 ReLU | 80 -> 80 ReLU, 80 -> 80 sigmoid (shared) | 80 -> A.
    "deramo": NetworkConfig(),
    # The review's 130-parameter CartPole net (simple.ipynb): 4 -> 8 ReLU -> 8 ReLU -> 2, PyTorch init.
    "tiny": NetworkConfig(arch="tiny", width=8, n_shared_layers=1, feature_activation="relu", init="torch"),
}


def task_preset(name: str) -> list[TaskConfig]:
    if name not in TASK_PRESETS:
        raise UserError(f"unknown preset {name!r}; use one of {', '.join(TASK_PRESETS)}")
    return [dataclasses.replace(t) for t in TASK_PRESETS[name]]


def arch_preset(name: str) -> NetworkConfig:
    if name not in ARCH_PRESETS:
        raise UserError(f"unknown architecture {name!r}; use one of {', '.join(ARCH_PRESETS)}")
    return dataclasses.replace(ARCH_PRESETS[name])


def atari_run_config(protocol: str, env_ids: list[str] | None = None, mode: str = "multi") -> Config:
    """A run of Atari games with every number from an Atari protocol preset (``mnih2015``, ``deramo-atari``,
    ``review``; :data:`mtdqn.config_atari.ATARI_PROTOCOLS`). ``env_ids`` default to the protocol's games."""
    from mtdqn.config_atari import atari_protocol

    p = atari_protocol(protocol)
    games = env_ids or p.games
    return Config(
        tasks=[
            TaskConfig(env_id, gamma=p.gamma, name=env_id.split("/")[-1].split("-")[0]) for env_id in games
        ],
        mode=mode,
        replay=ReplayConfig(capacity=p.replay_capacity, warmup=p.warmup),
        learner=LearnerConfig(
            lr=p.lr,
            adam_eps=p.optimizer_eps,
            batch_size=p.batch_size,
            target_update_every=p.target_update_every,
            train_frequency=p.train_frequency,
            double_dqn=p.double_dqn,
            huber_delta=p.huber_delta,
            optimizer=p.optimizer,
            rmsprop_decay=p.rmsprop_decay,
        ),
        exploration=ExplorationConfig(
            eps_start=p.eps_start,
            eps_end=p.eps_end,
            eps_decay_steps=p.eps_decay_steps,
            eval_epsilon=p.eval_epsilon,
        ),
        run=RunConfig(
            epochs=max(1, p.total_steps // p.steps_per_epoch),
            steps_per_epoch=p.steps_per_epoch,
            eval_steps=p.eval_steps,
        ),
        atari=dataclasses.replace(p.atari),
        atari_network=AtariNetworkConfig(arch=p.arch),
    )
