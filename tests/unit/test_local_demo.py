"""The demo's helpers that shape what it sends: sample rows and the shuffled-label upload."""

from __future__ import annotations

import csv
import io

from infra.local.demo import _sample_rows, _shuffled_labels
from tests.models import TrainedModel


def test_sample_rows_skip_rows_a_client_could_not_send(
    trained_models: dict[str, TrainedModel],
) -> None:
    # Given an upload whose first row has text in a numeric column (preprocess drops it)
    card = trained_models["binary"].card
    names = [f.name for f in card.features]
    lines = [",".join(names), ",".join(["abc"] + ["1"] * (len(names) - 1))]
    lines += [",".join([str(i)] + [""] * (len(names) - 1)) for i in range(5)]
    # When the demo picks rows to predict, then the bad row is skipped, gaps become null
    rows = _sample_rows("\n".join(lines).encode(), card)
    assert [r[names[0]] for r in rows] == [0.0, 1.0, 2.0]
    assert all(r[n] is None for r in rows for n in names[1:])


def test_shuffled_labels_keep_every_row_and_the_label_counts() -> None:
    data = b"x,y\n1,a\n2,a\n3,b\n4,c\n"
    shuffled = list(csv.reader(io.StringIO(_shuffled_labels(data, "y").decode())))
    assert [row[0] for row in shuffled] == ["x", "1", "2", "3", "4"]
    assert sorted(row[1] for row in shuffled[1:]) == ["a", "a", "b", "c"]
