"""The page (Gradio Blocks) and the server: models loaded once, one forward at a time per device, offline.

Offline: analytics are off, the theme's fonts ship with Gradio, server-side rendering (a Node process) is off;
nothing on the page comes from another host (tests/test_app_browser.py checks every resource URL).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when gradio is imported

import gradio as gr  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from clipad.app.inspection import Inspector, Scored, Thresholds  # noqa: E402
from clipad.app.models import AppModel, load_app_model  # noqa: E402
from clipad.app.references import chosen_reference_files  # noqa: E402
from clipad.cli.hydra_setup import command_line_overrides  # noqa: E402
from clipad.cli.inference import resolve_device  # noqa: E402
from clipad.cli.predict_inputs import list_input_images  # noqa: E402
from clipad.errors import ClipadError  # noqa: E402
from clipad.models.adaptclip.fusion import FEW_SHOT_UNCLAMPED_MAP_MAX  # noqa: E402

FALLBACK_CLASS = "object"  # predict's default object word, when the checkpoint names no classes


def chosen_images(uploads: list[str] | None, folder: str) -> tuple[list[Path], list[str]]:
    """(paths, names shown): uploads by file name, then a server folder's images by path."""
    paths = [Path(p) for p in uploads or []]
    names = [p.name for p in paths]
    if folder and folder.strip():
        listed = list_input_images(folder.strip()).paths
        paths += listed
        names += [str(p) for p in listed]
    if not paths:
        raise ClipadError("no images: upload some, or give a folder on the server")
    return paths, names


def slider_pair(model: AppModel, class_name: str) -> tuple[gr.Slider, gr.Slider, gr.Checkbox]:
    image, pixel, calibrated, source = model.start_thresholds(class_name)
    # calibrated pixel thresholds are in the metrics' units (0-1); raw few-shot maps reach 4/3
    pixel_max = 1.0 if calibrated or not model.few_shot else round(FEW_SHOT_UNCLAMPED_MAP_MAX, 4)
    return (
        gr.Slider(0.0, 1.0, value=image, step=0.0001, label=f"{model.label}: image threshold ({source})",
                  elem_id=f"threshold_{model.label}"),
        gr.Slider(0.0, pixel_max, value=pixel, step=0.0001, label=f"{model.label}: pixel threshold (outline)",
                  elem_id=f"pixel_threshold_{model.label}"),
        gr.Checkbox(value=calibrated, visible=False),
    )


