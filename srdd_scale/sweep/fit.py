"""Scaling-law fits over sweep results: VAR power laws, Chinchilla's parametric law, IsoFLOP minima.

Conventions: ``N`` is the parameter count (the convention is recorded with each result, see
``srdd_scale.sweep.results``), ``D`` the number of training tokens, ``C`` the training FLOPs, ``L`` a loss in nats.
All fits work in log space because every law here is a power law (or a sum of them).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp


class FitError(ValueError):
    """Points cannot be fitted (too few, non-finite or non-positive); the message names the point and field."""


@dataclass(frozen=True)
class ScalingPoint:
    """One measured run (or one step of a run's loss curve) in the units the fits use."""

    name: str  # where the point comes from (run name, or run name + step), quoted in error messages
    params: float  # N: parameter count (see the result's `param_convention`)
    tokens: float  # D: training tokens seen
    flops: float  # C: training FLOPs spent
    loss: float  # L: loss in nats


def check_points(points: Sequence[ScalingPoint], fields: Sequence[str], min_points: int, fit_name: str) -> None:
    """Raise FitError unless there are ``min_points`` points whose ``fields`` are finite and > 0."""
    if len(points) < min_points:
        raise FitError(f"{fit_name} needs at least {min_points} points, got {len(points)}")
    for index, point in enumerate(points):
        for field in fields:
            value = getattr(point, field)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise FitError(
                    f"{fit_name}: point {index} ({point.name!r}) has {field}={value!r}; "
                    "expected a finite number > 0 (log-space fit)"
                )


def _column(points: Sequence[ScalingPoint], field: str) -> np.ndarray:
    return np.array([getattr(p, field) for p in points], dtype=np.float64)


# ---------------------------------------------------------------------------------------------- VAR power law


@dataclass(frozen=True)
class PowerLawFit:
    """``L = (beta * X)**alpha`` (VAR's form, docs/method.md §8.5) with the log-log Pearson correlation."""

    variable: str  # which field X is: "params" or "flops"
    alpha: float  # exponent (negative when loss falls with X)
    beta: float  # scale of X
    pearson_r: float  # correlation of log X and log L (VAR reports ~ -0.998)
    num_points: int

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        return (self.beta * np.asarray(x, dtype=np.float64)) ** self.alpha


def fit_power_law(points: Sequence[ScalingPoint], variable: str = "params") -> PowerLawFit:
    """Least squares on ``log L = alpha log beta + alpha log X``; needs >= 3 points with >= 2 distinct X."""
    check_points(points, (variable, "loss"), 3, f"power law in {variable}")
    log_x, log_loss = np.log(_column(points, variable)), np.log(_column(points, "loss"))
    if np.ptp(log_x) == 0:
        raise FitError(f"power law in {variable}: needs >= 2 distinct values, got {len(points)} points have "
                       f"{variable}={points[0].__dict__[variable]}")
    alpha, intercept = np.polyfit(log_x, log_loss, 1)
    return PowerLawFit(
        variable=variable,
        alpha=float(alpha),
        beta=float(math.exp(intercept / alpha)),
        pearson_r=float(np.corrcoef(log_x, log_loss)[0, 1]),
        num_points=len(points),
    )


def best_per_size(points: Sequence[ScalingPoint]) -> list[ScalingPoint]:
    """Each model size at its lowest loss: VAR fits L(N) on models trained to their best (docs/method.md §8.5),
    not on every (size, budget) pair, where short budgets would mix data-limited losses into the size law."""
    best: dict[float, ScalingPoint] = {}
    for point in points:
        if point.params not in best or point.loss < best[point.params].loss:
            best[point.params] = point
    return [best[n] for n in sorted(best)]


def compute_frontier(points: Sequence[ScalingPoint]) -> list[ScalingPoint]:
    """Points that reach a lower loss than any cheaper point: VAR's ``C_min`` frontier (docs/method.md §8.5)."""
    frontier, best = [], math.inf
    for point in sorted(points, key=lambda p: (p.flops, p.loss)):
        if point.loss < best:
            frontier.append(point)
            best = point.loss
    return frontier


# ---------------------------------------------------------------------------------------------- Chinchilla


@dataclass(frozen=True)
class ParametricFit:
    """Chinchilla's ``L(N, D) = E + A / N**a + B / D**b`` with bootstrap confidence intervals."""

    E: float  # irreducible loss
    A: float
    B: float
    a: float  # parameter exponent
    b: float  # data exponent
    huber_delta: float
    objective: float  # mean Huber loss (divided by delta) at the optimum
    num_points: int
    ci_level: float  # e.g. 0.95
    ci: dict  # name -> (low, high) from the bootstrap; empty when no bootstrap was run
    num_bootstrap: int

    def predict(self, params: np.ndarray | float, tokens: np.ndarray | float) -> np.ndarray:
        n, d = np.asarray(params, dtype=np.float64), np.asarray(tokens, dtype=np.float64)
        return self.E + self.A / n**self.a + self.B / d**self.b

    def optimal_allocation(self, flops: float, flops_per_param_token: float) -> tuple[float, float]:
        """N, D minimising L under ``C = k N D`` (closed form of Hoffmann et al. eq. 4)."""
        budget = flops / flops_per_param_token  # = N * D
        g = (self.a * self.A / (self.b * self.B)) ** (1.0 / (self.a + self.b))
        params = g * budget ** (self.b / (self.a + self.b))
        return float(params), float(budget / params)


# Start grid (log A, log B, log E, a, b): the Hoffmann et al. grid, coarsened so bootstraps stay cheap.
_GRID_LOG_A = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
_GRID_LOG_B = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
_GRID_LOG_E = (-1.0, 0.0, 1.0, 2.0)
_GRID_EXPONENT = (0.0, 0.5, 1.0, 1.5, 2.0)
_EXPONENT_BOUNDS = (0.0, 5.0)


def _huber_objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray, delta: float):
    """Mean Huber(delta) of the log-loss residual, divided by delta, and its gradient.

    Parameterised as Hoffmann et al.: log L = LSE(log A - a log N, log B - b log D, log E).
    Dividing by delta only rescales the objective so L-BFGS tolerances are meaningful; the optimum is unchanged.
    Written out by hand (no scipy logsumexp/softmax): it runs ~10^5 times per bootstrap.
    """
    log_a, log_b, log_e, a, b = theta
    term_n, term_d = log_a - a * log_n, log_b - b * log_d
    shift = np.maximum(np.maximum(term_n, term_d), log_e)
    exp_n, exp_d, exp_e = np.exp(term_n - shift), np.exp(term_d - shift), np.exp(log_e - shift)
    total = exp_n + exp_d + exp_e
    residual = shift + np.log(total) - log_loss
    abs_residual = np.abs(residual)
    small = abs_residual <= delta
    value = np.where(small, 0.5 * residual * residual / delta, abs_residual - 0.5 * delta)
    d_residual = np.where(small, residual / delta, np.sign(residual)) / (len(residual) * total)
    g_n, g_d = d_residual * exp_n, d_residual * exp_d
    grad = np.array([g_n.sum(), g_d.sum(), (d_residual * exp_e).sum(), -(g_n @ log_n), -(g_d @ log_d)])
    return float(value.mean()), grad


