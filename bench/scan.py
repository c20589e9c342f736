"""Scanning at Real-IAD scale: 30 classes x 1,000 samples x 5 views = 150k images listed by JSON split files.

    python bench/scan.py                     # the full 150k-image tree (built in /tmp, ~20 s, removed after)
    python bench/scan.py --samples 100       # 15k images

The tree has Real-IAD's layout (realiad_jsons/<class>.json, realiad_1024/<class>/{OK,NG/<defect>}/S<NNNN>/...)
with empty files: the scanner stats every listed file but never decodes one. A third of the samples are
defective, with a mask on their first view. Times: building the tree (not the scanner), scanning it (JSON
parse + one stat per file), and the per-class count table `python -m clipad.data.inspect` prints. The issue's
target is a scan of at most 30 s; timing never fails the run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from clipad.data.catalog import load_dataset_config
from clipad.data.inspect import count_table
from clipad.data.scanners import scan_layout


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=30)
    parser.add_argument("--samples", type=int, default=1000, help="samples per class (each has --views images)")
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--keep", type=Path, default=None, help="build the tree here and keep it")
    args, _ = parser.parse_known_args(argv)  # bench/run_all.py passes its own arguments to every bench
    return args


def touch(path: str) -> None:
    with open(path, "wb"):
        pass


def build_tree(root: Path, classes: int, samples: int, views: int) -> int:
    """Write the split files and empty image/mask files; return the number of images."""
    jsons = root / "realiad_jsons"
    jsons.mkdir(parents=True)
    images = 0
    for c in range(classes):
        cls = f"class{c:02d}"
        splits: dict[str, list[dict]] = {"train": [], "test": []}
        for s in range(1, samples + 1):
            defective = s % 3 == 0
            folder = f"NG/HS/S{s:04d}" if defective else f"OK/S{s:04d}"
            os.makedirs(root / "realiad_1024" / cls / folder)
            split = "test" if defective or s % 2 == 0 else "train"
            for v in range(1, views + 1):
                stem = f"{cls}_{s:04d}_{'NG_HS' if defective else 'OK'}_C{v}_20240101120000"
                mask = f"{folder}/{stem}.png" if defective and v == 1 else None
                touch(str(root / "realiad_1024" / cls / folder / f"{stem}.jpg"))
                if mask:
                    touch(str(root / "realiad_1024" / cls / mask))
                splits[split].append({"category": cls, "anomaly_class": "HS" if defective else "OK",
                                      "image_path": f"{folder}/{stem}.jpg", "mask_path": mask})
                images += 1
        (jsons / f"{cls}.json").write_text(json.dumps({"meta": {"prefix": cls, "normal_class": "OK"}, **splits}))
    return images


def timed(action):
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def main() -> None:
    args = parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="clipad-bench-scan-"))
    try:
        images, build_s = timed(lambda: build_tree(root / "realiad", args.classes, args.samples, args.views))
        cfg = load_dataset_config("realiad")
        result, scan_s = timed(lambda: scan_layout("realiad", root / "realiad", cfg))
        classes = sorted({row["cls_name"] for row in result.rows})
        table, count_s = timed(lambda: count_table(result, classes, pixel_labels=True))
        assert len(result.rows) == images, (len(result.rows), images)
        print(f"Real-IAD-like tree: {args.classes} classes x {args.samples} samples x {args.views} views = "
              f"{images:,} images, {len(table)} count rows")
        print(f"{'step':<34}{'seconds':>9}{'images/s':>12}")
        for step, seconds in (("build tree (not clipad)", build_s), ("scan (JSON + stat per file)", scan_s),
                              ("inspect count table", count_s)):
            print(f"{step:<34}{seconds:9.2f}{images / seconds if seconds else float('inf'):12,.0f}")
        print(f"scan target <= 30 s: {'met' if scan_s <= 30 else 'NOT met'}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
