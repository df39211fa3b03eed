#!/usr/bin/env bash
# The GPU checks of issues 3 and 5, as one command on the GPU machine, from the repository root, after
# benchmarks/device/prepare.sh ran here. With the device tool:
#   run(command="bash benchmarks/device/gpu_check.sh", carry=[".gpu-check"], timeout_s=600)
# Steps in order of importance, each under its own time limit and all within BUDGET_S (default 560 s);
# every step's full output and a summary go to $OUT (or /tmp/gpu-check). The steps:
#   tests       tests/test_cuda.py: the update on CUDA follows the CPU's, control and Atari runs on CUDA
#   experiment  `mtdqn experiment deramo-gym --seeds 100 --device "$DEVICE"` (issue 3: target <= 3 min)
#   update      bench_update.py on CUDA, 10 and 100 seeds, MDQN and DQN
#   atari       bench_atari_train.py on CUDA: review-exp1 and review-mtqn, bf16 and fp32 (issue 5: 350k
#               steps per game in <= 10 min)
#   throughput  bench_deramo_gym.py --population 100 --epochs 3 on CUDA (learning phase apart from evaluation)
#   evaluation  bench_evaluation.py: one 100-seed evaluation in 1, 4 and 8 processes (CPU work of a GPU run)
# Pass step names to run only those: bash benchmarks/device/gpu_check.sh update atari
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu-check}
BUDGET_S=${BUDGET_S:-560}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu: a dry run of the script itself on a machine without a GPU
mkdir -p "$OUT"
deadline=$(( $(date +%s) + BUDGET_S ))
summary="$OUT/summary.txt"
say() { echo "$*" | tee -a "$summary"; }

if compgen -G ".gpu-check/wheels/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu-check/wheels/*.whl || { say "installing .gpu-check/wheels failed"; exit 2; }
  export PYTHONPATH="$PWD/src:/tmp/site"
else
  export PYTHONPATH="$PWD/src"
fi
[ -d .gpu-check/reference/deramo2020 ] && export MTDQN_REFERENCE="$PWD/.gpu-check/reference/deramo2020"
export PYTHONUNBUFFERED=1
say "$(date -u) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1)"
say "$(python3 -c 'import torch, numpy, gymnasium; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "numpy", numpy.__version__, "gymnasium", gymnasium.__version__)' 2>&1)"

# step NAME LIMIT_S COMMAND...: runs COMMAND under min(LIMIT_S, time left), logs to $OUT/NAME.log
step() {
  local name=$1 limit=$2; shift 2
  local left=$(( deadline - $(date +%s) ))
  (( left < limit )) && limit=$left
  if (( limit < 20 )); then say "== $name: skipped, budget spent"; return; fi
  say "== $name (limit ${limit} s): $*"
  local start; start=$(date +%s.%N)
  timeout "$limit" "$@" >>"$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 12 "$OUT/$name.log" | tee -a "$summary"
  say "== $name: rc $rc, $(python3 -c "import time; print(f'{time.time() - $start:.1f}')") s wall-clock"
}

steps=("$@")
(( ${#steps[@]} )) || steps=(tests experiment update atari throughput evaluation)
for s in "${steps[@]}"; do
  case $s in
    tests) step tests 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py ;;
    experiment)
      rm -rf /tmp/gpu-exp
      step experiment 270 python3 -m mtdqn.cli experiment deramo-gym --seeds 100 --jobs 2 --device "$DEVICE" \
        --out /tmp/gpu-exp --name deramo-gym-100-cuda --no-progress
      cp /tmp/gpu-exp/deramo-gym-100-cuda/report/summary.md "$OUT/experiment-summary.md" 2>/dev/null
      cp /tmp/gpu-exp/deramo-gym-100-cuda/results.csv "$OUT/experiment-results.csv" 2>/dev/null ;;
    update)
      for pop in 10 100; do
        for mode in multi single; do
          step update 40 python3 benchmarks/bench_update.py --device "$DEVICE" --population "$pop" --mode "$mode" --repeats 3
        done
      done ;;
    atari)
      step atari 150 python3 benchmarks/bench_atari_train.py --device "$DEVICE" --arch review-exp1 review-mtqn \
        --precision bf16 fp32 --steps 2000 --threads 4 ;;
    throughput)
      step throughput 90 python3 benchmarks/bench_deramo_gym.py --device "$DEVICE" --population 100 --epochs 3 ;;
    evaluation)
      step evaluation 90 python3 benchmarks/bench_evaluation.py --population 100 --workers 1 4 8 --repeats 2 ;;
    *) say "unknown step $s (tests, experiment, update, atari, throughput, evaluation)"; exit 2 ;;
  esac
done
say "done $(date -u)"
