#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz corpora (Python stdlib only):
   python3 tests/fuzz/gen_corpus.py [tests/fuzz/corpus]
Seeds are named seed-*; regression inputs of bugs the fuzzers found are named
bug-* and written here too, so that the corpus can be rebuilt from this file.
The input layouts are those described at the top of each fuzz_*.c."""
import gzip
import json
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from e2e_common import crc32c  # noqa: E402

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")


def put(kind, name, data):
    d = os.path.join(OUT, kind)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


# ---- JSON -------------------------------------------------------------------------

JSON_SEEDS = {
    "empty-object": "{}",
    "empty-array": "[]",
    "literals": "[true, false, null]",
    "numbers": "[0, -0, 1, -1, 0.5, -0.5e+2, 1E3, 1e-300, 1.7976931348623157e308, "
               "9007199254740993, 123456789012345678901234567890, 4.9e-324]",
    "strings": r'["", "a", "\"\\\/\b\f\n\r\t", "\u00e9\u4e2D\ud83d\ude00", "caf' + "\u00e9" + r'"]',
    "utf8": '["\u00e9", "\u4e2d", "\U0001f600", "\u07ff\u0800\uffff\U00010000\U0010ffff"]',
    "nested": '{"a": {"b": [1, {"c": [[], {}]}]}, "d": "e"}',
    "config": json.dumps({"preset": "tiny", "dataset": "fashion-mnist", "epochs": 2, "lr": 0.025,
                          "sync_bn": False, "out": "run", "nodes": 4, "alpha": 0.01}, indent=2),
    "header": json.dumps({"__metadata__": {"format": "mdenas-ckpt-1", "crc32c": "0badf00d"},
                          "param/conv.w": {"dtype": "F32", "shape": [2, 3],
                                           "data_offsets": [0, 24]}}),
    "bom": "\ufeff {\"a\": 1}\r\n",
    "whitespace": " \t\r\n[ 1 ,\t2 ]\n",
    "deep-30": "[" * 30 + "]" * 30,
    "deep-200": "[" * 200 + "]" * 200,
    "scalar-string": '"only a string"',
    "scalar-number": "-12.5e-3",
    # Refused: each a rule of the grammar.
    "bad-trailing-comma": '{"a": 1,}',
    "bad-duplicate": '{"a": 1, "a": 2}',
    "bad-lone-high": '"\\ud800x"',
    "bad-lone-low": '"\\udc00"',
    "bad-nul-escape": '"\\u0000"',
    "bad-leading-zero": "012",
    "bad-deep-201": "[" * 201 + "]" * 201,
    "bad-control": '"tab\there"',
    "bad-after": "{} x",
}

# ---- safetensors -------------------------------------------------------------------

def safetensors(tensors, meta=None, with_crc=True, align=True):
    """tensors: list of (name, dtype, shape, bytes), laid out in order."""
    hdr, data, off = {}, b"", 0
    meta = dict(meta or {})
    if with_crc:
        c = crc32c(b"".join(t[3] for t in tensors))
        for k, v in meta.items():
            c = crc32c(k.encode() + b"\0" + v.encode() + b"\0", c)
        meta["crc32c"] = "%08x" % c
    if meta:
        hdr["__metadata__"] = meta
    for name, dtype, shape, raw in tensors:
        hdr[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    text = json.dumps(hdr, separators=(",", ":")).encode()
    if align:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


F32 = struct.pack("<6f", 1, -2, 3.5, 0, 1e-30, 7)
F64 = struct.pack("<3d", 0.125, -1e300, 3)
I64 = struct.pack("<2q", -5, 1 << 40)

ST_SEEDS = {
    "three-dtypes": safetensors([("param/conv.w", "F32", [2, 3], F32), ("mdl/p", "F64", [3], F64),
                                 ("step", "I64", [2], I64)],
                                {"format": "test-1", "quote": 'a "b"\n'}),
    "checkpoint-like": safetensors(
        [("param/stem.w", "F32", [1, 1, 2, 3], F32), ("momentum/stem.w", "F32", [1, 1, 2, 3], F32),
         ("mdl/p", "F64", [1, 3], F64), ("mdl/he", "F64", [3, 1], F64)],
        {"format": "mdenas-ckpt-1", "step": "12", "period": "1", "config": '{"nodes": 4}'}),
    "no-crc": safetensors([("a", "F32", [2], struct.pack("<2f", 1, 2))], with_crc=False),
    "empty": safetensors([], with_crc=False),
    "empty-with-crc": safetensors([]),
    "scalar": safetensors([("s", "F64", [], struct.pack("<d", 2.5))]),
    "zero-size": safetensors([("z", "F32", [0, 5], b""), ("a", "I64", [1], I64[:8])]),
    "unaligned-header": safetensors([("a", "F32", [1], F32[:4])], with_crc=False, align=False),
    # Refused.
    "bad-gap": struct.pack("<Q", 56) +
               b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}\x20' + b"\0" * 8,
    "bad-crc": safetensors([("a", "F32", [2], struct.pack("<2f", 1, 2))])[:-1] + b"\x01",
    "bad-hlen": struct.pack("<Q", 1 << 40) + b"{}",
    "bad-short": b"\x02\0\0",
}

# ---- IDX (Fashion-MNIST) -------------------------------------------------------------


def idx_images(n, rows=28, cols=28, magic=2051, count=None):
    body = bytes((3 * (j // 784) + j % 784) & 0xFF for j in range(n * rows * cols))
    return struct.pack(">IIII", magic, n if count is None else count, rows, cols) + body


def idx_labels(n, count=None, bad_at=-1):
    return struct.pack(">II", 2049, n if count is None else count) + bytes(
        10 if i == bad_at else (7 - i) % 10 for i in range(n))


def idx_input(images, labels, train=0):
    return bytes([train]) + struct.pack("<H", len(labels)) + labels + images


IDX_SEEDS = {
    "plain-1": idx_input(idx_images(1), idx_labels(1)),
    "plain-3-train": idx_input(idx_images(3), idx_labels(3), train=1),
    "gz-2": idx_input(gz(idx_images(2)), gz(idx_labels(2))),
    "gz-images-plain-labels": idx_input(gz(idx_images(1)), idx_labels(1)),
    # Refused.
    "bad-count": idx_input(idx_images(2), idx_labels(1)),
    "bad-label": idx_input(idx_images(2), idx_labels(2, bad_at=1)),
    "bad-dims": idx_input(idx_images(1, rows=27), idx_labels(1)),
    "bad-trailing": idx_input(idx_images(1) + b"\0", idx_labels(1)),
    "bad-short": idx_input(idx_images(2)[:-100], idx_labels(2)),
}

# ---- CIFAR-10 (3 records per batch file in fuzz builds) ----------------------------------


def cifar_file(records=3, first=0, label_of=lambda i: i % 10):
    out = b""
    for i in range(records):
        k = first + i
        out += bytes([label_of(k)]) + bytes((k * 7 + j) & 0xFF for j in range(3072))
    return out


def cifar_train(files):
    return bytes([1]) + b"".join(struct.pack("<H", len(f)) for f in files[:4]) + b"".join(files)


CIFAR_SEEDS = {
    "test": bytes([0]) + cifar_file(),
    "train": cifar_train([cifar_file(first=3 * k) for k in range(5)]),
    # Refused.
    "bad-label": bytes([0]) + cifar_file(label_of=lambda i: 10 if i == 1 else 0),
    "bad-size": bytes([0]) + cifar_file()[:-1],
    "bad-records": bytes([0]) + cifar_file(records=2),
    "bad-train-missing": cifar_train([cifar_file()] * 4 + [b""]),
}

# ---- regression inputs of bugs found by the fuzzers (see README.md) ---------------------

BUGS = {
    # Invalid UTF-8 in a string was accepted (Jansson refuses it): a lone
    # continuation byte, then a 4-byte lead without its continuation bytes.
    ("json", "invalid-utf8"): b'"\xbf\xf0\x90\x80\x80\xf4re"',
    ("json", "invalid-utf8-forms"): b'["\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", '
                                    b'"\xe0\x80\xaf", "\xc3"]',
    # A number beyond the range of a double was read as an infinity.
    ("json", "number-overflow"):
        b"[0, -1, 1, -1, 0.5, -0.5e+2, 1E19925474099378901234567890, 4.9e-324]",
    # Duplicate keys in a large object (the check was quadratic; now hashed past 16 keys).
    ("json", "duplicate-key-many"):
        ("{" + ", ".join('"k%d": %d' % (i, i) for i in range(40)) + ', "k17": 0}').encode(),
    # A header that does not start with '{' (leading spaces) was accepted.
    ("safetensors", "header-not-at-brace"): b"\x08\x00\x00\x00\x00\x00\x00\x00  {}    ",
    # A NUL in the header hid the rest of it from the JSON reader.
    ("safetensors", "nul-in-header"): b"\x08\x00\x00\x00\x00\x00\x00\x00{}\x00garbg",
    # An IDX pair claiming 2 739 137 images (the most the reader takes) in an
    # 800-byte file: 2 GiB was allocated before the file was read.
    ("idx", "claims-2.7M-images"): idx_input(idx_images(1, count=2739137),
                                             idx_labels(1, count=2739137)),
    ("idx", "claims-2.7M-images-gz"): idx_input(gz(idx_images(1, count=2739137)),
                                                gz(idx_labels(1, count=2739137))),
}


def main():
    for name, text in JSON_SEEDS.items():
        put("json", "seed-" + name, text)
    for name, data in ST_SEEDS.items():
        put("safetensors", "seed-" + name, data)
    for name, data in IDX_SEEDS.items():
        put("idx", "seed-" + name, data)
    for name, data in CIFAR_SEEDS.items():
        put("cifar", "seed-" + name, data)
    for (kind, name), data in BUGS.items():
        put(kind, "bug-" + name, data)


if __name__ == "__main__":
    main()
