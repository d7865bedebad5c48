#!/bin/bash
# d30 (~2B parameters) on 4 nodes x 8 GPUs, FSDP2, bf16: the defaults of this size, then the generic body.
#
#   sbatch slurm/train_d30.sh data.train_path=s3://bucket/shards train.total_steps=200000
#   sbatch --nodes=1 --ntasks-per-node=2 --gpus-per-node=0 slurm/train_d30.sh model.depth=4 ...   # CPU smoke
#
# #SBATCH values are defaults (command-line options and SBATCH_* variables win); SRDD_CONFIGS and
# SRDD_OVERRIDES replace the config defaults below; trailing key=value arguments override everything.
#
#SBATCH --job-name=srdd-d30
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=12
#SBATCH --time=48:00:00
#SBATCH --exclusive
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out

export SRDD_CONFIGS="${SRDD_CONFIGS:-configs/model/d30.yaml}"
# 32 GPUs x 32 images = global batch 1024 (VAR's d30 batch), FSDP2 with resharding, checkpoints every 1000 steps.
# Activation checkpointing: without it the layout planner puts this step at 91.8 GiB per GPU (over 80 GB); with it
# at 7.8 GiB (`srdd-plan-layout configs/model/d30.yaml configs/text/minilm.yaml ... --world-size 32`).
export SRDD_OVERRIDES="${SRDD_OVERRIDES:-parallel.backend=fsdp train.global_batch_size=1024 train.precision=bf16 \
train.activation_checkpointing=true train.checkpoint_every=1000 logging.run_name=d30}"

# sbatch runs a copy of this file from the spool directory, so find the shared body from the repository.
source "${SRDD_REPO:-${SLURM_SUBMIT_DIR:-.}}/slurm/train.sh"
