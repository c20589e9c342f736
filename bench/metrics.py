"""Benchmark clipad's exact pixel metrics against scikit-learn and the common 200-threshold AUPRO recipe.

    python bench/metrics.py              # MVTec-AD-sized: 1,725 maps of 518x518 in 15 classes
    python bench/metrics.py --n 100      # quick run

Random anomaly maps with blob-shaped ground truth are generated per class (seeded). clipad's
``AnomalyMetrics`` stores maps as 16-bit levels; every reference runs on exactly those stored values.
clipad's time covers every metric it reports: the 7 threshold-free ones, the inspection section
(Overkill@2/5/10, AUPIMO mean and std) and the decisions at a fixed image and pixel threshold.
Each method runs in its own forked process, so its peak RSS is its own (each includes the ~0.8 GB of
libraries imported before the fork). Prints a table; never fails on time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from skimage import measure
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

from clipad.calibration.thresholds import ClassThreshold, DecisionThresholds
from clipad.metrics import AnomalyMetrics, dequantize_levels, quantize_maps

FPR_LIMIT = 0.3
RECIPE_STEPS = 200
TARGET_SECONDS = 60.0
TARGET_SPEEDUP = 5.0
TARGET_DIFF = 1e-6


# ------------------------------------------------------------------ data
def images_per_class(n: int, classes: int) -> list[int]:
    return [n // classes + (c < n % classes) for c in range(classes)]


def class_batches(args: argparse.Namespace, cls: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(maps float32 [b, S, S] in [0, 1], masks bool [b, S, S]) of one class, identical in every process."""
    n_images, size = images_per_class(args.n, args.classes)[cls], args.size
    gen = torch.Generator().manual_seed(args.seed * 1000 + cls)
    anomalous = torch.rand(n_images, generator=gen) < 0.7
    anomalous[: min(n_images, 2)] = torch.tensor([True, False])[: min(n_images, 2)]  # both kinds present
    for start in range(0, n_images, args.batch):
        with one_torch_thread():
            batch = make_batch(gen, anomalous[start : start + args.batch].tolist(), size)
        yield batch


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Data generation is not timed; on a loaded 2-core machine two threads made it 5x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def make_batch(gen: torch.Generator, anomalous: list[bool], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    count = len(anomalous)
    coarse = torch.rand(count, 1, size // 16 + 2, size // 16 + 2, generator=gen)
    noise = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    signal = torch.zeros(count, size, size)
    masks = torch.zeros(count, size, size, dtype=torch.bool)
    for i in range(count):
        if anomalous[i]:
            for _ in range(int(torch.randint(1, 4, (1,), generator=gen))):
                draw_blob(signal[i], masks[i], torch.rand(5, generator=gen).tolist())
    return torch.sigmoid(4 * (noise - 0.5) + 3 * signal - 0.5), masks


def draw_blob(signal: torch.Tensor, mask: torch.Tensor, shape: list[float]) -> None:
    """An elliptic defect (mask) with a soft bump of anomaly signal around it, drawn in its bounding box."""
    size = mask.shape[0]
    cy, cx, ry, rx, strength = shape
    cy, cx, ry, rx = cy * size, cx * size, 4 + ry * size / 8, 4 + rx * size / 8
    top, bottom = max(int(cy - 3 * ry), 0), min(int(cy + 3 * ry) + 1, size)
    left, right = max(int(cx - 3 * rx), 0), min(int(cx + 3 * rx) + 1, size)
    ys = ((torch.arange(top, bottom) - cy) / ry) ** 2
    xs = ((torch.arange(left, right) - cx) / rx) ** 2
    dist = ys[:, None] + xs[None, :]  # 1 on the ellipse; the bump fades out by 3 radii
    mask[top:bottom, left:right] |= dist <= 1
    window = signal[top:bottom, left:right]
    torch.maximum(window, (0.3 + strength) * torch.exp(-dist / 2), out=window)


def stored_class(args: argparse.Namespace, cls: int) -> tuple[np.ndarray, np.ndarray]:
    """One class as the evaluator stores it: uint16 levels [n, S, S] and bool masks."""
    levels, masks = zip(*((quantize_maps(m), k.numpy()) for m, k in class_batches(args, cls)))
    return np.concatenate(levels), np.concatenate(masks)


# ------------------------------------------------------------------ methods (each in its own process)
def run_clipad(args: argparse.Namespace) -> dict:
    fixed = DecisionThresholds("fixed", ClassThreshold(0.5, 0.5))  # adds the fixed-threshold section
    metrics = AnomalyMetrics(domains={"bench": "industrial"}, thresholds=fixed)
    update_s = 0.0
    for cls in range(args.classes):
        for maps, masks in class_batches(args, cls):
            count = len(maps)
            score, label = maps.flatten(1).amax(1), masks.flatten(1).any(1).long()
            has_mask, names = (
                torch.ones(count, dtype=torch.bool),
                (["bench"] * count, [f"class{cls:02d}"] * count),
            )
            start = time.perf_counter()
            metrics.update(score, label, maps, masks, has_mask, *names)
            update_s += time.perf_counter() - start
    state_bytes = metrics.state_nbytes()
    start = time.perf_counter()
    table = metrics.compute()
    compute_s = time.perf_counter() - start
    rows = [r for r in table.rows if r["level"] == "class"]
    values = {m: [r[m] for r in rows] for m in ("pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_aupro")}
    seconds = {"all": update_s + compute_s, "update": update_s, "compute": compute_s}
    n_metrics = len(table.metrics) + sum(len(section.metrics) for section in table.sections.values())
    return {"seconds": seconds, "values": values, "state_mib": state_bytes / 2**20, "n_metrics": n_metrics}


def run_sklearn(args: argparse.Namespace) -> dict:
    seconds = {"pixel_auroc": 0.0, "pixel_ap": 0.0, "pixel_f1max": 0.0}
    values = {k: [] for k in seconds}
    for cls in range(args.classes):
        levels, masks = stored_class(args, cls)
        scores = dequantize_levels(levels).ravel()
        truth = masks.ravel()
        del levels
        for metric, compute in (
            ("pixel_auroc", roc_auc_score),
            ("pixel_ap", average_precision_score),
            ("pixel_f1max", sklearn_max_f1),
        ):
            start = time.perf_counter()
            values[metric].append(float(compute(truth, scores)))
            seconds[metric] += time.perf_counter() - start
    return {"seconds": seconds, "values": values}


def sklearn_max_f1(truth: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(truth, scores)
    both = precision + recall
    return float(np.max(np.divide(2 * precision * recall, both, out=np.zeros_like(both), where=both > 0)))


def run_exact_aupro(args: argparse.Namespace) -> dict:
    return run_per_class(args, "pixel_aupro", exact_aupro)


def run_recipe_aupro(args: argparse.Namespace) -> dict:
    def compute(levels: np.ndarray, masks: np.ndarray) -> float:
        return recipe_aupro(dequantize_levels(levels), masks)

    return run_per_class(args, "pixel_aupro", compute, classes=args.recipe_classes)


def run_per_class(args: argparse.Namespace, metric: str, compute: Callable, classes: int | None = None) -> dict:
    seconds, values = 0.0, []
    for cls in range(classes or args.classes):
        levels, masks = stored_class(args, cls)
        start = time.perf_counter()
        values.append(float(compute(levels, masks)))
        seconds += time.perf_counter() - start
    return {"seconds": {metric: seconds}, "values": {metric: values}}


def exact_aupro(levels: np.ndarray, masks: np.ndarray, n_levels: int = 65536) -> float:
    """Reference written independently of clipad: each region's overlap at every distinct stored value."""
    region_hists = []
    for image_levels, mask in zip(levels, masks):
        regions = measure.label(mask, connectivity=2)
        n_regions = int(regions.max())
        if n_regions:
            inside = regions > 0
            flat = (regions[inside].astype(np.int64) - 1) * n_levels + image_levels[inside]
            region_hists.append(np.bincount(flat, minlength=n_regions * n_levels).reshape(n_regions, n_levels))
    hists = np.concatenate(region_hists)[:, ::-1]  # highest level first
    normal = np.bincount(levels[~masks], minlength=n_levels)[::-1]
    present = (normal + hists.sum(0)) > 0  # the distinct thresholds
    overlap = np.cumsum(hists, axis=1)[:, present] / hists.sum(1, keepdims=True)
    fpr = np.cumsum(normal)[present] / normal.sum()
    return area_to_limit(fpr, overlap.mean(0), FPR_LIMIT)


def area_to_limit(fpr: np.ndarray, pro: np.ndarray, limit: float) -> float:
    fpr, pro = np.concatenate([[0.0], fpr]), np.concatenate([[0.0], pro])
    inside = int(np.sum(fpr <= limit))
    x, y = fpr[:inside], pro[:inside]
    if x[-1] < limit:
        y_limit = y[-1] + (pro[inside] - y[-1]) * (limit - x[-1]) / (fpr[inside] - x[-1])
        x, y = np.append(x, limit), np.append(y, y_limit)
    return float(np.trapezoid(y, x) / limit)


def recipe_aupro(maps: np.ndarray, masks: np.ndarray) -> float:
    """The widespread approximation: 200 even thresholds, components relabelled at each, FPR rescaled."""
    low, high = maps.min(), maps.max()
    normal = ~masks
    fprs, pros = [], []
    for threshold in np.arange(low, high, (high - low) / RECIPE_STEPS):
        above = maps > threshold
        overlaps = []
        for image_above, mask in zip(above, masks):
            regions = measure.label(mask, connectivity=2)
            n_regions = int(regions.max())
            if n_regions:
                hits = np.bincount(regions[image_above], minlength=n_regions + 1)[1:]
                sizes = np.bincount(regions.ravel(), minlength=n_regions + 1)[1:]
                overlaps.extend(hits / sizes)
        fprs.append(np.logical_and(above, normal).sum() / normal.sum())
        pros.append(np.mean(overlaps))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs < FPR_LIMIT
    fprs = (fprs[keep] - fprs[keep].min()) / (fprs[keep].max() - fprs[keep].min())
    return float(auc(fprs, pros[keep]))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _in_child(method: Callable, args: argparse.Namespace) -> dict:
    return method(args) | {"rss": peak_rss_mib()}


def run_isolated(method: Callable, args: argparse.Namespace) -> dict:
    with multiprocessing.get_context("fork").Pool(1) as pool:
        return pool.apply(_in_child, (method, args))


# ------------------------------------------------------------------ report
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1725, help="number of maps (default: MVTec AD test size)")
    parser.add_argument("--size", type=int, default=518, help="map side in pixels")
    parser.add_argument("--classes", type=int, default=15, help="classes the maps are split into")
    parser.add_argument("--batch", type=int, default=16, help="maps per update call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--recipe-classes",
        type=int,
        default=1,
        help="classes the slow 200-threshold recipe runs on; its time is scaled to all classes",
    )
    args = parser.parse_args()
    if args.n < 2 * args.classes:
        parser.error(f"--n must be at least 2 per class ({2 * args.classes} for {args.classes} classes)")
    if not 1 <= args.recipe_classes <= args.classes:
        parser.error(f"--recipe-classes must lie in [1, --classes={args.classes}]")

    print(
        f"clipad metrics bench: {args.n} maps of {args.size}x{args.size} in {args.classes} classes "
        f"({args.n * args.size**2 / 1e6:.0f} M pixels); {os.cpu_count()} CPU cores ({cpu_name()}), "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads, load average "
        f"{os.getloadavg()[0]:.1f}; RSS after imports {peak_rss_mib():.0f} MiB"
    )
    clipad = run_isolated(run_clipad, args)
    sklearn = run_isolated(run_sklearn, args)
    exact = run_isolated(run_exact_aupro, args)
    recipe = run_isolated(run_recipe_aupro, args)
    recipe_share = sum(images_per_class(args.n, args.classes)[: args.recipe_classes]) / args.n
    recipe["seconds"]["pixel_aupro"] /= recipe_share
    references = [  # method, metric, result, speed target applies, exact reference
        ("sklearn roc_auc_score", "pixel_auroc", sklearn, True, True),
        ("sklearn average_precision_score", "pixel_ap", sklearn, True, True),
        ("sklearn precision_recall_curve", "pixel_f1max", sklearn, True, True),
        ("exact AUPRO (numpy, per region)", "pixel_aupro", exact, False, True),
        ("200-threshold AUPRO recipe", "pixel_aupro", recipe, True, False),
    ]

    total = clipad["seconds"]["all"]
    table = [("method", "metric", "seconds", "peak RSS MiB", "clipad speed-up", "max |diff|", "")]
    split = (
        f"update {clipad['seconds']['update']:.2f} s + compute {clipad['seconds']['compute']:.2f} s; "
        f"metric state {clipad['state_mib']:.0f} MiB"
    )
    everything = f"all {clipad['n_metrics']}"
    table.append(("clipad AnomalyMetrics", everything, f"{total:.2f}", f"{clipad['rss']:.0f}", "-", "-", split))
    met = verdict(total <= TARGET_SECONDS)
    verdicts = [f"clipad, all metrics of {args.n} maps: {total:.1f} s ({met} <= {TARGET_SECONDS:.0f} s)"]
    for name, metric, result, speed_target, exact_reference in references:
        seconds, values = result["seconds"][metric], np.array(result["values"][metric])
        diff = float(np.max(np.abs(values - np.array(clipad["values"][metric][: len(values)]))))
        scaled = f"timed on {args.recipe_classes} of {args.classes} classes, scaled x{1 / recipe_share:.1f}"
        note = scaled if name.startswith("200") else ""
        speedup = seconds / total
        table.append((name, metric, f"{seconds:.2f}", f"{result['rss']:.0f}", f"{speedup:.1f}x", f"{diff:.1e}", note))
        if speed_target:
            verdicts.append(
                f"vs {name}: {speedup:.1f}x faster ({verdict(speedup >= TARGET_SPEEDUP)} >= {TARGET_SPEEDUP:.0f}x)"
            )
        if exact_reference:
            verdicts.append(f"vs {name}: max |diff| {diff:.1e} ({verdict(diff <= TARGET_DIFF)} <= {TARGET_DIFF:.0e})")
        else:
            verdicts.append(f"vs {name}: max |diff| {diff:.1e} = the recipe's approximation error")
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    print()
    for row in table:
        cells = (cell.ljust(w) if i in (0, 1, 6) else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        print("  ".join(cells).rstrip())
    print("\ntargets (informative; the bench never fails on them):")
    print("\n".join(f"  {line}" for line in verdicts))


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


if __name__ == "__main__":
    main()
