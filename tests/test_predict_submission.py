"""predict submission=mvtec_ad2: the MVTec AD 2 evaluation server's folder for the private test splits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from test_data_fixtures import write_image
from test_data_new_layouts import make_mvtec_ad2
from test_predict import predict_config, tiny_checkpoint

from clipad.calibration.thresholds import ClassThreshold, DecisionThresholds
from clipad.cli.predict import predict
from clipad.cli.predict_submission import inferred_dataset_root
from clipad.errors import ClipadError, ConfigError, PathNotFoundError
from clipad.metrics.evaluator import quantize_maps, threshold_to_level

# (width, height) of the test_private_mixed images: not square, not the model's size, not the fixture's default
MIXED_SIZES = {"000_mixed.png": (70, 45), "001_mixed.png": (36, 52)}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A checkpoint and an MVTec AD 2 tree whose `can` has test_private (2 images) and test_private_mixed (2)."""
    root = tmp_path_factory.mktemp("submission")
    dataset = make_mvtec_ad2(root / "mvtec_ad2")
    for seed, (name, size) in enumerate(MIXED_SIZES.items()):
        write_image(dataset / "can/test_private_mixed" / name, size=size, seed=20 + seed)
    tiny_checkpoint(root, "clip")
    return root


def private_images(dataset: Path) -> list[Path]:
    return sorted((dataset / "can").glob("test_private*/*.png"))


def run(workspace: Path, out: Path, *extra: str):
    dataset = workspace / "mvtec_ad2"
    return predict(predict_config(workspace / "clip.ckpt", f"{dataset}/can/test_private*/*.png", out, "save_maps=smoothed",
                                  "save_figures=false", "submission=mvtec_ad2", *extra), overrides=[])


def smoothed_map(out: Path, image: Path, dataset: Path) -> np.ndarray:
    """predict's own saved map of the image (figures/ mirrors the paths below the glob's folder, can/)."""
    return np.load(out / "figures" / image.relative_to(dataset / "can").with_name(image.name + ".smoothed.npy"))


def test_submission_maps_at_each_images_size_with_and_without_a_pixel_threshold(workspace, tmp_path, capsys):
    dataset = workspace / "mvtec_ad2"
    images = private_images(dataset)
    assert len(images) == 4
    out = tmp_path / "plain"
    summary = run(workspace, out)
    lines = capsys.readouterr().out.strip().splitlines()
    folder = out / "submission"
    assert summary.submitted == 4 and summary.submission.folder == folder
    assert sorted(p.name for p in folder.iterdir()) == ["anomaly_images"]  # the checker refuses any other folder
    assert lines[-3] == f"MVTec AD 2 submission: 4 continuous maps (float16 .tiff) in {folder / 'anomaly_images'}"
    assert lines[-2].startswith("no pixel threshold: only the .tiff files")
    maps = {}
    for image in images:
        stored = tifffile.imread(folder / "anomaly_images" / image.relative_to(dataset).with_suffix(".tiff"))
        maps[image] = smoothed_map(out, image, dataset)
        height, width = Image.open(image).size[::-1]
        assert stored.dtype == np.float16 and stored.shape == maps[image].shape == (height, width)
        # float16 keeps 11 significant bits: a relative error of at most 2**-11 (maps lie in [0, 1])
        assert np.allclose(stored, maps[image], rtol=2**-11, atol=2**-24)
        assert np.array_equal(stored, maps[image].astype(np.float16))

    # a threshold that cuts every map's range somewhere inside, so both 0 and 255 occur
    threshold = float(np.median(np.concatenate([m.ravel() for m in maps.values()])))
    out = tmp_path / "thresholded"
    summary = run(workspace, out, f"pixel_threshold={threshold!r}")
    lines = capsys.readouterr().out.strip().splitlines()
    folder = out / "submission"
    assert sorted(p.name for p in folder.iterdir()) == ["anomaly_images", "anomaly_images_thresholded"]
    assert lines[-2].startswith("MVTec AD 2 submission: 4 thresholded maps (.png at pixel threshold")
    assert lines[-2].endswith(str(folder / "anomaly_images_thresholded"))
    values = set()
    for image in images:
        smoothed = smoothed_map(out, image, dataset)
        binary = np.asarray(Image.open(folder / "anomaly_images_thresholded" / image.relative_to(dataset)))
        assert binary.dtype == np.uint8 and binary.shape == smoothed.shape
        assert np.array_equal(binary == 255, smoothed >= threshold) and set(np.unique(binary)) <= {0, 255}
        values |= set(np.unique(binary).tolist())
    assert values == {0, 255}


