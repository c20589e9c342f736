"""The embedded synthetic dataset: MVTec-layout classes built offline from scikit-image's bundled images.

`ensure_synthetic(root)` generates it on first use (a few seconds) and is a no-op afterwards. Normal images
are random crops, flips and colour jitter of pictures that ship inside the scikit-image wheel (no download);
anomalous images add a procedural defect (clipad.data.synthetic_defects) with its exact mask. Every image
is a pure function of (seed, class, split or defect, index), so the same seed gives byte-identical PNGs and
the defect-free version of any anomalous image can be re-rendered (`anomalous_image`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import skimage.data
from filelock import FileLock
from PIL import Image
from scipy.ndimage import binary_fill_holes
from tqdm.auto import tqdm

from clipad.data.synthetic_defects import INDUSTRIAL_DEFECTS, MEDICAL_DEFECTS, add_defect

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump whenever any output pixel changes: cached datasets are then rebuilt
MARKER_NAME = ".clipad_synthetic.json"  # written last: its presence means the tree is complete
_GENERATOR = "clipad.data.synthetic"
IMAGE_SIZE = 256
TRAIN_GOOD, TEST_GOOD, ANOMALOUS = 12, 8, 12  # images per class

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class _ClassRecipe:
    """How one class's normal images are cut from its scikit-image source picture."""

    domain: str
    load: Callable[[], np.ndarray]  # a skimage.data function whose file ships in the wheel
    crop: tuple[float, float]  # crop side, as a fraction of the source's shorter side
    spread: float = 1.0  # 1: crops anywhere; < 1: crops stay near the centre (round fundus, head phantom)
    tint: tuple[Colour, Colour] | None = None  # grey sources: colours of black and white (a material look)
    orientations: str = "dihedral"  # dihedral (8 flips/rotations) | mirror (left-right) | fixed (text)
    noise: float = 0.0  # sensor-noise std in grey levels
    on_foreground: bool = False  # keep defects inside the object, off the black border around it


def _phantom() -> np.ndarray:
    return np.rint(skimage.data.shepp_logan_phantom() * 255).astype(np.uint8)


_RECIPES: dict[str, _ClassRecipe] = {
    "brick": _ClassRecipe(
        "industrial", skimage.data.brick, (0.35, 0.6), tint=((60, 25, 15), (225, 140, 110))
    ),
    "grass": _ClassRecipe(
        "industrial", skimage.data.grass, (0.35, 0.6), tint=((20, 45, 10), (170, 210, 110))
    ),
    "paper": _ClassRecipe(
        "industrial",
        skimage.data.text,
        (0.7, 1.0),
        tint=((30, 30, 70), (245, 240, 225)),
        orientations="fixed",
    ),
    "gravel": _ClassRecipe(
        "industrial", skimage.data.gravel, (0.35, 0.6), tint=((45, 40, 35), (215, 205, 185))
    ),
    "coins": _ClassRecipe("industrial", skimage.data.coins, (0.5, 0.9), tint=((25, 25, 28), (235, 215, 170))),
    "retina": _ClassRecipe(
        "medical", skimage.data.retina, (0.4, 0.75), spread=0.5, orientations="mirror", on_foreground=True
    ),
    "histology": _ClassRecipe("medical", skimage.data.immunohistochemistry, (0.35, 0.6)),
    "phantom": _ClassRecipe(
        "medical", _phantom, (0.55, 0.9), spread=0.3, orientations="mirror", noise=4.0, on_foreground=True
    ),
}
SYNTHETIC_CLASSES: dict[str, str] = {name: recipe.domain for name, recipe in _RECIPES.items()}
SYNTHETIC_DEFECTS: dict[str, tuple[str, ...]] = {"industrial": INDUSTRIAL_DEFECTS, "medical": MEDICAL_DEFECTS}


def _rng(seed: int, cls: str, part: str, index: int) -> np.random.Generator:
    # crc32, not hash(): Python salts str hashes per process, which would break determinism.
    return np.random.default_rng([seed, zlib.crc32(cls.encode()), zlib.crc32(part.encode()), index])


@cache
def _source(cls: str) -> np.ndarray:
    return _RECIPES[cls].load()


def _render_normal(cls: str, rng: np.random.Generator) -> np.ndarray:
    recipe, source = _RECIPES[cls], _source(cls)
    height, width = source.shape[:2]
    side = int(rng.uniform(*recipe.crop) * min(height, width))
    top = int((height - side) / 2 * (1 + recipe.spread * rng.uniform(-1, 1)))
    left = int((width - side) / 2 * (1 + recipe.spread * rng.uniform(-1, 1)))
    crop = Image.fromarray(source[top : top + side, left : left + side])
    # PIL bicubic antialiases when it downscales (large retina crops), as the evaluation resize does.
    image = np.asarray(crop.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC), dtype=np.float32)
    if recipe.tint is not None:
        dark, light = (np.array(c, np.float32) * rng.uniform(0.92, 1.08, 3) for c in recipe.tint)
        image = dark + (light - dark) * (image[..., None] / 255.0)
    elif image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if recipe.orientations == "dihedral":
        image = np.rot90(image, int(rng.integers(4)))
        if rng.random() < 0.5:
            image = image[:, ::-1]
    elif recipe.orientations == "mirror" and rng.random() < 0.5:
        image = image[:, ::-1]
    mean = image.mean((0, 1))
    image = (image - mean) * rng.uniform(0.85, 1.15) + mean * rng.uniform(0.9, 1.1)
    if recipe.noise:
        image = image + rng.normal(0, recipe.noise, image.shape[:2])[..., None]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def normal_image(cls: str, split: str, index: int, seed: int = 0) -> np.ndarray:
    """The `index`-th normal image of `cls` in `split` ("train" or "test"), [256, 256, 3] uint8."""
    return _render_normal(cls, _rng(seed, cls, f"{split}/good", index))


