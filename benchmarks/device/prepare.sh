#!/usr/bin/env bash
# Run here (a machine with PyPI), from the repository root, before a GPU check. Fills .gpu-check/ (ignored by
# git), which the device call carries (`carry: [".gpu-check"]`), as the GPU machine reaches no package index
# and gets no copy of ../shared:
#   .gpu-check/wheels/     the Python 3.12 wheels of mtdqn's dependencies that the GPU image lacks (it has
#                          PyTorch with CUDA, numpy, numba, scipy, scikit-learn, matplotlib, tensorboard, tqdm,
#                          threadpoolctl, OpenCV and pytest-xdist)
#   .gpu-check/reference/  the paper's published results (../shared/reference/deramo2020), for the report
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .gpu-check && mkdir -p .gpu-check/wheels .gpu-check/reference
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .gpu-check/wheels "gymnasium>=1.0,<2" farama-notifications "ale-py>=0.12.1" "openTSNE>=1.0"
if [ -d ../shared/reference/deramo2020 ]; then
  cp -r ../shared/reference/deramo2020 .gpu-check/reference/
else
  echo "no ../shared/reference/deramo2020: the GPU experiment's report will lack the published curves"
fi
du -sh .gpu-check/*
