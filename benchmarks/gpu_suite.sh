#!/bin/bash
# Every GPU figure of hepexp in one prepared run (<= 9 minutes on one H100/H200):
#   1. pytest -m gpu: the CUDA tests of every model (bf16 vs fp32, padded vs packed, compiled);
#   2. a 3-minute jet_ae training on the GPU (in the background while 3-4 run), evaluated on
#      its test split by the published statistic;
#   3. DDP through trainer=ddp_gpu: all GPUs present, and two processes sharing GPU 0 (gloo),
#      200 regressor_flash steps each, with per-rank throughput;
#   4. end-to-end convert.py throughput of that regressor checkpoint (model on the GPU, HDBSCAN
#      on the CPU cores), with the stage that limits it;
#   5. speed side by side, as ratios, each alone on the GPU: regressor, interaction_gnn, om2vec,
#      vqvae, jet_ae.
# Every step is bounded in time and fails soft: its exit code is recorded and the next runs.
# Writes OUT/gpu_figures.json and OUT/gpu_figures.md (a table for docs/benchmarks.md), the
# figures of each step (OUT/*.json), its log (OUT/logs/) and versions.json.
#
# Usage:  bash benchmarks/gpu_suite.sh OUT
# On a GPU machine without network: put the wheels it lacks (hydra-core, omegaconf, optuna,
# hdbscan, awkward, uproot, ...) into .whl/ of the clone and send it along; the script installs
# them into /tmp/site when hydra & co. are missing.
# Plumbing check on a CPU (tests/test_gpu_suite.py): DEVICE=cpu bash benchmarks/gpu_suite.sh OUT
# (tiny sizes; TINY=0 for the real sizes). BUDGET_S (default 540) bounds the whole run.
set -u
out=$(mkdir -p "${1:?usage: gpu_suite.sh OUT}" && cd "$1" && pwd)
cd "$(dirname "$0")/.."
device=${DEVICE:-cuda}
tiny=${TINY:-$([ "$device" = cpu ] && echo 1 || echo 0)}
work=${WORK_DIR:-$(mktemp -d /tmp/hepexp_gpu_suite.XXXXXX)}
deadline=$((SECONDS + ${BUDGET_S:-540}))
mkdir -p "$out/logs" "$out/steps" "$work"
log() { echo "[$(date +%T)] $*"; }
hms() { printf "00:00:%02d:%02d" $(($1 / 60)) $(($1 % 60)); } # seconds -> DD:HH:MM:SS
pick() { [ "$tiny" = 1 ] && echo "$1" || echo "$2"; }          # tiny value, real value

# -- environment: the machine's own torch; wheels carried in for what it lacks ----------------
. benchmarks/gpu_env.sh
export HEPEXP_DATA_DIR=$work/data HEPEXP_LOG_DIR=$work/logs
python3 benchmarks/gpu_suite_report.py versions "$out/versions.json" | tee "$out/logs/versions.log"
n_gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")
trainer=$([ "$device" = cuda ] && echo gpu || echo cpu)

# step NAME LIMIT_S CMD...: runs CMD for at most LIMIT_S (and never past the deadline), logs
# to OUT/logs/NAME.log and records its exit code and duration in OUT/steps/NAME.json
step() {
  local name=$1 limit=$2 left start rc
  shift 2
  left=$((deadline - SECONDS))
  [ "$limit" -gt "$left" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    log "$name: skipped (the time budget is spent)"
    echo "{\"step\": \"$name\", \"rc\": null, \"seconds\": 0, \"limit_s\": $limit}" >"$out/steps/$name.json"
    return
  fi
  log "$name (at most ${limit} s)"
  start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$out/logs/$name.log" 2>&1
  rc=$?
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - start)), \"limit_s\": $limit}" >"$out/steps/$name.json"
  log "$name: exit $rc after $((SECONDS - start)) s"
  tail -n 3 "$out/logs/$name.log" | sed 's/^/    /'
}

# -- 1. CUDA tests of every model -------------------------------------------------------------
step pytest_gpu "$(pick 120 90)" python3 -m pytest -m gpu -q -p no:cacheprovider \
  --junitxml="$out/pytest_gpu.xml" tests

# -- 2. jet_ae, 3 minutes of training, in the background --------------------------------------
jet_seconds=$(pick 15 180)
jet_data=()
[ "$tiny" = 1 ] && jet_data=(data.simulation.n_train=3000 data.simulation.n_val=600 data.simulation.n_test=600)
step jet_ae_train $((jet_seconds + $(pick 90 120))) python3 train.py model=jet_ae data=atlas_jets \
  "trainer=$trainer" logger=csv "trainer.max_time=$(hms "$jet_seconds")" trainer.max_epochs=100000 \
  "${jet_data[@]}" "hydra.run.dir=$work/runs/jet_ae" &
jet_pid=$!

