#!/usr/bin/env python3
"""Fixture files for the Swift safetensors / .npy readers (SafetensorsTests, NPYTests).

Writes small files under Tests/SpeechainMPITests/Resources/interop/ with values given by formulas
(np.arange based) that the Swift tests recompute, plus one malformed file per error class.

Usage (from the repository root):
    pip install safetensors        # numpy is the only other dependency
    python3 scripts/reference/interop_fixtures.py           # (re)write the fixtures
    python3 scripts/reference/interop_fixtures.py --check DIR
        # load DIR/swift_written.safetensors, DIR/swift_feat.npy and DIR/swift_labels.npy (files written
        # by the Swift writers with the same formulas as the fixtures below) with safetensors.numpy and
        # np.load and compare them to the formulas; exit 1 on mismatch

Good files and the formulas the tests use:
    st_f32.safetensors      written by safetensors.numpy.save_file, metadata {"format": "np", "step": "42"}:
                            weight (3, 4) = arange(12) * 0.5 - 1;  bias (4,) = arange(4) + 100
                            scalar () = 3.25;                      empty (0, 3)
    st_f16_f64.safetensors  save_file, half (13,) F16 = HALF_VALUES, double (2, 3) F64 = arange(6) * 0.1 - 0.2
    st_bf16.safetensors     hand-written (numpy has no bfloat16): brain (8,) BF16 = BF16_VALUES (exact in bf16),
                            plain (2,) F32 = [1.5, -2.5]
    feat_v1.npy / _v2 / _v3 float32 (5, 3) = arange(15) * 0.25 - 1, format versions 1.0 / 2.0 / 3.0
    feat_odd_header.npy     float32 (2, 2) = arange(4) + 0.5, header written by hand with double quotes, no
                            spaces and no trailing comma
    labels_i8_v1.npy / _v2  int64 (10,) = arange(10) * 3 - 7, with [9] = 2**40 + 5
    labels_i4.npy           int32 (6,) = arange(6) * 1000 - 2500
Malformed files: see the second half of generate(); every one must make the Swift reader throw InteropError.
Regenerating changes st_f32.safetensors (and the files cut from it) byte-wise even though nothing changed: the
reference writer orders the __metadata__ keys at random.
"""

import argparse
import json
import os
import struct
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "Tests", "SpeechainMPITests", "Resources", "interop")

HALF_VALUES = [0.0, -0.0, 1.0, -2.0, 0.333251953125, 65504.0, -65504.0, 2.0 ** -14, 2.0 ** -24,
               float("inf"), float("-inf"), 1000.5, float("nan")]  # all exact in float16
BF16_VALUES = [1.0, -3.0, 0.15625, 3.3895313892515355e38, 2.0 ** -130, float("inf"), -0.0, 100.5]


def weight():
    return (np.arange(12, dtype=np.float32) * 0.5 - 1).reshape(3, 4)


def bias():
    return np.arange(4, dtype=np.float32) + 100


def feat(rows=5, cols=3):
    return (np.arange(rows * cols, dtype=np.float32) * 0.25 - 1).reshape(rows, cols)


def labels():
    values = np.arange(10, dtype=np.int64) * 3 - 7
    values[9] = 2 ** 40 + 5
    return values


