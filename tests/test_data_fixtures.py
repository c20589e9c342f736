"""Tiny on-disk trees in every dataset layout, built by the data tests (no tests in this module).

Images are 32-48 px and come in the odd formats real distributions have: 16-bit PNG, RGBA, palette,
grayscale, .bmp, .tif, .JPG. Each builder returns the tree's root.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (40, 32)  # (width, height) of fixture images


def write_image(path: Path, kind: str = "rgb", size: tuple[int, int] = SIZE, seed: int = 0) -> Path:
    """An image of the given storage kind: rgb, gray, gray16, rgba, palette. The suffix picks the format."""
    rng = np.random.default_rng(seed)
    width, height = size
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if kind == "rgb":
        image = Image.fromarray(rgb, "RGB")
    elif kind == "gray":
        image = Image.fromarray(rgb[..., 0], "L")
    elif kind == "gray16":
        image = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)  # mode I;16
    elif kind == "rgba":
        image = Image.fromarray(np.dstack([rgb, np.full((height, width), 255, np.uint8)]), "RGBA")
    elif kind == "palette":
        image = Image.fromarray(rgb, "RGB").convert("P", palette=Image.ADAPTIVE, colors=16)
    else:
        raise ValueError(kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def write_mask(
    path: Path, box: tuple[int, int, int, int] | None = (4, 4, 12, 12), size: tuple[int, int] = SIZE, value: int = 255
) -> Path:
    """A grey mask with `value` inside box (left, top, right, bottom); box None: an all-normal mask."""
    width, height = size
    mask = np.zeros((height, width), np.uint8)
    if box is not None:
        left, top, right, bottom = box
        mask[top:bottom, left:right] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask, "L").save(path)
    return path


def make_mvtec(root: Path, missing_mask: bool = False) -> Path:
    """bottle: train 2 normal; test 1 normal + 2 anomalous (mask pairs by stem_mask) [+ 1 without mask].
    screw: train 1 normal (.bmp); test 1 normal (.tif) + 1 anomalous (.JPG, mask .PNG).
    Unpaired: bottle/ground_truth/broken/009_mask.png and screw/ground_truth/oldtype/000_mask.png."""
    bottle = root / "bottle"
    write_image(bottle / "train/good/000.png", "rgb", seed=1)
    write_image(bottle / "train/good/001.png", "gray16", seed=2)
    write_image(bottle / "train/good/._001.png", "rgb", seed=2)  # macOS resource fork copy: ignored
    write_image(bottle / "test/good/000.png", "rgba", seed=3)
    write_image(bottle / "test/broken_large/000.png", "palette", seed=4)
    write_image(bottle / "test/broken_large/001.png", "gray", seed=5)
    write_mask(bottle / "ground_truth/broken_large/000_mask.png", (0, 0, 20, 16))
    write_mask(bottle / "ground_truth/broken_large/001_mask.png", (10, 10, 30, 30))
    write_mask(bottle / "ground_truth/broken_large/009_mask.png")
    if missing_mask:
        write_image(bottle / "test/broken_large/002.png", "rgb", seed=6)
    screw = root / "screw"
    write_image(screw / "train/good/000.bmp", "rgb", seed=7)
    write_image(screw / "test/good/000.tif", "rgb", seed=8)
    write_image(screw / "test/scratch_head/000.JPG", "rgb", seed=9)
    write_mask(screw / "ground_truth/scratch_head/000_mask.PNG")
    write_mask(screw / "ground_truth/oldtype/000_mask.png")
    (root / "license").mkdir(parents=True, exist_ok=True)  # not a class: no train/ or test/
    return root


def make_btad(root: Path) -> Path:
    """01: bmp images, png masks named like the image; 03: png images, bmp masks."""
    write_image(root / "01/train/ok/0000.bmp", seed=1)
    write_image(root / "01/test/ok/0001.bmp", seed=2)
    write_image(root / "01/test/ko/0002.bmp", seed=3)
    write_mask(root / "01/ground_truth/ko/0002.png")
    write_image(root / "03/train/ok/0000.png", seed=4)
    write_image(root / "03/test/ko/0001.png", seed=5)
    write_mask(root / "03/ground_truth/ko/0001.bmp")
    return root


def make_visa(root: Path) -> Path:
    """candle: train 2 normal, test 1 normal + 2 anomalous (region-id masks 1 and 2); the split file says
    .JPG where the disk has .jpg for one image; Masks/Anomaly/005.png is listed nowhere (unpaired)."""
    images = root / "candle/Data/Images"
    masks = root / "candle/Data/Masks/Anomaly"
    write_image(images / "Normal/0000.JPG", seed=1)
    write_image(images / "Normal/0001.JPG", seed=2)
    write_image(images / "Normal/0002.jpg", seed=3)  # listed as .JPG
    write_image(images / "Anomaly/000.JPG", seed=4)
    write_image(images / "Anomaly/001.JPG", seed=5)
    write_mask(masks / "000.png", value=1)
    write_mask(masks / "001.png", value=2)
    write_mask(masks / "005.png", value=1)
    rows = [
        ("candle", "train", "normal", "candle/Data/Images/Normal/0000.JPG", ""),
        ("candle", "train", "normal", "candle/Data/Images/Normal/0001.JPG", ""),
        ("candle", "test", "normal", "candle/Data/Images/Normal/0002.JPG", ""),
        ("candle", "test", "anomaly", "candle/Data/Images/Anomaly/000.JPG", "candle/Data/Masks/Anomaly/000.png"),
        ("candle", "test", "anomaly", "candle/Data/Images/Anomaly/001.JPG", "candle/Data/Masks/Anomaly/001.png"),
        ("capsules", "test", "normal", "capsules/Data/Images/Normal/0000.JPG", ""),  # class not on disk
    ]
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    with open(root / "split_csv/1cls.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["object", "split", "label", "image", "mask"])
        writer.writerows(rows)
    return root


KSDD_SIZE = (16, 48)  # (width, height): three 16-row bands


def make_ksdd(root: Path) -> Path:
    """3 images = 9 bands; kos01/Part0 has a defect in its bottom band only."""
    write_image(root / "kos01/Part0.jpg", "gray", KSDD_SIZE, seed=1)
    write_mask(root / "kos01/Part0_label.bmp", (2, 40, 10, 44), KSDD_SIZE)
    write_image(root / "kos01/Part1.jpg", "gray", KSDD_SIZE, seed=2)
    write_mask(root / "kos01/Part1_label.bmp", None, KSDD_SIZE)
    write_image(root / "kos02/Part0.jpg", "gray", KSDD_SIZE, seed=3)
    write_mask(root / "kos02/Part0_label.bmp", None, KSDD_SIZE)
    return root


def make_dagm(root: Path) -> Path:
    """Class1/Train: 0001..0004 with 0002 defective (label mask + Labels.txt); Class1/Test: 0005 normal,
    0006 defective; Test/Label/0099_label.PNG pairs with nothing."""
    for name, seed in (("0001", 1), ("0002", 2), ("0003", 3), ("0004", 4)):
        write_image(root / f"Class1/Train/{name}.PNG", "gray", seed=seed)
    write_mask(root / "Class1/Train/Label/0002_label.PNG")
    (root / "Class1/Train/Label/Labels.txt").write_text("1\n1\t0\t0001.PNG\t0\t\n2\t1\t0002.PNG\t0\t0002_label.PNG\n")
    write_image(root / "Class1/Test/0005.PNG", "gray", seed=5)
    write_image(root / "Class1/Test/0006.PNG", "gray", seed=6)
    write_mask(root / "Class1/Test/Label/0006_label.PNG")
    write_mask(root / "Class1/Test/Label/0099_label.PNG")
    return root


def make_headct(root: Path) -> Path:
    """head_ct/head_ct/000..003.png (labels 0,1,0,1) + 999.png without a label; labels.csv at root."""
    for i in range(4):
        write_image(root / f"head_ct/head_ct/{i:03d}.png", "gray", seed=i)
    write_image(root / "head_ct/head_ct/999.png", "gray", seed=9)
    (root / "labels.csv").write_text("id, hemorrhage\n0,0\n1,1\n2,0\n3,1\n")
    return root


def make_yes_no(root: Path, nested: bool = False) -> Path:
    """no: 2 normal (.jpeg, .JPG); yes: 3 anomalous (.jpg, .png, .jpg); an ignored pred/ folder."""
    base = root / "brain_tumor_dataset" if nested else root
    write_image(base / "no/1 no.jpeg", seed=1)
    write_image(base / "no/N2.JPG", "gray", seed=2)
    write_image(base / "yes/Y1.jpg", seed=3)
    write_image(base / "yes/Y2.png", "rgba", seed=4)
    write_image(base / "yes/Y3.jpg", seed=5)
    write_image(base / "pred/pred0.jpg", seed=6)
    return root


def make_isic(root: Path) -> Path:
    """3 images; 2 masks (one with a lesion, one empty); ISIC_0000003 has no mask (unpaired)."""
    data, truth = root / "ISBI2016_ISIC_Part1_Test_Data", root / "ISBI2016_ISIC_Part1_Test_GroundTruth"
    for i in (1, 2, 3):
        write_image(data / f"ISIC_000000{i}.jpg", seed=i)
    write_mask(truth / "ISIC_0000001_Segmentation.png")
    write_mask(truth / "ISIC_0000002_Segmentation.png", None)
    return root


def make_clinicdb(root: Path) -> Path:
    """CVC-ClinicDB/Original/{1,2}.tif and CVC-ClinicDB/Ground Truth/{1,2}.tif (one level down)."""
    base = root / "CVC-ClinicDB"
    write_image(base / "Original/1.tif", seed=1)
    write_image(base / "Original/2.tif", seed=2)
    write_mask(base / "Ground Truth/1.tif")
    write_mask(base / "Ground Truth/2.tif", (0, 0, 40, 32))
    return root


def make_colondb(root: Path) -> Path:
    write_image(root / "images/1.png", seed=1)
    write_mask(root / "masks/1.png")
    return root


def make_tn3k(root: Path) -> Path:
    """JPEG masks: 0000 has a nodule, 0001 is empty but carries faint compression-like noise (values 1-3)."""
    write_image(root / "test-image/0000.jpg", seed=1)
    write_image(root / "test-image/0001.jpg", seed=2)
    write_mask(root / "test-mask/0000.jpg", (8, 8, 24, 24))
    write_mask(root / "test-mask/0001.jpg", (8, 8, 24, 24), value=3)
    return root


def make_folder(root: Path) -> Path:
    """normal: a, b; abnormal: c (mask c_mask.png), d (no mask); train/normal: e; masks/z.png unpaired."""
    write_image(root / "normal/a.png", seed=1)
    write_image(root / "normal/b.jpg", seed=2)
    write_image(root / "abnormal/c.png", seed=3)
    write_image(root / "abnormal/d.png", seed=4)
    write_mask(root / "masks/c_mask.png")
    write_mask(root / "masks/z.png")
    write_image(root / "train/normal/e.png", seed=5)
    return root


def make_class_tree(root: Path, cls: str, n_train: int, n_good: int, n_bad: int, size: tuple[int, int] = SIZE) -> Path:
    """An MVTec-layout class whose images show their own mask (white defect on black, normal images black):
    an image equals its mask, which lets tests check that geometric operations keep them aligned."""
    width, height = size
    for split, count in (("train", n_train), ("test", n_good)):
        for i in range(count):
            path = root / f"{cls}/{split}/good/{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", size).save(path)
    for i in range(n_bad):
        box = (i % 3 * 10, i % 2 * 12, i % 3 * 10 + 12, i % 2 * 12 + 10)
        write_mask(root / f"{cls}/ground_truth/defect/{i:03d}_mask.png", box, size)
        pixels = np.zeros((height, width, 3), np.uint8)
        pixels[box[1]:box[3], box[0]:box[2]] = 255
        path = root / f"{cls}/test/defect/{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "RGB").save(path)
    return root
