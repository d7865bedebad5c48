#!/bin/bash
# Pretokenize a corpus as a SLURM job array (one part per task), then merge the parts in a dependent job.
#
#   slurm/pretokenize_array.sh NUM_PARTS --input '/data/laion/*.tar' --output /data/mds/laion256 \
#       configs/data/webdataset_256.yaml tokenizer.checkpoint=/ckpt/vae_ch160v4096z32.pth
#
# Each task runs `tools/pretokenize.py` on part SLURM_ARRAY_TASK_ID of NUM_PARTS (the tool reads the array
# variables itself). Re-submitting the same command skips finished parts and redoes interrupted ones.
# Extra sbatch options: SBATCH_PARTITION, SBATCH_TIMELIMIT, ... (sbatch reads them from the environment),
# or PRETOKENIZE_SBATCH_ARGS="--gres=gpu:1 --cpus-per-task=16".
set -euo pipefail

if [[ $# -lt 1 || ! "$1" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 NUM_PARTS [tools/pretokenize.py arguments ...]" >&2
    exit 2
fi
NUM_PARTS=$1
shift
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python}
LOGS=${PRETOKENIZE_LOGS:-$REPO/logs/pretokenize}
mkdir -p "$LOGS"
ARGS=$(printf '%q ' "$@")

ARRAY_JOB=$(sbatch --parsable --job-name=pretokenize --array="0-$((NUM_PARTS - 1))" \
    --output="$LOGS/%A_%a.out" ${PRETOKENIZE_SBATCH_ARGS:-} \
    --wrap="cd $REPO && $PYTHON tools/pretokenize.py $ARGS")
MERGE_JOB=$(sbatch --parsable --job-name=pretokenize-merge --dependency="afterok:$ARRAY_JOB" \
    --output="$LOGS/%j_merge.out" \
    --wrap="cd $REPO && $PYTHON tools/pretokenize.py $ARGS --num-shards $NUM_PARTS --merge")
echo "submitted array job $ARRAY_JOB ($NUM_PARTS parts) and merge job $MERGE_JOB; logs in $LOGS"
