"""Measures of a classifier's quality that training records and the report shows: accuracy,
precision, recall and F1, and how far its confidence can be trusted (calibration)."""
