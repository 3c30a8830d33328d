#!/usr/bin/env python3
"""Reference trajectories for speechain-mpi's optimizers, computed with numpy float32.

Re-implements, op by op, the CPU single-tensor code paths of torch.optim (SGD, Adam, AdamW, Adagrad,
RMSprop), torch.nn.utils.clip_grad_norm_ and the small MLP + mean cross-entropy used by the tests,
so that reference trajectories can be produced without PyTorch installed.

Usage (from the repository root):
    python3 scripts/reference/optim_refs.py                       # write Tests/.../Resources/optim_refs/*.json
    python3 scripts/reference/optim_refs.py --check-shared /work/shared/refs
                                                                  # replay trajectories recorded with real torch,
                                                                  # exit 1 if they do not agree

Float32 conventions followed (ATen CPU kernels): every Python scalar passed to a tensor op is cast to float32
(`value.to<scalar_t>()`), addcmul computes self + (value*t1)*t2, addcdiv computes self + (value*t1)/t2,
lerp with weight < 0.5 computes self + weight*(end-self), add(other, alpha) computes self + alpha*other.
Scalar bookkeeping (bias corrections, step sizes, clr) happens in Python doubles as in torch.optim.
Needs: numpy, safetensors (pip install safetensors).
"""

import argparse
import json
import math
import os
import sys

import numpy as np

F32 = np.float32
PARAM_NAMES = [
    "encoder.0.weight",
    "encoder.0.bias",
    "encoder.2.weight",
    "encoder.2.bias",
    "decoder.0.weight",
    "decoder.0.bias",
]


def f32(x):
    return F32(x)


# ----------------------------------------------------------------------------------------------------------------------
# ATen-style elementwise primitives (float32 tensors, Python scalars cast to float32)
# ----------------------------------------------------------------------------------------------------------------------
def t_add(a, b, alpha=1.0):
    """torch.add(a, b, alpha=alpha): a + alpha*b."""
    if alpha == 1.0:
        return (a + b).astype(F32)
    return (a + f32(alpha) * b).astype(F32)


def t_mul(a, s):
    return (a * f32(s)).astype(F32)


def t_addcmul(a, t1, t2, value=1.0):
    return (a + (f32(value) * t1) * t2).astype(F32)


def t_addcdiv(a, t1, t2, value=1.0):
    return (a + (f32(value) * t1) / t2).astype(F32)


def t_lerp(a, end, weight):
    w = f32(weight)
    if abs(weight) < 0.5:
        return (a + w * (end - a)).astype(F32)
    return (end - (end - a) * (f32(1.0) - w)).astype(F32)


def t_div_scalar(a, s):
    return (a / f32(s)).astype(F32)


def t_add_scalar(a, s):
    return (a + f32(s)).astype(F32)


# ----------------------------------------------------------------------------------------------------------------------
# Model: encoder = Linear(16,32), ReLU, Linear(32,32), ReLU; decoder = Linear(32,4); mean cross-entropy
# ----------------------------------------------------------------------------------------------------------------------
def forward_backward(params, x, y, grad_scale=1.0):
    """Returns (loss as float32, grads dict) for loss*grad_scale (grad_scale = 1/accum_grad)."""
    W0, b0 = params["encoder.0.weight"], params["encoder.0.bias"]
    W2, b2 = params["encoder.2.weight"], params["encoder.2.bias"]
    Wd, bd = params["decoder.0.weight"], params["decoder.0.bias"]
    x = x.astype(F32)
    h1 = (x @ W0.T + b0).astype(F32)
    a1 = np.maximum(h1, F32(0))
    h2 = (a1 @ W2.T + b2).astype(F32)
    a2 = np.maximum(h2, F32(0))
    logits = (a2 @ Wd.T + bd).astype(F32)

    n = x.shape[0]
    # log_softmax
    m = logits.max(axis=1, keepdims=True)
    shifted = (logits - m).astype(F32)
    lse = np.log(np.exp(shifted).sum(axis=1, keepdims=True, dtype=F32)).astype(F32)
    logp = (shifted - lse).astype(F32)
    picked = logp[np.arange(n), y]
    loss = F32(-(picked.sum(dtype=F32) / F32(n)))

    # backward: d(loss*grad_scale)/dlogits. nll_loss (mean) puts -g/N on the target entry,
    # log_softmax backward: grad_in = grad_out - exp(logp) * sum(grad_out)  -> exp(logp)*g/N - onehot*g/N
    g = F32(grad_scale)
    gn = F32(g / F32(n))
    d_logits = (np.exp(logp) * gn).astype(F32)
    d_logits[np.arange(n), y] -= gn

    grads = {}
    grads["decoder.0.weight"] = (d_logits.T @ a2).astype(F32)
    grads["decoder.0.bias"] = d_logits.sum(axis=0, dtype=F32)
    d_a2 = (d_logits @ Wd).astype(F32)
    d_h2 = np.where(h2 > 0, d_a2, F32(0)).astype(F32)
    grads["encoder.2.weight"] = (d_h2.T @ a1).astype(F32)
    grads["encoder.2.bias"] = d_h2.sum(axis=0, dtype=F32)
    d_a1 = (d_h2 @ W2).astype(F32)
    d_h1 = np.where(h1 > 0, d_a1, F32(0)).astype(F32)
    grads["encoder.0.weight"] = (d_h1.T @ x).astype(F32)
    grads["encoder.0.bias"] = d_h1.sum(axis=0, dtype=F32)
    return loss, grads


