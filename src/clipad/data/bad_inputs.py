"""The run's record of bad inputs: every fallback (a file skipped, a mask resized, a suspicious mask kept) is
counted, listed in <run dir>/bad_inputs.csv as it happens, stated in the run's last lines and stored in
run_info.json, so that numbers computed on imperfect data always say so.
"""
from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import astuple, dataclass, fields
from pathlib import Path

log = logging.getLogger(__name__)

CSV_NAME = "bad_inputs.csv"
# kind -> how the summary line names its count
KINDS = {
    "unreadable": "unreadable skipped",
    "mask_resized": "mask resized",
    "empty_mask": "empty mask (anomalous image)",
    "large_mask": "mask over 50% of its image",
    "mask_file_skipped": "mask file(s) of a dataset layout not scored",
    "train_test_overlap": "image(s) both trained and tested/validated on (data.allow_overlap=true)",
}


@dataclass(frozen=True)
class BadInput:
    kind: str  # a key of KINDS
    file: str  # the file at fault (the mask for mask findings)
    dataset: str = ""
    cls_name: str = ""
    detail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown bad-input kind {self.kind!r}; known: {', '.join(KINDS)}")


class BadInputLog:
    """Collects BadInput entries (each (kind, file, dataset) once) and appends them to bad_inputs.csv at once.

    output_dir None: kept in memory only (tests, DDP ranks other than 0).
    """

    def __init__(self, output_dir: Path | None = None) -> None:
        self.output_dir = output_dir
        self.entries: list[BadInput] = []
        self._seen: set[tuple[str, str, str]] = set()

    @property
    def csv_path(self) -> Path | None:
        return None if self.output_dir is None else self.output_dir / CSV_NAME

    def record(self, entries: Iterable[BadInput]) -> list[BadInput]:
        """Add entries not recorded before; returns those (written to the CSV before this returns)."""
        new = []
        for entry in entries:
            key = (entry.kind, entry.file, entry.dataset)
            if key not in self._seen:
                self._seen.add(key)
                new.append(entry)
        self.entries.extend(new)
        if new and self.csv_path is not None:
            self._append(new)
        return new

    def counts(self) -> dict[str, int]:
        """Entries per kind, in KINDS order; kinds without entries left out."""
        found = Counter(entry.kind for entry in self.entries)
        return {kind: found[kind] for kind in KINDS if found[kind]}

    def summary(self) -> str:
        """One line, e.g. 'bad inputs: 2 unreadable skipped, 1 mask resized (see out/bad_inputs.csv)'."""
        counts = self.counts()
        if not counts:
            return "bad inputs: none"
        parts = ", ".join(f"{count} {KINDS[kind]}" for kind, count in counts.items())
        where = f" (see {self.csv_path})" if self.csv_path is not None else ""
        return f"bad inputs: {parts}{where}"

    def finish(self, emit: Callable[[str], None] = print) -> None:
        """State the counts (the run's last line) and store them in the run dir's run_info.json."""
        emit(self.summary())
        if self.output_dir is None:
            return
        info_path = self.output_dir / "run_info.json"
        try:
            info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        except (OSError, ValueError) as error:
            log.warning("run_info.json unreadable (%s): bad-input counts not stored in it", error)
            return
        info["bad_inputs"] = self.counts()
        info_path.parent.mkdir(parents=True, exist_ok=True)
        info_path.write_text(json.dumps(info, indent=2))

    def _append(self, entries: list[BadInput]) -> None:
        path = self.csv_path
        path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not path.is_file()
        with path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new_file:
                writer.writerow([f.name for f in fields(BadInput)])
            writer.writerows(astuple(entry) for entry in entries)


def read_bad_inputs(path: Path) -> list[BadInput]:
    """The entries of a bad_inputs.csv (tests, reports)."""
    with path.open(newline="") as handle:
        return [BadInput(**row) for row in csv.DictReader(handle)]
