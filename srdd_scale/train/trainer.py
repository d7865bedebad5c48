"""The training loop: one code path for every backend and launcher (torchrun, srun, submitit, one process)."""

from __future__ import annotations

import collections
import math
import random
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException

from srdd_scale.train import checkpoint as ckpt
from srdd_scale.train.backends import backend_class, build_backend, model_construction, plan_batch
from srdd_scale.train.callbacks import default_callbacks
from srdd_scale.train.callbacks.base import StepReport
from srdd_scale.train.ema import EMA
from srdd_scale.train.schedules import lr_at
from srdd_scale.train.distill import build_task
from srdd_scale.train.state import TrainState, autocast, rng_isolated
from srdd_scale.train.safe_load import UnsafePickleError
from srdd_scale.utils.dist import (
    DistEnv, barrier, destroy_distributed, device_for, gather_objects, init_distributed,
)
from srdd_scale.utils.logging import get_logger, progress
from srdd_scale.utils.rundir import prepare_run_dir, run_dir_for

# Exit status after a stop signal (SIGTERM/SIGUSR1) once the checkpoint is complete: the job is unfinished and
# should be requeued. 124 is also what `timeout` returns, so wrappers that requeue on time-outs handle both.
REQUEUE_EXIT_CODE = 124
# Exit status of a run that stopped because training went wrong (diverged, a refused checkpoint): requeueing
# would only repeat it, so it differs from REQUEUE_EXIT_CODE and from Python's 1 for a crash.
FAILURE_EXIT_CODE = 3
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

log = get_logger("srdd_scale.train")


class TrainingFailure(RuntimeError):
    """The run cannot usefully continue; the message says why, from which checkpoint and what to change."""


class NonFiniteLossError(TrainingFailure):
    """A step's loss was NaN/inf and ``train.non_finite='stop'``."""


class DivergenceError(TrainingFailure):
    """Too many skipped steps in a row, or too large a share of them (``train.max_consecutive_skips`` etc.)."""


