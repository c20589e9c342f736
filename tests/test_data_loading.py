"""Reading odd files, transforms, datasets, the datamodule, few-shot prompts, mosaic and bad input."""
from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from test_data_fixtures import (
    make_class_tree,
    make_folder,
    make_headct,
    make_isic,
    make_mvtec,
    write_image,
    write_mask,
)

from clipad.data.batch import Batch
from clipad.data.catalog import DatasetError, load_dataset_config
from clipad.data.datamodule import AnomalyDataModule
from clipad.data.image_io import ImageReadError, read_mask, read_rgb
from clipad.data.mosaic import tile_2x2
from clipad.data.overlap import shared_samples
from clipad.data.transforms import SampleTransform

MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


# -- image_io --------------------------------------------------------------------------------------------
def test_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], np.uint16)  # 0, 1, 128, 255 in 8 bits
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    image = read_rgb(tmp_path / "g16.png")
    assert image.mode == "RGB"
    assert np.asarray(image)[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (np.asarray(image) == np.asarray(image)[..., :1]).all()  # grey replicated to 3 channels


@pytest.mark.parametrize("kind", ["rgba", "palette", "gray"])
def test_rgba_palette_grey_become_rgb(tmp_path, kind):
    path = write_image(tmp_path / f"x_{kind}.png", kind, seed=3)
    expected = {
        "rgba": lambda im: np.asarray(im)[..., :3],  # alpha dropped, colours kept
        "palette": lambda im: np.asarray(im.convert("RGB")),  # colours looked up in the palette
        "gray": lambda im: np.repeat(np.asarray(im)[..., None], 3, axis=2),
    }[kind](Image.open(path))
    image = read_rgb(path)
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), expected)


@pytest.mark.parametrize("name", ["a.bmp", "a.tif", "a.JPG", "a.PNG", "a.jpeg"])
def test_formats_and_extensions(tmp_path, name):
    path = write_image(tmp_path / name, seed=1)
    assert read_rgb(path).size == (40, 32)


def test_16bit_rgb_tiff(tmp_path):
    import tifffile

    values = np.zeros((4, 4, 3), np.uint16)
    values[..., 0], values[..., 1], values[..., 2] = 65535, 32896, 257
    tifffile.imwrite(tmp_path / "rgb16.tif", values)
    assert np.asarray(read_rgb(tmp_path / "rgb16.tif"))[0, 0].tolist() == [255, 128, 1]


def test_corrupt_and_truncated_files_are_named(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="junk.png.*data.skip_bad=true"):
        read_rgb(tmp_path / "junk.png")
    data = (write_image(tmp_path / "t.png", size=(64, 64))).read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="t.png"):
        read_rgb(tmp_path / "t.png")


def test_mask_rules(tmp_path):
    regions = np.zeros((4, 4), np.uint8)
    regions[0, 0], regions[1, 1] = 1, 2  # VisA-style region ids
    Image.fromarray(regions).save(tmp_path / "regions.png")
    assert (np.asarray(read_mask(tmp_path / "regions.png", "nonzero")) > 127).sum() == 2
    assert (np.asarray(read_mask(tmp_path / "regions.png", "auto")) > 127).sum() == 2
    assert (np.asarray(read_mask(tmp_path / "regions.png", "half")) > 127).sum() == 0  # 1,2 of 255: below half
    binary01 = (regions > 0).astype(np.uint8)
    Image.fromarray(binary01).save(tmp_path / "b01.png")
    assert (np.asarray(read_mask(tmp_path / "b01.png", "half")) > 127).sum() == 2  # 0/1 mask: range 1
    noisy = np.array([[0, 3, 120, 200]], np.uint8)
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    assert (np.asarray(read_mask(tmp_path / "noisy.png", "half")) > 127).sum() == 1
    palette = Image.fromarray(regions, "L").convert("P")
    palette.save(tmp_path / "palette.png")
    assert (np.asarray(read_mask(tmp_path / "palette.png", "nonzero")) > 127).sum() == 2


