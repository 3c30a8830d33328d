#!/usr/bin/env python3
"""Float64 PyTorch references of every layer's forward and backward, for the float32 Swift layers.

For each case the script draws float32 inputs, parameters and an upstream gradient dy, then computes with PyTorch
in float64 (the float32 values widened exactly) the outputs and, by autograd of sum(y * dy) (or of the loss), the
gradients of every input and parameter. It writes:

  Tests/SpeechainMPITests/Resources/layer_refs/layers.safetensors   Linear, GELU (exact, tanh), ReLU, Tanh,
                                                                    LayerNorm, Dropout, cross-entropy
  Tests/SpeechainMPITests/Resources/layer_refs/speech.safetensors   the speech path's modules: Conv2d, BatchNorm2d
                                                                    (train, eval), LeakyReLU, Conv2dPrenet, multi-head
                                                                    attention (padding, causal, cross, dropout),
                                                                    positional encoding, embedding (padding_idx 0),
                                                                    feed-forward, Transformer encoder and decoder,
                                                                    CTC loss, sequence cross-entropy
  Tests/SpeechainMPITests/Resources/layer_refs/cases.json           per case: its settings (lengths, tokens, p, ...)
                                                                    and the error of torch's own float32 run

Tensor names are `<case>.<kind>.<name>`, kind one of
  in     float32 input              param  float32 parameter (the Swift ParameterStore's name, no prefix)
  dy     float32 upstream gradient  out    float64 output
  grad   float64 gradient of an input or parameter (same name)
  buf    float64 buffer after the forward (BatchNorm running statistics); `bufin` the float32 one before it.

Dropout masks are data: each is what the Swift side's generator draws (xoshiro256** seeded through SplitMix64,
`Xoshiro256(seed:)`; a value is dropped when `nextUnitFloat() < p`, in the order the Swift layers draw), written out
as `<case>.mask.<name>` (float32 0/1) and multiplied in here as `x * mask / (1 - p)`. The Swift test checks that its
layers drew exactly these masks.

Every case is also checked with torch.autograd.gradcheck (float64 central differences against float64 autograd,
the whole Jacobian) and run again in float32 by torch itself: its max-norm error against float64 is printed and
stored (`torch_f32_error`), the precision a float32 implementation can be expected to reach.

Usage (from the repository root; needs torch, numpy, safetensors):
    /tmp/torchvenv/bin/python scripts/reference/layer_refs.py [--out DIR] [--no-gradcheck]
"""

import argparse
import hashlib
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

M64 = (1 << 64) - 1


class Xoshiro256:
    """The Swift side's `Xoshiro256` (Sources/SpeechainMPI/Numerics/Random.swift): xoshiro256** seeded by SplitMix64."""

    def __init__(self, seed):
        z = seed & M64
        s = []
        for _ in range(4):
            z = (z + 0x9E3779B97F4A7C15) & M64
            x = z
            x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
            x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
            s.append(x ^ (x >> 31))
        self.s = s

    def next(self):
        s0, s1, s2, s3 = self.s
        r = (s1 * 5) & M64
        result = ((((r << 7) | (r >> 57)) & M64) * 9) & M64
        t = (s1 << 17) & M64
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = ((s3 << 45) | (s3 >> 19)) & M64
        self.s = [s0, s1, s2, s3]
        return result

    def keep_mask(self, shape, p):
        """1 where kept, 0 where dropped: Swift's `rng.nextUnitFloat() < p ? 0 : keep` in row-major order."""
        n = int(np.prod(shape))
        p32 = float(np.float32(p))
        u = [(self.next() >> 40) * 2.0 ** -24 for _ in range(n)]
        return torch.tensor([0.0 if v < p32 else 1.0 for v in u], dtype=torch.float32).reshape(shape)


def case_seed(name):
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


class Draw:
    """float32 data for one case, from a generator seeded by the case's name."""

    def __init__(self, name):
        self.g = torch.Generator().manual_seed(case_seed(name))

    def uniform(self, shape, lo=-1.0, hi=1.0):
        return lo + (hi - lo) * torch.rand(shape, generator=self.g, dtype=torch.float32)

    def normal(self, shape, scale=1.0):
        return scale * torch.randn(shape, generator=self.g, dtype=torch.float32)

    def away_from_zero(self, shape, lo, hi):
        """|x| in [lo, hi], random sign."""
        m = self.uniform(shape, lo, hi)
        s = torch.where(torch.rand(shape, generator=self.g) < 0.5, -1.0, 1.0)
        return (m * s).float()


def max_norm_error(a, ref, floor=0.0):
    ref = ref.double()
    scale = max(ref.abs().max().item(), floor)
    err = (a.double() - ref).abs().max().item()
    return err / scale if scale > 0 else err


