"""Scanners: one per dataset layout, each turning a dataset root into the sample table (list of SampleRow).

`scan(layout, root, cfg)` is the registry's entry point; `scan_layout` also returns the files that could
not be paired (for `python -m clipad.data.inspect`). `cfg` is the dataset's data node (conf/data/<name>.yaml).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from clipad.data.catalog import DatasetError, layout_help
from clipad.data.scanners.dagm import scan_dagm
from clipad.data.scanners.image_level import scan_headct, scan_yes_no
from clipad.data.scanners.ksdd import scan_ksdd
from clipad.data.scanners.mvtec import scan_btad, scan_mvtec
from clipad.data.scanners.mvtec_ad2 import scan_mvtec_ad2
from clipad.data.scanners.mvtec_loco import scan_mvtec_loco
from clipad.data.scanners.pixel_only import scan_clinicdb, scan_colondb, scan_isic, scan_tn3k
from clipad.data.scanners.realiad import scan_realiad
from clipad.data.scanners.result import Scan, UnpairedFile
from clipad.data.scanners.user_data import scan_folder, scan_meta
from clipad.data.scanners.visa import scan_visa

if TYPE_CHECKING:  # clipad.data.batch imports torch: keep scanning (and inspect) light
    from clipad.data.batch import SampleRow

Scanner = Callable[[Path, DictConfig], Scan]


def scan_synthetic(root: Path, cfg: DictConfig) -> Scan:
    """The embedded synthetic set: generated under root on first use, then read as an MVTec tree."""
    from clipad.data.synthetic import ensure_synthetic  # lazy: generation needs scikit-image's data files

    return scan_mvtec(ensure_synthetic(root, seed=int(cfg.get("seed", 0))), cfg)


SCANNERS: dict[str, Scanner] = {
    "mvtec": scan_mvtec,
    "mpdd": scan_mvtec,
    "dtd": scan_mvtec,
    "mvtec_ad2": scan_mvtec_ad2,
    "mvtec_loco": scan_mvtec_loco,
    "realiad": scan_realiad,
    "btad": scan_btad,
    "visa": scan_visa,
    "ksdd": scan_ksdd,
    "dagm": scan_dagm,
    "headct": scan_headct,
    "brainmri": scan_yes_no,
    "br35h": scan_yes_no,
    "isic": scan_isic,
    "clinicdb": scan_clinicdb,
    "colondb": scan_colondb,
    "tn3k": scan_tn3k,
    "folder": scan_folder,
    "meta": scan_meta,
    "synthetic": scan_synthetic,
}
GENERATED_LAYOUTS = frozenset({"synthetic"})  # built on first use: a missing root is not an error


def scan(layout: str, root: Path, cfg: DictConfig) -> list[SampleRow]:
    """The sample table of the dataset at `root` (every class and split found)."""
    return scan_layout(layout, root, cfg).rows


def scan_layout(layout: str, root: Path, cfg: DictConfig) -> Scan:
    """Rows plus unpaired files. Raises DatasetError for a missing root or a root without any image."""
    if layout not in SCANNERS:
        raise ValueError(f"unknown dataset layout {layout!r} (data.layout); known: {', '.join(sorted(SCANNERS))}")
    root = Path(root)
    if layout not in GENERATED_LAYOUTS and not root.is_dir():
        raise DatasetError(_missing_root_message(root, layout, cfg))
    result = SCANNERS[layout](root, cfg)
    if not result.rows:
        entries = sorted(p.name for p in root.iterdir())[:12] if root.is_dir() else []
        raise DatasetError(
            f"no images of dataset {cfg.get('name')!r} found under {root} (layout {layout!r}); it contains: "
            f"{entries or 'nothing'}.\n{layout_help(cfg)}"
        )
    return result


def _missing_root_message(root: Path, layout: str, cfg: DictConfig) -> str:
    parent = root.parent
    siblings = sorted(p.name for p in parent.iterdir() if not p.name.startswith("."))[:20] if parent.is_dir() else None
    if siblings is not None:
        where = f"{parent} contains: {siblings or 'nothing'}"
    else:
        where = f"{_file_ancestor(root) or parent} {'is a file' if _file_ancestor(root) else 'does not exist either'}"
    if layout == "folder":
        fix = "Point data.root at your folder."
    elif layout == "meta":
        fix = "Point data.meta_path at the meta.json file."
    else:
        fix = (
            f"Put dataset {cfg.get('name')!r} there, or point paths.data_dir (env CLIPAD_DATA) at the folder "
            f"holding '{cfg.get('dirname', cfg.get('name'))}/' (or set data.root)."
        )
    problem = "is a file, not a folder" if root.is_file() else f"does not exist ({where})"
    return f"dataset root {root} {problem}. {fix}\n{layout_help(cfg)}"


def _file_ancestor(path: Path) -> Path | None:
    """The first folder on the path to `path` that is a file (then nothing below it can exist)."""
    return next((p for p in reversed(path.parents) if p.is_file()), None)


__all__ = ["SCANNERS", "DatasetError", "Scan", "Scanner", "UnpairedFile", "scan", "scan_layout"]
