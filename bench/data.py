"""Data loading throughput: the clipad loader's images/s at 518 px on the synthetic set, next to the raw
decode rate (Pillow decode + RGB conversion only) and the single-process decode + transform rate.

    python bench/data.py                                  # 64 images, loaders with 0 and 2 workers
    python bench/data.py --images 256 --workers 0 2 4 --size 518 --data-dir data

The synthetic set is generated on first use (clipad.data.synthetic, ~15 s) under <data dir>/synthetic, the data
dir being --data-dir, else $CLIPAD_DATA, else ./data (as conf/paths/default.yaml), so later runs and the demo
reuse it; --tmp builds it in a temporary directory instead. Prints a table; timing never fails the run.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from clipad.data.dataset import AnomalyDataset, collate_batch
from clipad.data.image_io import read_mask, read_rgb
from clipad.data.scanners import scan
from clipad.data.synthetic import ensure_synthetic
from clipad.data.transforms import SampleTransform

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64, help="images per measurement")
    parser.add_argument("--size", type=int, default=518, help="input size (px)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="loader worker counts to try")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--data-dir", type=Path, default=None, help="where the synthetic set is (or is built)")
    parser.add_argument("--tmp", action="store_true", help="build the synthetic set in a temporary directory")
    args, _ = parser.parse_known_args(argv)  # bench/run_all.py passes its own arguments to every bench
    return args


def synthetic_rows(data_dir: Path, count: int) -> list[dict]:
    root = ensure_synthetic(data_dir / "synthetic")
    rows = scan("mvtec", root, OmegaConf.create({"name": "synthetic"}))  # the synthetic set has the MVTec layout
    rows = [row for row in rows if row["split"] == "test"]
    return [rows[i % len(rows)] for i in range(count)]


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.1f}" if seconds > 0 else "     inf"


def measure(rows: list[dict], args: argparse.Namespace) -> list[tuple[str, str, float]]:
    """(what, workers, seconds) per measurement over len(rows) images."""
    results = []
    start = time.perf_counter()
    for row in rows:
        read_rgb(row["img_path"])
        if row["mask_path"]:
            read_mask(row["mask_path"])
    results.append(("raw decode (image + mask)", "-", time.perf_counter() - start))

    transform = SampleTransform(args.size, CLIP_MEAN, CLIP_STD)
    dataset = AnomalyDataset(rows, dataset="synthetic", transform=transform,
                             prompt_names={r["cls_name"]: r["cls_name"] for r in rows}, pixel_labels=True)
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    results.append((f"decode + transform at {args.size} px", "-", time.perf_counter() - start))

    for workers in args.workers:
        loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=workers, collate_fn=collate_batch)
        start = time.perf_counter()  # includes starting the workers, as every epoch of a run without persistence
        for _ in loader:
            pass
        results.append((f"DataLoader -> Batch at {args.size} px", str(workers), time.perf_counter() - start))
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)  # what a dataloader worker gets; keeps rows comparable
    with tempfile.TemporaryDirectory(prefix="clipad-bench-") as scratch:
        data_dir = Path(scratch) if args.tmp else args.data_dir or Path(os.environ.get("CLIPAD_DATA", "data"))
        rows = synthetic_rows(data_dir, args.images)
        results = measure(rows, args)
        source_px = read_rgb(rows[0]["img_path"]).size[0]
    print(f"{len(rows)} synthetic test images of {source_px} px from {data_dir}, {os.cpu_count()} CPUs")
    print(f"{'measurement':<34} {'workers':>7} {'seconds':>8} {'images/s':>8}")
    for what, workers, seconds in results:
        print(f"{what:<34} {workers:>7} {seconds:8.2f} {rate(len(rows), seconds)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