def seed_everything(*keys: int) -> None:
    """Seed python, numpy and torch from a tuple of integers (e.g. seed and rank)."""
    seed = int(np.random.SeedSequence(list(keys)).generate_state(1)[0])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Owns the wrapped model, loaders, callbacks and counters of one run; ``fit()`` trains to total_steps."""

    def __init__(self, cfg: Any, env: DistEnv, device: torch.device, stop_at_step: int | None = None):
        self.cfg, self.env, self.device, self.stop_at_step = cfg, env, device, stop_at_step
        train = cfg.train
        self.run_dir = run_dir_for(cfg, cfg.logging.output_dir, cfg.logging.run_name)
        if env.is_main:
            prepare_run_dir(self.run_dir, cfg)
        barrier()
        self.plan = plan_batch(train, cfg.parallel, env.world_size)
        self.task = build_task(cfg, device)
        torch.manual_seed(train.seed)  # identical initial weights on every rank and for every backend
        with model_construction(cfg.parallel, train):
            model = self.task.build_model()
        if train.init_from:  # fine-tuning / scale distillation; a resume below still overrides these weights
            from srdd_scale.export.importing import load_exported_weights

            load_exported_weights(model, train.init_from)
        self.backend = build_backend(model, lr_at(train, 0), env, device, train, cfg.parallel, self.plan,
                                     self.run_dir)
        self.ema = EMA(self.backend.module, train.ema_decay) if train.ema_decay else None
        seed_everything(train.seed, env.rank)  # per-rank streams (drop path) after the shared init

        from srdd_scale.data.loader import build_dataloader, release_stale_shared_memory

        if env.local_rank == 0:  # segments a killed job left in /dev/shm; done before any rank picks a prefix
            release_stale_shared_memory()
        barrier()
        meta = self.task.expected_meta()
        self.train_loader = build_dataloader(cfg.data, "train", self.plan.micro_batch_size, train.seed, meta,
                                             num_workers=cfg.data.num_workers, model_classes=cfg.model.num_classes)
        eval_loader = None
        if train.eval_every and cfg.data.heldout_path:
            eval_loader = build_dataloader(cfg.data, "heldout", self.plan.micro_batch_size, train.seed, meta,
                                           num_workers=cfg.data.num_workers, model_classes=cfg.model.num_classes)
        self.callbacks = default_callbacks(eval_loader)
        self.step = 0
        self.non_finite_skips = 0  # steps whose update was dropped (non-finite loss or grad norm), whole run
        self.consecutive_skips = 0
        self.spike_rollbacks = 0
        self.recent_losses: collections.deque[float] = collections.deque(maxlen=train.loss_spike_window)
        self.last_verified: Path | None = None  # newest checkpoint known good: written and hashed, or resumed
        self.signal_received = False  # this rank's own stop signal, sent to every rank with the step's values
        self.stop_requested = False  # any rank's signal, as read back: the same on every rank
        self.unsettled: list[tuple[int, float, torch.Tensor]] = []  # (step, lr, values on the device) not read yet

    # ------------------------------------------------------------------------------------------ helpers

    def state(self) -> TrainState:
        """What callbacks see of the run now."""
        return TrainState(cfg=self.cfg, env=self.env, device=self.device, run_dir=self.run_dir, task=self.task,
                          backend=self.backend, step=self.step)

    def _cond_drop(self, micro: int) -> torch.Tensor | None:
        """CFG condition dropout drawn from (seed, step, micro-batch, rank): resumes exactly, on any world size."""
        prob = self.cfg.model.cond_drop_prob
        if prob <= 0:
            return None
        seed = np.random.SeedSequence([self.cfg.train.seed, self.step, micro, self.env.rank]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(seed))
        return torch.rand(self.plan.micro_batch_size, generator=generator) < prob

    def micro_batches(self):
        """Endless micro-batches (the loader drops each epoch's short tail, so the global batch stays fixed)."""
        empty_epochs = 0
        while True:
            yielded = False
            for batch in self._epoch():
                yielded = True
                yield batch
            empty_epochs = 0 if yielded else empty_epochs + 1
            if empty_epochs > 1:
                raise RuntimeError(
                    f"the training split {self.cfg.data.train_path} yields no full micro-batch of "
                    f"{self.plan.micro_batch_size} samples per rank on {self.env.world_size} ranks: write more "
                    f"samples or lower train.global_batch_size"
                )

    def _epoch(self):
        """One pass over the training loader that leaves the training RNG untouched.

        Starting a DataLoader iterator draws its base seed from the global torch RNG; after a resume that draw
        would shift the drop-path stream, so it happens inside ``rng_isolated``.
        """
        iterator = iter(self.train_loader)
        with rng_isolated(self.device):
            batch = next(iterator, None)
        while batch is not None:
            yield batch
            batch = next(iterator, None)

    def _on_signal(self, signum, frame) -> None:
        self.signal_received = True
        log.warning("received %s: saving a checkpoint at the next step that reads back (at most "
                    "logging.log_every steps away), then exiting with %d",
                    signal.Signals(signum).name, REQUEUE_EXIT_CODE)

    # ------------------------------------------------------------------------------------------ checkpoints

    @property
    def checkpoint_root(self) -> Path:
        return self.run_dir / "checkpoints"

    def save_checkpoint(self) -> Path:
        """Collective: backend payload and per-rank state, then every rank hashes its share of the files as they
        are on disk, then rank 0 writes COMPLETE (with all hashes) and only then prunes older checkpoints.

        Every stage ends with the ranks agreeing on its outcome, so a failed write (a full disk, a read-only
        folder) stops every rank with one message while the previous verified checkpoint stays untouched.
        """
        folder = ckpt.step_dir(self.checkpoint_root, self.step)
        shares: list[dict[str, Any]] = []

        def write_payload() -> None:
            self.backend.save(folder, {"ema": self.ema.state_dict()} if self.ema else {})
            ckpt.save_rank_state(folder, self.env.rank, {
                "rng": ckpt.rng_state(), "loader": self.train_loader.state_dict(),
                "non_finite_skips": self.non_finite_skips,
            })

        def mark_and_prune() -> None:
            ckpt.mark_complete(folder, ckpt.CheckpointMeta(
                step=self.step, backend=self.backend.name, world_size=self.env.world_size,
                zero_stage=self.cfg.parallel.zero_stage, config_hash=self.run_dir.name.rsplit("-", 1)[-1],
                hash_algorithm=ckpt.HASH_ALGORITHM, files={k: v for share in shares for k, v in share.items()},
            ))
            ckpt.prune(self.checkpoint_root, self.cfg.train.keep_last, verified=folder)

        stages = (
            lambda: ckpt.prepare_step_dir(folder) if self.env.is_main else None,
            write_payload,
            lambda: shares.extend(gather_objects(ckpt.hash_share(folder, self.env.rank, self.env.world_size))),
            lambda: mark_and_prune() if self.env.is_main else None,
        )
        for stage in stages:
            error = self._on_every_rank(stage, describe=lambda err: ckpt.describe_write_error(folder, err))
            if error is not None:
                if self.env.is_main:  # an unmarked folder is never resumed; removing it frees the space it took
                    shutil.rmtree(folder, ignore_errors=True)
                raise TrainingFailure(f"could not write checkpoint {folder}: {error}. Nothing was deleted: "
                                      f"{self._last_good()}, and the run resumes from it once this is fixed")
        self.last_verified = folder
        return folder

    def _load_checkpoint(self, folder: Path) -> None:
        meta = ckpt.read_meta(folder)
        written_as = backend_class(meta.backend).checkpoint_format
        if written_as != self.backend.checkpoint_format:
            raise RuntimeError(f"checkpoint {folder} was written by backend {meta.backend!r} ({written_as} format), "
                               f"which backend {self.backend.name!r} cannot read ({self.backend.checkpoint_format})")
        extra = self.backend.load(folder, meta, {"ema": self.ema.state_dict()} if self.ema else {})
        if self.ema:
            self.ema.load_state_dict(extra["ema"])
        shared = ckpt.load_rank_state(folder, 0)  # loader state is global: identical in every rank's file
        own = ckpt.load_rank_state(folder, self.env.rank)
        self.train_loader.load_state_dict(shared["loader"])  # streaming resumes mid-epoch, on any world size
        if own is not None and meta.world_size == self.env.world_size:
            ckpt.set_rng_state(own["rng"])
        else:  # a different world size: fresh per-rank streams, still a function of (seed, rank, step)
            seed_everything(self.cfg.train.seed, self.env.rank, meta.step)
        self.non_finite_skips = int(shared["non_finite_skips"])
        self.step = meta.step
        self.last_verified = folder

    def _on_every_rank(self, action, describe=str) -> str | None:
        """Run ``action`` on every rank; None when it succeeded everywhere, else the first failing rank's error
        (as ``describe`` words it). A planted pickle is refused for good (TrainingFailure): it is a hostile file,
        not a damaged one, so no older checkpoint is tried in its place."""
        error = None
        try:
            action()
        except UnsafePickleError as err:
            error = ("unsafe", str(err))
        except (Exception, CheckpointException) as err:  # DCP's error is a BaseException
            error = ("failed", describe(err))
        errors = [e for e in gather_objects(error) if e is not None]
        unsafe = [text for kind, text in errors if kind == "unsafe"]
        if unsafe:
            raise TrainingFailure(f"{unsafe[0]}. Refusing to resume from a run folder holding it: remove the "
                                  f"checkpoint (or the run folder) and check who wrote it")
        return errors[0][1] if errors else None

    def resume(self) -> None:
        """Continue from the newest verified checkpoint; a damaged one is skipped (with a warning naming the file)
        for the previous. All ranks verify their share of the files before any rank loads."""
        if self.cfg.train.resume == "never":
            return
        for step, folder in reversed(ckpt.complete_checkpoints(self.checkpoint_root)):
            error = self._on_every_rank(lambda folder=folder: ckpt.verify_share(
                folder, ckpt.read_meta(folder), self.env.rank, self.env.world_size))
            if error is None:
                error = self._on_every_rank(lambda folder=folder: self._load_checkpoint(folder))
            if error is None:
                log.info("resumed from %s (step %d, verified)", folder, step)
                return
            log.warning("checkpoint %s could not be loaded (%s); falling back to the previous complete one",
                        folder, error)
            self.step, self.last_verified = 0, None
        if ckpt.complete_checkpoints(self.checkpoint_root):
            raise TrainingFailure(f"no checkpoint under {self.checkpoint_root} could be loaded (see warnings "
                                  f"above); delete the folder or set train.resume=never to start over")

    # ------------------------------------------------------------------------------------------ divergence guard

    def _last_good(self) -> str:
        if self.last_verified is None:
            return f"no verified checkpoint exists yet under {self.checkpoint_root}"
        return f"the last verified checkpoint is {self.last_verified}"

    def _skipped(self, reason: str, steps: int, at_step: int) -> None:
        """Count ``steps`` dropped steps ending at ``at_step``; stop the run when the guard's limits are hit."""
        train = self.cfg.train
        self.non_finite_skips += steps
        self.consecutive_skips += steps
        first = at_step - self.consecutive_skips + 1
        log.warning("step %d: %s, update skipped (%d in a row, %d in the run)", at_step, reason,
                    self.consecutive_skips, self.non_finite_skips)
        if self.consecutive_skips >= train.max_consecutive_skips:
            limit = (f"{self.consecutive_skips} consecutive skipped steps (train.max_consecutive_skips="
                     f"{train.max_consecutive_skips})")
        elif at_step >= train.max_consecutive_skips and self.non_finite_skips > train.max_skip_fraction * at_step:
            limit = (f"{self.non_finite_skips} of {at_step} steps skipped (train.max_skip_fraction="
                     f"{train.max_skip_fraction})")
        else:
            return
        raise DivergenceError(
            f"training diverged: {limit}, the last run of them at steps {first}-{at_step} ({reason}); "
            f"{self._last_good()}. Lower train.base_lr or raise train.warmup_steps and resume, or raise "
            f"train.max_consecutive_skips / train.max_skip_fraction if these skips are expected"
        )

    def _loss_spiked(self, loss: float) -> bool:
        """loss > train.loss_spike_factor x the running median of the last loss_spike_window steps."""
        train = self.cfg.train
        if not train.loss_spike_factor:
            return False
        history = sorted(self.recent_losses)
        full = len(history) == train.loss_spike_window
        spiked = full and math.isfinite(loss) and loss > train.loss_spike_factor * history[len(history) // 2]
        if not spiked and math.isfinite(loss):
            self.recent_losses.append(loss)
        return spiked

    def _roll_back(self, loss: float, spike_step: int):
        """Reload the last verified checkpoint and skip the batches it has not seen up to ``spike_step`` (the
        window that led to the spike; steps after it, taken before the read-back showed the spike, are redone).
        Returns the micro-batch iterator to continue with."""
        if self.last_verified is None:
            raise DivergenceError(f"loss spike at step {spike_step} (loss {loss:.4g} > train.loss_spike_factor="
                                  f"{self.cfg.train.loss_spike_factor} x the running median) and {self._last_good()} "
                                  f"to roll back to; raise train.loss_spike_factor or lower train.base_lr")
        folder = self.last_verified
        error = self._on_every_rank(lambda: self._load_checkpoint(folder))
        if error is not None:
            raise TrainingFailure(f"loss spike at step {spike_step}: rolling back to {folder} failed ({error})")
        window = spike_step - self.step
        self.spike_rollbacks += 1
        batches = self.micro_batches()
        for _ in range(window * self.plan.grad_accum_steps):
            next(batches)
        log.warning("loss spike at step %d (loss %.4g > %g x median): rolled back to %s and skipped the batches of "
                    "steps %d-%d", spike_step, loss, self.cfg.train.loss_spike_factor, folder, self.step + 1,
                    spike_step)
        self.step += window  # the skipped window still counts as steps done (schedule and data move on)
        self.consecutive_skips = 0
        self._skipped(f"loss spike {loss:.4g}, rolled back to {folder.name}", window, self.step)
        return batches

    # ------------------------------------------------------------------------------------------ the loop

    def _micro_step(self, batch: dict[str, torch.Tensor], micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward + backward of one micro-batch; the loss and metrics stay on the device (no host sync here)."""
        last = micro == self.plan.grad_accum_steps - 1
        with self.backend.micro_step_context(last):
            with autocast(self.device, self.cfg.train.precision):
                loss, summary = self.task.loss_summary(self.backend.model, batch, self._cond_drop(micro))
            self.backend.backward(loss)
        return loss.detach(), summary

    def train_step(self, batches) -> None:
        """One optimizer step over ``grad_accum_steps`` micro-batches from ``batches`` (see micro_batches()).

        Nothing here waits for the device: losses and metrics are summed there, one all-reduce carries them with
        the non-finite and stop flags, the backend drops a non-finite update there, and the step's values join
        ``self.unsettled`` until ``settle`` reads them back (docs/contracts.md: the host reads a step only on the
        steps that log, evaluate, sample or checkpoint, and at the end).
        """
        lr = lr_at(self.cfg.train, self.step)
        self.backend.set_lr(lr)
        accum = self.plan.grad_accum_steps
        loss_sum = summary_sum = None
        for micro in range(accum):
            loss, summary = self._micro_step(next(batches), micro)
            loss_sum = loss.double() if loss_sum is None else loss_sum + loss.double()
            summary_sum = summary.double() if summary_sum is None else summary_sum + summary.double()
        flags = torch.tensor([float(self.signal_received)], dtype=torch.float64, device=self.device)
        packed = torch.cat([(loss_sum / accum)[None], summary_sum / accum,
                            (~torch.isfinite(loss_sum)).double()[None], flags])
        dist.all_reduce(packed)
        grad_norm = self.backend.step(packed[-2] > 0)
        if self.ema:  # a dropped update left the weights as they were, so averaging them in is harmless
            self.ema.update(self.backend.module)
        self.step += 1
        self.unsettled.append((self.step, lr, torch.cat([packed / self.env.world_size,
                                                         grad_norm.double().reshape(1)])))

    def reads_back(self) -> bool:
        """Whether the step just taken is one on which the host needs its values (every rank agrees)."""
        train, step = self.cfg.train, self.step
        due = [self.cfg.logging.log_every, train.checkpoint_every, train.eval_every, train.sample_every]
        return (any(every and step % every == 0 for every in due) or step >= train.total_steps
                or (self.stop_at_step is not None and step >= self.stop_at_step))

    def settle(self) -> tuple[StepReport, int | None]:
        """Read back every unsettled step in one transfer and apply the guard to each in order.

        Returns the report of the newest step and, when a step's loss spiked, that step (for ``_roll_back``).
        """
        cfg = self.cfg
        steps = self.unsettled
        self.unsettled = []
        rows = torch.stack([values for _, _, values in steps]).tolist()
        report = None
        for (step, lr, _), values in zip(steps, rows):
            non_finite, grad_norm = values[-3] > 0, values[-1]
            self.stop_requested = self.stop_requested or values[-2] > 0
            if non_finite and cfg.train.non_finite == "stop":
                raise NonFiniteLossError(
                    f"non-finite loss at step {step} (train.non_finite='stop'); {self._last_good()}. "
                    f"Lower train.base_lr, raise train.warmup_steps, or set train.non_finite=skip"
                )
            if math.isfinite(grad_norm) and not non_finite:
                self.consecutive_skips = 0
            else:
                self._skipped("non-finite loss" if non_finite else "non-finite gradient norm", 1, step)
            metrics = {"loss": values[0], **dict(zip(self.task.metric_names, values[1:-3])), "lr": lr,
                       "grad_norm": grad_norm, "train/non_finite_skips": float(self.non_finite_skips),
                       "train/spike_rollbacks": float(self.spike_rollbacks),
                       "train/images_seen": float(step * cfg.train.global_batch_size)}
            if self._loss_spiked(metrics["loss"]):
                return StepReport(step=step, metrics=metrics, settled=True), step
            log_now = step % cfg.logging.log_every == 0 or step == cfg.train.total_steps
            report = StepReport(step=step, metrics=metrics, log=log_now, settled=True)
        return report, None

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        started = time.perf_counter()
        self.resume()
        start_step = self.step
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        for callback in self.callbacks:
            callback.on_train_start(self.state())
        self.backend.model.train()
        batches = self.micro_batches()
        bar = progress(total=cfg.train.total_steps, initial=self.step,
                       disable=not (self.env.is_main and cfg.logging.progress_bar))
        stopped = None
        last: dict[str, float] = {}
        try:
            while self.step < cfg.train.total_steps:
                self.train_step(batches)
                report = StepReport(step=self.step, metrics={})
                if self.reads_back():
                    report, spike_step = self.settle()
                    if spike_step is not None:
                        batches = self._roll_back(report.metrics["loss"], spike_step)
                        bar.n = self.step
                        continue
                    last = report.metrics
                    bar.set_postfix(loss=f"{last['loss']:.4f}", refresh=False)
                state = self.state()
                for callback in self.callbacks:
                    callback.on_step_end(state, report)
                bar.update(1)
                if self.stop_requested:
                    stopped = "signal"
                elif self.stop_at_step is not None and self.step >= self.stop_at_step:
                    stopped = "stop_at_step"
                every = cfg.train.checkpoint_every
                if stopped or (every and self.step % every == 0) or self.step == cfg.train.total_steps:
                    self.save_checkpoint()
                for callback in self.callbacks:
                    callback.on_step_done(state)
                if stopped:
                    break
        finally:
            bar.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        summary = {
            "run_dir": str(self.run_dir), "rank": self.env.rank, "step": self.step, "start_step": start_step,
            "stopped": stopped, "exit_code": REQUEUE_EXIT_CODE if stopped == "signal" else 0,
            "loss": last.get("loss", math.nan), "non_finite_skips": self.non_finite_skips,
            "tokens_per_s": last.get("perf/tokens_per_s", math.nan), "mfu": last.get("perf/mfu", math.nan),
            "wall_seconds": time.perf_counter() - started,
        }
        for callback in self.callbacks:
            callback.on_train_end(self.state(), summary)
        return summary


def run(cfg: Any, stop_at_step: int | None = None) -> dict[str, Any]:
    """Train ``cfg`` (a validated RunConfig) in this process; the entry point of tools/train.py and submitit.

    Ranks come from torchrun's or SLURM's environment (a single process otherwise). Returns a summary with
    ``exit_code``: 0 when finished or stopped at ``stop_at_step``, REQUEUE_EXIT_CODE after a stop signal.
    """
    env = init_distributed(cfg.parallel.timeout_minutes)
    try:
        trainer = Trainer(cfg, env, device_for(env), stop_at_step=stop_at_step)
        return trainer.fit()
    except TrainingFailure as err:
        log.error("%s", err)
        return {"rank": env.rank, "exit_code": FAILURE_EXIT_CODE, "error": str(err)}
    finally:
        destroy_distributed()
