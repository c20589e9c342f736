"""Scanners on tiny fixture trees in every layout: exact counts, labels, image/mask pairs, unpaired files."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf
from test_data_fixtures import (
    KSDD_SIZE,
    make_btad,
    make_clinicdb,
    make_colondb,
    make_dagm,
    make_folder,
    make_headct,
    make_isic,
    make_ksdd,
    make_mvtec,
    make_tn3k,
    make_visa,
    make_yes_no,
    write_image,
    write_mask,
)

from clipad.data.catalog import dataset_names, load_dataset_config, prompt_name
from clipad.data.meta_json import read_meta, write_meta
from clipad.data.scanners import SCANNERS, DatasetError, scan, scan_layout
from clipad.data.scanners.ksdd import band_boxes
from clipad.data.scanners.selection import run_classes, select_rows

PAPER_DATASETS = ["mvtec", "visa", "mpdd", "btad", "dtd", "ksdd", "dagm", "headct", "brainmri", "br35h", "isic",
                  "clinicdb", "colondb", "tn3k"]


def config(name: str, **overrides) -> DictConfig:
    cfg = load_dataset_config(name)
    return OmegaConf.merge(cfg, overrides) if overrides else cfg


def summary(rows) -> set[tuple]:
    """(class, split, image file, label, mask file or None, crop or None) per row, by file name."""
    return {
        (r["cls_name"], r["split"], Path(r["img_path"]).name, r["label"],
         Path(r["mask_path"]).name if r["mask_path"] else None, r.get("crop"))
        for r in rows
    }


def unpaired_names(result) -> set[str]:
    return {Path(u.path).name for u in result.unpaired}


@pytest.mark.parametrize("name", [*PAPER_DATASETS, "folder", "meta"])
def test_every_config_carries_the_facts(name):
    cfg = load_dataset_config(name)
    assert cfg.name == name
    assert cfg.layout in SCANNERS
    for key in ("domain", "dirname", "all_classes", "readable_names", "url", "licence", "expected_layout",
                "pixel_labels", "mask_rule"):
        assert key in cfg, f"conf/data/{name}.yaml lacks {key}"
    if name in PAPER_DATASETS:
        assert cfg.domain in ("industrial", "medical") and cfg.url and cfg.all_classes
    assert {"classes", "class_names", "skip_bad", "missing_mask"} <= set(cfg)  # from _common.yaml


def test_paper_dataset_configs_exist():
    assert set(PAPER_DATASETS) | {"folder", "meta"} <= set(dataset_names())


def test_prompt_names_faithful_by_default_readable_as_option():
    assert prompt_name(config("mvtec"), "metal_nut") == "metal_nut"
    assert prompt_name(config("mvtec", class_names="readable"), "metal_nut") == "metal nut"
    assert prompt_name(config("visa", class_names="readable"), "pcb1") == "printed circuit board"
    assert prompt_name(config("folder"), "my-part") == "my part"  # only "-" replaced, as the references do
    with pytest.raises(ValueError, match="faithful or readable"):
        prompt_name(config("mvtec", class_names="pretty"), "bottle")


def test_mvtec(tmp_path):
    result = scan_layout("mvtec", make_mvtec(tmp_path / "mvtec", missing_mask=True), config("mvtec"))
    assert summary(result.rows) == {
        ("bottle", "train", "000.png", 0, None, None),
        ("bottle", "train", "001.png", 0, None, None),
        ("bottle", "test", "000.png", 0, None, None),
        ("bottle", "test", "000.png", 1, "000_mask.png", None),
        ("bottle", "test", "001.png", 1, "001_mask.png", None),
        ("bottle", "test", "002.png", 1, None, None),
        ("screw", "train", "000.bmp", 0, None, None),
        ("screw", "test", "000.tif", 0, None, None),
        ("screw", "test", "000.JPG", 1, "000_mask.PNG", None),
    }
    assert len(result.rows) == 9
    assert unpaired_names(result) == {"009_mask.png", "000_mask.png"}
    defects = {r["defect_type"] for r in result.rows if r["label"] == 1}
    assert defects == {"broken_large", "scratch_head"}
    assert {r["defect_type"] for r in result.rows if r["label"] == 0} == {"good"}


def test_folder_and_extension_case_variants(tmp_path):
    root = make_mvtec(tmp_path / "mvtec")
    (root / "bottle/train").rename(root / "bottle/Train")
    (root / "bottle/ground_truth").rename(root / "bottle/Ground_Truth")
    (root / "bottle/Ground_Truth/broken_large").rename(root / "bottle/Ground_Truth/Broken_Large")
    rows = scan("mvtec", root, config("mvtec"))
    assert summary(rows) >= {
        ("bottle", "train", "000.png", 0, None, None),
        ("bottle", "test", "000.png", 1, "000_mask.png", None),
        ("screw", "test", "000.JPG", 1, "000_mask.PNG", None),
    }
    assert len(rows) == 8


@pytest.mark.parametrize("name", ["mpdd", "dtd"])
def test_mvtec_layout_datasets(tmp_path, name):
    root = make_mvtec(tmp_path / name)
    assert len(scan(load_dataset_config(name).layout, root, config(name))) == 8


def test_btad(tmp_path):
    rows = scan("btad", make_btad(tmp_path / "btad"), config("btad"))
    assert summary(rows) == {
        ("01", "train", "0000.bmp", 0, None, None),
        ("01", "test", "0001.bmp", 0, None, None),
        ("01", "test", "0002.bmp", 1, "0002.png", None),
        ("03", "train", "0000.png", 0, None, None),
        ("03", "test", "0001.png", 1, "0001.bmp", None),
    }


def test_visa_reads_the_split_file(tmp_path):
    result = scan_layout("visa", make_visa(tmp_path / "visa"), config("visa"))
    assert summary(result.rows) == {
        ("candle", "train", "0000.JPG", 0, None, None),
        ("candle", "train", "0001.JPG", 0, None, None),
        ("candle", "test", "0002.jpg", 0, None, None),  # the file lists .JPG, the disk has .jpg
        ("candle", "test", "000.JPG", 1, "000.png", None),
        ("candle", "test", "001.JPG", 1, "001.png", None),
    }
    assert unpaired_names(result) == {"005.png"}


def test_visa_without_split_file_is_an_error(tmp_path):
    root = make_visa(tmp_path / "visa")
    (root / "split_csv/1cls.csv").unlink()
    with pytest.raises(DatasetError, match="1cls.csv") as error:
        scan("visa", root, config("visa"))
    assert "spot-diff" in str(error.value)  # where it is published


def test_visa_split_file_naming_missing_images_is_an_error(tmp_path):
    root = make_visa(tmp_path / "visa")
    (root / "candle/Data/Images/Anomaly/001.JPG").unlink()
    with pytest.raises(DatasetError, match="1 images that are not under"):
        scan("visa", root, config("visa"))


def test_ksdd_bands(tmp_path):
    root = make_ksdd(tmp_path / "ksdd")
    rows = scan("ksdd", root, config("ksdd"))
    assert len(rows) == 9
    anomalous = [r for r in rows if r["label"] == 1]
    assert [(Path(r["img_path"]).parent.name, Path(r["img_path"]).name, r["crop"], r["split"]) for r in anomalous] == [
        ("kos01", "Part0.jpg", (0, 32, 16, 48), "test")
    ]
    normal = [r for r in rows if r["label"] == 0]
    assert sum(r["split"] == "test" for r in normal) == 2  # ceil(25 % of 8)
    assert sum(r["split"] == "train" for r in normal) == 6
    assert all(r["cls_name"] == "SDD" and r["mask_path"] for r in rows)
    assert scan("ksdd", root, config("ksdd")) == rows  # the split is seeded


def test_ksdd_band_split_is_scikit_learns(tmp_path):
    from sklearn.model_selection import train_test_split

    for i in range(4):  # 8 images = 24 bands, 22 of them normal
        write_image(tmp_path / f"ksdd/kos{i:02d}/Part0.jpg", "gray", KSDD_SIZE, seed=i)
        write_mask(tmp_path / f"ksdd/kos{i:02d}/Part0_label.bmp", (0, 0, 4, 4) if i == 0 else None, KSDD_SIZE)
        write_image(tmp_path / f"ksdd/kos{i:02d}/Part1.jpg", "gray", KSDD_SIZE, seed=10 + i)
        write_mask(tmp_path / f"ksdd/kos{i:02d}/Part1_label.bmp", (0, 20, 4, 24) if i == 1 else None, KSDD_SIZE)
    rows = scan("ksdd", tmp_path / "ksdd", config("ksdd"))
    normal = [(r["img_path"], r["crop"]) for r in rows if r["label"] == 0]
    assert len(normal) == 22
    train, test = train_test_split(sorted(normal), test_size=0.25, random_state=42)  # the reference's call
    assert {(r["img_path"], r["crop"]) for r in rows if r["label"] == 0 and r["split"] == "test"} == set(test)
    assert {(r["img_path"], r["crop"]) for r in rows if r["split"] == "train"} == set(train)


def test_ksdd_whole_images(tmp_path):
    rows = scan("ksdd", make_ksdd(tmp_path / "ksdd"), config("ksdd", ksdd_bands=False))
    assert sorted((Path(r["img_path"]).parent.name, Path(r["img_path"]).name, r["label"], r["split"]) for r in rows) == [
        ("kos01", "Part0.jpg", 1, "test"), ("kos01", "Part1.jpg", 0, "test"), ("kos02", "Part0.jpg", 0, "test")
    ]
    assert all("crop" not in r for r in rows)


def test_band_boxes_slice_as_the_reference():
    assert band_boxes(*KSDD_SIZE) == [(0, 0, 16, 16), (0, 16, 16, 32), (0, 32, 16, 48)]
    assert band_boxes(10, 50) == [(0, 0, 10, 16), (0, 16, 10, 33), (0, 33, 10, 50)]


def test_dagm_adaclip_split(tmp_path):
    result = scan_layout("dagm", make_dagm(tmp_path / "dagm"), config("dagm"))
    assert summary(result.rows) == {
        ("Class1", "test", "0002.PNG", 1, "0002_label.PNG", None),
        ("Class1", "test", "0001.PNG", 0, None, None),  # as many normals as defects, first in file order
        ("Class1", "train", "0003.PNG", 0, None, None),
        ("Class1", "train", "0004.PNG", 0, None, None),
        ("Class1", "test", "0006.PNG", 1, "0006_label.PNG", None),
        ("Class1", "test", "0005.PNG", 0, None, None),
    }
    assert unpaired_names(result) == {"0099_label.PNG"}


def test_dagm_folder_split(tmp_path):
    rows = scan("dagm", make_dagm(tmp_path / "dagm"), config("dagm", dagm_split="folders"))
    assert sorted((r["split"], Path(r["img_path"]).name, r["label"]) for r in rows) == [
        ("test", "0005.PNG", 0), ("test", "0006.PNG", 1),
        ("train", "0001.PNG", 0), ("train", "0002.PNG", 1), ("train", "0003.PNG", 0), ("train", "0004.PNG", 0),
    ]


def test_dagm_labels_txt_flags_defects_without_mask(tmp_path):
    root = make_dagm(tmp_path / "dagm")
    (root / "Class1/Train/Label/0002_label.PNG").unlink()
    rows = scan("dagm", root, config("dagm"))
    flagged = [r for r in rows if Path(r["img_path"]).name == "0002.PNG"]
    assert [(r["label"], r["mask_path"]) for r in flagged] == [(1, None)]


def test_headct(tmp_path):
    result = scan_layout("headct", make_headct(tmp_path / "headct"), config("headct"))
    assert summary(result.rows) == {
        ("brain", "test", "000.png", 0, None, None),
        ("brain", "test", "001.png", 1, None, None),
        ("brain", "test", "002.png", 0, None, None),
        ("brain", "test", "003.png", 1, None, None),
    }
    assert unpaired_names(result) == {"999.png"}


def test_headct_labels_without_images_is_an_error(tmp_path):
    root = make_headct(tmp_path / "headct")
    (root / "head_ct/head_ct/003.png").unlink()
    with pytest.raises(DatasetError, match=r"ids \[3\]"):
        scan("headct", root, config("headct"))


@pytest.mark.parametrize(("name", "nested"), [("brainmri", True), ("br35h", False)])
def test_yes_no_folders(tmp_path, name, nested):
    rows = scan(name, make_yes_no(tmp_path / name, nested=nested), config(name))
    assert summary(rows) == {
        ("brain", "test", "1 no.jpeg", 0, None, None),
        ("brain", "test", "N2.JPG", 0, None, None),
        ("brain", "test", "Y1.jpg", 1, None, None),
        ("brain", "test", "Y2.png", 1, None, None),
        ("brain", "test", "Y3.jpg", 1, None, None),
    }


def test_isic_labels_from_masks(tmp_path):
    result = scan_layout("isic", make_isic(tmp_path / "isic"), config("isic"))
    assert summary(result.rows) == {
        ("skin", "test", "ISIC_0000001.jpg", 1, "ISIC_0000001_Segmentation.png", None),
        ("skin", "test", "ISIC_0000002.jpg", 0, "ISIC_0000002_Segmentation.png", None),  # empty mask
    }
    assert unpaired_names(result) == {"ISIC_0000003.jpg"}


def test_clinicdb_tif_one_level_down(tmp_path):
    rows = scan("clinicdb", make_clinicdb(tmp_path / "clinicdb"), config("clinicdb"))
    assert summary(rows) == {("colon", "test", "1.tif", 1, "1.tif", None), ("colon", "test", "2.tif", 1, "2.tif", None)}


def test_clinicdb_without_ground_truth_is_an_error(tmp_path):
    root = make_clinicdb(tmp_path / "clinicdb")
    for mask in (root / "CVC-ClinicDB/Ground Truth").iterdir():
        mask.unlink()
    (root / "CVC-ClinicDB/Ground Truth").rmdir()
    with pytest.raises(DatasetError, match="Ground Truth"):
        scan("clinicdb", root, config("clinicdb"))


def test_colondb(tmp_path):
    rows = scan("colondb", make_colondb(tmp_path / "colondb"), config("colondb"))
    assert summary(rows) == {("colon", "test", "1.png", 1, "1.png", None)}


def test_tn3k_jpeg_masks(tmp_path):
    root = make_tn3k(tmp_path / "tn3k")
    labels = {Path(r["img_path"]).name: r["label"] for r in scan("tn3k", root, config("tn3k"))}
    assert labels == {"0000.jpg": 1, "0001.jpg": 0}  # auto: JPEG masks thresholded at half range
    strict = {Path(r["img_path"]).name: r["label"] for r in scan("tn3k", root, config("tn3k", mask_rule="nonzero"))}
    assert strict == {"0000.jpg": 1, "0001.jpg": 1}  # the AdaCLIP reference's rule: any value > 0


def test_folder(tmp_path):
    root = make_folder(tmp_path / "screws")
    result = scan_layout("folder", root, config("folder", root=str(root)))
    assert summary(result.rows) == {
        ("screws", "test", "a.png", 0, None, None),
        ("screws", "test", "b.jpg", 0, None, None),
        ("screws", "test", "c.png", 1, "c_mask.png", None),
        ("screws", "test", "d.png", 1, None, None),
        ("screws", "train", "e.png", 0, None, None),
    }
    assert unpaired_names(result) == {"z.png"}
    named = scan("folder", root, config("folder", root=str(root), class_name="screw"))
    assert {r["cls_name"] for r in named} == {"screw"}


def test_folder_with_one_subfolder_per_class(tmp_path):
    make_folder(tmp_path / "mine/nut")
    make_folder(tmp_path / "mine/bolt")
    rows = scan("folder", tmp_path / "mine", config("folder"))
    assert {r["cls_name"] for r in rows} == {"bolt", "nut"} and len(rows) == 10


def test_meta_json_round_trip(tmp_path):
    rows = scan("mvtec", make_mvtec(tmp_path / "mvtec", missing_mask=True), config("mvtec"))
    rows += scan("ksdd", make_ksdd(tmp_path / "mvtec/ksdd"), config("ksdd"))  # crop boxes survive too
    meta_path = tmp_path / "mvtec/meta.json"
    write_meta(rows, meta_path)
    text = meta_path.read_text()
    assert str(tmp_path) not in text  # paths are relative to the meta file's folder
    assert '"mask_path": ""' in text and '"specie_name": "broken_large"' in text
    key = lambda r: (r["img_path"], r["split"], r.get("crop", ()))
    assert sorted(read_meta(meta_path), key=key) == sorted(rows, key=key)
    via_layout = scan("meta", meta_path.parent, config("meta", meta_path=str(meta_path)))
    assert sorted(via_layout, key=key) == sorted(rows, key=key)


def test_meta_reads_the_reference_format(tmp_path):
    write_image(tmp_path / "bottle/test/broken/000.png")
    write_mask(tmp_path / "bottle/ground_truth/broken/000_mask.png")
    row = {"img_path": "bottle/test/broken/000.png", "mask_path": "bottle/ground_truth/broken/000_mask.png",
           "cls_name": "bottle", "specie_name": "broken", "anomaly": 1}
    (tmp_path / "meta.json").write_text(f'{{"train": {{}}, "test": {{"bottle": [{__import__("json").dumps(row)}]}}}}')
    rows = scan("meta", tmp_path, config("meta", meta_path=str(tmp_path / "meta.json")))
    assert rows == [{"img_path": str(tmp_path / row["img_path"]), "mask_path": str(tmp_path / row["mask_path"]),
                     "label": 1, "cls_name": "bottle", "defect_type": "broken", "split": "test"}]


def test_meta_errors_name_the_file(tmp_path):
    bad = tmp_path / "meta.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_meta(bad)
    bad.write_text('{"test": {"x": [{"img_path": "a.png"}]}}')
    with pytest.raises(DatasetError, match="test/x row 0 is malformed"):
        read_meta(bad)
    bad.write_text('{"test": {"x": [{"img_path": "a.png", "mask_path": "", "anomaly": 0}]}}')
    with pytest.raises(DatasetError, match="1 images that do not exist"):
        scan("meta", tmp_path, config("meta", meta_path=str(bad)))


def test_synthetic_layout_generates_then_reads_mvtec(tmp_path, monkeypatch):
    from clipad.data import synthetic

    calls = []

    def fake_ensure(root: Path, seed: int = 0) -> Path:
        calls.append((root, seed))
        return make_mvtec(root)

    monkeypatch.setattr(synthetic, "ensure_synthetic", fake_ensure)
    rows = scan("synthetic", tmp_path / "synthetic", OmegaConf.create({"name": "synthetic", "seed": 3}))
    assert calls == [(tmp_path / "synthetic", 3)] and len(rows) == 8


# -- errors that say what exists, the expected layout and where the dataset is published -------------------
def test_missing_root(tmp_path):
    (tmp_path / "visa").mkdir()
    with pytest.raises(DatasetError) as error:
        scan("mvtec", tmp_path / "mvtec", config("mvtec"))
    message = str(error.value)
    assert f"{tmp_path / 'mvtec'} does not exist" in message
    assert "['visa']" in message  # what the data dir holds
    assert "<root>/<class>/train/good/*.png" in message and "mvtec.com" in message
    assert "paths.data_dir" in message


def test_root_without_images(tmp_path):
    (tmp_path / "mvtec/readme").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"no images of dataset 'mvtec' found .*\['readme'\]"):
        scan("mvtec", tmp_path / "mvtec", config("mvtec"))


def test_unknown_class(tmp_path):
    root = make_mvtec(tmp_path / "mvtec")
    rows = scan("mvtec", root, config("mvtec"))
    with pytest.raises(DatasetError, match=r"(?s)unknown class\(es\) \['bottel'\].*'bottle'.*mvtec.com"):
        run_classes(config("mvtec", classes=["bottel"]), rows, root)


def test_class_without_images(tmp_path):
    root = make_mvtec(tmp_path / "mvtec")
    rows = scan("mvtec", root, config("mvtec"))
    with pytest.raises(DatasetError) as error:
        run_classes(config("mvtec"), rows, root)  # all 15 classes expected, 2 on disk
    message = str(error.value)
    assert "'cable'" in message and "classes found there: ['bottle', 'screw']" in message
    assert "data.classes=[bottle,screw]" in message and "mvtec.com" in message
    assert run_classes(config("mvtec", classes=["screw", "bottle"]), rows, root) == ["screw", "bottle"]


def test_empty_split(tmp_path):
    root = make_mvtec(tmp_path / "mvtec")
    for image in (root / "screw/train/good").iterdir():
        image.unlink()
    rows = scan("mvtec", root, config("mvtec"))
    cfg = config("mvtec", classes=["bottle", "screw"])
    with pytest.raises(DatasetError, match=r"\['screw'\] .* no 'train' images .*'screw': \{'test': 2\}"):
        select_rows(cfg, rows, "train", root)
    chosen = select_rows(cfg, rows, "test", root)
    assert [r["cls_name"] for r in chosen] == ["bottle"] * 3 + ["screw"] * 2  # ordered by class, then path
