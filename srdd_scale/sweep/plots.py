"""PNG plots of a sweep: loss vs compute with the frontier, IsoFLOP curves, and the fitted laws against data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: sweeps run on headless nodes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from srdd_scale.sweep.fit import IsoFlopFit, ParametricFit, PowerLawFit, ScalingPoint  # noqa: E402


def _span(values: Sequence[float], pad: float = 1.5, num: int = 100) -> np.ndarray:
    return np.geomspace(min(values) / pad, max(values) * pad, num)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_loss_vs_compute(
    curves: Mapping[str, Sequence[ScalingPoint]],
    frontier: Sequence[ScalingPoint],
    compute_law: PowerLawFit | None,
    path: str | Path,
    loss_label: str = "loss",
) -> Path:
    """Every run's loss curve against FLOPs, the lower-envelope frontier and VAR's power law through it."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colours = plt.cm.viridis(np.linspace(0, 0.9, max(len(curves), 1)))
    for colour, (run, points) in zip(colours, sorted(curves.items(), key=lambda kv: kv[1][-1].params)):
        ax.plot([p.flops for p in points], [p.loss for p in points], color=colour, alpha=0.8, lw=1.2,
                label=f"{run} (N={points[-1].params:.3g})")
    ax.scatter([p.flops for p in frontier], [p.loss for p in frontier], color="k", s=14, zorder=3, label="frontier")
    if compute_law is not None:
        xs = _span([p.flops for p in frontier])
        ax.plot(xs, compute_law.predict(xs), "k--", lw=1,
                label=f"L=({compute_law.beta:.2g} C)^{compute_law.alpha:.3f}, r={compute_law.pearson_r:.3f}")
    ax.set(xscale="log", yscale="log", xlabel="training compute C (FLOPs)", ylabel=loss_label,
           title="loss vs compute")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_isoflop(isoflop: IsoFlopFit, path: str | Path, loss_label: str = "loss") -> Path:
    """Left: each budget's loss vs N with its parabola and minimum. Right: N*(C) and D*(C) power laws."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    colours = plt.cm.plasma(np.linspace(0, 0.85, len(isoflop.curves)))
    for colour, curve in zip(colours, isoflop.curves):
        params = [p.params for p in curve.points]
        left.scatter(params, [p.loss for p in curve.points], color=colour, s=16)
        xs = _span(params, pad=1.2)
        left.plot(xs, np.polyval(curve.coefficients, np.log(xs)), color=colour, lw=1, label=f"C={curve.flops:.2g}")
        left.scatter([curve.optimal_params], [curve.optimal_loss], color=colour, marker="*", s=90, edgecolor="k")
    left.set(xscale="log", xlabel="parameters N", ylabel=loss_label, title="IsoFLOP curves (star: minimum)")
    left.legend(fontsize=7)
    budgets = [c.flops for c in isoflop.curves]
    xs = _span(budgets)
    right.scatter(budgets, [c.optimal_params for c in isoflop.curves], color="C0", label="N* (minima)")
    right.plot(xs, isoflop.optimal_params(xs), "C0--", label=f"N* ~ C^{isoflop.params_exponent:.3f}")
    right.scatter(budgets, [c.optimal_tokens for c in isoflop.curves], color="C1", label="D* (minima)")
    right.plot(xs, isoflop.optimal_tokens(xs), "C1--", label=f"D* ~ C^{isoflop.tokens_exponent:.3f}")
    right.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel="N* or D*", title="compute-optimal")
    right.legend(fontsize=7)
    return _save(fig, path)


def plot_fitted_laws(
    points: Sequence[ScalingPoint],
    params_law: PowerLawFit | None,
    parametric: ParametricFit | None,
    path: str | Path,
    loss_label: str = "loss",
) -> Path:
    """Left: final loss vs N with VAR's power law. Right: Chinchilla L(N, D) predicted vs measured."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.scatter([p.params for p in points], [p.loss for p in points], s=16, color="C0", label="runs")
    if params_law is not None:
        xs = _span([p.params for p in points])
        left.plot(xs, params_law.predict(xs), "k--", lw=1,
                  label=f"L=({params_law.beta:.2g} N)^{params_law.alpha:.3f}, r={params_law.pearson_r:.3f}")
    left.set(xscale="log", yscale="log", xlabel="parameters N", ylabel=loss_label, title="loss vs model size")
    left.legend(fontsize=7)
    if parametric is not None:
        measured = np.array([p.loss for p in points])
        predicted = parametric.predict([p.params for p in points], [p.tokens for p in points])
        right.scatter(measured, predicted, s=16, color="C2")
        lims = [min(measured.min(), predicted.min()), max(measured.max(), predicted.max())]
        right.plot(lims, lims, "k:", lw=1)
        right.set_title(f"L = {parametric.E:.3g} + {parametric.A:.3g}/N^{parametric.a:.3f} "
                        f"+ {parametric.B:.3g}/D^{parametric.b:.3f}", fontsize=9)
    else:
        right.set_title("parametric fit: not enough points")
    right.set(xlabel=f"measured {loss_label}", ylabel=f"predicted {loss_label}")
    return _save(fig, path)
