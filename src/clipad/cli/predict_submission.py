"""`submission=mvtec_ad2`: predict also writes the MVTec AD 2 evaluation server's folder, <output_dir>/submission.

The folder mirrors each test image's path below the dataset root (clipad.report.mvtec_ad2_submission), so the
root must be known: `submission_root`, else the folder above `<class>/<test split>` in `input`. Every listed
image must lie in a test split of a class below it; this is checked before the model loads.
"""
from __future__ import annotations

import fnmatch
import glob
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from clipad.errors import ClipadError, ConfigError, PathNotFoundError

SUBMISSION_FORMATS = ("mvtec_ad2",)
SUBMISSION_FOLDER = "submission"  # below output_dir: the folder to check and upload, nothing else in it
MVTEC_AD2_TEST_SPLITS = ("test_private", "test_private_mixed", "test_public")
ROOT_HINT = "the MVTec AD 2 dataset root, the folder holding can/, fabric/, ..."


@dataclass(frozen=True)
class SubmissionTarget:
    folder: Path  # where anomaly_images/ and anomaly_images_thresholded/ go
    dataset_root: Path  # image paths are mirrored below it


def inferred_dataset_root(input_spec: str) -> Path | None:
    """The folder above `<class>/<test split>` in the input path (a folder, file or glob; a pattern such as
    `test_private*` counts as a split), or None."""
    parts = Path(input_spec).expanduser().parts
    splits = [i for i, part in enumerate(parts)
              if i >= 1 and any(fnmatch.fnmatchcase(split, part) for split in MVTEC_AD2_TEST_SPLITS)]
    if not splits:
        return None
    root = Path(*parts[: splits[-1] - 1]) if splits[-1] > 1 else Path(".")
    return None if glob.has_magic(str(root)) else root


def submission_target(cfg: DictConfig, output_dir: Path, image_paths: list[Path]) -> SubmissionTarget | None:
    """The submission to write (None: submission not asked for); raises for an unknown format or a root the
    images do not lie in."""
    value = cfg.get("submission")
    if value in (None, False):
        return None
    if str(value) not in SUBMISSION_FORMATS:
        raise ConfigError(f"submission={value}: choose one of {' | '.join(SUBMISSION_FORMATS)}, or leave it out "
                          "(conf/predict.yaml)")
    if cfg.get("submission_root") is None:
        root = inferred_dataset_root(str(cfg.input))
        named = f"submission_root (inferred from input: {root})"
        if root is None:
            raise ClipadError(f"submission={value}: input={cfg.input} names no <class>/"
                              f"{'|'.join(MVTEC_AD2_TEST_SPLITS)} folder to find the dataset root from; "
                              f"give submission_root=ROOT ({ROOT_HINT})")
    else:
        root = Path(str(cfg.submission_root)).expanduser()
        if not root.is_dir():
            raise PathNotFoundError(f"submission_root={root}: no such folder; give {ROOT_HINT}")
        named = f"submission_root={root}"
    check_test_images(image_paths, root, named)
    return SubmissionTarget(output_dir / SUBMISSION_FOLDER, root)


def check_test_images(image_paths: list[Path], root: Path, named: str) -> None:
    """Each image is <root>/<class>/<test split>/..., the paths the evaluation server knows; `named`: the root
    as the error names it."""
    resolved_root = root.resolve()
    for path in image_paths:
        resolved = path.resolve()
        parts = resolved.relative_to(resolved_root).parts if resolved.is_relative_to(resolved_root) else ()
        if len(parts) < 3 or parts[1] not in MVTEC_AD2_TEST_SPLITS:
            raise ClipadError(
                f"{named}: {path} is not <class>/{'|'.join(MVTEC_AD2_TEST_SPLITS)}/... below it; "
                f"give {ROOT_HINT}, and an input of test images only (e.g. input=ROOT/can/test_private)"
            )
