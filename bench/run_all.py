"""`make bench` (`make bench BENCH_ARGS=--quick` for a short run): every benchmark, one after another.

Each prints its own table with ratios against a baseline measured in the same run; timing never fails.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

# (script, full-run arguments, quick-run arguments)
INTERLEAVED = ["--interleave", "--threads", "1", "--cases", "adaclip", "adaptclip 0-shot", "adaptclip 1-shot"]
BENCHES = [
    ("metrics.py", [], ["--n", "100"]),
    ("data.py", [], []),
    ("model.py", [], ["--quick"]),
    ("model.py", INTERLEAVED, ["--quick", *INTERLEAVED]),  # the goals' ratios, steadier on a shared machine
    ("scan.py", [], ["--samples", "100"]),
    ("eval_scale.py", [], ["--quick"]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: about two minutes in all")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: only the model bench, on the GPU (`make bench-gpu`); says so without CUDA")
    args = parser.parse_args()
    here = Path(__file__).parent
    if args.device == "cuda":
        return subprocess.run([sys.executable, str(here / "model.py"), "--device", "cuda"], check=False).returncode
    for name, full, quick in BENCHES:
        print(f"\n===== bench/{name} {shlex.join(quick if args.quick else full)} =====", flush=True)
        result = subprocess.run([sys.executable, str(here / name), *(quick if args.quick else full)], check=False)
        if result.returncode != 0:
            print(f"bench/{name} exited with {result.returncode}")
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
