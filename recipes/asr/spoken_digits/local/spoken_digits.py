#!/usr/bin/env python3
"""Spoken-digits corpus: the planning, rendering and indexing steps behind data_prep.sh.

Python 3 standard library only. Three subcommands, run in this order by data_prep.sh:

  plan    draws every utterance's words, voice and synthesis parameters from the seed and writes
          <out>/.work/plan.tsv plus the noise bank (<out>/.work/noise_{white,pink}.f32);
  render  synthesises the utterances of one shard of the plan (espeak-ng -> sox -> noise, level, padding)
          into <out>/wav/<set>/audio/<idx>.wav; shards run in parallel (xargs -P);
  index   writes SpeeChain's metadata files per set, the char vocabulary of the train set and the meta file.

Everything an utterance looks like is decided in `plan`, from random generators seeded by (seed, set name), so the
output does not depend on the number of shards or parallel jobs, and the same seed gives the same bytes again
(on the same espeak-ng, sox and Python; their versions go into the meta file).
"""
import argparse
import array
import hashlib
import math
import operator
import os
import random
import subprocess
import sys
import wave

SAMPLE_RATE = 16000
SETS = ("train", "valid", "test")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
WORDS = ("oh",) + DIGIT_WORDS

# Variants (espeak-ng-data/voices/!v/<file>) held out of training. Test and valid voices never occur in train and
# not in each other. Chosen by hand to span genders and synthesiser families (plain formant voices, klatt, iven,
# robosoft, Gene); a name missing from the installed espeak-ng is skipped and recorded in the meta file.
TEST_VARIANTS = ("Annie", "f3", "steph2", "aunty", "m3", "m7", "travis", "klatt3", "iven3", "robosoft4", "Gene2",
                 "norbert")
VALID_VARIANTS = ("Alicia", "f4", "linda", "m4", "Denis", "klatt5", "robosoft2", "iven2")
# 'fast' (name fast_test) only tunes espeak-ng's fastest speed and is marked unstable by its own file.
EXCLUDED_VARIANTS = ("fast",)

# Synthesis parameter ranges (inclusive).
RATE_WPM = (120, 220)          # espeak-ng -s, words per minute (its default is 175)
PITCH = (20, 80)               # espeak-ng -p, 0..99 (default 50), relative to the variant's own pitch range
WORD_GAP = (0, 10)             # espeak-ng -g, extra pause between words in units of 10 ms
LEAD_S = (0.05, 0.40)          # silence (or noise) before the speech, seconds
TAIL_S = (0.05, 0.30)          # after it
PEAK_DB = (-12.0, -1.0)        # peak level of the finished file, dBFS
NOISE_PROB = 0.5               # share of utterances with additive noise when noise is on
SNR_DB = (5.0, 30.0)           # signal-to-noise ratio of those, dB (speech power over the speech span)
NOISE_TYPES = ("white", "pink")
NOISE_BANK_S = 20              # seconds of each noise type; an utterance reads a slice at a random offset
DIGITS = (1, 7)                # digits per utterance
TRIM_LEVEL = 64                # |sample| above which espeak-ng's own leading/trailing silence ends


def die(message):
    print(f"spoken_digits: error: {message}", file=sys.stderr)
    sys.exit(1)


def generator(seed, label):
    """A random.Random seeded from (seed, label) through SHA-256, so each set has its own stream."""
    digest = hashlib.sha256(f"spoken_digits/{seed}/{label}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# Only random() is used: Python guarantees its sequence for a given seed across versions.
def draw_int(r, lo, hi):
    return lo + min(int(r.random() * (hi - lo + 1)), hi - lo)


def draw_float(r, lo, hi):
    return lo + (hi - lo) * r.random()


# --- espeak-ng's voices -------------------------------------------------------------------------------------------

def espeak_data_dir():
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    marker = "Data at:"
    if marker not in out:
        die(f"cannot find espeak-ng's data folder in: {out.strip()}")
    return out.split(marker, 1)[1].strip()


def english_accents():
    """The English language voices of espeak-ng's own synthesiser (gmw/...); MBROLA voices need mbrola."""
    out = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True, check=True).stdout
    accents = set()
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5 and fields[4].startswith("gmw/") and fields[1].startswith("en"):
            accents.add(fields[1])
    if not accents:
        die("espeak-ng lists no English voice (espeak-ng --voices=en)")
    return sorted(accents)


