"""Decision thresholds: calibration rules, the thresholds file, the bootstrap spread of false rejects."""
