"""Predict: mixed-format folders, unreadable files, smoothed and raw maps, masks, few-shot prompts."""
from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipad.cli.checkpoint import save_clipad_checkpoint
from clipad.cli.hydra_setup import compose_config
from clipad.cli.predict import predict
from clipad.cli.predict_outputs import resized_map
from clipad.errors import ClipadError
from clipad.models.registry import build_module

SIZES = {"a.png": (60, 80), "b.jpg": (45, 70), "deep16.png": (50, 40), "rgba.png": (32, 32), "grey.png": (64, 48),
         "c.bmp": (40, 40), "d.tif": (30, 50)}  # (height, width)


def tiny_checkpoint(folder: Path, model: str) -> Path:
    cfg = compose_config(
        "train", [f"model={model}", "backbone=tiny", "backbone.image_size=112", "data=mvtec", "callbacks=none",
                  "logger=none", f"paths.output_dir={folder}"],
    )
    torch.manual_seed(0)
    return save_clipad_checkpoint(folder / f"{model}.ckpt", build_module(cfg))


def write_mixed_folder(folder: Path) -> None:
    """Every format a user folder may hold, one per file, plus a corrupt PNG and a non-image file."""
    rng = np.random.default_rng(0)
    sub = folder / "sub"
    sub.mkdir(parents=True)

    def rgb(name: str) -> np.ndarray:
        return rng.integers(0, 256, (*SIZES[name], 3), dtype=np.uint8)

    Image.fromarray(rgb("a.png")).save(folder / "a.png")
    Image.fromarray(rgb("b.jpg")).save(folder / "b.jpg", quality=90)
    Image.fromarray(rng.integers(0, 65536, SIZES["deep16.png"]).astype(np.uint16)).save(sub / "deep16.png")
    rgba = np.dstack([rgb("rgba.png"), np.full(SIZES["rgba.png"], 100, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(folder / "rgba.png")
    Image.fromarray(rgb("grey.png")[..., 0], mode="L").save(folder / "grey.png")
    Image.fromarray(rgb("c.bmp")).save(folder / "c.bmp")
    Image.fromarray(rgb("d.tif")).save(folder / "d.tif")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (folder / "notes.txt").write_text("not an image")


def predict_config(ckpt: Path, input_path: Path | str, output_dir: Path, *extra: str):
    return compose_config(
        "predict", [f"ckpt_path={ckpt}", f"input={input_path}", f"output_dir={output_dir}", "num_workers=0",
                    "batch_size=3", *extra],
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("predict")
    write_mixed_folder(root / "images")
    tiny_checkpoint(root, "clip")
    return root


def read_scores(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_mixed_folder_writes_one_row_and_figure_per_readable_image(workspace, tmp_path):
    """Through the command line: Hydra's run dir is output_dir; the corrupt file is named, not fatal."""
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "clipad.predict", f"ckpt_path={workspace / 'clip.ckpt'}",
         f"input={workspace / 'images'}", f"output_dir={out}", "num_workers=1", "threshold=0.5"],
        check=False, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    readable = {"a.png", "b.jpg", "deep16.png", "rgba.png", "grey.png", "c.bmp", "d.tif"}
    assert "scored 7 images" in result.stdout and "broken.png" in result.stdout
    rows = read_scores(out / "scores.csv")
    assert sorted(Path(r["path"]).name for r in rows) == sorted(readable)
    for row in rows:
        assert 0.0 <= float(row["score"]) <= 1.0
        assert row["anomalous"] == str(int(float(row["score"]) >= 0.5))
    figures = sorted(p.relative_to(out / "figures").as_posix() for p in (out / "figures").rglob("*.png"))
    assert figures == sorted(f"sub/{n}.png" if n == "deep16.png" else f"{n}.png" for n in readable)
    assert all(Image.open(out / "figures" / f).size[0] > 300 for f in figures)
    # The corrupt file is listed; the .txt file is not an image and is ignored.
    unreadable = read_scores(out / "unreadable.csv")
    assert [Path(r["path"]).name for r in unreadable] == ["broken.png"]
    assert not list(out.glob(".pending_figures_*"))  # per-dataset scaling's scratch files are gone
    assert (out / ".hydra" / "config.yaml").is_file()


def test_save_maps_smoothed_at_input_resolution_raw_at_model_resolution_and_masks(workspace, tmp_path):
    out = tmp_path / "out"
    summary = predict(predict_config(workspace / "clip.ckpt", workspace / "images", out, "save_maps=both",
                                     "save_masks=true", "pixel_threshold=0.5", "save_figures=false",
                                     "scaling=per_image"), overrides=[])
    assert summary.figures == []
    module = build_module(compose_config("train", ["model=clip", "backbone=tiny", "backbone.image_size=112",
                                                   "data=mvtec", "paths.output_dir=."]))
    for name, size in SIZES.items():
        stem = out / "figures" / ("sub" if name == "deep16.png" else "") / name
        smoothed = np.load(stem.with_name(name + ".smoothed.npy"))
        raw = np.load(stem.with_name(name + ".raw.npy"))
        assert smoothed.dtype == raw.dtype == np.float32 and smoothed.shape == size and raw.shape == (112, 112)
        assert 0.0 <= smoothed.min() and smoothed.max() <= 1.0 and 0.0 <= raw.min() and raw.max() <= 1.0
        # raw is the map before smoothing: smoothing it and resizing it to the file gives the smoothed map
        # (to float rounding: the smoothing here runs on one map, in predict on a batch of three).
        again = resized_map(module.smooth(torch.from_numpy(raw)[None])[0], size)
        assert np.allclose(again, smoothed, atol=1e-6)
        assert not np.allclose(raw, module.smooth(torch.from_numpy(raw)[None])[0].numpy())
        mask = np.asarray(Image.open(stem.with_name(name + ".mask.png")))
        assert mask.shape == size and set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 255, smoothed >= 0.5)
    assert not list(out.rglob("*.png.npy"))  # the old, unnamed map files are gone


def test_save_maps_raw_only_and_an_ambiguous_true_is_refused(workspace, tmp_path):
    out = tmp_path / "raw"
    predict(predict_config(workspace / "clip.ckpt", workspace / "images" / "a.png", out, "save_maps=raw",
                           "save_figures=false"), overrides=[])
    assert [p.name for p in (out / "figures").iterdir()] == ["a.png.raw.npy"]
    with pytest.raises(ClipadError, match="save_maps=true is ambiguous.*save_maps=smoothed.*save_maps=raw"):
        predict(predict_config(workspace / "clip.ckpt", workspace / "images", tmp_path / "t", "save_maps=true"), [])
    with pytest.raises(ClipadError, match=re.escape("save_maps=yes: choose one of false | smoothed | raw | both")):
        predict(predict_config(workspace / "clip.ckpt", workspace / "images", tmp_path / "t", "save_maps=yes"), [])


def test_single_file_glob_and_scores_are_repeatable(workspace, tmp_path):
    one = predict(predict_config(workspace / "clip.ckpt", workspace / "images" / "a.png", tmp_path / "one",
                                 "save_figures=false"), overrides=[])
    pattern = predict(predict_config(workspace / "clip.ckpt", f"{workspace}/images/**/*.png", tmp_path / "glob",
                                     "scaling=per_image"), overrides=[])
    assert [p.relative_to(tmp_path / "glob" / "figures").as_posix() for p in pattern.figures] == [
        "a.png.png", "grey.png.png", "rgba.png.png", "sub/deep16.png.png"]
    first = read_scores(one.scores_path)
    assert len(first) == 1 and "anomalous" not in first[0]
    by_name = {Path(r["path"]).name: r["score"] for r in read_scores(pattern.scores_path)}
    assert sorted(by_name) == ["a.png", "deep16.png", "grey.png", "rgba.png"]
    # a.png alone (batch of 1) and a.png among 4 images (one batch of 4): other batch shapes make CPU kernels
    # sum in another order, so the float32 score may differ in its last bits (~1e-7), never by 1e-5.
    assert abs(float(by_name["a.png"]) - float(first[0]["score"])) <= 1e-5


def test_output_folder_inside_the_input_is_not_rescored(workspace, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(images / "x.png")
    for _ in range(2):
        summary = predict(predict_config(workspace / "clip.ckpt", images, images / "out", "save_figures=false"), [])
        assert summary.scored == 1


def test_bad_options_fail_before_any_work(workspace, tmp_path):
    with pytest.raises(ValueError, match="pixel_threshold"):
        predict(predict_config(workspace / "clip.ckpt", workspace / "images", tmp_path, "save_masks=true"), [])
    with pytest.raises(ValueError, match="scaling"):
        predict(predict_config(workspace / "clip.ckpt", workspace / "images", tmp_path, "scaling=log"), [])
    with pytest.raises(FileNotFoundError, match="input=.*missing"):
        predict(predict_config(workspace / "clip.ckpt", tmp_path / "missing", tmp_path), [])
    with pytest.raises(ValueError, match="few-shot"):
        predict(predict_config(workspace / "clip.ckpt", workspace / "images", tmp_path,
                               f"shots_dir={workspace / 'images'}"), [])


def test_few_shot_prompts_from_shots_dir(workspace, tmp_path):
    """AdaptCLIP with a normal prompt folder: an image identical to the prompt aligns perfectly and scores ~0."""
    ckpt = tiny_checkpoint(tmp_path, "adaptclip")
    shots = tmp_path / "shots"
    shots.mkdir()
    (shots / "normal.png").write_bytes((workspace / "images" / "a.png").read_bytes())
    few = predict(predict_config(ckpt, workspace / "images", tmp_path / "few", f"shots_dir={shots}",
                                 "save_figures=false"), overrides=[])
    scores = {Path(r["path"]).name: float(r["score"]) for r in read_scores(few.scores_path)}
    assert scores["a.png"] < 1e-3
    assert min(v for k, v in scores.items() if k != "a.png") > 10 * scores["a.png"]
    zero = predict(predict_config(ckpt, workspace / "images", tmp_path / "zero", "save_figures=false"), [])
    assert float(read_scores(zero.scores_path)[0]["score"]) > 1e-3  # without prompts the same image is not ~0
