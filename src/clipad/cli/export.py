"""`python -m clipad.export ckpt_path=... output=model.onnx [class_name=...] [opset=17]`: ONNX export.

Prints the file size and, with check=true, the largest difference between onnxruntime and torch on the same
random input and the CPU latency per image of both. Exit status 1 when the difference exceeds `atol`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from clipad.cli.hydra_setup import compose_config, reporting_errors
from clipad.cli.inference import attach_normal_prompts, load_module, model_input
from clipad.onnx_export import compare_with_torch, export_onnx, text_depends_on_image


@reporting_errors("export")
def main(argv: list[str] | None = None) -> int:
    overrides = list(sys.argv[1:] if argv is None else argv)
    cfg = compose_config("export", overrides)
    module = load_module(cfg, overrides, device="cpu")
    attach_normal_prompts(module, cfg, model_input(module))
    path = export_onnx(module, str(cfg.class_name), cfg.output, opset=int(cfg.opset), batch=int(cfg.batch))
    size = module.backbone.image_size
    random_note = ", RANDOM backbone" if module.backbone.is_random else ""
    print(f"wrote {path} ({Path(path).stat().st_size / 1e6:.1f} MB): model={module.cfg.model.name}, "
          f"backbone={module.cfg.backbone.name}{random_note}, class_name={cfg.class_name!r}, "
          f"shots={getattr(module, 'shots', 0)}")
    if text_depends_on_image(module):
        batch = f"B = {cfg.batch} fixed (its text features depend on each image)"
    else:
        batch = "B dynamic"
    print(f"input image [B, 3, {size}, {size}], {batch}; outputs anomaly_map [B, {size}, {size}], score [B]")
    if not cfg.check:
        return 0
    report = compare_with_torch(module, str(cfg.class_name), path, batch=int(cfg.batch), threads=cfg.threads)
    status = "OK" if report.close(float(cfg.atol)) else f"MISMATCH (atol {cfg.atol})"
    print(f"onnxruntime vs torch, {report.batch} random images: max |diff| anomaly_map {report.map_max_abs_diff:.2e}, "
          f"score {report.score_max_abs_diff:.2e}  {status}")
    threads = f"threads={cfg.threads}" if cfg.threads else "default threads"
    print(f"CPU latency per image (batch {report.batch}, {threads}): torch {report.torch_ms_per_image:.1f} ms, "
          f"onnxruntime {report.onnx_ms_per_image:.1f} ms (medians of {report.timed_calls} warm calls each, "
          "taking turns)")
    return 0 if report.close(float(cfg.atol)) else 1


if __name__ == "__main__":
    sys.exit(main())
