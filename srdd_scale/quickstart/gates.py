"""Checks between the quickstart's stages, so that a stage gone wrong stops the pipeline instead of feeding the next.

Each gate compares a stage's own output with a stated floor. The floors sit well below what the shipped
budgets reach on an idle 2-core machine and well above what a collapsed or starved stage produces
(README, docs/LOG.md): a tokenizer starved by a busy machine ended at 11.2 dB / 10% codebook usage, and a
transformer trained on its collapsed codes still reached a low loss, which is why the training gate measures
the loss against what the codes' frequencies alone predict.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

TOKENIZER_PSNR_FLOOR_DB = 18.0  # the shipped 1200 steps reach ~22 dB; a starved one ~11 dB
TOKENIZER_USAGE_FLOOR_PCT = 50.0  # share of the codebook the held-out images use (healthy: >90%)
CAPTION_COVERAGE_FLOOR_PCT = 99.0  # held-out captions that encode without <unk> and decode back unchanged
PRETOKENIZE_WRITTEN_FLOOR_PCT = 99.0  # written / asked for; synthetic images are never corrupt
LOSS_VS_UNIGRAM_CEILING = 0.9  # final held-out loss at most this fraction of the per-scale unigram baseline
CODE_ENTROPY_FLOOR_NATS = 2.0  # per-token entropy of the codes: codes that collapsed onto a few entries carry none
UNIGRAM_SMOOTHING = 1.0  # add-one counts, so that a held-out code never seen in training costs a finite loss


@dataclass(frozen=True)
class Check:
    """One figure against its floor (or ceiling, when lower is better)."""

    figure: str
    value: float
    floor: float
    unit: str = ""
    higher_is_better: bool = True

    @property
    def passed(self) -> bool:
        return self.value >= self.floor if self.higher_is_better else self.value <= self.floor

    def describe(self) -> str:
        relation = ">=" if self.higher_is_better else "<="
        verdict = "ok" if self.passed else "MISSED"
        return f"{self.figure} {self.value:.4g}{self.unit} (floor {relation} {self.floor:.4g}{self.unit}): {verdict}"


@dataclass(frozen=True)
class GateResult:
    stage: str
    checks: list[Check]
    cause: str  # what usually makes this stage miss its floors
    resume: str  # what to do about it
    extra: dict = field(default_factory=dict)  # figures shown in the summary that have no floor

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def message(self) -> str:
        missed = [check.describe() for check in self.checks if not check.passed]
        return (f"[quickstart] gate after '{self.stage}' stopped the pipeline: " + "; ".join(missed) + ".\n"
                f"  likely cause: {self.cause}\n  to resume: {self.resume}\n"
                "  (--no-gates goes on regardless)")

    def as_dict(self) -> dict:
        return {"stage": self.stage, "passed": self.passed, **self.extra,
                "checks": [{"figure": c.figure, "value": c.value, "floor": c.floor, "unit": c.unit,
                            "higher_is_better": c.higher_is_better, "passed": c.passed} for c in self.checks]}


def tokenizer_gate(final_metrics: Path, cause: str, resume: str) -> GateResult:
    """Held-out PSNR and codebook usage from train_tokenizer's final_metrics.json."""
    metrics = json.loads(Path(final_metrics).read_text())
    return GateResult("image tokenizer", [
        Check("tokenizer held-out PSNR", metrics["eval/psnr"], TOKENIZER_PSNR_FLOOR_DB, " dB"),
        Check("tokenizer codebook usage", 100 * metrics["eval/usage/all"], TOKENIZER_USAGE_FLOOR_PCT, "%"),
    ], cause, resume, {"steps": metrics.get("step")})


def caption_coverage(tokenizer, captions: Sequence[str]) -> float:
    """Fraction of `captions` a caption tokenizer encodes without <unk> and decodes back word for word."""
    unk = tokenizer.processor.unk_id()
    good = 0
    for caption, ids in zip(captions, tokenizer.encode(captions)):
        good += int(unk not in ids.tolist() and tokenizer.decode(ids).split() == caption.split())
    return good / len(captions)


def caption_gate(coverage: float, resume: str) -> GateResult:
    return GateResult("caption tokenizer", [Check("caption coverage of held-out captions", 100 * coverage,
                                                  CAPTION_COVERAGE_FLOOR_PCT, "%")],
                      "the caption tokenizer was trained on other captions than the data's (text.tokenizer)", resume)


def pretokenize_gate(stats: dict, asked: int, resume: str) -> GateResult:
    """Samples written against samples asked for (stats.json of tools/pretokenize.py)."""
    skipped = sum(stats.get("skipped", {}).values())
    return GateResult("pretokenize to MDS", [Check("training samples written", 100 * stats["written"] / asked,
                                                   PRETOKENIZE_WRITTEN_FLOOR_PCT, "%")],
                      f"{skipped} samples skipped ({stats.get('skipped')}): a data or tokenizer mismatch", resume,
                      {"written": stats["written"], "skipped": stats.get("skipped", {})})


def per_scale_counts(codes: Iterable[np.ndarray], patch_nums: Sequence[int], vocab_size: int) -> np.ndarray:
    """Code counts per scale, [scales, vocab], from flattened code sequences (coarse scale first)."""
    bounds = np.cumsum([0] + [p * p for p in patch_nums])
    counts = np.zeros((len(patch_nums), vocab_size), dtype=np.int64)
    for sequence in codes:
        for k in range(len(patch_nums)):
            counts[k] += np.bincount(sequence[bounds[k]:bounds[k + 1]].astype(np.int64), minlength=vocab_size)
    return counts


def unigram_baseline(train_counts: np.ndarray, heldout_counts: np.ndarray) -> dict[str, float]:
    """What code frequencies alone predict: the per-scale unigram's held-out loss and the codes' entropy, in nats.

    Both are token-weighted means over scales, like the trainer's ``loss/mean``. A transformer whose held-out
    loss does not beat the first has learnt nothing from the caption or the coarser scales.
    """
    probs = (train_counts + UNIGRAM_SMOOTHING) / (train_counts + UNIGRAM_SMOOTHING).sum(1, keepdims=True)
    cross = -(heldout_counts * np.log(probs)).sum() / heldout_counts.sum()
    train_probs = train_counts / np.maximum(train_counts.sum(1, keepdims=True), 1)
    entropy = -(train_counts * np.log(np.where(train_probs > 0, train_probs, 1.0))).sum() / train_counts.sum()
    return {"unigram_heldout_loss": float(cross), "code_entropy": float(entropy)}


def training_gate(first_train_loss: float, eval_losses: list[tuple[int, float]], baseline: dict[str, float],
                  resume: str) -> GateResult:
    """Held-out loss fell below the first logged training loss and beats the unigram baseline; the codes carry
    information."""
    final_step, final_loss = eval_losses[-1]
    return GateResult("train", [
        Check("held-out loss / first logged training loss", final_loss / first_train_loss, 1.0,
              higher_is_better=False),
        Check("held-out loss / unigram baseline", final_loss / baseline["unigram_heldout_loss"],
              LOSS_VS_UNIGRAM_CEILING, higher_is_better=False),
        Check("code entropy", baseline["code_entropy"], CODE_ENTROPY_FLOOR_NATS, " nats"),
    ], "too few training steps, or codes from a collapsed tokenizer (low code entropy)", resume,
        {"final_step": final_step, "heldout_loss": final_loss, "first_train_loss": first_train_loss, **baseline})
