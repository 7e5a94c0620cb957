#!/usr/bin/env bash
# This tree's LabelMatch step against an earlier revision's, timed on one GPU in one device call
# (docs/benchmarks.md, "The method's per-image code batched, on an H200"). Two H200 machines of the
# same kind gave figures 1.3-1.75 x apart on 2026-12-04, so a change is compared on one machine,
# the two revisions alternating, never across calls:
#
#   make gpu-pair BEFORE=8d32376     # here: .cache/gpu-wheels and .cache/before (ignored, carried)
#   device run: bash benchmarks/gpu_speed_pair.sh
#               carry: [".cache/gpu-wheels", ".cache/before"]   timeout_s: 590
#
# .cache/before is the earlier revision's tree with this tree's benchmarks/speed.py, so that both
# revisions are measured by the same code. Each speed.py run adds its JSON, labelled, as one line
# of $OUT/speed_runs.jsonl as soon as it ends; the log is $OUT/gpu_speed_pair.log. In order:
#   1. the tests that need a CUDA device (this tree);
#   2. speed.py's default settings in fp32 (those of the 2026-12-04 H200 rows): before, after;
#   3. after, with --profile -> $OUT/profile_after.txt (the settings of 2026-12-04's profile run);
#   4. before, after again;
#   5. the paper's detector at the paper's resolution (frcnn_r50_fpn, random weights, 800 px
#      short side, max 1333), fp32, with --profile -> $OUT/profile_r50.txt.
# A run is cut DEADLINE_S seconds after the script's start (default 575), and one that would get
# under a minute is skipped: either leaves no line.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/gpu-speed-pair}
BEFORE=${BEFORE_TREE:-.cache/before}
DEADLINE_S=${DEADLINE_S:-575}
if [[ -z ${RUNS:-} ]]; then RUNS=$(mktemp -d /tmp/gpu-pair-runs.XXXX); trap 'rm -rf "$RUNS"' EXIT; fi
mkdir -p "$OUT" "$RUNS"
OUT=$(cd "$OUT" && pwd)
: >"$OUT/speed_runs.jsonl"
exec > >(tee "$OUT/gpu_speed_pair.log") 2>&1
# One data cache for both trees (the data code is the same), made once.
export LABELMATCH_CACHE=$RUNS/cache

source benchmarks/gpu_common.sh

r50=(model=frcnn_r50_fpn model.backbone_weights=null data.max_size=1333)
if [[ ${GPU_CHECK_ON_CPU:-0} == 1 ]]; then
    small=(data.splits.num_labeled=32 data.splits.num_unlabeled=32 data.splits.num_val=16)
    default_args=(--steps 2 --warmup 1 --pretrain-steps 2 --inference-images 8 --inference-repeats 1 "${small[@]}")
    profile_args=("${default_args[@]}")
    r50+=(data.train_scales=[160] data.weak_scales=[160] data.strong_scales=[160] data.test_scale=160)
    r50+=(data.labeled_batch_size=2 data.unlabeled_batch_size=2 data.val_batch_size=2)
    r50_args=(--steps 1 --warmup 0 --pretrain-steps 0 --inference-images 4 --inference-repeats 1 "${small[@]}")
else
    default_args=()
    profile_args=(--steps 10 --warmup 3 --inference-images 100 --inference-repeats 1)
    r50+=(data.train_scales=[800] data.weak_scales=[800] data.strong_scales=[800] data.test_scale=800)
    r50_args=(--steps 5 --warmup 2 --pretrain-steps 0 --inference-images 50 --inference-repeats 1)
fi
gpu_setup
[[ -f $BEFORE/benchmarks/speed.py ]] || { echo "no $BEFORE: run 'make gpu-pair' and carry it"; exit 1; }
echo "before: $(cat "$BEFORE/REVISION" 2>/dev/null || echo '?')"

left() { echo $((DEADLINE_S - SECONDS)); }

speed() {  # label, tree, speed.py arguments...: one run; its JSON as a line of speed_runs.jsonl
    local label=$1 tree=$2; shift 2
    local rc=0 limit
    limit=$(left)
    if ((limit < 60)); then echo "--- $label skipped: ${limit} s left"; return 0; fi
    echo "--- $label: $(date -u +%H:%M:%S), at most $limit s"
    (cd "$tree" && PYTHONPATH=$PWD timeout "$limit" "$PY" -c \
        "import labelmatch, os; print('package:', os.path.dirname(labelmatch.__file__))")
    (cd "$tree" && PYTHONPATH=$PWD timeout "$limit" "$PY" benchmarks/speed.py \
        --out "$RUNS/$label.json" "$@" >"$RUNS/$label.log" 2>&1) || rc=$?
    tr '\r' '\n' <"$RUNS/$label.log" | grep -v -E '^\[|^\s*$' | tail -n 40 || true
    if [[ $rc == 0 ]]; then
        "$PY" - "$label" "$RUNS/$label.json" >>"$OUT/speed_runs.jsonl" <<'PYTHON'
import json, sys
print(json.dumps({"label": sys.argv[1], **json.load(open(sys.argv[2]))}))
PYTHON
    fi
    echo "--- $label ended $(date -u +%H:%M:%S), rc=$rc"
    return $rc
}

failed=()
step "1. tests that need a CUDA device"
"$PY" -m pytest -q -p no:cacheprovider tests/test_method_criterion.py -k cuda -rs || failed+=(1)

step "2. default settings, fp32: before, after"
speed before-1 "$BEFORE" "${default_args[@]}" || failed+=(2-before)
speed after-1 . "${default_args[@]}" || failed+=(2-after)

step "3. after, with --profile"
speed after-profile . --profile "$OUT/profile_after.txt" "${profile_args[@]}" || failed+=(3)

step "4. default settings, fp32: before, after, again"
speed before-2 "$BEFORE" "${default_args[@]}" || failed+=(4-before)
speed after-2 . "${default_args[@]}" || failed+=(4-after)

step "5. the paper's detector at the paper's resolution, fp32, with --profile"
speed r50-800 . --profile "$OUT/profile_r50.txt" "${r50_args[@]}" "${r50[@]}" || failed+=(5)

step "done; failed steps: ${failed[*]:-none}"
[[ ${#failed[@]} == 0 ]]
