#!/usr/bin/env bash
# The GPU checks, as one prepared command for a lent CUDA machine (docs/benchmarks.md, "GPU
# checks"). The machine's image has PyTorch, Lightning and torchmetrics but not Hydra or
# pycocotools, and nothing can be downloaded there, so their wheels travel with the tree:
#
#   make gpu-wheels                       # here, once: into .cache/gpu-wheels (ignored, carried)
#   device run: bash benchmarks/gpu_check.sh     carry: [".cache/gpu-wheels"]   timeout_s: 570
#
# Then each step's output in $OUT/gpu_check.log (the run folders stay in $RUNS, off $OUT, so that
# only the few files below come back, also when the call is cut short):
#   1. the tests that need a CUDA device (the criterion's losses computed on the device, RPLM
#      included; predict on cuda against the CPU, after a smoke run of its fixture); fp16 runs in
#      step 3, no unit test here runs it;
#   2. the digits recipe (1000 steps, burn-in 500, ACT, self-assignment, RPLM) in bf16-mixed:
#      results.json -> $OUT/digits_bf16.json, to set beside the CPU's numbers (README);
#   3. 800 steps in 16-mixed (fp16 with gradient scaling), 300 past the switch: -> $OUT/digits_fp16.json;
#      2 and 3 share the GPU at once (their metrics do not depend on time; their own log says when
#      each ended), each with its own data cache so the generation does not race;
#   4. then alone, the speed benchmark on the GPU: -> $OUT/bench.json and its docs section,
#      $OUT/speed.md, with where a step's time goes (--profile): $OUT/profile.txt; again in
#      bf16-mixed -> $OUT/bench_bf16.json.
# A step that fails is reported and the next one still runs; the script fails at the end if any did.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu-check}
if [[ -z ${RUNS:-} ]]; then RUNS=$(mktemp -d /tmp/gpu-check-runs.XXXX); trap 'rm -rf "$RUNS"' EXIT; fi
mkdir -p "$OUT" "$RUNS"
exec > >(tee "$OUT/gpu_check.log") 2>&1

source benchmarks/gpu_common.sh

if [[ ${GPU_CHECK_ON_CPU:-0} == 1 ]]; then
    # The smoke recipe, a few steps: the script's own check on a CPU.
    scale=(experiment=smoke trainer.max_steps=40)
    fp16_scale=(experiment=smoke trainer.max_steps=44)
    bench_args=(--steps 2 --warmup 1 --pretrain-steps 2 --inference-images 8 --inference-repeats 1)
    bench_args+=(data.splits.num_labeled=32 data.splits.num_unlabeled=32 data.splits.num_val=16)
else
    scale=(experiment=digits)
    fp16_scale=(experiment=digits trainer.max_steps=800)
    bench_args=()
fi
gpu_setup

failed=()
step "1. tests that need a CUDA device"
"$PY" -m pytest -q -p no:cacheprovider tests/test_method_criterion.py tests/test_observe.py -k cuda -rs \
    || failed+=(1)

step "2 and 3. the digits recipe in bf16-mixed; fp16 with gradient scaling, past the switch"
recipe() {  # name, precision, overrides...: one training run, its results.json into $OUT
    local name=$1 precision=$2; shift 2
    local rc=0
    "$PY" -m labelmatch.run "$@" trainer.precision="$precision" seed=0 \
        paths.cache_dir="$RUNS/cache-$name" hydra.run.dir="$RUNS/$name" \
        >"$RUNS/$name.log" 2>&1 || rc=$?
    [[ $rc != 0 ]] || cp "$RUNS/$name/results.json" "$OUT/$name.json" || rc=$?
    echo "--- $name ended $(date -u +%H:%M:%S), rc=$rc; its log's tail, progress bars left out:"
    tr '\r' '\n' <"$RUNS/$name.log" | grep -v -E '(it/s|s/it)[],]' | grep -v '^\s*$' | tail -n 15 || true
    return $rc
}
recipe digits_bf16 bf16-mixed "${scale[@]}" & bf16=$!
recipe digits_fp16 16-mixed "${fp16_scale[@]}" & fp16=$!
wait $bf16 || failed+=(2)
wait $fp16 || failed+=(3)

step "4. the speed benchmark"
cp docs/benchmarks.md "$OUT/speed.md"
"$PY" benchmarks/speed.py --out "$OUT/bench.json" --docs "$OUT/speed.md" --profile "$OUT/profile.txt" \
    "${bench_args[@]}" \
    || failed+=(4)
"$PY" benchmarks/speed.py --out "$OUT/bench_bf16.json" --precision bf16-mixed "${bench_args[@]}" \
    || failed+=(4-bf16)
# Only the speed section comes back.
"$PY" - "$OUT/speed.md" <<'PYTHON'
import re, sys
from pathlib import Path
path = Path(sys.argv[1])
section = re.search(r"<!-- speed:begin -->.*?<!-- speed:end -->", path.read_text(), re.S)
path.write_text(section.group(0) + "\n")
PYTHON

step "done; failed steps: ${failed[*]:-none}"
[[ ${#failed[@]} == 0 ]]
