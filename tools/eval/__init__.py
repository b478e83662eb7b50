"""Offline evaluation and calibration: `faceval eval ...` and `faceval calibrate ...`."""
