#!/usr/bin/env bash
# Spoken digits: a synthetic connected-digit ASR corpus in SpeeChain's dump layout.
#
# Utterances of 1 to 7 digit words ("oh", "zero", "one" ... "nine") spoken by espeak-ng across its English
# voices (accents) and voice variants, speaking rates, pitches and word gaps, optionally with white or pink noise
# at a random SNR, as 16 kHz 16-bit mono WAV. Sets train / valid / test; valid and test are spoken by variants
# that never occur in train (nor in each other). Writes, under the output folder (SpeeChain's data_root):
#   wav/<set>/idx2wav, idx2wav_len, idx2no-punc_text, idx2spk, idx2gen, spk_list, idx2synth, audio/<idx>.wav
#   char/train/full_tokens/no-punc/vocab, idx2text_len
#   corpus_meta.txt
# The same seed gives the same files byte for byte (on the same espeak-ng, sox and Python, recorded in
# corpus_meta.txt), whatever the number of parallel jobs.
set -euo pipefail

start=$(date +%s.%N)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
helper="${here}/local/spoken_digits.py"

train=6000
valid=500
test=500
seed=0
out="${here}/data"
noise=on
jobs=$(nproc 2>/dev/null || echo 2)
relative=false

usage() {
  cat <<EOF
usage: $0 [options]
  --train N        training utterances (default ${train}; at least 11)
  --valid N        validation utterances (default ${valid})
  --test N         test utterances (default ${test})
  --tiny           shorthand for --train 60 --valid 12 --test 12 (a few seconds; for tests)
  --seed S         random seed, an integer >= 0 (default ${seed}); same seed, same bytes
  --out DIR        output folder, SpeeChain's data_root (default ${here}/data)
  --noise on|off   additive white/pink noise on half of the utterances, SNR 5-30 dB (default ${noise})
  --jobs J         parallel synthesis processes (default: nproc = ${jobs}); does not change the output
  --relative       write idx2wav paths relative to the current directory, where training must then run
                   (default: absolute paths, as SpeeChain's data scripts write them)
  -h, --help       this text
EOF
}

die() { echo "data_prep.sh: error: $*" >&2; exit 1; }

is_count() { [[ "$1" =~ ^[0-9]+$ ]]; }

while [ $# -gt 0 ]; do
  case "$1" in
    --train|--valid|--test|--seed|--out|--noise|--jobs)
      [ $# -ge 2 ] || die "$1 needs a value"
      case "$1" in
        --train) train=$2 ;; --valid) valid=$2 ;; --test) test=$2 ;; --seed) seed=$2 ;;
        --out) out=$2 ;; --noise) noise=$2 ;; --jobs) jobs=$2 ;;
      esac
      shift 2 ;;
    --tiny) train=60; valid=12; test=12; shift ;;
    --relative) relative=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done

is_count "${train}" && [ "${train}" -ge 11 ] || die "--train must be an integer >= 11, found '${train}'"
is_count "${valid}" && [ "${valid}" -ge 1 ] || die "--valid must be an integer >= 1, found '${valid}'"
is_count "${test}" && [ "${test}" -ge 1 ] || die "--test must be an integer >= 1, found '${test}'"
is_count "${seed}" || die "--seed must be an integer >= 0, found '${seed}'"
is_count "${jobs}" && [ "${jobs}" -ge 1 ] || die "--jobs must be an integer >= 1, found '${jobs}'"
[ "${noise}" = on ] || [ "${noise}" = off ] || die "--noise must be on or off, found '${noise}'"
[ -n "${out}" ] || die "--out is empty"

for tool in espeak-ng sox python3 xargs; do
  command -v "${tool}" >/dev/null 2>&1 || die "${tool} not found (apt-get install espeak-ng sox python3)"
done

# Only a folder this script made (it holds corpus_meta.txt, or a .work of an interrupted run) is cleaned and
# rewritten; anything else that is not empty is left alone.
if [ -e "${out}" ]; then
  [ -d "${out}" ] || die "${out} exists and is not a folder"
  if [ -n "$(ls -A "${out}")" ] && [ ! -f "${out}/corpus_meta.txt" ] && [ ! -d "${out}/.work" ]; then
    die "${out} is not empty and holds no spoken_digits corpus; choose another --out"
  fi
  rm -rf "${out}/.work" "${out}/wav/train" "${out}/wav/valid" "${out}/wav/test" "${out}/char/train" \
    "${out}/corpus_meta.txt"
fi
mkdir -p "${out}"

python3 "${helper}" plan --out "${out}" --seed "${seed}" --train "${train}" --valid "${valid}" --test "${test}" \
  --noise "${noise}"

# Shards are interleaved slices of the plan; a few per job even out the load. Each utterance is decided by the
# plan alone, so neither the shard count nor the job count changes a byte.
total=$((train + valid + test))
shards=$((jobs * 4))
[ "${shards}" -le "${total}" ] || shards=${total}
echo "synthesising ${total} utterances with ${jobs} parallel jobs"
if ! seq 0 $((shards - 1)) | xargs -P "${jobs}" -I{} \
    python3 "${helper}" render --out "${out}" --shards "${shards}" --shard {}; then
  die "synthesis failed (see above); ${out}/.work is kept"
fi

index_args=(--out "${out}" --seed "${seed}" --noise "${noise}")
[ "${relative}" = true ] && index_args+=(--relative)
python3 "${helper}" index "${index_args[@]}"
rm -rf "${out}/.work"
end=$(date +%s.%N)
echo "spoken_digits corpus in ${out} ($(awk -v a="${start}" -v b="${end}" 'BEGIN{printf "%.1f", b - a}') s)"
