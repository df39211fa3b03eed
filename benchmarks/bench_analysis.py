"""Wall-clock time of the whole `mtdqn analyze` of one run for several state counts (fresh folders, so
nothing is reused: rollout, metrics, t-SNE, figures, overlap panels, thumbnails and report all run).

    python benchmarks/bench_analysis.py runs/review-control-multi-seed0 --states 3000 10000

Targets (issue 4, 2-core CPU): 3,000 states in at most 20 s, 10,000 in at most 60 s. The import of the
libraries (a fresh `mtdqn analyze` process pays it once) is included: each count runs as its own command.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", help="a trained run folder (e.g. mtdqn train --preset review-control)")
    parser.add_argument(
        "--states", type=int, nargs="+", default=[3000, 10000], help="total states per analysis"
    )
    parser.add_argument("--method", default="tsne", choices=["tsne", "pca"])
    args = parser.parse_args()
    import json

    n_tasks = len(json.loads((Path(args.run_dir) / "config.json").read_text())["config"]["tasks"])
    for total in args.states:
        steps = -(-total // n_tasks)
        with tempfile.TemporaryDirectory() as out:
            cmd = [
                sys.executable,
                "-m",
                "mtdqn.cli",
                "analyze",
                args.run_dir,
                "--steps",
                str(steps),
                "--method",
                args.method,
                "--out",
                out,
            ]
            start = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                sys.exit(proc.stderr)
            phases = proc.stderr.strip().splitlines()[-1].strip()
            print(f"{steps * n_tasks:>6} states ({n_tasks} tasks x {steps}): {wall:6.1f} s wall   [{phases}]")


if __name__ == "__main__":
    main()
