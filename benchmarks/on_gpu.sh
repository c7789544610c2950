#!/usr/bin/env bash
# The GPU check, one prepared script for a lent GPU machine whose python3 already has jax with its CUDA
# plugin, flax, optax, orbax, sentencepiece, sacrebleu and torch (this workplace's H200 image):
#   1. the environment (GPU, versions, jax's devices);
#   2. bench.py against the PyTorch reference on the same GPU (versus_pytorch.py, interleaved rounds,
#      the reference through benchmarks/torch_ref_cuda.py; bench.py alone if the reference fails);
#   3. the README's main job on the GPU: train.py --config quickstart, then decode.py, timed;
#   4. the GPU path's tests: the model, search, training and checkpoint tests on the GPU backend;
#   5. levers for the GPU path: nn.scan unroll 4 and bfloat16 (bench.py, plain model).
# Each part runs under a deadline (DEADLINE_S, default 560 s from the start) so a slow part costs only
# itself; everything goes to $OUT (log.txt, versus.json, versus.md, bench_*.json, quickstart.txt).
#   WHEELS=.whl S2S_BENCH_REF=$PWD/.ref OUT=/tmp/out bash benchmarks/on_gpu.sh
# WHEELS: a folder of wheels for what the image lacks (ml-collections, sentencex, tensorboardX,
# num2words, docopt, babel) and for flax 0.12.12, optax 0.2.8 and orbax-checkpoint 0.12.8 (the versions
# checked with the image's jax 0.11.2), installed into /tmp/site; benchmarks/README.md has the commands.
# The fused CPU kernel is not built: on a GPU `model.recurrence=auto` takes nn.scan.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to a folder for the results}
mkdir -p "$OUT"
start=$(date +%s)
deadline=$((start + ${DEADLINE_S:-560}))
log="$OUT/log.txt"
exec > >(tee -a "$log") 2>&1
left() { echo $((deadline - $(date +%s))); }
part() {  # part NAME SECONDS_AT_MOST COMMAND...: runs COMMAND under min(SECONDS, time left - 5)
  local name=$1 cap=$2
  shift 2
  local budget
  budget=$(($(left) - 5))
  [ "$budget" -gt "$cap" ] && budget=$cap
  if [ "$budget" -lt 20 ]; then
    echo "=== $name: skipped ($(left) s left)" >&2
    return 1
  fi
  echo "=== $name (at most $budget s) $(date -u +%T)" >&2
  local t0
  t0=$(date +%s)
  timeout "$budget" "$@"
  local rc=$?
  echo "=== $name: rc $rc in $(($(date +%s) - t0)) s" >&2
  return $rc
}
if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda} XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_FLAGS=
export S2S_JAX_TEST_CACHE=off S2S_JAX_CACHE=/tmp/s2s-cache
# bench.py on the GPU: every CPU for the host side, and the padded recurrences. With model.skip_padding each
# synthetic batch has its own time-segment profile, each one a GPU compile: on 2026-12-04 (H200, 2 pinned
# threads) bench.py had not finished its training part after 240 s; without, it compiled in 10.6 s.
GPU_ARGS="--threads 0 --no-skip-padding"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c 'import jax, jaxlib, flax, optax, orbax.checkpoint, torch, sys
print(sys.version.split()[0], "jax", jax.__version__, "jaxlib", jaxlib.__version__, "flax", flax.__version__,
      "optax", optax.__version__, "torch", torch.__version__, "cuda", torch.cuda.is_available())
print(jax.devices(), jax.default_backend())'

part versus 240 python3 benchmarks/versus_pytorch.py --rounds 2 --steps 10 --repeats 3 --bench-args="$GPU_ARGS" \
  --torch-python "$(command -v python3)" --torch-ref benchmarks/torch_ref_cuda.py --table "$OUT/versus.md" \
  >"$OUT/versus.json"
if ! cat "$OUT/versus.md" 2>/dev/null; then  # the reference failed: our figures alone
  part bench_plain 60 python3 benchmarks/bench.py --steps 10 --repeats 3 $GPU_ARGS >"$OUT/bench_plain.json"
  part bench_attention 60 python3 benchmarks/bench.py --steps 10 --repeats 3 $GPU_ARGS --attention >"$OUT/bench_attention.json"
fi

quickstart() {
  local w=/tmp/qs t0
  set -o pipefail
  rm -rf "$w"
  t0=$(date +%s)
  python3 train.py --config configs/quickstart.py --workdir "$w" | tail -5 || return 1
  echo "train: $(($(date +%s) - t0)) s"
  t0=$(date +%s)
  printf 'November 22, 2026\nseventy-seven\non Sunday, March 1, 2026\n' |
    python3 decode.py --workdir "$w" --beam_size 5 || return 1
  echo "decode: $(($(date +%s) - t0)) s"
}
part quickstart 100 bash -c "$(declare -f quickstart); quickstart" >"$OUT/quickstart.txt" 2>&1
tail -20 "$OUT/quickstart.txt"

part tests 150 python3 -m pytest -o addopts= -p no:schemathesis -p no:benchmark -p no:cacheprovider -n 8 -m "not slow" \
  --no-header -rfE --tb=short \
  tests/test_lstm.py tests/test_gru.py tests/test_model.py tests/test_search.py tests/test_search_model.py \
  tests/test_top_log_probs.py tests/test_int8.py tests/test_int8_weights.py tests/test_training.py \
  tests/test_checkpoints.py tests/test_ensemble.py tests/test_time_segments.py tests/test_shapes.py

part unroll4 60 python3 benchmarks/bench.py --steps 10 --repeats 3 $GPU_ARGS --unroll 4 >"$OUT/bench_unroll4.json"
part bfloat16 60 python3 benchmarks/bench.py --steps 10 --repeats 3 $GPU_ARGS --dtype bfloat16 >"$OUT/bench_bf16.json"
echo "=== done in $(($(date +%s) - start)) s"