def vector_norm(t, p):
    t64 = t.astype(np.float64).ravel()
    if p == math.inf:
        return F32(np.abs(t64).max())
    if p == 2.0:
        return F32(math.sqrt(float(np.dot(t64, t64))))
    return F32(float((np.abs(t64) ** p).sum()) ** (1.0 / p))


def clip_grad_norm_(grads, max_norm, norm_type=2.0):
    """torch.nn.utils.clip_grad_norm_: total = ||(||g_i||)_i||, coef = clamp(max/(total+1e-6), max=1), g *= coef."""
    norm_type = float(norm_type)
    norms = np.array([vector_norm(grads[k], norm_type) for k in PARAM_NAMES], dtype=F32)
    total = vector_norm(norms, norm_type)
    clip_coef = F32(F32(max_norm) / F32(total + F32(1e-6)))
    clip_coef_clamped = min(clip_coef, F32(1.0))
    for k in PARAM_NAMES:
        grads[k] = (grads[k] * clip_coef_clamped).astype(F32)
    return total


# ----------------------------------------------------------------------------------------------------------------------
# Optimizers (torch/optim/*.py, _single_tensor_* functions); params are updated in place in the dict
# ----------------------------------------------------------------------------------------------------------------------
class Optimizer:
    defaults = {}

    def __init__(self, conf):
        unknown = set(conf) - set(self.defaults)
        if unknown:
            raise ValueError(f"{type(self).__name__}: unsupported options {sorted(unknown)}")
        self.group = dict(self.defaults)
        self.group.update(conf)
        if "betas" in self.group:
            self.group["betas"] = tuple(self.group["betas"])
        self.state = {}

    @property
    def lr(self):
        return self.group["lr"]

    @lr.setter
    def lr(self, value):
        self.group["lr"] = value


class SGD(Optimizer):
    defaults = dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False)

    def step(self, params, grads):
        g_ = self.group
        lr, mom, damp, wd = g_["lr"], g_["momentum"], g_["dampening"], g_["weight_decay"]
        for k in PARAM_NAMES:
            p = params[k]
            grad = grads[k] if not g_["maximize"] else -grads[k]
            if wd != 0:
                grad = t_add(grad, p, alpha=wd)
            if mom != 0:
                buf = self.state.get(k)
                if buf is None:
                    buf = grad.copy()  # torch.clone(grad).detach()
                else:
                    buf = t_add(t_mul(buf, mom), grad, alpha=1 - damp)
                self.state[k] = buf
                if g_["nesterov"]:
                    grad = t_add(grad, buf, alpha=mom)
                else:
                    grad = buf
            params[k] = t_add(p, grad, alpha=-lr)


class Adam(Optimizer):
    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False)
    decoupled = False

    def step(self, params, grads):
        g_ = self.group
        lr, (beta1, beta2), eps, wd = g_["lr"], g_["betas"], g_["eps"], g_["weight_decay"]
        for k in PARAM_NAMES:
            p = params[k]
            st = self.state.get(k)
            if st is None:
                st = dict(step=F32(0), exp_avg=np.zeros_like(p), exp_avg_sq=np.zeros_like(p))
                if g_["amsgrad"]:
                    st["max_exp_avg_sq"] = np.zeros_like(p)
                self.state[k] = st
            grad = grads[k] if not g_["maximize"] else -grads[k]
            st["step"] = F32(st["step"] + F32(1))  # step_t is a float32 tensor
            if wd != 0:
                if self.decoupled:
                    p = t_mul(p, 1 - lr * wd)  # AdamW: param.mul_(1 - lr * weight_decay)
                else:
                    grad = t_add(grad, p, alpha=wd)
            st["exp_avg"] = t_lerp(st["exp_avg"], grad, 1 - beta1)
            st["exp_avg_sq"] = t_addcmul(t_mul(st["exp_avg_sq"], beta2), grad, grad, value=1 - beta2)

            step = float(st["step"])  # _get_value(step_t) -> Python float
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            step_size = lr / bias_correction1
            bias_correction2_sqrt = math.sqrt(bias_correction2)
            if g_["amsgrad"]:
                st["max_exp_avg_sq"] = np.maximum(st["max_exp_avg_sq"], st["exp_avg_sq"])
                v = st["max_exp_avg_sq"]
            else:
                v = st["exp_avg_sq"]
            denom = t_add_scalar(t_div_scalar(np.sqrt(v), bias_correction2_sqrt), eps)
            params[k] = t_addcdiv(p, st["exp_avg"], denom, value=-step_size)


