#!/usr/bin/env bash
# Submits a scaling series of `speechain-mpi bench` (or, with --workload asr, `speechain-mpi bench-asr`) jobs, one per
# (ranks, accum_grad, weak|strong), then a last job (after all of them) that writes the table (scaling.csv,
# scaling.md) with scripts/bench/table.py.
#
#   slurm/sweep.sh                                       # ranks 1 2 4 8 16, accum_grad 1 4, weak and strong
#   slurm/sweep.sh --workload asr --ranks "16 32 64"     # ARASR, variable-length batches (see scripts/bench/sweep.sh)
#   slurm/sweep.sh --ranks "16 32 64 128" --tasks-per-node 32 --launcher srun
#   slurm/sweep.sh --out sweeps/today -- --steps 64      # words after -- go to every bench
#
# Options: --workload mlp|asr (default mlp), --ranks LIST, --accum LIST, --modes "weak strong", --tasks-per-node N
# (ranks per node, default 16), --batch-size N (per rank, weak scaling; default 64, asr 16), --global-batch N
# (strong scaling, default 256, asr 32), --min-frames N (asr: the shortest batch, default 150 of 300 frames),
# --launcher mpirun|srun, --out DIR (default sweep-<date>), --partition P (default: the scripts' own). Timed
# updates: 8 (asr 4) × accum_grad after one. Environment as for the batch scripts (SPEECHAIN_BIN, ...).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
workload=mlp; ranks=""; accums="1 4"; modes="weak strong"; per_node=16; per_rank=""; global=""; min_frames=150; launcher=mpirun
out="sweep-$(date +%Y%m%d-%H%M%S)"; partition=()
die() { echo "sweep: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        --workload) workload=$2; shift 2 ;;
        --ranks) ranks=$2; shift 2 ;;
        --accum) accums=$2; shift 2 ;;
        --modes) modes=$2; shift 2 ;;
        --tasks-per-node) per_node=$2; shift 2 ;;
        --batch-size) per_rank=$2; shift 2 ;;
        --global-batch) global=$2; shift 2 ;;
        --min-frames) min_frames=$2; shift 2 ;;
        --launcher) launcher=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --partition) partition=(--partition "$2"); shift 2 ;;
        --) shift; break ;;
        *) die "unknown option '$1' (see the comment at the top of $0)" ;;
    esac
done
case "$workload" in
    mlp) command=bench; per_rank=${per_rank:-64}; global=${global:-256}; updates=8; ranks=${ranks:-"1 2 4 8 16"}; extra=() ;;
    asr) command=bench-asr; per_rank=${per_rank:-16}; global=${global:-32}; updates=4; ranks=${ranks:-"1 2 4 8 16"}
         extra=(--min_frames "$min_frames") ;;
    *) die "--workload must be mlp or asr, found '$workload'" ;;
esac
case "$launcher" in mpirun|srun) ;; *) die "--launcher must be mpirun or srun, found '$launcher'" ;; esac
[[ "$per_node" =~ ^[1-9][0-9]*$ ]] || die "--tasks-per-node must be a positive integer, found '$per_node'"
for m in $modes; do case "$m" in weak|strong) ;; *) die "--modes takes weak and/or strong, found '$m'" ;; esac; done
mkdir -p "$out/runs"
out=$(cd "$out" && pwd)
export SPEECHAIN_RESULTS="$out/runs"

jobs=()
for mode in $modes; do
    for accum in $accums; do
        for np in $ranks; do
            [[ "$np" =~ ^[1-9][0-9]*$ ]] || die "--ranks takes positive integers, found '$np'"
            nodes=$(( (np + per_node - 1) / per_node ))
            batch=(--batch_size "$per_rank")
            if [ "$mode" = strong ]; then
                [ $(( global % np )) -eq 0 ] || die "--global-batch $global does not divide over $np ranks"
                batch=(--global_batch "$global")
            fi
            name="bench-$mode-a$accum-np$np"
            id=$(sbatch --parsable "${partition[@]}" --job-name "$name" --nodes "$nodes" --ntasks "$np" \
                --ntasks-per-node $(( np < per_node ? np : per_node )) --output "$out/$name-%j.out" \
                "$here/train-$launcher.sbatch" "$command" --accum_grad "$accum" --steps $(( updates * accum )) \
                --warmup "$accum" "${batch[@]}" "${extra[@]}" "$@")
            jobs+=("${id%%;*}")
            echo "$id $name" >> "$out/jobs.txt"
        done
    done
done
table=$(sbatch --parsable "${partition[@]}" --job-name sweep-table --nodes 1 --ntasks 1 --output "$out/table-%j.out" \
    --dependency "afterany:$(IFS=:; echo "${jobs[*]}")" --wrap "python3 '$repo/scripts/bench/table.py' '$out'")
echo "sweep: ${#jobs[@]} $command jobs submitted (${jobs[*]}), table job ${table%%;*}; results in $out"
