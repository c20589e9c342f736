"""The thresholds file: calibrated image and pixel thresholds per (dataset, class), with a global fallback.

Written by `python -m clipad.calibrate`, read by `evaluate thresholds=FILE` and `predict thresholds=FILE`.
JSON by default (YAML when the name ends in .yaml/.yml); every float is written at full precision, so a
threshold read back decides exactly as the one calibrated. Layout:

    {"format": "clipad-thresholds/1", "rule": "normal_quantile", "q": 0.99, "value": null,
     "source": "train/good of synthetic_medical", "checkpoint": "...", "random_backbone": true,
     "global": {"image": 0.53, "pixel": 0.61, "images": 90},
     "classes": {"synthetic_medical": {"retina": {"image": 0.52, "pixel": 0.60, "images": 30}, ...}}}

A decision is "fail" when score >= image (map >= pixel). ``pixel`` is null where none was calibrated.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from clipad.errors import ClipadError

FORMAT = "clipad-thresholds/1"
RULES = ("normal_quantile", "val_f1", "fixed")
GLOBAL = "global"
_YAML_SUFFIXES = (".yaml", ".yml")


def decision(score: float, threshold: float) -> str:
    """The calibrated decision of one score: "fail" at or above the threshold, else "pass"."""
    return "fail" if score >= threshold else "pass"


class ThresholdsFileError(ClipadError, ValueError):
    """A thresholds file is missing or is not one that clipad.calibrate wrote."""


@dataclass(frozen=True)
class ClassThreshold:
    image: float
    pixel: float | None
    images: int | None = None  # how many images it was calibrated on (None: given by the user)

    def to_dict(self) -> dict:
        return {"image": self.image, "pixel": self.pixel, "images": self.images}


@dataclass
class DecisionThresholds:
    rule: str
    fallback: ClassThreshold
    classes: dict[str, dict[str, ClassThreshold]] = field(default_factory=dict)
    q: float | None = None
    value: float | None = None
    source: str = ""
    checkpoint: str | None = None
    random_backbone: bool = False
    path: Path | None = None  # where it was read from

    def lookup(self, dataset: str, cls_name: str) -> tuple[ClassThreshold, str]:
        """The class's thresholds and their key ("dataset/class"), else the global ones and "global"."""
        found = self.classes.get(dataset, {}).get(cls_name)
        return (found, f"{dataset}/{cls_name}") if found else (self.fallback, GLOBAL)

    def lookup_class(self, name: str | None) -> tuple[ClassThreshold, str]:
        """For images of unknown dataset: ``name`` as "dataset/class", or a class only one dataset has."""
        if name:
            dataset, _, cls_name = name.rpartition("/")
            if dataset:
                return self.lookup(dataset, cls_name)
            owners = [d for d, classes in self.classes.items() if name in classes]
            if len(owners) == 1:
                return self.lookup(owners[0], name)
        return self.fallback, GLOBAL

    def describe(self) -> str:
        """e.g. "normal_quantile q=0.99, train/good of synthetic_medical, file thresholds.json"."""
        parts = [self.rule + (f" q={self.q:g}" if self.q is not None else "")
                 + (f" value={self.value:g}" if self.value is not None else "")]
        parts += [self.source] if self.source else []
        parts += [f"file {self.path}"] if self.path else []
        parts += ["random backbone"] if self.random_backbone else []
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "rule": self.rule,
            "q": self.q,
            "value": self.value,
            "source": self.source,
            "checkpoint": self.checkpoint,
            "random_backbone": self.random_backbone,
            GLOBAL: self.fallback.to_dict(),
            "classes": {d: {c: t.to_dict() for c, t in classes.items()} for d, classes in self.classes.items()},
        }

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.to_dict()
        if path.suffix in _YAML_SUFFIXES:
            path.write_text(yaml.safe_dump(data, sort_keys=False))
        else:
            path.write_text(json.dumps(data, indent=2) + "\n")
        return path


def _class_threshold(raw: object, where: str, path: Path) -> ClassThreshold:
    if not isinstance(raw, dict) or not isinstance(raw.get("image"), (int, float)):
        raise ThresholdsFileError(f"{path}: {where} needs a number 'image' (and 'pixel': number or null)")
    pixel = raw.get("pixel")
    if pixel is not None and not isinstance(pixel, (int, float)):
        raise ThresholdsFileError(f"{path}: {where}.pixel must be a number or null, got {pixel!r}")
    if math.isnan(float(raw["image"])) or (pixel is not None and math.isnan(float(pixel))):
        raise ThresholdsFileError(f"{path}: {where} holds NaN; calibrate again")
    images = raw.get("images")
    return ClassThreshold(float(raw["image"]), None if pixel is None else float(pixel),
                          None if images is None else int(images))


def read_thresholds(path: str | Path) -> DecisionThresholds:
    """Read a thresholds file; a clear error (naming the thresholds= key) when it is missing or malformed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ThresholdsFileError(
            f"thresholds={path}: no such file. Write one with "
            "`python -m clipad.calibrate ckpt_path=... data=... rule=normal_quantile q=0.99`"
        )
    try:
        text = path.read_text()
        data = yaml.safe_load(text) if path.suffix in _YAML_SUFFIXES else json.loads(text)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise ThresholdsFileError(f"thresholds={path}: cannot be read as JSON/YAML ({error})") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ThresholdsFileError(
            f"thresholds={path}: not a clipad thresholds file (expected \"format\": \"{FORMAT}\"); "
            "write one with python -m clipad.calibrate"
        )
    if data.get("rule") not in RULES:
        raise ThresholdsFileError(f"thresholds={path}: rule {data.get('rule')!r} is not one of {', '.join(RULES)}")
    classes = data.get("classes") or {}
    if not isinstance(classes, dict) or not all(isinstance(v, dict) for v in classes.values()):
        raise ThresholdsFileError(f"thresholds={path}: 'classes' must map dataset -> class -> thresholds")
    return DecisionThresholds(
        rule=data["rule"],
        fallback=_class_threshold(data.get(GLOBAL), GLOBAL, path),
        classes={d: {c: _class_threshold(t, f"classes.{d}.{c}", path) for c, t in cls.items()}
                 for d, cls in classes.items()},
        q=data.get("q"),
        value=data.get("value"),
        source=str(data.get("source") or ""),
        checkpoint=data.get("checkpoint"),
        random_backbone=bool(data.get("random_backbone", False)),
        path=path,
    )
