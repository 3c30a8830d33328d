#!/usr/bin/env python3
"""Emulated-autocast (mixed precision) reference of one training forward/backward of SpeeChain's `ar_asr.ARASR`.

Follows docs/amp-arasr.md ("where autocast rounds"): the model of arasr_ref.py (same modules, weights, inputs,
criteria) is run in **float64** and rounded to p (float16 or bfloat16) at exactly the places the spec lists, forward
and backward. Two autograd Functions do it:
  cast_p(t)  forward rounds to p, backward is the identity       (the value of a P tensor)
  grad_p(t)  forward is the identity, backward rounds to p      (the gradient of a P tensor is P)
and every P tensor of the spec is `P(t) = grad_p(cast_p(t))`. Rounding is `t.float().to(p).to(t.dtype)`
(float64 -> float32 -> p: what a float32 value cast to p gives). f tensors stay float64 (they stand for float32).
The forward is written out here (functional, over arasr_ref.ARASR's parameters) because the rounding sits inside the
modules (e.g. between the attention's matmul and its scaling); the criteria are arasr_ref.asr_criteria.

Writes Tests/SpeechainMPITests/Resources/asr_amp_refs/<case>/{grads,intermediates}.safetensors and outputs.json.
Weights and inputs are NOT duplicated: they are asr_refs/<weights_from>/{weights,inputs}.safetensors (outputs.json
names it; the script asserts that the tensors it uses equal those files).

Also checks the marks against real torch.autocast("cpu", bfloat16) on a Linear-GELU-Linear block (parameter
gradients bit-identical), and runs, per case, (1) the wiring check: the same code with rounding disabled against arasr_ref's float32 and
float64 results; (2) the sensitivity study (stored under "sensitivity" in outputs.json): the emulation with one
rounding place left out, and the whole emulation done in float32 instead of float64.

Usage (from the repository root; needs torch, numpy, safetensors):
    /tmp/torchvenv/bin/python scripts/reference/arasr_amp_ref.py [--out DIR] [--refs DIR]
"""

import argparse
import copy
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from safetensors.torch import save_file, load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import arasr_ref as R  # noqa: E402  (sets one thread and deterministic algorithms)

torch.set_num_threads(1)

AMP_CASES = {
    "bn_gelu_float16": dict(base="bn_gelu", p=torch.float16, seed=1024.0),
    "bn_gelu_bfloat16": dict(base="bn_gelu", p=torch.bfloat16, seed=1.0),
    "nobn_relu_bfloat16": dict(base="nobn_relu", p=torch.bfloat16, seed=1.0),
}
# rounding places that can be left out (sensitivity study); see Amp.P's `tag`
ABLATIONS = {
    "score_scale_unrounded": "s = s0*scale not rounded (forward, and its gradient dS not rounded)",
    "residual_grad_unrounded": "gradient into the P branch at each residual add not rounded",
    "softmax_out_p": "softmax returns P (rounded output, saved for its backward) instead of f",
    "linear_bias_rounded_separately": "Linear: p(p(x W^T) + b) (two roundings) instead of p(x W^T + b)",
    "logits_grad_unrounded": "dlogits (log_softmax backward into the P logits) not rounded",
    "conv_bias_in_one_rounding": "prenet Conv2d with bias: p(conv + p(b)) (one rounding) instead of the spec's "
                                 "p(p(conv) + p(b)) (what cuDNN + ATen's separate output.add_(bias) do on CUDA)",
}


VARIANTS = {
    "float32_working_precision": "whole emulation in float32 (f tensors float32) instead of float64",
    "float32_reversed_sums": "as float32_working_precision, and every Linear / attention matmul sums its reduced "
                             "dimension in reverse order (another float32 implementation)",
}


# ----------------------------------------------------------------------------------------------- rounding
def rounder(p):
    if p is None:
        return lambda t: t
    return lambda t: t.float().to(p).to(t.dtype)


class CastP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, rnd):
        return rnd(x)

    @staticmethod
    def backward(ctx, g):
        return g, None


class GradP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, rnd):
        ctx.rnd = rnd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return ctx.rnd(g), None