def _grid_objectives(grid: np.ndarray, log_n, log_d, log_loss, delta: float) -> np.ndarray:
    """Objective of every start at once (grid rows x points), to rank the starts cheaply."""
    terms = np.stack(
        [
            grid[:, 0:1] - grid[:, 3:4] * log_n,
            grid[:, 1:2] - grid[:, 4:5] * log_d,
            np.broadcast_to(grid[:, 2:3], (len(grid), len(log_n))),
        ]
    )
    residual = logsumexp(terms, axis=0) - log_loss
    small = np.abs(residual) <= delta
    return np.where(small, 0.5 * residual**2 / delta, np.abs(residual) - 0.5 * delta).mean(axis=1)


def _fit_parametric_once(log_n, log_d, log_loss, delta: float, starts: np.ndarray) -> tuple[np.ndarray, float]:
    best_theta, best_value = starts[0], math.inf
    bounds = [(None, None)] * 3 + [_EXPONENT_BOUNDS] * 2
    for start in starts:
        result = minimize(
            _huber_objective,
            start,
            args=(log_n, log_d, log_loss, delta),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 1000, "ftol": 1e-12, "gtol": 1e-8},
        )
        if result.fun < best_value:
            best_theta, best_value = result.x, float(result.fun)
    return best_theta, best_value


def _best_grid_starts(log_n, log_d, log_loss, delta: float, count: int) -> np.ndarray:
    """The ``count`` grid points with the lowest initial objective: L-BFGS from all 3600 would cost seconds."""
    grid = np.array(list(product(_GRID_LOG_A, _GRID_LOG_B, _GRID_LOG_E, _GRID_EXPONENT, _GRID_EXPONENT)))
    values = _grid_objectives(grid, log_n, log_d, log_loss, delta)
    return grid[np.argsort(values, kind="stable")[:count]]


