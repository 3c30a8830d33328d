#!/usr/bin/env bash
# Side by side on this machine, alternated ROUNDS times so that all see the same background load:
#   PyTorch on CPU (scripts/bench/torch_baseline.py, one thread) as installed, with torch.set_flush_denormal(True),
#   and under bf16 autocast (with flush_denormal) — skipped when `$PYTHON -c "import torch"` fails;
#   `speechain-mpi bench` alone (accum_grad 1 and 4) and under `mpirun -np 2`;
#   `speechain-mpi bench-amp` (float32, float16 and bfloat16 steps of the same MLP).
# Prints the medians and the ratios the README quotes, with the CPU model, its ISA extensions, the BLAS kernels
# and the denormal mode of every figure. Not part of CI.
#
#   scripts/bench/compare.sh [ROUNDS] [OUT_DIR]        (PYTHON=/path/to/python with torch, default python3)
#
# OPENBLAS_CORETYPE is removed from the environment (some machine images set one for every process) so that
# OpenBLAS chooses by itself and speechain-mpi's fallback check applies; KEEP_CORETYPE=1 keeps it.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}; out=${2:-bench/compare-$(date +%Y%m%d)}; py=${PYTHON:-python3}
source scripts/build-flags.sh
bin="$(swift build "${SWIFT_RELEASE_FLAGS[@]}" --show-bin-path)/speechain-mpi"
[ -x "$bin" ] || swift build "${SWIFT_RELEASE_FLAGS[@]}" --product speechain-mpi >/dev/null
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
[ "${KEEP_CORETYPE:-0}" = 1 ] || unset OPENBLAS_CORETYPE
mkdir -p "$out"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p') (family $(lscpu | sed -n 's/^CPU family: *//p'), model $(lscpu | sed -n 's/^Model: *//p'))"
    echo "isa: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512dq|avx512_bf16|avx512_fp16|amx_tile|amx_bf16)$' | tr '\n' ' ')"
    echo "OPENBLAS_CORETYPE: ${OPENBLAS_CORETYPE:-unset}"
} > "$out/machine.txt"
torch_ok=0; "$py" -c "import torch" 2>/dev/null && torch_ok=1
for i in $(seq 1 "$rounds"); do
    if [ $torch_ok = 1 ]; then
        "$py" scripts/bench/torch_baseline.py --steps 32 > "$out/torch-$i.json"
        "$py" scripts/bench/torch_baseline.py --steps 32 --flush-denormal > "$out/torch-ftz-$i.json"
        "$py" scripts/bench/torch_baseline.py --steps 32 --flush-denormal --autocast bfloat16 > "$out/torch-bf16-$i.json"
    fi
    "$bin" bench --result_path "$out/np1-$i" > /dev/null
    mpirun -np 2 --bind-to none -x OPENBLAS_NUM_THREADS "$bin" bench --result_path "$out/np2-$i" > /dev/null
    for a in 4; do
        "$bin" bench --accum_grad $a --steps 32 --result_path "$out/np1-a$a-$i" > /dev/null
        mpirun -np 2 --bind-to none -x OPENBLAS_NUM_THREADS "$bin" bench --accum_grad $a --steps 32 --result_path "$out/np2-a$a-$i" > /dev/null
    done
    "$bin" bench-amp --result_path "$out/amp-$i" > /dev/null
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys, os
out, rounds = sys.argv[1], int(sys.argv[2])
def med(values): return statistics.median(values) if values else float("nan")
def load(path): return json.load(open(os.path.join(out, path)))
def bench(name): return [load(f"{name}-{i}/bench.json") for i in range(1, rounds + 1)]
def torch_runs(tag): return [load(f"{tag}-{i}.json") for i in range(1, rounds + 1) if os.path.exists(os.path.join(out, f"{tag}-{i}.json"))]
lines = [open(os.path.join(out, "machine.txt")).read().strip(), f"{rounds} alternated rounds, medians over rounds"]
one = bench("np1")
lines.append(f"speechain-mpi: BLAS {one[0]['blas']}; denormals {'flushed' if one[0]['flush_denormal'] else 'kept'}")
variants = {tag: torch_runs(tag) for tag in ["torch", "torch-ftz", "torch-bf16"]}
t = {tag: med([r["samples_per_s"] for r in runs]) for tag, runs in variants.items() if runs}
for tag, runs in variants.items():
    if runs:
        r = runs[0]
        lines.append(f"PyTorch {r['torch']} ({r['cpu_capability']}, 1 thread, flush_denormal {r['flush_denormal']}, autocast {r['autocast']}): "
                     f"{t[tag]:.1f} samples/s, step {med([x['step_ms'] for x in runs]):.1f} ms")
best = max([t[k] for k in ("torch", "torch-ftz") if k in t], default=None)
for tag in ["", "-a4"]:
    one, two = bench("np1" + tag), bench("np2" + tag)
    s1, s2 = med([b["samples_per_second"] for b in one]), med([b["samples_per_second"] for b in two])
    acc = one[0]["configuration"]["accum_grad"]
    lines.append(f"accum_grad {acc}: 1 rank {s1:.1f} samples/s"
                 + (f" = {s1 / best:.2f}x the faster float32 PyTorch ({best:.1f})" if best else "")
                 + f"; step at {100 * med([b['fraction_of_peak'] for b in one]):.1f}% of the sgemm peak"
                 + f" ({med([b['achieved_gflops_per_rank'] for b in one]):.1f} of {med([b['sgemm_peak_gflops_per_rank'] for b in one]):.1f} GFLOP/s);"
                 + f" optimizer {med([b['optimizer_ms'] for b in one]):.2f} ms against the memory floor {med([b['adam_floor_ms'] for b in one]):.2f} ms")
    lines.append(f"accum_grad {acc}: 2 ranks {s2:.1f} samples/s, weak-scaling efficiency {s2 / (2 * s1):.3f};"
                 f" sync/raw allreduce {med([b['sync_over_raw'] for b in two]):.3f}"
                 f" ({med([b['sync_ms_slowest_rank'] for b in two]):.2f} vs {med([b['raw_allreduce_ms'] for b in two]):.2f} ms)")
amp = [load(f"amp-{i}/bench_amp.json") for i in range(1, rounds + 1)]
# bench-amp: each variant's step as a ratio of the same round's float32 step (medians over rounds), and the bf16
# step's samples/s beside PyTorch's bf16 autocast
def amp_step(a, name): return next(s for s in a["steps"] if s["name"] == name)
f32 = med([amp_step(a, "float32")["step_ms"] for a in amp])
ratios = {n: med([amp_step(a, n)["step_ms"] / amp_step(a, "float32")["step_ms"] for a in amp])
          for n in ("float16", "bfloat16", "bfloat16-emulated")}
bf16_rate = amp[0]["configuration"]["batch_size"] / (med([amp_step(a, "bfloat16")["step_ms"] for a in amp]) / 1000)
tb = f"; PyTorch bf16 autocast {t['torch-bf16']:.1f}" if "torch-bf16" in t else ""
lines.append(f"bench-amp: float32 step {f32:.2f} ms; float16 ×{ratios['float16']:.3f}; bfloat16 ×{ratios['bfloat16']:.3f}"
             f" ({amp[0]['bfloat16_products']} products; {bf16_rate:.1f} samples/s{tb});"
             f" bfloat16 emulated ×{ratios['bfloat16-emulated']:.3f}")
text = "\n".join(lines)
open(os.path.join(out, "compare.txt"), "w").write(text + "\n")
print(text)
PY
