"""The shared layers of a run's best epoch, kept for transfer (the paper's ``--save-shared``, spec 1.11).

After every evaluated epoch e >= 1, member m's shared-layer weights are kept if the *sum over its tasks of
the raw J* of epoch e is >= the best sum so far (the paper's rule: no normalisation across tasks, a tie goes
to the later epoch, the untrained epoch 0 is no candidate). Because epoch e is evaluated while epoch e + 1
trains, the shared weights are snapshotted at the end of epoch e and judged when its J arrives.

``best_shared.pt`` in the run folder holds (written atomically after every judged epoch, loaded with
``torch.load(weights_only=True)``):

    weights, biases   one tensor per shared layer: (S, out, in) and (S, 1, out), member order of ``seeds``
    seeds             the members' seeds
    epoch, score      per member: the chosen epoch and its summed J (float64)
    through_epoch     the last epoch judged
    tasks             the run's task labels (the sum is over these)
    shared_spec       width, number, activations of the shared layers, and the activation feeding them
    shared_fingerprint, run_fingerprint   hashes of ``shared_spec`` and of the run's learning config
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtdqn.config import NetworkConfig
from mtdqn.errors import UserError
from mtdqn.nets import MultiTaskQNetwork
from mtdqn.runlog import atomic_write_bytes, safe_torch_load

BEST_SHARED_FILE = "best_shared.pt"
BEST_SHARED_FORMAT = 1


def shared_spec(cfg: NetworkConfig) -> dict[str, Any]:
    """What the shared layers must agree on to be moved from one network to another."""
    acts = [cfg.hidden_activation] * (cfg.n_shared_layers - 1) + [cfg.feature_activation]
    spec = {
        "width": cfg.width,
        "n_shared_layers": cfg.n_shared_layers,
        "activations": acts,
        "input_activation": cfg.hidden_activation,
    }
    if cfg.n_features != cfg.width:  # only then, so that earlier best_shared.pt files keep their spec
        spec["feature_width"] = cfg.n_features
    return spec


def describe_spec(spec: dict[str, Any]) -> str:
    """``width 80, 2 shared layers (relu -> relu, sigmoid)``: the input activation, then the layers'."""
    acts = ", ".join(spec["activations"])
    n, inp = spec["n_shared_layers"], spec["input_activation"]
    features = f", {spec['feature_width']} features" if "feature_width" in spec else ""
    return f"width {spec['width']}{features}, {n} shared layers ({inp} -> {acts})"


def spec_fingerprint(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def weights_digest(weights: list[torch.Tensor]) -> str:
    """Hash of the values and shapes of a list of tensors (identifies a set of shared weights)."""
    h = hashlib.sha256()
    for w in weights:
        a = w.detach().cpu().contiguous().numpy()
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def shared_layer_indices(net: MultiTaskQNetwork) -> list[int]:
    return [i for i, layer in enumerate(net.plan) if layer.role == "shared"]


def snapshot_shared(net: MultiTaskQNetwork) -> list[torch.Tensor]:
    """Copies of the shared layers' weights then biases (multi-task networks only)."""
    idx = shared_layer_indices(net)
    return [net.weights[i].detach().clone() for i in idx] + [net.biases[i].detach().clone() for i in idx]


def summed_j(j: np.ndarray) -> np.ndarray:
    """Per member, the sum over tasks of the raw J of ``j`` (shape ``(S, T)``), in float64."""
    return np.asarray(j, dtype=np.float64).sum(axis=1)


class BestShared:
    """Best-epoch shared weights of every member, updated as evaluations arrive."""

    def __init__(self, n_members: int) -> None:
        self.score = np.full(n_members, -np.inf)
        self.epoch = np.full(n_members, -1, dtype=np.int64)
        self.weights: list[torch.Tensor] = []
        self.through_epoch = 0

    def consider(self, epoch: int, j: np.ndarray, shared: list[torch.Tensor]) -> np.ndarray:
        """Judge ``epoch`` (J per member and task, ``shared`` its snapshot); returns which members took it."""
        if epoch <= self.through_epoch:  # already judged (or epoch 0, which is no candidate)
            return np.zeros(self.score.shape, dtype=bool)
        total = summed_j(j)
        better = total >= self.score  # the paper's rule: a tie goes to the later epoch
        if not self.weights:
            self.weights = [w.detach().clone() for w in shared]
        else:
            rows = torch.from_numpy(np.flatnonzero(better)).to(self.weights[0].device)
            for kept, new in zip(self.weights, shared, strict=True):
                kept.index_copy_(0, rows, new.index_select(0, rows))
        self.score = np.where(better, total, self.score)
        self.epoch = np.where(better, epoch, self.epoch)
        self.through_epoch = epoch
        return better

    def state_dict(self) -> dict[str, Any]:
        return {
            "score": torch.from_numpy(self.score.copy()),
            "epoch": torch.from_numpy(self.epoch.copy()),
            "weights": [w.cpu() for w in self.weights],
            "through_epoch": self.through_epoch,
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.score = state["score"].numpy().astype(np.float64)
        self.epoch = state["epoch"].numpy().astype(np.int64)
        self.weights = [w.to(device) for w in state["weights"]]
        self.through_epoch = int(state["through_epoch"])

    def save(
        self, path: Path, seeds: list[int], tasks: list[str], network: NetworkConfig, run_fingerprint: str
    ) -> None:
        """Write ``best_shared.pt`` atomically (nothing before the first judged epoch)."""
        if not self.weights:
            return
        n = len(self.weights) // 2
        spec = shared_spec(network)
        payload = {
            "format": BEST_SHARED_FORMAT,
            "weights": [w.cpu() for w in self.weights[:n]],
            "biases": [b.cpu() for b in self.weights[n:]],
            "seeds": list(seeds),
            "epoch": torch.from_numpy(self.epoch.copy()),
            "score": torch.from_numpy(self.score.copy()),
            "through_epoch": self.through_epoch,
            "tasks": list(tasks),
            "shared_spec": spec,
            "shared_fingerprint": spec_fingerprint(spec),
            "run_fingerprint": run_fingerprint,
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        atomic_write_bytes(path, buf.getvalue())


def load_best_shared(path: Path) -> dict[str, Any]:
    """Read a ``best_shared.pt`` safely (tensors and plain containers only) and check its layout."""
    data = safe_torch_load(path, "best_shared.pt", "retrain the source run")
    keys = {"weights", "biases", "seeds", "epoch", "score", "shared_spec"}
    if not isinstance(data, dict) or data.get("format") != BEST_SHARED_FORMAT or not keys <= data.keys():
        raise UserError(f"{path} has an unknown format; retrain the source run with this mtdqn")
    return data
