"""Issue 13, the input cases: each bad image, mask or dataset root is a clear error or a counted fallback.

Cases 1 (truncated files), 2 (inspect decodes), 3 (EXIF orientation), 4 (empty mask of an anomalous image),
5 (mask over half its image), 9 (predict on a dataset root), 11 (empty class folder), 13 (root is a file),
17 (every dataset checked before training), and the rule that every fallback is counted.
"""
from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from test_data_fixtures import make_class_tree, make_mvtec, write_image, write_mask

from clipad.cli.hydra_setup import compose_config
from clipad.cli.predict_inputs import list_input_images
from clipad.cli.train import train
from clipad.data.bad_inputs import BadInput, BadInputLog, read_bad_inputs
from clipad.data.catalog import DatasetError, load_dataset_config
from clipad.data.datamodule import AnomalyDataModule
from clipad.data.image_io import ImageReadError, image_size, read_mask, read_rgb
from clipad.data.input_check import check_rows
from clipad.data.inspect import inspect_dataset
from clipad.data.scanners import scan

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def folder_tree(root: Path, n_normal: int = 2, n_abnormal: int = 2, size: tuple[int, int] = (40, 32)) -> Path:
    """data=folder: normal/, abnormal/ and masks/ (<stem>_mask.png, a small box each)."""
    for i in range(n_normal):
        write_image(root / f"normal/n{i}.png", size=size, seed=i)
    for i in range(n_abnormal):
        write_image(root / f"abnormal/a{i}.png", size=size, seed=10 + i)
        write_mask(root / f"masks/a{i}_mask.png", (4, 4, 12, 12), size)
    return root


def folder_datamodule(root: Path, output_dir: Path | None = None, **data_changes) -> AnomalyDataModule:
    data = OmegaConf.merge(load_dataset_config("folder"), {"root": str(root), "val": "none", "train": [],
                                                           "num_workers": 0, **data_changes})
    cfg = OmegaConf.create({
        "data": data,
        "paths": {"data_dir": str(root.parent), "output_dir": str(output_dir) if output_dir else None},
        "backbone": {"image_size": 32, "mean": MEAN, "std": STD},
        "model": {"batch_size": 4},
        "shots": 0,
        "few_shot_seed": 0,
    })
    return AnomalyDataModule.from_config(cfg)


def inspect_cfg(data_dir: Path, name: str = "mvtec", decode: bool = True, **data_changes):
    data = OmegaConf.merge(load_dataset_config(name), data_changes)
    return OmegaConf.create({"data": data, "paths": {"data_dir": str(data_dir)}, "decode": decode})


# -- case 1: truncated files ------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file_is_unreadable_not_half_grey(tmp_path, suffix):
    path = truncate(write_image(tmp_path / f"t{suffix}", size=(64, 64)))
    with pytest.raises(ImageReadError, match=rf"t\{suffix}.*truncated.*data.skip_bad=true"):
        read_rgb(path)
    with pytest.raises(ImageReadError, match=rf"t\{suffix}"):
        read_mask(path)


def test_truncated_image_is_skipped_and_counted_with_skip_bad(tmp_path):
    root = folder_tree(tmp_path / "user")
    truncate(root / "abnormal/a1.png")
    with pytest.raises(ImageReadError, match="a1.png.*1 unreadable file"):
        folder_datamodule(root).check_inputs()
    out = tmp_path / "run"
    dm = folder_datamodule(root, out, skip_bad=True)
    dm.check_inputs()
    dm.setup("test")
    assert len(dm.test_set) == 3
    assert [(e.kind, Path(e.file).name, e.dataset) for e in read_bad_inputs(out / "bad_inputs.csv")] == [
        ("unreadable", "a1.png", "folder")
    ]
    assert dm.bad_inputs.summary().startswith("bad inputs: 1 unreadable skipped (see ")


def test_unidentifiable_tiff_still_falls_back_to_opencv(tmp_path, monkeypatch):
    """OpenCV stays the fallback for files Pillow cannot identify (simulated: Pillow refuses every file)."""
    import clipad.data.image_io as image_io

    path = write_image(tmp_path / "x.tif", seed=2)
    expected = np.asarray(Image.open(path).convert("RGB"))

    def refuse(*args, **kwargs):
        raise image_io.UnidentifiedImageError("cannot identify image file")

    monkeypatch.setattr(image_io.Image, "open", refuse)
    assert np.array_equal(np.asarray(read_rgb(path)), expected)


