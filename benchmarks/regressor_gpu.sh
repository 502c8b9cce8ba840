#!/bin/bash
# GPU figures of regressor_flash in one prepared run (docs/benchmarks.md, "regressor_flash"):
#   1. speed: packed/padded batches vs one event per step (benchmarks/regressor_speed.py);
#   2. time-budgeted training on simulated TML:10-50 (our default model and a larger one) and
#      TML:50-100, three runs sharing the GPU, each ending with the validation scan and the
#      test TrackML score (train.py's evaluate_after).
# Usage: bash benchmarks/regressor_gpu.sh OUT_DIR [TRAIN_MINUTES]
# Writes OUT_DIR/speed_*.json, OUT_DIR/<run>.ckpt (best checkpoint) and OUT_DIR/logs.tgz.
# A run that fails (e.g. no compiled FlexAttention) is retried in the padded layout with the
# time left. A plumbing check on a CPU: DEVICE=cpu N_EVENTS=10 SPEED_EVENTS=64 bash ... OUT 1
set -u
out=${1:?usage: regressor_gpu.sh OUT_DIR [TRAIN_MINUTES]}
minutes=${2:-4}
work=${WORK_DIR:-/tmp/hepexp_gpu}
device=${DEVICE:-cuda}
n_events=${N_EVENTS:-200}
mkdir -p "$out" "$work/logs"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
log() { echo "[$(date +%T)] $*"; }
hms() { printf "00:00:%02d:%02d" $(($1 / 60)) $(($1 % 60)); }  # seconds -> DD:HH:MM:SS
. benchmarks/gpu_env.sh
export HEPEXP_DATA_DIR="$work/data"

log "speed benchmark"
for preset in default tml10_50; do
  timeout 120 python3 benchmarks/regressor_speed.py --device "$device" --preset "$preset" \
    --batch 64 --events "${SPEED_EVENTS:-512}" --warmup 2 --json "$out/speed_$preset.json" 2>&1 | tee "$work/logs/speed_$preset.log"
done

# three trainings share the GPU (experiment=regressor_*_gpu, stopped by the time left until the
# deadline); the two TML:10-50 runs share one data cache, built once
trainer=$([ "$device" = cuda ] && echo gpu || echo cpu)
common=("trainer=$trainer" logger=csv)
deadline=$((SECONDS + minutes * 60))
train() {  # name, then overrides
  local name=$1 left status
  shift
  python3 train.py "${common[@]}" "trainer.max_time=$(hms $((deadline - SECONDS)))" \
    "hydra.run.dir=$work/runs/$name" "$@" >"$work/logs/$name.log" 2>&1
  status=$?
  left=$((deadline - SECONDS))
  if [ $status -ne 0 ] && [ $left -gt 60 ]; then
    log "$name failed (exit $status); again in the padded layout for ${left} s"
    python3 train.py "${common[@]}" "trainer.max_time=$(hms $left)" \
      "hydra.run.dir=$work/runs/${name}_padded" model.attention.layout=padded "$@" \
      >"$work/logs/${name}_padded.log" 2>&1
    status=$?
    name=${name}_padded
  fi
  log "$name finished (exit $status)"
  local ckpt=$work/runs/$name/checkpoints
  cp "$ckpt/best.ckpt" "$out/$name.ckpt" 2>/dev/null || cp "$ckpt/last.ckpt" "$out/$name.ckpt"
}
tml10_50=(experiment=regressor_tml10_50_gpu "data.simulation.n_events=$n_events")
log "training"
train tml10_50 "${tml10_50[@]}" &
train tml50_100 experiment=regressor_tml50_100_gpu "data.simulation.n_events=$n_events" \
  "paths.data_dir=$work/data_b" &
# the larger TML:10-50 model starts once the shared cache is complete
for _ in $(seq 150); do
  compgen -G "$work/data/trackml/cache/*/test/done" >/dev/null && break
  sleep 2
done
train tml10_50_large "${tml10_50[@]}" model.dim=128 model.layers=6 model.heads=8 \
  model.ffn=256 model.optimizer.lr=1e-3 &
wait
for f in "$work"/logs/tml*.log; do
  echo "== $f"
  grep -h "TrackML score\|trackml_score\|Time limit\|Error\|error" "$f" | tail -5
done
tar -czf "$out/logs.tgz" -C "$work" logs $(cd "$work" && ls -d runs/*/*.json runs/*/*.csv \
  runs/*/*.png runs/*/*.yaml runs/*/csv runs/*/.hydra runs/*/evaluation 2>/dev/null)
log "done"