def variant_gender(path):
    """'M' or 'F' from the variant file's `gender` line; 'U' when the file has none (espeak-ng then lists it as
    male by default, which says nothing about the voice)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 2 and fields[0].lower() == "gender":
                g = fields[1].lower()
                if g.startswith("f"):
                    return "F"
                if g.startswith("m"):
                    return "M"
    return "U"


def speaker_id(variant):
    return variant.replace(" ", "_")


def voice_sets():
    """{set: [(variant file name, speaker id, gender)]} and the names of held-out variants that are missing."""
    vdir = os.path.join(espeak_data_dir(), "voices", "!v")
    if not os.path.isdir(vdir):
        die(f"no variant folder {vdir}")
    installed = sorted(n for n in os.listdir(vdir) if os.path.isfile(os.path.join(vdir, n)))
    missing = [n for n in TEST_VARIANTS + VALID_VARIANTS if n not in installed]
    held = set(TEST_VARIANTS) | set(VALID_VARIANTS) | set(EXCLUDED_VARIANTS)

    def describe(names):
        return [(n, speaker_id(n), variant_gender(os.path.join(vdir, n))) for n in names if n in installed]

    sets = {
        "train": describe([n for n in installed if n not in held]),
        "valid": describe(sorted(VALID_VARIANTS)),
        "test": describe(sorted(TEST_VARIANTS)),
    }
    for name, voices in sets.items():
        if not voices:
            die(f"no espeak-ng variant is left for the {name} set")
    return sets, missing


# --- plan ---------------------------------------------------------------------------------------------------------

PLAN_FIELDS = ("set", "idx", "text", "accent", "variant", "spk", "gen", "rate", "pitch", "gap", "lead", "tail",
               "peak_db", "noise", "snr_db", "noise_offset")


def plan_set(name, count, seed, voices, accents, noise_on):
    r = generator(seed, name)
    width = max(5, len(str(count - 1)))
    rows = []
    for n in range(count):
        variant, spk, gen = voices[draw_int(r, 0, len(voices) - 1)]
        accent = accents[draw_int(r, 0, len(accents) - 1)]
        words = []
        for _ in range(draw_int(r, *DIGITS)):
            d = draw_int(r, 0, 9)
            # zero is said "zero" or "oh", even odds
            words.append(("zero" if r.random() < 0.5 else "oh") if d == 0 else DIGIT_WORDS[d])
        row = {
            "set": name, "idx": f"{name}-{n:0{width}d}-{spk}", "words": words, "accent": accent,
            "variant": variant, "spk": spk, "gen": gen,
            "rate": draw_int(r, *RATE_WPM), "pitch": draw_int(r, *PITCH), "gap": draw_int(r, *WORD_GAP),
            "lead": f"{draw_float(r, *LEAD_S):.3f}", "tail": f"{draw_float(r, *TAIL_S):.3f}",
            "peak_db": f"{draw_float(r, *PEAK_DB):.1f}",
        }
        # the noise draws are made whether or not noise is on, so --noise off changes nothing else
        noisy = r.random() < NOISE_PROB
        kind = NOISE_TYPES[draw_int(r, 0, len(NOISE_TYPES) - 1)]
        snr = f"{draw_float(r, *SNR_DB):.1f}"
        offset = draw_int(r, 0, NOISE_BANK_S * SAMPLE_RATE - 1)
        if noise_on and noisy:
            row.update(noise=kind, snr_db=snr, noise_offset=offset)
        else:
            row.update(noise="none", snr_db="-", noise_offset=0)
        rows.append(row)
    return rows


def cover_every_word(rows):
    """Makes the train set say every word at least once (so the char vocabulary, built from train as SpeeChain
    builds it, covers every transcript of every set): a missing word replaces a word that occurs more than once,
    from the first utterance on. Needs at least 11 words in the set, which 11 utterances guarantee."""
    counts = {w: 0 for w in WORDS}
    for row in rows:
        for w in row["words"]:
            counts[w] += 1
    for missing in [w for w in WORDS if counts[w] == 0]:
        done = False
        for row in rows:
            for i, w in enumerate(row["words"]):
                if counts[w] > 1:
                    counts[w] -= 1
                    counts[missing] += 1
                    row["words"][i] = missing
                    done = True
                    break
            if done:
                break
        if not done:
            die("the train set is too small to say every digit word; use --train 11 or more")


def white_noise(r, n):
    """Gaussian white noise, unit variance (Box-Muller over random())."""
    out = array.array("f")
    while len(out) < n:
        u1 = 1.0 - r.random()  # (0, 1]
        u2 = r.random()
        radius = math.sqrt(-2.0 * math.log(u1))
        out.append(radius * math.cos(2.0 * math.pi * u2))
        out.append(radius * math.sin(2.0 * math.pi * u2))
    return out[:n]


def pink_noise(r, n):
    """1/f noise: white noise through Paul Kellet's three-pole 'economy' filter, scaled to unit RMS."""
    w = white_noise(r, n)
    b0 = b1 = b2 = 0.0
    out = array.array("f", bytes(4 * n))
    for i, x in enumerate(w):
        b0 = 0.99765 * b0 + x * 0.0990460
        b1 = 0.96300 * b1 + x * 0.2965164
        b2 = 0.57000 * b2 + x * 1.0526913
        out[i] = b0 + b1 + b2 + x * 0.1848
    rms = math.sqrt(sum(v * v for v in out) / n)
    return array.array("f", [v / rms for v in out])