# -- case 3: EXIF orientation -----------------------------------------------------------------------------
def test_exif_orientation_applies_to_image_mask_and_size(tmp_path):
    """A JPEG stored sideways with 'rotate 90' (orientation 6) and a PNG mask drawn on the view people see."""
    width, height = 48, 24  # the oriented (viewed) size: non-square, so a wrong reading changes the size
    view = np.zeros((height, width, 3), np.uint8)
    view[4:12, 30:44] = 255  # the defect, top right of the view
    stored = Image.fromarray(view).transpose(Image.Transpose.ROTATE_90)  # as a camera stores it: sideways
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers rotate 90 degrees clockwise
    root = tmp_path / "user"
    (root / "abnormal").mkdir(parents=True)
    (root / "normal").mkdir()
    stored.save(root / "abnormal/a0.jpg", quality=95, exif=exif)
    assert Image.open(root / "abnormal/a0.jpg").size == (height, width)  # stored sideways
    write_image(root / "normal/n0.png", size=(width, height))
    mask_view = Image.fromarray(np.where(view[..., 0] > 0, 255, 0).astype(np.uint8), "L")
    (root / "masks").mkdir()
    mask_view.transpose(Image.Transpose.ROTATE_90).save(root / "masks/a0_mask.png", exif=exif)  # sideways too

    assert image_size(root / "abnormal/a0.jpg") == (width, height)
    dm = folder_datamodule(root)
    dm.check_inputs()
    assert dm.bad_inputs.entries == []  # no "mask resized": image and mask have the same oriented size
    dm.setup("test")
    dataset = dm.test_set.datasets[0]
    row = next(r for r in dataset.rows if r["label"] == 1)
    image, mask = dataset.load(row)
    assert image.size == mask.size == (width, height)
    bright, marked = np.asarray(image).mean(axis=2) > 127, np.asarray(mask) > 127
    assert marked.sum() == 14 * 8
    assert (bright == marked).mean() > 0.99  # JPEG blurs a few edge pixels


# -- cases 4 and 5: suspicious masks ----------------------------------------------------------------------
def test_empty_mask_of_anomalous_image_is_counted_or_an_error(tmp_path):
    root = folder_tree(tmp_path / "user")
    write_mask(root / "masks/a1_mask.png", None)  # all zero
    out = tmp_path / "run"
    dm = folder_datamodule(root, out)
    dm.check_inputs()
    [entry] = read_bad_inputs(out / "bad_inputs.csv")
    assert (entry.kind, Path(entry.file).name) == ("empty_mask", "a1_mask.png") and "a1.png" in entry.detail
    assert "1 empty mask (anomalous image)" in dm.bad_inputs.summary()
    with pytest.raises(DatasetError, match=r"a1_mask.png.*data.empty_mask=warn"):
        folder_datamodule(root, empty_mask="error").check_inputs()


def test_mask_over_half_of_its_image_is_counted_or_an_error(tmp_path):
    root = folder_tree(tmp_path / "user")
    write_mask(root / "masks/a0_mask.png", (0, 0, 40, 20))  # 62.5 % of 40x32: likely inverted
    dm = folder_datamodule(root)
    dm.check_inputs()
    [entry] = dm.bad_inputs.entries
    assert (entry.kind, Path(entry.file).name) == ("large_mask", "a0_mask.png") and "62%" in entry.detail
    with pytest.raises(DatasetError, match=r"a0_mask.png.*inverted.*data.large_mask=warn"):
        folder_datamodule(root, large_mask="error").check_inputs()
    with pytest.raises(DatasetError, match="data.large_mask='maybe'"):
        folder_datamodule(root, large_mask="maybe").check_inputs()


def test_mask_of_another_size_is_counted(tmp_path):
    root = folder_tree(tmp_path / "user")
    write_mask(root / "masks/a0_mask.png", (8, 8, 24, 24), (80, 64))
    dm = folder_datamodule(root)
    dm.check_inputs()
    [entry] = dm.bad_inputs.entries
    assert entry.kind == "mask_resized" and "mask 80x64" in entry.detail and "40x32" in entry.detail


