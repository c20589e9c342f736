"""Evaluation at Real-IAD scale: synthetic maps and masks streamed through AnomalyMetrics; time and peak RSS.

    python bench/eval_scale.py            # 150,000 images of 256x256 and 30,000 of 518x518 (long: minutes each)
    python bench/eval_scale.py --quick    # the same cases scaled down 100x (says so in its table)
    python bench/eval_scale.py --cases 150000x256

Real-IAD-like: 30 classes, 5 views per sample, one third of the images anomalous, each with one square defect
covering --defect-area of the image (Real-IAD's true defect sizes are not modelled). Maps are uniform noise
raised inside the defect. Every image carries its sample id, so the sample-level (S-*) metrics are computed
too. Each case runs in its own forked process, so its peak RSS is its own (it includes the libraries imported
before the fork, reported as "baseline RSS"). "update" is the evaluator's time only (map generation is timed
apart); "compute" forms every metric of the results table and its inspection section. Never fails on time.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
import warnings

import torch

from clipad.metrics import AnomalyMetrics, MissingMetricWarning

QUICK_FACTOR = 100
CLASSES = 30
VIEWS = 5


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def synthetic_batch(gen: torch.Generator, start: int, count: int, size: int, defect_area: float):
    """Maps [count, S, S] in [0, 1], masks bool, labels, class names and sample ids of images start.."""
    index = torch.arange(start, start + count)
    sample = index // VIEWS
    label = ((sample // CLASSES) % 3 == 0).long()  # a third of each class's samples anomalous, all their views
    masks = torch.zeros(count, size, size, dtype=torch.bool)
    side = max(1, round(size * defect_area**0.5))
    corners = torch.randint(0, size - side + 1, (count, 2), generator=gen)
    for i in torch.nonzero(label).flatten().tolist():
        top, left = corners[i].tolist()
        masks[i, top : top + side, left : left + side] = True
    maps = torch.rand(count, size, size, generator=gen) * 0.8
    maps += 0.2 * masks
    classes = [f"class{int(s) % CLASSES:02d}" for s in sample]
    samples = [f"S{int(s):06d}" for s in sample]
    return maps, masks, label, classes, samples


def run_case(images: int, size: int, args: argparse.Namespace, out: multiprocessing.Queue) -> None:
    torch.set_num_threads(1)
    baseline = rss_mib()
    gen = torch.Generator().manual_seed(0)
    metrics = AnomalyMetrics({"realiad_like": "industrial"})
    made = updated = 0.0
    for start in range(0, images, args.batch):
        count = min(args.batch, images - start)
        tick = time.perf_counter()
        maps, masks, label, classes, samples = synthetic_batch(gen, start, count, size, args.defect_area)
        made += time.perf_counter() - tick
        tick = time.perf_counter()
        metrics.update(maps.flatten(1).amax(1), label, maps, masks, torch.ones(count, dtype=torch.bool),
                       ["realiad_like"] * count, classes, view_sample_id=samples)
        updated += time.perf_counter() - tick
    state = metrics.state_nbytes()
    tick = time.perf_counter()
    with warnings.catch_warnings():  # quick runs: a class may get too few samples for a metric
        warnings.simplefilter("ignore", MissingMetricWarning)
        table = metrics.compute()
    computed = time.perf_counter() - tick
    mean = table.class_means()
    out.put({"images": images, "size": size, "generate": made, "update": updated, "compute": computed,
             "state_mib": state / 2**20, "baseline_mib": baseline, "peak_mib": rss_mib(),
             "s_auroc": mean["sample_auroc"], "p_aupro": mean["pixel_aupro"]})


def parse_cases(text: str) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in case.split("x")) for case in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="150000x256,30000x518", help="IMAGESxSIZE[,IMAGESxSIZE...]")
    parser.add_argument("--quick", action="store_true", help=f"every case with {QUICK_FACTOR}x fewer images")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--defect-area", type=float, default=0.01, help="defect share of an anomalous image")
    args = parser.parse_args()
    cases = [(max(VIEWS * 3, n // QUICK_FACTOR) if args.quick else n, s) for n, s in parse_cases(args.cases)]
    if args.quick:
        print(f"QUICK run: image counts scaled down {QUICK_FACTOR}x; the full run is `python bench/eval_scale.py`")
    context = multiprocessing.get_context("fork")
    print("| images | size | generate s | update s | compute s | state MiB | baseline RSS MiB | peak RSS MiB | "
          "S-AUROC | P-AUPRO |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for images, size in cases:
        queue = context.Queue()
        process = context.Process(target=run_case, args=(images, size, args, queue))
        process.start()
        r = queue.get()
        process.join()
        print(f"| {r['images']:,} | {r['size']} | {r['generate']:.1f} | {r['update']:.1f} | {r['compute']:.1f} | "
              f"{r['state_mib']:.1f} | {r['baseline_mib']:.0f} | {r['peak_mib']:.0f} | {r['s_auroc']:.3f} | "
              f"{r['p_aupro']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
