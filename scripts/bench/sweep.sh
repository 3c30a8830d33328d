#!/usr/bin/env bash
# The scaling sweep on this machine: `speechain-mpi bench` under mpirun for ranks 1 2 4 8 16 (oversubscribed where
# the machine has fewer cores), accum_grad 1 and 4, weak scaling (64 rows per rank) and strong scaling (256 rows
# per step over all ranks); then the table (scaling.csv, scaling.md) and, when matplotlib is installed, the plots.
#
#   scripts/bench/sweep.sh [--out DIR] [--ranks "1 2 4 8 16"] [--accum "1 4"] [--modes "weak strong"] [-- bench args]
#
# For a cluster, slurm/sweep.sh submits the same series as batch jobs.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="bench/sweep-$(date +%Y%m%d)"; ranks="1 2 4 8 16"; accums="1 4"; modes="weak strong"; global=256
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --ranks) ranks=$2; shift 2 ;;
        --accum) accums=$2; shift 2 ;;
        --modes) modes=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "sweep: unknown option '$1'" >&2; exit 1 ;;
    esac
done
source scripts/build-flags.sh
swift build "${SWIFT_RELEASE_FLAGS[@]}" --product speechain-mpi >/dev/null
bin="$(swift build "${SWIFT_RELEASE_FLAGS[@]}" --show-bin-path)/speechain-mpi"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
mkdir -p "$out/runs"
for mode in $modes; do
    for accum in $accums; do
        for np in $ranks; do
            batch=(--batch_size 64)
            [ "$mode" = strong ] && batch=(--global_batch "$global")
            name="bench-$mode-a$accum-np$np"
            echo "sweep: $name"
            mpirun -np "$np" --oversubscribe --bind-to none "$bin" bench --accum_grad "$accum" \
                --steps $(( 8 * accum )) --warmup "$accum" "${batch[@]}" --result_path "$out/runs/$name" "$@" \
                > "$out/runs/$name.log" 2>&1 || { echo "sweep: $name failed, see $out/runs/$name.log" >&2; exit 1; }
        done
    done
done
python3 scripts/bench/table.py "$out"
if python3 -c "import matplotlib" 2>/dev/null; then
    python3 scripts/bench/plot.py "$out"
else
    echo "sweep: matplotlib not installed, no plots (pip install matplotlib; python3 scripts/bench/plot.py $out)"
fi
