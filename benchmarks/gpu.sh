#!/usr/bin/env bash
# The parity self-test and the benchmark on a GPU machine, JAX and PyTorch.
#
# Usage, from the repository root: `bash benchmarks/gpu.sh [OUT_DIR]`
# (default benchmarks/results). Needs Keras and each backend's CUDA build;
# wheels found in `.whl/` are installed first into /tmp/site, for machines
# that cannot reach a package index. Each step runs in its own process
# under a time limit, and its output is kept even when a later step fails:
#   check.log                      `python -m keras_gru_plus check`, each backend,
#                                  with TF32 and with `--full-precision`
#   bench_<backend>_gpu.json/.png  `python -m keras_gru_plus bench`
#   gpu.log                        the GPU, the versions, and the bench's progress
# Then `python benchmarks/report.py --results OUT_DIR --readme README.md`
# merges the GPU tables into the README's GPU section. The exit status is
# the number of steps that failed: a benchmark, or a check with TF32 off
# (with TF32 on, a check over 1e-5 is expected and only reported).
# BENCH_ARGS passes options to the benchmark, quoted as in the shell, e.g.
# BENCH_ARGS='--configs base "dropout 0.1" --no-memory'.
set -u
out=${1:-benchmarks/results}
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
# JAX would otherwise take 75% of the GPU at start; the memory figures
# read the allocator's own counters either way.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
if compgen -G ".whl/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
eval "bench_args=(${BENCH_ARGS:-})"
log="$out/gpu.log"
: >"$out/check.log"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  KERAS_BACKEND=jax "$python" -c "import keras, jax, torch; print('keras', \
keras.__version__, 'jax', jax.__version__, jax.devices(), 'torch', \
torch.__version__, torch.cuda.get_device_name(0))"
} >"$log" 2>&1

step() {  # step SECONDS LOGFILE command...
  local limit=$1 file=$2
  shift 2
  echo "== $* (limit ${limit}s)" >>"$file"
  local start=$SECONDS
  timeout "$limit" "$@" >>"$file" 2>&1
  local rc=$?
  echo "== exit $rc after $((SECONDS - start)) s" >>"$file"
  return $rc
}

failed=0
step 60 "$out/check.log" env KERAS_BACKEND=torch \
  "$python" -m keras_gru_plus check || true
step 60 "$out/check.log" env KERAS_BACKEND=torch \
  "$python" -m keras_gru_plus check --full-precision || failed=$((failed + 1))
step "${BENCH_LIMIT:-170}" "$log" env KERAS_BACKEND=torch \
  "$python" -m keras_gru_plus bench --out "$out" "${bench_args[@]}" \
  || failed=$((failed + 1))
step "${BENCH_LIMIT:-170}" "$log" env KERAS_BACKEND=jax \
  "$python" -m keras_gru_plus bench --out "$out" "${bench_args[@]}" \
  || failed=$((failed + 1))
step 90 "$out/check.log" env KERAS_BACKEND=jax \
  "$python" -m keras_gru_plus check || true
step 90 "$out/check.log" env KERAS_BACKEND=jax \
  "$python" -m keras_gru_plus check --full-precision || failed=$((failed + 1))
grep -h "configurations,\|== exit" "$out/check.log"
grep -h "^| \|^torch\|^jax\|== exit\|Training memory" "$log"
echo "$failed step(s) failed"
exit "$failed"
