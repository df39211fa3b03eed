#!/usr/bin/env bash
# Run here (a machine with PyPI), from the repository root, before a GPU check: downloads into .whl/ (ignored
# by git) the Python 3.12 wheels of mtdqn's dependencies that the GPU machine's image lacks (it has PyTorch
# with CUDA, numpy, numba, scipy, scikit-learn, matplotlib, tensorboard, tqdm, threadpoolctl and OpenCV).
# The GPU machine reaches no package index, so they travel with the working tree (`carry: [".whl"]`).
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .whl && mkdir .whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl "gymnasium>=1.0,<2" farama-notifications "ale-py>=0.12.1" "openTSNE>=1.0"
ls -l .whl
du -sh .whl