class AdamW(Adam):
    defaults = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False)
    decoupled = True


class Adagrad(Optimizer):
    defaults = dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                    maximize=False)

    def step(self, params, grads):
        g_ = self.group
        lr, lr_decay, wd, eps = g_["lr"], g_["lr_decay"], g_["weight_decay"], g_["eps"]
        for k in PARAM_NAMES:
            p = params[k]
            st = self.state.get(k)
            if st is None:  # created in Adagrad.__init__: full_like(p, initial_accumulator_value), step 0
                st = dict(step=F32(0), sum=np.full_like(p, f32(g_["initial_accumulator_value"])))
                self.state[k] = st
            st["step"] = F32(st["step"] + F32(1))
            step = float(st["step"])
            grad = grads[k] if not g_["maximize"] else -grads[k]
            if wd != 0:
                grad = t_add(grad, p, alpha=wd)
            clr = lr / (1 + (step - 1) * lr_decay)
            st["sum"] = t_addcmul(st["sum"], grad, grad, value=1)
            std = t_add_scalar(np.sqrt(st["sum"]), eps)
            params[k] = t_addcdiv(p, grad, std, value=-clr)


class RMSprop(Optimizer):
    defaults = dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                    maximize=False)

    def step(self, params, grads):
        g_ = self.group
        lr, alpha, eps, wd, mom = g_["lr"], g_["alpha"], g_["eps"], g_["weight_decay"], g_["momentum"]
        for k in PARAM_NAMES:
            p = params[k]
            st = self.state.get(k)
            if st is None:
                st = dict(step=F32(0), square_avg=np.zeros_like(p))
                if mom > 0:
                    st["momentum_buffer"] = np.zeros_like(p)
                if g_["centered"]:
                    st["grad_avg"] = np.zeros_like(p)
                self.state[k] = st
            grad = grads[k] if not g_["maximize"] else -grads[k]
            st["step"] = F32(st["step"] + F32(1))
            if wd != 0:
                grad = t_add(grad, p, alpha=wd)
            st["square_avg"] = t_addcmul(t_mul(st["square_avg"], alpha), grad, grad, value=1 - alpha)
            if g_["centered"]:
                st["grad_avg"] = t_lerp(st["grad_avg"], grad, 1 - alpha)
                avg = np.sqrt(t_addcmul(st["square_avg"], st["grad_avg"], st["grad_avg"], value=-1))
            else:
                avg = np.sqrt(st["square_avg"])
            avg = t_add_scalar(avg, eps)
            if mom > 0:
                # buf.mul_(momentum).addcdiv_(grad, avg); param.add_(buf, alpha=-lr)
                st["momentum_buffer"] = t_addcdiv(t_mul(st["momentum_buffer"], mom), grad, avg)
                params[k] = t_add(p, st["momentum_buffer"], alpha=-lr)
            else:
                params[k] = t_addcdiv(p, grad, avg, value=-lr)


OPTIMIZERS = dict(SGD=SGD, Adam=Adam, AdamW=AdamW, Adagrad=Adagrad, RMSprop=RMSprop)


# ----------------------------------------------------------------------------------------------------------------------
# LR schedules (SpeeChain semantics, see /work/shared/refs/README.md)
# ----------------------------------------------------------------------------------------------------------------------
def make_schedule(sche_type, optim_lr, sche_conf):
    if sche_type is None:
        return lambda real_step, epoch: optim_lr
    if sche_type.endswith("NoamLr"):
        if sche_conf.get("d_model") is not None:
            raise NotImplementedError("Noam with d_model")
        warmup = sche_conf["warmup_steps"]
        init_lr = optim_lr * warmup**0.5
        return lambda real_step, epoch: init_lr * min(real_step**-0.5, real_step * warmup**-1.5)
    if sche_type.endswith("ExponentDecayLr"):
        factor = sche_conf["decay_factor"]
        return lambda real_step, epoch: optim_lr * factor ** (epoch - 1)
    raise NotImplementedError(sche_type)


