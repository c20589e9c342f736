"""Exact anomaly-detection metrics and the per-class / per-dataset / per-domain evaluator.

from clipad.metrics import AnomalyMetrics
metrics = AnomalyMetrics(domains={"mvtec": "industrial", "headct": "medical"})
metrics.update(score, label, anomaly_map, mask, has_mask, dataset, cls_name)  # per test batch
table = metrics.compute()            # ResultsTable
table.summary(prefix="test")         # {"test/mvtec/pixel_aupro": 0.81, ...}
"""

from clipad.metrics.evaluator import AnomalyMetrics, dequantize_levels, quantize_maps
from clipad.metrics.functional import MissingMetricWarning, aupro, auroc, average_precision, max_f1
from clipad.metrics.results import METRIC_NAMES, ResultsTable

__all__ = [
    "METRIC_NAMES",
    "AnomalyMetrics",
    "MissingMetricWarning",
    "ResultsTable",
    "aupro",
    "auroc",
    "average_precision",
    "dequantize_levels",
    "max_f1",
    "quantize_maps",
]
