"""Scaling-law fitters recover known exponents from synthetic data and refuse bad input clearly."""

from __future__ import annotations

import json
import math

import matplotlib.image
import numpy as np
import pytest

from srdd_scale.sweep.fit import (
    FitError,
    ScalingPoint,
    best_per_size,
    compute_frontier,
    fit_isoflop,
    fit_isoflop_curve,
    fit_parametric,
    fit_power_law,
    recommend,
)
from srdd_scale.sweep.report import analyse
from srdd_scale.sweep.results import write_result

# Chinchilla-like ground truth (Hoffmann et al. fitted E=1.69, A=406, B=411, a=0.34, b=0.28).
E, A, B, a, b = 1.7, 400.0, 410.0, 0.34, 0.28
K = 6.0  # C = K N D


def chinchilla(n, d):
    return E + A / n**a + B / d**b


def grid_points(noise: float, seed: int = 0) -> list[ScalingPoint]:
    rng = np.random.default_rng(seed)
    return [
        ScalingPoint(f"n{n:.0e}-d{d:.0e}", n, d, K * n * d, chinchilla(n, d) * math.exp(rng.normal(0, noise)))
        for n in np.geomspace(1e6, 1e9, 6)
        for d in np.geomspace(1e8, 1e11, 6)
    ]


def isoflop_points(budgets=(1e17, 1e18, 1e19, 1e20)) -> list[ScalingPoint]:
    points = []
    for c in budgets:
        n_opt = _closed_form_optimum(c)[0]
        for n in n_opt * np.geomspace(0.125, 8, 7):
            d = c / (K * n)
            points.append(ScalingPoint(f"C{c:.0e}-n{n:.2e}", n, d, c, chinchilla(n, d)))
    return points


def _closed_form_optimum(c: float) -> tuple[float, float]:
    g = (a * A / (b * B)) ** (1 / (a + b))
    n = g * (c / K) ** (b / (a + b))
    return n, c / (K * n)


def test_power_law_recovers_exponent_and_scale():
    rng = np.random.default_rng(1)
    alpha, beta = -0.23, 2.0  # VAR's L_last = (2.0 N)^-0.23 (docs/method.md §8.5)
    n = np.geomspace(1.8e7, 2e9, 12)
    points = [ScalingPoint(f"d{i}", x, 1.0, 1.0, (beta * x) ** alpha * math.exp(rng.normal(0, 0.003)))
              for i, x in enumerate(n)]
    fit = fit_power_law(points, "params")
    assert fit.alpha == pytest.approx(alpha, abs=0.005)
    assert fit.beta == pytest.approx(beta, rel=0.5)  # beta = exp(intercept/alpha) amplifies intercept noise
    assert fit.pearson_r < -0.995
    assert fit.predict(1e8) == pytest.approx((beta * 1e8) ** alpha, rel=0.01)


def test_parametric_recovers_chinchilla_with_bootstrap_intervals():
    fit = fit_parametric(grid_points(noise=0.002), num_starts=4, num_bootstrap=10, seed=0)
    assert fit.a == pytest.approx(a, abs=0.02)
    assert fit.b == pytest.approx(b, abs=0.02)
    assert fit.E == pytest.approx(E, rel=0.02)
    for key, truth in (("a", a), ("b", b)):
        low, high = fit.ci[key]
        assert low < high
        assert low - 0.01 <= truth <= high + 0.01, (key, fit.ci[key])


def test_parametric_is_exact_on_noise_free_data():
    fit = fit_parametric(grid_points(noise=0.0), num_starts=4, num_bootstrap=0)
    assert (fit.a, fit.b) == pytest.approx((a, b), abs=2e-3)
    assert fit.E == pytest.approx(E, rel=2e-3)
    assert fit.ci == {}


def test_isoflop_minima_follow_closed_form_optimum():
    fit = fit_isoflop(isoflop_points())
    assert len(fit.curves) == 4
    assert fit.params_exponent == pytest.approx(b / (a + b), abs=0.03)  # 0.452
    assert fit.tokens_exponent == pytest.approx(a / (a + b), abs=0.03)  # 0.548
    for curve in fit.curves:
        n_true, d_true = _closed_form_optimum(curve.flops)
        assert curve.optimal_params == pytest.approx(n_true, rel=0.15)
        assert curve.optimal_tokens == pytest.approx(d_true, rel=0.15)
        assert not curve.extrapolated


def test_recommendation_from_parametric_minimises_loss_on_budget():
    points = grid_points(noise=0.0)
    fit = fit_parametric(points, num_starts=4, num_bootstrap=0)
    rec = recommend(1e21, points, parametric=fit)
    assert rec.flops_per_param_token == pytest.approx(K)
    n_opt, d_opt = rec.parametric["params"], rec.parametric["tokens"]
    assert K * n_opt * d_opt == pytest.approx(1e21)
    for factor in (0.7, 1.4):  # moving along the budget in either direction costs loss
        assert fit.predict(n_opt * factor, d_opt / factor) > rec.parametric["loss"]


