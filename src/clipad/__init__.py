"""clipad: CLIP-based zero- and few-shot visual anomaly detection (AdaCLIP, AdaptCLIP)."""

__version__ = "0.1.0"
