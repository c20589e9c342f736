"""experiment=compare_clip_methods: one multirun over the methods, one side-by-side table from clipad.report."""
from __future__ import annotations

from pathlib import Path

from test_report import fake_run
from test_scale_out import REPO, run

from clipad.cli.report import main as report_main
from clipad.metrics.results import METRIC_NAMES, ResultsTable
from clipad.report.compare import METRIC_GROUPS, method_table

METHODS = ("adaclip", "adaptclip", "anomalyclip", "winclip", "clip")
GROUPS = list(METRIC_GROUPS)
FAST = ["experiment=compare_clip_methods", "backbone.image_size=112", "model.max_epochs=1",
        "+trainer.limit_train_batches=2", "data.test=[synthetic_medical]", "data.classes=[retina]",
        "data.num_workers=0", "logger=csv",
        "~callbacks.progress", "callbacks.heatmaps.per_class=0"]


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of the first markdown table in the text."""
    lines = markdown.split("\n\n")[0].splitlines()
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if not line.startswith("|---")]


def test_the_multirun_gives_one_table_with_every_method(tmp_path, synthetic_data_dir, capsys):
    sweep = tmp_path / "sweep"
    run([str(REPO / "train.py"), *FAST, f"hydra.sweep.dir={sweep}"], synthetic_data_dir, tmp_path)
    report_main([str(sweep)])  # in this process: the command itself is tested in test_scale_out
    report = capsys.readouterr().out
    header, *rows = table_rows(report)
    assert header == ["dataset", "metrics", *METHODS]
    assert [row[:2] for row in rows] == [["synthetic_medical", "image AUROC, AP, F1max"],
                                         ["synthetic_medical", "pixel AUROC, AP, F1max, AUPRO"]]
    assert all(len(cell.split(", ")) == len(row[1].split(", ")) and "-" not in cell.split(", ")
               for row in rows for cell in row[2:])
    assert "Random backbone in adaclip, adaptclip, anomalyclip, winclip, clip" in report
    assert (sweep / "report.md").read_text() in report


def test_layout_with_a_missing_dataset_and_two_runs_of_one_method(tmp_path: Path, capsys):
    sweep = tmp_path / "sweep"
    fake_run(sweep / "0", ["model=anomalyclip", "seed=1"], 0.9)
    fake_run(sweep / "1", ["model=anomalyclip", "seed=2"], 0.8)
    fake_run(sweep / "2", ["model=clip"], 0.7)
    row = {"dataset": "mvtec", "domain": "industrial", "class": "bottle", **{m: 0.25 for m in METRIC_NAMES}}
    ResultsTable([row]).to_csv(sweep / "2" / "results.csv")  # clip ran on another dataset
    header, *rows = table_rows(method_table([sweep]))
    assert header == ["dataset", "metrics", "anomalyclip (seed=1)", "anomalyclip (seed=2)", "clip"]
    assert [r[:2] for r in rows] == [[d, g] for d in ("visa", "mvtec") for g in GROUPS]
    assert rows[1][2:] == ["90.0, 50.0, 50.0, 50.0", "80.0, 50.0, 50.0, 50.0", "-"]
    assert rows[3][2:] == ["-", "-", "25.0, 25.0, 25.0, 25.0"]
    fake_run(tmp_path / "only_clip", ["model=clip"], 0.7)
    assert method_table([tmp_path / "only_clip"]) is None  # one method: the usual run table only
    report_main([str(sweep)])
    assert capsys.readouterr().out.startswith("| dataset | metrics | anomalyclip (seed=1)")