class SoftmaxP(torch.autograd.Function):
    """Ablation: softmax whose output is P and whose backward uses that rounded output (rounded once more)."""

    @staticmethod
    def forward(ctx, x, rnd):
        y = rnd(torch.softmax(x, dim=-1))
        ctx.save_for_backward(y)
        ctx.rnd = rnd
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return ctx.rnd(y * (g - (g * y).sum(dim=-1, keepdim=True))), None


class Amp:
    """p: torch.float16 / torch.bfloat16 / None (no rounding); skip: ABLATIONS keys; keep: name -> tensor capture."""

    def __init__(self, p, skip=(), reverse_sums=False):
        self.p, self.rnd, self.skip, self.reverse = p, rounder(p), set(skip), reverse_sums
        assert self.skip <= set(ABLATIONS), self.skip
        self.keep = {}

    def P(self, t, tag=None, grad=True, name=None):
        """Mark t as P: value rounded; its gradient rounded (unless grad False). `tag` in skip: leave t as it is."""
        if tag is not None and tag in self.skip:
            return t
        c = CastP.apply(t, self.rnd)
        if name is not None and c.requires_grad:
            c.retain_grad()  # its .grad is the (rounded) P gradient
            self.keep[name] = c
        return GradP.apply(c, self.rnd) if grad else c


# ----------------------------------------------------------------------------------------------- forward
def linear(amp, x, lin, gtag=None, name=None):
    """y = p(p(x) p(W)^T + p(b)); the products accumulate in the working dtype, one rounding. gtag: the ablation
    tag that leaves y's gradient unrounded."""
    w = amp.P(lin.weight)
    b = amp.P(lin.bias) if lin.bias is not None else None
    x = amp.P(x)
    grad = gtag is None or gtag not in amp.skip
    if amp.reverse:  # sensitivity study: another summation order (the reduced dimension reversed)
        x, w = x.flip(-1), w.flip(-1)
    if "linear_bias_rounded_separately" in amp.skip and b is not None:
        return amp.P(amp.P(F.linear(x, w)) + b, grad=grad, name=name)
    return amp.P(F.linear(x, w, b), grad=grad, name=name)


def attention(amp, m, k, v, q, mask):
    b = k.size(0)

    def heads(x):
        return x.view(b, -1, m.num_heads, m.head_size).transpose(1, 2)

    k, v, q = heads(linear(amp, k, m.k_layer)), heads(linear(amp, v, m.v_layer)), heads(linear(amp, q, m.q_layer))
    if amp.reverse:
        q, k = q.flip(-1), k.flip(-1)
    s0 = amp.P(torch.matmul(q, k.transpose(2, 3)))
    s = amp.P((s0 * m.scale).masked_fill(~mask.unsqueeze(1), float("-inf")), tag="score_scale_unrounded")
    if "softmax_out_p" in amp.skip:
        att = SoftmaxP.apply(s, amp.rnd)
    else:
        att = torch.softmax(s, dim=-1)  # float32 list: f
    att = amp.P(att)
    if amp.reverse:
        att, v = att.flip(-1), v.flip(-2)
    ctx = amp.P(torch.matmul(att, v))
    ctx = ctx.transpose(1, 2).contiguous().view(b, -1, m.d_model)
    return linear(amp, ctx, m.output_layer, gtag="residual_grad_unrounded")


def feed_forward(amp, ffn, x):
    h = amp.P(ffn.activation(linear(amp, x, ffn.in_layer)))
    return linear(amp, h, ffn.out_layer, gtag="residual_grad_unrounded")


def posenc(amp, pe, x, x_is_p):
    if pe.emb_scale:
        x = x * math.sqrt(pe.d_model)
        if x_is_p:
            x = amp.P(x)
    return x + pe.posenc[:, :x.size(1)]  # P + f -> f