# ----------------------------------------------------------------------------------------------- functional modules
# Each forward takes a dict of tensors (inputs, parameters, masks) of one dtype and the case's settings, and returns
# a dict of outputs. Parameter names are the Swift ParameterStore's (SpeeChain's state_dict names, no prefix).

def dropout(x, mask, p):
    return x if mask is None else x * mask / (1 - p)


def mha(t, pre, query, kv, key_lengths, causal, heads, scale, att_mask=None, p=0.0):
    """SpeeChain's MultiHeadedAttention: scores·scale, keys past each length (and, causal, after the query) at -inf."""
    b, tq, d = query.shape
    tk = kv.shape[1]
    hs = d // heads

    def split(x):
        return x.view(b, -1, heads, hs).transpose(1, 2)

    k = split(F.linear(kv, t[pre + "k_layer.weight"], t[pre + "k_layer.bias"]))
    v = split(F.linear(kv, t[pre + "v_layer.weight"], t[pre + "v_layer.bias"]))
    q = split(F.linear(query, t[pre + "q_layer.weight"], t[pre + "q_layer.bias"]))
    scores = torch.matmul(q, k.transpose(2, 3)) * scale
    keep = torch.arange(tk)[None, None, :] < torch.tensor(key_lengths)[:, None, None]  # [B, 1, Tk]
    keep = keep.expand(b, tq, tk)
    if causal:
        keep = keep & (torch.arange(tk)[None, :] <= torch.arange(tq)[:, None])[None]
    scores = scores.masked_fill(~keep[:, None], float("-inf"))
    att = dropout(torch.softmax(scores, dim=-1), att_mask, p)
    ctx = torch.matmul(att, v).transpose(1, 2).contiguous().view(b, tq, d)
    return F.linear(ctx, t[pre + "output_layer.weight"], t[pre + "output_layer.bias"])


def activation(name, x):
    if name == "GELU":
        return F.gelu(x)
    if name == "ReLU":
        return F.relu(x)
    if name == "LeakyReLU":
        return F.leaky_relu(x, 0.01)
    raise ValueError(name)


def ffn(t, pre, x, act, mask=None, p=0.0, pre_acts=None):
    h = F.linear(x, t[pre + "in_layer.weight"], t[pre + "in_layer.bias"])
    if pre_acts is not None:
        pre_acts.append(h)
    return F.linear(dropout(activation(act, h), mask, p), t[pre + "out_layer.weight"], t[pre + "out_layer.bias"])


def posenc_table(frames, d):
    """SpeeChain's 'mix' table, computed in float32 as its module builds the buffer (a float64 model widens it)."""
    position = torch.arange(0, frames, dtype=torch.float).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d, 2, dtype=torch.float) * (math.log(10000.0) / d))
    pe = torch.zeros(frames, d)
    pe[:, 0::2] = torch.sin(position / div_term)
    pe[:, 1::2] = torch.cos(position / div_term)
    return pe


def posenc(x, emb_scale, mask=None, p=0.0):
    d = x.shape[-1]
    if emb_scale:
        x = x * math.sqrt(d)
    return dropout(x + posenc_table(x.shape[1], d).to(x.dtype), mask, p)


def layer_norm(t, pre, x, eps):
    return F.layer_norm(x, (x.shape[-1],), t[pre + "weight"], t[pre + "bias"], eps)


# ----------------------------------------------------------------------------------------------- case machinery
class Case:
    def __init__(self, group, name, conf, forward, inputs, params, masks=None, buffers=None, grad_inputs=None,
                 scalar=False, kinks=None, gradcheck=True):
        self.group, self.name, self.conf, self.forward = group, name, conf, forward
        self.inputs, self.params = inputs, params          # name -> float32 tensor
        self.masks = masks or {}                           # name -> float32 0/1 tensor
        self.buffers = buffers or {}                       # name -> float32 tensor (BatchNorm running statistics)
        self.grad_inputs = list(inputs) if grad_inputs is None else grad_inputs
        self.scalar = scalar                               # a loss: d(loss) = 1
        self.kinks = kinks                                 # fn(outputs-with-extras) -> pre-activations to keep off 0
        self.check_gradients = gradcheck                   # False: the gradient is deliberately not the derivative

    def run(self, dtype, dys=None):
        leaves = {k: v.to(dtype).clone().requires_grad_(k in self.grad_inputs) for k, v in self.inputs.items()}
        leaves.update({k: v.to(dtype).clone().requires_grad_(True) for k, v in self.params.items()})
        t = dict(leaves)
        t.update({"mask." + k: v.to(dtype) for k, v in self.masks.items()})
        bufs = {k: v.to(dtype).clone() for k, v in self.buffers.items()}
        t.update({"buf." + k: v for k, v in bufs.items()})
        extras = {}
        outs = self.forward(t, self.conf, extras)
        if dys is None:
            dys = {} if self.scalar else {k: DRAW[self.name].normal(v.shape) for k, v in outs.items()}
        if self.scalar:
            (loss,) = outs.values()
            loss.backward()
        else:
            torch.autograd.backward([outs[k] for k in outs], [dys[k].to(dtype) for k in outs])
        grads = {k: v.grad.detach().clone() for k, v in leaves.items() if v.requires_grad}
        return {k: v.detach() for k, v in outs.items()}, grads, bufs, dys, extras

    def gradcheck(self):
        names = self.grad_inputs + list(self.params)
        base = {k: v.double() for k, v in {**self.inputs, **self.params}.items()}

        def fn(*xs):
            t = dict(base)
            t.update(dict(zip(names, xs)))
            t.update({"mask." + k: v.double() for k, v in self.masks.items()})
            t.update({"buf." + k: v.double().clone() for k, v in self.buffers.items()})
            return tuple(self.forward(t, self.conf, {}).values())

        xs = tuple(base[k].clone().requires_grad_(True) for k in names)
        return torch.autograd.gradcheck(fn, xs, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=False)


