#!/usr/bin/env bash
# The paper profile's models on 1 and on N processes (GPUs): images/s, peak memory and time per epoch
# into JSON, then the full recipe's estimated wall time (see bench/paper_profile.py for what is measured
# and what is estimated).
#
#   bench/paper_profile.sh                          # every GPU of this machine, 20 timed steps per model
#   bench/paper_profile.sh --nproc 4 --steps 30
#   bench/paper_profile.sh --device cpu --nproc 2 --steps 1 --val-images 4 --max-batch 32   # a CPU, a few steps
#
# Options: --device cuda|cpu (default cuda), --nproc N (default: the GPUs visible, 2 on a CPU),
# --steps S (timed optimizer steps per process, default 20), --val-images V (default 64),
# --max-batch B (cap on the batch per process; default the profile's), --models a,b (default all),
# --out DIR (default bench/results/paper_profile). PYTHON (default python) runs everything.
# Writes DIR/measure_1.json, DIR/measure_N.json and DIR/estimate.json.
set -euo pipefail

device=cuda nproc="" steps=20 val_images=64 max_batch="" models=all out=bench/results/paper_profile
while [[ $# -gt 0 ]]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --nproc) nproc="$2"; shift 2 ;;
        --steps) steps="$2"; shift 2 ;;
        --val-images) val_images="$2"; shift 2 ;;
        --max-batch) max_batch="$2"; shift 2 ;;
        --models) models="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "paper_profile.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
python="${PYTHON:-python}"
cd "$(dirname "$0")/.."
if [[ -z "$nproc" ]]; then
    if [[ "$device" == cuda ]]; then
        nproc="$("$python" -c 'import torch; print(torch.cuda.device_count())')"
    else
        nproc=2
    fi
fi
if [[ "$nproc" -lt 1 ]]; then
    echo "paper_profile.sh: no GPU visible (use --device cpu)" >&2
    exit 2
fi
mkdir -p "$out"
measure=(measure --device "$device" --steps "$steps" --val-images "$val_images" --models "$models")
[[ -n "$max_batch" ]] && measure+=(--max-batch "$max_batch")

echo "== 1 process" >&2
"$python" bench/paper_profile.py "${measure[@]}" --out "$out/measure_1.json"
files=("$out/measure_1.json")
if [[ "$nproc" -gt 1 ]]; then
    echo "== $nproc processes (torchrun)" >&2
    "$python" -m torch.distributed.run --standalone --nproc-per-node "$nproc" \
        bench/paper_profile.py "${measure[@]}" --out "$out/measure_$nproc.json"
    files+=("$out/measure_$nproc.json")
fi
echo "== estimate" >&2
"$python" bench/paper_profile.py estimate "${files[@]}" --out "$out/estimate.json"
echo "written: ${files[*]} $out/estimate.json" >&2
