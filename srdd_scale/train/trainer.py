"""The training loop: one code path for every backend and launcher (torchrun, srun, submitit, one process)."""

from __future__ import annotations

import math
import random
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from srdd_scale.train import checkpoint as ckpt
from srdd_scale.train.backends import build_backend, plan_batch
from srdd_scale.train.callbacks import default_callbacks
from srdd_scale.train.callbacks.base import StepReport
from srdd_scale.train.ema import EMA
from srdd_scale.train.schedules import lr_at
from srdd_scale.train.state import TrainState, all_reduce_mean, autocast, rng_isolated
from srdd_scale.train.task import SRDDTask
from srdd_scale.utils.dist import DistEnv, barrier, destroy_distributed, device_for, init_distributed
from srdd_scale.utils.logging import get_logger, progress
from srdd_scale.utils.rundir import prepare_run_dir, run_dir_for

# Exit status after a stop signal (SIGTERM/SIGUSR1) once the checkpoint is complete: the job is unfinished and
# should be requeued. 124 is also what `timeout` returns, so wrappers that requeue on time-outs handle both.
REQUEUE_EXIT_CODE = 124
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

log = get_logger("srdd_scale.train")


class NonFiniteLossError(RuntimeError):
    """A step's loss was NaN/inf and ``train.non_finite='stop'``."""


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
        self.task = SRDDTask(cfg, device)
        torch.manual_seed(train.seed)  # identical initial weights on every rank and for every backend
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
                                             num_workers=cfg.data.num_workers)
        eval_loader = None
        if train.eval_every and cfg.data.heldout_path:
            eval_loader = build_dataloader(cfg.data, "heldout", self.plan.micro_batch_size, train.seed, meta,
                                           num_workers=cfg.data.num_workers)
        self.callbacks = default_callbacks(eval_loader)
        self.step = 0
        self.non_finite_skips = 0
        self.stop_requested = False

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
        self.stop_requested = True
        log.warning("received %s: saving a checkpoint at the next step boundary, then exiting with %d",
                    signal.Signals(signum).name, REQUEUE_EXIT_CODE)

    # ------------------------------------------------------------------------------------------ checkpoints

    @property
    def checkpoint_root(self) -> Path:
        return self.run_dir / "checkpoints"

    def save_checkpoint(self) -> Path:
        """Collective: backend payload, then per-rank state, then (rank 0) the COMPLETE marker and pruning."""
        folder = ckpt.step_dir(self.checkpoint_root, self.step)
        if self.env.is_main:
            ckpt.prepare_step_dir(folder)
        barrier()
        self.backend.save(folder, {"ema": self.ema.state_dict()} if self.ema else {})
        ckpt.save_rank_state(folder, self.env.rank, {
            "rng": ckpt.rng_state(), "loader": self.train_loader.state_dict(),
            "non_finite_skips": self.non_finite_skips,
        })
        barrier()
        if self.env.is_main:
            ckpt.mark_complete(folder, ckpt.CheckpointMeta(
                step=self.step, backend=self.backend.name, world_size=self.env.world_size,
                zero_stage=self.cfg.parallel.zero_stage, config_hash=self.run_dir.name.rsplit("-", 1)[-1],
            ))
            ckpt.prune(self.checkpoint_root, self.cfg.train.keep_last)
        barrier()
        return folder

    def _load_checkpoint(self, folder: Path) -> None:
        meta = ckpt.read_meta(folder)
        if meta.backend != self.backend.name:
            raise RuntimeError(f"checkpoint {folder} was written by backend {meta.backend!r}, this run uses "
                               f"{self.backend.name!r}")
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

    def resume(self) -> None:
        """Continue from the newest complete checkpoint; a broken one is skipped (with a warning) for the previous."""
        if self.cfg.train.resume == "never":
            return
        for step, folder in reversed(ckpt.complete_checkpoints(self.checkpoint_root)):
            error = None
            try:
                self._load_checkpoint(folder)
            except Exception as err:  # any failure to read a checkpoint means: try the previous one
                error = err
            failed = torch.tensor([float(error is not None)], device=self.device)
            dist.all_reduce(failed, op=dist.ReduceOp.MAX)
            if not failed.item():
                log.info("resumed from %s (step %d)", folder, step)
                return
            log.warning("checkpoint %s could not be loaded (%s); falling back to the previous complete one",
                        folder, error or "failed on another rank")
            self.step = 0
        if ckpt.complete_checkpoints(self.checkpoint_root):
            raise RuntimeError(f"no checkpoint under {self.checkpoint_root} could be loaded (see warnings above); "
                               f"delete the folder or set train.resume=never to start over")

    # ------------------------------------------------------------------------------------------ the loop

    def train_step(self, batches) -> StepReport:
        """One optimizer step over ``grad_accum_steps`` micro-batches from ``batches`` (see micro_batches())."""
        cfg = self.cfg
        lr = lr_at(cfg.train, self.step)
        self.backend.set_lr(lr)
        loss_sum = 0.0
        metric_sums: dict[str, float] = {}
        accum = self.plan.grad_accum_steps
        for micro in range(accum):
            batch = next(batches)
            with self.backend.micro_step_context(micro == accum - 1):
                with autocast(self.device, cfg.train.precision):
                    loss, metrics = self.task.loss(self.backend.model, batch, self._cond_drop(micro))
                self.backend.backward(loss)
            loss_sum += float(loss.detach())
            for key, value in metrics.items():
                metric_sums[key] = metric_sums.get(key, 0.0) + value / accum
        # one collective carries the loss, the per-scale metrics and both flags (non-finite, stop request)
        local = {"loss": loss_sum / accum, **metric_sums,
                 "_non_finite": float(not math.isfinite(loss_sum)), "_stop": float(self.stop_requested)}
        reduced = all_reduce_mean(local, self.device, self.env.world_size)
        non_finite, self.stop_requested = reduced.pop("_non_finite") > 0, reduced.pop("_stop") > 0
        if non_finite:
            if cfg.train.non_finite == "stop":
                raise NonFiniteLossError(
                    f"non-finite loss at step {self.step + 1} (train.non_finite='stop'); the newest complete "
                    f"checkpoint under {self.checkpoint_root} is intact. Lower train.base_lr, raise "
                    f"train.warmup_steps, or set train.non_finite=skip"
                )
            self.backend.discard_step()
            self.non_finite_skips += 1
            grad_norm = math.nan
            log.warning("non-finite loss at step %d: update skipped (%d so far)", self.step + 1,
                        self.non_finite_skips)
        else:
            grad_norm = self.backend.step()
            if self.ema:
                self.ema.update(self.backend.module)
        self.step += 1
        reduced.update({"lr": lr, "grad_norm": grad_norm, "train/non_finite_skips": float(self.non_finite_skips),
                        "train/images_seen": float(self.step * cfg.train.global_batch_size)})
        log_now = self.step % cfg.logging.log_every == 0 or self.step == cfg.train.total_steps
        return StepReport(step=self.step, metrics=reduced, log=log_now)

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
                report = self.train_step(batches)
                state = self.state()
                for callback in self.callbacks:
                    callback.on_step_end(state, report)
                last = report.metrics
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.4f}")
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
    finally:
        destroy_distributed()
