"""`make bench`: run every benchmark with its default (CPU-sized) settings. Timing never fails a build."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = ["metrics.py", "data.py", "model.py"]


def main() -> int:
    here = Path(__file__).parent
    for name in BENCHES:
        script = here / name
        if not script.is_file():
            print(f"(bench/{name} not present, skipped)")
            continue
        print(f"\n===== bench/{name} =====", flush=True)
        result = subprocess.run([sys.executable, str(script), *sys.argv[1:]], check=False)
        if result.returncode != 0:
            print(f"bench/{name} exited with {result.returncode}")
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