def test_the_dataset_root_is_inferred_from_the_input_path(tmp_path):
    assert inferred_dataset_root(str(tmp_path / "ad2/can/test_private")) == tmp_path / "ad2"
    assert inferred_dataset_root(str(tmp_path / "ad2/*/test_private_mixed/*.png")) == tmp_path / "ad2"
    assert inferred_dataset_root(str(tmp_path / "ad2/*/test_private*/*.png")) == tmp_path / "ad2"
    assert inferred_dataset_root("can/test_public/bad/000_regular.png") == Path(".")
    assert inferred_dataset_root(str(tmp_path / "ad2/can")) is None
    assert inferred_dataset_root(str(tmp_path / "*/can/test_private")) is None  # a root must be one folder


def test_bad_submission_settings_are_one_line_errors_before_the_model_loads(workspace, tmp_path):
    dataset = workspace / "mvtec_ad2"
    ckpt = tmp_path / "no_model_needed.ckpt"  # never read: every mistake is found before the model loads
    private = dataset / "can/test_private"
    cases = [
        (ConfigError, "submission=kaggle: choose one of mvtec_ad2", private, ["submission=kaggle"]),
        (PathNotFoundError, "submission_root=.*missing: no such folder", private,
         ["submission=mvtec_ad2", f"submission_root={tmp_path / 'missing'}"]),
        # the class folder given as the root: the paths would lack the class
        (ClipadError, f"submission_root={dataset / 'can'}: .*000_regular.png is not <class>/test_private", private,
         ["submission=mvtec_ad2", f"submission_root={dataset / 'can'}"]),
        (ClipadError, "names no <class>/test_private.* give submission_root=ROOT", dataset / "can",
         ["submission=mvtec_ad2"]),
        # a class folder as input: its train images have no place on the evaluation server
        (ClipadError, f"submission_root={dataset}: .*train/good/000_regular.png is not <class>/", dataset / "can",
         ["submission=mvtec_ad2", f"submission_root={dataset}"]),
    ]
    for error_type, message, input_path, extra in cases:
        with pytest.raises(error_type, match=message) as error:
            predict(predict_config(ckpt, input_path, tmp_path / "out", *extra), overrides=[])
        assert "\n" not in str(error.value)


def test_thresholds_file_gives_the_pixel_threshold_of_the_thresholded_maps(workspace, tmp_path, capsys):
    dataset = workspace / "mvtec_ad2"
    out = tmp_path / "first"
    run(workspace, out)
    smoothed = np.concatenate([smoothed_map(out, image, dataset).ravel() for image in private_images(dataset)])
    pixel = float(np.median(smoothed))
    file = DecisionThresholds("fixed", ClassThreshold(0.5, pixel)).write(tmp_path / "thresholds.json")
    out = tmp_path / "calibrated"
    summary = run(workspace, out, f"thresholds={file}")
    assert summary.pixel_threshold == pixel
    assert capsys.readouterr().out.strip().splitlines()[-2].startswith(
        f"MVTec AD 2 submission: 4 thresholded maps (.png at pixel threshold {pixel:.6g})")
    for image in private_images(dataset):
        binary = np.asarray(Image.open(out / "submission/anomaly_images_thresholded" / image.relative_to(dataset)))
        # a calibrated threshold decides on the maps' 16-bit levels, as evaluation and save_masks do (map scale
        # 1 for this model)
        expected = quantize_maps(smoothed_map(out, image, dataset)) >= threshold_to_level(pixel)
        assert np.array_equal(binary == 255, expected)

    file = DecisionThresholds("fixed", ClassThreshold(0.5, None)).write(tmp_path / "image_only.json")
    out = tmp_path / "image_only"
    run(workspace, out, f"thresholds={file}")
    assert sorted(p.name for p in (out / "submission").iterdir()) == ["anomaly_images"]
    assert capsys.readouterr().out.strip().splitlines()[-2].startswith("no pixel threshold: only the .tiff files")
