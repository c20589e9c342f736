"""Model throughput: latency per image, images/s and peak memory of each model next to the bare backbone.

    python bench/model.py            # CPU: tiny and ViT-B-16 (random weights) at 224 px, batch 1 and 8
    python bench/model.py --quick    # CPU: tiny only, one timed run per case
    python bench/model.py --backbones vit_b16_plus_240 --size 240 --cases "winclip 0-shot" "winclip 1-shot"

    python bench/model.py --interleave    # CPU: all cases of a setting in one process, taking turns
    python bench/model.py --device cuda   # GPU (`make bench-gpu`): ViT-L-14-336 at 518 px, fp32 and bf16

The floor of every row group is a bare image-tower forward of the same backbone on the same input
(`ClipBackbone.encode_image`, no grad); every other row is compared with it (CPU: by CPU time, which waiting
for a core on a shared machine does not inflate; GPU: by wall time). A second table gives images/s at
batch 1 and 8. Timing never fails the run.

On CPU each case runs in its own child process, forked from this one after the imports (so no child pays
them); on CUDA the cases run in this process, one after another (memory counters reset per case):
  time    median wall time of the timed runs after one warm-up run (the warm-up also computes anything a
          model caches: text features per class, few-shot prompt features per class; the "adaptclip memory"
          case clears its cache on every run: a cold build of the prompt memory of k = batch normal
          images), and the median CPU time of the process over the same runs (all threads). With more
          threads than free cores, waiting threads spin: CPU time is inflated too; --threads 1 is the
          steadiest setting on a shared machine;
  --interleave  (CPU) the steadier ratios: the floor and every case of a setting are built in one child
          process, warmed up, then timed in --repeats rounds, one call of each case per round, so a change of
          load on a shared machine hits the floor and the models alike; medians over the rounds. No memory
          column (the cases share the process).
  memory  CPU: the peak resident memory (VmHWM, reset through /proc/self/clear_refs just before the warm-up)
          minus the resident memory at that moment, i.e. what running the case adds on top of the loaded
          model and input, allocator caching included; GPU: torch.cuda.max_memory_allocated minus the
          allocation at the start (the total peak is in the last column).
"""
from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import re
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from clipad.cli.hydra_setup import compose_config
from clipad.data.batch import Batch
from clipad.models.adaclip import module as _adaclip  # noqa: F401  (imported before forking)
from clipad.models.adaptclip import module as _adaptclip  # noqa: F401
from clipad.models.anomalyclip import module as _anomalyclip  # noqa: F401
from clipad.models.base import backbone_from_config
from clipad.models.registry import build_module
from clipad.models.winclip import module as _winclip  # noqa: F401

# Inference budgets relative to the floor (the targets).
TARGETS = {"adaclip": 2.5, "adaptclip 1-shot": 1.5, "adaptclip 0-shot": 1.3, "adaptclip memory": 1.1}
CASES = ("floor", "clip", "adaclip", "adaptclip 0-shot", "adaptclip 1-shot", "adaptclip memory", "anomalyclip",
         "adaclip train", "adaptclip train", "anomalyclip train", "winclip 0-shot", "winclip 1-shot")
BACKBONES = {"tiny": "tiny", "vit_b16": "vit_b16", "vit_l14_336": "vit_l14_336",
             "vit_b16_plus_240": "vit_b16_plus_240"}


@dataclass(frozen=True)
class Setting:
    device: str
    backbone: str  # conf/backbone name
    size: int
    batch: int
    precision: str = "fp32"  # fp32 | bf16 (autocast; CUDA only)


@dataclass
class Measured:
    ms_per_image: float | None = None
    cpu_ms_per_image: float | None = None
    memory_mb: float | None = None
    note: str = ""