def anomalous_image(
    cls: str, defect: str, index: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The `index`-th test image of `cls` with `defect`: (defect-free image, image, mask in {0, 255})."""
    clean = _render_normal(cls, _rng(seed, cls, f"test/{defect}/clean", index))
    inside = binary_fill_holes(clean.mean(-1) > 30) if _RECIPES[cls].on_foreground else None
    image, mask = add_defect(clean, defect, _rng(seed, cls, f"test/{defect}", index), inside)
    return clean, image, mask


def _defect_slots(cls: str) -> list[tuple[str, int]]:
    """(defect, index within that defect) for the class's anomalous images, defects taken in turn."""
    kinds = SYNTHETIC_DEFECTS[SYNTHETIC_CLASSES[cls]]
    return [(kinds[i % len(kinds)], i // len(kinds)) for i in range(ANOMALOUS)]


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # PIL writes no timestamp, so bytes depend on pixels only. Level 3: as small as the default 6 on these
    # images (measured), three times faster.
    Image.fromarray(array).save(path, format="PNG", compress_level=3)


def _marker(seed: int) -> dict:
    return {
        "generator": _GENERATOR,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "classes": SYNTHETIC_CLASSES,
        "counts": {"train/good": TRAIN_GOOD, "test/good": TEST_GOOD, "test/anomalous": ANOMALOUS},
    }


def _write_dataset(target: Path, seed: int) -> None:
    total = len(SYNTHETIC_CLASSES) * (TRAIN_GOOD + TEST_GOOD + ANOMALOUS)
    with tqdm(total=total, desc="clipad: generating the synthetic dataset", unit="img") as progress:
        for cls in SYNTHETIC_CLASSES:
            for split, count in (("train", TRAIN_GOOD), ("test", TEST_GOOD)):
                for i in range(count):
                    _save_png(
                        normal_image(cls, split, i, seed), target / cls / split / "good" / f"{i:03d}.png"
                    )
                    progress.update()
            for defect, i in _defect_slots(cls):
                _, image, mask = anomalous_image(cls, defect, i, seed)
                _save_png(image, target / cls / "test" / defect / f"{i:03d}.png")
                _save_png(mask, target / cls / "ground_truth" / defect / f"{i:03d}_mask.png")
                progress.update()
    (target / MARKER_NAME).write_text(json.dumps(_marker(seed), indent=2))


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def _is_complete(root: Path, seed: int) -> bool:
    return _read_marker(root) == json.loads(json.dumps(_marker(seed))) and all(
        (root / cls).is_dir() for cls in SYNTHETIC_CLASSES
    )


def _discard(path: Path) -> None:
    """Remove a directory tree; rename it aside first so a crash never leaves a half-deleted dataset."""
    aside = path.with_name(f".{path.name}.stale-{os.getpid()}")
    path.rename(aside)
    shutil.rmtree(aside)


def ensure_synthetic(root: Path, seed: int = 0) -> Path:
    """Make sure `root` holds the synthetic dataset of this generator version and `seed`; return `root`.

    The tree is built in a hidden sibling directory and renamed into place, so `root` is either absent or
    complete. A lock file beside `root` serialises concurrent callers (e.g. DDP ranks, dataloader workers);
    leftovers of an interrupted build are removed by the next call.
    """
    root = Path(root)
    if _is_complete(root, seed):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(root.with_name(f".{root.name}.lock")):
        if _is_complete(root, seed):  # another process built it while we waited for the lock
            return root
        for leftover in [
            *root.parent.glob(f".{root.name}.building-*"),
            *root.parent.glob(f".{root.name}.stale-*"),
        ]:
            shutil.rmtree(leftover)  # we hold the lock: no one else is building
        if root.exists():
            if (_read_marker(root) or {}).get("generator") != _GENERATOR and any(root.iterdir()):
                raise FileExistsError(
                    f"{root} exists but is not a clipad synthetic dataset (no {MARKER_NAME}); refusing to "
                    "overwrite it. Move it away, or point paths.data_dir (env CLIPAD_DATA) elsewhere."
                )
            _discard(root)  # an empty directory, or another generator version or seed
        building = root.with_name(f".{root.name}.building-{os.getpid()}")
        log.info("generating the synthetic dataset (seed %d) in %s", seed, root)
        _write_dataset(building, seed)
        building.rename(root)
    return root
