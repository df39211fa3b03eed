"""How many threads the learner's math uses: PyTorch's intra-op pool and numpy's BLAS (OpenBLAS).

The float32 control update runs its matmuls in numpy (:mod:`mtdqn.backprop`) and its elementwise work in
PyTorch. PyTorch's results do not depend on its thread count; OpenBLAS's do (with two threads it splits
the products differently and rounds differently), and a run's numbers must not depend on how many threads
it was given. So the BLAS runs on one thread, and ``torch_threads`` sets PyTorch's pool (which
:mod:`mtdqn.backprop` also reads to cut the members into slices whose one-thread products run at once).
"""

from __future__ import annotations

import torch
from threadpoolctl import threadpool_info, threadpool_limits


def set_compute_threads(n: int) -> None:
    """Use ``n`` threads in PyTorch's intra-op pool and one in numpy's BLAS from now on."""
    torch.set_num_threads(n)
    threadpool_limits(limits=1, user_api="blas")


def blas_description() -> str:
    """numpy's BLAS and the kernels it runs, e.g. ``openblas 0.3.31, SkylakeX kernels`` (for benchmarks: an
    ``OPENBLAS_CORETYPE`` setting can pin older, slower kernels)."""
    pools = [pool for pool in threadpool_info() if pool.get("user_api") == "blas"]
    pools.sort(key=lambda pool: "numpy" not in pool.get("filepath", ""))  # numpy's own first (not scipy's)
    if not pools:
        return "no BLAS found"
    pool = pools[0]
    kernels = f", {pool['architecture']} kernels" if pool.get("architecture") else ""
    return f"{pool.get('internal_api', 'blas')} {pool.get('version', '')}{kernels}"
