"""Config and command-line mistakes (issue 13, cases 6, 7, 12, 14, 15, 16, 18): one message, exit status 2,
no traceback, reported before torch and lightning are imported."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import clipad
from clipad.cli.checkpoint import save_clipad_checkpoint
from clipad.cli.config_checks import check_additions, check_value_types
from clipad.cli.entry_points import evaluate_main
from clipad.cli.hydra_setup import compose_config
from clipad.data.catalog import DatasetError
from clipad.data.datamodule import AnomalyDataModule
from clipad.errors import ConfigError
from clipad.models.registry import build_module

REPO = Path(clipad.__file__).resolve().parents[2]
TINY = ["backbone=tiny", "backbone.image_size=112", "logger=none", "callbacks=none"]


def run(script: str, *args: str, cwd: Path, full_error: bool = False, python_flags: tuple[str, ...] = ()):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = str(REPO / "src")
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    command = [sys.executable, *python_flags, *([str(REPO / script)] if script.endswith(".py") else ["-m", script])]
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def assert_config_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: ")
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.mark.parametrize("overrides, fragments", [
    (["+model.lrr=1"], ["+model.lrr=1", "Did you mean model.optimizer.lr?"]),
    (["++model.lrr=1"], ["model.lrr", "model.optimizer.lr"]),
    (["model.optimizer.lrr=1"], ["model.optimizer.lrr", "model.optimizer.lr"]),
    (["model=adaptclip", "+prompt=static"], ["+prompt=static", "model=adaptclip has no prompt options"]),
    (["model=adaptclip", "prompt=static"], ["prompt=static", "model=adaptclip has no prompt options"]),
    (["model=adaclip", "+adapter=pq"], ["+adapter=pq", "choose model=adaptclip"]),
    (["+callbacks.heatmap.per_class=1"], ["callbacks.heatmap.per_class"]),  # no such callback: no code reads it
])
def test_case6_unknown_keys_and_foreign_groups_are_errors(tmp_path, overrides, fragments):
    result = run("train.py", *overrides, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_config_error(result, *fragments)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_case6_additions_under_instantiated_nodes_and_existing_keys_pass():
    overrides = ["+trainer.fast_dev_run=1", "+callbacks.model_checkpoint.every_n_epochs=1", "++model.optimizer.lr=0.1"]
    cfg = compose_config("train", overrides)
    check_additions(cfg, overrides, "train")  # Trainer / ModelCheckpoint take these as keyword arguments
    with pytest.raises(ConfigError, match="model.lrr"):
        check_additions(compose_config("train", ["+model.lrr=1"]), ["+model.lrr=1"], "train")


@pytest.mark.parametrize("override", ["model.batch_size=0", "data.batch_size=0", "data.eval_batch_size=0",
                                      "data.num_workers=-1", "shots=-1"])
def test_case14_bad_counts_are_errors_naming_the_key(tmp_path, override):
    result = run("train.py", override, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_config_error(result, override)


@pytest.mark.parametrize("override, fragment", [
    ("trainer.max_epochs=abc", "trainer.max_epochs takes a number (default 5)"),  # the default reached by ${...}
    ("model.max_epochs=five", "model.max_epochs takes a number"),
    ("backbone.allow_random=yes", "backbone.allow_random takes true or false (default true)"),
    ("seed=random", "seed takes a number"),
])
def test_a_word_where_a_number_or_switch_belongs_is_an_error(override, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        check_value_types([override], "train")


def test_words_that_a_key_takes_pass_the_type_check():
    check_value_types(["trainer.devices=auto", "trainer.precision=bf16-mixed", "model=clip", "data=mvtec",
                       "trainer.max_epochs=3", "backbone.allow_random=false", "prompt.length=1,3"], "train")


def test_case14_a_word_for_a_number_stops_the_run_before_any_work(tmp_path):
    result = run("train.py", "trainer.max_epochs=abc", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_config_error(result, "trainer.max_epochs=abc: trainer.max_epochs takes a number")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_case15_unwritable_run_or_output_dir_names_the_key(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run("train.py", f"hydra.run.dir={blocker / 'run'}", cwd=tmp_path)
    assert_config_error(result, "hydra.run.dir=DIR", str(blocker))
    result = run("train.py", f"hydra.run.dir={tmp_path / 'run'}", f"paths.output_dir={blocker / 'out'}", cwd=tmp_path)
    assert_config_error(result, "paths.output_dir=", "hydra.run.dir=DIR")


def test_case16_one_message_exit_2_traceback_only_with_hydra_full_error(tmp_path):
    missing = tmp_path / "missing.ckpt"
    result = run("evaluate.py", f"ckpt_path={missing}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_config_error(result, f"ckpt_path={missing} does not exist")
    assert len(result.stderr.strip().splitlines()) <= 2
    full = run("evaluate.py", f"ckpt_path={missing}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
               full_error=True)
    assert full.returncode != 0 and "Traceback" in full.stderr and "PathNotFoundError" in full.stderr
    # Hydra's own errors: an unknown group option, in one or two lines
    result = run("clipad.predict", "backbone=vit_xl", "ckpt_path=x", "input=y", cwd=tmp_path)
    assert_config_error(result, "backbone=vit_xl", "vit_l14_336")
    assert len(result.stderr.strip().splitlines()) <= 2
    result = run("clipad.data.inspect", "data=mvtecc", cwd=tmp_path)
    assert_config_error(result, "data=mvtecc", "Did you mean mvtec")


@pytest.mark.parametrize("args", [["+model.lrr=1"], ["modle=clip"], ["model=adaptclip", "prompt=static"],
                                  ["model.batch_size=0"], ["--help"]])
def test_case18_config_mistakes_are_reported_without_importing_torch(tmp_path, args):
    result = run("train.py", *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, python_flags=("-X", "importtime"))
    assert result.returncode == (0 if args == ["--help"] else 2), result.stderr[-2000:]
    imported = set(re.findall(r"^import time:.*\|\s+(\w+)$", result.stderr, re.MULTILINE))  # top-level modules
    assert "hydra" in imported  # the check: importtime lines were captured
    assert not imported & {"torch", "lightning", "open_clip"}, sorted(imported & {"torch", "lightning", "open_clip"})


def test_case7_command_line_group_contradicting_the_checkpoint_is_an_error(tmp_path, monkeypatch, capsys):
    cfg = compose_config("train", ["model=adaclip", *TINY, "data=mvtec", f"paths.output_dir={tmp_path}"])
    torch.manual_seed(0)
    ckpt = save_clipad_checkpoint(tmp_path / "adaclip.ckpt", build_module(cfg))
    for group_override, held in (("model=adaptclip", "holds model=adaclip"), ("prompt=static", "prompt hybrid")):
        monkeypatch.setattr(sys, "argv", ["evaluate.py", f"ckpt_path={ckpt}", group_override,
                                          f"hydra.run.dir={tmp_path / 'run'}"])
        with pytest.raises(SystemExit) as exit_info:
            evaluate_main()
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"{group_override} contradicts ckpt_path={ckpt}" in err and held in err, err
        assert "Traceback" not in err


def write_png(path: Path, value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((32, 32, 3), value, np.uint8))


def test_case12_training_dataset_lacking_classes_names_data_train_classes(tmp_path):
    data_dir = tmp_path / "data"
    write_png(data_dir / "mvtec/bottle/train/good/000.png")
    write_png(data_dir / "mvtec/bottle/test/good/000.png")
    write_png(data_dir / "mvtec/bottle/test/broken/000.png", 200)
    mask = data_dir / "mvtec/bottle/ground_truth/broken/000_mask.png"
    mask.parent.mkdir(parents=True)
    cv2.imwrite(str(mask), np.full((32, 32), 255, np.uint8))
    target = tmp_path / "target"
    write_png(target / "normal/n.png")
    write_png(target / "abnormal/a.png", 200)
    base = ["data=folder", f"data.root={target}", "data.train=[mvtec]", "data.val=none", "data.num_workers=0",
            f"paths.data_dir={data_dir}", f"paths.output_dir={tmp_path / 'out'}", *TINY]
    with pytest.raises(DatasetError, match=re.escape("'data.train_classes={mvtec: [bottle]}'")):
        AnomalyDataModule.from_config(compose_config("train", base)).setup("fit")
    datamodule = AnomalyDataModule.from_config(compose_config("train", [*base, "data.train_classes={mvtec: [bottle]}"]))
    datamodule.setup("fit")
    assert len(datamodule.train_set) == 2  # bottle's test split (the papers train on test splits)
