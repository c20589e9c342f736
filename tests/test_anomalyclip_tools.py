"""AnomalyCLIP with the other commands: ONNX export, predict, calibrate, shot lists."""
from __future__ import annotations

import csv

import pytest
from test_export import SIZE, assert_parity, initializer_shapes, tiny_module

from clipad.cli.calibrate import calibrate
from clipad.cli.checkpoint import save_clipad_checkpoint
from clipad.cli.hydra_setup import compose_config
from clipad.cli.predict import predict
from clipad.cli.train import train
from clipad.errors import ConfigError
from clipad.onnx_export import export_onnx


def test_onnx_export_matches_the_module_with_the_text_as_a_constant(tmp_path):
    module = tiny_module("anomalyclip")
    path = export_onnx(module, "object", tmp_path / "anomalyclip.onnx")
    assert_parity(module, path, "object", batches=(1, 3))
    assert tuple(module.backbone.clip.token_embedding.weight.shape) not in initializer_shapes(path)


def test_predict_and_calibrate_run_on_a_checkpoint(tmp_path, synthetic_data_dir):
    module = tiny_module("anomalyclip")
    ckpt = save_clipad_checkpoint(tmp_path / "anomalyclip.ckpt", module)
    data = [f"paths.data_dir={synthetic_data_dir}", f"backbone.image_size={SIZE}", "data=synthetic_medical",
            "data.classes=[retina]"]
    thresholds = calibrate(compose_config("calibrate", [f"ckpt_path={ckpt}", *data, "bootstrap_draws=5"]),
                           overrides=[])
    assert set(thresholds.classes["synthetic_medical"]) == {"retina"}
    images = synthetic_data_dir / "synthetic" / "retina" / "test" / "good"
    out = tmp_path / "predict"
    predict(compose_config("predict", [f"ckpt_path={ckpt}", f"input={images}", f"output_dir={out}",
                                       "class_name=retina", "save_figures=false", "num_workers=0"]), overrides=[])
    with open(out / "scores.csv") as f:
        scores = [float(r["score"]) for r in csv.DictReader(f)]
    assert scores and all(0.0 <= s <= 1.0 for s in scores)


def test_shots_are_refused_for_the_zero_shot_model(tmp_path, synthetic_data_dir):
    cfg = compose_config("train", ["model=anomalyclip", "backbone=tiny", f"backbone.image_size={SIZE}",
                                   "shots=[0,1]", "train=false", "logger=none", "callbacks=none",
                                   f"paths.data_dir={synthetic_data_dir}", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="zero-shot only"):
        train(cfg)
