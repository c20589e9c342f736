"""AnomalyMetrics: accumulates test outputs per (dataset, class) and computes the results table.

What is kept, and why it is small and exact:

* image level: every score (float64), label and group id.
* pixel level (images with ``has_mask`` only): anomaly maps are stored as 16-bit levels
  ``floor(map * 65535 + 0.5)`` and reduced at once to what the metrics need: per group a 65,536-bin
  histogram of all its pixels, and for every anomalous pixel its level and the size of its ground-truth
  region (8-connected component of its image's mask), plus per image its number of regions. Pixel
  AUROC/AP/max-F1 and AUPRO are exact on those stored levels (a counting sort replaces the sort). An
  MVTec-AD-sized test (1,725 maps of 518x518) keeps ~0.5 MiB per class plus 8 bytes per anomalous
  pixel, instead of ~0.5 GiB of float maps per class. A second histogram per class, of the normal
  images' pixels only, is the shared FPR of AUPIMO (clipad.metrics.pimo); each anomalous image's TPR
  comes from its stored anomalous-pixel levels.
* with ``thresholds`` (a calibrated thresholds file), the same states give the decisions at the fixed
  image and pixel thresholds: nothing more is kept.
* multi-view images (``view_sample_id``): one 64-bit sample key per image beside its score; sample scores
  (max over views) are formed at compute time.
* ``pixel_eval_size``: maps (bilinear) and masks (nearest) of the named datasets are resized to S x S before
  the pixel states are formed (the AdaptCLIP reference's Real-IAD protocol); default: exact full resolution.
* ``anomaly_types``: the images of the named datasets also feed a second evaluator whose groups are
  ``<class>/<type>`` (each anomaly type with all normal images of its class): its tables become sections.

Memory: image states grow by ~25 bytes per image (score, label, group, sample key); pixel states by a
constant per group plus 8 bytes per anomalous pixel (at the evaluated size) and 24 bytes per masked image.
No map, mask or per-pixel value of a normal pixel is kept.

Dataset and class names are strings, which DDP cannot gather as tensor states, so every group is a
stable 64-bit hash of its names (the same on every rank) and the names travel as UTF-8 bytes in a
tensor state. All counts are integers, so the result does not depend on sample order: a DDP run
equals a single-process run exactly.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from clipad.metrics.at_threshold import (
    OVERKILL_ESCAPE_PERCENTS,
    image_decision_metrics,
    overkill_at_escape,
    pixel_decision_metrics,
)
from clipad.metrics.aupro import aupro_from_counts, label_regions, region_weights
from clipad.metrics.curves import (
    ThresholdCounts,
    auroc_from_counts,
    average_precision_from_counts,
    counts_from_histograms,
    counts_from_scores,
    max_f1_from_counts,
)
from clipad.metrics.functional import warn_one_class
from clipad.metrics.memory import release_freed_memory
from clipad.metrics.pimo import aupimo_per_image, mean_and_std
from clipad.metrics.results import (
    DECISION_METRICS,
    INSPECTION,
    INSPECTION_METRICS,
    METRIC_NAMES,
    MULTI_VIEW,
    MULTI_VIEW_INSPECTION,
    SAMPLE_INSPECTION_METRICS,
    SAMPLE_METRICS,
    THRESHOLD_FREE,
    ResultsTable,
    decisions_layout,
)

if TYPE_CHECKING:
    from clipad.calibration.thresholds import DecisionThresholds

MAP_LEVELS = 65536
MAP_RANGE_TOLERANCE = 1e-3  # rounding overshoot that is clamped; anything further out is an error
_NAME_SEPARATOR = b"\x00"

# every list state with its dtype (see AnomalyMetrics.sync); gloo and NCCL cannot gather 16-bit ints
_STATE_DTYPES = {
    "image_scores": torch.float64,
    "image_labels": torch.uint8,
    "image_groups": torch.int64,
    "image_samples": torch.int64,  # per image: 64-bit key of its (dataset, class, multi-view sample); 0: no view
    "group_names": torch.uint8,  # UTF-8 "dataset\0class\0" per group seen in a batch
    "hist_groups": torch.int64,
    "pixel_hists": torch.int64,  # MAP_LEVELS counts of all pixels per entry of hist_groups
    "normal_hist_groups": torch.int64,
    "normal_pixel_hists": torch.int64,  # MAP_LEVELS counts of the pixels of normal (mask-free) images
    "masked_groups": torch.int64,  # per image with a mask: its group,
    "masked_regions": torch.int64,  # its number of regions,
    "masked_anomalous": torch.int64,  # its number of anomalous pixels (a run of the two below)
    "anomalous_levels": torch.int32,  # per anomalous pixel: its level
    "anomalous_region_sizes": torch.int32,  # and the size of its region
}


def quantize_maps(maps: Tensor | np.ndarray) -> np.ndarray:
    """The stored value of anomaly maps in [0, 1]: uint16 levels ``floor(map * 65535 + 0.5)``."""
    values = maps.detach().cpu().float().numpy() if isinstance(maps, Tensor) else np.asarray(maps, np.float32)
    if values.size:
        low, high = values.min(), values.max()
        if not (low >= -MAP_RANGE_TOLERANCE and high <= 1 + MAP_RANGE_TOLERANCE):  # also catches NaN
            raise ValueError(
                f"anomaly_map values must lie in [0, 1] (AnomalyOutput contract, clipad/data/batch.py); "
                f"got min {low:.4g}, max {high:.4g}. Clamp or normalise the map before update."
            )
    # numpy: about 5x faster than torch's float-to-int conversion on CPU
    levels = np.clip(values, 0, 1)
    levels *= MAP_LEVELS - 1
    levels += 0.5
    return levels.astype(np.uint16)


def dequantize_levels(levels: np.ndarray) -> np.ndarray:
    """Levels back to the map values they stand for (float64); metrics on these equal the stored ones."""
    return np.asarray(levels).astype(np.float64) / (MAP_LEVELS - 1)


def level_to_threshold(level: int) -> float:
    """A map level as the map value a thresholds file stores (MAP_LEVELS: above every map)."""
    return level / (MAP_LEVELS - 1)


def threshold_to_level(threshold: float) -> int:
    """The lowest 16-bit level whose map value is >= threshold (clipped to 0 .. MAP_LEVELS)."""
    scaled = threshold * (MAP_LEVELS - 1)
    nearest = round(scaled)
    level = nearest if abs(scaled - nearest) < 1e-6 else math.ceil(scaled)  # stored levels round-trip exactly
    return int(min(max(level, 0), MAP_LEVELS))


def group_id(dataset: str, cls_name: str) -> int:
    """Stable signed 64-bit id of a (dataset, class) group, identical in every process."""
    digest = hashlib.blake2b(dataset.encode() + _NAME_SEPARATOR + cls_name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def sample_key(dataset: str, cls_name: str, sample: str) -> int:
    """Stable non-zero 64-bit key of a multi-view sample of a group (0 stands for "no view")."""
    digest = hashlib.blake2b(_NAME_SEPARATOR.join(n.encode() for n in (dataset, cls_name, sample)),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True) or 1


def resize_for_pixel_metrics(anomaly_map: Tensor, mask: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Maps [M, H, W] bilinearly and masks [M, H, W] (bool) by nearest neighbour to [M, size, size]."""
    maps = F.interpolate(anomaly_map[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)
    masks = F.interpolate(mask[:, None].float(), size=(size, size), mode="nearest")
    return maps[:, 0], masks[:, 0] > 0.5


def sample_max(scores: np.ndarray, labels: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct sample key (sorted): the max of its images' scores and of their labels."""
    _, sample_of_image = np.unique(samples, return_inverse=True)
    count = int(sample_of_image.max()) + 1 if len(sample_of_image) else 0
    sample_scores = np.full(count, -np.inf)
    np.maximum.at(sample_scores, sample_of_image, scores)
    sample_labels = np.zeros(count, dtype=labels.dtype)
    np.maximum.at(sample_labels, sample_of_image, labels)
    return sample_scores, sample_labels


def _group_pixel_index(state: dict[str, np.ndarray], gid: int) -> np.ndarray:
    """Positions in anomalous_levels of the group's anomalous pixels (its images' runs, in stored order).

    Built per group, so compute never holds a per-pixel array of the whole dataset beyond the states.
    """
    mine = np.flatnonzero(state["masked_groups"] == gid)
    counts = state["masked_anomalous"][mine]
    run_offsets = np.repeat(state["anomalous_starts"][mine] - (np.cumsum(counts) - counts), counts)
    return np.arange(int(counts.sum())) + run_offsets


def _natural_key(text: str) -> list:
    """Class1, Class2, Class10 (not Class1, Class10, Class2)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _concat(state: list[Tensor] | Tensor, dtype: torch.dtype) -> np.ndarray:
    """A list state (or the single tensor it becomes after a DDP sync) as one CPU array."""
    if isinstance(state, Tensor):
        state = [state]
    if not state:
        return torch.zeros(0, dtype=dtype).numpy()
    return torch.cat([t.cpu().to(dtype) for t in state]).numpy()


class AnomalyMetrics(Metric):
    """Image AUROC/AP/max-F1 and pixel AUROC/AP/max-F1/AUPRO per (dataset, class), as a ResultsTable.

    ``domains`` maps every dataset name that ``update`` will see to its domain ("industrial",
    "medical", ...). Extra keyword arguments go to ``torchmetrics.Metric`` (e.g. ``compute_on_cpu``).
    Call ``update`` per batch and ``compute`` once; ``forward`` only accumulates, because these metrics
    are not meaningful per batch. The table always has an "inspection" section (Overkill@2/5/10, AUPIMO);
    with ``thresholds`` also a "decisions" section (metrics at those fixed thresholds).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        domains: Mapping[str, str],
        fpr_limit: float = 0.3,
        thresholds: DecisionThresholds | None = None,
        pixel_eval_size: Mapping[str, int | None] | None = None,
        anomaly_types: Mapping[str, Mapping[str, str]] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not domains:
            raise ValueError("AnomalyMetrics(domains=...) needs at least one dataset, e.g. {'mvtec': 'industrial'}")
        bad = [k for k, v in domains.items() if not (isinstance(k, str) and k and isinstance(v, str) and v)]
        if bad:
            raise ValueError(f"AnomalyMetrics(domains=...): names and domains must be non-empty strings, see {bad}")
        if not 0 < fpr_limit <= 1:
            raise ValueError(f"AnomalyMetrics: fpr_limit must lie in (0, 1], got {fpr_limit}")
        self.domains = dict(domains)
        self.fpr_limit = fpr_limit
        self.thresholds = thresholds
        self.pixel_eval_size = {d: int(s) for d, s in (pixel_eval_size or {}).items() if s}
        bad_sizes = {d: s for d, s in self.pixel_eval_size.items() if s < 1}
        if bad_sizes:
            raise ValueError(f"AnomalyMetrics: pixel_eval_size must be positive (data.pixel_eval_size), got {bad_sizes}")
        self.anomaly_types = {d: dict(t) for d, t in (anomaly_types or {}).items() if t}
        for name in _STATE_DTYPES:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self._named_groups: set[int] = set()  # groups whose names this process has stored in group_names
        # per anomaly type: a child evaluator (a torchmetrics child syncs itself in its own compute)
        self.type_metrics = (
            AnomalyMetrics({d: self.domains[d] for d in self.anomaly_types}, fpr_limit, pixel_eval_size=pixel_eval_size,
                           **kwargs)
            if self.anomaly_types else None
        )

    # ---------------------------------------------------------------- accumulate
    def update(
        self,
        score: Tensor,
        label: Tensor,
        anomaly_map: Tensor,
        mask: Tensor,
        has_mask: Tensor,
        dataset: Sequence[str],
        cls_name: Sequence[str],
        view_sample_id: Sequence[str] | None = None,
        defect_type: Sequence[str] | None = None,
    ) -> None:
        """Add a batch. mask: [B, H, W] or [B, 1, H, W], bool or {0, 1}; pixels count where has_mask.

        view_sample_id: per image the multi-view sample it is a view of ("" = no view). defect_type: per
        image its type, needed for the datasets of ``anomaly_types``.
        """
        groups = self._check_names(dataset, cls_name, len(score))
        anomaly_map, mask = self._check_shapes(score, label, anomaly_map, mask, has_mask)
        device = score.device
        if score.is_floating_point() and torch.isnan(score).any():
            raise ValueError("AnomalyMetrics.update: score contains NaN")
        if not ((label == 0) | (label == 1)).all():
            raise ValueError("AnomalyMetrics.update: label must hold only 0 (normal) and 1 (anomalous)")
        self.image_scores.append(score.detach().reshape(-1).to(torch.float64))
        self.image_labels.append(label.detach().reshape(-1).to(torch.uint8))
        self.image_groups.append(torch.tensor(groups, dtype=torch.int64, device=device))
        samples = [0] * len(score) if view_sample_id is None else [
            sample_key(d, c, v) if v else 0 for d, c, v in zip(dataset, cls_name, view_sample_id, strict=True)
        ]
        self.image_samples.append(torch.tensor(samples, dtype=torch.int64, device=device))
        new = [pair for pair, gid in dict(zip(zip(dataset, cls_name), groups)).items() if gid not in self._named_groups]
        if new:  # each group's names once per process, not once per batch: bounded by the number of groups
            self._named_groups.update(group_id(d, c) for d, c in new)
            names = b"".join(d.encode() + _NAME_SEPARATOR + c.encode() + _NAME_SEPARATOR for d, c in new)
            self.group_names.append(torch.tensor(list(names), dtype=torch.uint8, device=device))

        masked = torch.nonzero(has_mask.reshape(-1).bool()).squeeze(1).cpu().tolist()
        if masked:
            # pixel work runs in numpy on CPU: region labelling needs it, and it is single-threaded
            for size in dict.fromkeys(self.pixel_eval_size.get(dataset[i]) for i in masked):
                rows = [i for i in masked if self.pixel_eval_size.get(dataset[i]) == size]
                self._add_masked(anomaly_map, mask, rows, [groups[i] for i in rows], size, device)
            release_freed_memory()
        if self.type_metrics is not None:
            self._update_types(score, label, anomaly_map, mask, has_mask, dataset, cls_name, defect_type)

    def _add_masked(self, anomaly_map: Tensor, mask: Tensor, rows: list[int], groups: list[int], size: int | None,
                    device: torch.device) -> None:
        """Pixel states of the images at `rows` of the batch (masked ones), at `size` x `size` (None: as given)."""
        if len(rows) < len(anomaly_map):
            index = torch.tensor(rows, device=anomaly_map.device)
            anomaly_map, mask = anomaly_map[index], mask[index]
        if size is not None:
            anomaly_map, mask = resize_for_pixel_metrics(anomaly_map.detach(), mask.detach(), size)
        anomalous = mask.detach().cpu()
        anomalous = anomalous.numpy() if anomalous.dtype == torch.bool else anomalous.float().numpy() > 0.5
        self._add_pixels(quantize_maps(anomaly_map), anomalous, groups, device)

    def _update_types(self, score: Tensor, label: Tensor, anomaly_map: Tensor, mask: Tensor, has_mask: Tensor,
                      dataset: Sequence[str], cls_name: Sequence[str], defect_type: Sequence[str] | None) -> None:
        """Feed the type evaluator: per anomaly type, its images and every normal image, as class <cls>/<type>."""
        if not any(d in self.anomaly_types for d in dataset):
            return
        if defect_type is None:
            raise ValueError(f"AnomalyMetrics: anomaly types of {sorted(self.anomaly_types)} need defect_type per image")
        for type_name in dict.fromkeys(t for types in self.anomaly_types.values() for t in types.values()):
            rows = [i for i, (d, t, y) in enumerate(zip(dataset, defect_type, label.tolist(), strict=True))
                    if d in self.anomaly_types and (y == 0 or self.anomaly_types[d].get(t) == type_name)]
            if not rows:
                continue
            index = torch.tensor(rows, device=score.device)
            self.type_metrics.update(score[index], label[index], anomaly_map[index], mask[index], has_mask[index],
                                     [dataset[i] for i in rows], [f"{cls_name[i]}/{type_name}" for i in rows])

    def _check_names(self, dataset: Sequence[str], cls_name: Sequence[str], batch: int) -> list[int]:
        if isinstance(dataset, str) or isinstance(cls_name, str):
            raise TypeError("AnomalyMetrics.update: dataset and cls_name must be lists of str, one per image")
        if len(dataset) != batch or len(cls_name) != batch:
            raise ValueError(
                f"AnomalyMetrics.update: {batch} scores but {len(dataset)} dataset and {len(cls_name)} cls_name entries"
            )
        for name in (*dataset, *cls_name):
            if not isinstance(name, str) or not name or "\x00" in name:
                raise ValueError(f"AnomalyMetrics.update: dataset/class names must be non-empty str, got {name!r}")
        unknown = sorted(set(dataset) - self.domains.keys())
        if unknown:
            raise ValueError(
                f"AnomalyMetrics: datasets {unknown} have no domain; add them to AnomalyMetrics(domains=...), "
                f"which knows {sorted(self.domains)}"
            )
        return [group_id(d, c) for d, c in zip(dataset, cls_name)]

    @staticmethod
    def _check_shapes(
        score: Tensor, label: Tensor, anomaly_map: Tensor, mask: Tensor, has_mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        batch = len(score)
        if mask.ndim == 4 and mask.shape[1] == 1:
            mask = mask[:, 0]  # Batch.mask is [B, 1, H, W]
        shapes_ok = (
            score.ndim == 1
            and label.shape == (batch,)
            and has_mask.shape == (batch,)
            and anomaly_map.ndim == 3
            and anomaly_map.shape[0] == batch
            and mask.shape == anomaly_map.shape
        )
        if not shapes_ok:
            raise ValueError(
                "AnomalyMetrics.update expects score [B], label [B], anomaly_map [B, H, W], mask [B, H, W] "
                f"or [B, 1, H, W] and has_mask [B]; got score {tuple(score.shape)}, label "
                f"{tuple(label.shape)}, anomaly_map {tuple(anomaly_map.shape)}, mask {tuple(mask.shape)}, "
                f"has_mask {tuple(has_mask.shape)} (resize the map to the mask size first)"
            )
        return anomaly_map, mask

    def _add_pixels(self, levels: np.ndarray, anomalous: np.ndarray, groups: list[int], device: torch.device) -> None:
        """levels uint16 [M, H, W], anomalous bool [M, H, W], groups [M] of the masked images of a batch."""
        group_of_image = np.array(groups, dtype=np.int64)
        self._add_histograms(levels, group_of_image, self.hist_groups, self.pixel_hists, device)
        normal = ~anomalous.reshape(len(anomalous), -1).any(1)
        if normal.any():
            self._add_histograms(levels[normal], group_of_image[normal], self.normal_hist_groups,
                                 self.normal_pixel_hists, device)

        labels, _ = label_regions(anomalous)  # numbered image after image
        flat_labels = labels.ravel()
        anomalous_pixels = np.flatnonzero(flat_labels)  # image after image
        region_of_pixel = flat_labels[anomalous_pixels]
        sizes = np.bincount(region_of_pixel)
        last_label = np.maximum.accumulate(labels.reshape(len(labels), -1).max(1))
        per_image = {
            "masked_groups": group_of_image,
            "masked_regions": np.diff(last_label, prepend=0),
            "masked_anomalous": np.bincount(anomalous_pixels // labels[0].size, minlength=len(labels)),
            "anomalous_levels": levels.ravel()[anomalous_pixels].astype(np.int32),
            "anomalous_region_sizes": sizes[region_of_pixel].astype(np.int32),
        }
        for name, values in per_image.items():
            getattr(self, name).append(torch.from_numpy(values).to(device=device, dtype=_STATE_DTYPES[name]))

    @staticmethod
    def _add_histograms(
        levels: np.ndarray, group_of_image: np.ndarray, group_state: list, hist_state: list, device: torch.device
    ) -> None:
        """Add the level histogram of each group's images to its entry (one per group, not per batch)."""
        known = [int(g) for g in group_state]
        distinct = list(dict.fromkeys(group_of_image.tolist()))
        for gid in distinct:
            # numpy's bincount of uint16 is the fastest CPU histogram; no copy when the batch is one group
            in_group = levels if len(distinct) == 1 else levels[group_of_image == gid]
            hist = torch.from_numpy(np.bincount(in_group.ravel(), minlength=MAP_LEVELS)).to(device)
            if gid in known:
                hist_state[known.index(gid)].add_(hist)
            else:
                group_state.append(torch.tensor([gid], dtype=torch.int64, device=device))
                hist_state.append(hist)
                known.append(gid)

    def state_nbytes(self) -> int:
        """Bytes held by the accumulated states (all the evaluator keeps between updates)."""
        states = [getattr(self, name) for name in _STATE_DTYPES]
        tensors = [t for state in states for t in (state if isinstance(state, list) else [state])]
        own = sum(t.numel() * t.element_size() for t in tensors)
        return own + (self.type_metrics.state_nbytes() if self.type_metrics is not None else 0)

    def forward(self, *args, **kwargs) -> None:
        """Accumulate only: per-batch values of these metrics mean little (and one-class batches have none)."""
        self.update(*args, **kwargs)

    def sync(self, *args, **kwargs) -> None:
        # torchmetrics gathers an empty list state as a float32 stand-in, which cannot be gathered
        # against another rank's integer data (e.g. a rank that saw no masked image): give it its dtype.
        device = torch.device("cpu") if self.compute_on_cpu else self.device
        for name, dtype in _STATE_DTYPES.items():
            state = getattr(self, name)
            if isinstance(state, list) and not state:
                state.append(torch.zeros(0, dtype=dtype, device=device))
        super().sync(*args, **kwargs)

    # ---------------------------------------------------------------- compute
    def compute(self) -> ResultsTable:
        """Metrics per group (datasets in ``domains`` order, classes in natural order) and their means."""
        names = self._group_names()
        dataset_rank = {d: i for i, d in enumerate(self.domains)}
        ordered = sorted(names.items(), key=lambda kv: (dataset_rank[kv[1][0]], _natural_key(kv[1][1])))
        state = {name: _concat(getattr(self, name), dtype) for name, dtype in _STATE_DTYPES.items()}
        state["pixel_hists"] = state["pixel_hists"].reshape(-1, MAP_LEVELS)
        state["normal_pixel_hists"] = state["normal_pixel_hists"].reshape(-1, MAP_LEVELS)
        state["anomalous_starts"] = np.cumsum(state["masked_anomalous"]) - state["masked_anomalous"]
        multi_view = bool((state["image_samples"] != 0).any())
        rows, inspection_rows, decision_rows = [], [], []
        for gid, (dataset, cls_name) in ordered:
            group = f"{dataset}/{cls_name}"
            in_group = state["image_groups"] == gid
            scores, labels = state["image_scores"][in_group], state["image_labels"][in_group]
            keys = {"dataset": dataset, "domain": self.domains[dataset], "class": cls_name}
            row, inspection, decisions = dict(keys), dict(keys), dict(keys)
            row |= self._image_metrics(scores, labels, group)
            inspection |= {f"image_overkill@{e}": overkill_at_escape(scores, labels, e) for e in OVERKILL_ESCAPE_PERCENTS}
            if multi_view:
                sample_row, sample_inspection = self._sample_metrics(
                    scores, labels, state["image_samples"][in_group], group)
                row |= sample_row
                inspection |= sample_inspection
            if self.thresholds is not None:
                decisions |= image_decision_metrics(scores, labels, self.thresholds.lookup(dataset, cls_name)[0].image)
            if (state["hist_groups"] == gid).any():
                anomalous = _group_pixel_index(state, gid)  # the group's anomalous pixels, found once
                negatives, positives = self._pixel_histograms(state, gid, anomalous)
                row |= self._pixel_metrics(state, gid, group, negatives, positives, anomalous)
                inspection |= self._aupimo(state, gid)
                decisions |= self._pixel_decisions(dataset, cls_name, negatives, positives)
            else:  # no image of the group has a mask: an image-level dataset, nothing to warn about
                row |= {m: math.nan for m in METRIC_NAMES if m.startswith("pixel_")}
            rows.append(row)
            inspection_rows.append({m: math.nan for m in INSPECTION_METRICS} | inspection)
            decision_rows.append({m: math.nan for m in DECISION_METRICS} | decisions)
        layout, inspection_layout = (MULTI_VIEW, MULTI_VIEW_INSPECTION) if multi_view else (THRESHOLD_FREE, INSPECTION)
        sections = {"inspection": ResultsTable(inspection_rows, inspection_layout)}
        if self.thresholds is not None:
            sections["decisions"] = ResultsTable(decision_rows, decisions_layout(self.thresholds.describe()))
        if self.type_metrics is not None:  # computed on every rank (it syncs), even one that saw no such image
            sections |= self._type_sections()
        return ResultsTable(rows, layout, sections=sections)

    def _type_sections(self) -> dict[str, ResultsTable]:
        """The anomaly-type evaluator's table and its inspection section, titled, as two sections."""
        by_type = self.type_metrics.compute()
        if not by_type.class_rows():
            return {}
        inspection = by_type.sections["inspection"]
        note = "each anomaly type with all normal images of its class"
        return {
            "anomaly_types": ResultsTable(by_type.class_rows(), replace(
                by_type.layout, title=f"By anomaly type ({note})")),
            "anomaly_types_inspection": ResultsTable(inspection.class_rows(), replace(
                inspection.layout, title=f"Inspection metrics by anomaly type ({note})")),
        }

    def reset(self) -> None:
        super().reset()
        self._named_groups.clear()
        if self.type_metrics is not None:
            self.type_metrics.reset()

    def _sample_metrics(
        self, scores: np.ndarray, labels: np.ndarray, samples: np.ndarray, group: str
    ) -> tuple[dict[str, float], dict[str, float]]:
        """S-AUROC/AP/F1max and S-Overkill@e of the group's multi-view samples (NaN when it has none)."""
        viewed = samples != 0
        if not viewed.any():
            return dict.fromkeys(SAMPLE_METRICS, math.nan), dict.fromkeys(SAMPLE_INSPECTION_METRICS, math.nan)
        sample_scores, sample_labels = sample_max(scores[viewed], labels[viewed], samples[viewed])
        counts = counts_from_scores(torch.from_numpy(sample_scores), torch.from_numpy(sample_labels > 0))
        if counts.n_positive == 0 or counts.n_negative == 0:
            warn_one_class(f"sample metrics of {group}", counts.n_positive, counts.n_negative, unit="samples")
        overkill = {f"sample_overkill@{e}": overkill_at_escape(sample_scores, sample_labels, e)
                    for e in OVERKILL_ESCAPE_PERCENTS}
        return self._binary_metrics(counts, "sample"), overkill

    def _group_names(self) -> dict[int, tuple[str, str]]:
        raw = _concat(self.group_names, torch.uint8).tobytes().split(_NAME_SEPARATOR)[:-1]
        pairs = {(raw[i].decode(), raw[i + 1].decode()) for i in range(0, len(raw), 2)}
        return {group_id(d, c): (d, c) for d, c in pairs}

    @staticmethod
    def _binary_metrics(counts: ThresholdCounts, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}_auroc": auroc_from_counts(counts),
            f"{prefix}_ap": average_precision_from_counts(counts),
            f"{prefix}_f1max": max_f1_from_counts(counts),
        }

    def _image_metrics(self, scores: np.ndarray, labels: np.ndarray, group: str) -> dict[str, float]:
        counts = counts_from_scores(torch.from_numpy(scores), torch.from_numpy(labels > 0))
        if counts.n_positive == 0 or counts.n_negative == 0:
            warn_one_class(f"image metrics of {group}", counts.n_positive, counts.n_negative, unit="images")
        return self._binary_metrics(counts, "image")

    @staticmethod
    def _pixel_histograms(
        state: dict[str, np.ndarray], gid: int, anomalous: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Level histograms of the group's normal and anomalous pixels (anomalous: the positions of its entries in
        anomalous_levels)."""
        all_pixels = state["pixel_hists"][state["hist_groups"] == gid].sum(0)
        positives = np.bincount(state["anomalous_levels"][anomalous], minlength=MAP_LEVELS)
        return all_pixels - positives, positives

    def _pixel_metrics(
        self,
        state: dict[str, np.ndarray],
        gid: int,
        group: str,
        negatives: np.ndarray,
        positives: np.ndarray,
        in_group: np.ndarray,
    ) -> dict[str, float]:
        levels = state["anomalous_levels"][in_group]
        n_regions = int(state["masked_regions"][state["masked_groups"] == gid].sum())
        overlap = np.zeros(MAP_LEVELS, dtype=np.int64)
        if n_regions:  # integer adds: exact in any order
            np.add.at(overlap, levels, region_weights(state["anomalous_region_sizes"][in_group], n_regions))
        counts = counts_from_histograms(negatives, positives, overlap)
        if counts.n_positive == 0 or counts.n_negative == 0:
            warn_one_class(f"pixel metrics of {group}", counts.n_positive, counts.n_negative, unit="pixels")
        return self._binary_metrics(counts, "pixel") | {"pixel_aupro": aupro_from_counts(counts, self.fpr_limit)}

    @staticmethod
    def _aupimo(state: dict[str, np.ndarray], gid: int) -> dict[str, float]:
        """Mean and std of AUPIMO over the group's anomalous images (NaN without normal images)."""
        normal_hist = state["normal_pixel_hists"][state["normal_hist_groups"] == gid].sum(0)
        in_group = state["masked_groups"] == gid
        # each masked image's anomalous-pixel levels are one run of anomalous_levels, images in stored order
        counts = state["masked_anomalous"]
        ends = np.cumsum(counts)
        starts = ends - counts
        mine = np.flatnonzero(in_group & (counts > 0))  # vectorised: datasets have up to ~1e5 masked images
        per_image = aupimo_per_image(normal_hist, [state["anomalous_levels"][starts[i]:ends[i]] for i in mine])
        mean, std = mean_and_std(per_image)
        return {"pixel_aupimo": mean, "pixel_aupimo_std": std}

    def _pixel_decisions(
        self, dataset: str, cls_name: str, negatives: np.ndarray, positives: np.ndarray
    ) -> dict[str, float]:
        pixel = None if self.thresholds is None else self.thresholds.lookup(dataset, cls_name)[0].pixel
        if pixel is None or not positives.any():
            return {}
        return pixel_decision_metrics(negatives, positives, threshold_to_level(pixel))
