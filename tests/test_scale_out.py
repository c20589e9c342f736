"""Sweeps, W&B offline runs, DDP on CPU and the SLURM launcher (through submitit's local executor).

These run `python train.py` as a user does, in subprocesses.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAST = [
    "experiment=demo",
    "backbone.image_size=112",
    "model.max_epochs=1",
    "data.val=none",
    "data.test=[synthetic_medical]",
    "callbacks.heatmaps.per_class=2",
    "~callbacks.progress",
    "compare_untrained=false",
]


def run(args: list[str], data_dir: Path, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "CLIPAD_DATA": str(data_dir), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def class_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return [r for r in csv.DictReader(f) if r["level"] == "class"]


def test_two_job_multirun_gives_a_two_row_report(tmp_path, synthetic_data_dir):
    sweep_dir = tmp_path / "sweep"
    run([str(REPO / "train.py"), "-m", *FAST, "logger=csv", "prompt.length=1,2", f"hydra.sweep.dir={sweep_dir}"],
        synthetic_data_dir, tmp_path)
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()) == ["0", "1"]
    report = run(["-m", "clipad.report", str(sweep_dir)], synthetic_data_dir, tmp_path)
    with open(sweep_dir / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["overrides"].split()[-1] for r in rows] == ["prompt.length=1", "prompt.length=2"]
    assert all(r["synthetic_medical/pixel_auroc"] for r in rows)
    assert (sweep_dir / "report.md").read_text() in report.stdout


def test_offline_wandb_run_holds_config_table_and_images(tmp_path, synthetic_data_dir):
    out = tmp_path / "run"
    run([str(REPO / "train.py"), *FAST, "logger=wandb", f"hydra.run.dir={out}"], synthetic_data_dir, tmp_path)
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = runs[0] / "files"
    tables = list(files.rglob("*.table.json"))
    assert any("results" in t.name for t in tables)
    assert len(list(files.rglob("*.png"))) == 3 * 2  # heatmap panels: per_class=2 for 3 classes
    # Offline runs keep config and summary in the run's record file until `wandb sync`.
    record = next(runs[0].glob("run-*.wandb")).read_bytes()
    assert b"synthetic_medical" in record and b"adaclip" in record  # the resolved config
    assert b"test/synthetic_medical/pixel_auroc" in record  # summary metrics


def test_two_process_ddp_evaluation_equals_one_process(tmp_path, synthetic_data_dir):
    """Metrics synced over 2 gloo ranks equal a single process's exactly; only rank 0 writes results."""
    common = [*FAST, "logger=csv", "train=false", "data.eval_batch_size=5"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run([str(REPO / "train.py"), *common, "trainer=cpu", f"hydra.run.dir={single}"], synthetic_data_dir, tmp_path)
    run([str(REPO / "train.py"), *common, "trainer=ddp_sim", f"hydra.run.dir={ddp}"], synthetic_data_dir, tmp_path)
    assert class_rows(ddp / "results.csv") == class_rows(single / "results.csv")
    assert [p.name for p in tmp_path.iterdir()] and sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "single"]


def test_ddp_training_runs_and_writes_one_checkpoint_dir(tmp_path, synthetic_data_dir):
    out = tmp_path / "run"
    run([str(REPO / "train.py"), *FAST, "logger=csv", "trainer=ddp_sim", "test=false", f"hydra.run.dir={out}"],
        synthetic_data_dir, tmp_path)
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.slow
def test_slurm_launcher_config_through_submitit_local(tmp_path, synthetic_data_dir):
    """The SLURM code path (submitit) with its local executor; slow because each job is a new process."""
    sweep_dir = tmp_path / "sweep"
    run([str(REPO / "train.py"), "-m", "hydra/launcher=local", *FAST, "model=clip", "logger=csv",
         "few_shot_seed=1,2", f"hydra.sweep.dir={sweep_dir}"], synthetic_data_dir, tmp_path)
    assert len(list(sweep_dir.glob("*/results.csv"))) == 2
