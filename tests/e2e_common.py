"""Helpers shared by the end-to-end tests (search_e2e.py, dist_e2e.py): the
failure type, checks, JSON readers, directory snapshots and CRC-32C. Python
standard library only."""
import json
import os


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def load_json(path):
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except ValueError as e:
            raise Fail(f"{path}: not valid JSON: {e}")


def load_jsonl(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            try:
                rows.append(json.loads(line))
            except ValueError as e:
                raise Fail(f"{path}:{i}: not valid JSON: {e}: {line[:200]!r}")
    return rows


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def snapshot(d):
    """Every file under d with its bytes, and every directory."""
    snap = {}
    for root, dirs, files in os.walk(d):
        for name in dirs:
            snap[os.path.relpath(os.path.join(root, name), d) + "/"] = None
        for name in files:
            p = os.path.join(root, name)
            snap[os.path.relpath(p, d)] = read_bytes(p)
    return snap


def snapshot_diff(before, after):
    """Paths added, removed or changed between two snapshots."""
    return sorted(k for k in set(before) | set(after) if before.get(k, 0) != after.get(k, 0))


def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


CRC_TABLE = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli), as TFRecord and our checkpoints use."""
    c = 0xFFFFFFFF
    tab = CRC_TABLE
    for b in data:
        c = tab[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