# -- transforms -------------------------------------------------------------------------------------------
def test_transform_resizes_like_pil_bicubic_and_normalises(tmp_path):
    image = read_rgb(write_image(tmp_path / "a.png", size=(96, 80), seed=4))
    out, mask = SampleTransform(32, MEAN, STD)(image, None)
    expected = np.asarray(image.resize((32, 32), Image.BICUBIC)).astype(np.float32) / 255
    restored = (out * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)).permute(1, 2, 0)
    assert out.shape == (3, 32, 32) and torch.allclose(restored, torch.from_numpy(expected), atol=1e-5)
    assert mask.shape == (1, 32, 32) and mask.sum() == 0
    rect = SampleTransform([16, 24], MEAN, STD)(image, None)[0]  # [height, width]
    assert rect.shape == (3, 16, 24)


def test_mask_is_resized_then_thresholded_at_half():
    grey = np.zeros((64, 64), np.uint8)
    grey[:, :33] = 255  # 33 columns of 64: after halving, column 16 is 1/2 covered -> bilinear 127.5 ~ edge
    mask = SampleTransform(32, MEAN, STD)(Image.new("RGB", (64, 64)), Image.fromarray(grey))[1]
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    expected = np.asarray(Image.fromarray(grey).resize((32, 32), Image.BILINEAR)) > 127
    assert torch.equal(mask[0], torch.from_numpy(expected).float())
    assert 16 <= mask[0, 0].sum() <= 17


def test_augmentations_move_image_and_mask_together(tmp_path):
    make_class_tree(tmp_path, "c", 0, 0, 3)
    transform = SampleTransform([32, 40], [0, 0, 0], [1, 1, 1], augment=[{"name": "HorizontalFlip", "p": 1.0}])
    for i in range(3):
        image = read_rgb(tmp_path / f"c/test/defect/{i:03d}.png")
        mask = read_mask(tmp_path / f"c/ground_truth/defect/{i:03d}_mask.png")
        out, out_mask = transform(image, mask)
        assert torch.equal(out[0] > 0.5, out_mask[0] > 0.5)
        assert torch.equal(out_mask[0], torch.from_numpy(np.asarray(mask)[:, ::-1] > 127).float())


def test_unknown_augmentation_is_an_error():
    with pytest.raises(ValueError, match="no transform 'Flipp'"):
        SampleTransform(32, MEAN, STD, augment=["Flipp"])


def test_mosaic_tiles():
    images = [Image.new("RGB", (4, 2), (v, v, v)) for v in (10, 20, 30, 40)]
    masks = [None, Image.new("L", (4, 2), 255), None, Image.new("L", (8, 4), 255)]  # last one resized
    image, mask = tile_2x2(images, masks)
    assert image.size == mask.size == (8, 4)
    assert [image.getpixel(p)[0] for p in ((0, 0), (4, 0), (0, 2), (4, 2))] == [10, 20, 30, 40]
    assert [mask.getpixel(p) for p in ((0, 0), (4, 0), (0, 2), (4, 2))] == [0, 255, 0, 255]


# -- the datamodule ---------------------------------------------------------------------------------------
def run_config(data_dir: Path, target: str = "mvtec", **changes) -> DictConfig:
    """A composed-like run config (what conf/train.yaml composes), built by hand."""
    data = load_dataset_config(target)
    data.num_workers, data.batch_size, data.eval_batch_size = 0, 4, 3
    data.allow_overlap = True  # the small fixture trees serve as training, validation and test data at once
    cfg = OmegaConf.create({
        "data": data,
        "paths": {"data_dir": str(data_dir), "output_dir": "${hydra:runtime.output_dir}"},
        "backbone": {"image_size": 32, "mean": MEAN, "std": STD},
        "model": {"aux_data": {"default": {"train": ["mvtec"], "val": "mvtec"},
                               "by_target": {"mvtec": {"train": ["btad"], "val": "btad"}}}},
        "shots": 0,
        "few_shot_seed": 10,
    })
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


@pytest.fixture
def data_dir(tmp_path) -> Path:
    """mvtec: bottle and screw (5 train normals, 2 test normals, 3 anomalous); btad: its 3 classes."""
    for cls in ("bottle", "screw"):
        make_class_tree(tmp_path / "mvtec", cls, 5, 2, 3)
    for cls in ("01", "02", "03"):
        make_class_tree(tmp_path / "btad", cls, 2, 1, 2)
    return tmp_path


