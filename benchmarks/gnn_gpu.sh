#!/bin/bash
# GPU figures of interaction_gnn at full size (docs/benchmarks.md, "Interaction GNN"), in at
# most 9 minutes of one H100/H200 (BUDGET_S, default 540):
#   1. speed: benchmarks/gnn_speed.py (110k nodes / 1M edges, hidden 128, 8 iterations; fp32,
#      bf16, with and without checkpointing; targets: step <= 0.6 s, inference <= 0.24 s);
#   2. fine-tuning of the CPU model CKPT (experiment=gnn_2k_cpu) on full-size simulated events
#      (experiment=gnn_full: 10,000 primaries; its module map, filter and cut kept), bounded by
#      the time left before the evaluation's share;
#   3. evaluation on fresh full-size events (seed 7; DM efficiency, fake rate, TrackML score,
#      seconds per stage, peak memory) with evaluate.py.
# Writes OUT/speed_gnn.json, OUT/gnn_full_metrics.json, OUT/gnn_full.ckpt and OUT/logs/.
#
# Usage:  bash benchmarks/gnn_gpu.sh OUT CKPT
# On a GPU machine without network, carry .whl/ as for benchmarks/gpu_suite.sh.
# Plumbing check on a CPU (tests/test_gnn_pipeline.py): DEVICE=cpu N_PARTICLES=150
# TRAIN_EVENTS=10 TEST_EVENTS=2 SPEED="--nodes 500 --edges 2000 --repeats 1" with EXTRA
# (fine-tuning) overrides that fit the checkpoint's sizes, and EVAL_EXTRA (evaluation).
set -u
out=$(mkdir -p "${1:?usage: gnn_gpu.sh OUT CKPT}" && cd "$1" && pwd)
ckpt=$(realpath "${2:?usage: gnn_gpu.sh OUT CKPT}")
cd "$(dirname "$0")/.."
device=${DEVICE:-cuda}
work=${WORK_DIR:-$(mktemp -d /tmp/hepexp_gnn_gpu.XXXXXX)}
deadline=$((SECONDS + ${BUDGET_S:-540}))
eval_s=${EVAL_S:-150}   # the share of the budget kept for the evaluation
read -r -a extra <<<"${EXTRA:-}"          # overrides of the fine-tuning run
read -r -a eval_extra <<<"${EVAL_EXTRA:-}" # ... and of the evaluation
read -r -a speed <<<"${SPEED:-}"
mkdir -p "$out/logs" "$work"
log() { echo "[$(date +%T)] $*"; }
hms() { printf "00:00:%02d:%02d" $(($1 / 60)) $(($1 % 60)); } # seconds -> DD:HH:MM:SS

. benchmarks/gpu_env.sh
export HEPEXP_DATA_DIR="$work/data"
trainer=$([ "$device" = cuda ] && echo gpu || echo cpu)
accelerator=$([ "$device" = cuda ] && echo gpu || echo cpu)
status=0

log "1. speed (gnn_speed.py)"
timeout 90 python3 benchmarks/gnn_speed.py --device "$device" "${speed[@]}" \
  --json "$out/speed_gnn.json" >"$out/logs/speed_gnn.log" 2>&1 || status=1

left=$((deadline - SECONDS - eval_s))
log "2. fine-tuning on full-size events for at most ${left} s"
timeout $((left + 60)) python3 train.py experiment=gnn_full "trainer=$trainer" logger=csv \
  "model.init_from=$ckpt" "trainer.max_time=$(hms $((left > 60 ? left - 30 : 30)))" \
  ${N_PARTICLES:+data.simulation.n_particles=$N_PARTICLES} \
  ${TRAIN_EVENTS:+data.simulation.n_events=$TRAIN_EVENTS} \
  evaluate_after=false "hydra.run.dir=$work/train" "${extra[@]}" >"$out/logs/train.log" 2>&1 \
  || status=1
tuned=$work/train/checkpoints/last.ckpt
cp "$tuned" "$out/gnn_full.ckpt" || status=1

left=$((deadline - SECONDS))
log "3. evaluation on fresh full-size events (at most ${left} s)"
timeout "$left" python3 evaluate.py "ckpt_path=$tuned" "accelerator=$accelerator" \
  +data.simulation.seed=7 "+data.simulation.n_events=${TEST_EVENTS:-5}" \
  ${N_PARTICLES:++data.simulation.n_particles=$N_PARTICLES} \
  +data.splits.train=0 +data.splits.val=0 +data.splits.test=1 \
  "hydra.run.dir=$work/evaluate" "${eval_extra[@]}" >"$out/logs/evaluate.log" 2>&1 || status=1
cp "$work/evaluate/metrics.json" "$out/gnn_full_metrics.json" || status=1
python3 - "$out" <<'PY' || status=1
import json, sys
out = sys.argv[1]
m = json.load(open(f"{out}/gnn_full_metrics.json"))
keys = ("hits_per_event", "particles_per_event", "edges_graph/per_event",
        "edges_graph/efficiency_pt1", "tracks_pt1/double_majority", "tracks_pt1/fake_rate",
        "tracks_pt0.9/double_majority", "trackml_score", "seconds_per_event/total",
        "peak_memory_gb")
for k in keys:
    print(f"{k:32s} {m.get(k)}")
for name, row in json.load(open(f"{out}/speed_gnn.json"))["variants"].items():
    print(f"speed {name:26s} {row}")
PY
log "done (status $status)"
exit $status
