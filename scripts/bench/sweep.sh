#!/usr/bin/env bash
# The scaling sweep on this machine: a benchmark under mpirun for a series of rank counts (oversubscribed where the
# machine has fewer cores), accum_grad values, weak scaling (a fixed batch per rank) and strong scaling (a fixed
# batch per step over all ranks); then the table (scaling.csv, scaling.md) and, when matplotlib is installed, the
# plots. The workload is one of
#   mlp (default): `speechain-mpi bench`, the MLP; ranks 1 2 4 8 16, accum_grad 1 4, 64 rows per rank (weak),
#                  256 rows per step (strong), 8 timed updates after one;
#   asr:           `speechain-mpi bench-asr`, ARASR at the README's workload (16 utterances per rank, weak; 32 per
#                  step, strong) with variable-length batches (every batch's longest utterance drawn between
#                  --min-frames, default 150 = 1.5 s, and 300 = 3 s, per rank and step), so that the ranks wait for
#                  the slowest; ranks 1 2 4, accum_grad 1 4, 4 timed updates after one (an ASR step takes seconds).
#
#   scripts/bench/sweep.sh [--workload mlp|asr] [--out DIR] [--ranks "1 2 4"] [--accum "1 4"] [--modes "weak strong"]
#                          [--min-frames N] [-- bench args]
#
# For a cluster, slurm/sweep.sh submits the same series as batch jobs.
set -euo pipefail
cd "$(dirname "$0")/../.."
die() { echo "sweep: $*" >&2; exit 1; }
workload=mlp; out=""; ranks=""; accums="1 4"; modes="weak strong"; min_frames=150
while [ $# -gt 0 ]; do
    case "$1" in
        --workload) workload=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --ranks) ranks=$2; shift 2 ;;
        --accum) accums=$2; shift 2 ;;
        --modes) modes=$2; shift 2 ;;
        --min-frames) min_frames=$2; shift 2 ;;
        --) shift; break ;;
        *) die "unknown option '$1'" ;;
    esac
done
case "$workload" in
    mlp) command=bench; per_rank=64; global=256; updates=8; ranks=${ranks:-"1 2 4 8 16"}; extra=()
         out=${out:-bench/sweep-$(date +%Y%m%d)} ;;
    asr) command=bench-asr; per_rank=16; global=32; updates=4; ranks=${ranks:-"1 2 4"}
         extra=(--min_frames "$min_frames"); out=${out:-bench/sweep-asr-$(date +%Y%m%d)} ;;
    *) die "--workload must be mlp or asr, found '$workload'" ;;
esac
for m in $modes; do case "$m" in weak|strong) ;; *) die "--modes takes weak and/or strong, found '$m'" ;; esac; done
source scripts/build-flags.sh
swift build "${SWIFT_RELEASE_FLAGS[@]}" --product speechain-mpi >/dev/null
bin="$(swift build "${SWIFT_RELEASE_FLAGS[@]}" --show-bin-path)/speechain-mpi"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
mkdir -p "$out/runs"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p') (family $(lscpu | sed -n 's/^CPU family: *//p'), model $(lscpu | sed -n 's/^Model: *//p'))"
    echo "command: scripts/bench/sweep.sh --workload $workload --ranks \"$ranks\" --accum \"$accums\" --modes \"$modes\"$([ "$workload" = asr ] && echo " --min-frames $min_frames") $([ $# -gt 0 ] && echo "-- $*")"
} > "$out/machine.txt"
for mode in $modes; do
    for accum in $accums; do
        for np in $ranks; do
            batch=(--batch_size "$per_rank")
            [ "$mode" = strong ] && batch=(--global_batch "$global")
            name="bench-$mode-a$accum-np$np"
            echo "sweep: $name"
            mpirun -np "$np" --oversubscribe --bind-to none "$bin" "$command" --accum_grad "$accum" \
                --steps $(( updates * accum )) --warmup "$accum" "${batch[@]}" "${extra[@]}" --result_path "$out/runs/$name" "$@" \
                > "$out/runs/$name.log" 2>&1 || die "$name failed, see $out/runs/$name.log"
        done
    done
done
python3 scripts/bench/table.py "$out"
if python3 -c "import matplotlib" 2>/dev/null; then
    python3 scripts/bench/plot.py "$out"
else
    echo "sweep: matplotlib not installed, no plots (pip install matplotlib; python3 scripts/bench/plot.py $out)"
fi
