"""`python -m clipad.convert adaclip|adaptclip|anomalyclip IN OUT [overrides]`: import released reference weights.

The output is a clipad checkpoint (parameters, BatchNorm statistics and the model config) that
`evaluate.py ckpt_path=OUT` and `python -m clipad.predict ckpt_path=OUT` load. The model config is the
paper default (ViT-L-14-336 at 518 px, OpenAI weights) unless overrides say otherwise.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from clipad.cli.hydra_setup import compose_config, reporting_errors
from clipad.models.registry import build_module_structure

PAPER_BACKBONE = "backbone=vit_l14_336"


def _check_against_module(converted: dict[str, torch.Tensor], cfg: DictConfig, source: Path) -> None:
    expected = build_module_structure(cfg).state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    wrong = [k for k in expected.keys() & converted.keys() if expected[k].shape != converted[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{source}: does not fit the configured model: missing {missing}, unexpected "
                         f"{unexpected}, wrong shapes {wrong}")


def convert(method: str, source: Path, target: Path, overrides: list[str]) -> Path:
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist")
    try:
        reference = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling raises many types
        raise ValueError(f"{source} is not a PyTorch checkpoint readable with weights_only=True: {error}") from error
    has_backbone = any(o.startswith("backbone=") for o in overrides)
    base = [f"model={method}", *([] if has_backbone else [PAPER_BACKBONE])]
    if method == "adaclip":
        from clipad.models.adaclip.convert import convert_adaclip

        cfg = compose_config("train", [*base, *overrides])
        converted = convert_adaclip(reference, build_module_structure(cfg))
    elif method == "adaptclip":
        from clipad.models.adaptclip.convert import adapters_in, reference_to_clipad

        converted = reference_to_clipad(reference)
        present = adapters_in(converted)
        adapter_flags = [f"adapter.{name}={str(on).lower()}" for name, on in present.items()]
        cfg = compose_config("train", [*base, *adapter_flags, *overrides])
        _check_against_module(converted, cfg, source)
    elif method == "anomalyclip":
        from clipad.models.anomalyclip.convert import convert_anomalyclip
        from clipad.models.registry import build_module

        cfg = compose_config("train", [*base, *overrides])
        # The real CLIP (not the meta structure): the stored token buffers are compared with its embeddings.
        converted, notes = convert_anomalyclip(reference, build_module(cfg))
        _check_against_module(converted, cfg, source)
        for note in notes:
            print(f"note: {note}")
    else:
        raise ValueError(f"unknown method {method!r}: adaclip, adaptclip or anomalyclip")
    target.parent.mkdir(parents=True, exist_ok=True)
    container = OmegaConf.to_container(cfg, resolve=True)
    torch.save({"state_dict": converted, "hyper_parameters": {"cfg": container},
                "converted_from": str(source)}, target)
    return target


@reporting_errors("train")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clipad.convert", description=__doc__.split("\n")[0])
    parser.add_argument("method", choices=["adaclip", "adaptclip", "anomalyclip"])
    parser.add_argument("source", type=Path, help="the released reference checkpoint (.pth)")
    parser.add_argument("target", type=Path, help="the clipad checkpoint to write")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the model config, e.g. backbone=vit_b16")
    args = parser.parse_args(argv)
    try:
        out = convert(args.method, args.source, args.target, args.overrides)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"wrote {out} ({sum(v.numel() for v in torch.load(out, weights_only=True)['state_dict'].values()):,} values)")


if __name__ == "__main__":
    main()