def raw_safetensors(entries, metadata=None, pad=True):
    """entries: list of (name, dtype, shape, [begin, end]); data appended separately. Returns header bytes."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, offsets in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": offsets}
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def read(name):
    with open(os.path.join(OUT, name), "rb") as f:
        return f.read()


def npy_bytes(array, version=(1, 0)):
    import io
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, version=version)
    return buffer.getvalue()


def npy_raw(header_text, data, version=(1, 0)):
    """A .npy file with a hand-written header (padded to 64 bytes like numpy)."""
    header = header_text.encode("latin1")
    length_size = 2 if version[0] == 1 else 4
    total = 6 + 2 + length_size + len(header) + 1
    header += b" " * ((64 - total % 64) % 64) + b"\n"
    fmt = "<H" if length_size == 2 else "<I"
    return b"\x93NUMPY" + bytes(version) + struct.pack(fmt, len(header)) + header + data


def bf16_bits(values):
    bits = np.array(values, dtype=np.float32).view(np.uint32)
    assert np.all(bits & 0xFFFF == 0), "BF16_VALUES must be exact in bfloat16"
    return (bits >> 16).astype("<u2")


def generate():
    os.makedirs(OUT, exist_ok=True)
    for old in os.listdir(OUT):
        os.remove(os.path.join(OUT, old))

    # --- good safetensors files -------------------------------------------------------------
    save_file({"weight": weight(), "bias": bias(), "scalar": np.array(3.25, dtype=np.float32),
               "empty": np.zeros((0, 3), dtype=np.float32)},
              os.path.join(OUT, "st_f32.safetensors"), metadata={"format": "np", "step": "42"})
    save_file({"half": np.array(HALF_VALUES, dtype=np.float16),
               "double": (np.arange(6, dtype=np.float64) * 0.1 - 0.2).reshape(2, 3)},
              os.path.join(OUT, "st_f16_f64.safetensors"))
    brain = bf16_bits(BF16_VALUES).tobytes()
    plain = np.array([1.5, -2.5], dtype="<f4").tobytes()
    write("st_bf16.safetensors",
          raw_safetensors([("brain", "BF16", [8], [0, 16]), ("plain", "F32", [2], [16, 24])]) + brain + plain)

    # --- malformed safetensors files ----------------------------------------------------------
    good = read("st_f32.safetensors")
    write("st_truncated.safetensors", good[:-10])
    write("st_short.safetensors", good[:5])
    write("st_header_past_eof.safetensors", struct.pack("<Q", 1_000_000) + good[8:200])
    header = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]'  # missing closing braces
    write("st_bad_json.safetensors", struct.pack("<Q", len(header)) + header + bytes(8))
    save_file({"ints": np.arange(4, dtype=np.int32)}, os.path.join(OUT, "st_int32.safetensors"))
    data24 = np.arange(6, dtype="<f4").tobytes()
    write("st_offsets_out_of_range.safetensors",
          raw_safetensors([("a", "F32", [2], [0, 8]), ("b", "F32", [8], [8, 40])]) + data24)
    write("st_overlap.safetensors",
          raw_safetensors([("a", "F32", [4], [0, 16]), ("b", "F32", [4], [8, 24])]) + data24)
    write("st_gap.safetensors",
          raw_safetensors([("a", "F32", [2], [0, 8]), ("b", "F32", [2], [16, 24])]) + data24)
    write("st_trailing.safetensors", raw_safetensors([("a", "F32", [4], [0, 16])]) + data24)
    write("st_shape_mismatch.safetensors", raw_safetensors([("a", "F32", [5], [0, 24])]) + data24)
    header = (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
              b'"a":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}')
    header += b" " * ((8 - len(header) % 8) % 8)
    write("st_duplicate.safetensors", struct.pack("<Q", len(header)) + header + data24)
    write("st_bad_metadata.safetensors",
          raw_safetensors([("a", "F32", [6], [0, 24])], metadata={"step": 42}) + data24)

    # --- good .npy files --------------------------------------------------------------------
    np.save(os.path.join(OUT, "feat_v1.npy"), feat())
    write("feat_v2.npy", npy_bytes(feat(), version=(2, 0)))
    write("feat_v3.npy", npy_bytes(feat(), version=(3, 0)))
    write("feat_odd_header.npy",
          npy_raw('{"descr":"<f4","fortran_order":False,"shape":(2,2)}',
                  (np.arange(4, dtype="<f4") + 0.5).tobytes()))
    np.save(os.path.join(OUT, "labels_i8_v1.npy"), labels())
    write("labels_i8_v2.npy", npy_bytes(labels(), version=(2, 0)))
    np.save(os.path.join(OUT, "labels_i4.npy"), np.arange(6, dtype=np.int32) * 1000 - 2500)

    # --- malformed .npy files -----------------------------------------------------------------
    good = read("feat_v1.npy")
    write("feat_truncated.npy", good[:-7])
    write("feat_trailing.npy", good + bytes(4))
    np.save(os.path.join(OUT, "feat_f8.npy"), feat().astype(np.float64))
    np.save(os.path.join(OUT, "feat_bigendian.npy"), feat().astype(">f4"))
    np.save(os.path.join(OUT, "feat_fortran.npy"), np.asfortranarray(feat(4, 3)))
    np.save(os.path.join(OUT, "feat_1d.npy"), np.arange(6, dtype=np.float32))
    np.save(os.path.join(OUT, "feat_3d.npy"), np.zeros((2, 2, 2), dtype=np.float32))
    corrupt = bytearray(good)
    corrupt[10:20] = b"{'descr' '"  # drops the colon after 'descr'
    write("feat_bad_header.npy", bytes(corrupt))
    write("feat_bad_magic.npy", b"\x93NUMPZ" + good[6:])
    write("feat_bad_version.npy", good[:6] + bytes([4, 0]) + good[8:])
    write("feat_header_past_eof.npy", good[:8] + struct.pack("<H", 4000) + good[10:100])
    write("feat_missing_key.npy", npy_raw("{'descr': '<f4', 'shape': (2, 2), }", bytes(16)))
    np.save(os.path.join(OUT, "labels_2d.npy"), np.zeros((3, 2), dtype=np.int64))
    np.save(os.path.join(OUT, "labels_f4.npy"), np.arange(4, dtype=np.float32))
    np.save(os.path.join(OUT, "labels_u8.npy"), np.arange(4, dtype=np.uint64))
    write("labels_truncated.npy", read("labels_i8_v1.npy")[:-3])

    # Sanity: the good files load with the reference readers.
    loaded = load_file(os.path.join(OUT, "st_f32.safetensors"))
    assert np.array_equal(loaded["weight"], weight()) and loaded["scalar"].shape == ()
    loaded = load_file(os.path.join(OUT, "st_f16_f64.safetensors"))
    assert loaded["half"].dtype == np.float16 and loaded["double"].dtype == np.float64
    assert np.array_equal(loaded["half"].astype(np.float64), np.array(HALF_VALUES), equal_nan=True)
    from safetensors import safe_open
    with safe_open(os.path.join(OUT, "st_bf16.safetensors"), framework="numpy") as f:
        assert sorted(f.keys()) == ["brain", "plain"]
    assert np.array_equal(np.load(os.path.join(OUT, "feat_v3.npy")), feat())
    assert np.array_equal(np.load(os.path.join(OUT, "feat_odd_header.npy")), np.arange(4, dtype="<f4").reshape(2, 2) + 0.5)
    assert np.array_equal(np.load(os.path.join(OUT, "labels_i8_v2.npy")), labels())
    for name in os.listdir(OUT):
        os.chmod(os.path.join(OUT, name), 0o644)  # save_file creates 0600 files
    print(f"wrote {len(os.listdir(OUT))} files to {OUT}")


def check(directory):
    """Loads files written by the Swift writers and compares them to the formulas."""
    ok = True
    tensors = load_file(os.path.join(directory, "swift_written.safetensors"))
    from safetensors import safe_open
    with safe_open(os.path.join(directory, "swift_written.safetensors"), framework="numpy") as f:
        metadata = f.metadata()
    expected = {"weight": weight(), "bias": bias(), "scalar": np.array(3.25, dtype=np.float32),
                "empty": np.zeros((0, 3), dtype=np.float32)}
    for name, value in expected.items():
        got = tensors.get(name)
        if got is None or got.dtype != np.float32 or got.shape != value.shape or not np.array_equal(got, value):
            print(f"safetensors tensor {name}: got {got!r}, expected {value!r}")
            ok = False
    if set(tensors) != set(expected):
        print(f"safetensors names: {sorted(tensors)}")
        ok = False
    if metadata != {"format": "np", "step": "42"}:
        print(f"safetensors metadata: {metadata}")
        ok = False
    got = np.load(os.path.join(directory, "swift_feat.npy"))
    if got.dtype != np.dtype("<f4") or not np.array_equal(got, feat()):
        print(f"swift_feat.npy: {got!r}")
        ok = False
    got = np.load(os.path.join(directory, "swift_labels.npy"))
    if got.dtype != np.dtype("<i8") or not np.array_equal(got, labels()):
        print(f"swift_labels.npy: {got!r}")
        ok = False
    print("Swift-written files match" if ok else "MISMATCH")
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", metavar="DIR", help="check Swift-written files in DIR instead of generating")
    args = parser.parse_args()
    if args.check:
        sys.exit(0 if check(args.check) else 1)
    generate()


if __name__ == "__main__":
    main()
