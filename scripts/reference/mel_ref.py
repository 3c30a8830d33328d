#!/usr/bin/env python3
"""Reference log-mel features for the Swift frontend (Tests/SpeechainMPITests/Speech/Speech2MelSpecTests.swift).

Computes SpeeChain's `frontend.speech2mel.Speech2MelSpec` pipeline (speech2linear.py + linear2mel.py, read from
SpeeChain's source and written out here with plain torch / torchaudio calls) on the espeak-ng utterances in
Tests/SpeechainMPITests/Resources/speech/, and writes beside them:

    mel_ref.json            the confs, the batches (which wavs, in which order), the sample and frame lengths, the
                            frame count F of each batch, the torch/torchaudio versions
    <case>.npy              float32 [B*F, n_mels]: the padded batch's features, row b*F + f
    recipe_single_yes_f64.npy  the same case computed in float64 (then rounded to float32): the formula's value,
                            against which float32 torch and float32 Swift are both measured
    fbank_recipe.npy        float32 [80, 201]: melscale_fbanks(201, 0, 8000, 80, 16000, 'slaney', 'slaney').T
    timewarp.npy            float32 [2*30, 8] input and [2*30, 8] output (rows 60…119) of the bicubic time warp
                            (torch.nn.functional.interpolate, align_corners=True) at a fixed centre and position

The pipeline, per SpeeChain: preemphasis as Conv1d([-c, 1]) over the row left-padded with one zero, samples past
each length zeroed again; torch.stft(n_fft, hop, win, periodic Hann window, center=True, pad_mode='reflect',
normalized, onesided, return_complex) over the whole zero-padded batch; power |X|² (sqrt with mag_spec);
feat_len = (len + 2*(n_fft//2) - n_fft)//hop + 1; power rows past feat_len zeroed; mel = power @ fbank;
log(clamp(mel, clamp)) / log(log_base).

Regenerate (from the repository root; torch and torchaudio of one release from PyPI, e.g. in a venv):
    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install "torch==2.11.0" "torchaudio==2.11.0"
    /tmp/torchvenv/bin/python scripts/reference/mel_ref.py
The wavs were made with `espeak-ng -v en-us -s 200 -w raw.wav "<text>"` then `sox raw.wav -r 16000 -b 16 -c 1 out.wav`.
"""
import json
import math
import os
import sys
import wave

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SPEECH = os.path.join(ROOT, "Tests", "SpeechainMPITests", "Resources", "speech")

WAVS = ["yes.wav", "three_oh_seven.wav", "speech_chain.wav", "one_two_three_four.wav"]

# SpeeChain's ASR recipes (recipes/asr/librispeech/*): the frontend conf as they write it.
RECIPE = {"n_mels": 80, "hop_length": 0.010, "win_length": 0.025, "sr": 16000, "preemphasis": 0.97}
# SpeeChain's TTS recipe (recipes/tts/libritts/.../16khz_ecapa_mfa_fastspeech2.yaml) with hop_length 256.
TTS = {"n_mels": 80, "hop_length": 256, "win_length": 1024, "sr": 16000, "mag_spec": True, "fmin": 0, "fmax": 8000,
       "log_base": None, "clamp": 1e-5}
# Other keys: HTK scale without area normalisation, n_fft > win_length (padded window), normalized STFT, fmin/fmax.
HTK = {"n_mels": 40, "hop_length": 0.0125, "win_length": 0.025, "n_fft": 512, "sr": 16000, "preemphasis": 0.97,
       "mel_scale": "htk", "mel_norm": False, "normalized": True, "fmin": 20, "fmax": 7600}

CASES = [
    ("recipe_batch", RECIPE, WAVS),
    ("recipe_single_yes", RECIPE, ["yes.wav"]),
    ("tts_batch", TTS, ["one_two_three_four.wav", "yes.wav"]),
    ("htk_batch", HTK, ["speech_chain.wav", "three_oh_seven.wav"]),
]


