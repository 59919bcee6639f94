"""A verified, ready-to-run model: ONNX bytes checked against their sha256, then one session.

Evaluate (whole test split) and inference (one request) score through ``ScoringModel`` and the
feature module's ``onnx_feeds``, so the encoding a model was evaluated with is the one it serves
with. Imports onnxruntime, numpy and pydantic only: this module is on the inference path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from functions.shared.errors import SluiceError
from functions.shared.features import LabelValue, label_values, onnx_feeds
from functions.shared.model_card import ModelCard


class ModelIntegrityError(SluiceError):
    """The model file is not the one the registry recorded (sha256 mismatch) or not loadable."""


@dataclass(frozen=True)
class Scores:
    """Classification: ``codes`` (class indexes into ``card.classes``), ``labels`` (the classes
    as the data spells them) and ``probabilities`` (rows × classes, columns in ``card.classes``
    order). Regression: ``values``."""

    codes: list[int] | None = None
    labels: list[str] | None = None
    probabilities: NDArray[np.float32] | None = None
    values: NDArray[np.float32] | None = None


def session_options() -> ort.SessionOptions:
    """One thread: a Lambda has one or two vCPUs, and the models are small trees and linear
    graphs where thread hand-offs cost more than they save."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return options


def verified(onnx_bytes: bytes, expected_sha256: str) -> bytes:
    """``onnx_bytes``, when their sha256 is the one recorded; else ModelIntegrityError."""
    actual = hashlib.sha256(onnx_bytes).hexdigest()
    if actual != expected_sha256:
        raise ModelIntegrityError(
            f"model file sha256 {actual} does not match the recorded {expected_sha256}: "
            "refusing to load it"
        )
    return onnx_bytes


class ScoringModel:
    def __init__(self, onnx_bytes: bytes, card: ModelCard, *, expected_sha256: str) -> None:
        verified(onnx_bytes, expected_sha256)
        if card.onnx.sha256 != expected_sha256:
            raise ModelIntegrityError(
                f"model card describes sha256 {card.onnx.sha256}, not {expected_sha256}"
            )
        try:
            self.session = ort.InferenceSession(
                onnx_bytes, sess_options=session_options(), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelIntegrityError(f"onnxruntime cannot load the model: {exc}") from exc
        self.card = card
        self.sha256 = expected_sha256
        self._outputs = card.output_names
        self._input_names = card.input_names
        self._classes = list(card.classes or [])
        # What a prediction's ``label`` carries: the class as a JSON string, integer or boolean.
        self.labels: list[LabelValue] = label_values(self._classes)

    def score_feeds(self, feeds: Mapping[str, NDArray[Any]]) -> Scores:
        return self.scores(self.session.run(self._outputs, feeds))

    def scores(self, outputs: Sequence[NDArray[Any]]) -> Scores:
        """The graph's outputs, in ``card.output_names`` order, as Scores."""
        if self.card.task == "classification":
            codes, probabilities = outputs
            # A list comprehension beats object-array indexing for the few rows of a request.
            indexes = codes.ravel().tolist()
            labels = [self._classes[code] for code in indexes]
            return Scores(codes=indexes, labels=labels, probabilities=probabilities)
        return Scores(values=outputs[0].ravel())

    def score(self, columns: Mapping[str, Sequence[Any] | NDArray[Any]]) -> Scores:
        """Score columns keyed by the features' (user's) names."""
        return self.score_feeds(onnx_feeds(self.card.features, columns, self._input_names))
