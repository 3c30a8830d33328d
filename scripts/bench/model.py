#!/usr/bin/env python3
"""Latency-bandwidth model of the gradient allreduce, fitted to a sweep, and a projection to 16-1024 ranks on nodes
like the measured one over a 25 Gb/s and a 100 Gb/s network (standard library only).

    python3 scripts/bench/model.py SWEEP_DIR [--latency-25 25e-6] [--latency-100 2e-6] [--link-efficiency 0.9]

Model (Rabenseifner: reduce-scatter by recursive halving, then allgather by recursive doubling, as Open MPI's tuned
allreduce does for large messages):  T(p, n) = 2·ceil(log2 p)·alpha + 2·(p-1)/p · n·beta.
alpha and beta are fitted by least squares of the relative error to every raw MPI_Allreduce a bench run measured (its allreduce_curve)
with 2 <= p <= cores (oversubscribed runs time-slice ranks and are left out of the fit, but listed beside it).

Projection (weak scaling, the batch per rank of the one-rank weak run, e.g. 64, nodes of C cores running C ranks each):
  T_update(p) = T_local + T_node(C, n) + T_net(p/C, n)
  T_local = accum_grad · (compute per step) + optimizer, measured on one rank with a core to itself;
  T_node  = the on-node allreduce of the gradient among C ranks, as measured (best run);
  T_net   = 2·ceil(log2 N)·alpha_net + 2·(N-1)/N · n / (link rate · link efficiency) across N = p/C nodes;
  E(p) = T_local / T_update(p); samples/s = p · batch per rank · accum_grad / T_update(p).
The network's alpha and efficiency are assumptions (options above), not measurements; nothing overlaps
communication with compute here (speechain-mpi synchronises after the backward).

The ASR workload (`speechain-mpi bench-asr`, bench.json `workload: asr`) has variable-length batches: every rank's
batch is padded to a length L drawn per step uniformly between min_frames and frames, so the ranks reach the
allreduce at different times and every update lasts as long as its slowest rank. The projection adds that wait:
  T_update(p) = T_local · E[max over p ranks of S] / E[S] + optimizer + T_node + T_net,
with S the sum of accum_grad lengths of one rank's update (its exact distribution, a convolution of uniforms) and
compute taken proportional to the padded length (an assumption: attention's quadratic part is small at 300 frames).
The mean wait of a rank is then T_compute · (E[max S] / E[S] − 1); the table beside the fit sets it against the
waits the sweep measured (medians per rank, mean over ranks; with lengths: by_rank the lengths are fixed per rank,
not drawn, and no model applies).
"""
import glob, json, math, os, sys


def fit(points):
    # least squares of the relative error for t = a·x1 + b·x2 (no intercept): each row divided by t, so that a 1 KB
    # allreduce counts as much as a 40 MB one
    points = [(x1 / t, x2 / t, 1.0) for x1, x2, t in points]
    s11 = sum(x1 * x1 for x1, _, _ in points); s22 = sum(x2 * x2 for _, x2, _ in points)
    s12 = sum(x1 * x2 for x1, x2, _ in points)
    t1 = sum(x1 * t for x1, _, t in points); t2 = sum(x2 * t for _, x2, t in points)
    det = s11 * s22 - s12 * s12
    return (t1 * s22 - t2 * s12) / det, (s11 * t2 - s12 * t1) / det


def terms(p, n):
    return 2 * math.ceil(math.log2(p)), 2 * (p - 1) / p * n


def length_sum_distribution(lo, hi, k):
    """P(S = s) for S the sum of k independent lengths uniform on lo..hi (integers), as {s: p}."""
    dist = {0: 1.0}
    step = 1.0 / (hi - lo + 1)
    for _ in range(k):
        new = {}
        for s, ps in dist.items():
            for length in range(lo, hi + 1):
                new[s + length] = new.get(s + length, 0.0) + ps * step
        dist = new
    return dist


def extremes_over_mean(lo, hi, k, p):
    """(E[max of p independent S], E[min of p independent S]) / E[S] for S as above: how much longer the slowest
    of p ranks computes, and how much shorter the fastest."""
    dist = length_sum_distribution(lo, hi, k)
    mean = sum(s * ps for s, ps in dist.items())
    cdf, below, expected_max, expected_min = 0.0, 0.0, 0.0, 0.0
    for s in sorted(dist):
        cdf = min(cdf + dist[s], 1.0)
        expected_max += s * (cdf ** p - below ** p)
        expected_min += s * ((1 - below) ** p - (1 - cdf) ** p)
        below = cdf
    return expected_max / mean, expected_min / mean


