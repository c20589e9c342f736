"""Issue 15's protocols end to end: a small Real-IAD tree evaluated few-shot (k=1) by AdaptCLIP with the tiny
backbone; MVTec LOCO AD's anomaly types; MVTec AD 2 submission files.

Sample metrics are checked against a hand computation from the per-image scores, the prompts against the
reference's draws (torch.manual_seed(seed) before each (class, view), torch.randint among that view's rows).
"""
from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score
from test_data_fixtures import write_image, write_mask
from test_data_new_layouts import realiad_entry

from clipad.cli.hydra_setup import compose_config
from clipad.data.catalog import DatasetError
from clipad.data.datamodule import AnomalyDataModule
from clipad.data.dataset import AnomalyDataset
from clipad.data.meta_json import reference_sample_id
from clipad.errors import ClipadError
from clipad.metrics.results import ResultsTable
from clipad.models.adaptclip import AdaptCLIPModule
from clipad.models.registry import build_module
from clipad.report.compare import comparison_rows
from clipad.report.mvtec_ad2_submission import submission_paths, write_submission_maps

VIEWS = ("C1", "C2")


def make_multi_view_realiad(root: Path) -> Path:
    """audiojack, 2 views: train OK S0001..S0003; test OK S0010..S0013 and NG/HS S0020..S0022 (C1 always shows the
    defect; C2 only for S0021, otherwise its mask_path is null: a normal view of a defective sample)."""
    train = [realiad_entry("audiojack", "OK", s, v, None, False) for s in (1, 2, 3) for v in VIEWS]
    test = [realiad_entry("audiojack", "OK", s, v, None, False) for s in (10, 11, 12, 13) for v in VIEWS]
    test += [realiad_entry("audiojack", "NG_HS", s, v, "HS", v == "C1" or s == 21) for s in (20, 21, 22) for v in VIEWS]
    for seed, entry in enumerate(train + test):
        write_image(root / "realiad_256" / "audiojack" / entry["image_path"], seed=seed)
        if entry["mask_path"]:
            write_mask(root / "realiad_256" / "audiojack" / entry["mask_path"])
    jsons = root / "realiad_jsons"
    jsons.mkdir(parents=True)
    split = {"meta": {"prefix": "audiojack", "normal_class": "OK"}, "train": train, "test": test}
    (jsons / "audiojack.json").write_text(json.dumps(split))
    return root


def hand_f1max(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-300)
    return float(f1.max())


def hand_overkill(labels: np.ndarray, scores: np.ndarray, escape: int) -> float:
    threshold = np.quantile(scores[labels == 1], escape / 100)
    return float(np.mean(scores[labels == 0] >= threshold))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    make_multi_view_realiad(data_dir / "realiad")
    out = tmp_path_factory.mktemp("run")
    cfg = compose_config("train", [
        "model=adaptclip", "backbone=tiny", "backbone.image_size=112", "data=realiad", "data.num_workers=0",
        "data.eval_batch_size=5", "data.classes=[audiojack]", "shots=1", "few_shot_seed=3",
        f"paths.data_dir={data_dir}", f"paths.output_dir={out}",
    ])
    torch.manual_seed(0)
    module = AdaptCLIPModule(cfg)
    datamodule = AnomalyDataModule.from_config(cfg)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=out)
    trainer.test(module, datamodule=datamodule, verbose=False)
    return module, datamodule, out