DRAW = {}
CASES = []


def add(case):
    CASES.append(case)


def new(name):
    DRAW[name] = Draw(name)
    return DRAW[name]


# ----------------------------------------------------------------------------------------------- the layers
def layer_cases():
    for bias in (True, False):
        name = f"linear_{'bias' if bias else 'nobias'}"
        d = new(name)
        params = {"weight": d.uniform((5, 7), -0.5, 0.5)}
        if bias:
            params["bias"] = d.uniform((5,), -0.5, 0.5)
        add(Case("layers", name, {"in": 7, "out": 5, "bias": bias},
                 lambda t, c, e: {"y": F.linear(t["x"], t["weight"], t.get("bias"))},
                 {"x": d.uniform((6, 7), -2, 2)}, params))

    # Activations: |x| in [0.05, 5] (GELU's curvature lives in |x| < 3; ReLU kept off its kink), plus a few fixed values.
    fixed = torch.tensor([0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 3.0, -3.0, 0.1, -0.1, 4.5, -4.5], dtype=torch.float32)
    for name, conf, fn in [
        ("gelu_none", {"approximate": "none"}, lambda t, c, e: {"y": F.gelu(t["x"], approximate="none")}),
        ("gelu_tanh", {"approximate": "tanh"}, lambda t, c, e: {"y": F.gelu(t["x"], approximate="tanh")}),
        ("relu", {}, lambda t, c, e: {"y": F.relu(t["x"])}),
        ("tanh", {}, lambda t, c, e: {"y": torch.tanh(t["x"])}),
    ]:
        d = new(name)
        x = torch.cat([d.away_from_zero((60,), 0.05, 5.0), fixed]).reshape(8, 9)
        add(Case("layers", name, conf, fn, {"x": x}, {}))

    # LayerNorm with the MLP's eps (1e-5) and the Transformer's (1e-6). Rows: spread 1 around 0, spread 2 around 3, and
    # one of spread ~3e-3 around 0 whose variance (~1e-5) is of the order of eps, so eps visibly matters.
    for eps in (1e-5, 1e-6):
        name = f"layernorm_eps{eps:g}"
        d = new(name)
        x = torch.cat([d.normal((3, 16)), 3 + 2 * d.normal((2, 16)), d.normal((1, 16), 3e-3)])
        params = {"weight": d.uniform((16,), 0.5, 1.5) * torch.where(torch.arange(16) % 3 == 0, -1.0, 1.0),
                  "bias": d.uniform((16,), -0.5, 0.5)}
        add(Case("layers", name, {"eps": eps, "features": 16},
                 lambda t, c, e: {"y": F.layer_norm(t["x"], (16,), t["weight"], t["bias"], c["eps"])},
                 {"x": x}, params))

    # Dropout p = 0.3 with the mask Xoshiro256(seed: 99) draws.
    name = "dropout"
    d = new(name)
    p, seed = 0.3, 99
    x = d.away_from_zero((6, 10), 0.1, 2.0)
    mask = Xoshiro256(seed).keep_mask((6, 10), p)
    add(Case("layers", name, {"p": p, "seed": seed},
             lambda t, c, e: {"y": dropout(t["x"], t["mask.y"], c["p"])}, {"x": x}, {}, masks={"y": mask}))

    # Cross-entropy (mean over rows) with label smoothing 0 and 0.1.
    for eps in (0.0, 0.1):
        name = f"cross_entropy_ls{eps:g}"
        d = new(name)
        labels = [0, 6, 3, 3, 1, 5]
        add(Case("layers", name, {"label_smoothing": eps, "labels": labels},
                 lambda t, c, e: {"loss": F.cross_entropy(t["logits"], torch.tensor(c["labels"]),
                                                          label_smoothing=c["label_smoothing"])},
                 {"logits": d.uniform((6, 7), -3, 3)}, {}, scalar=True))


