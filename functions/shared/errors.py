"""Typed errors. Their class names double as the error names Step Functions Retry/Catch match."""

from __future__ import annotations


class SluiceError(Exception):
    """Base of every error sluice raises on purpose."""


class ContractError(SluiceError):
    """The dataset's contract.json is missing or invalid."""


class DataValidationError(SluiceError):
    """An upload broke a data rule; the report says which rows and columns."""


class ParityError(SluiceError):
    """The exported ONNX model disagrees with the native model it came from."""


class TrainingError(SluiceError):
    """Training could not produce a model (bad hyperparameters, unusable data)."""
