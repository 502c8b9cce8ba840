# Sourced by the GPU scripts from the repository root: the machine's own torch, the wheels
# carried in .whl/ for what it lacks (hydra-core, omegaconf, optuna, hdbscan, awkward, uproot,
# ...; installed into /tmp/site), the repository on PYTHONPATH, unbuffered output, W&B off.
if [ -d .whl ] && ! python3 -c "import hydra, optuna, hdbscan, awkward, uproot" 2>/dev/null; then
  echo "[$(date +%T)] installing the carried wheels into /tmp/site"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WANDB_MODE=disabled
