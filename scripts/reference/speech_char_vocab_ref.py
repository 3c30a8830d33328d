#!/usr/bin/env python3
"""Reference `vocab` files for the char vocabulary builder test, made the way SpeeChain makes them.

SpeeChain's datasets/pyscripts/vocab_generator.py (--token_type char) reads idx2<txt_format>_text with
load_idx2data_file (lines split at the first space, the dict sorted by index), turns each sentence into
characters with ' ' as '<space>', counts them with collections.Counter, sorts by count descending with Python's
stable sort (ties stay in order of first appearance), keeps the first vocab_size - 3 when there are at least that
many, and saves ['<blank>'] + tokens + ['<unk>', '<sos/eos>'] with np.savetxt(fmt='%s'). This script does the same
with the standard library only (np.savetxt of a list of str writes each token and '\n' in UTF-8).

    python3 scripts/reference/speech_char_vocab_ref.py    # rewrites Tests/SpeechainMPITests/Resources/speech/char
"""
import os
from collections import Counter

OUT = os.path.join(os.path.dirname(__file__), '..', '..', 'Tests', 'SpeechainMPITests', 'Resources', 'speech', 'char')

# lines deliberately out of index order; accents composed and decomposed; ties in counts; a tab inside a sentence
TEXT = (
    "utt-b2 zebra crossing\n"
    "utt-A1 a cafe\u0301 in the city\n"
    "utt-a10 caf\u00e9 au lait\n"
    "utt-a9 zz top\tband\n"
    "utt-b10 \u00fcber alles\n"
)


def load_idx2data_file(path):
    with open(path, mode='r') as f:
        data = f.readlines()
    data = [row.replace('\n', '').split(' ', 1) for row in data]
    return dict(sorted({k: v for k, v in data}.items(), key=lambda x: x[0]))


def text2char_list(x):
    return [c if c != ' ' else '<space>' for c in x]


def vocab(idx2text, vocab_size=None):
    tokens = []
    for value in {i: text2char_list(t) for i, t in idx2text.items()}.values():
        tokens += value
    token2freq = sorted(Counter(tokens).items(), key=lambda x: x[1], reverse=True)
    token_vocab = [token for token, _ in token2freq]
    if isinstance(vocab_size, int) and len(token_vocab) >= vocab_size - 3:
        token_vocab = token_vocab[: vocab_size - 3]
    return ["<blank>"] + token_vocab + ['<unk>', '<sos/eos>']


def save(path, tokens):
    with open(path, 'w', encoding='utf-8', newline='\n') as f:
        for t in tokens:
            f.write(t + '\n')


if __name__ == '__main__':
    os.makedirs(OUT, exist_ok=True)
    text_path = os.path.join(OUT, 'idx2no-punc_text')
    with open(text_path, 'w', encoding='utf-8', newline='\n') as f:
        f.write(TEXT)
    idx2text = load_idx2data_file(text_path)
    save(os.path.join(OUT, 'vocab'), vocab(idx2text))
    save(os.path.join(OUT, 'vocab_size10'), vocab(idx2text, 10))
    print('indices in order:', list(idx2text.keys()))
    print('vocab:', vocab(idx2text))
