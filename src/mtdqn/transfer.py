"""Transfer: start a run's shared layers from another run's best-epoch shared weights (spec 1.11).

A transfer run builds its network from its own seeds as a run from scratch would (fresh task input layers
and heads), then, before learning, overwrites the online network's shared layers with the source run's
``best_shared.pt``. As in the paper's code, the target network keeps the fresh shared layers until the first
hard target copy (``target_update_every`` updates later). The shared layers are frozen (no gradient, so
Adam neither moves them nor advances their state) during epochs ``1 .. unfreeze_epoch - 1``.

Population: member m (seed s) of the transfer run starts from the source member with seed s when the
source has one, else from the source's member number ``s mod n_source_members`` (by seed, not by position,
so a seed's run does not depend on the other seeds of its population). ``TransferConfig.source_seeds``
records the choice (and may be given explicitly).

From Python::

    base = Config(tasks=[task_preset("deramo-gym")[1]], run=RunConfig(seeds=list(range(10))))
    config = make_transfer_config(base, "runs/pretrained", unfreeze_epoch=10)
    Trainer.create(config, "runs/acrobot-unfreeze10").run()
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mtdqn.best_shared import (
    BEST_SHARED_FILE,
    describe_spec,
    load_best_shared,
    shared_layer_indices,
    shared_spec,
    weights_digest,
)
from mtdqn.config import Config, TransferConfig
from mtdqn.errors import UserError
from mtdqn.nets import MultiTaskQNetwork
from mtdqn.runlog import load_config


@dataclass
class SourceShared:
    """A source run's best-epoch shared weights, as read from its ``best_shared.pt``."""

    path: Path
    weights: list[torch.Tensor]
    """Weights then biases of the shared layers, each with the source's member dimension first."""
    seeds: list[int]
    epochs: list[int]
    spec: dict[str, Any]
    digest: str


def shared_frozen(epoch: int, unfreeze_epoch: int | None) -> bool:
    """Whether the shared layers are frozen during learning epoch ``epoch`` (1-based).

    The paper's ``--unfreeze-epoch u``: frozen during epochs 1 .. u - 1, trained from epoch u on; 0 (and 1)
    never freeze; None never unfreezes.
    """
    return unfreeze_epoch is None or epoch < unfreeze_epoch


def read_source(source: str | Path) -> SourceShared:
    """Read and check a source run folder; every problem is a one-line :class:`UserError`."""
    folder = Path(source)
    config = _source_config(folder)
    if config.mode != "multi":
        raise UserError(
            f"transfer source {folder} is a single-task baseline run (mode {config.mode}) and has no shared "
            "layers; transfer from a --mode multi run"
        )
    path = folder / BEST_SHARED_FILE
    if not path.is_file():
        raise UserError(
            f"transfer source {folder} has no {BEST_SHARED_FILE} (no epoch >= 1 evaluated yet); "
            "train it for at least one epoch first"
        )
    data = load_best_shared(path)
    written_by = data.get("run_fingerprint")
    if (written_by is not None and written_by != config.learning_fingerprint()) or [
        int(s) for s in data["seeds"]
    ] != list(config.run.seeds):
        raise UserError(
            f"{path} was not written by the run in {folder} (other configuration or seeds than its "
            "config.json); restore that run's own best_shared.pt or retrain it"
        )
    weights = list(data["weights"]) + list(data["biases"])
    return SourceShared(
        path=path,
        weights=weights,
        seeds=[int(s) for s in data["seeds"]],
        epochs=[int(e) for e in data["epoch"]],
        spec=dict(data["shared_spec"]),
        digest=weights_digest(weights),
    )


def _source_config(folder: Path) -> Config:
    if not folder.is_dir():
        raise UserError(
            f"transfer source {folder} is not a folder; give --from the folder of a multi-task run"
        )
    return load_config(folder)


def default_source_seeds(source_seeds: list[int], seeds: list[int]) -> list[int]:
    """Per target seed: the same seed in the source, else the source's member number ``seed mod S_src``."""
    return [s if s in source_seeds else source_seeds[s % len(source_seeds)] for s in seeds]