def test_pool_and_inline_decoding_agree(tmp_path):
    """More files than POOL_MIN_FILES go through the worker processes: same findings as in-process."""
    root = folder_tree(tmp_path / "user", n_normal=40, n_abnormal=30, size=(16, 16))
    truncate(root / "normal/n3.png")
    write_mask(root / "masks/a2_mask.png", None, (16, 16))
    rows = scan("folder", root, OmegaConf.create({"name": "folder"}))
    pooled = check_rows(rows, dataset="folder", workers=2)
    inline = check_rows(rows, dataset="folder", workers=0)
    assert pooled.findings == inline.findings
    assert sorted((f.kind, Path(f.file).name) for f in pooled.findings) == [
        ("empty_mask", "a2_mask.png"), ("unreadable", "n3.png")]


# -- the counting rule ------------------------------------------------------------------------------------
def test_log_writes_each_entry_once_and_stores_counts_in_run_info(tmp_path):
    (tmp_path / "run_info.json").write_text(json.dumps({"git_commit": "abc"}))
    log = BadInputLog(tmp_path)
    entry = BadInput("mask_resized", "m.png", "mvtec", "bottle", "mask 2x2")
    assert log.record([entry, entry]) == [entry]
    log.record([entry, BadInput("unreadable", "x.png", "mvtec", "bottle", "truncated")])
    assert read_bad_inputs(tmp_path / "bad_inputs.csv") == [entry, BadInput("unreadable", "x.png", "mvtec",
                                                                                 "bottle", "truncated")]
    lines: list[str] = []
    log.finish(emit=lines.append)
    assert lines == [f"bad inputs: 1 unreadable skipped, 1 mask resized (see {tmp_path / 'bad_inputs.csv'})"]
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info == {"git_commit": "abc", "bad_inputs": {"unreadable": 1, "mask_resized": 1}}
    with pytest.raises(ValueError, match="unknown bad-input kind"):
        BadInput("odd", "x.png")


# -- case 2 and 11, 13: inspect -----------------------------------------------------------------------------
def test_inspect_decodes_and_does_not_say_ok_for_unreadable_files(tmp_path):
    make_mvtec(tmp_path / "mvtec")
    truncate(write_image(tmp_path / "mvtec/bottle/test/good/001.png", size=(64, 64)))
    (tmp_path / "mvtec/screw/test/good/002.jpg").write_bytes(b"")  # zero bytes
    lines: list[str] = []
    with pytest.raises(ImageReadError, match="2 unreadable file"):
        inspect_dataset(inspect_cfg(tmp_path, classes=["bottle", "screw"]), emit=lines.append)
    text = "\n".join(lines)
    assert "class bottle: 1 unreadable" in text and "class screw: 1 unreadable" in text
    assert "001.png" in text and "002.jpg" in text and not any(line.startswith("ok") for line in lines)

    lines.clear()
    inspect_dataset(inspect_cfg(tmp_path, classes=["bottle", "screw"], skip_bad=True), emit=lines.append)
    assert lines[-1].startswith("usable with data.skip_bad=true: 5 test samples in 2 classes; 2 unreadable")

    lines.clear()  # decode=false: today's listing, which cannot see inside the files
    inspect_dataset(inspect_cfg(tmp_path, decode=False, classes=["bottle", "screw"]), emit=lines.append)
    assert lines[-1] == "ok: 7 test samples in 2 classes (files not decoded: decode=false)"


def test_inspect_reports_size_mismatch_and_empty_masks_per_class(tmp_path):
    make_class_tree(tmp_path / "mvtec", "bottle", 1, 1, 2)
    write_mask(tmp_path / "mvtec/bottle/ground_truth/defect/000_mask.png", (0, 0, 8, 8), (80, 64))
    write_mask(tmp_path / "mvtec/bottle/ground_truth/defect/001_mask.png", None)
    lines: list[str] = []
    inspect_dataset(inspect_cfg(tmp_path, classes=["bottle"]), emit=lines.append)
    assert "class bottle: 1 image/mask size mismatch, 1 empty mask (anomalous image)" in lines
    assert lines[-1] == ("ok with warnings: 3 test samples in 1 classes; 1 image/mask size mismatch, "
                         "1 empty mask (anomalous image)")


def test_empty_class_folder_is_named(tmp_path):
    root = tmp_path / "user"
    folder_tree(root / "cable")
    (root / "empty_cls/normal").mkdir(parents=True)
    lines: list[str] = []
    inspect_dataset(inspect_cfg(tmp_path, "folder", root=str(root)), emit=lines.append)
    assert f"class empty_cls: no images (folder {root / 'empty_cls'})" in lines
    with pytest.raises(DatasetError, match=r"empty_cls'\] exist but hold no images.*\['cable'\]"):
        inspect_dataset(inspect_cfg(tmp_path, "folder", root=str(root), classes=["empty_cls"]), emit=lines.append)


