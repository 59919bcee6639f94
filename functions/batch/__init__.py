"""Batch predictions: a file dropped under ``<dataset>/batch/`` is scored by the live model."""