def test_datamodule_from_config(data_dir):
    dm = AnomalyDataModule.from_config(run_config(data_dir, **{"data.classes": ["bottle", "screw"]}))
    assert dm.test_datasets == ["mvtec"] and dm.train_datasets == ["btad"] and dm.val_dataset == "btad"
    assert dm.has_validation
    assert dm.domains == {"mvtec": "industrial", "btad": "industrial"}
    assert dm.output_dir is None  # ${hydra:...} outside Hydra: prompts are not written
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert sum(len(b) for b in batches) == 3 * 3  # btad test split: 1 normal + 2 anomalous per class
    batch = batches[0]
    assert isinstance(batch, Batch) and batch.image.shape == (4, 3, 32, 32) and batch.mask.shape == (4, 1, 32, 32)
    assert batch.label.dtype == torch.long and batch.has_mask.dtype == torch.bool and batch.has_mask.all()
    assert batch.normal_image is None and set(batch.dataset) == {"btad"}
    assert sum(len(b) for b in dm.val_dataloader()) == 9
    dm.setup("test")
    test = list(dm.test_dataloader())
    assert [len(b) for b in test] == [3, 3, 3, 1]  # eval_batch_size 3, 10 samples
    order = [(d, c) for b in test for d, c in zip(b.dataset, b.cls_name)]
    assert order == [("mvtec", "bottle")] * 5 + [("mvtec", "screw")] * 5  # grouped by (dataset, class)
    labels = torch.cat([b.label for b in test])
    masks = torch.cat([b.mask for b in test])
    assert labels.sum() == 6 and torch.equal(masks.flatten(1).amax(1).long(), labels)  # masks pair with images


def test_train_val_and_targets_overrides(data_dir):
    cfg = run_config(data_dir, **{"data.classes": ["bottle"], "data.train": ["mvtec"], "data.val": "none",
                                  "data.test": ["mvtec", "btad"]})
    dm = AnomalyDataModule.from_config(cfg)
    assert dm.train_datasets == ["mvtec"] and dm.val_dataset is None and dm.test_datasets == ["mvtec", "btad"]
    assert not dm.has_validation
    dm.setup("fit")
    assert dm.val_dataloader() == []
    assert {c for b in dm.train_dataloader() for c in b.cls_name} == {"bottle"}  # the target node's classes
    dm.setup("test")
    order = list(dict.fromkeys((d, c) for b in dm.test_dataloader() for d, c in zip(b.dataset, b.cls_name)))
    assert order == [("mvtec", "bottle"), ("btad", "01"), ("btad", "02"), ("btad", "03")]


def test_train_split_option(data_dir):
    cfg = run_config(data_dir, **{"data.classes": ["bottle", "screw"], "data.train": ["mvtec"],
                                  "data.train_split": "train"})
    dm = AnomalyDataModule.from_config(cfg)
    dm.setup("fit")
    labels = torch.cat([b.label for b in dm.train_dataloader()])
    assert len(labels) == 10 and labels.sum() == 0


def test_readable_class_names_apply_to_every_dataset(data_dir):
    (data_dir / "mvtec/metal_nut").symlink_to(data_dir / "mvtec/bottle")
    cfg = run_config(data_dir, **{"data.classes": ["metal_nut"], "data.class_names": "readable",
                                  "data.train": ["btad"]})
    dm = AnomalyDataModule.from_config(cfg)
    dm.setup()
    assert {p for b in dm.test_dataloader() for p in b.prompt_name} == {"metal nut"}
    assert dm.prompt_name("btad", "01") == "01"
    faithful = AnomalyDataModule.from_config(run_config(data_dir, **{"data.classes": ["metal_nut"]}))
    faithful.setup("test")
    assert {p for b in faithful.test_dataloader() for p in b.prompt_name} == {"metal_nut"}


def test_image_level_and_pixel_only_datasets(tmp_path):
    make_headct(tmp_path / "headct")
    dm = AnomalyDataModule.from_config(run_config(tmp_path, "headct", **{"data.train": [], "data.val": "none"}))
    dm.setup("test")
    batches = list(dm.test_dataloader())
    assert torch.cat([b.label for b in batches]).tolist() == [0, 1, 0, 1]
    assert not torch.cat([b.has_mask for b in batches]).any()
    assert dm.domains == {"headct": "medical"} and dm.train_datasets == []
    make_isic(tmp_path / "isic")
    dm = AnomalyDataModule.from_config(run_config(tmp_path, "isic", **{"data.train": []}))
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch.label.tolist() == [1, 0] and batch.has_mask.all()  # labels derived from the masks
    assert torch.equal(batch.mask.flatten(1).amax(1).long(), batch.label)


