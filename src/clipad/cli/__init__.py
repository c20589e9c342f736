"""Command-line entry points: Hydra mains and plain commands."""
