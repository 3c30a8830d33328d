#!/usr/bin/env python3
"""PyTorch reference (CPU, float32) of one training forward/backward of SpeeChain's `ar_asr.ARASR`.

Reproduces, on already-extracted features (no frontend / normalize / specaug), the training path
`Model.forward -> ARASR.module_forward -> ARASR.criterion_forward` of SpeeChain (heli-qi/SpeeChain, HEAD 92be03b):
  speechain/model/ar_asr.py            module_forward (eos -> ignore_idx 0, drop last column), criterion_forward
  speechain/model/abs.py               Model.forward: module_forward gets a deep copy of the batch
  speechain/module/encoder/asr.py      ASREncoder  {prenet, encoder}
  speechain/module/prenet/conv2d.py    Conv2dPrenet {conv: Sequential, linear: LinearPrenet}
  speechain/module/prenet/linear.py    LinearPrenet {linear: Sequential}
  speechain/module/transformer/{encoder,decoder,attention,pos_enc,feed_forward}.py
  speechain/module/decoder/ar_asr.py   ARASRDecoder {embedding, decoder, postnet}
  speechain/module/prenet/embed.py     EmbedPrenet {embed}
  speechain/module/postnet/token.py    TokenPostnet {linear}
  speechain/criterion/{cross_entropy,ctc,accuracy}.py, speechain/utilbox/train_util.py make_mask_from_len
The modules below are written anew in plain torch.nn (nothing of speechain is imported or copied) but keep
SpeeChain's attribute names and registration order, so `state_dict()` has exactly ARASR's keys.

Writes Tests/SpeechainMPITests/Resources/asr_refs/<case>/{weights,inputs,grads,intermediates}.safetensors and
outputs.json for the cases bn_gelu, nobn_relu and ctc_inf (see scripts/reference/README.md), and prints a float64
finite-difference check of some gradient entries (not stored).

Usage (from the repository root; needs torch, numpy, safetensors):
    /tmp/torchvenv/bin/python scripts/reference/arasr_ref.py [--out DIR]
"""

import argparse
import copy
import json
import math
from pathlib import Path

import torch
from torch import nn
from safetensors.torch import save_file

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

BLANK = 0  # tokenizer.ignore_idx ('<blank>'): CTC blank, padding and the decoder's replacement of <eos>

BASE = dict(idim=20, conv_dims=[4, 4], conv_batchnorm=True, conv_activation="LeakyReLU", d_model=32, num_heads=4,
            fdfwd_dim=64, fdfwd_activation="GELU", enc_layers=2, dec_layers=2, vocab=11, ctc_weight=0.3,
            label_smoothing=0.1, dropout=0.0, enc_emb_scale=False, dec_emb_scale=True, ln_eps=1e-6,
            posenc_maxlen=5000, weight_seed=20240613, feat_seed=7)
FEAT_LEN = [41, 33, 27]
SOS_EOS = BASE["vocab"] - 1
TEXT = [[SOS_EOS, 3, 1, 4, 1, 5, SOS_EOS], [SOS_EOS, 9, 2, 6, SOS_EOS], [SOS_EOS, 5, 3, SOS_EOS]]
# ctc_inf: utterance 2 has 6 encoder frames but its CTC target [2,2,5,5,7] needs 5 + 2 repeats = 7 frames.
TEXT_INF = [TEXT[0], TEXT[1], [SOS_EOS, 2, 2, 5, 5, 7, SOS_EOS]]
CASES = {
    "bn_gelu": dict(BASE, text=TEXT),
    "nobn_relu": dict(BASE, conv_batchnorm=False, conv_activation="ReLU", fdfwd_activation="ReLU",
                      ctc_weight=0.5, label_smoothing=0.0, text=TEXT),
    "ctc_inf": dict(BASE, text=TEXT_INF),
}


def make_mask_from_len(lens, max_len=None):
    """(B,) lengths -> (B, 1, max_len) bool, True on valid positions (train_util.make_mask_from_len, 3-D)."""
    max_len = int(lens.max()) if max_len is None else max_len
    return (torch.arange(max_len)[None, :] < lens[:, None]).unsqueeze(1)


