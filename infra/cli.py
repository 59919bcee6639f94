"""The ``sluice`` command line. Every command that reports takes ``--json``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from functions.shared.layout import DATASET_NAME


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sluice", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="run upload → preprocess → training on one machine (moto, no AWS account)"
    )
    demo.add_argument("--data", type=Path, help="a CSV or Parquet file (default: bundled sample)")
    demo.add_argument("--contract", type=Path, help="its contract.json (default: bundled sample)")
    demo.add_argument("--dataset", help="dataset name (default: the data file's stem)")
    demo.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    if args.command == "demo":
        return _demo(args)
    parser.error(f"unknown command {args.command}")
    return 2


def _demo(args: argparse.Namespace) -> int:
    from infra.local.demo import SAMPLE, DemoInputs, render, run_demo

    if (args.data is None) != (args.contract is None):
        print("sluice demo: give both --data and --contract, or neither", file=sys.stderr)
        return 2
    data = args.data or SAMPLE / "data" / "churn.csv"
    contract = args.contract or SAMPLE / "contract.json"
    for path in (data, contract):
        if not path.is_file():
            print(f"sluice demo: no such file: {path}", file=sys.stderr)
            return 2
    dataset = args.dataset or ("churn" if args.data is None else data.stem)
    if not DATASET_NAME.match(dataset):
        print(
            f"sluice demo: dataset name '{dataset}' must match {DATASET_NAME.pattern} "
            "(use --dataset)",
            file=sys.stderr,
        )
        return 2
    result = run_demo(DemoInputs(data=data, contract=contract, dataset=dataset))
    print(json.dumps(result, indent=2, default=str) if args.json else render(result))
    job = result.get("training_job", {})
    return 0 if job.get("TrainingJobStatus") == "Completed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
