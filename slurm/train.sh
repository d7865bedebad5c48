#!/bin/bash
# Generic SLURM launch of tools/train.py: one task per GPU started by srun (ranks from SLURM_PROCID /
# SLURM_NTASKS / SLURM_LOCALID, read by srdd_scale.utils.dist), requeued after preemption or time-out.
#
#   sbatch slurm/train.sh CONFIG.yaml ... key=value ...            # any size; see train_d30.sh for d30 defaults
#   sbatch --nodes=2 --time=2:00:00 slurm/train.sh configs/model/d16.yaml train.total_steps=20000
#
# Every #SBATCH value below is a default: sbatch options on the command line, or SBATCH_* environment
# variables (SBATCH_TIMELIMIT, SBATCH_PARTITION, ...), override it. Script settings come from the environment:
#   SRDD_REPO       repository to run from                  (default: the submit directory)
#   SRDD_PYTHON     python with srdd_scale installed          (default: python on the submitter's PATH)
#   SRDD_CONFIGS    YAML files placed before the arguments   (default: none; train_d30.sh sets d30's)
#   SRDD_OVERRIDES  key=value defaults placed before the arguments (arguments win: the trainer applies in order)
#
# Preemption loop: SLURM sends USR1 to this batch shell 300 s before the time limit (--signal=B:USR1@300);
# the trap forwards it to srun, the trainer saves a checkpoint and exits with 124, and this script requeues the
# job. The run directory is keyed by the config hash, so the requeued job resumes from that checkpoint.
#
#SBATCH --job-name=srdd-train
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -uo pipefail

REQUEUE_EXIT_CODE=124  # srdd_scale.train.trainer.REQUEUE_EXIT_CODE: stopped by a signal after saving

cd "${SRDD_REPO:-${SLURM_SUBMIT_DIR:-.}}" || exit 1
PYTHON="${SRDD_PYTHON:-python}"
read -r -a CONFIGS <<<"${SRDD_CONFIGS:-}"
read -r -a OVERRIDES <<<"${SRDD_OVERRIDES:-}"
TRAIN_ARGS=("${CONFIGS[@]}" "${OVERRIDES[@]}" "$@")

# Rendezvous: rank 0 lives on the first node of the allocation; the port is derived from the job id so two
# jobs sharing a node do not collide.
MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
MASTER_PORT="$((20000 + SLURM_JOB_ID % 20000))"
export MASTER_ADDR MASTER_PORT
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"

# NCCL on InfiniBand/RoCE clusters (uncomment what your fabric needs):
# export NCCL_DEBUG=WARN                  # INFO to see the chosen transport and rings
# export NCCL_IB_HCA=mlx5                 # restrict to these HCAs
# export NCCL_SOCKET_IFNAME=ib0           # interface for the bootstrap / socket transport
# export NCCL_ASYNC_ERROR_HANDLING=1      # turn hangs after a rank failure into errors (torch < 2.2 name)
# export TORCH_NCCL_ASYNC_ERROR_HANDLING=1
# export NCCL_NVLS_ENABLE=0               # if NVLink SHARP misbehaves on your driver

echo "[train.sh] job ${SLURM_JOB_ID} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST}:" \
  "${SLURM_NNODES} node(s) x ${SLURM_NTASKS_PER_NODE:-?} task(s), master ${MASTER_ADDR}:${MASTER_PORT}"
echo "[train.sh] $PYTHON tools/train.py ${TRAIN_ARGS[*]}"
# Resolved config and run directory, printed before the job spends its allocation on start-up (one python
# start: importing the configs pulls in torch, which is slow on busy nodes).
"$PYTHON" - "${TRAIN_ARGS[@]}" <<'EOF' || exit 2
import sys

import yaml

from srdd_scale.config import ConfigError, to_dict
from srdd_scale.run_config import RunConfig
from srdd_scale.utils.rundir import run_dir_for

args = sys.argv[1:]
try:
    cfg = RunConfig.load([a for a in args if "=" not in a], [a for a in args if "=" in a])
except ConfigError as err:
    sys.exit(f"[train.sh] config error: {err}")
print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
print(f"[train.sh] run dir: {run_dir_for(cfg, cfg.logging.output_dir, cfg.logging.run_name)}")
EOF

srun_pid=""
forward() {  # pass the stop signal on to every task; the trainer checkpoints and exits with 124
  echo "[train.sh] caught $1: forwarding to the job step"
  [[ -n "$srun_pid" ]] && kill -s "$1" "$srun_pid" 2>/dev/null
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM

# Tasks end at slightly different times after a stop signal (rank 0 finishes writing last); --kill-on-bad-exit
# would cut the others short, so instead srun ends stragglers 120 s after the first task exits (also after a crash).
srun --kill-on-bad-exit=0 --wait=120 --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" "$PYTHON" tools/train.py "${TRAIN_ARGS[@]}" &
srun_pid=$!
# `wait` returns early when a trapped signal arrives; wait again until srun itself has ended.
wait "$srun_pid"
status=$?
while kill -0 "$srun_pid" 2>/dev/null; do
  wait "$srun_pid"
  status=$?
done

if [[ "$status" -eq "$REQUEUE_EXIT_CODE" ]]; then
  echo "[train.sh] trainer saved and asked to be requeued: scontrol requeue ${SLURM_JOB_ID}"
  scontrol requeue "$SLURM_JOB_ID"
  exit 0
fi
echo "[train.sh] trainer exited with status $status"
exit "$status"