def cmd_plan(args):
    if args.train < 11:
        die("--train must be at least 11 (the train set must say every digit word)")
    if args.valid < 1 or args.test < 1:
        die("--valid and --test must be at least 1")
    sets, missing = voice_sets()
    accents = english_accents()
    sizes = {"train": args.train, "valid": args.valid, "test": args.test}
    noise_on = args.noise == "on"
    work = os.path.join(args.out, ".work")
    os.makedirs(work, exist_ok=True)
    rows = []
    for name in SETS:
        set_rows = plan_set(name, sizes[name], args.seed, [v for v in sets[name]], accents, noise_on)
        if name == "train":
            cover_every_word(set_rows)
        rows += set_rows
    with open(os.path.join(work, "plan.tsv"), "w", encoding="utf-8") as f:
        f.write("\t".join(PLAN_FIELDS) + "\n")
        for row in rows:
            values = dict(row, text=" ".join(row["words"]))
            f.write("\t".join(str(values[k]) for k in PLAN_FIELDS) + "\n")
    r = generator(args.seed, "noise")
    bank = NOISE_BANK_S * SAMPLE_RATE
    for kind, make in (("white", white_noise), ("pink", pink_noise)):
        with open(os.path.join(work, f"noise_{kind}.f32"), "wb") as f:
            f.write(make(r, bank).tobytes())
    with open(os.path.join(work, "voices.tsv"), "w", encoding="utf-8") as f:
        for name in SETS:
            for variant, spk, gen in sets[name]:
                f.write(f"{name}\t{variant}\t{spk}\t{gen}\n")
        f.write("accents\t" + " ".join(accents) + "\n")
        f.write("missing\t" + " ".join(missing) + "\n")
    print(f"planned {len(rows)} utterances ({', '.join(f'{n} {sizes[n]}' for n in SETS)}), "
          f"{len(accents)} accents, voices: train {len(sets['train'])}, valid {len(sets['valid'])}, "
          f"test {len(sets['test'])}")


