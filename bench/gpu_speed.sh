#!/usr/bin/env bash
# Issue 19's and 21's GPU measurements, in the two parts one device call each can hold (10 minutes):
#   bash bench/gpu_speed.sh edits OUT          # the CUDA fidelity tests; the edits, inversions, levers,
#                                              # profiles, model load and CLI rows; drafts and region edits
#   bash bench/gpu_speed.sh all OUT [bench_speed options]   # the tests, every GPU row, the edit levers, a draft
# Every figure goes under OUT (the device tool's $OUT), with the console in OUT/PART.log. The working tree
# must hold the wheels the device lacks in .whl, or in the folder $WHEELS names (diffusers; see
# /work/.library/device/README.md).
set -uo pipefail
part=$1 out=$2
shift 2
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${WHEELS:-.whl}"/*.whl \
    || exit 1
export PYTHONPATH=/tmp/site:$PWD
started=$SECONDS
stamp() { echo "== $* at $((SECONDS - started)) s"; }
model=/tmp/retake-bench-sd15/model
edit_rows="p2p edit,masactrl edit,specref edit,toli edit,stylediffusion edit,kv-inversion edit,ddim inversion,direct inversion,negative-prompt inversion,model load"
cuda_tests() {  # LIMIT: seconds
    stamp "CUDA tests"
    timeout "$1" python3 -m pytest -q -p no:cacheprovider tests/test_fast_path_cuda.py 2>&1 | tail -40
}
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, diffusers, transformers; print(torch.__version__, diffusers.__version__, transformers.__version__)"
    case $part in
    edits)
        cuda_tests 120
        stamp "bench_speed: edits, inversions, levers, profiles, model load, CLI"
        timeout 330 python3 bench/bench_speed.py --out "$out" --levers edit,null-text --profile --model-dir "$model" \
            --rows "$edit_rows,cli re-edit wall" "$@"
        for mode in fast eager; do
            flag=$([ $mode = fast ] && echo --fast)
            stamp "draft, $mode"
            timeout 90 python3 bench/bench_draft.py --model "$model" --side 512 $flag --out "$out/$mode"
            stamp "region edit, $mode"
            timeout 90 python3 bench/bench_region_edit.py $flag --out "$out/$mode"
        done
        ;;
    all)
        cuda_tests 70
        stamp "bench_speed: every GPU row, the edit levers"
        timeout 300 python3 bench/bench_speed.py --out "$out" --levers edit --model-dir "$model" --full-null-text \
            --rows "$edit_rows,null-text inversion,toli text optimisation,kv tuning,stylediffusion training" "$@"
        stamp "draft, fast"
        timeout 40 python3 bench/bench_draft.py --model "$model" --side 512 --fast --out "$out/fast"
        ;;
    *) echo "unknown part $part"; exit 2 ;;
    esac
    stamp done
} 2>&1 | tee "$out/$part.log"
