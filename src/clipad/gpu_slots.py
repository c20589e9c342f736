"""One group of GPUs per sweep job on one machine, never shared (hydra/launcher=local_gpus).

submitit's local executor starts every job of a sweep at once and shows each the same GPUs. Here the
machine's GPUs are cut into slots of `gpus_per_job`; a job takes a free slot before it runs (an exclusive
lock on the slot's file, so two jobs can never hold one slot, and a crashed job's lock goes with its
process), sets CUDA_VISIBLE_DEVICES to the slot's GPUs, and gives the slot back when it ends. Jobs that
find no free slot wait for one.
"""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from clipad.errors import ConfigError

log = logging.getLogger(__name__)


def parse_gpus(gpus: str | int | list[int] | None) -> list[int]:
    """GPU indices from "0,1,3", a single index, a list, or None (every GPU nvidia-smi lists)."""
    if gpus is None:
        return list(range(visible_gpu_count()))
    if isinstance(gpus, int):
        return [gpus]
    if isinstance(gpus, str):
        return [int(part) for part in gpus.replace(" ", "").split(",") if part]
    return [int(gpu) for gpu in gpus]


def visible_gpu_count() -> int:
    """GPUs nvidia-smi lists (asking torch would initialise CUDA before CUDA_VISIBLE_DEVICES is set)."""
    if shutil.which("nvidia-smi") is None:
        raise ConfigError(
            "hydra.callbacks.gpu_slots.gpus is null and nvidia-smi is not on PATH: list the GPUs to share, "
            "e.g. CLIPAD_GPUS=0,1,2,3 (conf/hydra/launcher/local_gpus.yaml)"
        )
    listed = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, check=True).stdout
    return sum(1 for line in listed.splitlines() if line.startswith("GPU "))


def device_slots(gpus: list[int], gpus_per_job: int) -> list[list[int]]:
    """Consecutive groups of gpus_per_job GPUs; every GPU in exactly one group."""
    if gpus_per_job < 1:
        raise ConfigError(f"hydra.callbacks.gpu_slots.gpus_per_job={gpus_per_job} must be >= 1")
    if not gpus or len(gpus) % gpus_per_job:
        raise ConfigError(
            f"hydra.callbacks.gpu_slots: {len(gpus)} GPUs {gpus} do not split into groups of gpus_per_job="
            f"{gpus_per_job}: list a multiple of it in CLIPAD_GPUS (conf/hydra/launcher/local_gpus.yaml)"
        )
    if len(set(gpus)) != len(gpus):
        raise ConfigError(f"hydra.callbacks.gpu_slots.gpus lists a GPU twice: {gpus}")
    return [gpus[start : start + gpus_per_job] for start in range(0, len(gpus), gpus_per_job)]


@dataclass
class HeldSlot:
    index: int
    devices: list[int]
    lock: IO[str]

    def release(self) -> None:
        fcntl.flock(self.lock, fcntl.LOCK_UN)
        self.lock.close()


def acquire_slot(slots: list[list[int]], lock_dir: Path, poll_seconds: float = 1.0,
                 first: int = 0) -> HeldSlot:
    """Take the first free slot, trying from `first` on (the job number spreads jobs without contention);
    wait while every slot is held."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for step in range(len(slots)):
            index = (first + step) % len(slots)
            lock = open(lock_dir / f"slot_{index}.lock", "a")  # noqa: SIM115  (held until release)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            return HeldSlot(index, slots[index], lock)
        time.sleep(poll_seconds)


class GpuSlotCallback(Callback):
    """Hydra callback: a job holds one GPU slot from on_job_start to on_job_end (see the module docstring)."""

    def __init__(self, gpus: str | int | list[int] | None, gpus_per_job: int, lock_dir: str,
                 poll_seconds: float = 1.0) -> None:
        self.gpus = gpus
        self.gpus_per_job = int(gpus_per_job)
        self.lock_dir = Path(lock_dir)
        self.poll_seconds = float(poll_seconds)
        self.held: HeldSlot | None = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        slots = device_slots(parse_gpus(self.gpus), self.gpus_per_job)
        job_number = int(config.hydra.job.get("num") or 0)
        self.held = acquire_slot(slots, self.lock_dir, self.poll_seconds, first=job_number)
        devices = ",".join(str(gpu) for gpu in self.held.devices)
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized() and os.environ.get("CUDA_VISIBLE_DEVICES") != devices:
            self.held.release()
            raise ConfigError(
                f"CUDA is already initialised in this process on CUDA_VISIBLE_DEVICES="
                f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}, so job {job_number} cannot move to GPUs {devices}: "
                "run sweeps with hydra/launcher=local_gpus (one process per job)"
            )
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
        log.info("job %d: GPU slot %d, CUDA_VISIBLE_DEVICES=%s", job_number, self.held.index, devices)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self.held is not None:
            self.held.release()
            self.held = None
