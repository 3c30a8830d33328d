#!/usr/bin/env python3
"""SpeeChain's Speech2MelSpec in torch/torchaudio, timed like `speechain-mpi bench-frontend` on the same batch.

The batch: batch_size utterances cycling through the given 16-bit PCM wavs, zero-padded to the longest. Each repeat
runs SpeeChain's forward (speech2linear.py + linear2mel.py with the recipe conf: preemphasis 0.97 as a Conv1d, the
per-utterance zeroing loops, torch.stft with a periodic Hann window, center, reflect padding, the power spectrum, the
frame-length zeroing loop, the mel filterbank as a bias-free Linear, clamp, log, / ln 10) under torch.inference_mode;
the window and the filterbank are made once before, as SpeeChain's module holds them. One thread
(torch.set_num_threads(1)). Prints the median time per batch and seconds of audio (true lengths) per second.

Usage (torch and torchaudio of one release, e.g. the venv of scripts/reference/mel_ref.py):
    /tmp/torchvenv/bin/python scripts/bench/frontend_torchaudio.py Tests/SpeechainMPITests/Resources/speech/*.wav
"""
import argparse
import math
import time
import wave

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio


def read_wav(path, sr):
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1 or w.getframerate() != sr:
            raise SystemExit(f"{path}: not 16-bit PCM mono at {sr} Hz")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


class Frontend:
    """The recipe conf: n_mels 80, hop 160, win = n_fft 400, sr 16000, preemphasis 0.97, slaney, log10."""

    def __init__(self, n_mels, hop, win, sr=16000, preemphasis=0.97):
        self.n_mels, self.hop, self.win, self.n_fft, self.sr = n_mels, hop, win, win, sr
        self.preemph = torch.tensor([-preemphasis, 1.0]).reshape(1, 1, 2)
        self.window = torch.hann_window(win)
        self.fbank = torchaudio.functional.melscale_fbanks(n_freqs=self.n_fft // 2 + 1, f_min=0.0, f_max=sr // 2,
                                                           n_mels=n_mels, sample_rate=sr, norm="slaney",
                                                           mel_scale="slaney").T.contiguous()

    def __call__(self, speech, speech_len):
        speech = F.conv1d(F.pad(speech.unsqueeze(1), (1, 0)), self.preemph).squeeze(1)
        for i in range(speech_len.size(0)):
            if speech_len[i] < speech.size(1):
                speech[i][speech_len[i]:] = 0.0
        spec = torch.stft(speech, n_fft=self.n_fft, hop_length=self.hop, win_length=self.win, window=self.window,
                          center=True, pad_mode="reflect", normalized=False, onesided=True,
                          return_complex=True).transpose(1, 2)
        feat_len = torch.div(speech_len + 2 * (self.n_fft // 2) - self.n_fft, self.hop, rounding_mode="floor") + 1
        power = spec.real ** 2 + spec.imag ** 2
        for i in range(feat_len.size(0)):
            if feat_len[i] < power.size(1):
                power[i][feat_len[i]:] = 0.0
        mel = F.linear(power, self.fbank)
        mel = torch.clamp(mel, min=1e-10).log()
        mel /= math.log(10.0)
        return mel, feat_len


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("wavs", nargs="+")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--n_mels", type=int, default=80)
    p.add_argument("--hop_length", type=int, default=160)
    p.add_argument("--win_length", type=int, default=400)
    a = p.parse_args()
    torch.set_num_threads(1)
    frontend = Frontend(a.n_mels, a.hop_length, a.win_length)
    audio = [read_wav(w, frontend.sr) for w in a.wavs]
    lengths = [len(audio[b % len(audio)]) for b in range(a.batch_size)]
    T = max(lengths)
    batch = torch.zeros(a.batch_size, T)
    for b in range(a.batch_size):
        batch[b, :lengths[b]] = torch.from_numpy(audio[b % len(audio)])
    speech_len = torch.tensor(lengths)
    seconds = sum(lengths) / frontend.sr
    times = []
    with torch.inference_mode():
        for i in range(a.warmup + a.repeats):
            x = batch.clone()   # SpeeChain's forward writes into its input; the copy is outside the timing
            start = time.perf_counter()
            mel, _ = frontend(x, speech_len)
            elapsed = time.perf_counter() - start
            if i >= a.warmup:
                times.append(elapsed)
    times.sort()
    n = len(times)
    median = times[n // 2] if n % 2 else (times[n // 2 - 1] + times[n // 2]) / 2
    print(f"bench-frontend torch {torch.__version__}/torchaudio {torchaudio.__version__}: {a.batch_size} utterances, "
          f"{seconds:.3f} s of audio (batch {a.batch_size} x {T} samples, {mel.shape[1]} frames), n_mels {a.n_mels} "
          f"hop {a.hop_length} win {a.win_length}, 1 thread")
    print(f"bench-frontend torch: median {median:.6f} s per batch = {seconds / median:.1f} s of audio per second "
          f"(min {times[0]:.6f} s, max {times[-1]:.6f} s, {n} repeats); CPU {cpu_model()}")


if __name__ == "__main__":
    main()
