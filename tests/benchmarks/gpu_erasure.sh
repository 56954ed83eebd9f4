#!/usr/bin/env bash
# The --gpu size end to end on one GPU, as one prepared run for the device tool's machine (an H200 here):
# train the 114M-parameter model on the demo corpus (cached by recipe), print how much it memorised,
# unlearn one subject with the default method, then verify the result with the default policy (its
# stronger retry left out: --retries 0). Sized to end inside 8 minutes of device time; the log and the
# verification report are written under OUT_DIR as they come, so a run stopped at its limit still
# returns what it reached.
#
#   tests/benchmarks/gpu_erasure.sh [OUT_DIR]                     # on the GPU machine (python3 holds torch)
#   GPU_BENCH_TRIAL=1 tests/benchmarks/gpu_erasure.sh /tmp/trial  # the same path, tiny, on a CPU
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-${OUT:-/tmp/gpu-erasure}}
mkdir -p "$out"
py=${PYTHON:-python3}
keep=$(mktemp -d /tmp/gpu-erasure-keep.XXXXXX)
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# the engine's dtype "auto" holds this model in fp32 with TF32 products (modeling.resolve_dtype; stop 41's
# measured run named float32 in --spec, as auto then picked bf16)
args=(--size gpu --methods counterfactual --sections engine,verify --retries 0 --keep "$keep"
      --cache-dir /tmp/gpu-erasure-cache)
if [ -n "${GPU_BENCH_TRIAL:-}" ]; then
    args+=(--device cpu --threads 2 --config '{"n_layer": 2, "n_head": 2, "n_embd": 64, "steps": 30, "n_people": 40, "n_holdout": 20}')
else
    args+=(--device cuda --threads 8)
fi
{
    date -u +"start %FT%TZ"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$py" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__)'
} 2>&1 | tee "$out/gpu_erasure.log"
started=$(date +%s)
timeout "${GPU_BENCH_SECONDS:-480}" "$py" -m tests.benchmarks.bench_erasure "${args[@]}" 2>&1 \
    | grep --line-buffered -v -e "Loading weights" -e "Writing model shards" | tee -a "$out/gpu_erasure.log"
rc=${PIPESTATUS[0]}
echo "bench exit $rc after $(( $(date +%s) - started )) s" | tee -a "$out/gpu_erasure.log"
for f in "$keep"/*/bench_report.json "$keep"/*/unlearning_manifest.json; do
    [ -f "$f" ] && cp "$f" "$out/$(basename "$f")"
done
rm -rf "$keep"
exit "$rc"
