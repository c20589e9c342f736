"""What train.py says and returns when SIGTERM (SLURM's time limit or preemption, `kill`) stops a run.

Lightning turns SIGTERM into a SIGTERMException at the end of the current batch. That exception is a
SystemExit without a code, so the process would exit 0 without results and without a word in train.log.
train.py catches it, logs where the run stands and the command that resumes it, and exits 143.

The resume point is the last end-of-epoch checkpoint (ModelCheckpoint's last.ckpt), not the state at
the signal: training batches are drawn per (seed, epoch) (clipad.data.datamodule.epoch_sampler), so a
resumed run replays the interrupted epoch with the same batches and ends where an uninterrupted run
ends. A mid-epoch checkpoint could not do that: the DataLoader cannot restart mid-epoch.
"""
from __future__ import annotations

import logging
import shlex
import signal
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger(__name__)

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM  # 143: what a shell and SLURM report for a run ended by SIGTERM
# Overrides the resume command sets itself.
RESUME_KEYS = ("ckpt_path=", "hydra.run.dir=")


def last_checkpoint(output_dir: Path) -> Path:
    return output_dir / "checkpoints" / "last.ckpt"


def resume_command(overrides: list[str], run_dir: Path, resumable: bool, program: str | None = None) -> str:
    """The command line that continues the run in its own directory (from last.ckpt when resumable)."""
    program = program or sys.argv[0]
    launcher = ["python", program] if program.endswith(".py") else [program]
    kept = [o for o in overrides if not o.startswith(RESUME_KEYS)]
    extra = [f"hydra.run.dir={run_dir}", *(["ckpt_path=last"] if resumable else [])]
    return shlex.join([*launcher, *kept, *extra])


def report_interruption(trainer: L.Trainer | None, output_dir: Path, overrides: list[str], trains: bool) -> None:
    """Log (console and train.log) what SIGTERM stopped, where last.ckpt is and how to resume.

    trainer: the run's trainer, None while the untrained model was being evaluated.
    """
    if trainer is not None and trainer.state.fn == TrainerFn.FITTING:
        phase, where = "training", f"epoch {trainer.current_epoch + 1} of {trainer.max_epochs}"
    else:
        phase, where = "testing", "after training" if trainer is not None else "the untrained model, before training"
    checkpoint = last_checkpoint(output_dir)
    resumable = trains and checkpoint.is_file()
    log.error("Run interrupted by SIGTERM while %s (%s): no results were written.", phase, where)
    if resumable:
        log.error("Last checkpoint (end of the last finished epoch): %s", checkpoint)
    elif trains:
        log.error("No checkpoint yet (%s does not exist): the resume command starts training again.", checkpoint)
    log.error("Resume with: %s", resume_command(overrides, output_dir.resolve(), resumable))
