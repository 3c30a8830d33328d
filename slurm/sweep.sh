#!/usr/bin/env bash
# Submits a scaling series of `speechain-mpi bench` jobs, one per (ranks, accum_grad, weak|strong), then a last job
# (after all of them) that writes the table (scaling.csv, scaling.md) with scripts/bench/table.py.
#
#   slurm/sweep.sh                                       # ranks 1 2 4 8 16, accum_grad 1 4, weak and strong
#   slurm/sweep.sh --ranks "16 32 64 128" --tasks-per-node 32 --launcher srun
#   slurm/sweep.sh --out sweeps/today -- --steps 64      # words after -- go to every bench
#
# Options: --ranks LIST, --accum LIST, --modes "weak strong", --tasks-per-node N (ranks per node, default 16),
# --global-batch N (strong scaling, default 256), --launcher mpirun|srun, --out DIR (default sweep-<date>),
# --partition P (default: the scripts' own). Environment as for the batch scripts (SPEECHAIN_BIN, ...).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
ranks="1 2 4 8 16"; accums="1 4"; modes="weak strong"; per_node=16; global=256; launcher=mpirun
out="sweep-$(date +%Y%m%d-%H%M%S)"; partition=()
die() { echo "sweep: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
    case "$1" in
        --ranks) ranks=$2; shift 2 ;;
        --accum) accums=$2; shift 2 ;;
        --modes) modes=$2; shift 2 ;;
        --tasks-per-node) per_node=$2; shift 2 ;;
        --global-batch) global=$2; shift 2 ;;
        --launcher) launcher=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --partition) partition=(--partition "$2"); shift 2 ;;
        --) shift; break ;;
        *) die "unknown option '$1' (see the comment at the top of $0)" ;;
    esac
done
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
            batch=(--batch_size 64)
            if [ "$mode" = strong ]; then
                [ $(( global % np )) -eq 0 ] || die "--global-batch $global does not divide over $np ranks"
                batch=(--global_batch "$global")
            fi
            name="bench-$mode-a$accum-np$np"
            id=$(sbatch --parsable "${partition[@]}" --job-name "$name" --nodes "$nodes" --ntasks "$np" \
                --ntasks-per-node $(( np < per_node ? np : per_node )) --output "$out/$name-%j.out" \
                "$here/train-$launcher.sbatch" bench --accum_grad "$accum" --steps $(( 8 * accum )) \
                --warmup "$accum" "${batch[@]}" "$@")
            jobs+=("${id%%;*}")
            echo "$id $name" >> "$out/jobs.txt"
        done
    done
done
table=$(sbatch --parsable "${partition[@]}" --job-name sweep-table --nodes 1 --ntasks 1 --output "$out/table-%j.out" \
    --dependency "afterany:$(IFS=:; echo "${jobs[*]}")" --wrap "python3 '$repo/scripts/bench/table.py' '$out'")
echo "sweep: ${#jobs[@]} bench jobs submitted (${jobs[*]}), table job ${table%%;*}; results in $out"
