"""Results tables for people: console output, heatmap figures, run comparisons."""
