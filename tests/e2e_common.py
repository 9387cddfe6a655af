"""Helpers shared by the end-to-end tests (search_e2e.py, dist_e2e.py): the
failure type, checks, JSON readers, directory snapshots and CRC-32C. Python
standard library only."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time


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
    """Every file under d with its bytes, and every directory; the run directory's
    `lock` only by its presence (it names the last process that held it)."""
    snap = {}
    for root, dirs, files in os.walk(d):
        for name in dirs:
            snap[os.path.relpath(os.path.join(root, name), d) + "/"] = None
        for name in files:
            p = os.path.join(root, name)
            rel = os.path.relpath(p, d)
            snap[rel] = None if rel == "lock" else read_bytes(p)
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


def crc32c(data, crc=0):
    """CRC-32C (Castagnoli), as TFRecord and our checkpoints use; crc continues an
    earlier value (crc32c(a + b) == crc32c(b, crc32c(a)))."""
    c = crc ^ 0xFFFFFFFF
    tab = CRC_TABLE
    for b in data:
        c = tab[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def e2e_main(doc, tests, init, skips=()):
    """The command line of an end-to-end script, `SCRIPT MDENAS_MPI TEST`: init(binary,
    work) sets the script's globals, then tests[TEST](tmp) runs in a fresh temporary
    directory under the working directory (kept with MDENAS_E2E_KEEP=1). Returns the exit
    status: 0 pass, 1 fail, 2 usage, 77 skip (an exception of a type in skips)."""
    if len(sys.argv) != 3 or sys.argv[2] not in tests:
        print(doc, file=sys.stderr)
        return 2
    name = sys.argv[2]
    init(os.path.abspath(sys.argv[1]), os.getcwd())
    tmp = tempfile.mkdtemp(prefix=f"{os.path.basename(sys.argv[0])[:-3]}_{name}.", dir=os.getcwd())
    t0 = time.time()
    try:
        tests[name](tmp)
    except tuple(skips) as e:
        print(f"SKIP {name}: {e}")
        return 77
    except Fail as e:
        print(f"FAIL {name}: {e}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as e:
        print(f"FAIL {name}: timed out: {e}", file=sys.stderr)
        return 1
    finally:
        if os.environ.get("MDENAS_E2E_KEEP"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"PASS {name} ({time.time() - t0:.1f} s)")
    return 0
