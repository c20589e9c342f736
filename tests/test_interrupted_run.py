"""SIGTERM (SLURM, `kill`) during training: exit 143, say where last.ckpt is, and a resume command that works."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from clipad.cli.interruption import SIGTERM_EXIT_CODE, resume_command

REPO = Path(__file__).resolve().parents[1]
# Two short epochs: the signal comes during the second, after the first epoch's last.ckpt exists.
ARGS = [
    "experiment=demo",
    "backbone.image_size=112",
    "model.max_epochs=2",
    "data.val=none",
    "data.test=[synthetic_medical]",
    "callbacks.heatmaps.per_class=1",
    "~callbacks.progress",
    "compare_untrained=false",
    "logger=csv",
]


def environment(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "CLIPAD_DATA": str(data_dir), "OMP_NUM_THREADS": "1"}


def test_sigterm_exits_143_logs_the_checkpoint_and_a_working_resume_command(tmp_path, synthetic_data_dir):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    command = [sys.executable, str(REPO / "train.py"), *ARGS, f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(command, cwd=tmp_path, env=environment(synthetic_data_dir),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not last.is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before its first checkpoint:\n" + process.stdout.read()[-3000:]
    first_checkpoint = last.read_bytes()
    process.send_signal(signal.SIGTERM)
    console, _ = process.communicate(timeout=300)

    assert process.returncode == SIGTERM_EXIT_CODE == 143, console[-3000:]
    log_file = (run_dir / "train.log").read_text()
    for text in (console, log_file):
        assert "Run interrupted by SIGTERM" in text
        assert f"Last checkpoint (end of the last finished epoch): {last}" in text
    assert not (run_dir / "results.csv").exists()
    assert last.read_bytes() == first_checkpoint  # the end-of-epoch state is kept, not overwritten mid-epoch

    resume = next(line for line in log_file.splitlines() if "Resume with: " in line).split("Resume with: ")[1]
    argv = shlex.split(resume)
    assert argv[0] == "python" and argv[-2:] == [f"hydra.run.dir={run_dir}", "ckpt_path=last"]
    resumed = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path, env=environment(synthetic_data_dir),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"Restored all states from the checkpoint at {last}" in resumed.stdout + resumed.stderr
    assert (run_dir / "results.csv").is_file() and (run_dir / "checkpoints" / "epoch01.ckpt").is_file()


def test_resume_command_without_a_checkpoint_restarts_in_the_same_directory(tmp_path):
    overrides = ["model=adaptclip", "data.test=[a,b]", "ckpt_path=old.ckpt"]
    assert resume_command(overrides, tmp_path, resumable=False, program="train.py") == (
        f"python train.py model=adaptclip 'data.test=[a,b]' hydra.run.dir={tmp_path}"
    )
    assert resume_command(overrides, tmp_path, resumable=True, program="/venv/bin/clipad-train").endswith(
        f"/venv/bin/clipad-train model=adaptclip 'data.test=[a,b]' hydra.run.dir={tmp_path} ckpt_path=last"
    )
