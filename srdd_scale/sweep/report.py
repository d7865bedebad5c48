"""Fit every law a sweep's results support and write ``fits.json`` + PNG plots beside them.

A law the data cannot support (e.g. IsoFLOP curves from a depth x tokens grid) is reported as skipped with
the reason, rather than failing the whole analysis; too few or bad points overall still raise FitError.
"""

from __future__ import annotations

import json
from pathlib import Path

from srdd_scale.sweep import plots
from srdd_scale.sweep.fit import (
    FitError,
    best_per_size,
    compute_frontier,
    fit_isoflop,
    fit_parametric,
    fit_power_law,
    fit_to_dict,
    recommend,
)
from srdd_scale.sweep.results import LossSelector, curve_points, final_points, load_results


def analyse(
    sweep_dir: str | Path,
    out_dir: str | Path | None = None,
    loss: str = "train:loss/mean",
    target_flops: float | None = None,
    num_bootstrap: int = 100,
    seed: int = 0,
) -> dict:
    """Load ``sweep_dir/points/*/result.json``, fit, plot; returns (and writes to ``out_dir/fits.json``) a summary."""
    selector = LossSelector.parse(loss)
    results = load_results(sweep_dir)
    if not results:
        raise FitError(f"no results under {sweep_dir}/points/*/result.json: run the sweep first")
    out_dir = Path(out_dir) if out_dir is not None else Path(sweep_dir) / "analysis"
    points = final_points(results, selector)
    curves = curve_points(results)
    # Frontier over every logged step of every run when curves exist, else over the final points only.
    frontier = compute_frontier([p for c in curves.values() for p in c] or points)

    summary: dict = {"loss": str(selector), "num_runs": len(points), "skipped": {}, "plots": {}}
    params_law = None
    try:
        params_law = fit_power_law(best_per_size(points), "params")
        summary["power_law_params"] = fit_to_dict(params_law)
    except FitError as err:
        summary["skipped"]["power_law_params"] = str(err)
    compute_law = None
    try:
        compute_law = fit_power_law(frontier, "flops")
        summary["power_law_compute"] = fit_to_dict(compute_law)
    except FitError as err:
        summary["skipped"]["power_law_compute"] = str(err)
    parametric = None
    try:
        parametric = fit_parametric(points, num_bootstrap=num_bootstrap, seed=seed)
        summary["parametric"] = fit_to_dict(parametric)
    except FitError as err:
        summary["skipped"]["parametric"] = str(err)
    isoflop = None
    try:
        isoflop = fit_isoflop(points)
        summary["isoflop"] = fit_to_dict(isoflop)
    except FitError as err:
        summary["skipped"]["isoflop"] = str(err)
    if target_flops is not None:
        summary["recommendation"] = fit_to_dict(recommend(target_flops, points, isoflop, parametric, compute_law))

    label = str(selector)
    curves_for_plot = curves or {p.name: [p] for p in points}
    summary["plots"]["loss_vs_compute"] = str(
        plots.plot_loss_vs_compute(curves_for_plot, frontier, compute_law, out_dir / "loss_vs_compute.png", label)
    )
    summary["plots"]["fitted_laws"] = str(
        plots.plot_fitted_laws(points, params_law, parametric, out_dir / "fitted_laws.png", label)
    )
    if isoflop is not None:
        summary["plots"]["isoflop"] = str(plots.plot_isoflop(isoflop, out_dir / "isoflop.png", label))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "fits.json").write_text(json.dumps(summary, indent=2))
    return summary


def format_summary(summary: dict) -> str:
    """Human-readable lines of the headline numbers."""
    lines = [f"loss: {summary['loss']}  runs: {summary['num_runs']}"]
    for key, name in (("power_law_params", "N"), ("power_law_compute", "C (frontier)")):
        if key in summary:
            law = summary[key]
            lines.append(f"VAR power law in {name}: L = ({law['beta']:.3g} * {name.split()[0]})^{law['alpha']:.4f}"
                         f"  pearson r = {law['pearson_r']:.4f}  ({law['num_points']} points)")
    if "parametric" in summary:
        fit = summary["parametric"]
        ci = fit["ci"]
        ci_text = "  ".join(f"{k} in [{ci[k][0]:.3g}, {ci[k][1]:.3g}]" for k in ("E", "a", "b") if k in ci)
        lines.append(f"Chinchilla: L = {fit['E']:.4g} + {fit['A']:.4g}/N^{fit['a']:.4f} + "
                     f"{fit['B']:.4g}/D^{fit['b']:.4f}  ({fit['ci_level']:.0%} bootstrap CI: {ci_text})")
    if "isoflop" in summary:
        iso = summary["isoflop"]
        lines.append(f"IsoFLOP: N* ~ C^{iso['params_exponent']:.4f}  D* ~ C^{iso['tokens_exponent']:.4f}"
                     f"  ({len(iso['curves'])} budgets)")
    if "recommendation" in summary:
        rec = summary["recommendation"]
        for source in ("isoflop", "parametric"):
            if rec[source]:
                lines.append(f"C={rec['target_flops']:.3g}: {source} -> N={rec[source]['params']:.3g}, "
                             f"D={rec[source]['tokens']:.3g} tokens")
        if rec["frontier_loss"] is not None:
            lines.append(f"C={rec['target_flops']:.3g}: frontier power law predicts loss {rec['frontier_loss']:.4g}")
    for key, reason in summary["skipped"].items():
        lines.append(f"skipped {key}: {reason}")
    for key, path in summary["plots"].items():
        lines.append(f"plot {key}: {path}")
    return "\n".join(lines)
