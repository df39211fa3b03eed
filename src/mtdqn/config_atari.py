"""Atari configuration: the environment pipeline, the network choice, game groups and protocol presets.

Kept apart from :mod:`mtdqn.config` (the control-task configuration) so that importing it needs neither
ale-py nor OpenCV. Every dataclass here is plain data: ``dataclasses.asdict`` gives what a run records in
its ``config.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from mtdqn.errors import UserError


@dataclass
class AtariConfig:
    """How an Atari game becomes a task (the DQN preprocessing of Mnih et al. 2015 / Machado et al. 2018)."""

    noop_max: int = 30
    """Random no-op starts: after a reset the emulator runs k ~ U{0, ..., noop_max - 1} frames of NOOP
    (a FIRE press on reset counts as one of them); 0 disables them (ale-py's vector-env convention)."""
    frame_skip: int = 4
    """Emulator frames per agent step (the action is repeated); the observation is the pixel-wise max of
    the last two of them (removes sprite flicker)."""
    screen_size: int = 84
    """Frames are converted to grayscale (ALE's luminance palette) and resized to screen_size x screen_size
    with OpenCV's area interpolation."""
    frame_stack: int = 4
    """Observation = the last frame_stack frames; at an episode start the missing ones are zeros."""
    clip_rewards: bool = True
    """Learn from rewards clipped to [-1, 1]; the raw game score is always kept for reported returns."""
    terminal_on_life_loss: bool = True
    """A lost life is a terminal for learning (no bootstrap) while the game, and the episode, go on."""
    fire_on_reset: bool = True
    """Press FIRE once after every reset in games whose action set has FIRE (Breakout waits for it)."""
    repeat_action_probability: float = 0.0
    """Sticky actions (Machado et al. 2018; ALE v5's default is 0.25): the emulator repeats the previous
    action with this probability at every frame. 0 = deterministic emulator, the DQN setting."""
    full_action_space: bool = False
    """Use all 18 joystick actions instead of the game's minimal action set."""
    max_episode_steps: int = 27_000
    """Truncation (bootstrapped) after this many agent steps: 108,000 frames = 30 min of play, ALE v5's
    limit. Counted from the end of the reset's FIRE and no-op frames."""

    def validate(self) -> None:
        """Raise :class:`UserError` on a value no environment can use."""
        for name in ("frame_skip", "screen_size", "frame_stack", "max_episode_steps"):
            if getattr(self, name) <= 0:
                raise UserError(f"Atari {name} is {getattr(self, name)}; it must be a positive integer")
        if self.noop_max < 0:
            raise UserError(f"Atari noop_max is {self.noop_max}; it must be zero or positive")
        if not 0.0 <= self.repeat_action_probability <= 1.0:
            raise UserError(
                f"repeat_action_probability is {self.repeat_action_probability}; it must lie in [0, 1]"
            )


ATARI_ARCHS = ("review-exp1", "review-mtqn", "deramo-atari", "deramo-atari-2018", "nature")


@dataclass
class AtariNetworkConfig:
    """Which Atari network (see :mod:`mtdqn.nets_atari` for the layer tables)."""

    arch: str = "deramo-atari"
    """``review-exp1`` (the review's first experiment, its MTQN v1), ``review-mtqn`` (its second, v5),
    ``deramo-atari`` (the paper's AtariNetwork), ``deramo-atari-2018`` (its Nov-2018 variant with only conv1
    per game), ``nature`` (Mnih et al. 2015; one per game in single mode)."""
    feature_activation: str = ""
    """Activation of the last shared layer; empty = the architecture's own (``sigmoid`` for the deramo
    networks as in the paper's results, ``relu`` for nature; the review's are fixed by its code)."""
    init: str = ""
    """Weight initialisation; empty = the architecture's own (``torch``, PyTorch's default
    U(+-1/sqrt(fan_in)), for the review's networks and ``nature`` as their code had; ``xavier``,
    Xavier-uniform with ReLU gain and gain 1 for the Q layer, for the deramo networks as the paper's code)."""
    zero_q_layer: bool = False
    """Start the Q layer (the last one) at zero weights and biases, so that Q = 0 for every state and action
    at the start instead of per-action offsets that do not depend on the state (``review-mtqn`` with Xavier
    init: -1.66 to +0.74 on Pong, README). Not in the paper or the review. CLI ``--zero-q-layer``."""
    conv_mode: str = "auto"
    """Per-game convolutions as one grouped convolution (``grouped``) or one convolution per (member, game)
    (``loop``); ``auto``: loop on the CPU (measured faster there), grouped on other devices."""


GAME_GROUPS: dict[str, list[str]] = {
    # The review's three game groups (csreid/atari-mtdqn main.py; spec review-code section 4).
    "pong-like": ["ALE/Pong-v5", "ALE/Breakout-v5", "ALE/Tennis-v5", "ALE/VideoPinball-v5"],
    "invaders-like": [
        "ALE/AirRaid-v5",
        "ALE/Assault-v5",
        "ALE/Atlantis-v5",
        "ALE/DemonAttack-v5",
        "ALE/SpaceInvaders-v5",
        "ALE/Centipede-v5",
    ],
    "pacman-like": ["ALE/MsPacman-v5", "ALE/Berzerk-v5", "ALE/BankHeist-v5", "ALE/Alien-v5"],
    # The review's first experiment: the two games of its Atari t-SNE figures.
    "review-exp1": ["ALE/Pong-v5", "ALE/Breakout-v5"],
}


def game_group(name: str) -> list[str]:
    """The env ids of a game group, in order."""
    if name not in GAME_GROUPS:
        raise UserError(f"unknown game group {name!r}; use one of {', '.join(GAME_GROUPS)}")
    return list(GAME_GROUPS[name])


@dataclass
class AtariProtocol:
    """One Atari training protocol: every number of the DQN recipe, per game (task).

    Steps are agent steps of one game (4 emulator frames each); a multi-task update draws ``batch_size``
    samples from every game. The integration with the trainer maps these onto the generic dataclasses
    (:func:`mtdqn.config.atari_run_config`).
    """

    name: str
    arch: str
    atari: AtariConfig = field(default_factory=AtariConfig)
    gamma: float = 0.99
    optimizer: str = "adam"
    """``adam`` or ``rmsprop-centered`` (DeepMind's RMSProp: centred, no momentum on the update; run as
    PyTorch's ``RMSprop(centered=True)``)."""
    lr: float = 2.5e-4
    optimizer_eps: float = 1e-8
    """Adam's epsilon, or RMSProp's: DeepMind added its 0.01 ("min squared gradient") inside the square
    root, PyTorch's RMSprop adds epsilon outside it (a deviation for ``mnih2015``, README)."""
    rmsprop_decay: float = 0.95
    """RMSProp's decay of both moving averages, of the gradient and of its square (DeepMind's "gradient
    momentum" and "squared gradient momentum", both 0.95); unused by Adam."""
    huber_delta: float = 1.0
    """Huber loss threshold (DQN's error clipping to [-1, 1])."""
    double_dqn: bool = False
    batch_size: int = 32
    replay_capacity: int = 1_000_000
    warmup: int = 50_000
    """Random-action steps stored before the first update."""
    train_frequency: int = 4
    """One update every this many agent steps."""
    target_update_every: int = 2_500
    """Hard target copy every this many updates (2,500 updates = 10,000 agent steps)."""
    eps_start: float = 1.0
    eps_end: float = 0.1
    eps_decay_steps: int = 1_000_000
    eval_epsilon: float = 0.05
    steps_per_epoch: int = 250_000
    eval_steps: int = 125_000
    total_steps: int = 50_000_000
    games: list[str] = field(default_factory=lambda: ["ALE/Breakout-v5"])
    """The protocol's default game set."""


ATARI_PROTOCOLS: dict[str, AtariProtocol] = {
    # Mnih et al. 2015 (Nature), Extended Data Table 1 and its Lua code: RMSProp 2.5e-4 (gradient and
    # squared-gradient momentum 0.95, min squared gradient 0.01), 1M replay, 50k random start, target every
    # 10,000 agent steps (the code's count; the table words it as updates), update every 4 steps, epsilon
    # 1 -> 0.1 over 1M steps, life loss terminal for learning, evaluation at epsilon 0.05, 50M steps.
    "mnih2015": AtariProtocol(
        name="mnih2015",
        arch="nature",
        optimizer="rmsprop-centered",
        lr=2.5e-4,
        optimizer_eps=0.01,
        games=["ALE/Breakout-v5"],
    ),
    # D'Eramo et al.'s dqn/run_atari.py defaults (spec deramo2020 1.2): Adam 2.5e-4, batch 32 per game,
    # replay 500k per game, 50k warm-up, target every 10,000 steps, update every 4, epsilon 1 -> 0.1 over 1M,
    # test epsilon 0.05 over 125,000 steps per 250,000-step epoch, 50M steps, clipped rewards. MushroomRL's
    # Atari wrapper ran with its default ends_at_life=False: no life-loss terminal.
    "deramo-atari": AtariProtocol(
        name="deramo-atari",
        arch="deramo-atari",
        atari=AtariConfig(terminal_on_life_loss=False),
        replay_capacity=500_000,
        games=["ALE/Breakout-v5"],
    ),
    # The review's Atari settings (spec review-code 2 and 4) with its bugs fixed (README, Deviations):
    # batch 100 per game every 4 steps, target every 1,000 steps (250 updates), Adam 1e-4, epsilon floored
    # and started at 1 (its 0.1 -> 0.01 decay over 1M steps kept), Huber on Q(s, a), one joint loss and one
    # Adam, a 100k replay per game with a 10k warm-up (its 10k replay from the 100th transition was too
    # small), FIRE on reset, no life-loss terminal (it had none), evaluation at epsilon 0.05.
    "review": AtariProtocol(
        name="review",
        arch="review-exp1",
        atari=AtariConfig(terminal_on_life_loss=False),
        lr=1e-4,
        batch_size=100,
        replay_capacity=100_000,
        warmup=10_000,
        target_update_every=250,
        eps_start=1.0,
        eps_end=0.01,
        eps_decay_steps=1_000_000,
        steps_per_epoch=25_000,
        eval_steps=25_000,
        total_steps=400_000,
        games=list(GAME_GROUPS["review-exp1"]),
    ),
}


def atari_protocol(name: str) -> AtariProtocol:
    """A copy of the named protocol preset."""
    if name not in ATARI_PROTOCOLS:
        raise UserError(f"unknown Atari protocol {name!r}; use one of {', '.join(ATARI_PROTOCOLS)}")
    preset = ATARI_PROTOCOLS[name]
    return dataclasses.replace(preset, atari=dataclasses.replace(preset.atari), games=list(preset.games))
