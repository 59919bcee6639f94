"""The index of the decision records, ``docs/decisions/README.md``, written from their headers.

A decision record is one file, ``docs/decisions/YYYY-MM-DD-<slug>.md``, that opens with::

    # <title>

    - Date: YYYY-MM-DD
    - Status: accepted
    - Issue: N

(``Issue`` only where the record belongs to one; ``Status`` is ``accepted``, ``superseded by
[<title>](<file>.md)``, or ``accepted; partly superseded by [<title>](<file>.md)`` and which
part.) To add one: write the file, then run ``python -m tools.decision_index``, which rewrites
the index, newest first, then by title. ``--check`` only says whether the index is current.
``tests/unit/test_decision_records.py`` holds every record to this format and the index to
what this module writes.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

DECISIONS_DIR = Path(__file__).resolve().parent.parent / "docs" / "decisions"
INDEX_NAME = "README.md"

FILE_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})-[a-z0-9]+(?:-[a-z0-9]+)*\.md$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
FIELD = re.compile(r"^- (Date|Status|Issue): (.+)$")
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]+)\)")

INTRO = """\
# Decisions

One file per decision: what was decided, and why. This index is generated from the records'
headers, newest first, then by title; do not edit it by hand.

To record a decision, write `docs/decisions/YYYY-MM-DD-<slug>.md` (the slug from the title:
lowercase ASCII, hyphens, at most 60 characters) opening with

```
# <Title>

- Date: YYYY-MM-DD
- Status: accepted
- Issue: N
```

(`Issue` only where the decision belongs to an issue), then the decision's text, and run
`python -m tools.decision_index` to rewrite this index. When a later decision replaces an
earlier one, the earlier one's status becomes `superseded by [<title>](<file>.md)`, or
`accepted; partly superseded by [<title>](<file>.md)` and which part.
`tests/unit/test_decision_records.py` checks every record's header, that every link between
records resolves, and that this index is what the generator writes.

A reference elsewhere of the form "docs/decisions.md, <date>, <title>" names the record here
with that date and title.

| Date | Decision | Status | Issue |
|------|----------|--------|-------|
"""


class RecordError(ValueError):
    """A decision record whose header does not follow the format; the message names the file."""


@dataclass(frozen=True)
class Record:
    name: str  # the file's name inside docs/decisions/
    title: str
    date: str
    status: str
    issue: str | None


def parse_record(path: Path) -> Record:
    """Read a record's header: its ``# `` title, then ``- Date:``, ``- Status:`` and an
    optional ``- Issue:`` line, in that block after one blank line."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if not lines[0].startswith("# ") or not lines[0][2:].strip():
        raise RecordError(f"{path.name}: the first line is not a '# <title>' line")
    if len(lines) < 2 or lines[1] != "":
        raise RecordError(f"{path.name}: the title is not followed by a blank line")
    fields: dict[str, str] = {}
    for line in lines[2:]:
        match = FIELD.match(line)
        if match is None:
            break
        if match.group(1) in fields:
            raise RecordError(f"{path.name}: '- {match.group(1)}:' appears twice")
        fields[match.group(1)] = match.group(2).strip()
    for required in ("Date", "Status"):
        if required not in fields:
            raise RecordError(f"{path.name}: no '- {required}: ' line after the title")
    if not DATE.match(fields["Date"]):
        raise RecordError(f"{path.name}: Date {fields['Date']!r} is not YYYY-MM-DD")
    return Record(
        name=path.name,
        title=lines[0][2:].strip(),
        date=fields["Date"],
        status=fields["Status"],
        issue=fields.get("Issue"),
    )


def record_paths(directory: Path = DECISIONS_DIR) -> list[Path]:
    return sorted(p for p in directory.glob("*.md") if p.name != INDEX_NAME)


def load_records(directory: Path = DECISIONS_DIR) -> list[Record]:
    return [parse_record(path) for path in record_paths(directory)]


def _sort_title(title: str) -> str:
    """The title as it sorts: case and punctuation (backticks, quotes) ignored."""
    return re.sub(r"[^0-9a-z ]+", "", title.casefold()).strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_index(records: list[Record]) -> str:
    """The index: the introduction, then one table row per record, newest first, then by
    title (case and punctuation ignored; then as spelt, then by file name, so the order never
    depends on the file system's)."""
    ordered = sorted(records, key=lambda r: (_sort_title(r.title), r.title, r.name))
    ordered.sort(key=lambda r: r.date, reverse=True)
    rows = [
        f"| {r.date} | [{_cell(r.title)}]({r.name}) | {_cell(r.status)} | {_cell(r.issue or '')} |"
        for r in ordered
    ]
    return INTRO + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.decision_index", description=__doc__)
    parser.add_argument("--dir", type=Path, default=DECISIONS_DIR, help="the records' folder")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the index is not what would be written"
    )
    args = parser.parse_args(argv)
    index = args.dir / INDEX_NAME
    try:
        records = load_records(args.dir)
    except RecordError as exc:
        print(f"decision_index: {exc}", file=sys.stderr)
        return 2
    text = render_index(records)
    if args.check:
        current = index.read_text(encoding="utf-8") if index.exists() else ""
        if current != text:
            print(f"decision_index: {index} is out of date: run python -m tools.decision_index")
            return 1
        return 0
    index.write_text(text, encoding="utf-8")
    print(f"decision_index: wrote {index} ({len(records)} records)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
