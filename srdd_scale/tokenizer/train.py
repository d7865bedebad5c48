"""Tokenizer training loop behind tools/train_tokenizer.py.

Losses: L1/L2 reconstruction, VAR's VQ loss (commitment beta with straight-through; docs/method.md §2.4),
optional perceptual loss. Codebook usage is tracked as an EMA of per-scale hits (VAR's `ema_vocab_hit_SV`)
and codes that fall out of use are re-initialised from current encoder residuals. DDP across processes
(gloo on CPU, nccl on GPU); checkpoints resume on any world size.
"""
from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from srdd_scale.config import config_hash
from srdd_scale.tokenizer.api import RUN_SUBFOLDER, build_tokenizer, save_tokenizer
from srdd_scale.tokenizer.config import TokenizerRunConfig, TokenizerTrainConfig
from srdd_scale.tokenizer.data import TrainImageStream, load_eval_images
from srdd_scale.tokenizer.perceptual import PerceptualLoss
from srdd_scale.tokenizer.quantizer import MultiScaleResidualQuantizer, phi_index
from srdd_scale.tokenizer.vqvae import MultiScaleVQTokenizer
from srdd_scale.train import checkpoint as ckpt
from srdd_scale.utils.dist import barrier, destroy_distributed, device_for, init_distributed
from srdd_scale.utils.logging import get_logger, progress
from srdd_scale.utils.rundir import prepare_run_dir
from srdd_scale.utils.threads import free_cores, stage_threads

USAGE_EMA_DECAY = 0.95  # ~20-step memory: a code unused for ~70 steps (at threshold 0.03) counts as dead
REINIT_NOISE = 0.01  # relative jitter on re-initialised codes so that copies of one residual differ
log = get_logger("srdd_scale.tokenizer")


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of [-1, 1] images, measured on the [0, 1] scale."""
    mse = ((reconstruction.float() - target.float()) / 2).square().flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


@torch.no_grad()
def per_scale_reconstructions(tokenizer: MultiScaleVQTokenizer, images: torch.Tensor
                              ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Images decoded from scales 1..k for every k, and the codes."""
    out = tokenizer.quantize.quantize(tokenizer.encode_latent(images))
    partial_sums = torch.stack(out.contributions).cumsum(dim=0)
    return [tokenizer.decode_latent(f_hat) for f_hat in partial_sums], out.indices


