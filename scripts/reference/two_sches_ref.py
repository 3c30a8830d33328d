#!/usr/bin/env python3
"""A reference trajectory of TWO OptimSchedulers, computed with real PyTorch (CPU, float32).

Writes Tests/SpeechainMPITests/Resources/torch_refs/two_sches_decoder_first/ in the format of the other torch_refs
(init.safetensors, feat.npy, label.npy, scenario.json, trace.json, final.safetensors; see the README there).

Model: encoder = Linear(16,32), ReLU, Linear(32,32), ReLU; decoder = Linear(32,4); loss = mean cross-entropy.
Two OptimSchedulers, the output-side one first (`optim_sches_order` in scenario.json):
  decoder: SGD (momentum 0.9, nesterov) + exp.ExponentDecayLr, updated_modules [decoder], step_per_update 2
  encoder: Adam + noam.NoamLr (warmup),                       updated_modules [encoder], step_per_update 1
accum_grad 2, grad_clip chosen so that clipping happens on some update steps of both schedulers.

Semantics (SpeeChain's runner + OptimScheduler, with every backward of a step taken before any update):
  each step one forward; real_step = (step_num-1)//accum_grad + 1; a scheduler acts when
  real_step % step_per_update == 0: it back-propagates loss/accum_grad into its OWN parameters only
  (torch.autograd.backward(..., inputs=own_params)). All backwards of a step run at the forward's weights,
  then, in order, each acting scheduler sets lr = ft_factor*update_lr(real_step, epoch) and, when
  step_num % accum_grad == 0, clips its own gradients (clip_grad_norm_), steps and zeroes them.

The script also replays the run with the schedulers reversed (must be bit-identical) and with the old,
sequential semantics (backward+update one scheduler at a time) and prints how far the latter drifts.

Usage (from the repository root; needs torch, numpy, safetensors):
    python3 scripts/reference/two_sches_ref.py [--out DIR]
"""

import argparse
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

NAME = "two_sches_decoder_first"
SEED = 3
SAMPLES, FEAT_DIM, CLASSES, BATCH = 64, 16, 4, 8
EXP = {"num_epochs": 3, "accum_grad": 2, "ft_factor": 1.0, "grad_clip": 0.4, "grad_norm_type": 2.0, "use_amp": False}
# The output-side scheduler first: with sequential backward/update it would change the decoder before the
# encoder's gradient is taken through it.
ORDER = ["decoder", "encoder"]
SCHES = {
    "decoder": {
        "type": "exp.ExponentDecayLr",
        "optim_type": "SGD",
        "optim_conf": {"lr": 0.3, "momentum": 0.9, "nesterov": True},
        "sche_conf": {"decay_factor": 0.7},
        "updated_modules": ["decoder"],
        "step_per_update": 2,
    },
    "encoder": {
        "type": "noam.NoamLr",
        "optim_type": "Adam",
        "optim_conf": {"lr": 0.02},
        "sche_conf": {"warmup_steps": 4},
        "updated_modules": ["encoder"],
        "step_per_update": 1,
    },
}


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU())
        self.decoder = torch.nn.Sequential(torch.nn.Linear(32, 4))

    def forward(self, x):
        return self.decoder(self.encoder(x))


def make_data():
    g = torch.Generator().manual_seed(SEED + 1000)
    feat = torch.randn(SAMPLES, FEAT_DIM, generator=g, dtype=torch.float32)
    # A random teacher (a small tanh MLP) labels the features: a learnable task.
    w1 = torch.randn(FEAT_DIM, 8, generator=g)
    w2 = torch.randn(8, CLASSES, generator=g)
    label = (torch.tanh(feat @ w1) @ w2).argmax(dim=1).to(torch.int64)
    return feat, label


def make_optimizer(conf, params):
    c = dict(conf["optim_conf"])
    return getattr(torch.optim, conf["optim_type"])(params, **c)


def update_lr(conf, real_step, epoch):
    """SpeeChain's update_lr (ExponentDecayLr as documented: base lr * decay_factor**(epoch-1))."""
    base = conf["optim_conf"]["lr"]
    if conf["type"] == "noam.NoamLr":
        warmup = conf["sche_conf"]["warmup_steps"]
        init_lr = base * warmup ** 0.5
        return init_lr * min(real_step ** -0.5, real_step * warmup ** -1.5)
    if conf["type"] == "exp.ExponentDecayLr":
        return base * conf["sche_conf"]["decay_factor"] ** (epoch - 1)
    raise ValueError(conf["type"])