def fit_parametric(
    points: Sequence[ScalingPoint],
    huber_delta: float = 1e-3,
    num_starts: int = 8,
    num_bootstrap: int = 100,
    ci_level: float = 0.95,
    seed: int = 0,
) -> ParametricFit:
    """Fit ``E + A/N^a + B/D^b`` by Huber loss on log L with L-BFGS from a grid of starts (Hoffmann et al.).

    Bootstrap: refit on ``num_bootstrap`` resamples (with replacement, seeded) from the point estimate only
    (each L-BFGS run costs ~0.1 s on 2 cores), and report percentile intervals for E, A, B, a, b.
    """
    check_points(points, ("params", "tokens", "loss"), 6, "parametric L(N, D) fit")
    log_n, log_d = np.log(_column(points, "params")), np.log(_column(points, "tokens"))
    log_loss = np.log(_column(points, "loss"))
    for name, column in (("params", log_n), ("tokens", log_d)):
        if len(np.unique(column)) < 2:
            raise FitError(f"parametric L(N, D) fit needs >= 2 distinct values of {name}, got {np.exp(column[0])}")
    starts = _best_grid_starts(log_n, log_d, log_loss, huber_delta, num_starts)
    theta, objective = _fit_parametric_once(log_n, log_d, log_loss, huber_delta, starts)

    def natural(t: np.ndarray) -> dict:
        return {"E": math.exp(t[2]), "A": math.exp(t[0]), "B": math.exp(t[1]), "a": float(t[3]), "b": float(t[4])}

    ci = {}
    if num_bootstrap > 0:
        rng = np.random.default_rng(seed)
        samples = []
        for _ in range(num_bootstrap):
            idx = rng.integers(0, len(points), len(points))
            boot_theta, _ = _fit_parametric_once(log_n[idx], log_d[idx], log_loss[idx], huber_delta, theta[None, :])
            samples.append(natural(boot_theta))
        tail = 100 * (1 - ci_level) / 2
        ci = {
            key: tuple(float(v) for v in np.percentile([s[key] for s in samples], [tail, 100 - tail]))
            for key in ("E", "A", "B", "a", "b")
        }
    return ParametricFit(
        **natural(theta),
        huber_delta=huber_delta,
        objective=objective,
        num_points=len(points),
        ci_level=ci_level,
        ci=ci,
        num_bootstrap=num_bootstrap,
    )


# ---------------------------------------------------------------------------------------------- IsoFLOP


@dataclass(frozen=True)
class IsoFlopCurve:
    """One compute budget: the parabola ``L = c2 x^2 + c1 x + c0`` in ``x = log N`` and its minimum."""

    flops: float  # the budget C (mean of its points' FLOPs)
    coefficients: tuple[float, float, float]  # (c2, c1, c0)
    optimal_params: float  # N*(C) at the parabola's vertex
    optimal_tokens: float  # D*(C): the budget's log D vs log N line evaluated at N*
    optimal_loss: float
    extrapolated: bool  # the vertex lies outside the sampled N range (less trustworthy)
    points: tuple[ScalingPoint, ...]


@dataclass(frozen=True)
class IsoFlopFit:
    """Compute-optimal allocation ``N*(C) = k_N C^a_N``, ``D*(C) = k_D C^a_D`` from the IsoFLOP minima."""

    curves: tuple[IsoFlopCurve, ...]
    params_exponent: float  # a_N (Chinchilla: ~0.5)
    params_coefficient: float  # k_N
    tokens_exponent: float  # a_D
    tokens_coefficient: float  # k_D

    def optimal_params(self, flops: float | np.ndarray) -> np.ndarray:
        return self.params_coefficient * np.asarray(flops, dtype=np.float64) ** self.params_exponent

    def optimal_tokens(self, flops: float | np.ndarray) -> np.ndarray:
        return self.tokens_coefficient * np.asarray(flops, dtype=np.float64) ** self.tokens_exponent


def group_by_budget(points: Sequence[ScalingPoint], rel_tol: float = 0.05) -> list[list[ScalingPoint]]:
    """Group points whose FLOPs agree within ``rel_tol`` (steps are integers, so budgets are only met roughly)."""
    groups: list[list[ScalingPoint]] = []
    for point in sorted(points, key=lambda p: p.flops):
        if groups and point.flops <= groups[-1][0].flops * (1 + rel_tol):
            groups[-1].append(point)
        else:
            groups.append([point])
    return groups


