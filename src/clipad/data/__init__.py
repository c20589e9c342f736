"""Datasets: sample tables, transforms, datamodules and the embedded synthetic set."""
