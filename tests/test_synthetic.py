"""The embedded synthetic dataset: deterministic, MVTec layout, exact masks, atomic and idempotent builds."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from clipad.data import synthetic
from clipad.data.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_DEFECTS, anomalous_image, ensure_synthetic
from clipad.data.synthetic_defects import MAX_AREA, MIN_AREA, VISIBLE_CHANGE

CONF = Path(__file__).resolve().parents[1] / "conf" / "data"


@pytest.fixture(scope="module")
def dataset(synthetic_data_dir: Path) -> Path:
    """The session's synthetic dataset (seed 0; conftest.py): these tests only read it."""
    return synthetic_data_dir / "synthetic"


@pytest.fixture
def small_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build 4 images per class instead of 32, for tests about the build itself."""
    monkeypatch.setattr(synthetic, "TRAIN_GOOD", 1)
    monkeypatch.setattr(synthetic, "TEST_GOOD", 1)
    monkeypatch.setattr(synthetic, "ANOMALOUS", 2)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_same_seed_gives_identical_bytes(tmp_path: Path, small_counts: None) -> None:
    # Two builds at the small counts exercise the same generator as a full build, at an eighth of its cost.
    first = _files(ensure_synthetic(tmp_path / "a" / "synthetic", seed=0))
    again = _files(ensure_synthetic(tmp_path / "b" / "synthetic", seed=0))
    assert again == first
    assert len(again) == 1 + len(SYNTHETIC_CLASSES) * (1 + 1 + 2 + 2)  # marker, images, masks


def test_other_seed_gives_other_images(dataset: Path, tmp_path: Path, small_counts: None) -> None:
    other = _files(ensure_synthetic(tmp_path / "synthetic", seed=1))
    images = [name for name in other if name.endswith(".png")]
    assert len(images) == len(SYNTHETIC_CLASSES) * 6
    assert all(other[name] != (dataset / name).read_bytes() for name in images)


def test_layout_and_counts(dataset: Path) -> None:
    assert sorted(p.name for p in dataset.iterdir() if p.is_dir()) == sorted(SYNTHETIC_CLASSES)
    for cls, domain in SYNTHETIC_CLASSES.items():
        assert len(list((dataset / cls / "train" / "good").glob("*.png"))) == 12
        assert len(list((dataset / cls / "test" / "good").glob("*.png"))) == 8
        defects = sorted(p.name for p in (dataset / cls / "test").iterdir() if p.name != "good")
        assert defects == sorted(SYNTHETIC_DEFECTS[domain])
        assert (
            sorted(p.name for p in (dataset / cls / "ground_truth").iterdir()) == defects
        )  # no mask for good
        assert sum(len(list((dataset / cls / "test" / d).glob("*.png"))) for d in defects) == 12
        for image_path in (dataset / cls).rglob("*.png"):
            if image_path.parent.parent.name == "ground_truth":
                continue
            image = Image.open(image_path)
            assert (image.mode, image.size) == ("RGB", (256, 256)), image_path


def test_every_anomalous_image_has_a_plausible_mask(dataset: Path) -> None:
    for cls, domain in SYNTHETIC_CLASSES.items():
        for defect in SYNTHETIC_DEFECTS[domain]:
            for image_path in sorted((dataset / cls / "test" / defect).glob("*.png")):
                mask = _png(dataset / cls / "ground_truth" / defect / f"{image_path.stem}_mask.png")
                assert mask.dtype == np.uint8 and mask.shape == (256, 256)
                assert set(np.unique(mask)) == {0, 255}, image_path
                assert MIN_AREA <= (mask > 0).mean() <= MAX_AREA, image_path


def test_masks_are_exact(dataset: Path) -> None:
    for cls, domain in SYNTHETIC_CLASSES.items():
        for defect in SYNTHETIC_DEFECTS[domain]:
            clean, image, mask = anomalous_image(cls, defect, 0, seed=0)
            assert np.array_equal(image, _png(dataset / cls / "test" / defect / "000.png"))
            assert np.array_equal(mask, _png(dataset / cls / "ground_truth" / defect / "000_mask.png"))
            change = np.abs(image.astype(int) - clean.astype(int)).max(-1)
            assert (change[mask == 0] == 0).all(), f"{cls}/{defect}: pixels outside the mask changed"
            assert (change[mask > 0] > VISIBLE_CHANGE).all(), f"{cls}/{defect}: masked pixels barely changed"


def test_second_call_is_a_fast_no_op(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("regenerated a complete dataset")

    monkeypatch.setattr(synthetic, "_write_dataset", fail)
    start = time.perf_counter()
    assert ensure_synthetic(dataset, seed=0) == dataset
    assert time.perf_counter() - start < 0.5


def test_interrupted_build_is_recovered(
    tmp_path: Path, small_counts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "synthetic"
    real_save, saved = synthetic._save_png, []

    def crash_after_five(array: np.ndarray, path: Path) -> None:
        if len(saved) == 5:
            raise KeyboardInterrupt
        saved.append(path)
        real_save(array, path)

    monkeypatch.setattr(synthetic, "_save_png", crash_after_five)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(root)
    assert not root.exists()  # never a half-built root
    assert len(list(tmp_path.glob(".synthetic.building-*"))) == 1

    monkeypatch.setattr(synthetic, "_save_png", real_save)
    ensure_synthetic(root)
    assert synthetic._is_complete(root, seed=0)
    assert not list(tmp_path.glob(".synthetic.building-*")) and not list(tmp_path.glob(".synthetic.stale-*"))


def test_dataset_of_another_seed_is_replaced(tmp_path: Path, small_counts: None) -> None:
    root = ensure_synthetic(tmp_path / "synthetic", seed=1)
    (root / "brick" / "leftover.txt").write_text("from the old build")
    ensure_synthetic(root, seed=0)
    assert synthetic._read_marker(root)["seed"] == 0
    assert not (root / "brick" / "leftover.txt").exists()


def test_foreign_directory_is_not_overwritten(tmp_path: Path) -> None:
    root = tmp_path / "synthetic"
    root.mkdir()
    (root / "my_data.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a clipad synthetic dataset"):
        ensure_synthetic(root)
    assert (root / "my_data.txt").read_text() == "keep me"


def test_concurrent_callers_build_once(
    tmp_path: Path, small_counts: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write, builds = synthetic._write_dataset, []

    def counting_write(target: Path, seed: int) -> None:
        builds.append(target)
        time.sleep(0.2)  # widen the window in which the other caller arrives
        real_write(target, seed)

    monkeypatch.setattr(synthetic, "_write_dataset", counting_write)
    root, errors = tmp_path / "synthetic", []

    def call() -> None:
        try:
            ensure_synthetic(root)
        except Exception as error:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(builds) == 1
    assert synthetic._is_complete(root, seed=0)


def test_configs_split_the_classes() -> None:
    subsets = {
        name: OmegaConf.load(CONF / f"{name}.yaml")
        for name in ("synthetic_aux", "synthetic_industrial", "synthetic_medical")
    }
    target = OmegaConf.load(CONF / "synthetic.yaml")
    listed = [cls for cfg in subsets.values() for cls in cfg.all_classes]
    assert sorted(listed) == sorted(SYNTHETIC_CLASSES)  # every class in exactly one subset
    assert list(target.all_classes) == list(SYNTHETIC_CLASSES)
    for cfg in [*subsets.values(), target]:
        assert (cfg.layout, cfg.dirname) == ("synthetic", "synthetic")
    for cfg in subsets.values():
        assert {SYNTHETIC_CLASSES[cls] for cls in cfg.all_classes} == {cfg.domain}
    assert list(target.train) == ["synthetic_aux"] and target.val == "none"
    assert list(target.test) == ["synthetic_industrial", "synthetic_medical"]
    assert (
        subsets["synthetic_aux"].domain == "industrial"
        and subsets["synthetic_industrial"].domain == "industrial"
    )
