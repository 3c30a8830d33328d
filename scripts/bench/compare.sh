#!/usr/bin/env bash
# Side by side on this machine, alternated ROUNDS times so that all see the same background load: PyTorch on CPU
# (scripts/bench/torch_baseline.py, one thread; skipped when `python3 -c "import torch"` fails), `speechain-mpi bench`
# alone, and under `mpirun -np 2`. Prints the medians and the ratios the README quotes. Not part of CI.
#
#   scripts/bench/compare.sh [ROUNDS] [OUT_DIR]        (PYTHON=/path/to/python with torch, default python3)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}; out=${2:-bench/compare-$(date +%Y%m%d)}; py=${PYTHON:-python3}
source scripts/build-flags.sh
bin="$(swift build "${SWIFT_RELEASE_FLAGS[@]}" --show-bin-path)/speechain-mpi"
[ -x "$bin" ] || swift build "${SWIFT_RELEASE_FLAGS[@]}" --product speechain-mpi >/dev/null
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
mkdir -p "$out"
for i in $(seq 1 "$rounds"); do
    if "$py" -c "import torch" 2>/dev/null; then "$py" scripts/bench/torch_baseline.py --steps 32 > "$out/torch-$i.json"; fi
    "$bin" bench --result_path "$out/np1-$i" > /dev/null
    mpirun -np 2 --bind-to none "$bin" bench --result_path "$out/np2-$i" > /dev/null
    for a in 4; do
        "$bin" bench --accum_grad $a --steps 32 --result_path "$out/np1-a$a-$i" > /dev/null
        mpirun -np 2 --bind-to none "$bin" bench --accum_grad $a --steps 32 --result_path "$out/np2-a$a-$i" > /dev/null
    done
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys, os
out, rounds = sys.argv[1], int(sys.argv[2])
def med(values): return statistics.median(values) if values else float("nan")
def bench(name): return [json.load(open(os.path.join(out, f"{name}-{i}", "bench.json"))) for i in range(1, rounds + 1)]
torch = [json.load(open(os.path.join(out, f"torch-{i}.json"))) for i in range(1, rounds + 1) if os.path.exists(os.path.join(out, f"torch-{i}.json"))]
lines = [f"{rounds} alternated rounds, medians over rounds"]
t = med([r["samples_per_s"] for r in torch]) if torch else None
for tag in ["", "-a4"]:
    one, two = bench("np1" + tag), bench("np2" + tag)
    s1, s2 = med([b["samples_per_second"] for b in one]), med([b["samples_per_second"] for b in two])
    acc = one[0]["configuration"]["accum_grad"]
    lines.append(f"accum_grad {acc}: 1 rank {s1:.1f} samples/s"
                 + (f" = {s1 / t:.2f}x PyTorch ({t:.1f} samples/s, torch {torch[0]['torch']}, 1 thread)" if t else "")
                 + f"; step at {100 * med([b['fraction_of_peak'] for b in one]):.1f}% of the sgemm peak"
                 + f" ({med([b['achieved_gflops_per_rank'] for b in one]):.1f} of {med([b['sgemm_peak_gflops_per_rank'] for b in one]):.1f} GFLOP/s)")
    lines.append(f"accum_grad {acc}: 2 ranks {s2:.1f} samples/s, weak-scaling efficiency {s2 / (2 * s1):.3f};"
                 f" sync/raw allreduce {med([b['sync_over_raw'] for b in two]):.3f}"
                 f" ({med([b['sync_ms_slowest_rank'] for b in two]):.2f} vs {med([b['raw_allreduce_ms'] for b in two]):.2f} ms);"
                 f" compute per update {med([b['compute_ms'] for b in one]):.1f} ms alone, {med([b['compute_ms'] for b in two]):.1f} ms with 2 ranks")
text = "\n".join(lines)
open(os.path.join(out, "compare.txt"), "w").write(text + "\n")
print(text)
PY
