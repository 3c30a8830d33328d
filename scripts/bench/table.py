#!/usr/bin/env python3
"""Collects the bench.json files of a scaling sweep into scaling.csv and scaling.md (standard library only).

    python3 scripts/bench/table.py SWEEP_DIR        # reads SWEEP_DIR/runs/*/bench.json (or runs/*.json), writes SWEEP_DIR/scaling.{csv,md}

The sweep's workload is the bench.json's `workload` (mlp when absent, as in sweeps before the field). For the ASR
workload (`speechain-mpi bench-asr`, variable-length batches) samples are utterances and the table adds what the
ranks' differing lengths cost: the compute spread (per update, the slowest rank's compute minus the fastest's;
median over updates), the wait as a share of the update, and the mean padded frames per step over the ranks.

A run is weak scaling when it set no global batch (batch per rank fixed), strong scaling otherwise. Efficiencies are
against the 1-rank run of the same mode and accum_grad: E = S(p) / (p · S(1)) with S the samples/s (for strong
scaling this is T(1) / (p · T(p))). E_core divides by min(p, cores) instead of p: on a machine smaller than the job,
what the extra ranks could at best add is the cores they share, not p.
"""
import csv, glob, json, os, sys

COLUMNS = [
    ("mode", "mode"), ("accum_grad", "accum"), ("ranks", "ranks"), ("nodes", "nodes"), ("cores", "cores"),
    ("oversubscribed", "oversub."), ("batch_per_rank", "batch/rank"), ("global_batch", "global batch"),
    ("samples_per_s", "samples/s"), ("efficiency", "E"), ("efficiency_per_core", "E_core"),
    ("step_ms", "ms/step"), ("compute_ms", "compute ms/upd"), ("wait_ms", "wait"), ("sync_ms", "sync"),
    ("optimizer_ms", "optimizer"), ("raw_allreduce_ms", "raw allreduce"), ("sync_over_raw", "sync/raw"),
    ("gflops_per_rank", "GFLOP/s/rank"), ("peak_gflops_per_rank", "sgemm peak"), ("percent_of_peak", "% peak"),
    ("allreduce_calls", "allreduce calls"), ("allreduce_mb", "allreduce MB"),
]
# the ASR workload's extra columns, after "wait"
ASR_COLUMNS = [("compute_spread_ms", "compute spread"), ("wait_percent", "wait %"), ("mean_frames", "frames/step")]
TITLES = {"mlp": "`speechain-mpi bench`", "asr": "`speechain-mpi bench-asr` (ARASR, variable-length batches)"}


def columns(rows):
    if all(r["workload"] == "mlp" for r in rows):
        return COLUMNS
    at = [k for k, _ in COLUMNS].index("wait_ms") + 1
    return COLUMNS[:at] + ASR_COLUMNS + COLUMNS[at:]


def bench_files(sweep):
    """The sweep's bench.json files: runs/NAME/bench.json as a sweep writes them (each run's --result_path), or
    runs/NAME.json as a sweep is committed (bench/sweep-*/runs/bench-weak-a1-np2.json)."""
    return sorted(glob.glob(os.path.join(sweep, "runs", "*", "bench.json")) + glob.glob(os.path.join(sweep, "runs", "*.json")))


def load(sweep):
    rows = []
    for path in bench_files(sweep):
        with open(path) as f:
            b = json.load(f)
        c = b["configuration"]
        ranks = b["world_size"]
        total_cores = b["cores"] * max(b["nodes"], 1)
        rows.append({
            "mode": "strong" if c.get("global_batch") else "weak", "accum_grad": c["accum_grad"], "ranks": ranks,
            "nodes": b["nodes"], "cores": total_cores, "oversubscribed": "yes" if ranks > total_cores else "no",
            "batch_per_rank": b["batch_per_rank"], "global_batch": b["global_batch"],
            "samples_per_s": b["samples_per_second"], "step_ms": b["step_ms"], "compute_ms": b["compute_ms"],
            "wait_ms": b["wait_ms"], "sync_ms": b["sync_ms"], "optimizer_ms": b["optimizer_ms"],
            "raw_allreduce_ms": b.get("raw_allreduce_ms", 0.0), "sync_over_raw": b.get("sync_over_raw"),
            "gflops_per_rank": b["achieved_gflops_per_rank"], "peak_gflops_per_rank": b["sgemm_peak_gflops_per_rank"],
            "percent_of_peak": 100 * b["fraction_of_peak"], "allreduce_calls": b["allreduce_calls"],
            "allreduce_mb": b["allreduce_bytes"] / 1e6, "date": b["date"], "host": b["host"], "cpu": b["cpu"],
            "workload": b.get("workload", "mlp"), "compute_spread_ms": b.get("compute_spread_ms"),
            "wait_percent": 100 * b["wait_ms"] / b["update_ms"] if b.get("update_ms") else None,
            "mean_frames": b.get("mean_frames"),
        })
    base = {(r["mode"], r["accum_grad"]): r["samples_per_s"] for r in rows if r["ranks"] == 1}
    for r in rows:
        s1 = base.get((r["mode"], r["accum_grad"]))
        r["efficiency"] = r["samples_per_s"] / (r["ranks"] * s1) if s1 else None
        r["efficiency_per_core"] = r["samples_per_s"] / (min(r["ranks"], r["cores"]) * s1) if s1 else None
    rows.sort(key=lambda r: (r["mode"] != "weak", r["accum_grad"], r["ranks"]))
    return rows


def fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: table.py SWEEP_DIR")
    sweep = sys.argv[1]
    rows = load(sweep)
    if not rows:
        sys.exit(f"table.py: no runs/*/bench.json or runs/*.json under {sweep}")
    if len({r["workload"] for r in rows}) > 1:
        sys.exit(f"table.py: {sweep} mixes workloads ({', '.join(sorted({r['workload'] for r in rows}))}); one sweep, one workload")
    cols = columns(rows)
    with open(os.path.join(sweep, "scaling.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow([k for k, _ in cols])
        for r in rows:
            w.writerow([r[k] if r[k] is not None else "" for k, _ in cols])
    with open(os.path.join(sweep, "scaling.md"), "w") as f:
        first = rows[0]
        f.write(f"Scaling of {TITLES.get(first['workload'], first['workload'])} on {first['host']} ({first['cpu']}, {first['cores'] // max(first['nodes'], 1)} cores per node), {first['date'][:10]}. "
                "Times per update in ms (medians; mean over ranks), E = S(p)/(p·S(1)), E_core = S(p)/(min(p, cores)·S(1))."
                + (" Samples are utterances; wait is the time a rank waits for the slowest one before the allreduce; compute spread "
                   "is per update the slowest rank's compute minus the fastest's (median over updates); frames/step is the mean "
                   "padded length of a batch." if first["workload"] == "asr" else "") + "\n\n")
        f.write("| " + " | ".join(h for _, h in cols) + " |\n")
        f.write("|" + "---|" * len(cols) + "\n")
        for r in rows:
            f.write("| " + " | ".join(fmt(r[k]) for k, _ in cols) + " |\n")
    print(f"table.py: {len(rows)} runs -> {sweep}/scaling.csv, {sweep}/scaling.md")


if __name__ == "__main__":
    main()