def test_best_per_size_keeps_each_sizes_lowest_loss():
    points = [ScalingPoint(n, p, 1, 1, loss) for n, p, loss in [("a", 2, 3.0), ("b", 1, 4.0), ("c", 2, 2.5),
                                                                   ("d", 1, 4.5)]]
    assert [p.name for p in best_per_size(points)] == ["b", "c"]


def test_frontier_is_lower_envelope():
    points = [ScalingPoint(str(i), 1, 1, c, loss) for i, (c, loss) in enumerate([(1, 5), (2, 6), (3, 4), (4, 4.5),
                                                                                  (5, 3)])]
    assert [p.name for p in compute_frontier(points)] == ["0", "2", "4"]


@pytest.mark.parametrize(
    "points, fitter, message",
    [
        ([ScalingPoint("x", 1e6, 1, 1, 3.0)] * 2, lambda p: fit_power_law(p), "at least 3 points, got 2"),
        ([ScalingPoint("a", 1e6, 1, 1, 3.0), ScalingPoint("b", 2e6, 1, 1, float("nan")),
          ScalingPoint("c", 3e6, 1, 1, 2.0)], lambda p: fit_power_law(p), "point 1 ('b') has loss=nan"),
        ([ScalingPoint("a", 1e6, 1, 1, 3.0), ScalingPoint("b", -5.0, 1, 1, 2.0),
          ScalingPoint("c", 3e6, 1, 1, 2.0)], lambda p: fit_power_law(p), "point 1 ('b') has params=-5.0"),
        ([ScalingPoint(str(i), 1e6, 1, 1, 3.0) for i in range(3)], lambda p: fit_power_law(p), "2 distinct values"),
        (grid_points(0.0)[:5], lambda p: fit_parametric(p), "at least 6 points, got 5"),
        ([ScalingPoint(str(i), 1e6 * (i + 1), 1e9, 1.0, 3.0) for i in range(8)], lambda p: fit_parametric(p),
         "2 distinct values of tokens"),
        ([ScalingPoint(str(i), n, 1e9, 1e18, 3.0 - 0.1 * (math.log(n) - 16) ** 2)
          for i, n in enumerate([1e6, 1e7, 1e8])],
         fit_isoflop_curve, "opens downwards"),
        (isoflop_points(budgets=(1e18,)), fit_isoflop, "needs >= 2 compute budgets"),
    ],
)
def test_bad_or_too_few_points_fail_clearly(points, fitter, message):
    with pytest.raises(FitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fitter(points)


def test_recommend_rejects_bad_target():
    with pytest.raises(FitError, match="target compute"):
        recommend(float("inf"), grid_points(0.0))


def _write_synthetic_sweep(folder, points):
    for p in points:
        curve = [[s, p.tokens * s / 4, p.flops * s / 4, chinchilla(p.params, p.tokens * s / 4)] for s in (1, 2, 3, 4)]
        write_result(folder / "points" / p.name, {
            "point": p.name, "params": p.params, "tokens": p.tokens, "flops": p.flops,
            "final_train_loss": {"loss/mean": p.loss}, "final_eval_loss": {}, "curve": curve,
        })


def test_analyse_writes_fits_and_readable_plots(tmp_path):
    _write_synthetic_sweep(tmp_path, isoflop_points())
    summary = analyse(tmp_path, target_flops=1e21, num_bootstrap=3)
    fits = json.loads((tmp_path / "analysis" / "fits.json").read_text())
    assert fits["isoflop"]["params_exponent"] == pytest.approx(b / (a + b), abs=0.03)
    assert fits["parametric"]["a"] == pytest.approx(a, abs=0.02)
    assert fits["recommendation"]["isoflop"]["params"] > 0
    assert set(summary["plots"]) == {"loss_vs_compute", "fitted_laws", "isoflop"}
    for path in summary["plots"].values():
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100


def test_fit_scaling_cli(tmp_path, capsys):
    from srdd_scale.cli.fit_scaling import main

    assert main([str(tmp_path)]) == 2
    assert "no results under" in capsys.readouterr().err
    _write_synthetic_sweep(tmp_path, isoflop_points())
    assert main([str(tmp_path), "--bootstrap", "0", "--target-flops", "1e21"]) == 0
    out = capsys.readouterr().out
    assert "IsoFLOP: N* ~ C^0.4" in out and "plot isoflop:" in out
    assert main([str(tmp_path), "--loss", "eval:loss/mean"]) == 2
    assert "has no eval:loss/mean" in capsys.readouterr().err
