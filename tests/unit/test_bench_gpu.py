"""bench.gpu and the GPU figure bench.training quotes from its record."""

from __future__ import annotations

import json
from pathlib import Path

from bench import gpu
from bench.training import GPU_RECORD, gpu_figure


def test_without_cuda_the_gpu_bench_says_why_and_measures_nothing(capsys) -> None:  # type: ignore[no-untyped-def]
    # make installs the xgboost-cpu wheel: no CUDA build, whatever the machine holds
    assert gpu.cuda_available() == "this xgboost build has no CUDA (the xgboost-cpu wheel)"
    gpu.main(["--rows", "100"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"rows": 100, "measured": False, "why": gpu.cuda_available()}


def test_the_recorded_gpu_run_is_quoted_with_its_machine_and_verdict() -> None:
    recorded = json.loads(GPU_RECORD.read_text())
    figure = gpu_figure()
    assert figure.sluice == recorded["speed_up"]
    assert figure.sluice == round(
        recorded["xgboost_fit"]["cpu"]["seconds"] / recorded["xgboost_fit"]["cuda_warm"]["seconds"],
        2,
    )
    assert figure.met is (recorded["speed_up"] >= 5)
    assert recorded["machine"]["date"] in (figure.note or "")
    # the GPU-fitted model went through export and parity like any other
    assert recorded["train_entry_point"]["gpu"]["device"] == "cuda"
    assert recorded["train_entry_point"]["gpu"]["parity_passed"] is True


def test_without_a_record_the_figure_is_unmeasured(tmp_path: Path) -> None:
    figure = gpu_figure(tmp_path / "gpu.json")
    assert figure.sluice is None
    assert figure.met is None