@torch.no_grad()
def evaluate(tokenizer: MultiScaleVQTokenizer, images: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Mean per-image PSNR after each scale and the fraction of the codebook each scale uses."""
    num_scales = len(tokenizer.patch_nums)
    psnr_sums = torch.zeros(num_scales)
    used = torch.zeros(num_scales, tokenizer.vocab_size, dtype=torch.bool)
    device = next(tokenizer.parameters()).device
    for chunk in images.split(batch_size):
        chunk = chunk.to(device)
        reconstructions, indices = per_scale_reconstructions(tokenizer, chunk)
        for k, (rec, idx) in enumerate(zip(reconstructions, indices)):
            psnr_sums[k] += psnr(rec, chunk).sum().cpu()
            used[k] |= torch.bincount(idx.flatten().cpu(), minlength=tokenizer.vocab_size) > 0
    metrics = {f"eval/psnr/scale_{k}": float(psnr_sums[k] / len(images)) for k in range(num_scales)}
    metrics["eval/psnr"] = metrics[f"eval/psnr/scale_{num_scales - 1}"]
    metrics.update({f"eval/usage/scale_{k}": float(used[k].float().mean()) for k in range(num_scales)})
    metrics["eval/usage/all"] = float(used.any(0).float().mean())
    return metrics


@torch.no_grad()
def save_grid(tokenizer: MultiScaleVQTokenizer, images: torch.Tensor, path: Path) -> None:
    """PNG: first row the originals, then one row per scale (reconstruction from scales 1..k)."""
    from torchvision.utils import save_image

    device = next(tokenizer.parameters()).device
    reconstructions, _ = per_scale_reconstructions(tokenizer, images.to(device))
    rows = torch.cat([images.to(device)] + reconstructions)
    save_image((rows.float().cpu() + 1) / 2, path, nrow=len(images), padding=1)


def plot_psnr(history: list[dict], patch_nums: tuple[int, ...], path: Path) -> None:
    """PSNR vs step for every scale, and the last evaluation's PSNR vs scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, (by_step, by_scale) = plt.subplots(1, 2, figsize=(11, 4))
    for k, p in enumerate(patch_nums):
        by_step.plot(steps, [h[f"eval/psnr/scale_{k}"] for h in history], marker=".", label=f"{p}x{p}")
    by_step.set(xlabel="step", ylabel="held-out PSNR (dB)", title="reconstruction from scales 1..k")
    by_step.legend(fontsize=7)
    by_step.grid(alpha=0.3)
    last = history[-1]
    by_scale.plot(range(len(patch_nums)), [last[f"eval/psnr/scale_{k}"] for k in range(len(patch_nums))], marker="o")
    by_scale.set_xticks(range(len(patch_nums)), [str(p) for p in patch_nums])
    by_scale.set(xlabel="last scale used (patch_num)", ylabel="PSNR (dB)", title=f"step {last['step']}")
    by_scale.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lr_at(cfg: TokenizerTrainConfig, step: int, progress_fraction: float) -> float:
    """Linear warm-up, then cosine decay over `progress_fraction` (steps or time budget, whichever is further)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress_fraction)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


@torch.no_grad()
def update_usage(quantizer: MultiScaleResidualQuantizer, indices: list[torch.Tensor], first: bool) -> None:
    """EMA of per-scale code hits summed over all ranks (VAR's `ema_vocab_hit_SV`)."""
    hits = torch.stack([torch.bincount(idx.flatten(), minlength=quantizer.vocab_size).float() for idx in indices])
    if dist.is_initialized():
        dist.all_reduce(hits)
    if first:
        quantizer.ema_vocab_hit_SV.copy_(hits)
    else:
        quantizer.ema_vocab_hit_SV.mul_(USAGE_EMA_DECAY).add_(hits, alpha=1 - USAGE_EMA_DECAY)


@torch.no_grad()
def reinit_dead_codes(quantizer: MultiScaleResidualQuantizer, queries: torch.Tensor, threshold: float,
                      optimizer: torch.optim.Optimizer, generator: torch.Generator) -> int:
    """Move codes hit less than `threshold` times per step onto random current residuals (rank 0 picks, all copy).

    At step 0 the EMA is empty, so every code starts on a data residual (a cheap data-dependent init).
    """
    dead = quantizer.ema_vocab_hit_SV.sum(0) < threshold
    count = int(dead.sum())
    if count == 0:
        return 0
    picks = torch.randint(len(queries), (count,), generator=generator)
    fresh = queries[picks.to(queries.device)].float()
    fresh = fresh + torch.randn(fresh.shape, generator=generator).to(fresh.device) * REINIT_NOISE * fresh.std()
    if dist.is_initialized():
        dist.broadcast(fresh, src=0)
    weight = quantizer.embedding.weight
    weight[dead] = fresh
    # a fresh code must not inherit the optimizer momentum of the dead one
    for value in optimizer.state.get(weight, {}).values():
        if torch.is_tensor(value) and value.shape == weight.shape:
            value[dead] = 0
    # count it as used once per step so that it has time to attract residuals before being judged again
    quantizer.ema_vocab_hit_SV[:, dead] = 1.0 / len(quantizer.patch_nums)
    return count


def _latest_checkpoint(root: Path) -> Path | None:
    """The newest checkpoint whose files match the hashes its COMPLETE recorded; damaged ones are named and passed."""
    for _, folder in reversed(ckpt.complete_checkpoints(root)):
        try:
            ckpt.verify_share(folder, ckpt.read_meta(folder))
            return folder
        except ckpt.CheckpointVerificationError as err:
            log.warning("not resuming from %s: %s", folder, err)
    return None


def train_tokenizer(cfg: TokenizerRunConfig, output: str | Path) -> dict[str, float]:
    """Train (or resume in `output`), evaluate, and save the tokenizer to `output/tokenizer`; returns final metrics."""
    cfg.validate()
    threads = stage_threads(cfg.tokenizer_train.num_threads)
    if threads != torch.get_num_threads():
        log.info("%d intra-op threads (asked %s, %d cores free)", threads, cfg.tokenizer_train.num_threads,
                 free_cores())
    torch.set_num_threads(threads)
    env = init_distributed()
    try:
        return _train(cfg, Path(output), env)
    finally:
        destroy_distributed()


def _train(cfg: TokenizerRunConfig, output: Path, env) -> dict[str, float]:
    tcfg = cfg.tokenizer_train
    device = device_for(env)
    torch.manual_seed(tcfg.seed)  # identical initial weights on every rank
    tokenizer = build_tokenizer(cfg.tokenizer).to(device).train().requires_grad_(True)
    tokenizer.quantize.beta = tcfg.beta
    optimizer = torch.optim.AdamW(tokenizer.parameters(), lr=tcfg.lr, betas=(0.9, 0.95),
                                  weight_decay=tcfg.weight_decay)
    perceptual = (PerceptualLoss(tcfg.perceptual_vgg_path, tcfg.perceptual_lpips_path).to(device)
                  if tcfg.perceptual_weight > 0 else None)
    num_phi, num_scales = cfg.tokenizer.share_quant_resi, len(cfg.tokenizer.patch_nums)
    # with more Phi convs than scales some Phi never runs, and DDP must be told to expect that
    unused_phi = len({phi_index(num_phi, k, num_scales) for k in range(num_scales)}) < num_phi
    model = (DistributedDataParallel(tokenizer, find_unused_parameters=unused_phi) if env.world_size > 1
             else tokenizer)
    stream = TrainImageStream(cfg.data, tcfg.batch_size, tcfg.seed, env.rank, env.world_size)
    generator = torch.Generator().manual_seed(tcfg.seed + 1)
    if env.is_main:
        prepare_run_dir(output, cfg)
    barrier()
    checkpoints = output / "checkpoints"
    step, elapsed_before = 0, 0.0
    history: list[dict] = []
    resume_from = _latest_checkpoint(checkpoints)
    if resume_from is not None:
        shared = torch.load(resume_from / "shared.pt", map_location="cpu", weights_only=True)
        tokenizer.load_state_dict(shared["model"])
        optimizer.load_state_dict(shared["optimizer"])
        step, elapsed_before = int(shared["step"]), float(shared["elapsed_s"])
        generator.set_state(shared["generator"])
        history = json.loads(shared["eval_history"])
        mine = ckpt.load_rank_state(resume_from, env.rank)
        if mine is not None:  # absent when resuming on a larger world: that rank restarts its part of the epoch
            stream.load_state(mine["data"])
            ckpt.set_rng_state(mine["rng"])
        log.info("resumed from %s at step %d", resume_from, step)

    eval_images, eval_label = (load_eval_images(cfg.data, tcfg.eval_input, tcfg.eval_images) if env.is_main
                               else (None, ""))
    metrics_file = output / "metrics.jsonl"
    autocast = ((lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if tcfg.precision == "bf16"
                else contextlib.nullcontext)

    def write_metrics(record: dict) -> None:
        if env.is_main:
            with metrics_file.open("a") as fh:
                fh.write(json.dumps(record) + "\n")

    def run_eval() -> dict:
        if env.is_main:
            tokenizer.eval()
            record = {"kind": "eval", "step": step, "eval_source": eval_label,
                      **evaluate(tokenizer, eval_images, tcfg.batch_size)}
            save_grid(tokenizer, eval_images[: tcfg.grid_images], output / "samples" / f"recon_step_{step:08d}.png")
            tokenizer.train()
            history.append(record)
            write_metrics(record)
            plot_psnr(history, tokenizer.patch_nums, output / "plots" / "psnr.png")
            log.info("step %d: held-out PSNR %.2f dB (per scale %s), codebook usage %.1f%%", step,
                     record["eval/psnr"], [round(record[f"eval/psnr/scale_{k}"], 1)
                                           for k in range(len(tokenizer.patch_nums))],
                     100 * record["eval/usage/all"])
        barrier()
        return history[-1] if history else {}

    def save_checkpoint(elapsed: float) -> None:
        folder = ckpt.step_dir(checkpoints, step)
        if env.is_main:
            ckpt.prepare_step_dir(folder)
        barrier()
        ckpt.save_rank_state(folder, env.rank, {"data": stream.state(), "rng": ckpt.rng_state()})
        if env.is_main:
            torch.save({"model": tokenizer.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                        "elapsed_s": elapsed, "generator": generator.get_state(),
                        "eval_history": json.dumps(history)}, folder / "shared.pt")
        barrier()
        if env.is_main:
            ckpt.mark_complete(folder, ckpt.CheckpointMeta(step=step, backend="tokenizer-ddp",
                                                           world_size=env.world_size, zero_stage=0,
                                                           config_hash=config_hash(cfg),
                                                           hash_algorithm=ckpt.HASH_ALGORITHM,
                                                           files=ckpt.hash_share(folder, 0, 1)))
            ckpt.prune(checkpoints, keep_last=tcfg.keep_checkpoints, verified=folder)
        barrier()

    budget_s = tcfg.max_minutes * 60 if tcfg.max_minutes else None
    start = time.time()
    batches = iter(stream)
    bar = progress(total=tcfg.steps, initial=step, desc="tokenizer")
    window_start, window_images = time.time(), 0
    while step < tcfg.steps:
        elapsed = elapsed_before + time.time() - start
        # every rank uses rank 0's clock, so that the LR and the stop decision agree
        clock = torch.tensor([elapsed], device=device)
        if dist.is_initialized():
            dist.broadcast(clock, src=0)
        elapsed = float(clock)
        if budget_s is not None and elapsed >= budget_s:
            log.info("time budget of %.1f min spent at step %d", tcfg.max_minutes, step)
            break
        fraction = max(step / tcfg.steps, elapsed / budget_s if budget_s else 0.0)
        lr = lr_at(tcfg, step, fraction)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images = next(batches).to(device)
        with autocast():
            reconstruction, quantized = model(images)
        reconstruction = reconstruction.float()
        l1 = (reconstruction - images).abs().mean()
        l2 = F.mse_loss(reconstruction, images)
        loss = tcfg.l1_weight * l1 + tcfg.l2_weight * l2 + quantized.vq_loss
        perceptual_loss = perceptual(reconstruction, images) if perceptual is not None else None
        if perceptual_loss is not None:
            loss = loss + tcfg.perceptual_weight * perceptual_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(tokenizer.parameters(), tcfg.grad_clip)
        optimizer.step()
        update_usage(tokenizer.quantize, quantized.indices, first=step == 0 and resume_from is None)
        reinit = 0
        if tcfg.dead_code_every and step % tcfg.dead_code_every == 0:
            reinit = reinit_dead_codes(tokenizer.quantize, quantized.queries, tcfg.dead_code_threshold,
                                       optimizer, generator)
        step += 1
        window_images += len(images) * env.world_size
        bar.update(1)
        if step % tcfg.log_every == 0 or step == 1:
            now = time.time()
            alive = float((tokenizer.quantize.ema_vocab_hit_SV.sum(0) >= tcfg.dead_code_threshold).float().mean())
            record = {"kind": "train", "step": step, "lr": lr, "loss": loss.item(), "l1": l1.item(), "l2": l2.item(),
                      "vq": quantized.vq_loss.item(), "train/psnr": float(psnr(reconstruction.detach().clamp(-1, 1),
                                                                               images).mean()),
                      "usage/alive": alive, "reinit_codes": reinit,
                      "images_per_s": window_images / (now - window_start),
                      "elapsed_s": elapsed, "skipped_images": stream.skipped}
            if perceptual_loss is not None:
                record["perceptual"] = perceptual_loss.item()
            write_metrics(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}", psnr=f"{record['train/psnr']:.1f}", alive=f"{alive:.2f}")
            window_start, window_images = now, 0
        if tcfg.eval_every and step % tcfg.eval_every == 0:
            run_eval()
        if tcfg.checkpoint_every and step % tcfg.checkpoint_every == 0:
            save_checkpoint(elapsed_before + time.time() - start)
    bar.close()
    if not history or history[-1]["step"] != step:
        run_eval()
    if not ckpt.complete_checkpoints(checkpoints) or ckpt.complete_checkpoints(checkpoints)[-1][0] != step:
        save_checkpoint(elapsed_before + time.time() - start)
    final = dict(history[-1]) if env.is_main else {}
    if env.is_main:
        save_tokenizer(tokenizer.cpu(), output / RUN_SUBFOLDER)
        final.update(train_minutes=(elapsed_before + time.time() - start) / 60, world_size=env.world_size,
                     threads=torch.get_num_threads(),
                     process_cpu_minutes_this_session=time.process_time() / 60,
                     tokenizer_path=str(output / RUN_SUBFOLDER), identity=tokenizer.identity())
        (output / "final_metrics.json").write_text(json.dumps(final, indent=2) + "\n")
        log.info("saved %s (held-out PSNR %.2f dB)", output / RUN_SUBFOLDER, final["eval/psnr"])
    barrier()
    return final
