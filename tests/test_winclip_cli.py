"""WinCLIP through the commands: a config-only checkpoint for evaluate / calibrate / predict, and ONNX export."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from clipad.cli.calibrate import calibrate
from clipad.cli.checkpoint import module_from_checkpoint, save_clipad_checkpoint
from clipad.cli.evaluate import evaluate
from clipad.cli.hydra_setup import compose_config
from clipad.cli.predict import predict
from clipad.models.registry import build_module
from clipad.onnx_export import export_onnx, single_class_batch

SIZE = 112
SMALL = ["backbone.image_size=112", "data=synthetic_medical", "data.classes=[retina,phantom]", "data.num_workers=0"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """Training-free: the checkpoint holds the config only (as for model=clip)."""
    folder = tmp_path_factory.mktemp("winclip")
    cfg = compose_config("train", ["model=winclip", "backbone=tiny", f"backbone.image_size={SIZE}", "data=mvtec",
                                   "callbacks=none", "logger=none", f"paths.output_dir={folder}"])
    module = build_module(cfg)
    assert module.state_dict() == {}
    return save_clipad_checkpoint(folder / "winclip.ckpt", module)


def test_evaluate_and_calibrate_a_config_only_checkpoint(checkpoint, tmp_path, synthetic_data_dir):
    data = f"paths.data_dir={synthetic_data_dir}"
    evaluate(compose_config("eval", [f"ckpt_path={checkpoint}", data, *SMALL, "shots=[0,1]", "logger=none",
                                     "callbacks=none", f"paths.output_dir={tmp_path}"]), overrides=[])
    for shots in (0, 1):
        with open(tmp_path / f"results_shots{shots}_seed10.csv") as f:
            rows = [r for r in csv.DictReader(f) if r["level"] == "class"]
        assert sorted(r["class"] for r in rows) == ["phantom", "retina"] and all(r["pixel_auroc"] for r in rows)
    thresholds = calibrate(compose_config("calibrate", [f"ckpt_path={checkpoint}", data, *SMALL, "shots=1",
                                                        "bootstrap_draws=5", f"output={tmp_path / 't.json'}",
                                                        f"paths.output_dir={tmp_path / 'calibrate'}"]),
                           overrides=[])
    assert set(thresholds.classes["synthetic_medical"]) == {"retina", "phantom"}


def test_predict_with_a_reference_folder_halves_the_score_of_that_very_image(checkpoint, tmp_path, synthetic_data_dir):
    images = tmp_path / "images"
    images.mkdir()
    source = sorted((synthetic_data_dir / "synthetic" / "retina" / "test" / "good").glob("*.png"))[:2]
    for path in source:
        Image.open(path).save(images / path.name)
    shots = tmp_path / "shots"
    shots.mkdir()
    Image.open(source[0]).save(shots / "reference.png")

    def scores(out: Path, *extra: str) -> dict[str, float]:
        summary = predict(compose_config("predict", [f"ckpt_path={checkpoint}", f"input={images}", "num_workers=0",
                                                     f"output_dir={out}", "class_name=retina", "save_figures=false",
                                                     *extra]), overrides=[])
        with open(summary.scores_path) as f:
            return {Path(r["path"]).name: float(r["score"]) for r in csv.DictReader(f)}

    zero, few = scores(tmp_path / "zero"), scores(tmp_path / "few", f"shots_dir={shots}")
    # Its own patches and windows are in the memory: the few-shot half of the score is 0, the text half stays.
    # scores.csv rounds, hence the tolerance.
    assert few[source[0].name] == pytest.approx(zero[source[0].name] / 2, rel=1e-4)
    assert few[source[1].name] > zero[source[1].name] / 2


@pytest.mark.parametrize("shots", [0, 1])
def test_onnx_export_matches_the_module(checkpoint, tmp_path, shots):
    module = module_from_checkpoint(checkpoint, compose_config("export", [f"ckpt_path={checkpoint}",
                                                                          "output=x.onnx"])).eval()
    references = torch.randn(shots, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    module.shots = shots

    class References:
        def normal_prompt_images(self, dataset: str, cls_name: str) -> torch.Tensor:
            return references

    module.prompt_source = References() if shots else None
    path = export_onnx(module, "bottle", tmp_path / "winclip.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for count in (1, 3):  # traced with 2 images: the batch axis is dynamic
        images = torch.randn(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(count))
        onnx_map, onnx_score = session.run(["anomaly_map", "score"], {"image": images.numpy()})
        with torch.no_grad():
            output = module(single_class_batch(images, "bottle"))
        # 1e-4 on values in [0, 1]: far above float32 rounding through the graph, far below a wrong op.
        np.testing.assert_allclose(onnx_map, output.anomaly_map.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(onnx_score, output.score.numpy(), atol=1e-4, rtol=0)
