"""Real-IAD, Real-IAD Variety, MVTec AD 2, MVTec LOCO AD: tiny trees of each layout, scanned and inspected."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from test_data_fixtures import write_image, write_mask

from clipad.data.catalog import DatasetError, load_dataset_config
from clipad.data.dataset import AnomalyDataset
from clipad.data.few_shot import draw_view_prompts, view_prompt_pools, write_prompt_list
from clipad.data.image_io import read_mask
from clipad.data.inspect import inspect_dataset
from clipad.data.meta_json import read_meta, write_meta
from clipad.data.scanners import scan, scan_layout
from clipad.data.scanners.selection import check_missing_masks
from clipad.data.transforms import SampleTransform


def data_cfg(name: str, **changes):
    return OmegaConf.merge(load_dataset_config(name), changes)


def inspected(name: str, data_dir: Path, **changes) -> tuple[list[list[str]], str]:
    """The count table's rows (split into cells) and the last line inspect prints."""
    cfg = OmegaConf.create({"data": data_cfg(name, **changes), "paths": {"data_dir": str(data_dir)}})
    lines: list[str] = []
    inspect_dataset(cfg, emit=lines.append)
    return [line.split() for line in lines[1].splitlines()[1:]], lines[-1]


def realiad_entry(cls: str, status: str, sample: int, view: str, defect: str | None, mask: bool) -> dict:
    folder = f"OK/S{sample:04d}" if defect is None else f"NG/{defect}/S{sample:04d}"
    stem = f"{cls}_{sample:04d}_{status}_{view}_20240101120000"
    return {
        "category": cls,
        "anomaly_class": defect or "OK",
        "image_path": f"{folder}/{stem}.jpg",
        "mask_path": f"{folder}/{stem}.png" if mask else None,
    }


def make_realiad(root: Path, views=("C1", "C2"), image_dir="realiad_256", nested_jsons=True) -> Path:
    """audiojack: train OK S0001 (2 views); test OK S0002 (2 views) + NG/HS/S0003 whose C1 shows the defect (mask)
    and whose other view does not (mask_path null: normal, as the official loader reads it).
    pcb: train OK S0001 (first view); test OK S0003 + NG/AK/S0002 (first view, mask)."""
    first = views[0]
    classes = {
        "audiojack": {
            "train": [realiad_entry("audiojack", "OK", 1, v, None, False) for v in views],
            "test": [realiad_entry("audiojack", "OK", 2, v, None, False) for v in views]
            + [realiad_entry("audiojack", "NG_HS", 3, v, "HS", v == first) for v in views],
        },
        "pcb": {
            "train": [realiad_entry("pcb", "OK", 1, first, None, False)],
            "test": [realiad_entry("pcb", "OK", 3, first, None, False), realiad_entry("pcb", "NG_AK", 2, first, "AK", True)],
        },
    }
    jsons = root / "realiad_jsons" / "realiad_jsons" if nested_jsons else root / "realiad_jsons"
    for cls, splits in classes.items():
        for entry in splits["train"] + splits["test"]:
            write_image(root / image_dir / cls / entry["image_path"])
            if entry["mask_path"]:
                write_mask(root / image_dir / cls / entry["mask_path"])
        jsons.mkdir(parents=True, exist_ok=True)
        meta = {"prefix": cls, "normal_class": "OK"}
        (jsons / f"{cls}.json").write_text(json.dumps({"meta": meta, **splits}))
    return root