# ----------------------------------------------------------------------------------------------------------------------
# Training loop (SpeeChain OptimScheduler semantics)
# ----------------------------------------------------------------------------------------------------------------------
def run(params, feat, label, optim_type, optim_conf, *, batch_size=8, num_steps, accum_grad=1, grad_clip=None,
        grad_norm_type=2.0, ft_factor=1.0, sche_type=None, sche_conf=None, step_per_update=1):
    params = {k: np.array(params[k], dtype=F32, copy=True) for k in PARAM_NAMES}
    opt = OPTIMIZERS[optim_type](optim_conf)
    schedule = make_schedule(sche_type, optim_conf["lr"], sche_conf or {})
    n_batches = feat.shape[0] // batch_size
    trace = []
    acc = None
    for step_num in range(1, num_steps + 1):
        epoch = (step_num - 1) // n_batches + 1
        b = (step_num - 1) % n_batches
        x = feat[b * batch_size:(b + 1) * batch_size]
        y = label[b * batch_size:(b + 1) * batch_size]
        rec = dict(step_num=step_num, epoch=epoch)
        real_step = (step_num - 1) // accum_grad + 1
        if real_step % step_per_update == 0:
            opt.lr = ft_factor * schedule(real_step, epoch)
            rec["lr"] = opt.lr
        loss, grads = forward_backward(params, x, y, grad_scale=1.0 / accum_grad)
        rec["loss"] = float(loss)
        if acc is None:
            acc = grads
        else:
            acc = {k: (acc[k] + grads[k]).astype(F32) for k in PARAM_NAMES}
        if step_num % accum_grad == 0:
            if grad_clip is not None:
                rec["grad_norm"] = float(clip_grad_norm_(acc, grad_clip, grad_norm_type))
            opt.step(params, acc)
            acc = None  # zero_grad(set_to_none=True)
        trace.append(rec)
    return params, trace


# ----------------------------------------------------------------------------------------------------------------------
# Validation against trajectories recorded with real PyTorch
# ----------------------------------------------------------------------------------------------------------------------
def load_params(path):
    from safetensors.numpy import load_file
    d = load_file(path)
    return {k: d[k].astype(F32) for k in PARAM_NAMES}


