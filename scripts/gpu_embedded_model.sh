#!/usr/bin/env bash
# Rebuild the embedded Cosmos Policy (`embedded-model --profile gpu`) on one GPU machine that
# has torch + CUDA but none of the package's other dependencies and no network (this
# project's lent H100): the wheels it needs travel in .whl/ (made by scripts/gpu_wheels.sh) and
# EGL's loader in .gl/ (the device README's apt-get download), demonstrations render with MuJoCo's EGL backend in parallel processes,
# and the VAE and the policy train on the GPU inside a time budget.
#
#   BUDGET=480 OUT=out/gpu_embedded bash scripts/gpu_embedded_model.sh
#
# A smoke run of the same script on a CPU machine with the package's venv:
#   PYTHON=.venv/bin/python DEVICE=cpu EXTRA=--quick WHEELS=0 BUDGET=200 bash scripts/gpu_embedded_model.sh
#
# Writes to $OUT: embedded.log, and the checkpoint folder as model.tar split into 15 MB parts
# (model.tar.part-aa, ...; `cat model.tar.part-* | tar -x` restores it), refreshed every
# 60 s while the policy trains so a stopped run still returns its last save.
set -u
OUT=${OUT:-out/gpu_embedded}
BUDGET=${BUDGET:-480}
WORKERS=${WORKERS:-14}
WORK=${WORK:-/tmp/embedded_work}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}
mkdir -p "$OUT"
started=$(date +%s)
if ls .gl/*.deb >/dev/null 2>&1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
if [ "${WHEELS:-1}" = 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export MUJOCO_GL=egl PYTHONUNBUFFERED=1
export __EGL_VENDOR_LIBRARY_FILENAMES=${__EGL_VENDOR_LIBRARY_FILENAMES:-/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json}
[ -f "$__EGL_VENDOR_LIBRARY_FILENAMES" ] || unset __EGL_VENDOR_LIBRARY_FILENAMES
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
"$PYTHON" - <<'EOF' || exit 1
import time, torch
from cosmos_policy_ros.sim.aloha_sim import AlohaSim
t = time.perf_counter()
sim = AlohaSim("transfer_cube"); sim.reset(0); frame = sim.render("top", 240, 320); sim.close()
print(f"[gpu] torch {torch.__version__}, cuda {torch.cuda.is_available()}; EGL render {frame.shape} "
      f"mean {frame.mean():.1f} in {time.perf_counter() - t:.1f} s", flush=True)
assert frame.mean() > 5, "black frame: EGL rendering is not working"
EOF
snapshot() {  # the newest saved checkpoint, as parts small enough to come back
  local src=$1
  [ -f "$src/cosmos_policy.json" ] || return 0
  tar -cf /tmp/model.tar -C "$(dirname "$src")" "$(basename "$src")" 2>/dev/null || return 0
  rm -f "$OUT"/model.tar.part-*
  split -b 15M /tmp/model.tar "$OUT/model.tar.part-"
}
( while sleep 60; do snapshot "$WORK/trained"; done ) &
watcher=$!
left=$(( BUDGET - ($(date +%s) - started) ))
rm -rf /tmp/embedded_out
"$PYTHON" -m cosmos_policy_ros.cli embedded-model --profile gpu --device "$DEVICE" --workers "$WORKERS" \
  --time-budget "$left" --work "$WORK" --out /tmp/embedded_out $EXTRA 2>&1 \
  | tee "$OUT/embedded.log"
status=${PIPESTATUS[0]}
kill $watcher 2>/dev/null
if [ -f /tmp/embedded_out/cosmos_policy.json ]; then
  snapshot /tmp/embedded_out
else
  snapshot "$WORK/trained"
fi
ls -la "$OUT"
echo "[gpu] done in $(( $(date +%s) - started )) s (embedded-model exit $status)"
exit "$status"