def build_page(inspector: Inspector, class_name: str | None) -> gr.Blocks:
    models = inspector.models
    classes = list(dict.fromkeys(name for m in models for name in m.classes)) or [FALLBACK_CLASS]
    start_class = class_name or classes[0]
    with gr.Blocks(title="clipad inspection", analytics_enabled=False) as page:
        gr.Markdown("## clipad inspection\n" + "\n".join(f"* {m.description} (on {m.device})" for m in models))
        with gr.Row():
            with gr.Column():
                uploads = gr.File(label="Images", file_count="multiple", file_types=["image"], elem_id="images")
                folder = gr.Textbox(label="... or a folder on the server", elem_id="folder")
                chosen_class = gr.Dropdown(choices=classes, value=start_class, allow_custom_value=True,
                                           label="Object name (the prompts' word)", elem_id="class_name")
            with gr.Column(visible=any(m.few_shot for m in models)):
                gr.Markdown("Few-shot normal references (kept until they change; none: as started)")
                reference_uploads = gr.File(label="Normal reference images", file_count="multiple",
                                            file_types=["image"], elem_id="references")
                reference_folder = gr.Textbox(label="... or a folder on the server", elem_id="reference_folder")
                reference_count = gr.Number(label="k: its first k images (0: all)", value=0, precision=0,
                                            minimum=0, elem_id="reference_count")
        run = gr.Button("Score", variant="primary", elem_id="score")
        status = gr.Markdown(elem_id="status")
        sliders, galleries = [], []
        with gr.Row():
            for model in models:
                with gr.Column():
                    sliders.append(slider_pair(model, start_class))
                    galleries.append(gr.Gallery(label=f"{model.label}: {model.ckpt_path.name}", columns=1,
                                                object_fit="contain", preview=True, height=520, format="png",
                                                elem_id=f"gallery_{model.label}"))
        table = gr.Dataframe(label="scores", interactive=False, elem_id="scores")
        with gr.Row():
            scores_csv = gr.File(label="scores.csv", elem_id="scores_csv")
            overlays_zip = gr.File(label="overlays.zip", elem_id="overlays_zip")
        scored_state = gr.State()
        slider_inputs = [component for pair in sliders for component in pair]
        view_outputs = [*galleries, table, scores_csv, overlays_zip]

        def thresholds_of(values: tuple) -> list[Thresholds]:
            return [Thresholds(float(values[i]), float(values[i + 1]), bool(values[i + 2]))
                    for i in range(0, len(values), 3)]

        def view_of(scored: Scored, values: tuple) -> list:
            view = inspector.view(scored, thresholds_of(values))
            table_value = {"headers": view.header, "data": view.rows}
            return [*view.galleries, table_value, str(view.scores_csv), str(view.overlays_zip)]

        def score(files, folder_path, object_name, reference_files, references_path, count, *values):
            started = time.perf_counter()
            object_name = str(object_name or start_class)
            try:
                paths, names = chosen_images(files, folder_path)
                references = chosen_reference_files([Path(p) for p in reference_files or []], references_path or "",
                                                    int(count) if count else None)
                builds = inspector.references.builds
                scored = inspector.score(paths, names, object_name, references)
            except ClipadError as error:
                raise gr.Error(str(error)) from error
            results = scored.results[0]
            note = [f"scored {len(results.images)} images as '{object_name}' in {time.perf_counter() - started:.2f} s"]
            if results.unreadable:
                note.append("unreadable: " + "; ".join(f"{n} ({r})" for n, r in results.unreadable))
            few_shot = [m for m in models if m.few_shot]
            if few_shot:
                rebuilt = inspector.references.builds > builds
                note.append("few-shot: " + ", ".join(f"{m.label} {m.module.shots} normal references" if m.module.shots
                                                      else f"{m.label} zero-shot (no references)" for m in few_shot)
                            + (" (new prompt memory)" if rebuilt else " (prompt memory reused)"
                               if any(m.module.shots for m in few_shot) else ""))
            return [scored, *view_of(scored, values), " · ".join(note)]

        def redraw(scored: Scored | None, *values):
            if scored is None:
                return [gr.update() for _ in view_outputs]
            return view_of(scored, values)

        def class_thresholds(object_name: str) -> list:
            return [component for m in models for component in slider_pair(m, str(object_name or start_class))]

        run.click(score, [uploads, folder, chosen_class, reference_uploads, reference_folder, reference_count,
                          *slider_inputs], [scored_state, *view_outputs, status],
                  concurrency_limit=1, concurrency_id=f"forward on {models[0].device}")
        for image_slider, pixel_slider, _ in sliders:
            for slider in (image_slider, pixel_slider):
                # typed values and drags alike; while a redraw runs, only the latest pending value is drawn next
                slider.change(redraw, [scored_state, *slider_inputs], view_outputs, trigger_mode="always_last",
                              show_progress="minimal")
        chosen_class.change(class_thresholds, chosen_class, slider_inputs)
    return page


def run_app(cfg: DictConfig) -> None:
    device = resolve_device(cfg.device)
    overrides = command_line_overrides()
    models = [load_app_model("A", str(cfg.ckpt_path), cfg, overrides, device, cfg.thresholds)]
    if cfg.compare_ckpt_path:
        models.append(load_app_model("B", str(cfg.compare_ckpt_path), cfg, overrides, device, cfg.compare_thresholds))
    output_dir = Path(cfg.output_dir).resolve()
    inspector = Inspector(models, output_dir, str(cfg.scaling), int(cfg.batch_size))
    page = build_page(inspector, cfg.class_name)
    page.queue(default_concurrency_limit=1)  # the models are shared: one request at a time
    _, url, _ = page.launch(server_name=str(cfg.host), server_port=int(cfg.port) or None, prevent_thread_lock=True,
                            allowed_paths=[str(output_dir)], ssr_mode=False, quiet=True, share=False)
    print(f"clipad app: {url} (outputs in {output_dir}; Ctrl+C stops it)", flush=True)
    try:
        page.block_thread()
    finally:
        page.close()
