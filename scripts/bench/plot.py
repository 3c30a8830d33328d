#!/usr/bin/env python3
"""Plots a scaling sweep (needs matplotlib; not part of CI): throughput and parallel efficiency against ranks, and
each run's update split into compute, wait for the slowest rank, sync and optimizer.

    python3 scripts/bench/plot.py SWEEP_DIR     # reads SWEEP_DIR/scaling.csv, writes SWEEP_DIR/{throughput,efficiency,breakdown}.png
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
    asr = "compute_spread_ms" in rows[0]   # table.py adds it for the ASR workload only
    title = ("speechain-mpi bench-asr: ARASR, variable-length batches, Adam" if asr
             else "speechain-mpi bench: MLP 512-2048x3-512, Adam")
    unit = "utterances/s" if asr else "samples/s"
    styles = {("weak", 1): "o-", ("weak", 4): "s-", ("strong", 1): "o--", ("strong", 4): "s--"}

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for key, rs in sorted(series.items()):
        x = [int(r["ranks"]) for r in rs]
        ax.plot(x, [float(r["samples_per_s"]) for r in rs], styles.get(key, "o-"), label=f"{key[0]}, accum_grad {key[1]}")
    ax.axvline(cores, color="grey", lw=0.8, ls=":")
    ax.text(cores, ax.get_ylim()[1] * 0.97, f" {cores} cores", va="top", fontsize=8, color="grey")
    ax.set_xscale("log", base=2); ax.set_xticks([int(r["ranks"]) for r in rows]); ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("ranks (mpirun -np; oversubscribed right of the line)"); ax.set_ylabel(f"{unit} (all ranks)")
    ax.set_title(title); ax.grid(alpha=0.3); ax.legend(fontsize=8)
    fig.tight_layout(); fig.savefig(os.path.join(sweep, "throughput.png"), dpi=110)

    fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.0), sharey=True)
    for ax, column, heading in [(axes[0], "efficiency", "E = S(p) / (p·S(1))"), (axes[1], "efficiency_per_core", "E_core = S(p) / (min(p, cores)·S(1))")]:
        for key, rs in sorted(series.items()):
            x = [int(r["ranks"]) for r in rs]
            ax.plot(x, [float(r[column]) for r in rs], styles.get(key, "o-"), label=f"{key[0]}, accum_grad {key[1]}")
        ax.axvline(cores, color="grey", lw=0.8, ls=":")
        ax.axhline(0.9, color="red", lw=0.6, ls=":")
        ax.set_xscale("log", base=2); ax.set_xticks([int(r["ranks"]) for r in rows]); ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("ranks"); ax.set_title(heading, fontsize=10); ax.grid(alpha=0.3)
    axes[0].set_ylabel("parallel efficiency"); axes[0].set_ylim(0, 1.15); axes[1].legend(fontsize=8)
    fig.tight_layout(); fig.savefig(os.path.join(sweep, "efficiency.png"), dpi=110)

    # the update split: one bar per run, grouped by (mode, accum_grad)
    parts = [("compute_ms", "compute", "tab:blue"), ("wait_ms", "wait for the slowest rank", "tab:red"),
             ("sync_ms", "sync (allreduce)", "tab:green"), ("optimizer_ms", "optimizer", "tab:orange")]
    keys = sorted(series, key=lambda k: (k[0] != "weak", k[1]))
    fig, axes = plt.subplots(1, len(keys), figsize=(2.6 * len(keys) + 1.5, 4.0), sharey=False, squeeze=False)
    for ax, key in zip(axes[0], keys):
        rs = series[key]
        x = list(range(len(rs)))
        bottom = [0.0] * len(rs)
        for column, label, color in parts:
            v = [float(r[column]) for r in rs]
            ax.bar(x, v, bottom=bottom, color=color, label=label, width=0.7)
            bottom = [b + y for b, y in zip(bottom, v)]
        ax.set_xticks(x); ax.set_xticklabels([r["ranks"] for r in rs])
        ax.set_xlabel("ranks"); ax.set_title(f"{key[0]}, accum_grad {key[1]}", fontsize=10); ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("ms per update (mean over ranks)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(); fig.savefig(os.path.join(sweep, "breakdown.png"), dpi=110)
    print(f"plot.py: {sweep}/throughput.png, {sweep}/efficiency.png, {sweep}/breakdown.png")


if __name__ == "__main__":
    main()
