#!/usr/bin/env python3
"""PyTorch on CPU, the speechain-mpi bench workload, for a side-by-side comparison (not part of CI).

MLP 512→2048→2048→2048→512 with GELU, cross-entropy, Adam (lr 1e-3), batch 64, synthetic data, one thread by
default. Prints one JSON line: samples/s (median over windows), the step split and the sgemm rate of torch.mm.
Usage: python3 scripts/bench/torch_baseline.py [--steps 50] [--warmup 5] [--threads 1] [--batch 64]
                                              [--flush-denormal] [--autocast bfloat16]
--flush-denormal calls torch.set_flush_denormal(True) (as PyTorch users on CPUs with denormal stalls do);
--autocast bfloat16 runs forward and loss under torch.autocast("cpu", dtype=torch.bfloat16), PyTorch's CPU AMP.
"""
import argparse, json, statistics, time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dims", default="512,2048,2048,2048,512")
    ap.add_argument("--flush-denormal", action="store_true")
    ap.add_argument("--autocast", choices=["bfloat16"], default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    flushed = torch.set_flush_denormal(True) if a.flush_denormal else False
    torch.manual_seed(0)
    dims = [int(d) for d in a.dims.split(",")]
    layers = []
    for i in range(1, len(dims)):
        layers.append(torch.nn.Linear(dims[i - 1], dims[i]))
        if i < len(dims) - 1:
            layers.append(torch.nn.GELU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(a.batch, dims[0])
    y = torch.randint(0, dims[-1], (a.batch,))
    times, fb, op = [], [], []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.autocast is not None):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        t1 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=False)
        t2 = time.perf_counter()
        if step >= a.warmup:
            times.append(t2 - t0); fb.append(t1 - t0); op.append(t2 - t1)
    n = 1024
    A, B = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter(); torch.mm(A, B); best = min(best, time.perf_counter() - t0)
    step = statistics.median(times)
    print(json.dumps({
        "torch": torch.__version__, "threads": torch.get_num_threads(), "batch": a.batch,
        "flush_denormal": bool(flushed), "autocast": a.autocast or "off",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "samples_per_s": a.batch / step, "step_ms": step * 1e3,
        "forward_backward_ms": statistics.median(fb) * 1e3, "optimizer_ms": statistics.median(op) * 1e3,
        "mm1024_gflops": 2 * n**3 / best / 1e9,
    }))


if __name__ == "__main__":
    main()
