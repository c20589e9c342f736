"""Calibration rules on constructed scores, the thresholds file, the bootstrap spread, and the commands end to end."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image
from test_predict import tiny_checkpoint

from clipad.calibration.calibrate import bootstrap_false_rejects, calibrate_groups
from clipad.calibration.rules import (
    allowed_false_rejects,
    f1_max_level,
    f1_max_threshold,
    normal_quantile_level,
    normal_quantile_threshold,
)
from clipad.calibration.scoring import GroupScores
from clipad.calibration.thresholds import (
    ClassThreshold,
    DecisionThresholds,
    ThresholdsFileError,
    read_thresholds,
)
from clipad.cli.calibrate import calibrate
from clipad.cli.evaluate import evaluate
from clipad.cli.hydra_setup import compose_config
from clipad.cli.predict import predict
from clipad.errors import ClipadError
from clipad.metrics.evaluator import MAP_LEVELS, level_to_threshold, threshold_to_level


# ---------------------------------------------------------------- rules
def test_normal_quantile_flags_at_most_the_allowed_share():
    scores = np.arange(100) / 100  # 0.00 .. 0.99, shuffled below: order must not matter
    scores = np.random.default_rng(0).permutation(scores)
    assert normal_quantile_threshold(scores, 0.99) == 0.99  # flags 1 of 100
    assert normal_quantile_threshold(scores, 0.95) == 0.95  # flags 5
    above_all = normal_quantile_threshold(scores, 1.0)  # flags none: just above the largest
    assert above_all > 0.99 and np.nextafter(0.99, 0) < 0.99 < above_all and not (scores >= above_all).any()
    assert allowed_false_rejects(300, 0.99) == 3  # not 2: (1 - 0.99) * 300 is 2.9999999999999996 in floats


def test_normal_quantile_never_exceeds_the_share_with_ties():
    scores = np.array([0.1] * 5 + [0.9] * 3)
    assert normal_quantile_threshold(scores, 0.6) == 0.9  # 3 allowed, 3 at 0.9
    tight = normal_quantile_threshold(scores, 0.7)  # 2 allowed, but 3 tie at 0.9: flag none
    assert tight > 0.9 and not (scores >= tight).any()
    with pytest.raises(ValueError, match="q="):
        normal_quantile_threshold(scores, 0.0)


def test_normal_quantile_level_on_histograms():
    hist = np.zeros(MAP_LEVELS, dtype=np.int64)
    hist[[10, 20, 30]] = [90, 8, 2]
    assert normal_quantile_level(hist, 0.98) == 30  # 2 of 100 allowed: level 30 holds exactly 2
    assert normal_quantile_level(hist, 0.95) == 30  # 5 allowed: level 20 would flag 10
    assert normal_quantile_level(hist, 0.90) == 20
    assert normal_quantile_level(hist, 0.999) == 31  # none allowed: one above the largest level


def test_val_f1_picks_the_best_f1_threshold():
    # thresholds high to low: 0.8 -> F1 2/3, 0.4 -> 1/2, 0.35 -> 4/5, 0.1 -> 2/3
    assert f1_max_threshold(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.35
    negatives, positives = np.zeros(MAP_LEVELS, np.int64), np.zeros(MAP_LEVELS, np.int64)
    negatives[[1, 5]] = [100, 1]
    positives[[4, 6]] = [3, 1]
    # level 6: F1 2/5; level 5: 2/6; level 4: 8/9; level 1: 8/109
    assert f1_max_level(negatives, positives) == 4
    with pytest.raises(ValueError, match="normal and anomalous"):
        f1_max_threshold(np.array([0.2, 0.3]), np.array([1, 1]))


def test_pixel_thresholds_round_trip_through_levels():
    for level in (0, 1, 12345, 36044, 52428, 65534, 65535, 65536):
        assert threshold_to_level(level_to_threshold(level)) == level
    assert threshold_to_level(0.55) == 36045  # 0.55 * 65535 = 36044.25: the first level at or above it
    assert threshold_to_level(-1.0) == 0 and threshold_to_level(2.0) == MAP_LEVELS


def group(scores, labels=None, normal_levels=(), anomalous_levels=()) -> GroupScores:
    g = GroupScores(list(scores), list(labels if labels is not None else [0] * len(scores)))
    np.add.at(g.normal_pixels, list(normal_levels), 1)
    np.add.at(g.anomalous_pixels, list(anomalous_levels), 1)
    return g


def test_calibrate_groups_per_class_and_pooled_global():
    groups = {
        ("d", "a"): group([0.1, 0.2, 0.3, 0.4], normal_levels=[5, 6, 7, 8]),
        ("d", "b"): group([0.5, 0.6, 0.7, 0.8], normal_levels=[50, 60, 70, 80]),
    }
    classes, fallback = calibrate_groups(groups, "normal_quantile", q=0.75)  # one of four allowed
    assert classes["d"]["a"] == ClassThreshold(0.4, level_to_threshold(8), 4)
    assert classes["d"]["b"] == ClassThreshold(0.8, level_to_threshold(80), 4)
    assert fallback == ClassThreshold(0.7, level_to_threshold(70), 8)  # two of eight allowed
    labelled = {("v", "a"): group([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]), ("v", "b"): group([0.5, 0.6], [1, 1])}
    classes, fallback = calibrate_groups(labelled, "val_f1")
    assert classes == {"v": {"a": ClassThreshold(0.35, None, 4)}}  # b has no normal image: it uses the global
    assert fallback.image == 0.35 and fallback.images == 6


# ---------------------------------------------------------------- bootstrap
def test_bootstrap_spread_is_zero_for_tied_normals_and_reproducible():
    tied = bootstrap_false_rejects({("d", "a"): np.full(20, 0.3)}, q=0.95, draws=30, seed=1)
    assert tied.overall == (0.0, 0.0) and tied.per_class[("d", "a")] == (0.0, 0.0)
    scores = {("d", "a"): np.random.default_rng(0).random(30), ("d", "b"): np.random.default_rng(1).random(10)}
    first = bootstrap_false_rejects(scores, q=0.9, draws=50, seed=3)
    assert first == bootstrap_false_rejects(scores, q=0.9, draws=50, seed=3)
    mean, std = first.overall
    assert 0 < mean < 0.5 and std > 0  # distinct scores: left-out normals above a resample's threshold happen
    with pytest.raises(ClipadError, match="bootstrap_draws"):
        bootstrap_false_rejects(scores, q=0.9, draws=1)


# ---------------------------------------------------------------- thresholds file
def example_thresholds() -> DecisionThresholds:
    return DecisionThresholds(
        "normal_quantile", ClassThreshold(0.5, 0.25, 40), {"mvtec": {"bottle": ClassThreshold(0.1 + 0.2, None, 20)}},
        q=0.99, source="train/good of mvtec", checkpoint="m.ckpt", random_backbone=True,
    )


@pytest.mark.parametrize("name", ["t.json", "t.yaml"])
def test_thresholds_file_round_trips_exactly(tmp_path, name):
    written = example_thresholds()
    read = read_thresholds(written.write(tmp_path / name))
    assert read.classes == written.classes and read.fallback == written.fallback
    assert read.classes["mvtec"]["bottle"].image == 0.1 + 0.2  # 0.30000000000000004: full precision kept
    assert (read.rule, read.q, read.source, read.random_backbone) == ("normal_quantile", 0.99, "train/good of mvtec", True)
    assert read.lookup("mvtec", "bottle")[1] == "mvtec/bottle"
    assert read.lookup("mvtec", "cable") == (written.fallback, "global")
    assert read.lookup_class("bottle")[1] == "mvtec/bottle" and read.lookup_class("object")[1] == "global"


def test_bad_thresholds_files_are_clear_errors(tmp_path):
    with pytest.raises(ThresholdsFileError, match="no such file.*clipad.calibrate"):
        read_thresholds(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text(json.dumps({"threshold": 0.5}))
    with pytest.raises(ClipadError, match="not a clipad thresholds file"):
        read_thresholds(tmp_path / "other.json")
    data = example_thresholds().to_dict()
    data["global"]["image"] = "high"
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ClipadError, match="global needs a number 'image'"):
        read_thresholds(tmp_path / "bad.json")


# ---------------------------------------------------------------- end to end (synthetic data, tiny backbone)
SMALL = ["backbone.image_size=112", "data=synthetic_medical", "data.classes=[retina,phantom]"]


def test_calibrate_then_evaluate_and_predict_with_decisions(tmp_path, synthetic_data_dir, capsys):
    ckpt = tiny_checkpoint(tmp_path, "clip")  # training-free baseline: a checkpoint without a fit
    data = f"paths.data_dir={synthetic_data_dir}"
    thresholds = calibrate(compose_config("calibrate", [f"ckpt_path={ckpt}", data, *SMALL, "bootstrap_draws=20",
                                                        f"paths.output_dir={tmp_path / 'calibrate'}"]), overrides=[])
    out = capsys.readouterr().out
    assert (tmp_path / "thresholds.json").is_file()  # beside the checkpoint
    assert set(thresholds.classes["synthetic_medical"]) == {"retina", "phantom"}
    assert thresholds.random_backbone and thresholds.fallback.images == 24  # 12 train/good images per class
    assert "false-reject rate on left-out normals over 20 bootstrap draws: " in out
    assert "| synthetic_medical | retina | 12 |" in out

    eval_dir = tmp_path / "eval"
    evaluate(compose_config("eval", [f"ckpt_path={ckpt}", data, *SMALL, "thresholds=" + str(thresholds.path),
                                     "logger=none", "callbacks=none", f"paths.output_dir={eval_dir}"]), overrides=[])
    out = capsys.readouterr().out
    assert "### At the calibrated thresholds (normal_quantile q=0.99" in out
    assert "False-reject (overkill) rate" in out and "Overkill@5" in out and "Pixel AUPIMO" in out
    with open(eval_dir / "results_decisions.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["level"] == "class"]
    assert sorted(r["class"] for r in rows) == ["phantom", "retina"]
    assert all(0 <= float(r["image_false_reject"]) <= 1 and r["pixel_iou"] for r in rows)
    assert (eval_dir / "results_inspection.csv").is_file()
    with open(eval_dir / "results.csv") as f:  # the threshold-free table keeps its header
        assert next(csv.reader(f)) == ["level", "domain", "dataset", "class", "image_auroc", "image_ap",
                                       "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro"]

    images = synthetic_data_dir / "synthetic" / "retina" / "test"
    predict_dir = tmp_path / "predict"
    predict(compose_config("predict", [f"ckpt_path={ckpt}", f"input={images}", f"output_dir={predict_dir}",
                                       "class_name=retina", f"thresholds={thresholds.path}", "save_figures=false",
                                       "save_masks=true", "num_workers=0"]), overrides=[])
    out = capsys.readouterr().out
    with open(predict_dir / "scores.csv") as f:
        scored = list(csv.DictReader(f))
    retina = thresholds.classes["synthetic_medical"]["retina"]
    fails = sum(r["decision"] == "fail" for r in scored)
    assert all(r["decision"] == ("fail" if float(r["score"]) >= retina.image else "pass") or
               math.isclose(float(r["score"]), retina.image, rel_tol=1e-5) for r in scored)  # scores.csv rounds
    assert f"{len(scored)} images: {fails} fail, {len(scored) - fails} pass" in out.splitlines()
    assert "thresholds: synthetic_medical/retina" in out
    assert len(list(predict_dir.rglob("*.mask.png"))) == len(scored)


def test_fixed_rule_and_option_errors(tmp_path):
    ckpt = tiny_checkpoint(tmp_path, "clip")
    written = calibrate(compose_config("calibrate", [f"ckpt_path={ckpt}", "rule=fixed", "value=0.4",
                                                     "pixel_value=0.6", f"output={tmp_path / 'fixed.yaml'}"]),
                        overrides=[])
    assert read_thresholds(tmp_path / "fixed.yaml").fallback == ClassThreshold(0.4, 0.6) == written.fallback
    with pytest.raises(ClipadError, match="rule=fixed needs value"):
        calibrate(compose_config("calibrate", [f"ckpt_path={ckpt}", "rule=fixed"]), overrides=[])
    with pytest.raises(ClipadError, match=r"q=1.5: the normal quantile must lie in \(0, 1\]"):
        calibrate(compose_config("calibrate", [f"ckpt_path={ckpt}", "q=1.5"]), overrides=[])
    with pytest.raises(ClipadError, match="rule=median"):
        calibrate(compose_config("calibrate", [f"ckpt_path={ckpt}", "rule=median"]), overrides=[])
    with pytest.raises(ClipadError, match="either threshold=... or thresholds=FILE"):
        predict(compose_config("predict", [f"ckpt_path={ckpt}", f"input={tmp_path}", "threshold=0.5",
                                           f"thresholds={tmp_path / 'fixed.yaml'}"]), overrides=[])


def test_few_shot_calibration_leaves_out_the_prompt_images(tmp_path, synthetic_data_dir):
    ckpt = tiny_checkpoint(tmp_path, "adaptclip")
    thresholds = calibrate(compose_config("calibrate", [
        f"ckpt_path={ckpt}", f"paths.data_dir={synthetic_data_dir}", *SMALL, "data.classes=[retina]", "shots=2",
        "bootstrap_draws=0", f"paths.output_dir={tmp_path}"]), overrides=[])
    assert thresholds.classes["synthetic_medical"]["retina"].images == 12 - 2
    assert "without the 2 prompt images per class" in thresholds.source
    with pytest.raises(ClipadError, match="scores its own prompt"):
        calibrate(compose_config("calibrate", [f"ckpt_path={ckpt}", f"paths.data_dir={synthetic_data_dir}", *SMALL,
                                               "source=shots", "shots=2", f"paths.output_dir={tmp_path}"]), overrides=[])


def test_unreadable_good_parts_are_skipped_counted_and_stated_last(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path, "clip")
    good = tmp_path / "good"
    good.mkdir()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(good / "a.png")
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(good / "b.png")
    (good / "broken.png").write_bytes(b"not an image")
    thresholds = calibrate(compose_config("calibrate", [f"ckpt_path={ckpt}", f"normals_dir={good}", "class_name=part",
                                                        "bootstrap_draws=0", f"output={tmp_path / 't.json'}"]),
                           overrides=[])
    assert thresholds.fallback.images == 2
    assert capsys.readouterr().out.strip().splitlines()[-1] == "bad inputs: 1 unreadable skipped"