def check_compatible(source: SourceShared, config: Config) -> None:
    """The source's shared layers must fit this run's network exactly."""
    mine = shared_spec(config.network)
    if source.spec != mine:
        raise UserError(
            f"shared layers of transfer source {source.path.parent} ({describe_spec(source.spec)}) do not "
            f"match this run's ({describe_spec(mine)}); drop --arch/--width/--feature-activation to use the "
            "source's network"
        )


def prepare(config: Config) -> tuple[Config, SourceShared]:
    """Check the transfer of ``config`` against its source and fill in the digest and source seeds."""
    assert config.transfer is not None
    config.validate()
    source = read_source(config.transfer.source)
    check_compatible(source, config)
    tc = config.transfer
    if tc.source_fingerprint and tc.source_fingerprint != source.digest:
        raise UserError(
            f"the best-epoch shared weights of transfer source {tc.source} changed since this run was "
            f"configured (digest {source.digest}, expected {tc.source_fingerprint}); restore the source or "
            "start a new transfer run"
        )
    chosen = list(tc.source_seeds) or default_source_seeds(source.seeds, config.run.seeds)
    missing = sorted(set(chosen) - set(source.seeds))
    if missing:
        raise UserError(
            f"transfer source_seeds {missing} are not members of source {tc.source} (seeds {source.seeds})"
        )
    unjudged = [s for s in chosen if source.epochs[source.seeds.index(s)] < 0]
    if unjudged:
        raise UserError(f"source {tc.source} has no best epoch for its member(s) of seed {unjudged} yet")
    resolved = dataclasses.replace(
        config,
        transfer=dataclasses.replace(tc, source_fingerprint=source.digest, source_seeds=chosen),
    )
    return resolved, source


@torch.no_grad()
def load_shared(net: MultiTaskQNetwork, source: SourceShared, source_seeds: list[int]) -> None:
    """Overwrite ``net``'s shared layers in place: member m from the source member of seed source_seeds[m].

    In single-task mode (no layer is shared) every task's copy of the shared layers gets the same weights.
    """
    rows = torch.tensor([source.seeds.index(s) for s in source_seeds])
    idx = shared_layer_indices(net)
    params = [net.weights[i] for i in idx] + [net.biases[i] for i in idx]
    for param, value in zip(params, source.weights, strict=True):
        value = value.index_select(0, rows).to(param.device, param.dtype)
        if not net.share:  # (S, T, ...) <- (S, ...): the same layer for every task
            value = value.unsqueeze(1).expand(-1, net.n_tasks, *value.shape[1:])
        if value.shape != param.shape:
            raise UserError(
                f"shared weights of {source.path} have shape {tuple(value.shape)}, this run needs "
                f"{tuple(param.shape)}; the source's network does not match"
            )
        param.copy_(value)


def set_shared_trainable(net: MultiTaskQNetwork, trainable: bool) -> None:
    """Freeze (no gradient: Adam skips them and keeps their state) or unfreeze the shared layers."""
    for i in shared_layer_indices(net):
        net.weights[i].requires_grad_(trainable)
        net.biases[i].requires_grad_(trainable)


def make_transfer_config(
    base: Config, source: str | Path, unfreeze_epoch: int | None = 0, keep_network: bool = False
) -> Config:
    """``base`` turned into a transfer from ``source``: its tasks, learning and run settings are kept; the
    network is the source's (``keep_network``: ``base.network``, which must match the source's shared part).

    The source is checked when the run is created (:meth:`mtdqn.train.Trainer.create`); this function only
    reads its ``config.json``.
    """
    src = _source_config(Path(source))
    base = copy.deepcopy(base)
    network = base.network if keep_network else src.network
    return dataclasses.replace(
        base,
        network=network,
        transfer=TransferConfig(source=str(source), unfreeze_epoch=unfreeze_epoch),
    )
