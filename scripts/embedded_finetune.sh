#!/usr/bin/env bash
# `make embedded-model-finetune`: the GPU stage of the shipped embedded policy, after `make
# embedded-model` (docs/training.md, "Fine-tuned on a GPU, averaged"). Here: 140 more scripted
# demonstrations (seeds 60-199), the two packs and the diffusers wheels into .gpu/. On a machine
# with CUDA it then runs scripts/gpu_finetune_embedded.sh and installs the averaged transformer
# into the checkpoint; without one it says what to carry to a GPU host and stops (exit 3).
set -euo pipefail
VENV=${VENV:-.venv}
CLI="$VENV/bin/cosmos-policy-ros"
W=${WORK:-out/embedded_model}
CKPT=${CKPT:-cosmos_policy_ros/checkpoints/aloha_sim_transfer_cube}
TASK="transfer the cube"
for need in "$W/demos/dataset_info.json" "$W/initial/cosmos_policy.json" "$CKPT/cosmos_policy.json"; do
    [ -f "$need" ] || { echo "[finetune] $need missing: run make embedded-model first" >&2; exit 2; }
done
mkdir -p .gpu/whl
if [ ! -f "$W/demos_more/dataset_info.json" ]; then
    rm -rf "$W/demos_more"
    "$CLI" demos --out "$W/demos_more" --episodes 140 --seed 60 --cameras cam_high --workers 2
fi
[ -f .gpu/pack200c.npz ] || "$CLI" pack-dataset --checkpoint "$W/initial" --data "$W/demos" "$W/demos_more" \
    --task "$TASK" --cropped-only --out .gpu/pack200c.npz
[ -f .gpu/pack60c.npz ] || "$CLI" pack-dataset --checkpoint "$W/initial" --data "$W/demos" \
    --task "$TASK" --cropped-only --out .gpu/pack60c.npz
mkdir -p .gpu/vae .gpu/stats
cp -r "$W/initial/vae/." .gpu/vae/
cp "$W/initial/dataset_statistics.json" .gpu/stats/
ls .gpu/whl/diffusers-*.whl >/dev/null 2>&1 || "$VENV/bin/python" -m pip download -q --no-deps -d .gpu/whl \
    "diffusers==$("$VENV/bin/python" -c 'import diffusers; print(diffusers.__version__)')" importlib_metadata zipp
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    cat >&2 <<MSG
[finetune] no CUDA device here. .gpu/ holds what a GPU host needs; carry the repository with .gpu/ and run there
    BASE=$CKPT OUT=/tmp/out bash scripts/gpu_finetune_embedded.sh
then unpack /tmp/out/soup.tar.part_* (cat them | tar -x) and copy soup/transformer/ into $CKPT/transformer/.
MSG
    exit 3
fi
out=$(mktemp -d)
PATH="$VENV/bin:$PATH" BASE="$CKPT" OUT="$out" bash scripts/gpu_finetune_embedded.sh
cat "$out"/soup.tar.part_* | tar -x -C "$out"
cp "$out/soup/transformer/"* "$CKPT/transformer/"
echo "[finetune] installed the averaged transformer into $CKPT ($out/logs.txt has the runs)"
