"""bench_vs_var: the no-VAR exit, one in-process case per kind at toy size, and the doc table's replacement."""
import pytest

from srdd_scale.cli import bench_vs_var


def test_without_var_root_says_how_to_get_it_and_exits_2(capsys):
    assert bench_vs_var.main([]) == 2
    assert "git clone https://github.com/FoundationVision/VAR" in capsys.readouterr().err


def test_wrong_var_root_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        bench_vs_var.main(["--var-root", str(tmp_path)])


@pytest.mark.parametrize("case,impl", [("train_d4", "markovian"), ("sample_d16_b1", "block_causal"),
                                       ("vqvae_decode", "ours")])
def test_run_case_times_our_side(case, impl):
    result = bench_vs_var.run_case(case, impl, "cpu", tiny=True)
    assert result["case"] == case and result["impl"] == impl and result["depth"] == 2
    # both are peak growths, each over the RSS at its own start; in a process that ran other work first, memory
    # freed between the two windows can leave the steps' growth above the total's, so neither bounds the other
    assert result["seconds"] > 0 and result["peak_mib"] >= 0 and result["run_mib"] >= 0


def test_flop_bound_is_the_attention_saving_only():
    """VAR's training kernel computes all L^2 scores, ours only the allowed pairs: a bound above 1 that shrinks
    with depth (the dense matmuls grow faster than attention) and is larger for the sparser mask; VAR's KV-cached
    sampler already does block-causal pairs only, so there block_causal's bound is 1."""
    pn = bench_vs_var.VAR_PATCH_NUMS_256

    def bound(name, impl):
        return bench_vs_var.flop_bound(bench_vs_var.CASES[name], impl, pn)

    assert bound("train_d4", "markovian") > bound("train_d8", "markovian") > bound("train_d16", "markovian") > 1
    assert bound("train_d16", "markovian") > bound("train_d16", "block_causal") > 1
    assert bound("sample_d16_b1", "markovian") > 1
    assert bound("sample_d16_b1", "block_causal") == pytest.approx(1.0, abs=1e-2)  # AdaLN rows per scale
    assert bound("vqvae_encode", "ours") is None


def test_run_case_rejects_an_impl_of_another_kind():
    with pytest.raises(ValueError, match="'ours' does not apply to case 'train_d4'"):
        bench_vs_var.run_case("train_d4", "ours", "cpu", tiny=True)


def _run(case, impl, seconds, mib, round_index, bound=None):
    return {"case": case, "impl": impl, "seconds": seconds, "peak_mib": mib, "run_mib": mib / 10,
            "flop_bound": bound, "load_average_1m": 1.0 + round_index, "round": round_index}


def test_best_round_ratios_and_doc_block(tmp_path):
    runs = [_run("train_d4", "var", 2.0, 100.0, 0), _run("train_d4", "var", 1.0, 120.0, 1),
            _run("train_d4", "markovian", 0.5, 50.0, 0, 1.25), _run("train_d4", "block_causal", 2.0, 200.0, 0, 1.0)]
    best = bench_vs_var.best_of(runs)
    assert best[("train_d4", "var")]["seconds"] == 1.0 and best[("train_d4", "var")]["peak_mib"] == 100.0
    table = bench_vs_var.render_table(best, "hdr")
    assert best[("train_d4", "var")]["run_mib"] == 10.0  # the lowest of each memory figure over rounds
    assert ("| train_d4 | 1 | 0.5 (2.00x; 1.25x) | 2 (0.50x; 1.00x) | 100 / 10 | 50 / 5 (0.50x / 0.50x) "
            "| 200 / 20 (2.00x / 2.00x) | 1.0-2.0 |") in table
    doc = tmp_path / "bench.md"
    doc.write_text("# Benchmarks\n\nintro\n")
    bench_vs_var.write_doc_section(doc, "before", "old\n")
    bench_vs_var.write_doc_section(doc, "after", "A\n")
    bench_vs_var.write_doc_section(doc, "before", "new\n")
    text = doc.read_text()
    assert "old" not in text and text.index("new") < text.index("A\n") and text.startswith("# Benchmarks\n\nintro")