# ----------------------------------------------------------------------------------------------- the speech path
def attention_params(d, pre, dm, w=0.5):
    out = {}
    for layer in ("k_layer", "v_layer", "q_layer", "output_layer"):
        out[f"{pre}{layer}.weight"] = d.uniform((dm, dm), -w, w)
        out[f"{pre}{layer}.bias"] = d.uniform((dm,), -0.3, 0.3)
    return out


def norm_params(d, pre, dm):
    return {pre + "weight": d.uniform((dm,), 0.6, 1.4), pre + "bias": d.uniform((dm,), -0.3, 0.3)}


def ffn_params(d, pre, dm, hidden, w=0.5):
    return {pre + "in_layer.weight": d.uniform((hidden, dm), -w, w), pre + "in_layer.bias": d.uniform((hidden,), -0.3, 0.3),
            pre + "out_layer.weight": d.uniform((dm, hidden), -w, w), pre + "out_layer.bias": d.uniform((dm,), -0.3, 0.3)}


def speech_cases():
    # Conv2d: [B, Cin, H, W] with a square kernel 3, no padding.
    for stride, bias in ((2, True), (1, False), (3, True)):
        name = f"conv2d_s{stride}_{'bias' if bias else 'nobias'}"
        d = new(name)
        params = {"weight": d.uniform((3, 2, 3, 3), -0.4, 0.4)}
        if bias:
            params["bias"] = d.uniform((3,), -0.3, 0.3)
        add(Case("speech", name, {"stride": stride, "bias": bias, "in": 2, "out": 3, "kernel": 3},
                 lambda t, c, e: {"y": F.conv2d(t["x"], t["weight"], t.get("bias"), stride=c["stride"])},
                 {"x": d.uniform((2, 2, 9, 8), -2, 2)}, params))

    # BatchNorm2d over [3, 2, 3, 4] (channel 1 off-centre), training (batch statistics, running statistics updated)
    # and evaluation (the running statistics).
    for training in (True, False):
        name = f"batchnorm2d_{'train' if training else 'eval'}"
        d = new(name)
        x = d.uniform((3, 2, 3, 4), -2, 2)
        x[:, 1] = 1.5 + 0.5 * x[:, 1]
        params = {"weight": torch.tensor([1.3, -0.7]), "bias": torch.tensor([0.2, -0.4])}
        buffers = {"running_mean": d.uniform((2,), -0.5, 0.5), "running_var": d.uniform((2,), 0.5, 1.5)}

        def bn(t, c, e):
            y = F.batch_norm(t["x"], t["buf.running_mean"], t["buf.running_var"], t["weight"], t["bias"],
                             training=c["training"], momentum=0.1, eps=1e-5)
            return {"y": y}
        add(Case("speech", name, {"training": training, "eps": 1e-5, "momentum": 0.1}, bn, {"x": x}, params,
                 buffers=buffers))

    for slope in (0.01, 0.2):
        name = f"leaky_relu_{slope:g}"
        d = new(name)
        add(Case("speech", name, {"slope": slope},
                 lambda t, c, e: {"y": F.leaky_relu(t["x"], c["slope"])},
                 {"x": d.away_from_zero((6, 8), 0.05, 2.0)}, {}))

    # Conv2dPrenet: [B, T, F] → conv(k3, s2) [→ BatchNorm2d] → activation, twice → [B, T', C·F'] → Linear → Linear.
    for bn, act in ((True, "LeakyReLU"), (False, "ReLU")):
        name = f"prenet_{'bn' if bn else 'nobn'}_{act.lower()}"
        d = new(name)
        b, frames, feat, lengths = 3, 17, 12, [17, 12, 8]
        x = d.uniform((b, frames, feat), -2, 2)
        for i, n in enumerate(lengths):
            x[i, n:] = 0
        params, buffers, idx = {}, {}, 0
        prev = 1
        layout = []
        for c in (3, 4):
            params[f"conv.{idx}.weight"] = d.uniform((c, prev, 3, 3), -0.5, 0.5)
            conv_name = f"conv.{idx}"
            if not bn:
                params[f"conv.{idx}.bias"] = d.uniform((c,), -0.3, 0.3)
            idx += 1
            norm_name = None
            if bn:
                norm_name = f"conv.{idx}"
                params[f"conv.{idx}.weight"] = d.uniform((c,), 0.6, 1.4)
                params[f"conv.{idx}.bias"] = d.uniform((c,), -0.3, 0.3)
                buffers[f"conv.{idx}.running_mean"] = torch.zeros(c)
                buffers[f"conv.{idx}.running_var"] = torch.ones(c)
                idx += 1
            idx += 1  # the activation's index
            layout.append((conv_name, norm_name))
            prev = c
        params["linear.linear.0.weight"] = d.uniform((7, 4 * 2), -0.5, 0.5)
        params["linear.linear.0.bias"] = d.uniform((7,), -0.3, 0.3)
        params["linear.linear.1.weight"] = d.uniform((6, 7), -0.5, 0.5)
        params["linear.linear.1.bias"] = d.uniform((6,), -0.3, 0.3)

        def prenet(t, c, e, layout=layout):
            h = t["feat"].unsqueeze(1)
            for conv_name, norm_name in layout:
                h = F.conv2d(h, t[conv_name + ".weight"], t.get(conv_name + ".bias"), stride=2)
                if norm_name:
                    h = F.batch_norm(h, t[f"buf.{norm_name}.running_mean"], t[f"buf.{norm_name}.running_var"],
                                     t[norm_name + ".weight"], t[norm_name + ".bias"], training=True, momentum=0.1,
                                     eps=1e-5)
                e.setdefault("pre_acts", []).append(h)
                h = activation(c["activation"], h)
            bb, cc, tt, ff = h.shape
            h = h.transpose(1, 2).contiguous().view(bb, tt, cc * ff)
            h = F.linear(h, t["linear.linear.0.weight"], t["linear.linear.0.bias"])
            return {"y": F.linear(h, t["linear.linear.1.weight"], t["linear.linear.1.bias"])}
        add(Case("speech", name, {"batchnorm": bn, "activation": act, "conv_dims": [3, 4], "lnr_dims": [7, 6],
                                  "lengths": lengths},
                 prenet, {"feat": x}, params, buffers=buffers, grad_inputs=[],
                 kinks=lambda e: e["pre_acts"]))

    # Multi-head attention, d_model 8, 2 heads, batch 3.
    att_cases = [
        # name, cross, causal, p, scale_by_head, Tq, Tk, key_lengths
        ("mha_self_pad", False, False, 0.0, False, 6, 6, [6, 4, 2]),
        ("mha_self_causal_byhead", False, True, 0.0, True, 6, 6, [6, 5, 3]),
        ("mha_self_causal_dropout", False, True, 0.2, False, 5, 5, [5, 3, 1]),
        ("mha_cross", True, False, 0.0, False, 4, 7, [7, 5, 2]),
        ("mha_cross_dropout_byhead", True, False, 0.2, True, 4, 7, [3, 7, 1]),
    ]
    for name, cross, causal, p, by_head, tq, tk, lens in att_cases:
        d = new(name)
        dm, heads, b, seed = 8, 2, 3, 45
        inputs = {"query": d.uniform((b, tq, dm), -2, 2)}
        if cross:
            inputs["source"] = d.uniform((b, tk, dm), -2, 2)
        params = attention_params(d, "", dm)
        masks = {"att": Xoshiro256(seed).keep_mask((b, heads, tq, tk), p)} if p > 0 else {}

        def att(t, c, e):
            kv = t["source"] if c["cross"] else t["query"]
            scale = 1 / math.sqrt(c["d_model"] // c["heads"] if c["scale_by_head"] else c["d_model"])
            return {"y": mha(t, "", t["query"], kv, c["key_lengths"], c["causal"], c["heads"], scale,
                             t.get("mask.att"), c["p"])}
        add(Case("speech", name, {"cross": cross, "causal": causal, "p": p, "scale_by_head": by_head, "d_model": dm,
                                  "heads": heads, "key_lengths": lens, "seed": seed}, att, inputs, params, masks=masks))

    # Positional encoding (d 6, 2 × 5 frames), dropout 0.25 from Xoshiro256(seed: 33).
    for scale in (True, False):
        name = f"posenc_{'scale' if scale else 'noscale'}"
        d = new(name)
        p, seed = 0.25, 33
        mask = Xoshiro256(seed).keep_mask((2, 5, 6), p)
        add(Case("speech", name, {"emb_scale": scale, "p": p, "seed": seed, "d_model": 6},
                 lambda t, c, e: {"y": posenc(t["x"], c["emb_scale"], t["mask.y"], c["p"])},
                 {"x": d.uniform((2, 5, 6), -1, 1)}, {}, masks={"y": mask}))

    # Embedding with padding_idx 0 (row 0 non-zero here, so that its use in the forward shows), optionally ×√d.
    for scale in (False, True):
        name = f"embed_{'scale' if scale else 'noscale'}"
        d = new(name)
        tokens = [5, 1, 2, 2, 0, 0, 3, 1, 5, 0, 0, 0]
        add(Case("speech", name, {"scale": scale, "tokens": tokens, "vocab": 6, "dim": 4},
                 lambda t, c, e: {"y": F.embedding(torch.tensor(c["tokens"]), t["embed.weight"], padding_idx=0)
                                  * (math.sqrt(4) if c["scale"] else 1.0)},
                 {}, {"embed.weight": d.normal((6, 4))},
                 gradcheck=False))  # padding_idx: row 0 is read, yet its gradient is 0 by definition

    # Feed-forward d 6 → 9 → 6 over 10 rows: GELU with dropout 0.2 (Xoshiro256(seed: 54)), ReLU without.
    for act, p in (("GELU", 0.2), ("ReLU", 0.0)):
        name = f"ffn_{act.lower()}"
        d = new(name)
        seed = 54
        masks = {"hidden": Xoshiro256(seed).keep_mask((10, 9), p)} if p > 0 else {}

        def ff(t, c, e):
            pre = e.setdefault("pre_acts", [])
            return {"y": ffn(t, "", t["x"], c["activation"], t.get("mask.hidden"), c["p"], pre)}
        add(Case("speech", name, {"activation": act, "p": p, "seed": seed, "d_model": 6, "hidden": 9}, ff,
                 {"x": d.uniform((10, 6), -2, 2)}, ffn_params(d, "", 6, 9),
                 masks=masks, kinks=(lambda e: e["pre_acts"]) if act == "ReLU" else None))

    # Transformer encoder and decoder: d 8, 2 heads, FFN 12, 2 pre-LN layers, LayerNorm eps 1e-6.
    dm, heads, ffn_dim, nl = 8, 2, 12, 2
    for act, p in (("GELU", 0.1), ("ReLU", 0.0)):
        name = f"encoder_{act.lower()}"
        d = new(name)
        b, frames, lengths, seed, emb_scale = 3, 6, [6, 4, 2], 64, act == "GELU"
        params = {}
        for i in range(nl):
            pre = f"trfm_layers.{i}."
            params.update(attention_params(d, pre + "multihead_att.", dm))
            params.update(ffn_params(d, pre + "feed_forward.", dm, ffn_dim))
            params.update(norm_params(d, pre + "att_layernorm.", dm))
            params.update(norm_params(d, pre + "fdfwd_layernorm.", dm))
        params.update(norm_params(d, "layernorm.", dm))
        n = b * frames
        masks = {}
        if p > 0:
            # The Swift encoder's draws, in order: posenc; per layer the attention's [B, H, T, T], the residual
            # dropout after it, the FFN's hidden dropout, the residual dropout after the FFN.
            rng = Xoshiro256(seed)
            masks["posenc"] = rng.keep_mask((b, frames, dm), p)
            for i in range(nl):
                masks[f"{i}.att"] = rng.keep_mask((b, heads, frames, frames), p)
                masks[f"{i}.att_res"] = rng.keep_mask((b, frames, dm), p)
                masks[f"{i}.ffn"] = rng.keep_mask((b, frames, ffn_dim), p)
                masks[f"{i}.ffn_res"] = rng.keep_mask((b, frames, dm), p)

        def enc(t, c, e):
            p, pre_acts = c["p"], e.setdefault("pre_acts", [])
            x = posenc(t["x"], c["emb_scale"], t.get("mask.posenc"), p)
            for i in range(c["layers"]):
                pre = f"trfm_layers.{i}."
                h = layer_norm(t, pre + "att_layernorm.", x, 1e-6)
                a = mha(t, pre + "multihead_att.", h, h, c["lengths"], False, c["heads"], 1 / math.sqrt(c["d_model"]),
                        t.get(f"mask.{i}.att"), p)
                x = dropout(a, t.get(f"mask.{i}.att_res"), p) + x
                f = ffn(t, pre + "feed_forward.", layer_norm(t, pre + "fdfwd_layernorm.", x, 1e-6), c["activation"],
                        t.get(f"mask.{i}.ffn"), p, pre_acts)
                x = dropout(f, t.get(f"mask.{i}.ffn_res"), p) + x
            return {"y": layer_norm(t, "layernorm.", x, 1e-6)}
        add(Case("speech", name, {"activation": act, "p": p, "seed": seed, "emb_scale": emb_scale, "d_model": dm,
                                  "heads": heads, "ffn": ffn_dim, "layers": nl, "lengths": lengths}, enc,
                 {"x": d.uniform((b, frames, dm), -1, 1)}, params, masks=masks,
                 kinks=(lambda e: e["pre_acts"]) if act == "ReLU" else None))

        name = f"decoder_{act.lower()}"
        d = new(name)
        b, tokens, frames, tlens, slens, seed = 3, 5, 6, [5, 3, 2], [6, 4, 2], 75
        params = {}
        for i in range(nl):
            pre = f"trfm_layers.{i}."
            params.update(attention_params(d, pre + "self_att.", dm))
            params.update(attention_params(d, pre + "encdec_att.", dm))
            params.update(ffn_params(d, pre + "feed_forward.", dm, ffn_dim))
            params.update(norm_params(d, pre + "self_att_ln.", dm))
            params.update(norm_params(d, pre + "encdec_att_ln.", dm))
            params.update(norm_params(d, pre + "fdfwd_ln.", dm))
        params.update(norm_params(d, "layernorm.", dm))
        masks = {}
        if p > 0:
            rng = Xoshiro256(seed)
            masks["posenc"] = rng.keep_mask((b, tokens, dm), p)
            for i in range(nl):
                masks[f"{i}.self"] = rng.keep_mask((b, heads, tokens, tokens), p)
                masks[f"{i}.self_res"] = rng.keep_mask((b, tokens, dm), p)
                masks[f"{i}.cross"] = rng.keep_mask((b, heads, tokens, frames), p)
                masks[f"{i}.cross_res"] = rng.keep_mask((b, tokens, dm), p)
                masks[f"{i}.ffn"] = rng.keep_mask((b, tokens, ffn_dim), p)
                masks[f"{i}.ffn_res"] = rng.keep_mask((b, tokens, dm), p)

        def dec(t, c, e):
            p, pre_acts, s = c["p"], e.setdefault("pre_acts", []), 1 / math.sqrt(c["d_model"])
            x = posenc(t["x"], True, t.get("mask.posenc"), p)
            for i in range(c["layers"]):
                pre = f"trfm_layers.{i}."
                h = layer_norm(t, pre + "self_att_ln.", x, 1e-6)
                a = mha(t, pre + "self_att.", h, h, c["token_lengths"], True, c["heads"], s, t.get(f"mask.{i}.self"), p)
                x = dropout(a, t.get(f"mask.{i}.self_res"), p) + x
                h = layer_norm(t, pre + "encdec_att_ln.", x, 1e-6)
                a = mha(t, pre + "encdec_att.", h, t["source"], c["source_lengths"], False, c["heads"], s,
                        t.get(f"mask.{i}.cross"), p)
                x = dropout(a, t.get(f"mask.{i}.cross_res"), p) + x
                f = ffn(t, pre + "feed_forward.", layer_norm(t, pre + "fdfwd_ln.", x, 1e-6), c["activation"],
                        t.get(f"mask.{i}.ffn"), p, pre_acts)
                x = dropout(f, t.get(f"mask.{i}.ffn_res"), p) + x
            return {"y": layer_norm(t, "layernorm.", x, 1e-6)}
        add(Case("speech", name, {"activation": act, "p": p, "seed": seed, "emb_scale": True, "d_model": dm,
                                  "heads": heads, "ffn": ffn_dim, "layers": nl, "token_lengths": tlens,
                                  "source_lengths": slens}, dec,
                 {"x": d.uniform((b, tokens, dm), -1, 1), "source": d.uniform((b, frames, dm), -1.5, 1.5)}, params,
                 masks=masks, kinks=(lambda e: e["pre_acts"]) if act == "ReLU" else None))

    # CTC (SpeeChain's criterion): log_softmax → ctc_loss(blank 0, reduction none, zero_infinity) → mean over the batch.
    # Utterance 3 is unalignable (3 3 3 needs 5 frames, it has 4): loss and gradient 0. Padded frames hold garbage.
    name = "ctc"
    d = new(name)
    in_lens, tgt_lens = [12, 10, 7, 4], [4, 3, 0, 3]
    targets = [[1, 2, 2, 4], [3, 3, 5, 0], [0, 0, 0, 0], [3, 3, 3, 0]]
    logits = d.normal((4, 12, 6))
    for i, n in enumerate(in_lens):
        logits[i, n:] = d.normal((12 - n, 6), 30.0)

    def ctc(t, c, e):
        lp = F.log_softmax(t["logits"], dim=-1).transpose(0, 1)
        tg = torch.tensor(c["targets"])
        per = F.ctc_loss(lp, tg, torch.tensor(c["input_lengths"]), torch.tensor(c["target_lengths"]), blank=0,
                         reduction="none", zero_infinity=True)
        return {"loss": per.mean()}
    add(Case("speech", name, {"input_lengths": in_lens, "target_lengths": tgt_lens, "targets": targets}, ctc,
             {"logits": logits}, {}, scalar=True))

    # SequenceCrossEntropy: Σ over each sentence's tokens of the label-smoothed CE, mean over sentences.
    for eps in (0.0, 0.1):
        name = f"seq_ce_ls{eps:g}"
        d = new(name)
        lengths, targets = [5, 3, 1], [[1, 2, 3, 4, 6], [5, 5, 6, 0, 0], [6, 0, 0, 0, 0]]
        z = d.uniform((3, 5, 7), -3, 3)
        for i, n in enumerate(lengths):
            z[i, n:] = d.uniform((5 - n, 7), -30, 30)

        def seq_ce(t, c, e):
            b, n, v = t["logits"].shape
            per = F.cross_entropy(t["logits"].reshape(b * n, v), torch.tensor(c["targets"]).reshape(-1),
                                  label_smoothing=c["label_smoothing"], reduction="none").reshape(b, n)
            valid = torch.arange(n)[None, :] < torch.tensor(c["lengths"])[:, None]
            return {"loss": (per * valid).sum() / b}
        add(Case("speech", name, {"label_smoothing": eps, "lengths": lengths, "targets": targets}, seq_ce,
                 {"logits": z}, {}, scalar=True))


# ----------------------------------------------------------------------------------------------- main
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    parser.add_argument("--out", default=os.path.join(root, "Tests/SpeechainMPITests/Resources/layer_refs"))
    parser.add_argument("--no-gradcheck", action="store_true")
    args = parser.parse_args()

    layer_cases()
    speech_cases()
    files = {"layers": {}, "speech": {}}
    meta = {"torch_version": torch.__version__, "numpy_version": np.__version__,
            "generator": "scripts/reference/layer_refs.py", "cases": {}}
    worst_f32 = 0.0
    for case in CASES:
        out64, grads64, bufs64, dys, extras = case.run(torch.float64)
        out32, grads32, bufs32, _, _ = case.run(torch.float32, dys)
        f32 = {f"out.{k}": max_norm_error(out32[k], out64[k]) for k in out64}
        # The attention's key bias shifts every score of a row alike, which softmax ignores: its true gradient is 0
        # (rounding noise either side), measured against the case's largest gradient, as the Swift test does.
        floor = max(v.abs().max().item() for v in grads64.values()) if grads64 else 0.0
        f32.update({f"grad.{k}": max_norm_error(grads32[k], grads64[k], floor if k.endswith("k_layer.bias") else 0.0)
                    for k in grads64})
        f32.update({f"buf.{k}": max_norm_error(bufs32[k], bufs64[k]) for k in bufs64})
        worst_f32 = max([worst_f32] + list(f32.values()))
        margin = None
        if case.kinks is not None:
            margin = min(v.abs().min().item() for v in case.kinks(extras))
            assert margin > 1e-4, f"{case.name}: a ReLU pre-activation within {margin} of its kink"
        checked = None
        if not args.no_gradcheck and case.check_gradients:
            checked = bool(case.gradcheck())
        t = files[case.group]
        for k, v in case.inputs.items():
            t[f"{case.name}.in.{k}"] = v.float().contiguous()
        for k, v in case.params.items():
            t[f"{case.name}.param.{k}"] = v.float().contiguous()
        for k, v in case.buffers.items():
            t[f"{case.name}.bufin.{k}"] = v.float().contiguous()
        for k, v in case.masks.items():
            t[f"{case.name}.mask.{k}"] = v.float().contiguous()
        for k, v in dys.items():
            t[f"{case.name}.dy.{k}"] = v.float().contiguous()
        for k, v in out64.items():
            t[f"{case.name}.out.{k}"] = v.double().reshape(v.shape).contiguous()
        for k, v in grads64.items():
            t[f"{case.name}.grad.{k}"] = v.double().contiguous()
        for k, v in bufs64.items():
            t[f"{case.name}.buf.{k}"] = v.double().contiguous()
        meta["cases"][case.name] = {"group": case.group, "conf": case.conf, "torch_f32_error": f32,
                                    "kink_margin": margin, "gradcheck": checked}
        worst = max(f32, key=f32.get)
        print(f"{case.group:6s} {case.name:28s} gradcheck {checked}  torch float32 vs float64: worst {worst} "
              f"{f32[worst]:.2e}" + (f"  kink margin {margin:.2e}" if margin is not None else ""))
    os.makedirs(args.out, exist_ok=True)
    for group, tensors in files.items():
        save_file(tensors, os.path.join(args.out, f"{group}.safetensors"),
                  metadata={"torch_version": torch.__version__, "generator": meta["generator"]})
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"torch {torch.__version__}: {len(CASES)} cases; torch's own float32 worst {worst_f32:.2e}; wrote {args.out}")


if __name__ == "__main__":
    main()
