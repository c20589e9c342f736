"""MVTec AD 2 evaluation-server files: one continuous and one thresholded anomaly image per test image.

The folder structure follows MVTec's own dataset code for MVTec AD 2 (its `MVTecAD2` dataset class "stores
anomaly images in the correct structure for evaluating performance on the evaluation server"): the image's
path relative to the dataset root, under ``anomaly_images/`` with suffix ``.tiff`` (continuous map) and under
``anomaly_images_thresholded/`` with suffix ``.png`` (binary map, 0 / 255), e.g.
``can/test_private/000_regular.png`` -> ``anomaly_images/can/test_private/000_regular.tiff``.
What MVTec's upload checker (check_and_prepare_data_for_upload.py and its utils.py, MVTecAD2_public_code_utils;
read in a copy kept in a public repository, TonyLinX/MediCLIP) requires: single-channel float16 TIFFs, single-
channel PNGs holding only 0 and 255, no other folder than these two in the submission folder (the thresholded one
may be missing: threshold-dependent metrics are then not computed), and all 8 classes x test_private,
test_private_mixed with every image. UNVERIFIED: whether the server needs the maps at the image's own resolution
(the checker does not look; predict writes them at that size). Run the checker on the folder before uploading
(https://www.mvtec.com/company/research/datasets/mvtec-ad-2, evaluation server https://benchmark.mvtec.com).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from clipad.errors import ClipadError

CONTINUOUS_DIR = "anomaly_images"
THRESHOLDED_DIR = "anomaly_images_thresholded"


def submission_paths(image_path: Path, dataset_root: Path) -> tuple[Path, Path]:
    """(continuous .tiff, thresholded .png) paths of a test image, relative to the submission folder."""
    try:
        relative = Path(image_path).resolve().relative_to(Path(dataset_root).resolve())
    except ValueError as error:
        raise ClipadError(
            f"MVTec AD 2 submission: {image_path} is not under the dataset root {dataset_root}; give the folder "
            "holding can/, fabric/, ... as the root"
        ) from error
    return Path(CONTINUOUS_DIR) / relative.with_suffix(".tiff"), Path(THRESHOLDED_DIR) / relative.with_suffix(".png")


def write_submission_maps(folder: Path, image_path: Path, dataset_root: Path, anomaly_map: np.ndarray,
                          defects: np.ndarray | None) -> list[Path]:
    """Write the image's continuous map (float16 TIFF) and, given its defect pixels (bool, e.g. map >= a pixel
    threshold), its binary map (defect -> 255); returns the files written."""
    continuous, thresholded = (Path(folder) / p for p in submission_paths(image_path, dataset_root))
    values = np.asarray(anomaly_map, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"anomaly_map must be [H, W], got shape {values.shape}")
    continuous.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(continuous, values.astype(np.float16))
    written = [continuous]
    if defects is not None:
        thresholded.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.where(defects, 255, 0).astype(np.uint8), mode="L").save(thresholded)
        written.append(thresholded)
    return written