def test_realiad_rows_views_samples_and_counts(tmp_path):
    root = make_realiad(tmp_path / "realiad")
    rows = scan("realiad", root, data_cfg("realiad"))
    assert len(rows) == 9
    test = {Path(r["img_path"]).name: r for r in rows if r["split"] == "test" and r["cls_name"] == "audiojack"}
    defective = test["audiojack_0003_NG_HS_C1_20240101120000.jpg"]
    assert (defective["label"], defective["defect_type"], defective["view_id"], defective["sample_id"]) == (
        1, "HS", "C1", "HSS0003")
    mask = root / "realiad_256/audiojack/NG/HS/S0003/audiojack_0003_NG_HS_C1_20240101120000.png"
    assert defective["mask_path"] == str(mask)
    clean_view = test["audiojack_0003_NG_HS_C2_20240101120000.jpg"]
    assert (clean_view["label"], clean_view["defect_type"], clean_view["mask_path"], clean_view["sample_id"]) == (
        0, "good", None, "HSS0003")
    assert sorted({r["sample_id"] for r in rows if r["cls_name"] == "audiojack"}) == ["HSS0003", "OKS0001", "OKS0002"]
    assert sorted(r["view_id"] for r in rows if r["cls_name"] == "audiojack" and r["split"] == "train") == ["C1", "C2"]
    table, last = inspected("realiad", tmp_path, classes=["audiojack", "pcb"])
    assert table == [
        ["audiojack", "train", "2", "0", "0", "0"],
        ["audiojack", "test", "3", "1", "1", "0"],
        ["pcb", "train", "1", "0", "0", "0"],
        ["pcb", "test", "1", "1", "1", "0"],
    ]
    assert last == "ok: 6 test samples in 2 classes"


def test_realiad_missing_files(tmp_path):
    root = make_realiad(tmp_path / "realiad")
    mask = root / "realiad_256/pcb/NG/AK/S0002/pcb_0002_NG_AK_C1_20240101120000.png"
    mask.unlink()
    result = scan_layout("realiad", root, data_cfg("realiad"))
    orphan = next(r for r in result.rows if r["sample_id"] == "AKS0002")
    assert orphan["label"] == 1 and orphan["mask_path"] is None  # kept, without its listed mask ...
    assert [Path(u.path).name for u in result.unpaired] == ["pcb_0002_NG_AK_C1_20240101120000.jpg"]  # ... and reported
    (root / "realiad_256/pcb/OK/S0003/pcb_0003_OK_C1_20240101120000.jpg").unlink()
    with pytest.raises(DatasetError, match="list 1 images that are not under"):
        scan("realiad", root, data_cfg("realiad"))
    with pytest.raises(DatasetError, match="no split folder realiad_jsons_sv/"):
        scan("realiad", root, data_cfg("realiad", split_dir="realiad_jsons_sv"))


def test_realiad_variety_views(tmp_path):
    root = make_realiad(tmp_path / "realiad_variety", views=("C01", "C02", "C03"), image_dir="realiad_1024",
                        nested_jsons=False)
    rows = scan("realiad", root, data_cfg("realiad_variety"))
    assert sorted({r["view_id"] for r in rows}) == ["C01", "C02", "C03"]
    table, _ = inspected("realiad_variety", tmp_path)
    assert table == [
        ["audiojack", "train", "3", "0", "0", "0"],
        ["audiojack", "test", "5", "1", "1", "0"],
        ["pcb", "train", "1", "0", "0", "0"],
        ["pcb", "test", "1", "1", "1", "0"],
    ]


def make_mvtec_ad2(root: Path) -> Path:
    """can: train 2, validation 1 (not read), test_public good 1 + bad 2 (masks), 1 mask without image,
    test_private 2 (not read). walnuts: train 1, test_public bad 1 (mask)."""
    can = root / "can"
    for i in range(2):
        write_image(can / f"train/good/{i:03d}_regular.png", seed=i)
        write_image(can / f"test_private/{i:03d}_regular.png", seed=i)
        write_image(can / f"test_public/bad/{i:03d}_regular.png", seed=10 + i)
        write_mask(can / f"test_public/ground_truth/bad/{i:03d}_regular_mask.png")
    write_image(can / "validation/good/000_regular.png")
    write_image(can / "test_public/good/000_regular.png")
    write_mask(can / "test_public/ground_truth/bad/007_regular_mask.png")
    walnuts = root / "walnuts"
    write_image(walnuts / "train/good/000_regular.png")
    write_image(walnuts / "test_public/bad/000_overexposed.png")
    write_mask(walnuts / "test_public/ground_truth/bad/000_overexposed_mask.png")
    return root