def test_dataset_pickles_for_spawned_workers(data_dir):
    dm = AnomalyDataModule.from_config(run_config(data_dir, **{"data.classes": ["bottle"]}))
    dm.setup("test")
    copy = pickle.loads(pickle.dumps(dm.test_set))
    assert torch.equal(copy[0]["image"], dm.test_set[0]["image"])


def test_loader_with_workers(data_dir):
    cfg = run_config(data_dir, **{"data.classes": ["bottle"], "data.num_workers": 1})
    dm = AnomalyDataModule.from_config(cfg)
    dm.setup("test")
    loader = dm.test_dataloader()
    assert loader.persistent_workers and sum(len(b) for b in loader) == 5


# -- few-shot prompts -------------------------------------------------------------------------------------
def prompts(data_dir: Path, seed: int, out: Path | None = None, shots: int = 3) -> tuple[torch.Tensor, AnomalyDataModule]:
    changes = {"data.classes": ["bottle", "screw"], "shots": shots, "few_shot_seed": seed}
    if out is not None:
        changes["paths.output_dir"] = str(out)
    dm = AnomalyDataModule.from_config(run_config(data_dir, **changes))
    return dm.normal_prompt_images("mvtec", "bottle"), dm


def test_few_shot_prompts_are_seeded(data_dir, tmp_path):
    images, dm = prompts(data_dir, 10, tmp_path / "run10")
    assert images.shape == (3, 3, 32, 32)
    assert dm.normal_prompt_images("mvtec", "bottle") is images  # the same images for every query
    record = json.loads((tmp_path / "run10/few_shot_prompts_shots3_seed10.json").read_text())
    chosen = record["prompts"]["mvtec"]["bottle"]
    assert len(chosen) == 3 and all("/bottle/train/good/" in p for p in chosen)
    assert record["splits"] == {"mvtec": {"bottle": "train"}} and record["shots"] == 3
    prompts(data_dir, 10, tmp_path / "again")
    assert json.loads((tmp_path / "again/few_shot_prompts_shots3_seed10.json").read_text())["prompts"] == record["prompts"]
    draws = set()
    for seed in (20, 30):
        prompts(data_dir, seed, tmp_path / f"run{seed}")
        record_s = json.loads((tmp_path / f"run{seed}/few_shot_prompts_shots3_seed{seed}.json").read_text())
        draws.add(tuple(record_s["prompts"]["mvtec"]["bottle"]))
    assert tuple(chosen) not in draws  # other seeds draw other images


def test_few_shot_draws_with_replacement(data_dir):
    _, dm = prompts(data_dir, 10, shots=12)  # 12 draws from 5 images: repeats are certain
    dm.normal_prompt_images("mvtec", "bottle")
    assert len(set(dm._prompt_record["prompts"]["mvtec"]["bottle"])) <= 5


def test_few_shot_falls_back_to_test_normals(tmp_path):
    make_headct(tmp_path / "headct")
    dm = AnomalyDataModule.from_config(run_config(tmp_path, "headct", shots=2, few_shot_seed=1))
    assert dm.normal_prompt_images("headct", "brain").shape == (2, 3, 32, 32)
    assert dm._prompt_record["splits"] == {"headct": {"brain": "test"}}
    assert all(Path(p).name in ("000.png", "002.png") for p in dm._prompt_record["prompts"]["headct"]["brain"])


def test_few_shot_without_normals_is_an_error(tmp_path):
    make_isic(tmp_path / "isic")
    (tmp_path / "isic/ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_0000002_Segmentation.png").unlink()
    dm = AnomalyDataModule.from_config(run_config(tmp_path, "isic", shots=1))
    with pytest.raises(DatasetError, match="no normal images"):
        dm.normal_prompt_images("isic", "skin")


