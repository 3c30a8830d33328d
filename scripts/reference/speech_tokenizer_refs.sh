#!/usr/bin/env bash
# Makes the tiny SentencePiece tokenizer of the speech tests the way SpeeChain's
# datasets/pyscripts/vocab_generator.py makes one (--token_type sentencepiece --model_type bpe), and the reference
# encodings the tests compare against. Needs Debian's `sentencepiece` package (spm_train, spm_encode).
#
#   bash scripts/reference/speech_tokenizer_refs.sh      # rewrites Tests/SpeechainMPITests/Resources/speech/sp_bpe
#
# SpeeChain trains on the idx2<txt_format>_text file itself (index included) with vocab_size V-1, <blank> as a user
# symbol (id 0), unk_id V-2, no bos/eos, character_coverage 1.0, split_by_whitespace true; its `vocab` is the first
# column of the trainer's m.vocab plus <sos/eos>.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=Tests/SpeechainMPITests/Resources/speech/sp_bpe
V=48
mkdir -p "$out"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

cat > "$out/idx2no-punc_text" <<'T'
utt-001 seven one two three
utt-002 four five six seven
utt-003 eight nine zero one
utt-004 the quick brown fox jumps over the lazy dog
utt-005 seven seven eight
utt-006 one two three four five six seven eight nine zero
utt-007 a speech toolkit for clusters
utt-008 the dog sleeps and the fox runs
T

(cd "$tmp" && spm_train --input="$OLDPWD/$out/idx2no-punc_text" --model_prefix=m --vocab_size=$((V - 1)) \
    --model_type=bpe --character_coverage=1.0 --split_by_whitespace=true --user_defined_symbols='<blank>' \
    --unk_id=$((V - 2)) --bos_id=-1 --eos_id=-1 --minloglevel=1 >/dev/null 2>&1)
cp "$tmp/m.model" "$out/model"
{ cut -f1 "$tmp/m.vocab"; echo '<sos/eos>'; } > "$out/vocab"

# reference ids (SentencePiece's own command-line encoder), pieces and decoded text for a few sentences, one a line
cat > "$out/sentences" <<'T'
seven one two
the lazy fox
zebra quartz
café ñ!
T
spm_encode --model="$out/model" --output_format=id < "$out/sentences" > "$out/sentences.ids"
spm_encode --model="$out/model" --output_format=piece < "$out/sentences" > "$out/sentences.pieces"
spm_decode --model="$out/model" --input_format=id < "$out/sentences.ids" > "$out/sentences.decoded"
echo "wrote $out: $(wc -l < "$out/vocab") tokens"
