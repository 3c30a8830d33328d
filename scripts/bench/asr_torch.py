#!/usr/bin/env python3
"""PyTorch on CPU, the speechain-mpi ASR bench workload (ARASR training step), for a side-by-side comparison.

The model and the training step are those of scripts/reference/arasr_ref.py (SpeeChain's ar_asr.ARASR in plain
torch.nn: Conv2dPrenet, pre-LN Transformer encoder/decoder, CTC + label-smoothed CE), imported, not copied.
Workload (fixed, the same as the Swift side): already-extracted features [batch, frames, 80] (no frontend /
normalize / specaug), every utterance `frames` long, N(0,1) with a fixed seed; every sentence `tokens` tokens drawn
uniformly from 1..30 between <sos/eos> = 31 at both ends (text [batch, tokens + 2]), vocabulary 32 (0 = blank/pad).
Model: conv prenet conv_dims [256, 256] (kernel 3, stride 2, no BatchNorm, ReLU), lnr_dims [256]; 6 encoder and
3 decoder layers, d_model 256, 4 heads, fdfwd_dim 1024 (ReLU), dropout 0, ctc_weight 0.3, label_smoothing 0.1,
enc emb_scale False / dec emb_scale True; arasr_ref's seeded init. Optimizer torch.optim.Adam(lr 1e-3,
betas (0.9, 0.98)). One step = zero_grad, forward (loss), backward, optimizer step.

Prints one JSON line (as torch_baseline.py): utterances/s (batch / median step) and the median step split.
Usage: python3 scripts/bench/asr_torch.py [--steps 20] [--warmup 3] [--threads 1] [--flush-denormal]
                                          [--batch 16] [--frames 300] [--tokens 40] [--dump-params FILE]
--dump-params writes the state_dict names, shapes and kinds (parameter / buffer) to FILE.
"""
import argparse, json, statistics, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
import torch  # noqa: E402
import arasr_ref  # noqa: E402  (the model classes, init_weights and asr_train_step)

# arasr_ref sets torch.set_num_threads(1) and use_deterministic_algorithms(True) on import (for its byte-stable
# references); the benchmark runs as an ordinary PyTorch user would: threads from --threads, no determinism.
torch.use_deterministic_algorithms(False)

MEL_BINS, VOCAB = 80, 32
SOS_EOS = VOCAB - 1


def config():
    return dict(arasr_ref.BASE, idim=MEL_BINS, conv_dims=[256, 256], conv_batchnorm=False, conv_activation="ReLU",
                d_model=256, num_heads=4, fdfwd_dim=1024, fdfwd_activation="ReLU", enc_layers=6, dec_layers=3,
                vocab=VOCAB, ctc_weight=0.3, label_smoothing=0.1, dropout=0.0, enc_emb_scale=False,
                dec_emb_scale=True)


def make_batch(cfg, batch, frames, tokens):
    g = torch.Generator().manual_seed(cfg["feat_seed"])
    feat = torch.randn(batch, frames, cfg["idim"], generator=g)
    feat_len = torch.full((batch,), frames, dtype=torch.long)
    body = torch.randint(1, SOS_EOS, (batch, tokens), generator=g)  # uniform over 1..30
    eos = torch.full((batch, 1), SOS_EOS, dtype=torch.long)
    text = torch.cat([eos, body, eos], dim=1)
    text_len = torch.full((batch,), tokens + 2, dtype=torch.long)
    return feat, feat_len, text, text_len


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--flush-denormal", action="store_true")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--tokens", type=int, default=40)
    ap.add_argument("--dump-params", type=Path, default=None)
    ap.add_argument("--autocast", choices=["off", "bfloat16"], default="off",
                    help="run the forward under torch.autocast('cpu', dtype=torch.bfloat16) (backward and Adam as usual)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    flushed = torch.set_flush_denormal(True) if a.flush_denormal else False

    cfg = config()
    torch.manual_seed(0)  # as arasr_ref.run_case: constructors draw from the global RNG, init_weights overwrites
    model = arasr_ref.ARASR(cfg)
    arasr_ref.init_weights(model, cfg["weight_seed"])
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    if a.dump_params:
        names = {n for n, _ in model.named_parameters()}
        lines = [f"{k} {list(v.shape)} {'parameter' if k in names else 'buffer'}"
                 for k, v in model.state_dict().items()]
        lines.append(f"# parameters: {len(names)} tensors, {n_params} values "
                     f"(buffers encoder/decoder posenc.posenc not counted)")
        a.dump_params.write_text("\n".join(lines) + "\n")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    feat, feat_len, text, text_len = make_batch(cfg, a.batch, a.frames, a.tokens)

    times, fw, bw, op, zg = [], [], [], [], []
    first = None
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        t1 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.autocast == "bfloat16"):
            r = arasr_ref.asr_train_step(model, cfg, feat, feat_len, text, text_len)
        loss = r["loss"]
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if first is None:
            first = dict(first_loss=loss.item(), first_ce=r["ce_loss"].item(), first_ctc=r["ctc_loss"].item(),
                         enc_frames=int(r["enc_feat_len"][0]))
        if step >= a.warmup:
            times.append(t4 - t0); zg.append(t1 - t0); fw.append(t2 - t1); bw.append(t3 - t2); op.append(t4 - t3)
    last_loss = loss.item()

    n = 1024
    A, B = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter(); torch.mm(A, B); best = min(best, time.perf_counter() - t0)
    step = statistics.median(times)
    ms = lambda xs: statistics.median(xs) * 1e3  # noqa: E731
    print(json.dumps({
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "flush_denormal": bool(flushed), "autocast": a.autocast, "deterministic": torch.are_deterministic_algorithms_enabled(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "batch": a.batch, "frames": a.frames, "tokens": a.tokens, "steps": a.steps, "warmup": a.warmup,
        "utterances_per_s": a.batch / step, "step_ms": step * 1e3, "zero_grad_ms": ms(zg),
        "forward_ms": ms(fw), "backward_ms": ms(bw), "optimizer_ms": ms(op),
        "parameters": n_params, **first, "last_loss": last_loss,
        "mm1024_gflops": 2 * n**3 / best / 1e9,
    }))


if __name__ == "__main__":
    main()