def test_data_root_that_is_a_file_says_so(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"notes.txt is a file, not a folder. Point data.root"):
        inspect_dataset(inspect_cfg(tmp_path, "folder", root=str(tmp_path / "notes.txt")))
    (tmp_path / "datafile").write_text("x")  # paths.data_dir is a file
    with pytest.raises(DatasetError, match=r"datafile is a file"):
        inspect_dataset(inspect_cfg(tmp_path / "datafile"))


# -- case 9: predict on a dataset root -------------------------------------------------------------------
def test_predict_listing_leaves_out_mask_folders_and_says_why(tmp_path):
    make_mvtec(tmp_path / "mvtec")
    write_image(tmp_path / "ksdd/kos01/Part0.jpg")
    write_mask(tmp_path / "ksdd/kos01/Part0_label.bmp")
    listing = list_input_images(str(tmp_path))
    assert not any("ground_truth" in str(p) or "_label" in p.name for p in listing.paths)
    assert len(listing.paths) == 10  # every image of both trees (and a macOS ._ copy, as before)
    reasons = {p.relative_to(tmp_path).as_posix(): r for p, r in listing.skipped}
    assert reasons["mvtec/bottle/ground_truth/broken_large/000_mask.png"] == "in a mask folder (ground_truth/)"
    assert reasons["ksdd/kos01/Part0_label.bmp"] == "a mask beside its image (_label file name)"
    assert len(reasons) == 6
    inside = list_input_images(str(tmp_path / "mvtec/bottle/ground_truth"))  # masks asked for by name: scored
    assert len(inside.paths) == 3 and not inside.skipped


# -- case 17: every dataset is checked before training ---------------------------------------------------
def fail_fit(*args, **kwargs):
    raise AssertionError("training started although the inputs are bad")


def train_cfg(tmp_path: Path, *extra: str):
    for cls in load_dataset_config("mvtec").all_classes:  # training data: a tiny complete MVTec tree
        make_class_tree(tmp_path / "data/mvtec", cls, 1, 1, 1, size=(16, 16))
    return compose_config("train", [
        "experiment=demo", "backbone.image_size=112", "model.max_epochs=1", "~callbacks.progress",
        "compare_untrained=false", "data.train=[mvtec]", "data.val=none", f"paths.data_dir={tmp_path / 'data'}",
        f"paths.output_dir={tmp_path / 'run'}", *extra,
    ])


def test_corrupt_test_image_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(L.Trainer, "fit", fail_fit)
    root = folder_tree(tmp_path / "user")
    truncate(root / "normal/n1.png")
    with pytest.raises(ImageReadError, match="n1.png"):
        train(train_cfg(tmp_path, "data=folder", f"data.root={root}"))
    assert not (tmp_path / "run/checkpoints").exists()


def test_missing_second_test_root_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(L.Trainer, "fit", fail_fit)
    root = folder_tree(tmp_path / "user")
    with pytest.raises(DatasetError, match=r"btad does not exist"):
        train(train_cfg(tmp_path, "data=folder", f"data.root={root}", "data.test=[folder,btad]"))


def test_run_states_its_fallbacks_last_and_in_run_info(tmp_path, capsys):
    root = folder_tree(tmp_path / "user", n_abnormal=3)
    truncate(root / "normal/n0.png")
    write_mask(root / "masks/a1_mask.png", (0, 0, 8, 8), (80, 64))
    write_mask(root / "masks/a2_mask.png", None)
    train(train_cfg(tmp_path, "model=clip", "data=folder", f"data.root={root}", "data.train=[]",
                    "data.skip_bad=true"))
    run = tmp_path / "run"
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == (f"bad inputs: 1 unreadable skipped, 1 mask resized, 1 empty mask (anomalous image) "
                    f"(see {run / 'bad_inputs.csv'})")
    assert json.loads((run / "run_info.json").read_text())["bad_inputs"] == {
        "unreadable": 1, "mask_resized": 1, "empty_mask": 1}
    assert sorted(Path(e.file).name for e in read_bad_inputs(run / "bad_inputs.csv")) == [
        "a1_mask.png", "a2_mask.png", "n0.png"]