def fit_isoflop_curve(points: Sequence[ScalingPoint]) -> IsoFlopCurve:
    """Parabola in log N through one budget's points; needs >= 3 distinct N and an upward-opening fit."""
    budget = float(np.mean(_column(points, "flops")))
    check_points(points, ("params", "tokens", "flops", "loss"), 3, f"IsoFLOP curve at C={budget:.3g}")
    log_n, log_d = np.log(_column(points, "params")), np.log(_column(points, "tokens"))
    losses = _column(points, "loss")
    if len(np.unique(log_n)) < 3:
        raise FitError(f"IsoFLOP curve at C={budget:.3g} needs >= 3 distinct model sizes, got {len(np.unique(log_n))}")
    c2, c1, c0 = np.polyfit(log_n, losses, 2)
    if c2 <= 0:
        raise FitError(
            f"IsoFLOP curve at C={budget:.3g}: loss vs log N opens downwards (c2={c2:.3g}), so it has no minimum; "
            "widen the depth range around the optimum"
        )
    x_star = -c1 / (2 * c2)
    slope, intercept = np.polyfit(log_n, log_d, 1)
    return IsoFlopCurve(
        flops=budget,
        coefficients=(float(c2), float(c1), float(c0)),
        optimal_params=float(math.exp(x_star)),
        optimal_tokens=float(math.exp(slope * x_star + intercept)),
        optimal_loss=float(c0 - c1**2 / (4 * c2)),
        extrapolated=bool(x_star < log_n.min() or x_star > log_n.max()),
        points=tuple(points),
    )


def fit_isoflop(points: Sequence[ScalingPoint], rel_tol: float = 0.05) -> IsoFlopFit:
    """IsoFLOP analysis (Hoffmann et al. approach 2): per-budget minima, then power laws through them."""
    check_points(points, ("params", "tokens", "flops", "loss"), 6, "IsoFLOP fit")
    groups = [g for g in group_by_budget(points, rel_tol) if len(g) >= 3]
    if len(groups) < 2:
        raise FitError(
            f"IsoFLOP fit needs >= 2 compute budgets with >= 3 points each (budgets matched within {rel_tol:.0%}); "
            f"got {len(groups)} from {len(points)} points"
        )
    curves = tuple(fit_isoflop_curve(g) for g in groups)
    log_c = np.log([c.flops for c in curves])
    a_n, log_k_n = np.polyfit(log_c, np.log([c.optimal_params for c in curves]), 1)
    a_d, log_k_d = np.polyfit(log_c, np.log([c.optimal_tokens for c in curves]), 1)
    return IsoFlopFit(
        curves=curves,
        params_exponent=float(a_n),
        params_coefficient=float(math.exp(log_k_n)),
        tokens_exponent=float(a_d),
        tokens_coefficient=float(math.exp(log_k_d)),
    )


# ---------------------------------------------------------------------------------------------- recommendation


@dataclass(frozen=True)
class Recommendation:
    """Compute-optimal model size and token budget for a target compute, from each available fit."""

    target_flops: float
    flops_per_param_token: float  # k in C = k N D, measured from the sweep's own runs
    isoflop: dict | None  # {"params", "tokens"} from the IsoFLOP power laws
    parametric: dict | None  # {"params", "tokens", "loss"} from the Chinchilla closed form
    frontier_loss: float | None  # loss predicted by the VAR power law in C on the frontier


def flops_per_param_token(points: Sequence[ScalingPoint]) -> float:
    """Median of C / (N D): ~6 for a plain transformer; ours differs (attention, scale structure, N convention)."""
    check_points(points, ("params", "tokens", "flops"), 1, "FLOPs per parameter-token")
    return float(np.median(_column(points, "flops") / (_column(points, "params") * _column(points, "tokens"))))


def recommend(
    target_flops: float,
    points: Sequence[ScalingPoint],
    isoflop: IsoFlopFit | None = None,
    parametric: ParametricFit | None = None,
    compute_law: PowerLawFit | None = None,
) -> Recommendation:
    if not (math.isfinite(target_flops) and target_flops > 0):
        raise FitError(f"target compute must be a finite number of FLOPs > 0, got {target_flops!r}")
    k = flops_per_param_token(points)
    from_isoflop = None
    if isoflop is not None:
        from_isoflop = {
            "params": float(isoflop.optimal_params(target_flops)),
            "tokens": float(isoflop.optimal_tokens(target_flops)),
        }
    from_parametric = None
    if parametric is not None:
        n_opt, d_opt = parametric.optimal_allocation(target_flops, k)
        from_parametric = {"params": n_opt, "tokens": d_opt, "loss": float(parametric.predict(n_opt, d_opt))}
    return Recommendation(
        target_flops=float(target_flops),
        flops_per_param_token=k,
        isoflop=from_isoflop,
        parametric=from_parametric,
        frontier_loss=float(compute_law.predict(target_flops)) if compute_law is not None else None,
    )


def fit_to_dict(fit) -> dict:
    """JSON-ready form of any fit dataclass (curves keep their point names, not the points themselves)."""
    out = dataclasses.asdict(fit)
    for curve in out.get("curves", []):
        curve["points"] = [p["name"] for p in curve["points"]]
    return out
