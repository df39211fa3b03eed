"""The paper's published curves (D'Eramo et al. 2020): where they are and how to read them.

The raw results of the authors' repository are kept beside this project, in
``../shared/reference/deramo2020`` (spec ``../shared/specs/deramo2020.md`` section 5). Each file is an
array ``(runs, tasks, evaluations)`` of J, evaluation 0 = before learning, k = after epoch k.

The folder is looked up, first found wins, at: an explicit path; the ``MTDQN_REFERENCE`` environment
variable; ``../shared/reference/deramo2020`` relative to the working directory; the same relative to this
repository (for an editable install). Without it, comparisons are simply left out.

Published curves are matched to an experiment's arms by arm name (:data:`PUBLISHED`) and to its tasks by
task name, so an experiment on a subset of the tasks (or one task, as the transfer to Acrobot) compares
each task it has.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtdqn.errors import UserError

ENV_VAR = "MTDQN_REFERENCE"
RELATIVE = Path("..") / "shared" / "reference" / "deramo2020"
_REPO_CANDIDATE = (Path(__file__).resolve().parents[2] / RELATIVE).resolve()
"""``../shared/reference/deramo2020`` beside the repository (meaningful for a source checkout only)."""

TRANSFER_DIR = "results/dqn/transfer/acro-noreg"
DERAMO_GYM_TASKS = ("Cart-Pole", "Acrobot", "Mountain-Car", "Car-On-Hill", "Inverted-Pendulum")


@dataclass(frozen=True)
class PublishedArm:
    """One published arm: a ``(runs, tasks, evaluations)`` file and the names of its tasks in axis-1 order."""

    path: str
    """Path inside the reference folder."""
    tasks: tuple[str, ...]


PUBLISHED: dict[str, PublishedArm] = {
    # deramo-gym: the paper's Figure "MDQN vs DQN" (100 runs each, 51 evaluations).
    "MDQN": PublishedArm("results/dqn/multidqn/noreg-sigmoid/scores.npy", DERAMO_GYM_TASKS),
    "DQN": PublishedArm("results/dqn/dqn/noreg-sigmoid/scores.npy", DERAMO_GYM_TASKS),
    # deramo-transfer: Acrobot from the shared layers of an MDQN trained on the other four tasks (spec 1.11,
    # 5.4; 100 runs each, 51 evaluations, one source run for all). Its "No initialization" baseline is the
    # Acrobot curve of "DQN" above. unfreeze51 is frozen for the paper's whole 50-epoch run: our "never".
    "unfreeze0": PublishedArm(f"{TRANSFER_DIR}/unfreeze0-noreg-sigmoid.npy", ("Acrobot",)),
    "unfreeze10": PublishedArm(f"{TRANSFER_DIR}/unfreeze10-noreg-sigmoid.npy", ("Acrobot",)),
    "unfreeze-never": PublishedArm(f"{TRANSFER_DIR}/unfreeze51-noreg-sigmoid.npy", ("Acrobot",)),
}
"""Published arm of every arm name that has one (an experiment arm of that name is compared with it)."""


def find_reference(explicit: Path | None = None) -> Path | None:
    """The reference folder, or None when there is none (see the module docstring for the search order)."""
    if explicit is not None:
        if not Path(explicit).is_dir():
            raise UserError(f"reference folder {explicit} does not exist; check the path")
        if not any((Path(explicit) / arm.path).is_file() for arm in PUBLISHED.values()):
            raise UserError(
                f"reference folder {explicit} holds none of the paper's published results (such as "
                f"{PUBLISHED['MDQN'].path}); give the folder that holds results/ "
                f"(e.g. {RELATIVE.as_posix()}), or leave out --reference"
            )
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        if not Path(env).is_dir():
            raise UserError(f"{ENV_VAR}={env} is not a folder; fix or unset it")
        return Path(env)
    for candidate in (Path.cwd() / RELATIVE, _REPO_CANDIDATE):
        if candidate.is_dir():
            return candidate.resolve()
    return None


def load_published(reference: Path, arm: str, task: str) -> np.ndarray | None:
    """``(runs, evaluations)`` published J of ``arm`` on ``task``, or None if the paper has no such curve."""
    spec = PUBLISHED.get(arm)
    if spec is None or task not in spec.tasks:
        return None
    path = reference / spec.path
    if not path.is_file():
        return None
    scores = np.load(path, allow_pickle=False)
    if scores.ndim != 3 or scores.shape[1] != len(spec.tasks):
        raise UserError(f"{path} has shape {scores.shape}; expected (runs, {len(spec.tasks)}, evaluations)")
    return scores[:, spec.tasks.index(task)].astype(np.float64)
