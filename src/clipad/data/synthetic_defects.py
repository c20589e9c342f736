"""Procedural defects for the synthetic dataset, each returned with the exact mask of the pixels it changed.

Every defect is drawn as an opacity map `alpha` and a paint image, blended over the clean image. The mask is
then *defined* as the pixels whose colour changed by more than `VISIBLE_CHANGE` grey levels, and pixels below
that are reset to the clean image, so "outside the mask the image is untouched" holds by construction, also
for soft-edged lesions.

All defects share one strong low-level signature on purpose (a vivid colour, chosen to contrast with what lies
underneath, or a black hole; 2-15 % of the image): the demo trains on some classes and must find defects in
classes and domains it never saw, with a random backbone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import binary_erosion, gaussian_filter

VISIBLE_CHANGE = 16  # grey levels (max over RGB) a pixel must change by to count as defective
MIN_AREA, MAX_AREA = 0.02, 0.15  # defect area as a fraction of the image
_MAX_ELEMENTS = 10  # strokes/blobs added until the drawn area reaches the recipe's target area
_MAX_ATTEMPTS = 30  # redraws when a defect overshoots MAX_AREA or misses MIN_AREA

# Vivid colours found in none of the source images: the shared signature that lets a model trained on some
# classes find defects in others (measured: an ordinary dark-red or white palette barely transfers).
_VIVID_LIGHT = np.array([[0, 255, 255], [120, 255, 0], [255, 230, 0], [255, 0, 255]], dtype=np.float32)
_VIVID_DARK = np.array([[0, 60, 255], [20, 20, 180], [160, 0, 160], [100, 0, 220]], dtype=np.float32)
_VIVID = np.concatenate([_VIVID_LIGHT, _VIVID_DARK])
_HOLE = np.array([[8, 8, 8]], dtype=np.float32)  # a missing piece shows the dark background behind

Element = Callable[[np.random.Generator, tuple[float, float], int], np.ndarray]


def _contrasting_colour(palette: np.ndarray, under: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One of the two palette colours farthest from `under` (the mean colour where the defect goes)."""
    far = np.argsort(-np.linalg.norm(palette - under, axis=1))[:2]
    return palette[rng.choice(far)]


def _stroke_mask(points: np.ndarray, width: int, size: int) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).line([tuple(p) for p in points.tolist()], fill=255, width=width, joint="curve")
    return np.asarray(canvas, dtype=np.float32) / 255.0