# ----------------------------------------------------------------------------------------------- modules
class LinearPrenet(nn.Module):  # as Conv2dPrenet builds it: lnr_activation=None, lnr_dropout=None
    def __init__(self, idim, odim):
        super().__init__()
        self.linear = nn.Sequential(nn.Linear(idim, odim))

    def forward(self, x):
        return self.linear(x)


class EmbedPrenet(nn.Module):  # scale=False
    def __init__(self, vocab, d_model):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model, padding_idx=0)

    def forward(self, text):
        return self.embed(text)


class TokenPostnet(nn.Module):
    def __init__(self, d_model, vocab):
        super().__init__()
        self.linear = nn.Linear(d_model, vocab)

    def forward(self, x):
        return self.linear(x)


class Conv2dPrenet(nn.Module):
    """Conv2d(k3, s2, p0) [+ BatchNorm2d] + activation per conv dim, then (B,C,T',F') -> (B,T',C*F') -> Linear."""

    def __init__(self, idim, conv_dims, batchnorm, activation, lnr_dim):
        super().__init__()
        blocks, prev, freq = [], 1, idim
        for c in conv_dims:
            blocks.append(nn.Conv2d(prev, c, kernel_size=(3, 3), stride=(2, 2), padding=(0, 0), bias=not batchnorm))
            if batchnorm:
                blocks.append(nn.BatchNorm2d(c))
            blocks.append(getattr(nn, activation)())
            prev, freq = c, (freq - 3) // 2 + 1
        self.conv = nn.Sequential(*blocks)
        self.num_convs = len(conv_dims)
        self.linear = LinearPrenet(prev * freq, lnr_dim)

    def forward(self, feat, feat_len):
        x = self.conv(feat.unsqueeze(1))
        b, c, t, f = x.shape
        x = x.transpose(1, 2).contiguous().view(b, t, c * f)  # feature index = channel * F' + freq
        for _ in range(self.num_convs):
            feat_len = torch.div(feat_len - 3, 2, rounding_mode="floor") + 1
        assert int(feat_len.max()) == t
        return self.linear(x), feat_len


class PositionalEncoding(nn.Module):
    """'mix' sinusoid (sin on even, cos on odd dims), optional x*sqrt(d) before adding, dropout after."""

    def __init__(self, d_model, emb_scale, max_len, dropout):
        super().__init__()
        self.d_model, self.emb_scale = d_model, emb_scale
        position = torch.arange(0, max_len, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float) * (math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position / div_term)
        pe[:, 1::2] = torch.cos(position / div_term)
        self.register_buffer("posenc", pe.unsqueeze(0))  # persistent, as in SpeeChain
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        if self.emb_scale:
            x = x * math.sqrt(self.d_model)
        return self.dropout(x + self.posenc[:, :x.size(1)])


class MultiHeadedAttention(nn.Module):
    """forward(k, v, q, mask); scores = (q k^T) * 1/sqrt(d_model) (scale_dp_by_head=False), masked to -inf."""

    def __init__(self, d_model, num_heads, dropout):
        super().__init__()
        self.d_model, self.num_heads, self.head_size = d_model, num_heads, d_model // num_heads
        self.k_layer = nn.Linear(d_model, d_model)
        self.v_layer = nn.Linear(d_model, d_model)
        self.q_layer = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.output_layer = nn.Linear(d_model, d_model)
        self.scale = 1 / math.sqrt(d_model)

    def forward(self, k, v, q, mask):
        b = k.size(0)

        def heads(x):
            return x.view(b, -1, self.num_heads, self.head_size).transpose(1, 2)

        k, v, q = heads(self.k_layer(k)), heads(self.v_layer(v)), heads(self.q_layer(q))
        scores = torch.matmul(q, k.transpose(2, 3)) * self.scale
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        att = self.dropout(torch.softmax(scores, dim=-1))
        ctx = torch.matmul(att, v).transpose(1, 2).contiguous().view(b, -1, self.d_model)
        return self.output_layer(ctx)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, d_model, fdfwd_dim, activation, dropout):
        super().__init__()
        self.in_layer = nn.Linear(d_model, fdfwd_dim)
        self.activation = getattr(nn, activation)()
        self.dropout = nn.Dropout(dropout)
        self.out_layer = nn.Linear(fdfwd_dim, d_model)

    def forward(self, x):
        return self.out_layer(self.dropout(self.activation(self.in_layer(x))))


