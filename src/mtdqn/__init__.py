"""mtdqn: multi-task deep Q-learning with shared representations (D'Eramo et al., ICLR 2020)."""

import os as _os

# OpenMP threads (PyTorch's, openTSNE's) spin-wait ~300,000 iterations between parallel regions by default.
# Beside another CPU job that spinning made population runs up to ~40x slower; 1,000 spins cost nothing on
# an idle machine (S=10 deramo-gym: 117 vs 116 updates/s) and take a run with one core busy elsewhere from
# 34 s to 22 s. Read when the OpenMP runtime starts, so it must be set before torch is imported; a value
# set by the user wins.
_os.environ.setdefault("GOMP_SPINCOUNT", "1000")

__version__ = "0.1.0"