# -- 3. DDP: every GPU present, then two processes sharing GPU 0 ------------------------------
regressor=(model=regressor_flash data=trackml logger=csv evaluate_after=false model.scan.enabled=false
  "trainer.max_steps=$(pick 6 200)" trainer.max_epochs=1000 +trainer.limit_val_batches=4
  "+callbacks.throughput={_target_: hepexp.callbacks.StepThroughput, out_dir: \${paths.output_dir}, warmup_steps: $(pick 2 30), batch_size: \${data.batch_size}}")
[ "$tiny" = 1 ] && regressor+=(data.simulation.n_events=3 data.simulation.n_particles=300
  "data.splits={train:1,val:1,test:1}" data.subevents_per_event=4)
if [ "$device" = cuda ]; then
  ddp=(trainer=ddp_gpu "trainer.devices=$n_gpus")
  shared_ddp=(trainer=ddp_gpu trainer.devices=1 trainer.num_nodes=2)
else
  ddp=(trainer=ddp_sim trainer.devices=1)
  shared_ddp=(trainer=ddp_sim trainer.devices=1 trainer.num_nodes=2)
fi
step ddp_all_gpus "$(pick 150 120)" python3 train.py "${regressor[@]}" "${ddp[@]}" \
  "hydra.run.dir=$work/runs/ddp_all"
# two ranks on one device: each process believes it is alone on its node (LOCAL_RANK 0), so
# both use GPU 0; NCCL refuses two ranks on one GPU, gloo does not
shared_rank() {
  MASTER_ADDR=127.0.0.1 MASTER_PORT=29517 WORLD_SIZE=2 NODE_RANK=$1 LOCAL_RANK=0 HEPEXP_RUN_ID=ddp_shared \
    python3 train.py "${regressor[@]}" "${shared_ddp[@]}" \
    "trainer.strategy={_target_: pytorch_lightning.strategies.DDPStrategy, process_group_backend: gloo}" \
    "hydra.run.dir=$work/runs/ddp_shared" >"$out/logs/ddp_shared.rank$1.log" 2>&1
}
ddp_shared() {
  shared_rank 1 &
  shared_rank 0
  local rc=$?
  wait $! || rc=$?
  return $rc
}
shared_cmd="$(declare -p regressor shared_ddp work out); $(declare -f shared_rank ddp_shared); ddp_shared"
step ddp_shared_gpu "$(pick 150 100)" bash -c "$shared_cmd"
cp "$work"/runs/ddp_all/throughput.rank*.json "$out/steps/" 2>/dev/null
for f in "$work"/runs/ddp_shared/throughput.rank*.json; do
  [ -e "$f" ] && cp "$f" "$out/steps/shared.$(basename "$f")"
done

# -- 4. end-to-end convert.py of the regressor ------------------------------------------------
ckpt=$work/runs/ddp_all/checkpoints/last.ckpt
step convert "$(pick 120 90)" python3 benchmarks/regressor_convert_speed.py --ckpt "$ckpt" \
  --events "$(pick 20 1000)" --device "$device" --work "$work/convert" --json "$out/convert.json"

wait "$jet_pid"
ls "$work"/runs/jet_ae/metrics.json >/dev/null 2>&1 && cp "$work/runs/jet_ae/metrics.json" "$out/jet_ae_metrics.json"

# -- 5. speed, each benchmark alone on the device ---------------------------------------------
step speed_regressor "$(pick 120 75)" python3 benchmarks/regressor_speed.py --device "$device" \
  --preset default --batch "$(pick 8 64)" --events "$(pick 32 2048)" --warmup "$(pick 1 2)" \
  --json "$out/speed_regressor.json"
if [ "$tiny" = 1 ]; then gnn_size=(--nodes 2000 --edges 10000 --hidden 16 --iterations 2 --repeats 1); else gnn_size=(); fi
step speed_gnn "$(pick 90 60)" python3 benchmarks/gnn_speed.py --device "$device" "${gnn_size[@]}" \
  --json "$out/speed_gnn.json"
step speed_om2vec "$(pick 120 60)" python3 benchmarks/om2vec_throughput.py --device "$device" \
  --events "$(pick 20 300)" --batch-size "$(pick 4 256)" --steps "$(pick 1 5)" \
  --json "$out/speed_om2vec.json"
step speed_vqvae "$(pick 120 45)" python3 benchmarks/vqvae_throughput.py --device "$device" \
  --seconds "$(pick 0.3 3)" --out "$out/speed_vqvae.json"
step speed_jet_ae "$(pick 90 30)" python3 benchmarks/jet_ae_throughput.py --device "$device" \
  --seconds "$(pick 0.3 3)" --out "$out/speed_jet_ae.json"

# -- the figures ------------------------------------------------------------------------------
python3 benchmarks/gpu_suite_report.py report "$out"
log "done: $out/gpu_figures.json, $out/gpu_figures.md"