class TransformerEncoderLayer(nn.Module):  # layernorm_first = True
    def __init__(self, cfg):
        super().__init__()
        d, p = cfg["d_model"], cfg["dropout"]
        self.multihead_att = MultiHeadedAttention(d, cfg["num_heads"], p)
        self.feed_forward = PositionwiseFeedForward(d, cfg["fdfwd_dim"], cfg["fdfwd_activation"], p)
        self.dropout = nn.Dropout(p)
        self.att_layernorm = nn.LayerNorm(d, eps=cfg["ln_eps"])
        self.fdfwd_layernorm = nn.LayerNorm(d, eps=cfg["ln_eps"])

    def forward(self, x, mask):
        h = self.att_layernorm(x)
        x = self.dropout(self.multihead_att(h, h, h, mask)) + x
        return self.dropout(self.feed_forward(self.fdfwd_layernorm(x))) + x


class TransformerEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["d_model"]
        self.posenc = PositionalEncoding(d, cfg["enc_emb_scale"], cfg["posenc_maxlen"], cfg["dropout"])
        self.trfm_layers = nn.ModuleList(TransformerEncoderLayer(cfg) for _ in range(cfg["enc_layers"]))
        self.layernorm = nn.LayerNorm(d, eps=cfg["ln_eps"])

    def forward(self, x, mask):
        x = self.posenc(x)
        for layer in self.trfm_layers:
            x = layer(x, mask)
        return self.layernorm(x)


class TransformerDecoderLayer(nn.Module):  # layernorm_first = True
    def __init__(self, cfg):
        super().__init__()
        d, p = cfg["d_model"], cfg["dropout"]
        self.self_att = MultiHeadedAttention(d, cfg["num_heads"], p)
        self.encdec_att = MultiHeadedAttention(d, cfg["num_heads"], p)
        self.feed_forward = PositionwiseFeedForward(d, cfg["fdfwd_dim"], cfg["fdfwd_activation"], p)
        self.self_att_ln = nn.LayerNorm(d, eps=cfg["ln_eps"])
        self.encdec_att_ln = nn.LayerNorm(d, eps=cfg["ln_eps"])
        self.fdfwd_ln = nn.LayerNorm(d, eps=cfg["ln_eps"])
        self.dropout = nn.Dropout(p)

    def forward(self, tgt, src, tgt_mask, src_mask):
        h = self.self_att_ln(tgt)
        x = self.dropout(self.self_att(h, h, h, tgt_mask)) + tgt
        h = self.encdec_att_ln(x)
        x = self.dropout(self.encdec_att(src, src, h, src_mask)) + x
        return self.dropout(self.feed_forward(self.fdfwd_ln(x))) + x


class TransformerDecoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["d_model"]
        self.posenc = PositionalEncoding(d, cfg["dec_emb_scale"], cfg["posenc_maxlen"], cfg["dropout"])
        self.trfm_layers = nn.ModuleList(TransformerDecoderLayer(cfg) for _ in range(cfg["dec_layers"]))
        self.layernorm = nn.LayerNorm(d, eps=cfg["ln_eps"])

    def forward(self, tgt, src, tgt_mask, src_mask):
        x = self.posenc(tgt)
        b, _, n = tgt_mask.shape  # key padding AND causal; padded query rows are not masked
        causal = ~torch.triu(torch.ones(b, n, n, dtype=torch.bool), diagonal=1)
        tgt_mask = torch.logical_and(tgt_mask.repeat(1, n, 1), causal)
        for layer in self.trfm_layers:
            x = layer(x, src, tgt_mask, src_mask)
        return self.layernorm(x)


class ASREncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.prenet = Conv2dPrenet(cfg["idim"], cfg["conv_dims"], cfg["conv_batchnorm"], cfg["conv_activation"],
                                   cfg["d_model"])
        self.encoder = TransformerEncoder(cfg)

    def forward(self, feat, feat_len):
        x, enc_len = self.prenet(feat, feat_len)
        mask = make_mask_from_len(enc_len)
        return self.encoder(x, mask), mask, x


class ARASRDecoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embedding = EmbedPrenet(cfg["vocab"], cfg["d_model"])
        self.decoder = TransformerDecoder(cfg)
        self.postnet = TokenPostnet(cfg["d_model"], cfg["vocab"])

    def forward(self, enc_feat, enc_mask, text, text_len):
        return self.postnet(self.decoder(self.embedding(text), enc_feat, make_mask_from_len(text_len), enc_mask))


class ARASR(nn.Module):  # registration order of ARASR.module_init: encoder, ctc_layer, decoder
    def __init__(self, cfg):
        super().__init__()
        self.encoder = ASREncoder(cfg)
        self.ctc_layer = TokenPostnet(cfg["d_model"], cfg["vocab"])
        self.decoder = ARASRDecoder(cfg)


# ----------------------------------------------------------------------------------------------- forward + criteria
def decoder_input(text, text_len):
    """ARASR.module_forward's decoder input: a copy of text with <eos> -> ignore_idx, last column dropped."""
    dec_text = text.clone()  # Model.forward deep-copies the batch
    for i in range(dec_text.size(0)):
        dec_text[i, text_len[i] - 1] = BLANK
    return dec_text[:, :-1], text_len - 1


def asr_train_step(model, cfg, feat, feat_len, text, text_len):
    """ARASR.module_forward on a copy of text, then criterion_forward on the unmodified text."""
    dec_text, dec_len = decoder_input(text, text_len)
    enc_feat, enc_mask, prenet_out = model.encoder(feat, feat_len)
    logits = model.decoder(enc_feat, enc_mask, dec_text, dec_len)
    ctc_logits = model.ctc_layer(enc_feat)
    r = asr_criteria(cfg, logits, ctc_logits, enc_mask, text, text_len)
    r.update(prenet_out=prenet_out, enc_out=enc_feat)
    return r


def asr_criteria(cfg, logits, ctc_logits, enc_mask, text, text_len):
    """ARASR.criterion_forward: CE (+ label smoothing), CTC, their weighted sum, accuracy."""
    enc_feat_len = enc_mask.squeeze(1).sum(dim=-1)

    # CrossEntropy (length_normalized False, temperature 1): targets text[:, 1:], lengths text_len - 1
    b, n, v = logits.shape
    tgt, tgt_len = text[:, 1:], text_len - 1
    log_prob = torch.log_softmax(logits.contiguous().view(b * n, v) / 1.0, dim=-1)
    tok = log_prob.gather(1, tgt.contiguous().view(-1, 1)).squeeze(-1)
    eps = cfg["label_smoothing"]
    if eps > 0:
        tok = tok * (1 - eps) + (log_prob * (eps / v)).sum(dim=1)
    pad = ~make_mask_from_len(tgt_len, n).squeeze(1).reshape(-1)
    sent = tok.masked_fill(pad, 0.0).reshape(b, n).sum(dim=-1)
    ce_loss = -sent.mean()

    # CTCLoss (blank 0, zero_infinity True): targets text[:, 1:-1], lengths text_len - 2, concatenated
    ctc_lp = ctc_logits.transpose(0, 1).log_softmax(dim=-1)
    ctc_tgt_len = text_len - 2
    ctc_tgt = torch.cat([text[i, 1:-1][:ctc_tgt_len[i]] for i in range(b)])
    ctc_utt = nn.functional.ctc_loss(ctc_lp, ctc_tgt, enc_feat_len, ctc_tgt_len, blank=BLANK, reduction="none",
                                     zero_infinity=True)
    ctc_raw = nn.functional.ctc_loss(ctc_lp.detach(), ctc_tgt, enc_feat_len, ctc_tgt_len, blank=BLANK,
                                     reduction="none", zero_infinity=False)
    ctc_loss = ctc_utt.mean()
    loss = (1 - cfg["ctc_weight"]) * ce_loss + cfg["ctc_weight"] * ctc_loss

    # Accuracy: argmax hits on the valid target positions / sum(text_len - 1)
    correct = logits.argmax(dim=-1).eq(tgt).masked_select(~pad.view(b, n)).sum()
    accuracy = correct / tgt_len.sum()
    return dict(loss=loss, ce_loss=ce_loss, ctc_loss=ctc_loss, accuracy=accuracy, ce_per_sentence=-sent,
                ctc_per_utt=ctc_utt, ctc_infinite=torch.isinf(ctc_raw), enc_feat_len=enc_feat_len,
                correct=correct, total=tgt_len.sum(), ctc_logits=ctc_logits, logits=logits)


