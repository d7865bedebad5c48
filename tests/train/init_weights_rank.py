"""One rank of the initial-weights test: the trainer's model construction and backend, then the full fp32 state
dict written by rank 0 (``python init_weights_rank.py key=value ... OUT.safetensors``)."""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from srdd_scale.run_config import RunConfig
from srdd_scale.train.backends import build_backend, model_construction, plan_batch
from srdd_scale.train.task import SRDDTask
from srdd_scale.utils.dist import destroy_distributed, device_for, init_distributed


def main() -> None:
    *overrides, out = sys.argv[1:]
    cfg = RunConfig.load([], overrides)
    env = init_distributed()
    device = device_for(env)
    task = SRDDTask(cfg, device)
    torch.manual_seed(cfg.train.seed)  # as Trainer.__init__
    with model_construction(cfg.parallel, cfg.train):
        model = task.build_model()
    plan = plan_batch(cfg.train, cfg.parallel, env.world_size)
    backend = build_backend(model, 1e-3, env, device, cfg.train, cfg.parallel, plan, Path(out).parent)
    state = backend.full_state_dict()
    if env.is_main:
        save_file({name: value.contiguous() for name, value in state.items()}, out)
    destroy_distributed()


if __name__ == "__main__":
    main()