def max_over_mean(lo, hi, k, p):
    return extremes_over_mean(lo, hi, k, p)[0]


def bench_files(sweep):
    """The sweep's bench.json files: runs/NAME/bench.json as a sweep writes them (each run's --result_path), or
    runs/NAME.json as a sweep is committed (bench/sweep-*/runs/bench-weak-a1-np2.json)."""
    return sorted(glob.glob(os.path.join(sweep, "runs", "*", "bench.json")) + glob.glob(os.path.join(sweep, "runs", "*.json")))


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit("usage: model.py SWEEP_DIR [--latency-25 S] [--latency-100 S] [--link-efficiency F]")
    sweep = args[0]
    opts = {"--latency-25": 25e-6, "--latency-100": 2e-6, "--link-efficiency": 0.9}
    for i in range(1, len(args), 2):
        opts[args[i]] = float(args[i + 1])
    runs = [json.load(open(p)) for p in bench_files(sweep)]
    if not runs:
        sys.exit(f"model.py: no runs/*/bench.json or runs/*.json under {sweep}")
    cores = max(r["cores"] for r in runs)
    points, excluded = [], []
    for r in runs:
        p = r["world_size"]
        for pt in r.get("allreduce_curve", []):
            x1, x2 = terms(p, pt["bytes"])
            (points if p <= cores * r["nodes"] else excluded).append((p, pt["bytes"], pt["ms"] * 1e-3, x1, x2))
    if not points:
        sys.exit("model.py: no allreduce measurements with 2 <= p <= cores in this sweep")
    alpha, beta = fit([(x1, x2, t) for _, _, t, x1, x2 in points])
    out = []
    out.append(f"Fit over {len(points)} raw MPI_Allreduce times (p = {sorted({p for p, *_ in points})}, "
               f"{min(b for _, b, *_ in points)}–{max(b for _, b, *_ in points)} bytes): "
               f"alpha = {alpha * 1e6:.2f} µs, beta = {beta * 1e9:.3f} ns/byte (1/beta = {1 / beta / 1e9:.2f} GB/s).\n")
    out.append("| p | bytes | measured ms | model ms |")
    out.append("|---|---|---|---|")
    for p, b, t, x1, x2 in sorted(points):
        out.append(f"| {p} | {b} | {t * 1e3:.3f} | {(alpha * x1 + beta * x2) * 1e3:.3f} |")
    for p, b, t, x1, x2 in sorted(excluded):
        out.append(f"| {p} (oversubscribed, not fitted) | {b} | {t * 1e3:.3f} | {(alpha * x1 + beta * x2) * 1e3:.3f} |")

    # T_local per accum_grad from the weak-scaling run of one rank (a rank with its core to itself: on a shared
    # machine the runs with p = cores also measure whoever else used the cores)
    local, compute, per_rank = {}, {}, 64
    for r in runs:
        c = r["configuration"]
        if c.get("global_batch") is None and r["world_size"] == 1:
            local[c["accum_grad"]] = (r["compute_ms"] + r["optimizer_ms"]) * 1e-3
            compute[c["accum_grad"]] = r["compute_ms"] * 1e-3
            per_rank = r["batch_per_rank"]
    asr = runs[0].get("workload", "mlp") == "asr"
    conf = runs[0]["configuration"]
    varied = asr and conf.get("lengths", "random") == "random" and conf.get("min_frames", conf["frames"]) < conf["frames"]

    def wait(accum, p):
        """The model's mean wait of a rank for the slowest of p (ASR, lengths drawn per step), else 0."""
        if not varied or p < 2:
            return 0.0
        return compute[accum] * (max_over_mean(conf["min_frames"], conf["frames"], accum, p) - 1)

    def spread(accum, p):
        """The model's mean compute spread: the slowest of p ranks minus the fastest."""
        hi, lo = extremes_over_mean(conf["min_frames"], conf["frames"], accum, p)
        return compute[accum] * (hi - lo)

    if asr:
        out.append("")
        if varied:
            out.append(f"The wait for the slowest rank, batches padded to a length uniform in {conf['min_frames']}..{conf['frames']} frames "
                       "per rank and step: measured and modelled with T_compute of the one-rank weak run (scaled to the run's "
                       "utterances per rank). Wait: per rank the median over updates, mean over ranks, against the model's mean "
                       "T_compute × (E[max over p ranks] / E[mean] − 1) — a rank that is the slowest half the time has a median "
                       "wait below its mean, so the medians come out lower; compute spread: per update the slowest rank's compute "
                       "minus the fastest's, median over updates, against T_compute × (E[max] − E[min]) / E[mean].\n")
            out.append("| mode | accum_grad | ranks | compute ms | measured wait ms | model wait ms | measured spread ms | model spread ms |")
            out.append("|---|---|---|---|---|---|---|---|")
            for r in sorted(runs, key=lambda r: (r["configuration"].get("global_batch") is not None, r["configuration"]["accum_grad"], r["world_size"])):
                c, p = r["configuration"], r["world_size"]
                if p < 2 or c["accum_grad"] not in compute:
                    continue
                # the model's compute is the one-rank weak run's, scaled to this run's utterances per rank
                scale = r["batch_per_rank"] / per_rank
                oversub = " (oversubscribed)" if p > cores * r["nodes"] else ""
                out.append(f"| {'strong' if c.get('global_batch') else 'weak'} | {c['accum_grad']} | {p}{oversub} | {r['compute_ms']:.1f} | "
                           f"{r['wait_ms']:.1f} | {wait(c['accum_grad'], p) * scale * 1e3:.1f} | "
                           f"{r.get('compute_spread_ms', 0):.1f} | {spread(c['accum_grad'], p) * scale * 1e3:.1f} |")
        else:
            out.append("Every rank's batches have the same length here (min_frames = frames, or lengths: by_rank): the projection has no wait term.")
    n = runs[0]["parameters"] * 4
    # The on-node allreduce of the whole gradient is taken as measured (the best of the runs with p = cores, as
    # other load only adds to it): 42 MB does not fit in cache, so it runs slower than the fit of the small sizes.
    measured = sorted(r["raw_allreduce_ms"] * 1e-3 for r in runs if r["world_size"] == cores and r["nodes"] == 1)
    node = measured[0] if measured else alpha * terms(cores, n)[0] + beta * terms(cores, n)[1]
    out.append("")
    out.append(f"Projection, weak scaling, {cores} ranks per node (nodes like this one), gradient {n / 1e6:.2f} MB; "
               f"on-node allreduce {node * 1e3:.2f} ms (measured, best run); network latency {opts['--latency-25'] * 1e6:.0f} µs at 25 Gb/s and "
               f"{opts['--latency-100'] * 1e6:.0f} µs at 100 Gb/s, {opts['--link-efficiency']:.0%} of the link rate (assumed).\n")
    if varied:
        out.append("| accum_grad | ranks | nodes | T_local ms | wait ms | 25 Gb/s: ms/update | E | samples/s | 100 Gb/s: ms/update | E | samples/s |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    else:
        out.append("| accum_grad | ranks | nodes | T_local ms | 25 Gb/s: ms/update | E | samples/s | 100 Gb/s: ms/update | E | samples/s |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
    for accum in sorted(local):
        tl = local[accum]
        for p in [16, 32, 64, 128, 256, 512, 1024]:
            nodes = p // cores
            w = wait(accum, p)
            row = [str(accum), str(p), str(nodes), f"{tl * 1e3:.1f}"] + ([f"{w * 1e3:.1f}"] if varied else [])
            for rate, lat in [(25e9, opts["--latency-25"]), (100e9, opts["--latency-100"])]:
                bw = rate / 8 * opts["--link-efficiency"]
                net = 2 * math.ceil(math.log2(nodes)) * lat + 2 * (nodes - 1) / nodes * n / bw if nodes > 1 else 0
                t = tl + w + node + net
                row += [f"{t * 1e3:.1f}", f"{tl / t:.2f}", f"{p * per_rank * accum / t:.0f}"]
            out.append("| " + " | ".join(row) + " |")
    text = "\n".join(out) + "\n"
    with open(os.path.join(sweep, "model.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
