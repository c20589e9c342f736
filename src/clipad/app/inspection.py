"""One page request, without the page: score images with every model, then draw, tabulate and package them
at the sliders' thresholds (moving a slider redraws without running a model again)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

from clipad.app.downloads import write_figures_zip, write_scores_csv
from clipad.app.figures import save_inspection_figure
from clipad.app.models import AppModel
from clipad.app.references import ReferenceKeeper
from clipad.app.scoring import ScoringResult, score_images
from clipad.calibration.thresholds import decision as calibrated_decision
from clipad.cli.predict_outputs import OutputOptions
from clipad.report.heatmaps import display_range

SCORE_FORMAT = "{:.8f}"  # finer than predict's scores.csv (6 significant digits): the page never rounds more
COMPARE_COLUMNS = ("compare_score", "compare_decision")


@dataclass(frozen=True)
class Thresholds:
    image: float
    pixel: float
    calibrated: bool  # from a thresholds file: the pixel threshold is in the metrics' units, as in predict


@dataclass
class Scored:
    """A request's scores: one ScoringResult per model, in the order of Inspector.models."""

    folder: Path
    results: list[ScoringResult]


@dataclass
class View:
    galleries: list[list[tuple[str, str]]]  # per model: (figure file, caption)
    header: list[str]
    rows: list[list[str]]
    scores_csv: Path
    overlays_zip: Path


class Inspector:
    def __init__(self, models: list[AppModel], output_dir: Path, scaling: str, batch_size: int) -> None:
        self.models = models
        self.output_dir = output_dir
        self.scaling = scaling
        self.batch_size = batch_size
        self.references = ReferenceKeeper(output_dir / "references")
        self._requests = itertools.count(1)
        self._views = itertools.count(1)

    def score(self, paths: list[Path], names: list[str], class_name: str, references: list[Path]) -> Scored:
        for model in self.models:
            if model.few_shot:
                self.references.use(model, references)
        folder = self.output_dir / "requests" / f"{next(self._requests):04d}"
        return Scored(folder, [score_images(m, paths, names, class_name, self.batch_size) for m in self.models])

    def view(self, scored: Scored, thresholds: list[Thresholds]) -> View:
        """Figures, table rows, scores.csv and overlays.zip at `thresholds` (one per model)."""
        folder = scored.folder / f"view{next(self._views):04d}"
        galleries, figures, columns = [], {}, []
        for model, result, chosen in zip(self.models, scored.results, thresholds):
            gallery, scores, decisions = [], [], []
            options = OutputOptions(threshold=chosen.image, pixel_threshold=chosen.pixel, save_figures=False,
                                    save_masks=False, save_maps=(), scaling="per_image", calibrated=chosen.calibrated,
                                    map_scale=model.module.map_upper_bound)
            request_low = min((float(i.anomaly_map.min()) for i in result.images), default=0.0)
            request_high = max((float(i.anomaly_map.max()) for i in result.images), default=1.0)
            for index, image in enumerate(result.images):
                decision = calibrated_decision(image.score, chosen.image)
                score_text = SCORE_FORMAT.format(image.score)
                mask = options.mask_of(image.anomaly_map)
                title = (f"{model.label}: {Path(image.name).name}  score {score_text} -> {decision}, "
                         f"defect outline {mask.mean():.1%} of pixels")
                name = f"{model.label}/{index:03d}_{Path(image.name).name}.png"
                colours = display_range(image.anomaly_map, self.scaling, request_high, request_low)
                figure = save_inspection_figure(folder / name, image.preview, image.anomaly_map, mask, title, colours,
                                                self.scaling)
                figures[name] = figure
                gallery.append((str(figure), title))
                scores.append(score_text)
                decisions.append(decision)
            galleries.append(gallery)
            columns.append((scores, decisions))
        names = [image.name for image in scored.results[0].images]
        header = ["path", "score", "decision"] + (list(COMPARE_COLUMNS) if len(self.models) > 1 else [])
        rows = [[name] + [column[i] for pair in columns for column in pair] for i, name in enumerate(names)]
        return View(galleries, header, rows, write_scores_csv(folder / "scores.csv", header, rows),
                    write_figures_zip(folder / "overlays.zip", figures))