def prenet(amp, pn, feat, feat_len):
    x = feat.unsqueeze(1)
    for blk in pn.conv:
        if isinstance(blk, nn.Conv2d):
            bias = amp.P(blk.bias) if blk.bias is not None else None
            xp, wp = amp.P(x), amp.P(blk.weight)
            if bias is not None and "conv_bias_in_one_rounding" not in amp.skip:
                x = amp.P(amp.P(F.conv2d(xp, wp, None, stride=blk.stride, padding=blk.padding)) + bias[:, None, None])
            else:
                x = amp.P(F.conv2d(xp, wp, bias, stride=blk.stride, padding=blk.padding))
        else:  # BatchNorm2d (train: batch statistics, running stats updated in place) or the activation
            x = amp.P(blk(x))
    b, c, t, f = x.shape
    x = x.transpose(1, 2).contiguous().view(b, t, c * f)
    for _ in range(pn.num_convs):
        feat_len = torch.div(feat_len - 3, 2, rounding_mode="floor") + 1
    return linear(amp, x, pn.linear.linear[0]), feat_len


def amp_train_step(model, cfg, amp, feat, feat_len, text, text_len):
    enc, dec = model.encoder, model.decoder
    # encoder
    x, enc_len = prenet(amp, enc.prenet, feat, feat_len)
    prenet_out = x
    enc_mask = R.make_mask_from_len(enc_len)
    x = posenc(amp, enc.encoder.posenc, x, x_is_p=True)
    for layer in enc.encoder.trfm_layers:
        h = layer.att_layernorm(x)
        x = attention(amp, layer.multihead_att, h, h, h, enc_mask) + x
        x = feed_forward(amp, layer.feed_forward, layer.fdfwd_layernorm(x)) + x
    enc_out = enc.encoder.layernorm(x)
    if enc_out.requires_grad:
        enc_out.retain_grad()
    # decoder
    dec_text, dec_len = R.decoder_input(text, text_len)
    tgt_mask = R.make_mask_from_len(dec_len)
    x = posenc(amp, dec.decoder.posenc, dec.embedding(dec_text), x_is_p=False)
    b, _, n = tgt_mask.shape
    causal = ~torch.triu(torch.ones(b, n, n, dtype=torch.bool), diagonal=1)
    tgt_mask = torch.logical_and(tgt_mask.repeat(1, n, 1), causal)
    for layer in dec.decoder.trfm_layers:
        h = layer.self_att_ln(x)
        x = attention(amp, layer.self_att, h, h, h, tgt_mask) + x
        h = layer.encdec_att_ln(x)
        x = attention(amp, layer.encdec_att, enc_out, enc_out, h, enc_mask) + x
        x = feed_forward(amp, layer.feed_forward, layer.fdfwd_ln(x)) + x
    logits = linear(amp, dec.decoder.layernorm(x), dec.postnet.linear, gtag="logits_grad_unrounded", name="logits")
    ctc_logits = linear(amp, enc_out, model.ctc_layer.linear, gtag="logits_grad_unrounded", name="ctc_logits")
    r = R.asr_criteria(cfg, logits, ctc_logits, enc_mask, text, text_len)
    r.update(prenet_out=prenet_out, enc_out=enc_out)
    return r


# ----------------------------------------------------------------------------------------------- running
def build(base, dtype):
    cfg = R.CASES[base]
    torch.manual_seed(0)
    model = R.ARASR(cfg)
    R.init_weights(model, cfg["weight_seed"])
    model.train()
    batch = R.make_inputs(cfg)
    return cfg, model.to(dtype), batch


def run(base, dtype, p, seed, skip=(), reverse_sums=False):
    """One emulated step; returns (result dict, grads name->tensor in dtype, amp, model after the step)."""
    cfg, model, (feat, feat_len, text, text_len) = build(base, dtype)
    amp = Amp(p, skip, reverse_sums)
    r = amp_train_step(model, cfg, amp, feat.to(dtype), feat_len, text, text_len)
    r["loss"].backward(torch.tensor(seed, dtype=dtype))
    grads = {k: q.grad.detach().clone() for k, q in model.named_parameters()}
    return r, grads, amp, model


def plain(base, dtype):
    """arasr_ref's own forward/backward (no autocast) in dtype."""
    cfg, model, (feat, feat_len, text, text_len) = build(base, dtype)
    r = R.asr_train_step(model, cfg, feat.to(dtype), feat_len, text, text_len)
    r["loss"].backward()
    return r, {k: q.grad.detach().clone() for k, q in model.named_parameters()}


