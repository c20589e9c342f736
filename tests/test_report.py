"""`python -m clipad.report`: one row per run, mean ± std rows over seeds, files written."""
from __future__ import annotations

import csv

import pytest
import yaml

from clipad.cli.report import main
from clipad.metrics.results import METRIC_NAMES, ResultsTable


def fake_run(directory, overrides: list[str], pixel_auroc: float) -> None:
    directory.mkdir(parents=True)
    (directory / ".hydra").mkdir()
    (directory / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    row = {"dataset": "visa", "domain": "industrial", "class": "candle", **{m: 0.5 for m in METRIC_NAMES}}
    ResultsTable([row | {"pixel_auroc": pixel_auroc}]).to_csv(directory / "results.csv")


def test_multirun_dir_gives_one_row_per_job_and_seed_aggregates(tmp_path, capsys):
    for job, (shots, seed, value) in enumerate([(1, 10, 0.90), (1, 20, 0.92), (1, 30, 0.94), (2, 10, 0.95)]):
        fake_run(tmp_path / str(job), [f"shots={shots}", f"few_shot_seed={seed}"], value)
    main([str(tmp_path)])
    with open(tmp_path / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["overrides"] for r in rows] == [
        "shots=1 few_shot_seed=10", "shots=1 few_shot_seed=20", "shots=1 few_shot_seed=30",
        "shots=2 few_shot_seed=10", "shots=1",
    ]
    aggregate = rows[-1]
    assert float(aggregate["visa/pixel_auroc"]) == pytest.approx(0.92)
    assert float(aggregate["visa/pixel_auroc_std"]) == pytest.approx(0.02)
    out = capsys.readouterr().out
    assert "92.0 ± 2.0" in out and (tmp_path / "report.md").is_file()


def test_several_run_dirs_and_a_broken_one(tmp_path):
    fake_run(tmp_path / "a", ["prompt.length=1"], 0.8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "a"), str(tmp_path / "empty")])
    assert exit_info.value.code == 2