# -- training data that is also test data -----------------------------------------------------------------
def test_training_on_the_targets_own_test_images_is_an_error_naming_files_and_the_option(tmp_path):
    root = make_folder(tmp_path / "parts")
    cfg = run_config(tmp_path, "folder", **{"data.root": str(root), "data.train": ["folder"], "data.val": "none",
                                            "data.allow_overlap": False})
    dm = AnomalyDataModule.from_config(cfg)
    with pytest.raises(DatasetError) as error:
        dm.setup("fit")  # checked before the training set is built
    message = str(error.value)
    assert "4 images of test dataset 'folder' are also training samples of 'folder'" in message
    assert "c.png" in message and "data.allow_overlap=true" in message and "data.train" in message


def test_allow_overlap_downgrades_it_to_a_counted_warning(tmp_path, caplog):
    root = make_folder(tmp_path / "parts")
    cfg = run_config(tmp_path, "folder", **{"data.root": str(root), "data.train": ["folder"], "data.val": "none",
                                            "data.allow_overlap": True})
    with caplog.at_level(logging.WARNING, logger="clipad.data.datamodule"):
        assert AnomalyDataModule.from_config(cfg).check_overlap() == 4
    assert "4 images are both training and test/validation samples (data.allow_overlap=true)" in caplog.text


def test_validating_on_a_training_dataset_is_an_error_and_disjoint_data_passes(data_dir):
    options = {"data.classes": ["bottle", "screw"], "data.allow_overlap": False}
    clean = AnomalyDataModule.from_config(run_config(data_dir, **options, **{"data.val": "none"}))
    assert clean.check_overlap() == 0  # trains on btad, tests on mvtec
    validating = run_config(data_dir, **options, **{"data.val": "btad"})  # btad also trains
    with pytest.raises(DatasetError, match="9 images of validation dataset 'btad' are also training samples"):
        AnomalyDataModule.from_config(validating).check_overlap()


def test_the_same_file_under_another_path_is_the_same_sample(tmp_path):
    write_image(tmp_path / "real/a.png", seed=1)
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    row = {"mask_path": None, "label": 0, "cls_name": "c", "defect_type": "good", "split": "test"}
    training = [{**row, "img_path": str(tmp_path / "real/a.png")}]
    tested = [{**row, "img_path": str(tmp_path / "alias/a.png")}, {**row, "img_path": str(tmp_path / "real/b.png")}]
    assert shared_samples(training, tested) == [str(tmp_path / "alias/a.png")]
    assert shared_samples(training, [{**tested[0], "crop": (0, 0, 4, 4)}]) == []  # another band of the file


# -- mosaic and normal pairing ----------------------------------------------------------------------------
def test_mosaic_keeps_masks_aligned_with_images(tmp_path):
    make_class_tree(tmp_path / "mvtec", "bottle", 0, 6, 2)  # mostly normal: mosaics of both labels occur
    cfg = run_config(tmp_path, **{"data.classes": ["bottle"], "data.train": ["mvtec"], "data.val": "none",
                                  "model.mosaic_p": 1.0, "backbone.image_size": [64, 80],
                                  "backbone.mean": [0, 0, 0], "backbone.std": [1, 1, 1]})
    dm = AnomalyDataModule.from_config(cfg)
    dm.setup("fit")
    torch.manual_seed(0)
    samples = [dm.train_set[i % len(dm.train_set)] for i in range(24)]
    assert all(s["path"].startswith("mosaic:") and s["path"].count("|") == 3 for s in samples)
    for sample in samples:
        # Fixture images show their own mask (80x64 canvas = input size: no resampling blurs the check).
        assert torch.equal(sample["image"][0] > 0.5, sample["mask"][0] > 0.5)
        assert sample["label"] == int(sample["mask"].amax())  # label derived from the tiled mask
        assert len(set(sample["path"][len("mosaic:"):].split("|"))) == 4  # four distinct images
    assert {s["label"] for s in samples} == {0, 1}


def test_mosaic_only_for_listed_datasets(data_dir):
    cfg = run_config(data_dir, **{"data.classes": ["bottle"], "model.mosaic_p": 1.0})  # trains on btad
    dm = AnomalyDataModule.from_config(cfg)
    dm.setup("fit")
    assert not any(dm.train_set[i]["path"].startswith("mosaic:") for i in range(len(dm.train_set)))


