"""The benchmark report: ratios computed one way for either direction, and a section survives
the JSON the suite passes between processes and keeps in bench/results.json."""

from __future__ import annotations

import json

from bench.report import Figure, Section, dump, markdown, render


def test_ratios_read_the_same_way_for_times_and_throughputs() -> None:
    time = Figure("predict", "µs", sluice=50.0, peer=4000.0, floor=12.5)
    assert (time.vs_floor, time.vs_peer) == (4.0, 80.0)
    speed = Figure("parse", "MB/s", sluice=20.0, peer=10.0, floor=200.0, better="higher")
    assert (speed.vs_floor, speed.vs_peer) == (10.0, 2.0)  # 10× from the floor, 2× the peer
    unmeasured = Figure("gpu", "×", sluice=None, note="no GPU")
    assert (unmeasured.vs_floor, unmeasured.vs_peer) == (None, None)


def test_a_section_round_trips_through_json_and_prints_its_verdicts() -> None:
    section = Section("predict", "Warm predict")
    section.add(Figure("1 row", "µs", 56.0, 3700.0, 12.6, target="≤ 5× floor", met=True))
    section.add(Figure("cold", "s", 0.38, 0.85, 0.08, target="≥ 3× peer", met=False, note="why"))
    section.details = {"samples": 100}
    section.seconds = 12.0
    again = Section.from_json(json.loads(json.dumps(section.to_json())))
    assert again == section
    assert json.loads(dump([section]))["sections"][0]["figures"][1]["vs_peer"] > 2.2
    text = render(section)
    assert "met" in text and "MISSED" in text and "why" in text
    table = markdown([section]).splitlines()
    assert len(table) == 4 and "≥ 3× peer ✗" in table[3] and "4.4×" in table[2]
