"""SweepConfig: which points a scaling sweep trains, how each is launched, and how the results are fitted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from srdd_scale.config import require


@dataclass(frozen=True)
class ExecutorConfig:
    """submitit parameters; one sweep point is one job (one SLURM array task)."""

    kind: Literal["auto", "slurm", "local"] = "auto"  # auto: SLURM when sbatch is reachable, else local processes
    partition: str = ""  # SLURM partition ("" : the cluster's default)
    timeout_min: int = 60  # wall-clock limit per point; submitit requeues checkpointable jobs on time-out
    nodes: int = 1  # nodes per point
    tasks_per_node: int = 1  # processes per node (ranks of the trainer: srun-style SLURM variables)
    gpus_per_node: int = 0  # GPUs per node (0 on CPU clusters)
    cpus_per_task: int = 1  # CPU cores per process
    mem_gb: float = 0.0  # memory per node in GB (0: do not ask, the partition's default applies)
    array_parallelism: int = 4  # at most this many points run at once (SLURM array %N; local: chunks of N)
    signal_delay_s: int = 120  # SLURM sends USR1 this long before the time limit (checkpoint + requeue)
    setup: tuple[str, ...] = ()  # shell lines run before each SLURM job (e.g. "source /path/venv/bin/activate")

    def validate(self) -> None:
        for key in ("timeout_min", "nodes", "tasks_per_node", "cpus_per_task", "array_parallelism"):
            require(getattr(self, key) >= 1, f"executor.{key}", getattr(self, key), "an int >= 1")
        require(self.gpus_per_node >= 0, "executor.gpus_per_node", self.gpus_per_node, "an int >= 0")
        require(self.mem_gb >= 0, "executor.mem_gb", self.mem_gb, "a float >= 0 (0: partition default)")
        require(self.signal_delay_s >= 0, "executor.signal_delay_s", self.signal_delay_s, "an int >= 0")


@dataclass(frozen=True)
class FitConfig:
    """What the sweep fits once its points are done (see srdd_scale.sweep.fit)."""

    loss: str = "train:loss/mean"  # train|eval : loss/mean (VAR's L_avg) | loss/last (L_last) | loss/scale_k
    target_flops: float = 0.0  # recommend N and D for this training compute (0: no recommendation)
    num_bootstrap: int = 100  # bootstrap resamples for the Chinchilla fit's confidence intervals
    seed: int = 0  # bootstrap seed

    def validate(self) -> None:
        require(self.loss.split(":")[0] in ("train", "eval") and ":loss/" in self.loss, "fit.loss", self.loss,
                 "'train:loss/...' or 'eval:loss/...', e.g. eval:loss/mean")
        require(self.target_flops >= 0, "fit.target_flops", self.target_flops, "a float >= 0 (0: none)")
        require(self.num_bootstrap >= 0, "fit.num_bootstrap", self.num_bootstrap, "an int >= 0")
        require(self.seed >= 0, "fit.seed", self.seed, "an int >= 0")


@dataclass(frozen=True)
class SweepConfig:
    """A depth x token-budget grid, or IsoFLOP (compute budgets x depths, steps from the FLOP counter)."""

    name: str = "sweep"  # the sweep directory is <output_dir>/<name>
    output_dir: str = "runs/sweeps"  # parent of sweep directories (relative paths: from the working directory)
    train_configs: tuple[str, ...] = ()  # trainer YAML files shared by every point (relative: working directory)
    train_overrides: tuple[str, ...] = ()  # trainer key=value overrides shared by every point
    mode: Literal["grid", "isoflop"] = "grid"  # grid: depths x tokens; isoflop: flops x depths
    depths: tuple[int, ...] = (4, 6, 8)  # model.depth of each point (width = 64 * depth unless overridden)
    tokens: tuple[float, ...] = ()  # grid: training tokens D per point (steps = D / (batch * tokens/image))
    flops: tuple[float, ...] = ()  # isoflop: training FLOPs C per point (steps = C / (batch * FLOPs/image))
    schedule: Literal["cosine", "lin0", "wsd", "constant"] = "wsd"  # LR schedule of every point (train.schedule)
    warmup_fraction: float = 0.05  # warmup steps = max(1, round(fraction * steps)) per point
    min_steps: int = 4  # points whose budget gives fewer steps are refused (too short to mean anything)
    seed: int = 0  # train.seed of every point
    masks: tuple[str, ...] = ()  # ablations: repeat every point once per model.mask ("" : the trainer config's)
    seeds: tuple[int, ...] = ()  # ablations: repeat every point once per train.seed (empty: `seed` only)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    fit: FitConfig = field(default_factory=FitConfig)

    def validate(self) -> None:
        require(bool(self.name) and "/" not in self.name, "name", self.name, "a non-empty name without '/'")
        require(len(self.depths) >= 1 and all(d >= 1 for d in self.depths), "depths", self.depths,
                 "a non-empty list of ints >= 1")
        if self.mode == "grid":
            require(len(self.tokens) >= 1 and all(t > 0 for t in self.tokens), "tokens", self.tokens,
                     "a non-empty list of token budgets > 0 (mode: grid)")
        else:
            require(len(self.flops) >= 1 and all(c > 0 for c in self.flops), "flops", self.flops,
                     "a non-empty list of FLOP budgets > 0 (mode: isoflop)")
        require(0 <= self.warmup_fraction < 1, "warmup_fraction", self.warmup_fraction, "a float in [0, 1)")
        require(self.min_steps >= 1, "min_steps", self.min_steps, "an int >= 1")
        require(self.seed >= 0, "seed", self.seed, "an int >= 0")
        from srdd_scale.model.config import MASK_MODES

        require(all(m in MASK_MODES for m in self.masks) and len(set(self.masks)) == len(self.masks), "masks",
                self.masks, f"distinct entries of {MASK_MODES}")
        require(len(set(self.seeds)) == len(self.seeds), "seeds", self.seeds, "distinct seeds")
        for override in self.train_overrides:
            require("=" in override, "train_overrides", override, "key=value strings")
        self.executor.validate()
        self.fit.validate()
