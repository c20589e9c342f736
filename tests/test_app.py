"""The app's logic without a browser: scores equal predict's, thresholds, downloads, references, config errors."""
from __future__ import annotations

import csv
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import clipad
from clipad.app.checks import SCALINGS as APP_SCALINGS
from clipad.app.inspection import Inspector, Thresholds
from clipad.app.models import load_app_model
from clipad.app.references import chosen_reference_files
from clipad.app.scoring import score_images
from clipad.calibration.thresholds import ClassThreshold, DecisionThresholds
from clipad.cli.checkpoint import save_clipad_checkpoint
from clipad.cli.hydra_setup import compose_config
from clipad.cli.predict import predict
from clipad.errors import ConfigError
from clipad.models.registry import build_module
from clipad.report.heatmaps import SCALINGS

REPO = Path(clipad.__file__).resolve().parents[2]


def tiny_checkpoint(folder: Path, model: str) -> Path:
    """As the demo's model (data=synthetic: the classes the page offers), at 112 px to stay fast."""
    cfg = compose_config("train", [f"model={model}", "backbone=tiny", "backbone.image_size=112", "data=synthetic",
                                   "callbacks=none", "logger=none", f"paths.output_dir={folder}"])
    torch.manual_seed(0)
    return save_clipad_checkpoint(folder / f"{model}.ckpt", build_module(cfg))


