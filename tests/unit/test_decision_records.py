"""The decision records under docs/decisions/: each file's header, the links between records,
and the index, which must be exactly what ``python -m tools.decision_index`` writes.

A record added on a branch fails here until its header follows the format and the index is
regenerated; a record removed or renamed fails until nothing links to its old name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tools.decision_index import (
    DECISIONS_DIR,
    FILE_NAME,
    INDEX_NAME,
    LINK,
    RecordError,
    main,
    parse_record,
    record_paths,
    render_index,
)

STATUS = re.compile(r"^(accepted|superseded by \[)")
INDEX_ROW = re.compile(r"^\| \d{4}-\d{2}-\d{2} \| \[.*?\]\(([^)\s]+\.md)\) \|")
RECORDS = record_paths()


def _relative_md_links(text: str) -> list[str]:
    return [
        target.split("#", 1)[0]
        for _, target in LINK.findall(text)
        if target.split("#", 1)[0].endswith(".md") and "://" not in target
    ]


def test_there_are_records_and_an_index() -> None:
    assert len(RECORDS) >= 153  # as split from docs/decisions.md (issue 21)
    assert (DECISIONS_DIR / INDEX_NAME).is_file()
    # Python modules cite "docs/decisions.md, <date>": that file stays, pointing here.
    pointer = (DECISIONS_DIR.parent / "decisions.md").read_text(encoding="utf-8")
    assert "decisions/README.md" in pointer


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.name)
def test_a_record_has_a_title_a_date_and_a_status(path: Path) -> None:
    record = parse_record(path)  # raises naming the file and the missing line
    name = FILE_NAME.match(path.name)
    assert name is not None, f"{path.name}: not named YYYY-MM-DD-<lowercase-slug>.md"
    assert name.group(1) == record.date, f"{path.name}: named for another date than {record.date}"
    assert STATUS.match(record.status), (
        f"{path.name}: Status {record.status!r} is neither 'accepted…' nor 'superseded by [..](..)'"
    )
    if "superseded by" in record.status:
        assert _relative_md_links(record.status), f"{path.name}: superseded by what? (no link)"


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: p.name)
def test_every_link_between_records_resolves(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    missing = [t for t in _relative_md_links(text) if not (path.parent / t).is_file()]
    assert not missing, f"{path.name} links to records that do not exist: {missing}"


def test_links_from_the_docs_into_the_records_resolve() -> None:
    root = DECISIONS_DIR.parent.parent
    broken = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for target in _relative_md_links(doc.read_text(encoding="utf-8")):
            if "decisions/" in target and not (doc.parent / target).is_file():
                broken.append(f"{doc.relative_to(root)} → {target}")
    assert not broken, f"links to decision records that do not exist: {broken}"


def test_the_index_lists_every_record_and_no_missing_one() -> None:
    index = (DECISIONS_DIR / INDEX_NAME).read_text(encoding="utf-8")
    rows = [row.group(1) for row in map(INDEX_ROW.match, index.splitlines()) if row]
    listed = set(rows)
    assert len(rows) == len(listed), "a record is listed twice in the index"
    present = {p.name for p in RECORDS}
    assert not present - listed, (
        f"not in the index (run python -m tools.decision_index): {sorted(present - listed)}"
    )
    assert not listed - present, f"the index lists missing records: {sorted(listed - present)}"


def test_the_index_is_what_the_generator_writes() -> None:
    records = [parse_record(p) for p in RECORDS]
    expected = render_index(records)
    actual = (DECISIONS_DIR / INDEX_NAME).read_text(encoding="utf-8")
    assert actual == expected, (
        "docs/decisions/README.md is stale: run python -m tools.decision_index"
    )


def test_the_generator_sorts_newest_first_then_by_title_and_checks(tmp_path: Path) -> None:
    def write(name: str, title: str, date: str, extra: str = "") -> None:
        header = f"# {title}\n\n- Date: {date}\n- Status: accepted\n{extra}\nBody.\n"
        (tmp_path / name).write_text(header, encoding="utf-8")

    write("2026-12-03-b.md", "`b` second", "2026-12-03")
    write("2026-12-03-a.md", "A first", "2026-12-03", "- Issue: 7\n")
    write("2026-12-04-z.md", "Z newest", "2026-12-04")
    assert main(["--dir", str(tmp_path), "--check"]) == 1  # no index yet
    assert main(["--dir", str(tmp_path)]) == 0
    index = (tmp_path / INDEX_NAME).read_text(encoding="utf-8")
    rows = [line for line in index.splitlines() if line.startswith("| 2026")]
    assert rows == [
        "| 2026-12-04 | [Z newest](2026-12-04-z.md) | accepted |  |",
        "| 2026-12-03 | [A first](2026-12-03-a.md) | accepted | 7 |",
        "| 2026-12-03 | [`b` second](2026-12-03-b.md) | accepted |  |",
    ]
    assert main(["--dir", str(tmp_path), "--check"]) == 0
    assert main(["--dir", str(tmp_path)]) == 0
    assert (tmp_path / INDEX_NAME).read_text(encoding="utf-8") == index  # deterministic


def test_a_record_without_a_date_or_status_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "2026-12-04-x.md"
    path.write_text("# X\n\n- Status: accepted\n\nBody.\n", encoding="utf-8")
    with pytest.raises(RecordError, match="Date"):
        parse_record(path)
    path.write_text("# X\n\n- Date: 2026-12-04\n\nBody.\n", encoding="utf-8")
    with pytest.raises(RecordError, match="Status"):
        parse_record(path)
    path.write_text("X\n\n- Date: 2026-12-04\n- Status: accepted\n\nBody.\n", encoding="utf-8")
    with pytest.raises(RecordError, match="title"):
        parse_record(path)
    assert main(["--dir", str(tmp_path), "--check"]) == 2
