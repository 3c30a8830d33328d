#!/usr/bin/env bash
# The ASR training step side by side on this machine, alternated ROUNDS times so that all see the same load:
#   PyTorch (scripts/bench/asr_torch.py: SpeeChain's ARASR in torch.nn, one thread) as installed and with
#   torch.set_flush_denormal(True), and `speechain-mpi bench-asr` (the same workload, one BLAS thread); then the
#   same step under bfloat16 autocast on both sides (PyTorch's torch.autocast, ours --amp_dtype bfloat16).
# Prints the medians over rounds, the ratio to the faster PyTorch, the share of our step inside sgemm and its rate
# against the 1024³ sgemm peak, with the CPU and the BLAS kernels, and the bfloat16 row. Not part of CI.
#
#   scripts/bench/compare_asr.sh [ROUNDS] [OUT_DIR]        (PYTHON=/path/to/python with torch, default python3)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}; out=${2:-bench/compare-asr-$(date +%Y%m%d)}; py=${PYTHON:-python3}
source scripts/build-flags.sh
bin="$(swift build "${SWIFT_RELEASE_FLAGS[@]}" --show-bin-path)/speechain-mpi"
[ -x "$bin" ] || swift build "${SWIFT_RELEASE_FLAGS[@]}" --product speechain-mpi >/dev/null
export OPENBLAS_NUM_THREADS=1
[ "${KEEP_CORETYPE:-0}" = 1 ] || unset OPENBLAS_CORETYPE
# the twin imports scripts/reference/arasr_ref.py, which needs safetensors beside torch
"$py" -c "import torch, safetensors" || { echo "compare_asr.sh: $py cannot import torch and safetensors (PYTHON=/path/to/python; pip install torch safetensors)" >&2; exit 1; }
mkdir -p "$out"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p') (family $(lscpu | sed -n 's/^CPU family: *//p'), model $(lscpu | sed -n 's/^Model: *//p'))"
} > "$out/machine.txt"
for i in $(seq 1 "$rounds"); do
    "$py" scripts/bench/asr_torch.py --steps 8 --warmup 2 > "$out/torch-$i.json"
    "$py" scripts/bench/asr_torch.py --steps 8 --warmup 2 --flush-denormal > "$out/torch-ftz-$i.json"
    "$bin" bench-asr --steps 8 --warmup 2 --result_path "$out/ours-$i" > /dev/null
    # the AMP row: PyTorch's bf16 autocast (flush_denormal on) beside ours under --amp_dtype bfloat16
    "$py" scripts/bench/asr_torch.py --steps 8 --warmup 2 --flush-denormal --autocast bfloat16 > "$out/torch-bf16-$i.json"
    "$bin" bench-asr --steps 8 --warmup 2 --amp_dtype bfloat16 --result_path "$out/ours-bf16-$i" > /dev/null
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys, os
out, rounds = sys.argv[1], int(sys.argv[2])
med = statistics.median
load = lambda p: json.load(open(os.path.join(out, p)))
torch = {tag: [load(f"{tag}-{i}.json") for i in range(1, rounds + 1)] for tag in ["torch", "torch-ftz"]}
# bench.json (bench_asr.json before bench-asr ran under mpirun)
ours = [load(f"ours-{i}/bench.json" if os.path.exists(os.path.join(out, f"ours-{i}/bench.json")) else f"ours-{i}/bench_asr.json")
        for i in range(1, rounds + 1)]
lines = [open(os.path.join(out, "machine.txt")).read().strip(), f"{rounds} alternated rounds, medians over rounds"]
best = 0
for tag, runs in torch.items():
    u = med([r["utterances_per_s"] for r in runs]); best = max(best, u)
    lines.append(f"PyTorch {runs[0]['torch']} ({runs[0]['cpu_capability']}, 1 thread, flush_denormal {runs[0]['flush_denormal']}): "
                 f"{u:.2f} utterances/s, step {med([r['step_ms'] for r in runs]):.0f} ms (forward {med([r['forward_ms'] for r in runs]):.0f}, "
                 f"backward {med([r['backward_ms'] for r in runs]):.0f}, optimizer {med([r['optimizer_ms'] for r in runs]):.0f})")
u = med([r["utterances_per_second"] for r in ours])
lines.append(f"speechain-mpi bench-asr ({ours[0]['blas']}): {u:.2f} utterances/s = {u / best:.2f}x the faster PyTorch; "
             f"step {med([r['step_ms'] for r in ours]):.0f} ms (forward {med([r['forward_ms'] for r in ours]):.0f}, "
             f"backward {med([r['backward_ms'] for r in ours]):.0f}, optimizer {med([r['optimizer_ms'] for r in ours]):.0f})")
lines.append(f"  products inside the step (sgemm and our own kernels): {med([r['gemm_ms'] for r in ours]):.0f} ms ({100 * med([r['gemm_share_of_step'] for r in ours]):.0f}% of it), "
             f"{ours[0]['gemm_gflop']:.1f} GFLOP at {med([r['gemm_gflops_per_second'] for r in ours]):.1f} GFLOP/s = "
             f"{100 * med([r['gemm_fraction_of_peak'] for r in ours]):.0f}% of the 1024³ peak {med([r['sgemm_peak_gflops_per_second'] for r in ours]):.1f}")
lines.append(f"  the products alone at the peak take {1e3 * ours[0]['gemm_gflop'] / med([r['sgemm_peak_gflops_per_second'] for r in ours]):.0f} ms: "
             f"the ceiling of the ratio is {med([r['step_ms'] for r in torch['torch-ftz']]) / (1e3 * ours[0]['gemm_gflop'] / med([r['sgemm_peak_gflops_per_second'] for r in ours])):.2f}x")
tb = [load(f"torch-bf16-{i}.json") for i in range(1, rounds + 1) if os.path.exists(os.path.join(out, f"torch-bf16-{i}.json"))]
ob = [load(f"ours-bf16-{i}/bench.json") for i in range(1, rounds + 1) if os.path.exists(os.path.join(out, f"ours-bf16-{i}/bench.json"))]
if tb and ob:
    ut, uo = med([r["utterances_per_s"] for r in tb]), med([r["utterances_per_second"] for r in ob])
    lines.append(f"bfloat16 autocast: PyTorch {ut:.2f} utterances/s (step {med([r['step_ms'] for r in tb]):.0f} ms); "
                 f"speechain-mpi ({ob[0]['precision']}) {uo:.2f} utterances/s = {uo / ut:.2f}x PyTorch's bf16 autocast; "
                 f"our bf16 step ×{med([o['step_ms'] / f['step_ms'] for o, f in zip(ob, ours)]):.3f} of our float32 step")
text = "\n".join(lines)
open(os.path.join(out, "compare.txt"), "w").write(text + "\n")
print(text)
PY
