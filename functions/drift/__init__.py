"""Drift detection: compare live inputs with the training profile preprocessing wrote."""