def rel_diff(a, b):
    """max |a-b| / max |b| over a tensor (normwise), and elementwise max |a-b|/|b| over |b| > 1e-3*max|b|."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = np.abs(b).max()
    normwise = np.abs(a - b).max() / scale
    mask = np.abs(b) > 1e-3 * scale
    elementwise = (np.abs(a - b)[mask] / np.abs(b)[mask]).max()
    return normwise, elementwise


def check_shared(refs_dir, tol=1e-5):
    ok = True
    for name in sorted(os.listdir(refs_dir)):
        d = os.path.join(refs_dir, name)
        if not os.path.isfile(os.path.join(d, "scenario.json")):
            continue
        with open(os.path.join(d, "scenario.json")) as f:
            sc = json.load(f)
        with open(os.path.join(d, "trace.json")) as f:
            ref_trace = json.load(f)
        exp = sc["exp"]
        if exp.get("use_amp"):
            print(f"[{name}] skipped: AMP scenarios are not supported")
            continue
        (oname, osc), = sc["optim_sches"].items()
        feat = np.load(os.path.join(d, "feat.npy")).astype(F32)
        label = np.load(os.path.join(d, "label.npy")).astype(np.int64)
        n_batches = sc["samples"] // sc["batch_size"]
        final, trace = run(
            load_params(os.path.join(d, "init.safetensors")), feat, label, osc["optim_type"], osc["optim_conf"],
            batch_size=sc["batch_size"], num_steps=exp["num_epochs"] * n_batches, accum_grad=exp["accum_grad"],
            grad_clip=exp["grad_clip"], grad_norm_type=exp["grad_norm_type"], ft_factor=exp["ft_factor"],
            sche_type=osc["type"], sche_conf=osc.get("sche_conf"), step_per_update=osc.get("step_per_update", 1))
        ref_final = load_params(os.path.join(d, "final.safetensors"))
        assert len(trace) == len(ref_trace), (len(trace), len(ref_trace))

        loss_rel = max(abs(t["loss"] - r["loss"]) / abs(r["loss"]) for t, r in zip(trace, ref_trace))
        lr_abs, gn_rel, n_upd = 0.0, 0.0, 0
        for t, r in zip(trace, ref_trace):
            assert ("lr" in t) == (oname in r.get("lr", {})), t["step_num"]
            if "lr" in t:
                lr_abs = max(lr_abs, abs(t["lr"] - r["lr"][oname]))
            assert ("grad_norm" in t) == (oname in r.get("grad_norm", {})), t["step_num"]
            if "grad_norm" in t:
                n_upd += 1
                gn_rel = max(gn_rel, abs(t["grad_norm"] - r["grad_norm"][oname]) / r["grad_norm"][oname])
                assert not r["skipped"][oname]
        w_norm, w_elem = 0.0, 0.0
        for k in PARAM_NAMES:
            nw, el = rel_diff(final[k], ref_final[k])
            w_norm, w_elem = max(w_norm, nw), max(w_elem, el)
        clipped = sum(1 for r in ref_trace if oname in r["grad_norm"] and r["grad_norm"][oname] > exp["grad_clip"])
        good = loss_rel < tol and gn_rel < tol and lr_abs < 1e-12 and w_norm < tol
        ok &= good
        print(f"[{name}] {'OK' if good else 'MISMATCH'}: {len(trace)} steps, {n_upd} updates "
              f"({clipped} with grad_norm > grad_clip)\n"
              f"    loss max rel diff        {loss_rel:.3e}\n"
              f"    lr max abs diff          {lr_abs:.3e}\n"
              f"    grad_norm max rel diff   {gn_rel:.3e}\n"
              f"    final weights max |d|/max|ref| (per tensor) {w_norm:.3e}, "
              f"elementwise max rel {w_elem:.3e}")
    return ok


# ----------------------------------------------------------------------------------------------------------------------
# Reference scenarios for the Swift tests
# ----------------------------------------------------------------------------------------------------------------------
SCENARIOS = [
    ("sgd_plain", "SGD", {"lr": 0.1}),
    ("sgd_momentum_dampening_wd", "SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.001}),
    ("sgd_nesterov_wd", "SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0001}),
    ("adam_default", "Adam", {"lr": 0.01}),
    ("adam_wd_amsgrad", "Adam",
     {"lr": 0.01, "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.01, "amsgrad": True}),
    ("adamw", "AdamW", {"lr": 0.01, "weight_decay": 0.1}),
    ("adamw_amsgrad", "AdamW", {"lr": 0.01, "amsgrad": True}),
    ("adagrad", "Adagrad", {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.001, "initial_accumulator_value": 0.1}),
    ("rmsprop_default", "RMSprop", {"lr": 0.01}),
    ("rmsprop_centered_momentum_wd", "RMSprop",
     {"lr": 0.005, "alpha": 0.9, "eps": 1e-6, "momentum": 0.5, "centered": True, "weight_decay": 0.001}),
    ("sgd_maximize", "SGD", {"lr": 0.01, "maximize": True}),
]
UPDATES = 20
BATCH_SIZE = 8


def generate(refs_dir, out_dir):
    src = os.path.join(refs_dir, "adam_noam_accum4")
    init = load_params(os.path.join(src, "init.safetensors"))
    feat = np.load(os.path.join(src, "feat.npy")).astype(F32)
    label = np.load(os.path.join(src, "label.npy")).astype(np.int64)
    os.makedirs(out_dir, exist_ok=True)
    for name, optim_type, conf in SCENARIOS:
        final, trace = run(init, feat, label, optim_type, conf, batch_size=BATCH_SIZE, num_steps=UPDATES)
        doc = {
            "name": name,
            "optim_type": optim_type,
            "optim_conf": conf,
            "updates": UPDATES,
            "batch_size": BATCH_SIZE,
            "losses": [float(F32(t["loss"])) for t in trace],
            "final": {k: [float(v) for v in final[k].ravel()] for k in PARAM_NAMES},
        }
        path = os.path.join(out_dir, f"{name}.json")
        with open(path, "w") as f:
            json.dump(doc, f)
            f.write("\n")
        print(f"wrote {path}: loss {trace[0]['loss']:.6f} -> {trace[-1]['loss']:.6f}")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check-shared", metavar="DIR", help="validate against trajectories recorded with real torch")
    ap.add_argument("--refs", default="/work/shared/refs", help="source of init weights and data (adam_noam_accum4)")
    ap.add_argument("--out", default=os.path.join(repo, "Tests", "SpeechainMPITests", "Resources", "optim_refs"))
    args = ap.parse_args()
    if args.check_shared:
        ok = check_shared(args.check_shared)
        print("shared references:", "all OK" if ok else "MISMATCH")
        sys.exit(0 if ok else 1)
    generate(args.refs, args.out)


if __name__ == "__main__":
    main()
