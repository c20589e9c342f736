"""Reading images and masks from any distribution of the datasets: every format ends as 8-bit RGB / a grey mask.

Pillow decodes; OpenCV (installed with albumentations) is the fallback only for files Pillow cannot identify,
and for TIFFs whose compression Pillow cannot decode (the AdaCLIP reference reads CVC-ClinicDB's .tif with
OpenCV for that reason). A file Pillow identifies but finds truncated or corrupt is unreadable: OpenCV would
return its partial decode (the missing part grey) without an error.
Every reader applies the EXIF orientation, so images and masks are seen as image viewers show them.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from clipad.errors import ClipadError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LOSSY_SUFFIXES = (".jpg", ".jpeg")  # masks stored as JPEG carry compression noise around 0 and 255
MASK_RULES = ("auto", "nonzero", "half")
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # Pillow clips these to 255 on convert()
_EXIF_ORIENTATION = 0x0112
_SWAPPED_ORIENTATIONS = (5, 6, 7, 8)  # transpose / rotate 90 / transverse / rotate 270: width and height swap
# OpenCV flags that keep the bit depth and the colour channels (alpha dropped) and, unlike IMREAD_UNCHANGED,
# apply the EXIF orientation.
_OPENCV_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR


class ImageReadError(ClipadError, OSError):
    """A file that is not a readable image; the message names it."""

    def __init__(self, path: str | Path, reason: object) -> None:
        super().__init__(
            f"cannot read image {path}: {reason}. Replace or delete the file, or set data.skip_bad=true to "
            "skip unreadable files with a warning."
        )
        self.path = str(path)
        self.reason = f"cannot read image {path}: {reason}"  # without the training-only remedy (predict uses it)


def read_rgb(path: str | Path) -> Image.Image:
    """An image as 8-bit RGB: grey, palette, RGBA (alpha dropped, as the references' convert('RGB')),
    CMYK converted by Pillow; 16-bit and 32-bit images scaled to 8 bits (not clipped)."""
    try:
        image = _decoded(path)
    except _PillowCannotDecode as fallback:
        return _rgb_from_array(_decode_with_opencv(path, fallback.reason))
    if image.mode in _HIGH_DEPTH_MODES:
        return _rgb_from_array(np.asarray(image))
    return image.convert("RGB")


def read_mask(path: str | Path, rule: str = "auto") -> Image.Image:
    """A mask as a grey 'L' image in 0..255 whose pixels > 127 are anomalous once resized (threshold 0.5).

    rule: nonzero = every value > 0 is anomalous (region-id masks such as VisA's; the AdaCLIP reference's
    rule for every dataset); half = anomalous above half the value range (0/1, 0/255 or 0/65535 masks; the
    safe choice for JPEG masks, whose compression noise makes near-zero values non-zero); auto = nonzero for
    lossless files, half for JPEG files.
    """
    if rule not in MASK_RULES:
        raise ValueError(f"mask rule must be one of {MASK_RULES}, got {rule!r} (data.mask_rule)")
    if Path(path).is_dir():
        return _merged_mask(Path(path), rule)
    values = _mask_values(path)
    if rule == "auto":
        rule = "half" if Path(path).suffix.lower() in LOSSY_SUFFIXES else "nonzero"
    if rule == "nonzero":
        grey = np.where(values > 0, 255, 0).astype(np.uint8)
    else:
        top = float(values.max()) if values.size else 0.0
        scale = 1.0 if top <= 1 else 255.0 if top <= 255 else 65535.0
        grey = np.clip(np.rint(values.astype(np.float64) * (255.0 / scale)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L")


def _merged_mask(folder: Path, rule: str) -> Image.Image:
    """The union of a folder of per-defect masks (MVTec LOCO AD: ground_truth/<type>/<id>/000.png, 001.png ...)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise ImageReadError(folder, "the ground-truth folder holds no mask image")
    union: np.ndarray | None = None
    for file in files:
        anomalous = np.asarray(read_mask(file, rule)) > 127
        if union is not None and anomalous.shape != union.shape:
            raise ImageReadError(file, f"its size {anomalous.shape[::-1]} differs from {files[0]}'s {union.shape[::-1]}")
        union = anomalous if union is None else union | anomalous
    return Image.fromarray(np.where(union, 255, 0).astype(np.uint8), mode="L")


def is_anomalous(mask: Image.Image) -> bool:
    """Whether a grey mask from read_mask has any anomalous pixel (the same threshold as after resizing)."""
    return bool((np.asarray(mask) > 127).any())


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as read_rgb returns the image (EXIF orientation applied), from the file header."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            swapped = image.getexif().get(_EXIF_ORIENTATION) in _SWAPPED_ORIENTATIONS
            return (height, width) if swapped else (width, height)
    except (OSError, SyntaxError, ValueError):
        array = _decode_with_opencv(path, "Pillow cannot open it")
        return array.shape[1], array.shape[0]


class _PillowCannotDecode(Exception):
    """Pillow cannot identify the file, or cannot decode its TIFF compression: try OpenCV."""

    def __init__(self, reason: object) -> None:
        super().__init__(str(reason))
        self.reason = reason


def _decoded(path: str | Path) -> Image.Image:
    """The file fully decoded by Pillow, EXIF orientation applied.

    Raises ImageReadError for a file Pillow identifies but cannot decode (truncated, corrupt), and
    _PillowCannotDecode where the OpenCV fallback applies.
    """
    try:
        with Image.open(path) as image:
            image_format = image.format
            try:
                image.load()  # decode now, so a truncated file fails here and is named
            except (OSError, SyntaxError, ValueError) as error:
                if image_format == "TIFF" and "truncated" not in str(error):
                    raise _PillowCannotDecode(error) from error  # e.g. a compression Pillow lacks
                raise ImageReadError(path, f"truncated or corrupt {image_format} file ({error})") from error
            return ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as error:
        raise ImageReadError(path, error) from error
    except UnidentifiedImageError as error:
        raise _PillowCannotDecode(error) from error
    except FileNotFoundError as error:
        raise ImageReadError(path, "no such file") from error
    except (OSError, SyntaxError, ValueError) as error:
        if isinstance(error, ImageReadError):
            raise
        raise _PillowCannotDecode(error) from error


def _mask_values(path: str | Path) -> np.ndarray:
    """The mask's stored values as a 2-D array (palette masks: their indices, i.e. the region ids)."""
    try:
        image = _decoded(path)
    except _PillowCannotDecode as fallback:
        array = _decode_with_opencv(path, fallback.reason)
        return array[..., :3].max(axis=2) if array.ndim == 3 else array
    if image.mode == "P":
        return np.asarray(image)
    if image.mode == "1":
        return np.asarray(image, dtype=np.uint8)
    if image.mode in _HIGH_DEPTH_MODES or image.mode == "L":
        return np.asarray(image)
    return np.asarray(image.convert("RGB")).max(axis=2)  # colour masks: any coloured pixel counts


def _decode_with_opencv(path: str | Path, pil_error: object) -> np.ndarray:
    """The fallback decoder; RGB(A) channel order; raises ImageReadError when it fails too."""
    array = cv2.imread(str(path), _OPENCV_FLAGS) if Path(path).is_file() else None
    if array is None:
        raise ImageReadError(path, pil_error)
    if array.ndim == 3 and array.shape[2] >= 3:
        array = array[..., 2::-1]  # BGR(A) -> RGB, alpha dropped
    return np.ascontiguousarray(array)


def _rgb_from_array(array: np.ndarray) -> Image.Image:
    array = _to_uint8(array)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    elif array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(array[..., :3]), mode="RGB")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale to 0..255 by the value range of the storage type: 16-bit is divided by 257, not clipped."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    values = array.astype(np.float64)
    top = float(values.max()) if values.size else 0.0
    if array.dtype.kind == "f" and top <= 1.0:
        scale = 1.0  # float images in [0, 1]
    elif top <= 65535 or array.dtype.itemsize <= 2:
        scale = 65535.0  # 16-bit data (Pillow also opens some 16-bit files as 32-bit mode 'I')
    else:
        scale = top  # genuine 32-bit data: its own maximum
    return np.clip(np.rint(values * (255.0 / scale)), 0, 255).astype(np.uint8)
