#!/usr/bin/env python3
"""Plots a scaling sweep (needs matplotlib; not part of CI): throughput and parallel efficiency against ranks.

    python3 scripts/bench/plot.py SWEEP_DIR     # reads SWEEP_DIR/scaling.csv, writes SWEEP_DIR/throughput.png, efficiency.png
"""
import csv, os, sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main():
    sweep = sys.argv[1]
    with open(os.path.join(sweep, "scaling.csv")) as f:
        rows = list(csv.DictReader(f))
    series = {}
    for r in rows:
        series.setdefault((r["mode"], int(r["accum_grad"])), []).append(r)
    cores = max(int(r["cores"]) for r in rows)
    styles = {("weak", 1): "o-", ("weak", 4): "s-", ("strong", 1): "o--", ("strong", 4): "s--"}

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, rs in sorted(series.items()):
        x = [int(r["ranks"]) for r in rs]
        ax.plot(x, [float(r["samples_per_s"]) for r in rs], styles.get(key, "o-"), label=f"{key[0]}, accum_grad {key[1]}")
    ax.axvline(cores, color="grey", lw=0.8, ls=":")
    ax.text(cores, ax.get_ylim()[1] * 0.97, f" {cores} cores", va="top", fontsize=8, color="grey")
    ax.set_xscale("log", base=2); ax.set_xticks([int(r["ranks"]) for r in rows]); ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("ranks (mpirun -np; oversubscribed right of the line)"); ax.set_ylabel("samples/s (all ranks)")
    ax.set_title("speechain-mpi bench: MLP 512-2048x3-512, Adam"); ax.grid(alpha=0.3); ax.legend(fontsize=8)
    fig.tight_layout(); fig.savefig(os.path.join(sweep, "throughput.png"), dpi=110)

    fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.0), sharey=True)
    for ax, column, title in [(axes[0], "efficiency", "E = S(p) / (p·S(1))"), (axes[1], "efficiency_per_core", "E_core = S(p) / (min(p, cores)·S(1))")]:
        for key, rs in sorted(series.items()):
            x = [int(r["ranks"]) for r in rs]
            ax.plot(x, [float(r[column]) for r in rs], styles.get(key, "o-"), label=f"{key[0]}, accum_grad {key[1]}")
        ax.axvline(cores, color="grey", lw=0.8, ls=":")
        ax.axhline(0.9, color="red", lw=0.6, ls=":")
        ax.set_xscale("log", base=2); ax.set_xticks([int(r["ranks"]) for r in rows]); ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("ranks"); ax.set_title(title, fontsize=10); ax.grid(alpha=0.3)
    axes[0].set_ylabel("parallel efficiency"); axes[0].set_ylim(0, 1.15); axes[1].legend(fontsize=8)
    fig.tight_layout(); fig.savefig(os.path.join(sweep, "efficiency.png"), dpi=110)
    print(f"plot.py: {sweep}/throughput.png, {sweep}/efficiency.png")


if __name__ == "__main__":
    main()
