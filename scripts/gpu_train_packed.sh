#!/usr/bin/env bash
# Train embedded-policy variants side by side on one GPU from packed datasets
# (`cosmos-policy-ros pack-dataset`), for a lent GPU machine with no sim and no network.
# docs/training.md, "Training on a GPU host from packed data", says what ran and what came of it.
#
# Needs in GPU_DIR (default .gpu/, carried): whl/ (diffusers, importlib_metadata, zipp wheels; skipped when
# diffusers imports), the packs named in VARIANTS and, for a fresh start (small or medium),
# vae/ (the embedded VAE) and stats/dataset_statistics.json. Run from the repository root:
#     BUDGET=450 OUT=/tmp/out bash scripts/gpu_train_packed.sh
# Each variant: name:start:pack[:lr], where start is a transformer size for a fresh model (small:
# 6 layers x 4 heads x 32, the CPU recipe's; medium: 8 x 6 x 32; trained with the pack's
# statistics) or a checkpoint folder to fine-tune (keeping its statistics), and lr defaults to
# LR (3e-4). Every run gets BUDGET seconds (train --time-budget); a watchdog
# stops what is still running BUDGET + 50 s after the runs start. Checkpoints (without the VAE, which is .gpu/vae)
# come back as tar parts of at most 15 MB in OUT, with all logs in OUT/logs.txt.
set -u
BUDGET=${BUDGET:-450}
HARD=$((BUDGET + 50))
OUT=${OUT:?set OUT to the folder that comes back}
WORK=${WORK:-/tmp/gpu_train}
GPU_DIR=${GPU_DIR:-.gpu}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-256}
LR=${LR:-3e-4}
WARMUP=${WARMUP:-150}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
VARIANTS=${VARIANTS:-"A:small:pack60c.npz B:small:pack200c.npz C:medium:pack200c.npz"}
started=$(date +%s)

if ! python3 -c "import diffusers" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$GPU_DIR"/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
mkdir -p "$WORK" "$OUT"
nvidia-smi -L 2>/dev/null || true

# Fresh start checkpoints only for the sizes a variant asks for (a folder start needs none).
sizes=""
for spec in $VARIANTS; do
    IFS=: read -r _ start _ _ <<<"$spec"
    [ -d "$start" ] || sizes="$sizes $start"
done
python3 - "$WORK" "$GPU_DIR" $sizes <<'EOF' || exit 1
import sys, time
from dataclasses import replace
from pathlib import Path
import torch, diffusers
from cosmos_policy_ros.learning.embedded_model import EmbeddedRecipe, initial_checkpoint
print(f"torch {torch.__version__} (cuda {torch.cuda.is_available()}), diffusers {diffusers.__version__}", flush=True)
work, gpu_dir, wanted = Path(sys.argv[1]), Path(sys.argv[2]), set(sys.argv[3:])
sizes = {"small": EmbeddedRecipe(), "medium": replace(EmbeddedRecipe(), num_layers=8, num_attention_heads=6)}
unknown = wanted - set(sizes)
if unknown:
    sys.exit(f"[gpu] unknown start {sorted(unknown)}: a checkpoint folder or one of {sorted(sizes)}")
for name in sorted(wanted):
    initial_checkpoint(gpu_dir / "vae", gpu_dir / "stats", sizes[name]).save_pretrained(work / f"{name}_initial")
print(f"initial checkpoints written: {sorted(wanted) or 'none needed'}", flush=True)
EOF

names=()
launched=$(date +%s)  # the hard deadline counts from here: set-up must not eat a run's budget
for spec in $VARIANTS; do
    IFS=: read -r name start pack lr <<<"$spec"
    names+=("$name")
    if [ -d "$start" ]; then init=$start stats=checkpoint; else init=$WORK/${start}_initial stats=dataset; fi
    python3 -m cosmos_policy_ros.cli train --checkpoint "$init" --packed "$GPU_DIR/$pack" \
        --out "$WORK/$name" --steps 200000 --batch-size "$BATCH" --lr "${lr:-$LR}" --lr-schedule official \
        --warmup-steps "$WARMUP" --no-augment --stats "$stats" --task "transfer the cube" --seed 0 --device "$DEVICE" --save-every 250 \
        --log-every 100 --time-budget "$BUDGET" >"$WORK/$name.log" 2>&1 &
    echo $! >"$WORK/$name.pid"
done

while sleep 5; do
    alive=0
    for name in "${names[@]}"; do kill -0 "$(cat "$WORK/$name.pid")" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    if [ $(($(date +%s) - launched)) -ge "$HARD" ]; then
        echo "[gpu] hard deadline ${HARD} s: stopping the runs still going"
        for name in "${names[@]}"; do kill "$(cat "$WORK/$name.pid")" 2>/dev/null; done
        sleep 5
        break
    fi
done

for name in "${names[@]}"; do
    echo "== $name"; grep -E "fit the|latent cache: .*/(.*) samples encoded|error" "$WORK/$name.log" | tail -3
    tail -2 "$WORK/$name.log"
    { echo "===== $name"; cat "$WORK/$name.log"; } >>"$OUT/logs.txt"
    tar -C "$WORK" -cf - --exclude=vae "$name" | split -b 15M - "$OUT/$name.tar.part_"
done
echo "[gpu] done in $(($(date +%s) - started)) s"
