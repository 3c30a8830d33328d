#!/usr/bin/env python3
"""CTC loss references computed with real PyTorch (CPU, float32), for Tests/SpeechainMPITests/Model/CTCLossTests.swift.

The loss is SpeeChain's criterion/ctc.py: logits (B, T, V) -> log_softmax over V ->
torch.nn.functional.ctc_loss(..., blank=0, reduction='none', zero_infinity=True) -> mean over the batch
(each utterance's negative log-likelihood, NOT divided by its target length; an unalignable utterance counts 0).
The gradient is autograd's, with respect to the LOGITS (through the log_softmax), of that mean.

Writes Tests/SpeechainMPITests/Resources/ctc_refs/<case>.json, one file per case:
  name, batch, max_frames, vocab, blank, target_stride
  input_lengths [B], target_lengths [B], targets [B*target_stride] (row-major, padded with 0)
  logits_f32_b64    the logits (B, T, V) row-major, float32 little-endian, base64 (exact, compact)
  losses [B]        per-utterance losses from torch float32 (zero_infinity applied)
  losses_f64 [B]    the same computed by torch in float64 (to show torch's own float32 error)
  mean              the mean of `losses` (the value SpeeChain back-propagates)
  grad_f32_b64      d mean / d logits (B, T, V), float32 little-endian, base64; zero on padded frames
  grad_f64_b64      the same gradient computed by torch in float64, rounded to float32 (same encoding): a tighter
                    target than torch's float32 one, which is up to ~3e-5 (max|Δ|/max|g|) away from it
Frames beyond an utterance's input length hold large garbage values (torch ignores them, so must the Swift side).

Usage (from the repository root; needs torch, numpy):
    python3 scripts/reference/ctc_ref.py [--out DIR]
"""

import argparse
import base64
import json
import os

import numpy as np
import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

OUT = "Tests/SpeechainMPITests/Resources/ctc_refs"


def needed_frames(tokens):
    """Frames a CTC alignment needs: one per token plus a blank between equal neighbours."""
    return len(tokens) + sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)


def case(name, rng, vocab, input_lengths, targets, scale=1.0, max_frames=None):
    batch = len(input_lengths)
    max_frames = max_frames or max(input_lengths)
    stride = max(1, max(len(t) for t in targets))
    # Logits rounded to 1/256 so that they are short decimals and exact in float32.
    logits = np.round(rng.standard_normal((batch, max_frames, vocab)) * scale * 256) / 256
    for b, n in enumerate(input_lengths):  # garbage in padded frames (finite: torch's log_softmax sees them)
        logits[b, n:] = np.round(rng.standard_normal((max_frames - n, vocab)) * 300)
    logits = logits.astype(np.float32)
    tgt = np.zeros((batch, stride), dtype=np.int64)
    for b, t in enumerate(targets):
        tgt[b, :len(t)] = t
    il = torch.tensor(input_lengths)
    tl = torch.tensor([len(t) for t in targets])

    def run(dtype):
        x = torch.tensor(logits, dtype=dtype, requires_grad=True)
        lp = x.transpose(0, 1).log_softmax(dim=-1)  # as SpeeChain: (T, B, V)
        loss = torch.nn.functional.ctc_loss(lp, torch.tensor(tgt), il, tl, blank=0, reduction="none",
                                            zero_infinity=True)
        mean = loss.mean()
        mean.backward()
        return loss.detach(), mean.detach(), x.grad.detach()

    loss32, mean32, grad32 = run(torch.float32)
    loss64, _, grad64 = run(torch.float64)
    feasible = [input_lengths[b] >= needed_frames(t) for b, t in enumerate(targets)]
    assert all((loss32[b] == 0) != feasible[b] or len(targets[b]) == 0 and input_lengths[b] == 0
               for b in range(batch)), (name, loss32, feasible)
    err_loss = float(((loss32.double() - loss64).abs() / loss64.abs().clamp_min(1e-30)).max())
    err_grad = float((grad32.double() - grad64).abs().max() / grad64.abs().max())
    print(f"{name}: B={batch} T={max_frames} V={vocab} S={stride} losses={[round(v, 4) for v in loss32.tolist()]} "
          f"mean={mean32.item():.6f}; torch f32 vs f64: loss max rel {err_loss:.1e}, grad max|d|/max|g| {err_grad:.1e}")

    def b64(a):
        return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")

    return {
        "name": name, "batch": batch, "max_frames": max_frames, "vocab": vocab, "blank": 0,
        "target_stride": stride, "input_lengths": input_lengths, "target_lengths": tl.tolist(),
        "targets": tgt.reshape(-1).tolist(), "logits_f32_b64": b64(logits),
        "losses": [float(v) for v in loss32.tolist()], "losses_f64": [float(v) for v in loss64.tolist()],
        "mean": float(mean32.item()), "grad_f32_b64": b64(grad32.numpy()), "grad_f64_b64": b64(grad64.numpy()),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()
    rng = np.random.default_rng(20240611)
    cases = [
        # Repeats (3 3, 2 2), a zero-length target, a triple repeat, and an utterance whose target needs 10 frames
        # but has 9 (zero_infinity -> loss 0, zero gradient). Different input lengths, garbage after them.
        case("mixed", rng, 7, [30, 24, 17, 9],
             [[1, 3, 3, 5, 2, 2, 6], [], [4, 4, 4, 1], [2, 2, 2, 2, 2, 3]]),
        # Edge cases: an exactly tight alignment (9 frames for 1 1 2 2 3 3: a single path), T=1 with an empty
        # target, T=1 with one token, T=4 for 3 3 3 (infeasible only because of the blanks between repeats),
        # T=5 for 3 3 3 (tight), and an empty utterance (T=0, no target: loss 0).
        case("edges", rng, 7, [9, 1, 1, 4, 5, 0],
             [[1, 1, 2, 2, 3, 3], [], [5], [3, 3, 3], [3, 3, 3], []], max_frames=12),
        # Peaky logits (scale 4), typical of a trained model, with repeats and long targets.
        case("peaky", rng, 7, [30, 28, 20, 13],
             [[6, 6, 1, 2, 3, 4, 5, 5, 5], [1, 2, 1, 2, 1, 2], [2, 2, 3, 4], [1]], scale=4.0),
        # Larger random case: B=3, T=60, V=32, S=15.
        case("large", rng, 32, [60, 50, 41],
             [list(rng.integers(1, 32, 15)), list(rng.integers(1, 32, 12)), [7, 7, 9, 9, 9, 1, 2, 3, 31, 31]]),
    ]
    os.makedirs(args.out, exist_ok=True)
    for c in cases:
        c["targets"] = [int(v) for v in c["targets"]]
        with open(os.path.join(args.out, c["name"] + ".json"), "w") as f:
            json.dump(c, f)
            f.write("\n")
    total = sum(os.path.getsize(os.path.join(args.out, c["name"] + ".json")) for c in cases)
    print(f"wrote {len(cases)} cases to {args.out} ({total / 1024:.1f} KB)")


if __name__ == "__main__":
    main()