def run(init_state, feat, label, order, sequential=False):
    model = Model()
    model.load_state_dict(init_state)
    sches = []
    for name in order:
        conf = SCHES[name]
        params = [p for m in conf["updated_modules"] for p in getattr(model, m).parameters()]
        sches.append((name, conf, params, make_optimizer(conf, params)))
    accum, steps_per_epoch = EXP["accum_grad"], SAMPLES // BATCH
    trace = []
    step_num = 0
    for epoch in range(1, EXP["num_epochs"] + 1):
        for b in range(steps_per_epoch):
            step_num += 1
            x, y = feat[b * BATCH:(b + 1) * BATCH], label[b * BATCH:(b + 1) * BATCH]
            h = model.encoder(x)
            logits = model.decoder(h)
            loss = torch.nn.functional.cross_entropy(logits, y)
            real_step = (step_num - 1) // accum + 1
            rec = {"step_num": step_num, "epoch": epoch, "loss": loss.item(), "lr": {}, "grad_norm": {}, "scale": {},
                   "skipped": {}, "clipped": {}}
            acting = [s for s in sches if real_step % s[1]["step_per_update"] == 0]

            def backward(params):
                torch.autograd.backward(loss / accum, inputs=params, retain_graph=True)

            def update(name, conf, params, opt):
                lr = EXP["ft_factor"] * update_lr(conf, real_step, epoch)
                for group in opt.param_groups:
                    group["lr"] = lr
                rec["lr"][name] = lr
                if step_num % accum == 0:
                    norm = torch.nn.utils.clip_grad_norm_(params, max_norm=EXP["grad_clip"], norm_type=EXP["grad_norm_type"])
                    rec["grad_norm"][name] = norm.item()
                    rec["clipped"][name] = bool(norm.item() > EXP["grad_clip"])
                    if torch.isfinite(norm):
                        opt.step()
                        rec["skipped"][name] = False
                    else:
                        rec["skipped"][name] = True
                    opt.zero_grad()

            if sequential:
                # The old semantics, one scheduler at a time (backward, then update): a later scheduler's gradient
                # then flows through weights an earlier one has already changed. Real autograd refuses that (the
                # saved decoder weight was modified in place), so this emulates what a hand-written backward
                # with the forward's cached activations computes: dL/dh = dL/dlogits @ W_decoder(now).
                g_logits = torch.autograd.grad(loss / accum, logits, retain_graph=True)[0]
                for name, conf, params, opt in acting:
                    if name == "encoder":
                        g_h = g_logits @ model.decoder[0].weight.detach()
                        torch.autograd.backward(h, grad_tensors=g_h, inputs=params, retain_graph=True)
                    else:
                        backward(params)
                    update(name, conf, params, opt)
            else:
                for s in acting:
                    backward(s[2])
                for s in acting:
                    update(*s)
            trace.append(rec)
    return model, trace


def state(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def max_rel_diff(a, b):
    """Largest max|a-b| / max|b| over the tensors (the torch_refs README's measure)."""
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max()) for k in b)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    parser.add_argument("--out", default=os.path.join(root, "Tests/SpeechainMPITests/Resources/torch_refs", NAME))
    args = parser.parse_args()

    torch.manual_seed(SEED)
    init_state = state(Model())
    feat, label = make_data()

    model, trace = run(init_state, feat, label, ORDER)
    final = state(model)
    rev_model, rev_trace = run(init_state, feat, label, list(reversed(ORDER)))
    rev_final = state(rev_model)
    identical = all(torch.equal(final[k], rev_final[k]) for k in final)
    seq_model, seq_trace = run(init_state, feat, label, ORDER, sequential=True)
    seq_diff = max_rel_diff(state(seq_model), final)
    seq_rev_model, _ = run(init_state, feat, label, list(reversed(ORDER)), sequential=True)
    seq_rev_diff = max_rel_diff(state(seq_rev_model), final)

    clipped = {n: sum(r["clipped"].get(n, False) for r in trace) for n in ORDER}
    updates = {n: sum(n in r["grad_norm"] for r in trace) for n in ORDER}
    for r in trace:
        print(f"step {r['step_num']:2d} ep {r['epoch']} loss {r['loss']:.6f} lr {r['lr']} "
              f"norm { {k: round(v, 5) for k, v in r['grad_norm'].items()} } clipped {r['clipped']}")
    print(f"torch {torch.__version__}; labels per class {np.bincount(label.numpy(), minlength=CLASSES).tolist()}")
    print(f"updates {updates}, clipped {clipped} (grad_clip {EXP['grad_clip']})")
    print(f"reversed order bit-identical: {identical}")
    print(f"sequential (old) semantics, decoder first: final weights off by {seq_diff:.3e} relative")
    print(f"sequential (old) semantics, encoder first: final weights off by {seq_rev_diff:.3e} relative")
    assert identical, "the reversed order must give the same weights"
    assert all(clipped[n] > 0 and clipped[n] < updates[n] for n in ORDER), "grad_clip must clip some, not all, updates"

    os.makedirs(args.out, exist_ok=True)
    save_file(init_state, os.path.join(args.out, "init.safetensors"))
    save_file(final, os.path.join(args.out, "final.safetensors"))
    np.save(os.path.join(args.out, "feat.npy"), feat.numpy())
    np.save(os.path.join(args.out, "label.npy"), label.numpy())
    for r in trace:
        del r["clipped"]
    scenario = {
        "seed": SEED,
        "exp": EXP,
        "optim_sches_order": ORDER,
        "optim_sches": SCHES,
        "name": NAME,
        "batch_size": BATCH,
        "samples": SAMPLES,
        "shuffle": False,
        "model": {"encoder": {"dims": [16, 32, 32], "activation": "ReLU"}, "decoder": {"dims": [32, 4]}},
        "torch_version": torch.__version__,
        "generator": "scripts/reference/two_sches_ref.py",
        "clipped_updates": clipped,
    }
    with open(os.path.join(args.out, "scenario.json"), "w") as f:
        json.dump(scenario, f, indent=1)
        f.write("\n")
    with open(os.path.join(args.out, "trace.json"), "w") as f:
        json.dump(trace, f, indent=0)
        f.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
