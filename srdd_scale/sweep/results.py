"""``result.json``: what one finished sweep point records, and how results become fit points.

One file per point, written last by the point's job, so its presence means "done" (the sweep skips it).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from srdd_scale.sweep.fit import FitError, ScalingPoint

RESULT_FILE = "result.json"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class LossSelector:
    """Which loss a fit uses: ``split:metric``, e.g. ``eval:loss/mean`` (VAR's L_avg) or ``train:loss/last``."""

    split: str  # "train" or "eval"
    metric: str  # a key of the trainer's scale_losses metrics: loss/mean, loss/last, loss/scale_k

    @classmethod
    def parse(cls, text: str) -> "LossSelector":
        split, _, metric = text.partition(":")
        if split not in ("train", "eval") or not metric.startswith("loss/"):
            raise FitError(f"loss selector {text!r}: expected 'train:loss/...' or 'eval:loss/...' "
                           "(e.g. eval:loss/mean, train:loss/last)")
        return cls(split, metric)

    def __str__(self) -> str:
        return f"{self.split}:{self.metric}"


def write_result(folder: str | Path, result: dict) -> Path:
    """Atomically write ``result.json`` (tmp + rename): a half-written file must never mark a point done."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{RESULT_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"schema_version": SCHEMA_VERSION, **result}, indent=2, sort_keys=True))
    tmp.replace(folder / RESULT_FILE)
    return folder / RESULT_FILE


def read_result(path: str | Path) -> dict:
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise FitError(f"{path}: unreadable result ({err})") from None
    if result.get("schema_version") != SCHEMA_VERSION:
        raise FitError(f"{path}: schema_version={result.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    return result


def load_results(sweep_dir: str | Path) -> list[dict]:
    """Every ``points/*/result.json`` under a sweep directory, sorted by point name."""
    paths = sorted(Path(sweep_dir).glob(f"points/*/{RESULT_FILE}"))
    return [read_result(p) for p in paths]


def select_loss(result: dict, selector: LossSelector) -> float:
    losses = result.get(f"final_{selector.split}_loss") or {}
    if selector.metric not in losses:
        raise FitError(
            f"result of point {result.get('point')!r} has no {selector} "
            f"(available: {', '.join(f'{selector.split}:{k}' for k in sorted(losses)) or 'none'}); "
            "eval losses need train.eval_every > 0"
        )
    return float(losses[selector.metric])


def final_points(results: list[dict], selector: LossSelector) -> list[ScalingPoint]:
    """One point per run at its end: what the N, D and IsoFLOP fits use."""
    return [
        ScalingPoint(r["point"], r["params"], r["tokens"], r["flops"], select_loss(r, selector)) for r in results
    ]


def curve_points(results: list[dict]) -> dict[str, list[ScalingPoint]]:
    """Each run's logged train-loss curve as points (for the compute frontier: VAR's C_min, docs/method.md §8.5)."""
    curves = {}
    for r in results:
        rows = [row for row in r.get("curve", []) if all(math.isfinite(v) and v > 0 for v in row[1:])]
        if rows:
            curves[r["point"]] = [
                ScalingPoint(f"{r['point']}@{step}", r["params"], tokens, flops, loss)
                for step, tokens, flops, loss in rows
            ]
    return curves