def _polygon_mask(points: np.ndarray, size: int) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in points.tolist()], fill=255)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def _round_blob(
    rng: np.random.Generator, centre: tuple[float, float], radius: float, size: int
) -> np.ndarray:
    """A roundish blob: a circle whose radius wobbles with a few low angular harmonics."""
    angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    wobble = sum(rng.uniform(0.04, 0.15) * np.sin(k * angles + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    stretch = rng.uniform(0.7, 1.0)  # slightly elliptic, at a random orientation
    turn = rng.uniform(0, np.pi)
    r = radius * (1 + wobble)
    x, y = r * np.cos(angles), stretch * r * np.sin(angles)
    xy = np.stack([x * np.cos(turn) - y * np.sin(turn), x * np.sin(turn) + y * np.cos(turn)], 1)
    return _polygon_mask(xy + np.asarray(centre), size)


def _scratch(rng: np.random.Generator, centre: tuple[float, float], size: int) -> np.ndarray:
    """A long, thin, gently curved stroke (quadratic Bezier) through `centre`."""
    length, angle = rng.uniform(120, 220), rng.uniform(0, np.pi)
    half = 0.5 * length * np.array([np.cos(angle), np.sin(angle)])
    start, end = np.asarray(centre) - half, np.asarray(centre) + half
    bend = rng.normal(0, 0.25 * length, 2)
    t = np.linspace(0, 1, 40)[:, None]
    curve = (1 - t) ** 2 * start + 2 * t * (1 - t) * (np.asarray(centre) + bend) + t**2 * end
    return gaussian_filter(_stroke_mask(curve, int(rng.integers(5, 10)), size), 0.7)


def _crack(rng: np.random.Generator, centre: tuple[float, float], size: int) -> np.ndarray:
    """A jagged random-walk polyline that thins out, with one or two side branches."""

    def walk(start: np.ndarray, angle: float, steps: int) -> np.ndarray:
        turns = np.cumsum(rng.normal(0, 0.35, steps)) + angle
        lengths = rng.uniform(5, 9, steps)[:, None]
        return start + np.concatenate(
            [[[0, 0]], np.cumsum(lengths * np.stack([np.cos(turns), np.sin(turns)], 1), 0)]
        )

    def draw(points: np.ndarray, width: float) -> np.ndarray:
        # PIL draws one width per call: draw the walk in a few pieces of decreasing width (a tapering crack).
        pieces = np.array_split(np.arange(len(points)), 4)
        masks = [
            _stroke_mask(points[max(idx[0] - 1, 0) : idx[-1] + 1], max(2, round(width * (1 - k / 4))), size)
            for k, idx in enumerate(pieces)
            if len(idx)
        ]
        return np.max(masks, axis=0)

    trunk = walk(np.asarray(centre, dtype=np.float64), rng.uniform(0, 2 * np.pi), int(rng.integers(20, 36)))
    mask = draw(trunk, rng.uniform(6, 9))
    for _ in range(int(rng.integers(1, 3))):
        fork = trunk[rng.integers(len(trunk) // 4, len(trunk))]
        branch = walk(fork, rng.uniform(0, 2 * np.pi), int(rng.integers(8, 16)))
        mask = np.maximum(mask, draw(branch, rng.uniform(3, 5)))
    return gaussian_filter(mask, 0.6)


def _stain(rng: np.random.Generator, centre: tuple[float, float], size: int) -> np.ndarray:
    """A soft-edged roundish patch of colour."""
    return gaussian_filter(_round_blob(rng, centre, rng.uniform(16, 40), size), 2.0)


def _missing(rng: np.random.Generator, centre: tuple[float, float], size: int) -> np.ndarray:
    """A sharp-edged hole: an irregular polygon with few vertices (a chipped-off piece)."""
    n = int(rng.integers(5, 9))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(16, 40) * rng.uniform(0.55, 1.0, n)
    xy = np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1) + np.asarray(centre)
    return gaussian_filter(_polygon_mask(xy, size), 0.5)


def _lesion(rng: np.random.Generator, centre: tuple[float, float], size: int) -> np.ndarray:
    """A roundish lesion with a soft rim (the mask still ends where the change becomes invisible)."""
    return gaussian_filter(_round_blob(rng, centre, rng.uniform(12, 30), size), rng.uniform(2.0, 3.5))


def _haemorrhage(rng: np.random.Generator, centre: tuple[float, float], size: int) -> np.ndarray:
    """A cluster of small spots around `centre` (painted in vivid dark colours, not blood red: see above)."""
    spots = [
        _round_blob(rng, tuple(np.asarray(centre) + rng.normal(0, 14, 2)), rng.uniform(5, 13), size)
        for _ in range(int(rng.integers(3, 7)))
    ]
    return gaussian_filter(np.max(spots, axis=0), rng.uniform(1.2, 2.0))


Paint = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def _solid(palette: np.ndarray) -> Paint:
    """Paint one flat colour of `palette`, the one contrasting with what lies underneath."""
    return lambda clean, under, rng: np.broadcast_to(_contrasting_colour(palette, under, rng), clean.shape)


def _translucent(palette: np.ndarray, texture: float) -> Paint:
    """Paint a colour of `palette` that keeps a trace (`texture`) of the luminance underneath."""

    def paint(clean: np.ndarray, under: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        luminance = clean.mean(-1, keepdims=True) / 255.0
        return _contrasting_colour(palette, under, rng) * (1 - texture + texture * luminance)

    return paint


@dataclass(frozen=True)
class _Recipe:
    element: Element  # draws one stroke/blob/cluster as an opacity map
    opacity: tuple[float, float]  # range of the defect's peak opacity
    paint: Paint
    area: tuple[float, float] = (0.04, 0.10)  # range of the target area (strokes stay smaller than blobs)


_RECIPES: dict[str, _Recipe] = {
    "scratch": _Recipe(_scratch, (0.9, 1.0), _solid(_VIVID_LIGHT), area=(0.025, 0.05)),
    "crack": _Recipe(_crack, (0.9, 1.0), _solid(_VIVID_DARK), area=(0.03, 0.06)),
    "stain": _Recipe(_stain, (0.85, 0.95), _translucent(_VIVID, 0.2)),
    "missing": _Recipe(_missing, (1.0, 1.0), _solid(_HOLE)),
    "lesion": _Recipe(_lesion, (0.9, 1.0), _translucent(_VIVID_LIGHT, 0.15)),
    "haemorrhage": _Recipe(_haemorrhage, (0.9, 1.0), _translucent(_VIVID_DARK, 0.15)),
}
INDUSTRIAL_DEFECTS = ("scratch", "crack", "stain", "missing")
MEDICAL_DEFECTS = ("lesion", "haemorrhage")


def add_defect(
    clean: np.ndarray, kind: str, rng: np.random.Generator, inside: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a defect of `kind` on `clean` ([H, W, 3] uint8, square).

    `inside` ([H, W] bool) keeps the defect within the object (e.g. the retina, not its black border).
    Returns (defective image uint8, mask uint8 in {0, 255}) with the image equal to `clean` wherever the
    mask is 0.
    """
    if kind not in _RECIPES:
        raise KeyError(f"unknown defect kind {kind!r}; known: {sorted(_RECIPES)}")
    recipe = _RECIPES[kind]
    size = clean.shape[0]
    inside = np.ones(clean.shape[:2], bool) if inside is None else inside
    centres = binary_erosion(inside, iterations=10)  # centres away from the object's border
    ys, xs = np.nonzero(centres if centres.any() else inside)
    base = clean.astype(np.float32)
    for _ in range(_MAX_ATTEMPTS):
        pick = rng.integers(len(xs))
        centre = (float(xs[pick]), float(ys[pick]))
        target = rng.uniform(*recipe.area)
        alpha = np.zeros(clean.shape[:2], np.float32)
        for _ in range(_MAX_ELEMENTS):
            near = tuple(np.clip(np.asarray(centre) + rng.normal(0, 22, 2), 0, size - 1))
            alpha = np.maximum(alpha, recipe.element(rng, near, size))
            if (alpha > 0.5).mean() >= target:
                break
        alpha *= rng.uniform(*recipe.opacity) * inside
        under = base[alpha > 0.5].mean(0) if (alpha > 0.5).any() else base.mean((0, 1))
        paint = recipe.paint(clean, under, rng)
        drawn = np.clip(np.rint(base * (1 - alpha[..., None]) + paint * alpha[..., None]), 0, 255).astype(
            np.uint8
        )
        changed = np.abs(drawn.astype(np.int16) - clean.astype(np.int16)).max(-1) > VISIBLE_CHANGE
        if MIN_AREA <= changed.mean() <= MAX_AREA:
            return np.where(changed[..., None], drawn, clean), changed.astype(np.uint8) * 255
    raise RuntimeError(
        f"could not draw a {kind!r} defect covering {MIN_AREA:.0%}-{MAX_AREA:.0%} of the image in "
        f"{_MAX_ATTEMPTS} attempts (image too uniform for this defect colour?)"
    )
