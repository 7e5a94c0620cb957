# Sourced by the scripts that run on a lent CUDA machine (gpu_check.sh, gpu_speed_pair.sh): the
# machine's description, and what its image lacks installed from the carried wheels. The image
# has PyTorch, Lightning and torchmetrics but not Hydra or pycocotools, and nothing can be
# downloaded there; `make gpu-wheels` puts their wheels (requirements.lock's versions, for the
# image's Python 3.12) into .cache/gpu-wheels, which the device call carries.
# With GPU_CHECK_ON_CPU=1 a script runs its steps at the smoke scale here: a check of the script.
PY=${PYTHON:-python3}
# A path to the interpreter (a venv's, say) stays valid from another folder; its link is kept.
if [[ $PY == */* ]]; then PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY"); fi
WHEELS=.cache/gpu-wheels

step() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

gpu_setup() {
    step "machine"
    if [[ ${GPU_CHECK_ON_CPU:-0} != 1 ]]; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    fi
    "$PY" -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())"

    step "install what the image lacks"
    if ! "$PY" -c "import hydra, pycocotools" 2>/dev/null; then
        [[ -d $WHEELS ]] || { echo "no $WHEELS: run 'make gpu-wheels' and carry it"; return 1; }
        "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-build-isolation \
            antlr4-python3-runtime omegaconf hydra-core pycocotools
    fi
    # The package itself from this tree, its dependencies as the image has them.
    "$PY" -m pip install -q --no-deps --no-build-isolation -e .
    "$PY" -m pip list 2>/dev/null | grep -i -E "^(torch|torchvision|lightning|torchmetrics|hydra-core|pycocotools) "
    if [[ ${GPU_CHECK_ON_CPU:-0} != 1 ]]; then
        "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
    fi
}