# ----------------------------------------------------------------------------- child side
def _proc_kb(key: str) -> float:
    return float(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


class PeakMemory:
    """Extra memory used from start() to peak_mb(): see the module docstring for what is measured."""

    def __init__(self, device: str) -> None:
        self.device = device

    def start(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
            self.base = _proc_kb("VmRSS")

    def peak_mb(self) -> float:
        if self.device == "cuda":
            return (torch.cuda.max_memory_allocated() - self.base) / 2**20
        return (_proc_kb("VmHWM") - self.base) / 1024


def config_for(model: str, setting: Setting):
    return compose_config(
        "train",
        [f"model={model}", f"backbone={BACKBONES[setting.backbone]}", f"backbone.image_size={setting.size}",
         "backbone.pretrained=null", "backbone.checkpoint=null", "backbone.allow_random=true", "data=mvtec",
         "callbacks=none", "logger=none", "paths.output_dir=.", "shots=0"],
    )


def random_batch(setting: Setting, normal_image: bool = False) -> Batch:
    b, s, device = setting.batch, setting.size, setting.device
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(b, 1, s, s)
    mask[: b // 2, :, s // 4 : s // 2, s // 4 : s // 2] = 1  # half the images anomalous
    return Batch(
        image=torch.randn(b, 3, s, s, generator=generator).to(device),
        mask=mask.to(device),
        has_mask=torch.ones(b, dtype=torch.bool, device=device),
        label=(mask.flatten(1).amax(1) > 0).long().to(device),
        cls_name=["bottle"] * b, prompt_name=["bottle"] * b, dataset=["bench"] * b, path=[""] * b,
        normal_image=torch.randn(b, 3, s, s, generator=generator).to(device) if normal_image else None,
    )


class BenchPrompts:
    """Random normal prompt images: one (the 1-shot case) or one per batch image (the memory build)."""

    def __init__(self, setting: Setting, shots: int = 1) -> None:
        self.images = torch.randn(shots, 3, setting.size, setting.size, generator=torch.Generator().manual_seed(1))

    def normal_prompt_images(self, dataset: str, cls_name: str) -> torch.Tensor:
        return self.images


def winclip_case(case: str, setting: Setting) -> Callable[[], object]:
    """WinCLIP (0-shot) / WinCLIP+ (1-shot): its cost is the window pass, one extra image-tower pass per
    window (2x2 and 3x3, stride 1: 169 + 144 windows at 224 px / 16, 196 + 169 at 240 px), short sequences."""
    module = build_module(config_for("winclip", setting), device=setting.device).to(setting.device).eval()
    if case == "winclip 1-shot":
        module.shots = 1
        module.prompt_source = BenchPrompts(setting)  # the memory is built in the warm-up run, then cached
    batch = random_batch(setting)
    return lambda: module(batch)


def case_function(case: str, setting: Setting) -> Callable[[], object] | str:
    """The call to time, or a note why the case does not apply."""
    if case.startswith("winclip"):
        return winclip_case(case, setting)
    if case == "floor":
        backbone = backbone_from_config(config_for("clip", setting), device=setting.device)
        images = random_batch(setting).image
        return lambda: torch.no_grad()(backbone.encode_image)(images)
    model = case.split()[0]
    training = case.endswith("train")
    module = build_module(config_for(model, setting), device=setting.device).to(setting.device)
    if case == "adaptclip 1-shot":
        module.shots = 1
        module.prompt_source = BenchPrompts(setting)
    if case == "adaptclip memory":
        # A cold prompt-memory build for k = batch normal images, against the floor on as many images.
        module.eval()
        module.shots = setting.batch
        module.prompt_source = BenchPrompts(setting, shots=setting.batch)

        def cold_memory() -> None:
            module.clear_prompt_cache()
            module.prompt_memory("bench", "bottle")

        return cold_memory
    batch = random_batch(setting, normal_image=training and model == "adaptclip")
    if not training:
        module.eval()
        return lambda: torch.no_grad()(module)(batch)
    if model == "adaptclip" and setting.batch < 2:
        return "n/a: BatchNorm needs 2+ images"
    module.train()
    optimizer = module.configure_optimizers()

    def step() -> None:
        # bf16: the forward under autocast, backward and optimizer step outside it (as Lightning does).
        with torch.autocast(device_type=setting.device, dtype=torch.bfloat16, enabled=setting.precision == "bf16"):
            loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def prepare_child(threads: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    warnings.filterwarnings("ignore")  # Lightning warns that self.log runs without a Trainer


@dataclass
class Timings:
    """Wall and CPU time of each timed call of one case."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def time(self, run: Callable[[], object], sync: Callable[[], object] = lambda: None) -> None:
        start, cpu_start = time.perf_counter(), time.process_time()
        run()
        sync()
        self.wall.append(time.perf_counter() - start)
        self.cpu.append(time.process_time() - cpu_start)

    def per_image(self, batch: int, memory_mb: float | None = None, note: str = "") -> Measured:
        """Medians in ms per image."""
        scale = 1000 / batch
        return Measured(ms_per_image=statistics.median(self.wall) * scale,
                        cpu_ms_per_image=statistics.median(self.cpu) * scale, memory_mb=memory_mb, note=note)


def measure(case: str, setting: Setting, max_repeats: int, min_seconds: float, threads: int) -> Measured:
    prepare_child(threads)
    run = case_function(case, setting)
    if isinstance(run, str):
        return Measured(note=run)
    if setting.precision == "bf16" and not case.endswith("train"):  # a training step handles its own
        run = autocast_bf16(run, setting.device)
    sync = torch.cuda.synchronize if setting.device == "cuda" else (lambda: None)
    memory = PeakMemory(setting.device)
    memory.start()
    run()  # warm-up
    sync()
    timings = Timings()
    while len(timings.wall) < max_repeats and (len(timings.wall) < 2 or sum(timings.wall) < min_seconds):
        timings.time(run, sync)
        if max_repeats == 1:
            break
    total = f"total peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MB" if setting.device == "cuda" else ""
    return timings.per_image(setting.batch, memory_mb=memory.peak_mb(), note=total)


def measure_interleaved(cases: list[str], setting: Setting, rounds: int, threads: int) -> dict[str, Measured]:
    """All cases in this process, timed in rounds of one call each (see --interleave in the docstring)."""
    prepare_child(threads)
    runs = {case: case_function(case, setting) for case in cases}
    results = {case: Measured(note=run) for case, run in runs.items() if isinstance(run, str)}
    timed = {case: run for case, run in runs.items() if not isinstance(run, str)}
    for run in timed.values():
        run()  # warm-up (fills the caches, as in measure)
    timings = {case: Timings() for case in timed}
    for _ in range(rounds):
        for case, run in timed.items():
            timings[case].time(run)
    note = f"interleaved, {rounds} round{'' if rounds == 1 else 's'}"
    for case in timed:
        results[case] = timings[case].per_image(setting.batch, note=note)
    return {case: results[case] for case in cases}


def autocast_bf16(run: Callable[[], object], device: str) -> Callable[[], object]:
    def under_autocast() -> object:
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            return run()

    return under_autocast


def _child(case: str, setting: Setting, repeats: int, min_seconds: float, threads: int, pipe) -> None:
    try:
        pipe.send(measure(case, setting, repeats, min_seconds, threads))
    except Exception as error:  # noqa: BLE001  (a failing model is a row of the table, not the end of the run)
        traceback.print_exc()
        pipe.send(Measured(note=f"error: {type(error).__name__}: {str(error)[:80]}"))


def _interleaved_child(cases: list[str], setting: Setting, rounds: int, threads: int, pipe) -> None:
    try:
        pipe.send(measure_interleaved(cases, setting, rounds, threads))
    except Exception as error:  # noqa: BLE001  (one failing model fails this setting's rows, not the run)
        traceback.print_exc()
        pipe.send({case: Measured(note=f"error: {type(error).__name__}: {str(error)[:80]}") for case in cases})


# ----------------------------------------------------------------------------- parent side
def in_child(target: Callable, target_args: tuple, timeout: float, on_timeout: Callable[[str], object]) -> object:
    """Run target(*target_args, pipe) in a forked child; its one message, or on_timeout(note)."""
    context = mp.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=target, args=(*target_args, send))
    process.start()
    send.close()
    result = receive.recv() if receive.poll(timeout) else on_timeout(f"timeout after {timeout} s")
    process.join(5)
    if process.is_alive():
        process.kill()
    return result


def run_case(case: str, setting: Setting, args: argparse.Namespace) -> Measured:
    if setting.device == "cuda":
        return run_case_here(case, setting, args)
    return in_child(_child, (case, setting, args.repeats, args.min_seconds, args.threads), args.timeout,
                    lambda note: Measured(note=note))


def run_interleaved(cases: list[str], setting: Setting, args: argparse.Namespace) -> dict[str, Measured]:
    return in_child(_interleaved_child, (cases, setting, args.repeats, args.threads), args.timeout * len(cases),
                    lambda note: {case: Measured(note=note) for case in cases})


def run_case_here(case: str, setting: Setting, args: argparse.Namespace) -> Measured:
    """CUDA: in this process (a forked child cannot use CUDA, a spawned one pays the imports again);
    the peak-memory counters are reset per case and the cached blocks freed after it."""
    try:
        return measure(case, setting, args.repeats, args.min_seconds, args.threads)
    except Exception as error:  # noqa: BLE001  (an out-of-memory case is a row of the table)
        traceback.print_exc()
        return Measured(note=f"error: {type(error).__name__}: {str(error)[:80]}")
    finally:
        gc.collect()
        torch.cuda.empty_cache()


def format_row(setting: Setting, case: str, result: Measured, floor: Measured | None) -> str:
    cells = [setting.device, setting.backbone, str(setting.size), str(setting.batch), setting.precision, case]
    if result.ms_per_image is None:
        return "| " + " | ".join(cells + ["", "", "", "", "", result.note]) + " |"
    on_gpu = setting.device == "cuda"
    ratio = None
    if floor is not None and floor.ms_per_image:
        ratio = (result.ms_per_image / floor.ms_per_image if on_gpu
                 else result.cpu_ms_per_image / floor.cpu_ms_per_image)
    target = TARGETS.get(case)
    verdict = ""
    if target is not None and ratio is not None:
        verdict = f"<= {target}x: {'met' if ratio <= target else 'NOT met'}"
    cells += [
        f"{result.ms_per_image:.1f}",
        f"{result.cpu_ms_per_image:.1f}",
        f"{1000 / result.ms_per_image:.1f}",
        f"{ratio:.2f}x" if ratio is not None else "",
        f"{result.memory_mb:.0f}" if result.memory_mb is not None else "",
        "; ".join(part for part in (verdict, result.note) if part),
    ]
    return "| " + " | ".join(cells) + " |"


def settings(args: argparse.Namespace) -> list[Setting]:
    if args.device == "cuda":
        # The papers' setting: ViT-L-14-336 at 518 px, batches 1 and 8, fp32 and bf16.
        return [Setting("cuda", "vit_l14_336", 518, batch, precision)
                for precision in ("fp32", "bf16") for batch in (1, 8)]
    backbones = ["tiny"] if args.quick else args.backbones
    return [Setting("cpu", b, args.size, batch) for b in backbones for batch in args.batches]


def training_memory_settings() -> list[Setting]:
    """CUDA: an AdaCLIP training step at batches 1, 4 and 8 (its peak memory is the figure wanted)."""
    return [Setting("cuda", "vit_l14_336", 518, batch, precision) for precision in ("fp32", "bf16")
            for batch in (1, 4, 8)]


def batching_table(results: dict[tuple[Setting, str], Measured]) -> list[str]:
    """images/s at batch 1 and 8 per model: the gain per image of batching (target >= 1.5x on CPU)."""
    lines = ["| device | backbone | size | precision | case | images/s batch 1 | images/s batch 8 | "
             "gain (wall) | gain (CPU time) | target |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (setting, case), one in results.items():
        eight = results.get((replace(setting, batch=8), case))
        if setting.batch != 1 or eight is None or one.ms_per_image is None or eight.ms_per_image is None:
            continue
        gain = one.ms_per_image / eight.ms_per_image
        cpu_gain = one.cpu_ms_per_image / eight.cpu_ms_per_image
        verdict = f">= 1.5x: {'met' if cpu_gain >= 1.5 else 'NOT met'}" if setting.device == "cpu" else ""
        lines.append(f"| {setting.device} | {setting.backbone} | {setting.size} | {setting.precision} | {case} | "
                     f"{1000 / one.ms_per_image:.1f} | {1000 / eight.ms_per_image:.1f} | {gain:.2f}x | "
                     f"{cpu_gain:.2f}x | {verdict} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: ViT-L-14-336 at 518 px, batch 1 and 8, fp32 and bf16, and the peak memory "
                             "of AdaCLIP training steps at batch 1, 4, 8 (one table; exits 0 without CUDA)")
    parser.add_argument("--quick", action="store_true", help="tiny backbone only, one timed run per case")
    parser.add_argument("--backbones", nargs="+", default=["tiny", "vit_b16"], choices=sorted(BACKBONES))
    parser.add_argument("--size", type=int, default=224, help="CPU input size (px)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--repeats", type=int, default=5, help="at most this many timed runs per case")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="stop repeating (after 2 runs) past this")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--timeout", type=float, default=900, help="seconds before a case is abandoned")
    parser.add_argument("--interleave", action="store_true",
                        help="CPU: time a setting's cases in one process, taking turns (steadier ratios, no memory)")
    args = parser.parse_args()
    if args.interleave and args.device == "cuda":
        parser.error("--interleave is for the CPU (on CUDA the cases already run in one process)")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: bench/model.py --device cuda has nothing to run (exit 0)")
        return 0
    if args.quick:
        args.repeats = 1
    if args.device == "cuda":
        args.repeats, args.min_seconds = min(args.repeats, 3), min(args.min_seconds, 1.0)  # the 8-minute budget
        print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}; random weights "
              "(speed does not depend on them)")
    else:
        print(f"torch {torch.__version__}, {args.threads} CPU threads; random weights (speed does not depend "
              "on them). On a shared machine compare the CPU-time columns: wall time includes waiting for a core.")
    print("| device | backbone | size | batch | precision | case | ms/image | CPU ms/image | images/s | vs floor | "
          "peak extra MB | target |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    results: dict[tuple[Setting, str], Measured] = {}
    inference_cases = [c for c in args.cases if c != "floor" and not (args.device == "cuda" and c.endswith("train"))]
    for setting in settings(args):
        cases = ["floor", *inference_cases]
        if args.interleave:
            measured = run_interleaved(cases, setting, args)
            for case in cases:
                results[setting, case] = measured[case]
                print(format_row(setting, case, measured[case], measured["floor"]), flush=True)
            continue
        floor = None
        for case in cases:
            result = results[setting, case] = run_case(case, setting, args)
            if case == "floor":
                floor = result
            print(format_row(setting, case, result, floor), flush=True)
    if args.device == "cuda":
        for setting in training_memory_settings():
            print(format_row(setting, "adaclip train", run_case("adaclip train", setting, args), None), flush=True)
    print("\nBatching: images/s at batch 1 and 8 (gain = batch-8 images/s over batch-1 images/s)")
    print("\n".join(batching_table(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
