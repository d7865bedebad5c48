"""The bench kit: Timer-based timing makes the calls it says, keeps torch's thread count, and one writer and one
table printer serve every bench tool."""

import json

import pytest
import torch

from srdd_scale.analysis.bench_kit import Column, format_table, time_call, write_report


def test_time_call_runs_warmup_then_exactly_the_timed_calls():
    seen_threads = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        timing = time_call(lambda: seen_threads.append(torch.get_num_threads()), warmup=4, calls=3)
        assert time_call(lambda: None, warmup=1, calls=2).calls == 2
    finally:
        torch.set_num_threads(before)
    assert len(seen_threads) == 4 + 3 and timing.calls == 3 and timing.seconds > 0  # no extra warm-up calls
    assert set(seen_threads) == {2}  # torch.utils.benchmark's own default would be one thread
    with pytest.raises(ValueError, match="calls must be >= 1"):
        time_call(lambda: None, calls=0)


def test_time_call_autorange_measures_a_known_duration():
    import time

    timing = time_call(lambda: time.sleep(0.01), warmup=0, min_run_time=0.1)
    assert timing.calls >= 5 and 0.009 < timing.seconds < 0.05


def test_write_report_adds_tool_and_provenance(tmp_path):
    out = write_report({"results": [{"x": 1}]}, "bench_example", tmp_path / "sub" / "r.json")
    report = json.loads(out.read_text())
    assert report["tool"] == "bench_example" and report["results"] == [{"x": 1}]
    assert report["provenance"]["git_commit"] and report["provenance"]["load_average_1m"] >= 0
    given = write_report({}, "bench_example", tmp_path / "given.json", provenance={"machine": "m"})
    assert json.loads(given.read_text())["provenance"] == {"machine": "m"}


def test_format_table_aligns_columns_and_shows_missing_values():
    rows = [{"name": "a", "rate": 1234.5678, "peak": None}, {"name": "longer", "rate": 2.0, "peak": 3.25}]
    text = format_table(rows, (Column("name", "name"), Column("rate/s", "rate", ".1f"), Column("peak", "peak", ".1f")))
    assert text.splitlines() == ["  name  rate/s  peak", "     a  1234.6     -", "longer     2.0   3.2"]