def test_mvtec_ad2_public_test_split(tmp_path):
    root = make_mvtec_ad2(tmp_path / "mvtec_ad2")
    rows = scan("mvtec_ad2", root, data_cfg("mvtec_ad2"))
    assert not [r for r in rows if "test_private" in r["img_path"] or "validation" in r["img_path"]]
    bad = next(r for r in rows if r["img_path"].endswith("walnuts/test_public/bad/000_overexposed.png"))
    assert (bad["label"], bad["defect_type"], bad["split"]) == (1, "bad", "test")
    assert bad["mask_path"].endswith("walnuts/test_public/ground_truth/bad/000_overexposed_mask.png")
    table, last = inspected("mvtec_ad2", tmp_path, classes=["can", "walnuts"])
    assert table == [
        ["can", "train", "2", "0", "0", "0"],
        ["can", "test", "1", "2", "2", "1"],  # ground_truth/bad/007_regular_mask.png has no image
        ["walnuts", "train", "1", "0", "0", "0"],
        ["walnuts", "test", "0", "1", "1", "0"],
    ]
    assert last == "ok: 4 test samples in 2 classes"


LOGICAL_BOXES = [(2, 2, 8, 8), (20, 10, 30, 20)]  # two defects of one image, one mask file each


def make_mvtec_loco(root: Path) -> Path:
    """breakfast_box: train 2, validation 1 (not read), test good 1 + logical 1 (2 masks) + structural 1 (1 mask),
    a ground-truth folder without image (structural 005/). pushpins: train 1, test structural 1 without its folder."""
    box = root / "breakfast_box"
    write_image(box / "train/good/000.png")
    write_image(box / "train/good/001.png", seed=1)
    write_image(box / "validation/good/000.png")
    write_image(box / "test/good/000.png")
    write_image(box / "test/logical_anomalies/000.png")
    for i, rect in enumerate(LOGICAL_BOXES):
        write_mask(box / f"ground_truth/logical_anomalies/000/{i:03d}.png", rect)
    write_image(box / "test/structural_anomalies/000.png")
    write_mask(box / "ground_truth/structural_anomalies/000/000.png")
    write_mask(box / "ground_truth/structural_anomalies/005/000.png")
    pushpins = root / "pushpins"
    write_image(pushpins / "train/good/000.png")
    write_image(pushpins / "test/structural_anomalies/003.png")
    return root


def test_mvtec_loco_types_and_mask_folders(tmp_path):
    root = make_mvtec_loco(tmp_path / "mvtec_loco")
    rows = scan("mvtec_loco", root, data_cfg("mvtec_loco"))
    anomalous = {(r["cls_name"], r["defect_type"]): r for r in rows if r["label"] == 1}
    assert sorted(anomalous) == [("breakfast_box", "logical_anomalies"), ("breakfast_box", "structural_anomalies"),
                                 ("pushpins", "structural_anomalies")]
    logical = anomalous["breakfast_box", "logical_anomalies"]
    assert logical["mask_path"] == str(root / "breakfast_box/ground_truth/logical_anomalies/000")
    assert anomalous["pushpins", "structural_anomalies"]["mask_path"] is None
    merged = np.asarray(read_mask(logical["mask_path"]))  # a folder: its masks merged
    expected = np.zeros_like(merged)
    for left, top, right, bottom in LOGICAL_BOXES:
        expected[top:bottom, left:right] = 255
    assert np.array_equal(merged, expected)
    with pytest.raises(DatasetError, match="have no mask"):  # pushpins' structural image lacks its folder
        inspected("mvtec_loco", tmp_path, classes=["breakfast_box", "pushpins"])
    table, last = inspected("mvtec_loco", tmp_path, classes=["breakfast_box", "pushpins"], missing_mask="image_only")
    assert table == [
        ["breakfast_box", "train", "2", "0", "0", "0"],
        ["breakfast_box", "test", "1", "2", "2", "1"],  # ground_truth/structural_anomalies/005/000.png
        ["pushpins", "train", "1", "0", "0", "0"],
        ["pushpins", "test", "0", "1", "0", "1"],
    ]
    assert last == "ok: 4 test samples in 2 classes"