def test_pair_normal(data_dir):
    cfg = run_config(data_dir, **{"data.classes": ["bottle", "screw"], "data.train": ["mvtec"],
                                  "model.pair_normal": True, "backbone.mean": [0, 0, 0], "backbone.std": [1, 1, 1]})
    dm = AnomalyDataModule.from_config(cfg)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.normal_image.shape == (4, 3, 32, 32)
    assert batch.normal_image.abs().sum() == 0  # fixture normal images are black
    dm.setup("test")
    assert next(iter(dm.test_dataloader())).normal_image is None


# -- bad input --------------------------------------------------------------------------------------------
def test_corrupt_image_error_names_it(data_dir):
    (data_dir / "mvtec/bottle/test/good/001.png").write_bytes(b"\x89PNG broken")
    dm = AnomalyDataModule.from_config(run_config(data_dir, **{"data.classes": ["bottle"]}))
    with pytest.raises(ImageReadError, match="bottle/test/good/001.png"):  # the pre-flight check, before loading
        dm.setup("test")


def test_skip_bad_skips_and_counts(data_dir, caplog):
    (data_dir / "mvtec/bottle/test/good/001.png").write_bytes(b"\x89PNG broken")
    (data_dir / "mvtec/bottle/ground_truth/defect/000_mask.png").write_bytes(b"broken mask")
    dm = AnomalyDataModule.from_config(run_config(data_dir, **{"data.classes": ["bottle"], "data.skip_bad": True}))
    with caplog.at_level(logging.WARNING):
        dm.setup("test")
    assert len(dm.test_set) == 3
    assert "skipped 2 unreadable samples of dataset 'mvtec'" in caplog.text
    assert sum(len(b) for b in dm.test_dataloader()) == 3


def test_mask_of_another_size_is_resized_with_a_warning(data_dir, caplog):
    write_mask(data_dir / "mvtec/bottle/ground_truth/defect/000_mask.png", (0, 0, 40, 64), size=(80, 64))
    dm = AnomalyDataModule.from_config(run_config(data_dir, **{"data.classes": ["bottle"]}))
    dm.setup("test")
    with caplog.at_level(logging.WARNING):
        sample = dm.test_set[0]
    assert "000_mask.png is 80x64 but its image" in caplog.text
    assert sample["mask"].shape == (1, 32, 32) and sample["mask"][0, :, :16].all() and not sample["mask"][0, :, 16:].any()


def test_missing_mask_policy(tmp_path):
    make_mvtec(tmp_path / "mvtec", missing_mask=True)
    cfg = run_config(tmp_path, **{"data.classes": ["bottle", "screw"]})
    with pytest.raises(DatasetError, match="1 anomalous images of dataset 'mvtec' have no mask.*002.png"):
        AnomalyDataModule.from_config(cfg).setup("test")
    cfg.data.missing_mask = "image_only"
    dm = AnomalyDataModule.from_config(cfg)
    dm.setup("test")
    samples = {Path(s["path"]).parent.name + "/" + Path(s["path"]).name: s for s in dm.test_set.datasets[0]}
    lacking = samples["broken_large/002.png"]
    assert lacking["label"] == 1 and lacking["has_mask"] is False
    assert samples["broken_large/000.png"]["has_mask"] is True and samples["good/000.png"]["has_mask"] is True


def test_errors_for_missing_root_unknown_and_empty_classes(data_dir):
    with pytest.raises(DatasetError, match=r"(?s)visa does not exist .*\['btad', 'mvtec'\].*spot-diff"):
        AnomalyDataModule.from_config(run_config(data_dir, "visa", **{"data.train": []})).setup("test")
    with pytest.raises(DatasetError, match=r"unknown class\(es\) \['botle'\]"):
        AnomalyDataModule.from_config(run_config(data_dir, **{"data.classes": ["botle"]})).setup("test")
    with pytest.raises(DatasetError, match=r"(?s)\['cable'.*have no images under .*Expected layout"):
        AnomalyDataModule.from_config(run_config(data_dir)).setup("test")  # all 15 MVTec classes expected
    for image in (data_dir / "btad/02/test").rglob("*.png"):
        image.unlink()
    cfg = run_config(data_dir, **{"data.classes": ["bottle"]})
    with pytest.raises(DatasetError, match=r"\['02'\] of dataset 'btad' have no 'test' images"):
        AnomalyDataModule.from_config(cfg).setup("fit")
