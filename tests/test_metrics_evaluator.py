"""AnomalyMetrics (per-group accumulation, DDP sync) and ResultsTable (means, markdown, CSV, summary)."""

from __future__ import annotations

import math
import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from clipad.calibration.thresholds import ClassThreshold, DecisionThresholds
from clipad.metrics import (
    METRIC_NAMES,
    AnomalyMetrics,
    MissingMetricWarning,
    ResultsTable,
    aupro,
    auroc,
    average_precision,
    dequantize_levels,
    max_f1,
    quantize_maps,
)

DOMAINS = {"ind": "industrial", "scan": "medical", "polyp": "medical"}
SIZE = 20


def make_thresholds() -> DecisionThresholds:
    """Class thresholds for ind/c1 and scan/brain; every other class uses the global ones."""
    return DecisionThresholds(
        "fixed",
        ClassThreshold(0.6, 0.5503),  # pixel thresholds between two levels: "value >= t" is unambiguous
        {"ind": {"c1": ClassThreshold(0.7, 0.8003)}, "scan": {"brain": ClassThreshold(0.5, None)}},
    )


def make_batches(seed: int = 0) -> list[dict]:
    """Batches of three datasets: 'ind' (pixel masks, 3 classes, one class without normal images),
    'scan' (image labels only) and 'polyp' (pixel masks, every image anomalous). Mixed groups per batch."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    plan = [("ind", ["c2", "c10", "c1", "c10"], True)] * 5 + [("ind", ["c3"] * 3, True)] * 2
    plan += [("scan", ["brain"] * 4, False)] * 3 + [("polyp", ["colon"] * 2, True)] * 3
    for number, (dataset, classes, has_masks) in enumerate(plan):
        count = len(classes)
        masks = torch.zeros(count, SIZE, SIZE, dtype=torch.bool)
        label = (torch.arange(count) + number) % 2  # every position (class of 'ind') gets both labels
        if dataset == "polyp" or classes[0] == "c3":
            label[:] = 1
        for i in range(count):
            if label[i] and has_masks:
                for _ in range(int(torch.randint(1, 3, (1,), generator=gen))):
                    y, x, h, w = torch.randint(0, SIZE - 5, (4,), generator=gen).tolist()
                    masks[i, y : y + h % 5 + 1, x : x + w % 5 + 1] = True
        maps = torch.rand(count, SIZE, SIZE, generator=gen) * 0.7 + 0.3 * masks
        maps = torch.round(maps * 40) / 40  # ties on purpose
        score = torch.round((maps.flatten(1).amax(1) + 0.3 * label) * 10) / 13
        batches.append(
            {
                "score": score,
                "label": label,
                "anomaly_map": maps,
                "mask": masks.float() if has_masks else torch.zeros(count, SIZE, SIZE),
                "has_mask": torch.full((count,), has_masks),
                "dataset": [dataset] * count,
                "cls_name": classes,
            }
        )
    return batches


VIEW_OPTIONS = {
    "thresholds": None,
    "anomaly_types": {"ind": {"scratch": "structural", "missing": "logical"}},
    "pixel_eval_size": {"polyp": 12},
}


def make_view_batches(seed: int = 0) -> list[dict]:
    """make_batches with multi-view samples (two consecutive images of a batch form one sample) and defect
    types ('ind': scratch / missing alternating)."""
    batches = make_batches(seed)
    for number, batch in enumerate(batches):
        count = len(batch["score"])
        batch["view_sample_id"] = [f"s{number}_{i // 2}" for i in range(count)]
        batch["defect_type"] = ["good" if y == 0 else ("scratch", "missing")[(number // 2 + i) % 2]
                                for i, y in enumerate(batch["label"].tolist())]
        if batch["dataset"][0] == "ind" and number % 3 == 0:  # batches whose images are not all masked
            batch["has_mask"] = batch["has_mask"].clone()
            batch["has_mask"][0] = False
    return batches


def evaluate(batches: list[dict], **kwargs) -> ResultsTable:
    metrics = AnomalyMetrics(DOMAINS, **kwargs)
    for batch in batches:
        metrics.update(**batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMetricWarning)
        return metrics.compute()


def same_rows(a: list[dict], b: list[dict]) -> bool:
    def key(row: dict) -> list:
        return [("nan" if isinstance(v, float) and math.isnan(v) else v) for v in row.values()]

    return [key(r) for r in a] == [key(r) for r in b]


def class_row(table: ResultsTable, dataset: str, cls: str) -> dict:
    return next(r for r in table.rows if r["level"] == "class" and (r["dataset"], r["class"]) == (dataset, cls))


# ---------------------------------------------------------------- AnomalyMetrics
def test_groups_match_functional_metrics_on_stored_maps():
    # imported here, not at the top: the DDP test's spawned workers re-import this module
    from sklearn.metrics import average_precision_score, roc_auc_score

    batches = make_batches()
    table = evaluate(batches)
    for dataset, cls in [("ind", "c1"), ("ind", "c2"), ("ind", "c10"), ("polyp", "colon")]:
        picked = [
            (b, i) for b in batches for i in range(len(b["score"])) if (b["dataset"][i], b["cls_name"][i]) == (dataset, cls)
        ]
        maps = dequantize_levels(np.stack([quantize_maps(b["anomaly_map"][i]) for b, i in picked]))
        masks = np.stack([b["mask"][i].numpy() > 0.5 for b, i in picked])
        row = class_row(table, dataset, cls)
        assert row["pixel_auroc"] == pytest.approx(auroc(maps, masks), abs=1e-12)
        assert row["pixel_ap"] == pytest.approx(average_precision(maps, masks), abs=1e-12)
        assert row["pixel_f1max"] == pytest.approx(max_f1(maps, masks), abs=1e-12)
        assert row["pixel_aupro"] == pytest.approx(aupro(maps, masks), abs=1e-12)
        if dataset == "ind":
            scores = np.array([float(b["score"][i]) for b, i in picked])
            labels = np.array([int(b["label"][i]) for b, i in picked])
            assert row["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
            assert row["image_ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


def test_inspection_and_decision_sections_match_the_functions():
    from clipad.metrics.at_threshold import image_decision_metrics, overkill_at_escape

    batches = make_batches()
    table = evaluate(batches, thresholds=make_thresholds())
    assert set(table.sections) == {"inspection", "decisions"}
    inspection, decisions = table.sections["inspection"], table.sections["decisions"]
    assert "decisions" not in evaluate(batches).sections
    for dataset, cls, image_t, pixel_t in [("ind", "c1", 0.7, 0.8003), ("ind", "c2", 0.6, 0.5503),
                                           ("scan", "brain", 0.5, None), ("polyp", "colon", 0.6, 0.5503)]:
        picked = [
            (b, i) for b in batches for i in range(len(b["score"])) if (b["dataset"][i], b["cls_name"][i]) == (dataset, cls)
        ]
        scores = np.array([float(b["score"][i]) for b, i in picked])
        labels = np.array([int(b["label"][i]) for b, i in picked])
        row = class_row(decisions, dataset, cls)
        for name, value in image_decision_metrics(scores, labels, image_t).items():
            assert same_rows([{name: row[name]}], [{name: value}]), (dataset, cls, name)
        overkill = class_row(inspection, dataset, cls)
        for e in (2, 5, 10):
            assert same_rows([{"v": overkill[f"image_overkill@{e}"]}], [{"v": overkill_at_escape(scores, labels, e)}])
        if pixel_t is None:
            assert math.isnan(row["pixel_f1"]) and math.isnan(row["pixel_iou"])
            continue
        # literal: every stored map value against the threshold
        maps = dequantize_levels(np.stack([quantize_maps(b["anomaly_map"][i]) for b, i in picked]))
        masks = np.stack([b["mask"][i].numpy() > 0.5 for b, i in picked])
        fail = maps >= pixel_t
        tp, fp, fn = int((fail & masks).sum()), int((fail & ~masks).sum()), int((~fail & masks).sum())
        assert row["pixel_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-15)
        assert row["pixel_iou"] == pytest.approx(tp / (tp + fp + fn), abs=1e-15)


def test_missing_values_warn_only_for_one_class_groups():
    metrics = AnomalyMetrics(DOMAINS)
    for batch in make_batches():
        metrics.update(**batch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = metrics.compute()
    messages = sorted(str(w.message) for w in caught if w.category is MissingMetricWarning)
    assert len(messages) == 2  # ind/c3 and polyp/colon have no normal image; nothing about 'scan' pixels
    assert messages[0].startswith("image metrics of ind/c3 is missing")
    assert messages[1].startswith("image metrics of polyp/colon is missing")
    scan = class_row(table, "scan", "brain")
    assert not math.isnan(scan["image_auroc"])
    assert all(math.isnan(scan[m]) for m in METRIC_NAMES if m.startswith("pixel_"))
    c3 = class_row(table, "ind", "c3")
    assert math.isnan(c3["image_auroc"]) and not math.isnan(c3["pixel_aupro"])
    ind_mean = next(r for r in table.rows if r["level"] == "dataset" and r["dataset"] == "ind")
    present = [class_row(table, "ind", c)["image_auroc"] for c in ("c1", "c2", "c10")]
    assert ind_mean["image_auroc"] == pytest.approx(sum(present) / 3)  # c3 left out, not counted as 0 or 1


def test_rows_follow_domains_order_and_natural_class_order():
    table = evaluate(make_batches())
    order = [(r["level"], r["dataset"], r["class"]) for r in table.rows]
    assert order == [
        ("class", "ind", "c1"),
        ("class", "ind", "c2"),
        ("class", "ind", "c3"),
        ("class", "ind", "c10"),
        ("class", "scan", "brain"),
        ("class", "polyp", "colon"),
        ("dataset", "ind", "mean"),
        ("dataset", "scan", "mean"),
        ("dataset", "polyp", "mean"),
        ("domain", "mean", "mean"),
        ("domain", "mean", "mean"),
    ]
    assert [r["domain"] for r in table.rows[-2:]] == ["industrial", "medical"]


def test_mask_layouts_and_forward_are_equivalent():
    batches = make_batches()
    reference = evaluate(batches)
    as_bool_4d = [b | {"mask": (b["mask"] > 0.5).unsqueeze(1)} for b in batches]
    assert same_rows(evaluate(as_bool_4d).rows, reference.rows)
    metrics = AnomalyMetrics(DOMAINS)
    for batch in batches:
        assert metrics(**batch) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMetricWarning)
        assert same_rows(metrics.compute().rows, reference.rows)
        metrics.reset()
        metrics.update(**batches[0])
        assert len(metrics.compute().rows) == 3 + 1 + 1  # c1, c2, c10 of 'ind' only


def test_sample_order_does_not_change_any_bit():
    batches = make_batches()
    flat = [{k: v[i : i + 1] for k, v in b.items()} for b in batches for i in range(len(b["score"]))]
    shuffled = [flat[i] for i in np.random.default_rng(0).permutation(len(flat))]
    thresholds = make_thresholds()
    assert same_rows(all_rows(evaluate(shuffled, thresholds=thresholds)), all_rows(evaluate(batches, thresholds=thresholds)))


def test_state_is_compact():
    """Maps are reduced to two histograms per class (all pixels; normal images' pixels, AUPIMO's FPR)
    plus 8 bytes per anomalous pixel."""
    metrics = AnomalyMetrics({"big": "industrial"})
    maps = torch.rand(16, 256, 256)
    masks = torch.zeros(16, 256, 256, dtype=torch.bool)
    masks[:8, 100:120, 50:90] = True
    for start in (0, 8):
        part = slice(start, start + 8)
        metrics.update(
            maps[part].amax((1, 2)),
            masks[part].any(2).any(1).long(),
            maps[part],
            masks[part],
            torch.ones(8, dtype=torch.bool),
            ["big"] * 8,
            ["a"] * 8,
        )
    state_bytes = metrics.state_nbytes()
    assert state_bytes < 2 * 65536 * 8 + 8 * int(masks.sum()) + 4096
    assert state_bytes < maps.numel() * maps.element_size() / 3


def test_bad_updates_are_clear_errors():
    batch = make_batches()[0]
    metrics = AnomalyMetrics(DOMAINS)
    with pytest.raises(ValueError, match=r"datasets \['other'\] have no domain"):
        metrics.update(**batch | {"dataset": ["other"] * 4})
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        metrics.update(**batch | {"anomaly_map": batch["anomaly_map"] * 3})
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        metrics.update(**batch | {"anomaly_map": batch["anomaly_map"] * float("nan")})
    with pytest.raises(ValueError, match="resize the map to the mask size"):
        metrics.update(**batch | {"mask": batch["mask"][:, :10]})
    with pytest.raises(TypeError, match="lists of str"):
        metrics.update(**batch | {"dataset": "ind"})
    with pytest.raises(ValueError, match="only 0"):
        metrics.update(**batch | {"label": batch["label"] + 1})
    with pytest.raises(ValueError, match="non-empty strings"):
        AnomalyMetrics({"ind": ""})
    # values a hair outside [0, 1] (float rounding) are clamped, not refused
    metrics.update(**batch | {"anomaly_map": batch["anomaly_map"] * (1 + 1e-6)})


# ---------------------------------------------------------------- DDP
def _ddp_worker(rank: int, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)  # two processes on two cores
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    batches = make_batches()
    image_level = [b for b in batches if not b["has_mask"].any()]
    pixel_level = [b for b in batches if b["has_mask"].any()]
    splits = {
        "interleaved": batches[rank::2],
        # rank 1 sees no mask at all: its pixel states are empty and must still gather
        "no_masks_on_rank_1": pixel_level if rank == 0 else image_level,
    }
    results = {name: all_rows(evaluate(part, thresholds=make_thresholds())) for name, part in splits.items()}
    # views of one sample and the images of one anomaly type land on both ranks; polyp's maps are resized
    flat = [{k: v[i : i + 1] for k, v in b.items()} for b in make_view_batches() for i in range(len(b["score"]))]
    results["multi_view"] = all_rows(evaluate(flat[rank::2], **VIEW_OPTIONS))
    with open(f"{out_file}.{rank}", "wb") as f:
        pickle.dump(results, f)
    dist.destroy_process_group()


def all_rows(table: ResultsTable) -> list[dict]:
    """The rows of the table and of its sections (inspection: Overkill, AUPIMO; decisions)."""
    return table.rows + [row for section in table.sections.values() for row in section.rows]


def test_two_process_gloo_run_equals_single_process(tmp_path):
    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path / "rows")), nprocs=2, join=True)
    single = all_rows(evaluate(make_batches(), thresholds=make_thresholds()))
    for rank in (0, 1):
        with open(tmp_path / f"rows.{rank}", "rb") as f:
            results = pickle.load(f)
        for name, rows in results.items():
            expected = all_rows(evaluate(make_view_batches(), **VIEW_OPTIONS)) if name == "multi_view" else single
            assert same_rows(rows, expected), f"rank {rank}, split {name}"


# ---------------------------------------------------------------- ResultsTable
def make_table() -> ResultsTable:
    def row(dataset, domain, cls, base):
        values = {m: base + i / 100 for i, m in enumerate(METRIC_NAMES)}
        return {"dataset": dataset, "domain": domain, "class": cls, **values}

    rows = [
        row("a", "industrial", "x", 0.5),
        row("a", "industrial", "y", 0.7),
        row("b", "industrial", "z", 0.9),
        row("h", "medical", "brain", 0.8),
    ]
    rows[1]["image_auroc"] = math.nan
    for m in METRIC_NAMES[3:]:
        rows[3][m] = math.nan  # image-level dataset
    return ResultsTable(rows)


def test_means_skip_missing_and_average_datasets_per_domain():
    table = make_table()
    means = {(r["level"], r["dataset"], r["domain"]): r for r in table.rows if r["level"] != "class"}
    assert means[("dataset", "a", "industrial")]["image_auroc"] == pytest.approx(0.5)  # y missing
    assert means[("dataset", "a", "industrial")]["image_ap"] == pytest.approx((0.51 + 0.71) / 2)
    # domain mean is over dataset means (0.61 and 0.91), not over the three classes
    assert means[("domain", "mean", "industrial")]["image_ap"] == pytest.approx((0.61 + 0.91) / 2)
    assert math.isnan(means[("domain", "mean", "medical")]["pixel_aupro"])


def test_class_means_are_over_all_classes():
    table = make_table()
    means = table.class_means()
    assert means["image_auroc"] == pytest.approx((0.5 + 0.9 + 0.8) / 3)  # the missing class left out
    assert means["pixel_aupro"] == pytest.approx((0.56 + 0.76 + 0.96) / 3)  # image-level dataset left out
    assert [r["class"] for r in table.class_rows()] == ["x", "y", "z", "brain"]


def test_summary_keys_and_prefix():
    summary = make_table().summary(prefix="val")
    assert summary["val/a/image_auroc"] == pytest.approx(0.5)
    assert summary["val/industrial/image_ap"] == pytest.approx(0.76)
    assert "val/h/image_auroc" in summary and "val/h/pixel_auroc" not in summary  # missing left out
    assert all(k.startswith("val/") for k in summary)
    assert "test/medical/image_auroc" in make_table().summary()


def test_markdown_layout():
    text = make_table().to_markdown()
    lines = text.splitlines()
    assert lines[0].startswith("| Domain | Dataset | Class | Image AUROC | Image AP | Image F1-max†")
    assert "| industrial | a | x | 50.0 | 51.0 | 52.0 | 53.0 | 54.0 | 55.0 | 56.0 |" in lines
    assert "| industrial | a | y | - | 71.0 |" in text
    assert "| medical | h | brain | 80.0 | 81.0 | 82.0 | - | - | - | - |" in lines
    assert "| industrial | **mean** | **mean** | 70.0 | 76.0 |" in text
    assert "oracle-threshold" in lines[-1]
    assert "| x |" not in make_table().to_markdown(classes=False)


def test_csv_round_trip_and_wandb_data(tmp_path):
    table = make_table()
    table.to_csv(tmp_path / "results.csv")
    assert same_rows(ResultsTable.from_csv(tmp_path / "results.csv").rows, table.rows)
    header = (tmp_path / "results.csv").read_text().splitlines()[0]
    assert header == "level,domain,dataset,class," + ",".join(METRIC_NAMES)
    columns, data = table.wandb_table_data()
    assert columns[:4] == ["level", "domain", "dataset", "class"] and len(data) == len(table.rows)
    assert data[1][columns.index("image_auroc")] is None


def test_dataset_named_like_a_domain_is_refused():
    with pytest.raises(ValueError, match="both as dataset and as domain"):
        ResultsTable([{"dataset": "medical", "domain": "medical", "class": "x", **dict.fromkeys(METRIC_NAMES, 0.5)}])


# ---------------------------------------------------------------- multi-view, resized pixels, anomaly types
def test_sample_metrics_take_the_max_over_views():
    table = evaluate(make_view_batches(), **VIEW_OPTIONS)
    batches = make_view_batches()
    samples: dict[tuple[str, str], list[float]] = {}
    for batch in batches:
        for i, key in enumerate(zip(batch["cls_name"], batch["view_sample_id"])):
            if batch["dataset"][i] == "ind":
                entry = samples.setdefault(key, [-1.0, 0])
                entry[0] = max(entry[0], float(batch["score"][i]))
                entry[1] = max(entry[1], int(batch["label"][i]))
    scores = torch.tensor([s for (c, _), (s, _) in samples.items() if c == "c2"], dtype=torch.float64)
    labels = torch.tensor([y for (c, _), (_, y) in samples.items() if c == "c2"])
    row = class_row(table, "ind", "c2")
    assert 0 < int(labels.sum()) < len(labels)
    assert row["sample_auroc"] == pytest.approx(float(auroc(scores, labels)), abs=1e-12)
    assert row["sample_ap"] == pytest.approx(float(average_precision(scores, labels)), abs=1e-12)
    assert row["sample_f1max"] == pytest.approx(float(max_f1(scores, labels)), abs=1e-12)
    plain = evaluate(make_batches())
    assert "sample_auroc" not in plain.metrics  # no views: the table keeps today's columns


def test_pixel_eval_size_resizes_maps_bilinearly_and_masks_nearest():
    batches = [b for b in make_batches() if b["dataset"][0] == "polyp"]
    resized = evaluate(batches, pixel_eval_size={"polyp": 12})
    by_hand = []
    for b in batches:
        maps = torch.nn.functional.interpolate(b["anomaly_map"][:, None], size=(12, 12), mode="bilinear",
                                               align_corners=False)[:, 0]
        masks = torch.nn.functional.interpolate(b["mask"][:, None], size=(12, 12), mode="nearest")[:, 0]
        by_hand.append(b | {"anomaly_map": maps, "mask": masks})
    exact = evaluate(batches)
    assert same_rows(all_rows(resized), all_rows(evaluate(by_hand)))
    assert class_row(resized, "polyp", "colon")["pixel_auroc"] != class_row(exact, "polyp", "colon")["pixel_auroc"]
    with pytest.raises(ValueError, match="pixel_eval_size"):
        AnomalyMetrics(DOMAINS, pixel_eval_size={"polyp": -1})


def test_anomaly_types_get_their_own_rows_with_every_normal_image():
    batches = make_view_batches()
    table = evaluate(batches, **VIEW_OPTIONS)
    by_type = table.sections["anomaly_types"]
    assert [r["class"] for r in by_type.class_rows()][:2] == ["c1/logical", "c1/structural"]
    assert "anomaly_types_inspection" in table.sections and "By anomaly type" in table.to_markdown()
    for type_name, defect in (("logical", "missing"), ("structural", "scratch")):
        chosen = [(float(b["score"][i]), int(b["label"][i])) for b in batches for i in range(len(b["score"]))
                  if b["dataset"][i] == "ind" and b["cls_name"][i] == "c2" and b["defect_type"][i] in ("good", defect)]
        scores = torch.tensor([s for s, _ in chosen], dtype=torch.float64)
        labels = torch.tensor([y for _, y in chosen])
        assert 0 < int(labels.sum()) < len(labels)
        row = class_row(by_type, "ind", f"c2/{type_name}")
        assert row["image_auroc"] == pytest.approx(float(auroc(scores, labels)), abs=1e-12)
    assert class_row(table, "ind", "c2")["image_auroc"] == class_row(evaluate(make_batches()), "ind", "c2")["image_auroc"]
    metrics = AnomalyMetrics(DOMAINS, anomaly_types=VIEW_OPTIONS["anomaly_types"])
    with pytest.raises(ValueError, match="defect_type"):
        metrics.update(**make_batches()[0])