def test_sample_metrics_equal_a_hand_computation_from_the_image_scores(evaluated):
    module, _, _ = evaluated
    table = module.stage_results["test"]
    records = module.stage_image_scores["test"]
    assert len(records) == 14
    samples: dict[str, tuple[float, int]] = {}
    for r in records:  # sample = max over its views, of the score and of the label
        key = reference_sample_id(r["path"])
        score, label = samples.get(key, (-np.inf, 0))
        samples[key] = (max(score, r["score"]), max(label, r["label"]))
    assert len(samples) == 7
    scores = np.array([s for s, _ in samples.values()])
    labels = np.array([y for _, y in samples.values()])
    assert labels.tolist().count(1) == 3 and len(set(scores.tolist())) == 7  # no ties: a real ranking test
    row = table.class_rows()[0]
    assert row["class"] == "audiojack"
    assert row["sample_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert row["sample_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert row["sample_f1max"] == pytest.approx(hand_f1max(labels, scores), abs=1e-12)
    image_labels = np.array([r["label"] for r in records])
    image_scores = np.array([r["score"] for r in records])
    assert image_labels.sum() == 4  # C1 of S0020..S0022 and C2 of S0021
    assert row["image_auroc"] == pytest.approx(roc_auc_score(image_labels, image_scores), abs=1e-12)
    inspection = table.sections["inspection"].class_rows()[0]
    for escape in (2, 5, 10):
        assert inspection[f"sample_overkill@{escape}"] == pytest.approx(hand_overkill(labels, scores, escape), abs=1e-12)
        assert inspection[f"image_overkill@{escape}"] == pytest.approx(
            hand_overkill(image_labels, image_scores, escape), abs=1e-12)
    assert "Sample AUROC" in table.to_markdown() and "S-Overkill@2" in table.to_markdown()


def test_results_csv_round_trip_keeps_the_sample_columns(evaluated, tmp_path):
    module, _, _ = evaluated
    table = module.stage_results["test"]
    table.to_csv(tmp_path / "results.csv")
    header = (tmp_path / "results.csv").read_text().splitlines()[0].split(",")
    assert header[4:10] == ["image_auroc", "image_ap", "image_f1max", "sample_auroc", "sample_ap", "sample_f1max"]
    assert ResultsTable.from_csv(tmp_path / "results.csv").rows == table.rows


def test_prompts_are_drawn_and_memorised_once_per_class_and_view(evaluated):
    module, datamodule, out = evaluated
    cached = sorted(key for key in module._prompt_cache)
    assert cached == [("realiad", "audiojack", 1, 3, view) for view in VIEWS]
    train_rows = sorted((r for r in datamodule.table("realiad") if r["split"] == "train"), key=lambda r: r["img_path"])
    expected = []
    for view in VIEWS:  # the reference's draw, with torch's global generator
        pool = [r for r in train_rows if r["view_id"] == view]
        torch.manual_seed(3)
        expected += [pool[i]["img_path"] for i in torch.randint(len(pool), (1,)).tolist()]
    listed = (out / "realiad_1shot_seed3_prompts.txt").read_text().splitlines()
    assert listed == expected
    record = json.loads((out / "few_shot_prompts_shots1_seed3.json").read_text())
    assert record["view_prompts"]["realiad"]["audiojack"] == {"C1": expected[:1], "C2": expected[1:]}


def make_loco(root: Path) -> Path:
    """breakfast_box: train 2 good; test 2 good, 2 logical (two masks each), 2 structural (one mask each)."""
    box = root / "breakfast_box"
    for i in range(2):
        write_image(box / f"train/good/{i:03d}.png", seed=i)
        write_image(box / f"test/good/{i:03d}.png", seed=10 + i)
        write_image(box / f"test/logical_anomalies/{i:03d}.png", seed=20 + i)
        write_mask(box / f"ground_truth/logical_anomalies/{i:03d}/000.png", (2, 2, 6, 6))
        write_mask(box / f"ground_truth/logical_anomalies/{i:03d}/001.png", (8, 8, 14, 12))
        write_image(box / f"test/structural_anomalies/{i:03d}.png", seed=30 + i)
        write_mask(box / f"ground_truth/structural_anomalies/{i:03d}/000.png")
    return root


def test_mvtec_loco_reports_logical_and_structural_anomalies_separately(tmp_path):
    make_loco(tmp_path / "data" / "mvtec_loco")
    cfg = compose_config("train", [
        "model=clip", "backbone=tiny", "backbone.image_size=112", "data=mvtec_loco", "data.num_workers=0",
        "data.classes=[breakfast_box]", f"paths.data_dir={tmp_path / 'data'}", f"paths.output_dir={tmp_path / 'run'}",
    ])
    torch.manual_seed(0)
    module = build_module(cfg)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.test(module, datamodule=AnomalyDataModule.from_config(cfg), verbose=False)
    table = module.stage_results["test"]
    by_type = {r["class"]: r for r in table.sections["anomaly_types"].class_rows()}
    assert sorted(by_type) == ["breakfast_box/logical", "breakfast_box/structural"]
    records = module.stage_image_scores["test"]
    for type_name in ("logical", "structural"):  # each type with both good images
        chosen = [r for r in records if "/good/" in r["path"] or f"/{type_name}_anomalies/" in r["path"]]
        assert len(chosen) == 4
        expected = roc_auc_score([r["label"] for r in chosen], [r["score"] for r in chosen])
        assert by_type[f"breakfast_box/{type_name}"]["image_auroc"] == pytest.approx(expected, abs=1e-12)
    whole = roc_auc_score([r["label"] for r in records], [r["score"] for r in records])
    assert table.class_rows()[0]["image_auroc"] == pytest.approx(whole, abs=1e-12)  # the class row: all 6 images
    assert "sample_auroc" not in table.metrics  # no views


def test_mvtec_ad2_submission_files_mirror_the_test_image_paths(tmp_path):
    root = tmp_path / "mvtec_ad2"
    image = write_image(root / "can/test_private/000_regular.png")
    public = write_image(root / "can/test_public/bad/001_overexposed.png")
    anomaly_map = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    written = write_submission_maps(tmp_path / "submission", image, root, anomaly_map, anomaly_map >= 0.5)
    assert [p.relative_to(tmp_path / "submission").as_posix() for p in written] == [
        "anomaly_images/can/test_private/000_regular.tiff", "anomaly_images_thresholded/can/test_private/000_regular.png"]
    stored = tifffile.imread(written[0])
    assert stored.dtype == np.float16 and np.allclose(stored, anomaly_map, atol=1e-3)
    binary = np.asarray(Image.open(written[1]))
    assert set(np.unique(binary).tolist()) == {0, 255} and np.array_equal(binary == 255, anomaly_map >= 0.5)
    assert submission_paths(public, root)[0].as_posix() == "anomaly_images/can/test_public/bad/001_overexposed.tiff"
    with pytest.raises(ClipadError, match="not under the dataset root"):
        submission_paths(image, tmp_path / "elsewhere")


def test_a_view_without_normal_train_images_is_a_clear_error(evaluated):
    _, datamodule, _ = evaluated
    with pytest.raises(DatasetError, match="view 'C3' has no normal train image"):
        datamodule.normal_prompt_images("realiad", "audiojack", "C3")


def test_run_comparison_lists_the_sample_metrics_of_multi_view_runs(evaluated, tmp_path):
    module, _, _ = evaluated
    module.stage_results["test"].to_csv(tmp_path / "results.csv")
    rows = comparison_rows([tmp_path])
    assert rows[0]["realiad/sample_auroc"] == module.stage_results["test"].summary()["test/realiad/sample_auroc"]


def pairing_dataset(datamodule, normal_views: tuple[str, ...]):
    """AdaptCLIP's training pairing on the 2-view tree: test rows as queries, train normals of `normal_views` as
    the pool; each normal image is replaced by its view's index, so a sample shows which view it was drawn from."""
    rows = datamodule.table("realiad")
    normals = [r for r in rows if r["split"] == "train" and r["label"] == 0 and r["view_id"] in normal_views]
    dataset = AnomalyDataset([r for r in rows if r["split"] == "test"], dataset="realiad",
                             transform=datamodule.eval_transform, prompt_names={"audiojack": "audiojack"},
                             pixel_labels=True, normal_rows={"audiojack": normals})
    dataset.image_tensor = lambda row: torch.tensor([VIEWS.index(row["view_id"])])
    return dataset


def test_training_pairs_come_from_the_query_images_own_view(evaluated):
    _, datamodule, _ = evaluated
    dataset = pairing_dataset(datamodule, VIEWS)
    torch.manual_seed(0)
    samples = [dataset[i] for i in range(len(dataset))]
    assert {s["view_id"] for s in samples} == set(VIEWS)
    for sample in samples:
        assert int(sample["normal_image"]) == VIEWS.index(sample["view_id"]), sample["path"]


def test_a_view_without_normal_images_to_pair_with_is_a_clear_error(evaluated):
    _, datamodule, _ = evaluated
    dataset = pairing_dataset(datamodule, ("C1",))
    c2 = next(i for i, row in enumerate(dataset.rows) if row["view_id"] == "C2")
    with pytest.raises(DatasetError, match="view 'C2' of class 'audiojack' has none"):
        dataset[c2]
