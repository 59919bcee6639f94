"""A served model opened for explanations: the same graph with its encoded tensor as an extra
output, and the explanation table its file carries (functions/shared/explanation.py).

Built on the first explain request for a model version (``ModelCache.explaining``), never for a
predict: a second onnxruntime session costs the model's size in memory again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from functions.shared.explanation import (
    ABSENT_KEY,
    BINARY_OUTPUTS,
    METADATA_KEY,
    Contributions,
    Explainer,
    ExplanationTable,
    ExplanationTableError,
    metadata_entries,
    with_float_outputs,
)
from functions.shared.explanation_outputs import PER_CLASS_OUTPUTS
from functions.shared.scoring import Scores, ScoringModel, session_options


class ExplainingModel:
    """Scores and explains rows in one onnxruntime run.

    Raises
    ------
    ExplanationTableError
        The file carries no explanation table (trained before explanations existed, or a model
        kind they do not cover), or one that does not fit the model.
    """

    def __init__(self, onnx_bytes: bytes, scoring: ScoringModel) -> None:
        entries = metadata_entries(onnx_bytes)
        raw = entries.get(METADATA_KEY)
        if raw is None and ABSENT_KEY in entries:  # training said why
            raise ExplanationTableError(
                f"its model file carries no explanation table: {entries[ABSENT_KEY].decode()}"
            )
        if raw is None:
            raise ExplanationTableError(
                "its model file carries no explanation table (trained before explanations "
                "existed, or a kind of model they do not cover)"
            )
        self.explainer = Explainer(ExplanationTable.from_bytes(raw))
        self.table = self.explainer.table
        self.features = len(scoring.card.features)
        self.column_features = self.table.column_features
        if int(self.column_features.max(initial=-1)) >= self.features:
            raise ExplanationTableError(
                f"its explanation table names feature {self.column_features.max()}, the "
                f"card has {self.features}"
            )
        self.scoring = scoring
        # A blend's members may read one shared encoded tensor: each is fetched once.
        tensors = list(dict.fromkeys(self.explainer.features_tensors))
        self._member_tensor = [tensors.index(t) for t in self.explainer.features_tensors]
        self._outputs = [*scoring.card.output_names, *tensors]
        try:
            self.session = ort.InferenceSession(
                with_float_outputs(onnx_bytes, tensors),
                sess_options=session_options(),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ExplanationTableError(f"its encoded tensor cannot be read: {exc}") from exc

    def run(self, feeds: Mapping[str, NDArray[Any]]) -> tuple[Scores, Contributions]:
        """The rows' scores, as the predict route gives them, and their contributions: of the
        positive class (binary), of the predicted class (multiclass), of the value (regression;
        of its log for trees fitted on a log target)."""
        scores, encoded = self._scores_and_encoded(feeds)
        return scores, self.explainer.explain(encoded, self._targets(scores, encoded))

    def run_classes(
        self, feeds: Mapping[str, NDArray[Any]]
    ) -> tuple[Scores, Contributions, list[Contributions]]:
        """``run``'s answer and, for a classifier, the contributions of every class, in the
        card's class order (empty for a regressor). A binary classifier's first class is its
        second's negation: its log-odds are the opposite."""
        scores, encoded = self._scores_and_encoded(feeds)
        contributions = self.explainer.explain(encoded, self._targets(scores, encoded))
        rows = encoded[0].shape[0]
        every: list[Contributions] = []
        if self.table.output in PER_CLASS_OUTPUTS:
            for target in range(len(self.scoring.card.classes or [])):
                targets = np.full(rows, target, dtype=np.int64)
                every.append(self.explainer.explain(encoded, targets))
        elif self.table.output in BINARY_OUTPUTS:
            c = contributions
            every = [Contributions(c.targets, -c.base, -c.columns, -c.margin), contributions]
        return scores, contributions, every

    def _scores_and_encoded(
        self, feeds: Mapping[str, NDArray[Any]]
    ) -> tuple[Scores, list[NDArray[Any]]]:
        outputs = self.session.run(self._outputs, feeds)
        named = len(self.scoring.card.output_names)
        fetched = outputs[named:]
        return (
            self.scoring.scores(outputs[:named]),
            [np.asarray(fetched[index]) for index in self._member_tensor],
        )

    def _targets(self, scores: Scores, encoded: list[NDArray[Any]]) -> NDArray[np.int64]:
        if self.table.output in PER_CLASS_OUTPUTS and scores.codes is not None:
            return np.asarray(scores.codes, dtype=np.int64)
        return np.zeros(encoded[0].shape[0], dtype=np.int64)

    def by_feature(self, contributions: Contributions) -> NDArray[np.float64]:
        return contributions.by_feature(self.column_features, self.features)