def write_images(folder: Path, count: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        paths.append(folder / f"img{index}.png")
        Image.fromarray(rng.integers(0, 256, (60 + 10 * index, 80, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def app_config(ckpt: Path, output_dir: Path, *extra: str):
    return compose_config("app", [f"ckpt_path={ckpt}", f"output_dir={output_dir}", *extra])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("app")
    tiny_checkpoint(root, "adaclip")
    tiny_checkpoint(root, "adaptclip")
    write_images(root / "images", 3, seed=0)
    write_images(root / "normal_a", 2, seed=1)
    write_images(root / "normal_b", 2, seed=2)
    return root


def read_rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_scores_equal_predicts_and_classes_come_from_the_checkpoint(workspace, tmp_path):
    cfg = app_config(workspace / "adaclip.ckpt", tmp_path)
    model = load_app_model("A", cfg.ckpt_path, cfg, [], "cpu", None)
    assert model.classes == ["brick", "grass", "paper", "gravel", "coins", "retina", "histology", "phantom"]
    paths = sorted((workspace / "images").iterdir())
    result = score_images(model, paths, [p.name for p in paths], "brick", batch_size=8)
    summary = predict(compose_config("predict", [f"ckpt_path={workspace / 'adaclip.ckpt'}",
                                                 f"input={workspace / 'images'}", f"output_dir={tmp_path / 'p'}",
                                                 "class_name=brick", "num_workers=0", "save_figures=false"]), [])
    expected = {Path(r["path"]).name: float(r["score"]) for r in read_rows(summary.scores_path)}
    assert [image.name for image in result.images] == sorted(expected)
    for image in result.images:
        # scores.csv holds 6 significant digits (error <= 5e-7 for scores in [0.1, 1), less below); both runs score
        # the 3 images in one batch of 3, so the float32 scores themselves agree to the last bit or so
        assert abs(image.score - expected[image.name]) <= 1e-6, (image.name, image.score, expected[image.name])
        assert image.anomaly_map.shape == image.preview.shape[:2]


def test_view_writes_scores_csv_and_overlays_zip_with_compare_columns(workspace, tmp_path):
    cfg = app_config(workspace / "adaclip.ckpt", tmp_path)
    models = [load_app_model("A", str(workspace / "adaclip.ckpt"), cfg, [], "cpu", None),
              load_app_model("B", str(workspace / "adaptclip.ckpt"), cfg, [], "cpu", None)]
    inspector = Inspector(models, tmp_path, "per_dataset", batch_size=2)
    paths = sorted((workspace / "images").iterdir())
    scored = inspector.score(paths, [p.name for p in paths], "brick", references=[])
    scores_a = [image.score for image in scored.results[0].images]
    threshold = float(np.median(scores_a))  # one image on each side of it, one on it (it fails: score >= threshold)
    view = inspector.view(scored, [Thresholds(threshold, 0.5, False), Thresholds(1.0, 0.5, False)])
    rows = read_rows(view.scores_csv)
    assert list(rows[0]) == ["path", "score", "decision", "compare_score", "compare_decision"]
    assert [r["path"] for r in rows] == [p.name for p in paths]
    assert [r["decision"] for r in rows] == ["fail" if s >= threshold else "pass" for s in scores_a]
    assert sorted(r["decision"] for r in rows) == ["fail", "fail", "pass"]
    assert all(r["compare_decision"] == "pass" for r in rows)  # threshold 1.0: scores in [0, 1) pass
    assert [float(r["score"]) for r in rows] == pytest.approx(scores_a, abs=5e-9)  # 8 decimals
    assert [float(r["compare_score"]) for r in rows] == pytest.approx([i.score for i in scored.results[1].images],
                                                                       abs=5e-9)
    with zipfile.ZipFile(view.overlays_zip) as archive:
        names = sorted(archive.namelist())
        assert names == sorted(f"{label}/{i:03d}_{p.name}.png" for label in "AB" for i, p in enumerate(paths))
        with archive.open(names[0]) as figure:
            assert Image.open(figure).size[0] > 400
    assert [len(gallery) for gallery in view.galleries] == [3, 3]
    assert view.rows == [list(r.values()) for r in rows]  # the page's table is the CSV


def test_outline_follows_the_pixel_threshold(workspace, tmp_path):
    """The outlined share of pixels (stated in each caption) is the map's share at or above the pixel slider."""
    cfg = app_config(workspace / "adaclip.ckpt", tmp_path)
    inspector = Inspector([load_app_model("A", cfg.ckpt_path, cfg, [], "cpu", None)], tmp_path, "per_image", 1)
    path = workspace / "images" / "img0.png"
    scored = inspector.score([path], [path.name], "brick", [])
    anomaly_map = scored.results[0].images[0].anomaly_map
    for level in (float(np.quantile(anomaly_map, 0.3)), float(np.median(anomaly_map)), 2.0):
        figure, caption = inspector.view(scored, [Thresholds(0.5, level, False)]).galleries[0][0]
        shown = float(re.search(r"defect outline ([\d.]+)% of pixels", caption).group(1))
        assert shown == pytest.approx(100 * (anomaly_map >= level).mean(), abs=0.05), caption
        assert Image.open(figure).size[0] > 400
    assert shown == 0.0  # above every value of the map: no outline


def test_start_thresholds_come_from_the_thresholds_file(workspace, tmp_path):
    file = DecisionThresholds(rule="fixed", fallback=ClassThreshold(0.25, None),
                              classes={"synthetic": {"brick": ClassThreshold(0.625, 0.75, 10)}}).write(tmp_path / "t.json")
    cfg = app_config(workspace / "adaclip.ckpt", tmp_path, f"thresholds={file}")
    model = load_app_model("A", cfg.ckpt_path, cfg, [], "cpu", cfg.thresholds)
    assert model.start_thresholds("brick")[:3] == (0.625, 0.75, True)
    assert model.start_thresholds("synthetic/brick")[:3] == (0.625, 0.75, True)
    assert model.start_thresholds("grass")[:3] == (0.25, 0.25, True)  # global; no pixel: the image threshold
    plain = load_app_model("A", cfg.ckpt_path, app_config(workspace / "adaclip.ckpt", tmp_path), [], "cpu", None)
    assert plain.start_thresholds("brick")[:3] == (0.5, 0.5, False)


def test_prompt_memory_is_rebuilt_only_when_the_references_change(workspace, tmp_path):
    cfg = app_config(workspace / "adaptclip.ckpt", tmp_path)
    inspector = Inspector([load_app_model("A", cfg.ckpt_path, cfg, [], "cpu", None)], tmp_path, "per_image", 8)
    module = inspector.models[0].module
    path = workspace / "images" / "img0.png"
    zero_shot = inspector.score([path], [path.name], "brick", []).results[0].images[0].score
    assert module.shots == 0 and inspector.references.builds == 0
    set_a = sorted((workspace / "normal_a").iterdir())
    first = inspector.score([path], [path.name], "brick", set_a).results[0].images[0].score
    memory = module.prompt_memory("predict", "brick")
    assert module.shots == 2 and inspector.references.builds == 1
    # the same files again (as a re-upload: other paths, same bytes): the memory object is reused
    copies = [tmp_path / "again" / p.name for p in set_a]
    copies[0].parent.mkdir()
    for source, copy in zip(set_a, copies):
        copy.write_bytes(source.read_bytes())
    again = inspector.score([path], [path.name], "brick", copies).results[0].images[0].score
    assert inspector.references.builds == 1 and module.prompt_memory("predict", "brick")[0] is memory[0]
    assert again == first
    other = inspector.score([path], [path.name], "brick", sorted((workspace / "normal_b").iterdir()))
    assert inspector.references.builds == 2 and module.prompt_memory("predict", "brick")[0] is not memory[0]
    assert len({zero_shot, first, other.results[0].images[0].score}) == 3


def test_app_scalings_are_the_figures(tmp_path):
    assert APP_SCALINGS == SCALINGS


@pytest.mark.parametrize("args, fragment", [
    (["ckpt_path=/nonexistent.ckpt"], "ckpt_path=/nonexistent.ckpt is not a file"),
    (["ckpt_path={ckpt}", "compare_ckpt_path=/none.ckpt"], "compare_ckpt_path=/none.ckpt is not a file"),
    (["ckpt_path={ckpt}", "thresholds=/none.json"], "thresholds=/none.json: no such file"),
    (["ckpt_path={ckpt}", "scaling=log"], "scaling=log: choose one of per_image, per_dataset, absolute"),
    (["ckpt_path={ckpt}", "+port2=1"], "port2"),
])
def test_config_mistakes_exit_2_with_one_line_before_torch_loads(workspace, tmp_path, args, fragment):
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "clipad.app", *[a.format(ckpt=workspace / "adaclip.ckpt")
                                                                  for a in args], f"output_dir={tmp_path / 'o'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert len(errors) == 1 and errors[0].startswith("error: ") and fragment in errors[0], errors
    imported = set(re.findall(r"^import time:.*\|\s+(\w+)$", result.stderr, re.MULTILINE))
    assert "hydra" in imported and not imported & {"torch", "gradio", "lightning"}


def test_reference_choice_uploads_first_else_a_folders_first_k(workspace):
    uploads = sorted((workspace / "normal_b").iterdir())
    assert chosen_reference_files(uploads, str(workspace / "normal_a"), 1) == uploads
    assert chosen_reference_files([], str(workspace / "images"), 2) == sorted((workspace / "images").iterdir())[:2]
    assert chosen_reference_files([], str(workspace / "images"), None) == sorted((workspace / "images").iterdir())
    assert chosen_reference_files([], "  ", 2) == []
    with pytest.raises(ConfigError, match="references: 5 images asked, .* holds 3"):
        chosen_reference_files([], str(workspace / "images"), 5)
