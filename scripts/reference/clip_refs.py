#!/usr/bin/env python3
"""Reference trajectories with real PyTorch (CPU, float32) whose gradient norms exceed grad_clip on most updates.

Writes Tests/SpeechainMPITests/Resources/torch_refs/<scenario>/ in the format of the other torch_refs (init.safetensors,
feat.npy, label.npy, scenario.json, trace.json, final.safetensors; see the README there), one OptimScheduler "main",
so that TorchReferenceTests replays them step by step. The model and data are two_sches_ref.py's (encoder
Linear(16,32), ReLU, Linear(32,32), ReLU; decoder Linear(32,4); 64 samples labelled by a random tanh teacher, batches
of 8 in order). Each scenario uses SGD — whose update is proportional to the clipped gradient, so that an error in
the clipping coefficient shows in the weights (Adam would normalise it away) — and one norm type:

  clip_sgd_momentum_l2         SGD momentum 0.9, exp.ExponentDecayLr,            grad_norm_type 2,   accum_grad 1
  clip_sgd_nesterov_l1_accum2  SGD nesterov, weight decay, const.ConstantLr,      grad_norm_type 1,   accum_grad 2
  clip_sgd_wd_inf              SGD plain, weight decay, exp.ExponentDecayLr,      grad_norm_type inf, accum_grad 1

grad_clip is set so that most updates, but not all, are clipped (asserted). For grad_norm_type inf, scenario.json
holds the string "inf" (JSON has no infinity).

Semantics (SpeeChain's runner and OptimScheduler): real_step = (step_num-1)//accum_grad + 1; lr set every step;
(loss/accum_grad).backward(); when step_num % accum_grad == 0: clip_grad_norm_(max_norm=grad_clip,
norm_type=grad_norm_type), step (if the norm is finite), zero_grad.

Usage (from the repository root; needs torch, numpy, safetensors):
    /tmp/torchvenv/bin/python scripts/reference/clip_refs.py [--out DIR]
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from two_sches_ref import Model, make_data, SAMPLES, BATCH  # noqa: E402  (same model and data)

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

SCENARIOS = {
    "clip_sgd_momentum_l2": dict(
        seed=11, exp=dict(num_epochs=3, accum_grad=1, ft_factor=1.0, grad_clip=0.5, grad_norm_type=2.0, use_amp=False),
        sche=dict(type="exp.ExponentDecayLr", optim_type="SGD", optim_conf=dict(lr=0.2, momentum=0.9),
                  sche_conf=dict(decay_factor=0.8))),
    "clip_sgd_nesterov_l1_accum2": dict(
        seed=12, exp=dict(num_epochs=3, accum_grad=2, ft_factor=1.0, grad_clip=8.0, grad_norm_type=1.0, use_amp=False),
        sche=dict(type="const.ConstantLr", optim_type="SGD",
                  optim_conf=dict(lr=0.2, momentum=0.9, nesterov=True, weight_decay=1e-3), sche_conf={})),
    "clip_sgd_wd_inf": dict(
        seed=13, exp=dict(num_epochs=3, accum_grad=1, ft_factor=1.0, grad_clip=0.2, grad_norm_type=float("inf"),
                          use_amp=False),
        sche=dict(type="exp.ExponentDecayLr", optim_type="SGD", optim_conf=dict(lr=1.0, weight_decay=1e-3),
                  sche_conf=dict(decay_factor=0.7))),
}


def update_lr(sche, real_step, epoch):
    base = sche["optim_conf"]["lr"]
    if sche["type"] == "const.ConstantLr":
        return base
    if sche["type"] == "exp.ExponentDecayLr":
        return base * sche["sche_conf"]["decay_factor"] ** (epoch - 1)
    raise ValueError(sche["type"])


def run(sc, init_state, feat, label):
    exp, sche = sc["exp"], sc["sche"]
    model = Model()
    model.load_state_dict(init_state)
    opt = getattr(torch.optim, sche["optim_type"])(model.parameters(), **sche["optim_conf"])
    accum, steps_per_epoch = exp["accum_grad"], SAMPLES // BATCH
    trace, step_num = [], 0
    for epoch in range(1, exp["num_epochs"] + 1):
        for b in range(steps_per_epoch):
            step_num += 1
            x, y = feat[b * BATCH:(b + 1) * BATCH], label[b * BATCH:(b + 1) * BATCH]
            loss = torch.nn.functional.cross_entropy(model(x), y)
            real_step = (step_num - 1) // accum + 1
            rec = {"step_num": step_num, "epoch": epoch, "loss": loss.item(), "lr": {}, "grad_norm": {}, "scale": {},
                   "skipped": {}}
            lr = exp["ft_factor"] * update_lr(sche, real_step, epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            rec["lr"]["main"] = lr
            (loss / accum).backward()
            if step_num % accum == 0:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=exp["grad_clip"],
                                                      norm_type=exp["grad_norm_type"])
                rec["grad_norm"]["main"] = norm.item()
                rec["skipped"]["main"] = not bool(torch.isfinite(norm))
                if torch.isfinite(norm):
                    opt.step()
                opt.zero_grad()
            trace.append(rec)
    return model, trace


def state(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    parser.add_argument("--out", default=os.path.join(root, "Tests/SpeechainMPITests/Resources/torch_refs"))
    args = parser.parse_args()
    feat, label = make_data()
    for name, sc in SCENARIOS.items():
        torch.manual_seed(sc["seed"])
        init_state = state(Model())
        model, trace = run(sc, init_state, feat, label)
        final = state(model)
        clip = sc["exp"]["grad_clip"]
        norms = [r["grad_norm"]["main"] for r in trace if "main" in r["grad_norm"]]
        clipped = sum(n > clip for n in norms)
        moved = max(float((final[k] - init_state[k]).abs().max() / final[k].abs().max()) for k in final)
        print(f"{name}: {clipped}/{len(norms)} updates clipped (grad_clip {clip}, norms {min(norms):.4f}..{max(norms):.4f});"
              f" loss {trace[0]['loss']:.4f} -> {trace[-1]['loss']:.4f}; weights moved by up to {moved:.3f} of max|w|")
        assert len(norms) > clipped >= 0.7 * len(norms), "grad_clip must clip most updates, not all"
        out = os.path.join(args.out, name)
        os.makedirs(out, exist_ok=True)
        save_file(init_state, os.path.join(out, "init.safetensors"))
        save_file(final, os.path.join(out, "final.safetensors"))
        np.save(os.path.join(out, "feat.npy"), feat.numpy())
        np.save(os.path.join(out, "label.npy"), label.numpy())
        exp = dict(sc["exp"])
        if exp["grad_norm_type"] == float("inf"):
            exp["grad_norm_type"] = "inf"
        scenario = {
            "seed": sc["seed"], "exp": exp, "optim_sches": {"main": sc["sche"]}, "name": name, "batch_size": BATCH,
            "samples": SAMPLES, "shuffle": False,
            "model": {"encoder": {"dims": [16, 32, 32], "activation": "ReLU"}, "decoder": {"dims": [32, 4]}},
            "torch_version": torch.__version__, "generator": "scripts/reference/clip_refs.py",
            "clipped_updates": clipped, "updates": len(norms),
        }
        with open(os.path.join(out, "scenario.json"), "w") as f:
            json.dump(scenario, f, indent=1)
            f.write("\n")
        with open(os.path.join(out, "trace.json"), "w") as f:
            json.dump(trace, f, indent=0)
            f.write("\n")
    print(f"torch {torch.__version__}; wrote {args.out}")


if __name__ == "__main__":
    main()
