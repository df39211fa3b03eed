"""2-D embeddings of shared features: seeded t-SNE (openTSNE) or PCA.

openTSNE (Poličar et al.) is used for t-SNE: it embeds 3,000 states in about 5 s and 10,000 in about 20 s
on two cores, where scikit-learn's t-SNE needs several times longer.
"""

from __future__ import annotations

import math
import os

import numpy as np

from mtdqn.analysis.config import AnalysisConfig
from mtdqn.errors import UserError

PARALLEL_FROM = 2000
"""States from which t-SNE uses ``cfg.tsne_threads``; below, threads cost more than they save (measured: 100
states 0.3 s on one thread, up to 20 s on two threads of a busy 2-core machine)."""

FFT_FROM = 20_000
"""States from which t-SNE's repulsive forces use FFT interpolation instead of Barnes-Hut. openTSNE switches
at 10,000, but shared features form tight, far-apart clusters whose growing span makes the FFT grid slow:
10,002 review-control states took 38 s with FFT and 20 s with Barnes-Hut (lower KL too) on two cores."""


def embed(x: np.ndarray, cfg: AnalysisConfig, seed: int) -> np.ndarray:
    """``(N, 2)`` embedding of the rows of ``x`` by ``cfg.method``; the same seed gives the same result."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    if cfg.method == "pca":
        return pca(x)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep, never spin
    import openTSNE

    if 3 * cfg.perplexity > len(x) - 1:  # openTSNE would lower it silently to (N - 1) / 3
        raise UserError(
            f"t-SNE with perplexity {cfg.perplexity:g} needs at least {math.ceil(3 * cfg.perplexity + 1)} "
            f"states (3 x perplexity + 1), but {len(x)} are embedded; give a perplexity of at most "
            f"{(len(x) - 1) / 3:.4g}, or more states"
        )
    tsne = openTSNE.TSNE(
        n_components=2,
        perplexity=cfg.perplexity,
        n_iter=cfg.tsne_iterations,
        learning_rate=cfg.tsne_learning_rate or "auto",
        early_exaggeration=cfg.tsne_early_exaggeration,
        initialization="pca",
        random_state=seed,
        n_jobs=cfg.tsne_threads if len(x) >= PARALLEL_FROM else 1,
        negative_gradient_method="bh" if len(x) < FFT_FROM else "fft",
        verbose=False,
    )
    return np.asarray(tsne.fit(x), dtype=np.float64)


def pca(x: np.ndarray) -> np.ndarray:
    """The first two principal components (each signed so that its largest loading is positive)."""
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    vt = vt[:2] * np.sign(vt[:2][np.arange(2), np.abs(vt[:2]).argmax(axis=1)])[:, None]
    out = centred @ vt.T
    if out.shape[1] < 2:
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out
