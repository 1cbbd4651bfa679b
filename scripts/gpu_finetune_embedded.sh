#!/usr/bin/env bash
# The GPU stage of the shipped embedded policy (session 9, docs/training.md "Fine-tuned on a
# GPU, averaged"): the CPU recipe's checkpoint (`make embedded-model`) fine-tuned on packed
# demonstrations in runs side by side, one run continued at a low learning rate, and the
# transformer weights of the four results averaged (`cosmos-policy-ros average-checkpoints`).
#
# Needs in .gpu/ (carried) what scripts/gpu_train_packed.sh needs: whl/ and the packs
# (`pack-dataset --cropped-only` of 200 demonstrations, seeds 0-199, and of the recipe's 60).
# Run from the repository root on the GPU host:
#     BASE=cosmos_policy_ros/checkpoints/aloha_sim_transfer_cube OUT=/tmp/out bash scripts/gpu_finetune_embedded.sh
# OUT gets soup.tar.part_* (the averaged checkpoint, VAE included) and logs.txt. Stage budgets
# (seconds of training per run): STAGE1 (E, F, G from BASE) and STAGE2 (E2 from E, H from BASE);
# session 9 ran them as two calls of 480 s and 190 s on one H100 (8-9 steps/s at batch 256).
set -eu
BASE=${BASE:?set BASE to the CPU recipe checkpoint folder}
OUT=${OUT:?set OUT to the folder that comes back}
WORK=${WORK:-/tmp/gpu_finetune}
STAGE1=${STAGE1:-480}
STAGE2=${STAGE2:-190}
PACK200=${PACK200:-pack200c.npz}
PACK60=${PACK60:-pack60c.npz}
started=$(date +%s)
mkdir -p "$WORK" "$OUT"
here=$(cd "$(dirname "$0")" && pwd)
: >"$OUT/logs.txt"

stage() {  # stage NAME BUDGET WARMUP VARIANTS: runs side by side, checkpoints in $WORK/NAME/
    local runs="$WORK/$1" parts="$WORK/$1_parts"
    BUDGET=$2 WARMUP=$3 WORK="$runs" OUT="$parts" VARIANTS=$4 bash "$here/gpu_train_packed.sh"
    cat "$parts/logs.txt" >>"$OUT/logs.txt"
}
stage stage1 "$STAGE1" 100 "E:$BASE:$PACK200:1e-4 F:$BASE:$PACK200:3e-5 G:$BASE:$PACK60:1e-4"
test -f "$WORK/stage1/E/cosmos_policy.json" || { echo "[gpu] run E left no checkpoint" >&2; exit 1; }
stage stage2 "$STAGE2" 50 "E2:$WORK/stage1/E:$PACK200:3e-5 H:$BASE:$PACK200:2e-4"

export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}  # where gpu_train_packed.sh put diffusers
python3 -m cosmos_policy_ros.cli average-checkpoints "$WORK/stage2/E2" "$WORK/stage1/F" "$WORK/stage1/G" \
    "$WORK/stage2/H" --out "$WORK/soup" 2>&1 | grep -v -i accelerate | tee -a "$OUT/logs.txt"
tar -C "$WORK" -cf - soup | split -b 15M - "$OUT/soup.tar.part_"
echo "[gpu] fine-tune and average done in $(($(date +%s) - started)) s"
