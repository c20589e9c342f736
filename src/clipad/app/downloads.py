"""What the page offers for download: the scores as CSV and the figures as a zip."""
from __future__ import annotations

import csv
import zipfile
from pathlib import Path


def write_scores_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_figures_zip(path: Path, figures: dict[str, Path]) -> Path:
    """figures: name inside the zip -> file. PNGs are already compressed: stored, not deflated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, figure in figures.items():
            archive.write(figure, arcname=name)
    return path