def read_wav(path):
    """16-bit PCM mono as float32 in [-1, 1) (what soundfile gives SpeeChain)."""
    with wave.open(path, "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1 and w.getframerate() == 16000, path
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return data.astype(np.float32) / 32768.0


def conf_value(conf, key, default):
    return conf[key] if key in conf else default


def speech2mel(speech, speech_len, conf):
    sr = conf_value(conf, "sr", 16000)
    hop, win = conf["hop_length"], conf["win_length"]
    hop = int(hop * sr) if isinstance(hop, float) else hop
    win = int(win * sr) if isinstance(win, float) else win
    n_fft = conf_value(conf, "n_fft", None) or win
    preemphasis = conf_value(conf, "preemphasis", None)
    normalized = conf_value(conf, "normalized", False)
    mag_spec = conf_value(conf, "mag_spec", False)
    fmin = conf_value(conf, "fmin", 0.0)
    fmax = conf_value(conf, "fmax", None)
    fmax = sr // 2 if fmax is None else fmax
    clamp = conf_value(conf, "clamp", 1e-10)
    log_base = conf_value(conf, "log_base", 10.0)
    mel_scale = conf_value(conf, "mel_scale", "slaney")
    mel_norm = conf_value(conf, "mel_norm", True)
    n_mels = conf["n_mels"]

    x = speech
    if preemphasis is not None:
        weight = torch.tensor([-preemphasis, 1.0], dtype=x.dtype).reshape(1, 1, 2)
        x = F.conv1d(F.pad(x.unsqueeze(1), (1, 0)), weight).squeeze(1)
        for i in range(x.size(0)):
            if speech_len[i] < x.size(1):
                x[i, speech_len[i]:] = 0.0
    window = torch.hann_window(win, dtype=x.dtype)
    spec = torch.stft(x, n_fft=n_fft, hop_length=hop, win_length=win, window=window, center=True,
                      pad_mode="reflect", normalized=normalized, onesided=True, return_complex=True).transpose(1, 2)
    feat_len = torch.div(speech_len + 2 * (n_fft // 2) - n_fft, hop, rounding_mode="floor") + 1
    power = spec.real ** 2 + spec.imag ** 2
    for i in range(power.size(0)):
        if feat_len[i] < power.size(1):
            power[i, feat_len[i]:] = 0.0
    if mag_spec:
        power = torch.sqrt(power)
    fbank = torchaudio.functional.melscale_fbanks(n_freqs=n_fft // 2 + 1, f_min=fmin, f_max=fmax, n_mels=n_mels,
                                                  sample_rate=sr, norm="slaney" if mel_norm else None,
                                                  mel_scale=mel_scale).T
    mel = F.linear(power, fbank.to(power.dtype))
    mel = torch.clamp(mel, min=clamp).log()
    if log_base is not None:
        mel /= math.log(log_base)
    return mel, feat_len, fbank


def main():
    torch.set_num_threads(1)
    manifest = {"torch": torch.__version__, "torchaudio": torchaudio.__version__, "cases": []}
    waves = {name: read_wav(os.path.join(SPEECH, name)) for name in WAVS}
    for case, conf, names in CASES:
        lengths = [len(waves[n]) for n in names]
        T = max(lengths)
        batch = torch.zeros(len(names), T)
        for i, n in enumerate(names):
            batch[i, :lengths[i]] = torch.from_numpy(waves[n])
        with torch.no_grad():
            mel, feat_len, fbank = speech2mel(batch, torch.tensor(lengths), conf)
        B, Fr, M = mel.shape
        np.save(os.path.join(SPEECH, f"{case}.npy"), mel.reshape(B * Fr, M).numpy().astype(np.float32))
        manifest["cases"].append({"name": case, "conf": conf, "wavs": names, "lengths": lengths, "samples": T,
                                  "frames": Fr, "feat_lens": feat_len.tolist(), "n_mels": M})
        if case == "recipe_single_yes":
            # the same in float64 (stored rounded to float32): how far float32 arithmetic itself is from the formula
            torch.set_default_dtype(torch.float64)
            with torch.no_grad():
                mel64, _, _ = speech2mel(batch.double(), torch.tensor(lengths), conf)
            torch.set_default_dtype(torch.float32)
            np.save(os.path.join(SPEECH, f"{case}_f64.npy"), mel64.reshape(B * Fr, M).numpy().astype(np.float32))
            print(f"{case}: float32 torch vs float64 torch: max abs {(mel.double() - mel64).abs().max():.3g}")
        if case == "recipe_batch":
            np.save(os.path.join(SPEECH, "fbank_recipe.npy"), np.ascontiguousarray(fbank.numpy().astype(np.float32)))
        print(f"{case}: B={B} T={T} F={Fr} feat_lens={feat_len.tolist()} range [{mel.min():.3f}, {mel.max():.3f}]")

    # SpecAugment's time warp (specaug.py): left rows [0, c) resized to p rows, rows [c, minlen) to minlen - p rows,
    # bicubic with align_corners=True over [B, 1, T, D] (the width is unchanged).
    g = torch.Generator().manual_seed(7)
    feat = torch.randn(2, 30, 8, generator=g)
    center, pos, minlen = 13, 10, 24
    warped = feat.clone().unsqueeze(1)
    left = F.interpolate(warped[:, :, :center], size=(pos, 8), mode="bicubic", align_corners=True)
    right = F.interpolate(warped[:, :, center:minlen], size=(minlen - pos, 8), mode="bicubic", align_corners=True)
    warped[:, :, :pos] = left
    warped[:, :, pos:minlen] = right
    warped = warped.squeeze(1)
    np.save(os.path.join(SPEECH, "timewarp.npy"),
            torch.cat([feat.reshape(60, 8), warped.reshape(60, 8)]).numpy().astype(np.float32))
    manifest["timewarp"] = {"batch": 2, "frames": 30, "dim": 8, "center": center, "position": pos, "minlen": minlen,
                            "mode": "bicubic"}
    with open(os.path.join(SPEECH, "mel_ref.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