def read_plan(out):
    path = os.path.join(out, ".work", "plan.tsv")
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        return [dict(zip(header, line.rstrip("\n").split("\t"))) for line in f]


# --- render -------------------------------------------------------------------------------------------------------

def synthesise(row):
    """espeak-ng's voice for the row, resampled by sox to 16 kHz 16-bit mono (no dither, repeatable mode)."""
    voice = f"{row['accent']}+{row['variant']}"
    espeak = subprocess.Popen(
        ["espeak-ng", "-v", voice, "-s", row["rate"], "-p", row["pitch"], "-g", row["gap"], "--stdout", row["text"]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sox = subprocess.run(
        ["sox", "-V1", "-D", "-R", "-t", "wav", "-", "-t", "raw", "-r", str(SAMPLE_RATE), "-e", "signed-integer",
         "-b", "16", "-c", "1", "-"],
        stdin=espeak.stdout, capture_output=True)
    espeak.stdout.close()
    espeak_err = espeak.stderr.read().decode(errors="replace").strip()
    espeak.wait()
    if espeak.returncode != 0:
        die(f"{row['idx']}: espeak-ng -v '{voice}' failed: {espeak_err}")
    if sox.returncode != 0:
        die(f"{row['idx']}: sox failed: {sox.stderr.decode(errors='replace').strip()}")
    samples = array.array("h")
    samples.frombytes(sox.stdout)
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def trim(samples):
    """Drops espeak-ng's own leading and trailing silence, so that the plan's padding is the silence."""
    first = 0
    while first < len(samples) and abs(samples[first]) <= TRIM_LEVEL:
        first += 1
    last = len(samples)
    while last > first and abs(samples[last - 1]) <= TRIM_LEVEL:
        last -= 1
    if last <= first:
        return samples
    return samples[first:last]


def noise_slice(bank, offset, n):
    out = array.array("f")
    while len(out) < n:
        take = min(n - len(out), len(bank) - offset)
        out += bank[offset:offset + take]
        offset = 0
    return out


def render_row(row, banks, audio_dir):
    speech = trim(synthesise(row))
    if not speech:
        die(f"{row['idx']}: espeak-ng produced no audio")
    lead = int(round(float(row["lead"]) * SAMPLE_RATE))
    tail = int(round(float(row["tail"]) * SAMPLE_RATE))
    signal = [0] * lead + speech.tolist() + [0] * tail
    if row["noise"] != "none":
        noise = noise_slice(banks[row["noise"]], int(row["noise_offset"]), len(signal))
        speech_power = sum(map(operator.mul, speech, speech)) / len(speech)
        noise_power = sum(map(operator.mul, noise, noise)) / len(noise)
        # P_speech / (g² P_noise) = 10^(snr/10)
        g = math.sqrt(speech_power / (noise_power * 10.0 ** (float(row["snr_db"]) / 10.0)))
        signal = list(map(operator.add, signal, map(g.__mul__, noise)))
    peak = max(map(abs, signal))
    # the peak lands at peak_db <= -1 dBFS, so no sample can leave the 16-bit range
    k = (10.0 ** (float(row["peak_db"]) / 20.0)) * 32767.0 / peak if peak > 0 else 0.0
    out = array.array("h", map(round, map(k.__mul__, signal)))
    if sys.byteorder == "big":
        out.byteswap()
    path = os.path.join(audio_dir, f"{row['idx']}.wav")
    tmp = path + ".part"
    with wave.open(tmp, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(out.tobytes())
    os.replace(tmp, path)


def cmd_render(args):
    rows = read_plan(args.out)[args.shard::args.shards]
    banks = {}
    for kind in NOISE_TYPES:
        bank = array.array("f")
        with open(os.path.join(args.out, ".work", f"noise_{kind}.f32"), "rb") as f:
            bank.frombytes(f.read())
        banks[kind] = bank
    for row in rows:
        audio_dir = os.path.join(args.out, "wav", row["set"], "audio")
        os.makedirs(audio_dir, exist_ok=True)
        render_row(row, banks, audio_dir)


# --- index --------------------------------------------------------------------------------------------------------

def write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def char_tokens(text):
    return ["<space>" if c == " " else c for c in text]


def write_char_vocab(out, set_name, idx2text):
    """SpeeChain's char vocabulary (datasets/pyscripts/vocab_generator.py, vocab_size unset):
    data/char/<set>/full_tokens/<txt_format>/vocab — '<blank>' first, the characters by descending frequency
    (ties in order of first appearance, the file being sorted by idx), '<unk>' and '<sos/eos>' last; ' ' is
    '<space>' — and idx2text_len, the number of char tokens of each sentence."""
    folder = os.path.join(out, "char", set_name, "full_tokens", "no-punc")
    os.makedirs(folder, exist_ok=True)
    counts, first_seen = {}, {}
    for idx in sorted(idx2text):
        for t in char_tokens(idx2text[idx]):
            if t not in counts:
                counts[t] = 0
                first_seen[t] = len(first_seen)
            counts[t] += 1
    ordered = sorted(counts, key=lambda t: (-counts[t], first_seen[t]))
    write_lines(os.path.join(folder, "vocab"), ["<blank>"] + ordered + ["<unk>", "<sos/eos>"])
    write_lines(os.path.join(folder, "idx2text_len"),
                [f"{idx} {len(char_tokens(idx2text[idx]))}" for idx in sorted(idx2text)])
    return len(ordered) + 3


def wav_length(path):
    with wave.open(path, "rb") as w:
        if w.getframerate() != SAMPLE_RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            die(f"{path}: not 16 kHz 16-bit mono")
        return w.getnframes()


def version_line(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
        return (p.stdout + p.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return "unknown"


def cmd_index(args):
    rows = read_plan(args.out)
    work = os.path.join(args.out, ".work")
    root = os.path.abspath(args.out)
    summary = {}
    for name in SETS:
        set_rows = sorted((r for r in rows if r["set"] == name), key=lambda r: r["idx"])
        folder = os.path.join(args.out, "wav", name)
        os.makedirs(folder, exist_ok=True)
        idx2wav, idx2len, idx2text, idx2spk, idx2gen, idx2synth = [], [], {}, [], [], []
        seconds = 0.0
        for r in set_rows:
            path = os.path.join(folder, "audio", f"{r['idx']}.wav")
            if not os.path.isfile(path):
                die(f"{path} was not rendered")
            n = wav_length(path)
            seconds += n / SAMPLE_RATE
            # relative paths are relative to the current directory, as SpeeChain (soundfile) and our AudioReader
            # open them: run data_prep.sh from the folder training will run in
            shown = os.path.join(root, "wav", name, "audio", f"{r['idx']}.wav")
            if args.relative:
                shown = os.path.relpath(shown)
            idx2wav.append(f"{r['idx']} {shown}")
            idx2len.append(f"{r['idx']} {n}")
            idx2text[r["idx"]] = r["text"]
            idx2spk.append(f"{r['idx']} {r['spk']}")
            idx2gen.append(f"{r['idx']} {r['gen']}")
            noise = "none" if r["noise"] == "none" else f"{r['noise']} snr_db={r['snr_db']}"
            idx2synth.append(f"{r['idx']} voice={r['accent']}+{speaker_id(r['variant'])} rate={r['rate']} "
                             f"pitch={r['pitch']} gap={r['gap']} lead={r['lead']} tail={r['tail']} "
                             f"peak_db={r['peak_db']} noise={noise}")
        write_lines(os.path.join(folder, "idx2wav"), idx2wav)
        write_lines(os.path.join(folder, "idx2wav_len"), idx2len)
        write_lines(os.path.join(folder, "idx2no-punc_text"), [f"{i} {idx2text[i]}" for i in sorted(idx2text)])
        write_lines(os.path.join(folder, "idx2spk"), idx2spk)
        write_lines(os.path.join(folder, "idx2gen"), idx2gen)
        write_lines(os.path.join(folder, "spk_list"), sorted({r["spk"] for r in set_rows}))
        write_lines(os.path.join(folder, "idx2synth"), idx2synth)
        summary[name] = (len(set_rows), seconds)
        if name == "train":
            vocab_size = write_char_vocab(args.out, name, idx2text)

    voices = {name: [] for name in SETS}
    accents, missing = [], []
    with open(os.path.join(work, "voices.tsv"), encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if fields[0] == "accents":
                accents = fields[1].split()
            elif fields[0] == "missing":
                missing = fields[1].split()
            else:
                voices[fields[0]].append(f"{fields[2]}({fields[3]})")
    helper_sha = hashlib.sha256(open(os.path.abspath(__file__), "rb").read()).hexdigest()
    meta = [
        "corpus: spoken_digits, synthetic connected digits (oh, zero, one ... nine) for ASR",
        f"generator: recipes/asr/spoken_digits/data_prep.sh, local/spoken_digits.py sha256 {helper_sha}",
        f"seed: {args.seed}",
        "sets: " + ", ".join(f"{n} {summary[n][0]} utterances {summary[n][1]:.1f} s" for n in SETS),
        f"noise: {args.noise} (when on: {NOISE_PROB:g} of the utterances, {'/'.join(NOISE_TYPES)}, "
        f"SNR {SNR_DB[0]:g}-{SNR_DB[1]:g} dB)",
        f"idx2wav paths: {'relative to the directory data_prep.sh ran in' if args.relative else 'absolute'}",
        f"espeak-ng: {version_line(['espeak-ng', '--version'])}",
        f"sox: {version_line(['sox', '--version']).removeprefix('sox:').strip()}",
        f"python: {sys.version.split()[0]}",
        f"audio: {SAMPLE_RATE} Hz, 16-bit signed PCM, mono WAV",
        f"words per utterance: {DIGITS[0]}-{DIGITS[1]}; rate {RATE_WPM[0]}-{RATE_WPM[1]} wpm; "
        f"pitch {PITCH[0]}-{PITCH[1]}; word gap {WORD_GAP[0] * 10}-{WORD_GAP[1] * 10} ms; "
        f"lead {LEAD_S[0]:g}-{LEAD_S[1]:g} s; tail {TAIL_S[0]:g}-{TAIL_S[1]:g} s; "
        f"peak {PEAK_DB[0]:g} to {PEAK_DB[1]:g} dBFS",
        "accents (espeak-ng language voices, all sets): " + " ".join(accents),
    ]
    for name in SETS:
        meta.append(f"voices {name} ({len(voices[name])}): " + " ".join(voices[name]))
    meta.append("held-out variants missing from this espeak-ng: " + (" ".join(missing) if missing else "none"))
    meta.append(f"char vocabulary: char/train/full_tokens/no-punc/vocab, {vocab_size} tokens")
    write_lines(os.path.join(args.out, "corpus_meta.txt"), meta)
    for name in SETS:
        print(f"{name}: {summary[name][0]} utterances, {summary[name][1] / 60:.1f} min")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--train", type=int, required=True)
    p.add_argument("--valid", type=int, required=True)
    p.add_argument("--test", type=int, required=True)
    p.add_argument("--noise", choices=("on", "off"), required=True)
    p = sub.add_parser("render")
    p.add_argument("--out", required=True)
    p.add_argument("--shards", type=int, required=True)
    p.add_argument("--shard", type=int, required=True)
    p = sub.add_parser("index")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--noise", choices=("on", "off"), required=True)
    p.add_argument("--relative", action="store_true")
    args = parser.parse_args()
    {"plan": cmd_plan, "render": cmd_render, "index": cmd_index}[args.command](args)


if __name__ == "__main__":
    main()
