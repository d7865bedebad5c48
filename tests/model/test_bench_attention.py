"""tools/bench_attention.py at a toy size: one timed row per (mask, scale) with the keys that scale's mask allows,
and per-mask layer sums in which the per-shape choice is the faster backend of every row (numbers not asserted)."""
import json

import pytest

from srdd_scale.cli.bench_attention import main


def test_bench_attention_times_every_call_a_layer_makes(tmp_path):
    out = tmp_path / "attention.json"
    assert main(["--depth", "1", "--patch-nums", "1,2,3", "--batch-size", "1", "--min-run-time", "0.001",
                 "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["settings"]["dtype"] == "fp32"
    keys = {(r["mask"], r["scale"]): r["keys"] for r in record["shapes"]}
    assert keys == {("markovian", 0): 1, ("markovian", 1): 4, ("markovian", 2): 9,
                    ("markovian_prev", 0): 1, ("markovian_prev", 1): 5, ("markovian_prev", 2): 13,
                    ("block_causal", 0): 1, ("block_causal", 1): 5, ("block_causal", 2): 14}
    for row in record["shapes"]:
        assert row["faster"] == min(("math", "sdpa"), key=lambda impl: row[f"{impl}_us"])
    for layer in record["layers"]:
        rows = [r for r in record["shapes"] if r["mask"] == layer["mask"]]
        assert layer["per_shape_ms"] == pytest.approx(sum(r[f"{r['faster']}_us"] for r in rows) / 1e3)
        assert layer["per_shape_ms"] <= min(layer["math_ms"], layer["sdpa_ms"]) + 1e-9
        assert layer["masked_math_ms"] > 0 and layer["masked_sdpa_ms"] > 0


@pytest.mark.parametrize("argv, named", [(["--masks", "markovian,causal"], "causal"),
                                          (["--masks", "markovian,markovian"], "distinct"),
                                          (["--min-run-time", "0"], "--min-run-time")])
def test_bench_attention_rejects_bad_arguments(argv, named, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err