def maxrel(a, b, floor=1e-30):
    a, b = a.double(), b.double()
    return (a - b).abs().max().item() / max(b.abs().max().item(), floor)


def grad_diffs(ga, gb, scale_a=1.0, scale_b=1.0, floor_k_bias=None):
    """per tensor max|a/scale_a - b/scale_b| / max|b/scale_b| (k_layer.bias: denominator >= floor_k_bias)."""
    out = {}
    for k in gb:
        fl = floor_k_bias if (floor_k_bias is not None and k.endswith("k_layer.bias")) else 1e-30
        out[k] = maxrel(ga[k].double() / scale_a, gb[k].double() / scale_b, fl)
    return out


def worst(d):
    k = max(d, key=d.get)
    return k, d[k]


def relerr(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


def wiring_check(base):
    """Rounding disabled: the emulation must be arasr_ref's model."""
    r32, g32 = plain(base, torch.float32)
    r64, g64 = plain(base, torch.float64)
    e64, ge64, _, _ = run(base, torch.float64, None, 1.0)
    e32, ge32, _, _ = run(base, torch.float32, None, 1.0)
    fl = 1e-2  # the Swift test's floor for the attention key biases (true gradient 0)
    res = dict(
        emul64_vs_ref32_loss=relerr(e64["loss"].item(), r32["loss"].item()),
        emul64_vs_ref32_grad=worst(grad_diffs(ge64, g32, floor_k_bias=fl)),
        emul64_vs_ref64_loss=relerr(e64["loss"].item(), r64["loss"].item()),
        emul64_vs_ref64_grad=worst(grad_diffs(ge64, g64, floor_k_bias=fl)),
        emul32_vs_ref32_loss=relerr(e32["loss"].item(), r32["loss"].item()),
        emul32_vs_ref32_grad=worst(grad_diffs(ge32, g32, floor_k_bias=fl)),
    )
    return res, r32, g32


def f32(t):
    return t.detach().float().contiguous()


def run_case(name, spec, out_dir, refs_dir):
    base, p, seed = spec["base"], spec["p"], spec["seed"]
    cfg = R.CASES[base]
    pname = str(p).replace("torch.", "")

    wiring, r32, g32 = wiring_check(base)
    print(f"[{name}] wiring (rounding off): emulation float64 vs arasr_ref float32: loss {wiring['emul64_vs_ref32_loss']:.1e}, "
          f"worst grad {wiring['emul64_vs_ref32_grad'][1]:.1e} ({wiring['emul64_vs_ref32_grad'][0]}); "
          f"vs arasr_ref float64: loss {wiring['emul64_vs_ref64_loss']:.1e}, grad {wiring['emul64_vs_ref64_grad'][1]:.1e}; "
          f"emulation float32 vs arasr_ref float32: loss {wiring['emul32_vs_ref32_loss']:.1e}, grad {wiring['emul32_vs_ref32_grad'][1]:.1e}")
    assert wiring["emul64_vs_ref64_loss"] < 1e-12 and wiring["emul64_vs_ref64_grad"][1] < 1e-9
    assert wiring["emul64_vs_ref32_loss"] < 1e-5 and wiring["emul64_vs_ref32_grad"][1] < 1e-4

    r, grads, amp, model = run(base, torch.float64, p, seed)

    # the weights and inputs are asr_refs/<base>'s
    ref_w = load_file(str(refs_dir / base / "weights.safetensors"))
    ref_i = load_file(str(refs_dir / base / "inputs.safetensors"))
    _, m0, (feat, feat_len, text, text_len) = build(base, torch.float32)
    mine = R.stored_state(m0)
    assert set(mine) == set(ref_w) and all(torch.equal(mine[k], ref_w[k]) for k in mine), "weights differ from asr_refs"
    assert torch.equal(ref_i["feat"], feat) and torch.equal(ref_i["text"], text.float())
    assert torch.equal(ref_i["feat_len"], feat_len.float()) and torch.equal(ref_i["text_len"], text_len.float())

    # gradients of seed*loss as they land in the float32 gradient buffer
    g_store = {k: f32(v) for k, v in grads.items()}
    rnd = rounder(p)
    p_valued = []  # Linear / Conv2d weights and biases: their gradient is one P value (cast once per step)
    for k, v in grads.items():
        assert torch.isfinite(v).all(), f"{name}: non-finite gradient {k}"
        if torch.equal(v, rnd(v)):
            p_valued.append(k)
    casted = [k for k, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    casted = [f"{m}.{t}" for m in casted for t in ("weight", "bias") if f"{m}.{t}" in grads]
    assert set(casted) <= set(p_valued), set(casted) - set(p_valued)
    inter = dict(prenet_out=r["prenet_out"], enc_out=r["enc_out"], ctc_logits=r["ctc_logits"], logits=r["logits"],
                 **{"grad.logits": amp.keep["logits"].grad, "grad.ctc_logits": amp.keep["ctc_logits"].grad,
                    "grad.enc_out": r["enc_out"].grad})
    inter = {k: f32(v) for k, v in inter.items()}
    inter.update({f"after.{k}": v for k, v in R.stored_state(model).items() if ".conv." in k and "running" in k
                  or k.endswith("num_batches_tracked")})
    # P tensors must hold p values (checks the marks)
    for k in ("prenet_out", "ctc_logits", "logits", "grad.logits", "grad.ctc_logits"):
        assert torch.equal(inter[k].double(), rnd(inter[k].double())), k

    fl = 1e-2
    gd = grad_diffs(grads, g32, scale_a=seed, floor_k_bias=fl)
    out = dict(case=name, torch_version=torch.__version__, amp_dtype=pname, seed=seed,
               weights_from=f"asr_refs/{base}", inputs_from=f"asr_refs/{base}",
               working_precision="float64 (f tensors), rounded to p at the places of docs/amp-arasr.md",
               loss=r["loss"].item(), ce_loss=r["ce_loss"].item(), ctc_loss=r["ctc_loss"].item(),
               accuracy=r["accuracy"].item(), accuracy_correct=int(r["correct"]), accuracy_total=int(r["total"]),
               enc_feat_len=r["enc_feat_len"].tolist(), ctc_per_utt=r["ctc_per_utt"].tolist(),
               ctc_infinite_before_zeroing=r["ctc_infinite"].tolist(),
               ce_per_sentence=r["ce_per_sentence"].tolist(),
               float32=dict(loss=r32["loss"].item(), ce_loss=r32["ce_loss"].item(), ctc_loss=r32["ctc_loss"].item(),
                            accuracy=r32["accuracy"].item()),
               amp_vs_float32=dict(
                   loss_rel=relerr(r["loss"].item(), r32["loss"].item()),
                   ce_loss_rel=relerr(r["ce_loss"].item(), r32["ce_loss"].item()),
                   ctc_loss_rel=relerr(r["ctc_loss"].item(), r32["ctc_loss"].item()),
                   grad_maxrel_note=f"max|g_amp/seed - g_f32| / max|g_f32| per tensor (k_layer.bias: denominator "
                                    f">= {fl})",
                   grad_maxrel_worst=worst(gd), grad_maxrel_median=sorted(gd.values())[len(gd) // 2],
                   grad_maxrel=gd),
               p_valued_grads=casted,
               p_valued_intermediates=["prenet_out", "ctc_logits", "logits", "grad.logits", "grad.ctc_logits"],
               wiring_check_rounding_off=wiring,
               config=dict({k: v for k, v in cfg.items() if k != "text"}, batch_size=len(R.FEAT_LEN),
                           feat_len=R.FEAT_LEN, sos_eos_idx=R.SOS_EOS, blank_idx=R.BLANK, model_mode="train"))

    out["sensitivity"] = sensitivity(name, base, p, seed, r, grads)

    d = out_dir / name
    d.mkdir(parents=True, exist_ok=True)
    save_file(g_store, str(d / "grads.safetensors"))
    save_file(inter, str(d / "intermediates.safetensors"))
    (d / "outputs.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"[{name}] p {pname} seed {seed:g}: loss {out['loss']:.8f} ce {out['ce_loss']:.8f} ctc {out['ctc_loss']:.8f} "
          f"acc {out['accuracy_correct']}/{out['accuracy_total']} | float32 loss "
          f"{out['float32']['loss']:.8f}: rel {out['amp_vs_float32']['loss_rel']:.2e}, grads worst "
          f"{gd[worst(gd)[0]]:.2e} ({worst(gd)[0]}), median {out['amp_vs_float32']['grad_maxrel_median']:.2e}")
    return out


def sensitivity(name, base, p, seed, r_ref, g_ref):
    """Leave one rounding place out, or do the whole emulation in float32: change vs the reference."""
    fl = 1e-2 * seed
    res = {}
    variants = [("float32_working_precision", torch.float32, (), False),
                ("float32_reversed_sums", torch.float32, (), True)] + \
               [(k, torch.float64, (k,), False) for k in ABLATIONS
                if k != "conv_bias_in_one_rounding" or not R.CASES[base]["conv_batchnorm"]]  # bn: no conv bias
    for vname, dtype, skip, rev in variants:
        r, g, _, _ = run(base, dtype, p, seed, skip, rev)
        gd = grad_diffs(g, g_ref, floor_k_bias=fl)
        w = worst(gd)
        res[vname] = dict(what=ABLATIONS.get(vname, VARIANTS.get(vname)),
                          loss_rel=relerr(r["loss"].item(), r_ref["loss"].item()),
                          grad_worst=w[1], grad_worst_tensor=w[0], grad_median=sorted(gd.values())[len(gd) // 2],
                          grad_tensors_over_1em3=sum(v > 1e-3 for v in gd.values()), n_tensors=len(gd))
        print(f"  [{name}] {vname:32s} loss rel {res[vname]['loss_rel']:.2e}  grad worst {w[1]:.2e} ({w[0]})  "
              f"median {res[vname]['grad_median']:.2e}")
    return res


def torch_autocast_check():
    """The marks against real autograd: torch.autocast("cpu", bfloat16) on Linear -> GELU -> Linear (+ an f residual,
    float32 loss) vs the emulation; the parameter gradients (single P values) must agree bit for bit."""
    g = torch.Generator().manual_seed(0)
    x, w1, b1, w2, b2 = (torch.randn(s, generator=g) for s in ((3, 5, 16), (32, 16), (32,), (16, 32), (16,)))
    real = [t.clone().requires_grad_() for t in (x, w1, b1, w2, b2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = F.linear(F.gelu(F.linear(real[0], real[1], real[2])), real[3], real[4])
        out = y + real[0]
    assert y.dtype == torch.bfloat16 and out.dtype == torch.float32
    loss = (out.float() ** 2).sum() / 100
    loss.backward()
    amp = Amp(torch.bfloat16)
    emu = [t.double().requires_grad_() for t in (x, w1, b1, w2, b2)]
    h = amp.P(F.gelu(amp.P(F.linear(amp.P(emu[0]), amp.P(emu[1]), amp.P(emu[2])))))
    l2 = ((amp.P(F.linear(amp.P(h), amp.P(emu[3]), amp.P(emu[4]))) + emu[0]) ** 2).sum() / 100
    l2.backward()
    for r, e in zip(real[1:], emu[1:]):
        assert torch.equal(r.grad, e.grad.float()), "emulation disagrees with torch.autocast on the CPU"
    print(f"torch.autocast(cpu, bfloat16) check: parameter gradients bit-identical; loss rel "
          f"{relerr(l2.item(), loss.item()):.1e}, dx max rel {maxrel(emu[0].grad, real[0].grad):.1e} (float32 sums)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[2] / "Tests/SpeechainMPITests/Resources"
    ap.add_argument("--out", type=Path, default=root / "asr_amp_refs")
    ap.add_argument("--refs", type=Path, default=root / "asr_refs", help="where asr_refs/<case> weights/inputs are")
    args = ap.parse_args()
    torch_autocast_check()
    for name, spec in AMP_CASES.items():
        run_case(name, spec, args.out, args.refs)


if __name__ == "__main__":
    main()
