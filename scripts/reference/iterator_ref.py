#!/usr/bin/env python3
"""Reference batches for speechain-mpi's iterators, from SpeeChain's batching rules (speechain/iterator/abs.py and
block.py, HEAD 92be03b) restated here in a few lines, with numpy's own RandomState doing the shuffle, so that the
Swift side is checked against numpy's Mersenne Twister and SpeeChain's arithmetic rather than against itself.

    python3 scripts/reference/iterator_ref.py > Tests/SpeechainMPITests/Resources/iterator_refs/iterator_ref.json

Rules restated (our words): order the items by length with a stable sort (descending when is_descending is true,
ascending when false, file order when null); abs.Iterator cuts consecutive runs of batch_size and keeps a shorter
last run; block.BlockIterator appends items until the summed length reaches batch_len and keeps the remainder;
with several ranks every batch passes its last (len % world) items to the front of the next, the leftover becoming a
last batch; an epoch takes batches_per_epoch batches from a cursor (batches_per_epoch * (epoch - 1)) % total,
wrapping; RandomState(epoch + seed).shuffle permutes the epoch's batches; rank r of a world w takes
batch[start::w] with start = w - r - 1 when is_descending is true or null, else r.
"""
import json
import numpy as np

LENGTHS = [int(1000 + (i * 7919) % 5003 + (i % 5) * 311) for i in range(41)]
LENGTHS[7] = LENGTHS[3]      # ties, so that the sort's stability shows
LENGTHS[20] = LENGTHS[3]
KEYS = [f"utt{i:03d}" for i in range(len(LENGTHS))]


def order(desc):
    idx = list(range(len(LENGTHS)))
    if desc is None:
        return idx
    return sorted(idx, key=lambda i: LENGTHS[i], reverse=desc)


def fixed(items, batch_size):
    out = [items[i:i + batch_size] for i in range(0, len(items) - batch_size + 1, batch_size)]
    rem = len(items) % batch_size
    if rem:
        out.append(items[-rem:])
    return out


def block(items, batch_len):
    out, cur, total = [], [], 0
    for i in items:
        cur.append(i)
        total += LENGTHS[i]
        if total >= batch_len:
            out.append(cur)
            cur, total = [], 0
    if cur:
        out.append(cur)
    return out


def balance(batches, world):
    if world <= 1:
        return batches
    out, carry = [], None
    for b in batches:
        b = list(b)
        if carry is not None:
            b = carry + b
            carry = None
        rem = len(b) % world
        if rem:
            carry = b[-rem:]
            b = b[:-rem]
        out.append(b)
    if carry is not None:
        out.append(carry)
    return out


def epoch_batches(batches, epoch, seed, shuffle, per_epoch):
    n = len(batches)
    if per_epoch is None or per_epoch == n:
        chosen = list(batches)
    else:
        cursor = (per_epoch * (epoch - 1)) % n
        chosen = []
        while len(chosen) < per_epoch:
            take = min(per_epoch - len(chosen), n - cursor)
            chosen += batches[cursor:cursor + take]
            cursor = (cursor + take) % n
    if shuffle:
        np.random.RandomState(epoch + seed).shuffle(chosen)
    return chosen


def share(batch, rank, world, desc):
    start = world - rank - 1 if (desc is None or desc) else rank
    return batch[start::world]


cases = []
for kind, arg in [("fixed", 4), ("fixed", 5), ("block", 6000), ("block", 9000)]:
    for desc in [True, False, None]:
        for world in [1, 2, 3]:
            for per_epoch in [None, 3, 17]:
                base = (fixed if kind == "fixed" else block)(order(desc), arg)
                base = balance(base, world)
                epochs = []
                for epoch in [1, 2, 5]:
                    b = epoch_batches(base, epoch, 11, True, per_epoch)
                    epochs.append({"epoch": epoch, "batches": b,
                                   "shares": [[share(x, r, world, desc) for x in b] for r in range(world)]})
                cases.append({"kind": kind, "arg": arg, "is_descending": desc, "world": world,
                              "batches_per_epoch": per_epoch, "seed": 11, "planned": base, "epochs": epochs})

# numpy's legacy shuffle on its own: the permutation of range(n) for a few seeds
perms = [{"seed": s, "n": n, "perm": (lambda l: (np.random.RandomState(s).shuffle(l), l)[1])(list(range(n)))}
         for s in [0, 1, 12, 4294967295] for n in [1, 2, 10, 1000]]

print(json.dumps({"lengths": LENGTHS, "keys": KEYS, "cases": cases, "permutations": perms,
                  "numpy": np.__version__}, separators=(",", ":")))