def test_meta_json_keeps_views_and_reads_folder_masks_as_classification_only(tmp_path):
    root = make_realiad(tmp_path / "realiad")
    rows = scan("realiad", root, data_cfg("realiad"))
    write_meta(rows, root / "meta.json")
    cfg = data_cfg("meta", meta_path=str(root / "meta.json"))
    assert sorted(scan("meta", root, cfg), key=lambda r: r["img_path"]) == sorted(rows, key=lambda r: r["img_path"])
    meta = json.loads((root / "meta.json").read_text())
    for entry in meta["test"]["pcb"]:  # the reference's form: view_id only, sample from the path; a folder mask
        del entry["sample_id"]
        if entry["anomaly"]:
            entry["mask_path"] = Path(entry["mask_path"]).parent.as_posix()  # relative, like the file
    (root / "meta.json").write_text(json.dumps(meta))
    pcb = {r["sample_id"]: r for r in read_meta(root / "meta.json") if r["cls_name"] == "pcb" and r["split"] == "test"}
    assert sorted(pcb) == ["AKS0002", "OKS0003"] and {r["view_id"] for r in pcb.values()} == {"C1"}
    result = scan_layout("meta", root, cfg)
    defective = next(r for r in result.rows if r.get("sample_id") == "AKS0002")
    assert defective["label"] == 1 and defective["mask_path"] is None and not result.unpaired
    assert defective["classification_only"]  # not a missing mask: the default data.missing_mask=error accepts it
    check_missing_masks(result.rows, dataset="meta", pixel_labels=True, policy="error")
    dataset = AnomalyDataset(result.rows, dataset="meta", transform=SampleTransform(32, [0.5] * 3, [0.5] * 3),
                             prompt_names={"pcb": "pcb", "audiojack": "audiojack"}, pixel_labels=True)
    sample = dataset[result.rows.index(defective)]
    assert sample["label"] == 1 and not sample["has_mask"] and sample["view_id"] == "C1"


def test_few_shot_per_class_and_view_reproduces_the_reference_draws(tmp_path):
    rows = [
        {"img_path": f"/d/cls/OK/S{s:04d}/cls_{s:04d}_OK_{v}_t.jpg", "mask_path": None, "label": 0, "cls_name": "cls",
         "defect_type": "good", "split": "train", "view_id": v, "sample_id": f"OKS{s:04d}"}
        for s in range(1, 8) for v in ("C2", "C1")
    ]
    pools = view_prompt_pools(rows, "cls", "realiad")
    assert list(pools) == ["C1", "C2"] and all(len(pool) == 7 for pool in pools.values())
    draws = draw_view_prompts(pools, shots=4, seed=20)
    for view in ("C1", "C2"):  # the reference: torch.manual_seed(seed) before each (class, view), then randint
        torch.manual_seed(20)
        expected = torch.randint(7, (4,)).tolist()
        assert [pools[view].index(row) for row in draws[view]] == expected
        assert {row["view_id"] for row in draws[view]} == {view}
    write_prompt_list(tmp_path / "realiad_4shot_seed20_prompts.txt", {"cls": draws})
    lines = (tmp_path / "realiad_4shot_seed20_prompts.txt").read_text().splitlines()
    assert lines == [row["img_path"] for row in draws["C1"] + draws["C2"]]
    del rows[0]["view_id"]
    with pytest.raises(DatasetError, match="view_id"):
        view_prompt_pools(rows, "cls", "realiad")