# ----------------------------------------------------------------------------------------------- data + weights
def init_weights(model, seed):
    """Seeded xavier-normal weights; norm scales 1 + 0.1 N; biases 0.1 N; BN running stats perturbed too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.LayerNorm, nn.BatchNorm2d)):
                mod.weight.copy_(1 + 0.1 * torch.randn(mod.weight.shape, generator=g))
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=g))
                if isinstance(mod, nn.BatchNorm2d):
                    mod.running_mean.copy_(0.2 * torch.randn(mod.running_mean.shape, generator=g))
                    mod.running_var.copy_(0.5 + torch.rand(mod.running_var.shape, generator=g))
            elif isinstance(mod, nn.Embedding):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g))
                mod.weight[mod.padding_idx].zero_()  # as torch's reset_parameters leaves it
            elif isinstance(mod, (nn.Linear, nn.Conv2d)):
                w = mod.weight
                rf = w[0, 0].numel()
                fan_in, fan_out = w.shape[1] * rf, w.shape[0] * rf
                w.copy_(math.sqrt(2.0 / (fan_in + fan_out)) * torch.randn(w.shape, generator=g))
                if mod.bias is not None:
                    mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=g))


def make_inputs(cfg):
    g = torch.Generator().manual_seed(cfg["feat_seed"])
    feat_len = torch.tensor(FEAT_LEN)
    feat = torch.randn(len(FEAT_LEN), max(FEAT_LEN), cfg["idim"], generator=g)
    feat = feat.masked_fill(~make_mask_from_len(feat_len).squeeze(1).unsqueeze(-1), 0.0)
    text_len = torch.tensor([len(t) for t in cfg["text"]])
    text = torch.zeros(len(cfg["text"]), int(text_len.max()), dtype=torch.long)  # padding 0
    for i, row in enumerate(cfg["text"]):
        text[i, :len(row)] = torch.tensor(row)
    return feat, feat_len, text, text_len


def stored_state(model):
    """state_dict without the positional-encoding buffers, num_batches_tracked as float32."""
    return {k: v.detach().clone().float().contiguous() for k, v in model.state_dict().items()
            if not k.endswith("posenc.posenc")}


# ----------------------------------------------------------------------------------------------- self-check
FD_ENTRIES = [("encoder.prenet.conv.0.weight", (1, 0, 1, 2)), ("encoder.prenet.linear.linear.0.weight", (3, 5)),
              ("encoder.encoder.trfm_layers.0.multihead_att.q_layer.weight", (2, 7)),
              ("encoder.encoder.trfm_layers.1.feed_forward.in_layer.bias", (9,)),
              ("encoder.encoder.layernorm.weight", (4,)), ("ctc_layer.linear.weight", (1, 0)),
              ("decoder.embedding.embed.weight", (5, 3)),
              ("decoder.decoder.trfm_layers.1.encdec_att.v_layer.weight", (6, 11)),
              ("decoder.decoder.trfm_layers.0.fdfwd_ln.bias", (2,)), ("decoder.postnet.linear.bias", (3,))]


def fd_check(model, cfg, batch, grads32, h=1e-5):
    """Central differences of the float64 loss vs float64 autograd (and vs the float32 gradients)."""
    m64 = copy.deepcopy(model).double()
    feat, feat_len, text, text_len = batch
    feat = feat.double()
    params = dict(m64.named_parameters())
    entries = list(FD_ENTRIES)
    if "encoder.prenet.conv.1.weight" in params:
        entries.insert(1, ("encoder.prenet.conv.1.weight", (2,)))  # BatchNorm gamma (train mode)
    loss64 = asr_train_step(m64, cfg, feat, feat_len, text, text_len)["loss"]
    g64 = dict(zip(params, torch.autograd.grad(loss64, list(params.values()))))
    print(f"  float64 loss {loss64.item():.10f}")
    worst = 0.0
    with torch.no_grad():
        for name, idx in entries:
            p, orig = params[name], params[name][idx].item()
            p[idx] = orig + h
            lp = asr_train_step(m64, cfg, feat, feat_len, text, text_len)["loss"].item()
            p[idx] = orig - h
            lm = asr_train_step(m64, cfg, feat, feat_len, text, text_len)["loss"].item()
            p[idx] = orig
            fd, ad, a32 = (lp - lm) / (2 * h), g64[name][idx].item(), grads32[name][idx].item()
            rel = abs(fd - ad) / max(abs(ad), 1e-8)
            worst = max(worst, rel)
            print(f"  {name}{list(idx)}: fd {fd:+.9e} autograd64 {ad:+.9e} rel {rel:.1e} | float32 {a32:+.9e}")
    print(f"  worst fd/autograd64 relative difference {worst:.1e}")
    assert worst < 1e-5, "finite differences disagree with autograd"
    return loss64.item()


# ----------------------------------------------------------------------------------------------- main
def run_case(name, cfg, out_dir):
    torch.manual_seed(0)  # module constructors draw from the global RNG before init_weights overwrites them
    model = ARASR(cfg)
    init_weights(model, cfg["weight_seed"])
    model.train()  # BatchNorm on batch statistics (dropouts are all 0)
    weights = stored_state(model)
    batch = make_inputs(cfg)
    feat, feat_len, text, text_len = batch
    r = asr_train_step(model, cfg, feat, feat_len, text, text_len)
    r["loss"].backward()
    grads = {k: p.grad.detach().clone().contiguous() for k, p in model.named_parameters()}
    assert set(grads) <= set(weights) and len(weights) == len(model.state_dict()) - 2

    inter = dict(prenet_out=r["prenet_out"], enc_out=r["enc_out"], ctc_logits=r["ctc_logits"], logits=r["logits"])
    inter = {k: v.detach().contiguous() for k, v in inter.items()}
    inter.update({f"after.{k}": v for k, v in stored_state(model).items() if ".conv." in k and "running" in k
                  or k.endswith("num_batches_tracked")})

    d = out_dir / name
    d.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(d / "weights.safetensors"))
    save_file({"feat": feat, "feat_len": feat_len.float(), "text": text.float(), "text_len": text_len.float()},
              str(d / "inputs.safetensors"))
    save_file(grads, str(d / "grads.safetensors"))
    save_file(inter, str(d / "intermediates.safetensors"))

    conf = {k: v for k, v in cfg.items() if k != "text"}
    conf.update(batch_size=len(FEAT_LEN), feat_len=FEAT_LEN, sos_eos_idx=SOS_EOS, blank_idx=BLANK, model_mode="train")
    out = dict(case=name, torch_version=torch.__version__,
               loss=r["loss"].item(), ce_loss=r["ce_loss"].item(), ctc_loss=r["ctc_loss"].item(),
               accuracy=r["accuracy"].item(), accuracy_correct=int(r["correct"]), accuracy_total=int(r["total"]),
               enc_feat_len=r["enc_feat_len"].tolist(), ctc_per_utt=r["ctc_per_utt"].tolist(),
               ctc_infinite_before_zeroing=r["ctc_infinite"].tolist(),
               ce_per_sentence=r["ce_per_sentence"].tolist(), config=conf)
    (d / "outputs.json").write_text(json.dumps(out, indent=2) + "\n")

    print(f"[{name}] loss {out['loss']:.8f} ce {out['ce_loss']:.8f} ctc {out['ctc_loss']:.8f} "
          f"acc {out['accuracy']:.6f} enc_len {out['enc_feat_len']} ctc/utt {out['ctc_per_utt']} "
          f"inf {out['ctc_infinite_before_zeroing']}")
    loss64 = fd_check(model, cfg, batch, grads)
    print(f"  float32 vs float64 loss: |diff| {abs(loss64 - out['loss']):.2e}")
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_out = Path(__file__).resolve().parents[2] / "Tests/SpeechainMPITests/Resources/asr_refs"
    ap.add_argument("--out", type=Path, default=default_out)
    ap.add_argument("--keys", action="store_true", help="print case 1's full state_dict keys and shapes")
    args = ap.parse_args()
    for name, cfg in CASES.items():
        model = run_case(name, cfg, args.out)
        if args.keys and name == "bn_gelu":
            for k, v in model.state_dict().items():
                print(f"    {k} {list(v.shape)} {str(v.dtype).replace('torch.', '')}")


if __name__ == "__main__":
    main()
