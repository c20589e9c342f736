"""`python -m clipad.summary model=X backbone=Y [overrides]`: trainable parameters per part.

Builds the model on the meta device (no memory, no weights, no data), so the counts the papers report
can be checked for any backbone in seconds.
"""
from __future__ import annotations

import sys

from torch import nn

from clipad.cli.hydra_setup import compose_config, reporting_errors
from clipad.models.registry import build_module_structure


def trainable_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parameter_rows(model: nn.Module, max_depth: int = 2) -> list[tuple[str, int]]:
    """(dotted name, trainable parameters) of sub-modules down to max_depth that hold any."""
    rows = []
    for name, sub in model.named_modules():
        depth = name.count(".") + 1 if name else 0
        if 0 < depth <= max_depth:
            count = trainable_count(sub)
            parent = name.rsplit(".", 1)[0] if "." in name else None
            # A sub-module holding all of its parent's parameters adds nothing to the table.
            if count and not (parent and dict(rows).get(parent) == count):
                rows.append((name, count))
    return rows


def summary_lines(model: nn.Module) -> list[str]:
    rows = parameter_rows(model)
    width = max([len(name) for name, _ in rows] + [10])
    lines = [f"{'part':<{width}}  {'trainable':>12}"]
    lines += [f"{'  ' * name.count('.') + name.rsplit('.', 1)[-1]:<{width}}  {count:>12,}" for name, count in rows]
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    lines.append(f"{'frozen backbone':<{width}}  {frozen:>12,}")
    lines.append(f"trainable parameters: {trainable_count(model)}")
    return lines


@reporting_errors("train")
def main(argv: list[str] | None = None) -> None:
    cfg = compose_config("train", list(sys.argv[1:] if argv is None else argv))
    model = build_module_structure(cfg)
    print(f"model={cfg.model.name} backbone={cfg.backbone.name} image_size={cfg.backbone.image_size}")
    print("\n".join(summary_lines(model)))


if __name__ == "__main__":
    main()
