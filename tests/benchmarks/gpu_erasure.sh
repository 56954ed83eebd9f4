#!/usr/bin/env bash
# The --gpu size end to end on one GPU, as one prepared run for the device tool's machine (an H200 here):
# train the 114M-parameter model on the demo corpus (cached by recipe), print how much it memorised,
# then, by MODE:
#   verify  (default) unlearn one subject with the default method and verify the result with the default
#           policy (its stronger retry left out: --retries 0);
#   scaling unlearn 1, then 100, then 10 subjects in one job each, the engine alone (no verification),
#           each job stopped at GPU_SCALE_SECONDS (default 300): the batching target is 100 subjects in
#           at most 5x the time of one. GPU_SCALE_SPEC (JSON spec fields, e.g. '{"max_steps": 30}' for
#           the cost of 30 steps and 3 checks at each size, or '{"forget_micro_batch": 64}' in place of
#           the device's own size, engine.forget_micro_batch, 128 records a pass here) goes to every job;
#           each job prints its checks as they come, so one stopped at its limit still shows its pace.
# Sized to end inside 8 minutes of device time; the log and the reports are written under OUT_DIR as
# they come, so a run stopped at its limit still returns what it reached.
#
#   tests/benchmarks/gpu_erasure.sh [OUT_DIR] [MODE]                      # on the GPU machine (python3 holds torch)
#   GPU_BENCH_TRIAL=1 tests/benchmarks/gpu_erasure.sh /tmp/trial [MODE]   # the same path, tiny, on a CPU
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-${OUT:-/tmp/gpu-erasure}}
mode=${2:-verify}
mkdir -p "$out"
py=${PYTHON:-python3}
keep=$(mktemp -d /tmp/gpu-erasure-keep.XXXXXX)
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# the engine's dtype "auto" holds this model in fp32 with TF32 products (modeling.resolve_dtype; stop 41's
# measured run named float32 in --spec, as auto then picked bf16)
args=(--size gpu --methods counterfactual --cache-dir /tmp/gpu-erasure-cache)
scale_subjects=(1 100 10)
if [ -n "${GPU_BENCH_TRIAL:-}" ]; then
    args+=(--device cpu --threads 2 --config '{"n_layer": 2, "n_head": 2, "n_embd": 64, "steps": 30, "n_people": 40, "n_holdout": 20}')
    scale_subjects=(1 8 3)
    args+=(--spec '{"max_steps": 20}')  # the tiny model memorises nothing: its runs would go to max_steps
else
    args+=(--device cuda --threads 8)
fi
log="$out/gpu_erasure.log"
{
    date -u +"start %FT%TZ, mode $mode"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$py" -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "transformers", transformers.__version__)'
} 2>&1 | tee "$log"
bench() {  # bench SECONDS ARGS...: one bench_erasure process under its own time limit, into the log
    local limit=$1
    shift
    timeout "$limit" "$py" -m tests.benchmarks.bench_erasure "${args[@]}" "$@" 2>&1 \
        | grep --line-buffered -v -e "Loading weights" -e "Writing model shards" | tee -a "$log"
    return "${PIPESTATUS[0]}"
}
started=$(date +%s)
case "$mode" in
    verify)
        bench "${GPU_BENCH_SECONDS:-480}" --sections engine,verify --retries 0 --keep "$keep"
        rc=$?
        ;;
    scaling)
        # the model first (trained and cached, its memorisation printed), then each job size alone
        bench "${GPU_BENCH_SECONDS:-480}" --sections "" --memorisation
        rc=$?
        for n in "${scale_subjects[@]}"; do
            [ "$rc" -eq 0 ] || break
            bench "${GPU_SCALE_SECONDS:-300}" --sections engine --subjects "$n" --no-memorisation \
                ${GPU_SCALE_SPEC:+--spec "$GPU_SCALE_SPEC"}
            status=$?
            [ "$status" -eq 124 ] && echo "(the job of $n subject(s) was stopped at its limit, ${GPU_SCALE_SECONDS:-300} s)" | tee -a "$log"
            [ "$status" -eq 124 ] || rc=$status
        done
        ;;
    *)
        echo "unknown mode $mode (verify or scaling)" >&2
        exit 2
        ;;
esac
echo "bench exit $rc after $(( $(date +%s) - started )) s" | tee -a "$log"
for f in "$keep"/*/bench_report.json "$keep"/*/unlearning_manifest.json; do
    [ -f "$f" ] && cp "$f" "$out/$(basename "$f")"
done
rm -rf "$keep"
exit "$rc"
