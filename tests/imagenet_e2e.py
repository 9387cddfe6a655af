#!/usr/bin/env python3
"""End-to-end tests of `mdenas_mpi search --dataset imagenet` on a tiny prepared folder
that this script writes itself: JPEGs cut from a photo of mate-backgrounds with PIL,
packed into shards by an independent writer of the layout in docs/formats.md (so the
reader is checked against the document, not against its own writer).

  imagenet_e2e.py MDENAS_MPI TEST

The folder: 4 classes; train 48 images in shards of 20, 20 and 8; search_val 16; val 8
(never read by the search). Searches: 2 cells, C=4, 2 nodes, --image-size 32, batch 8
(6 steps an epoch), 2 epochs, periods of 3 steps. TEST is one of:

  resume       an uninterrupted run against one stopped at step 5 (MDENAS_RAISE_AT_STEP,
               exit 75) and resumed with another --data-threads: history, state,
               genotype and the final checkpoint's tensors byte-identical, every
               metrics.jsonl line the same less timings; interval lines carry
               data_wait_s; the first line names the imagenet/train source
  np2          mpirun -np 2 --sync-bn against one process: the first steps' losses agree
               to 1e-5 (each rank decodes its own half of every global batch)
  bad_folder   a folder without manifest.json, and one whose manifest lists a missing
               shard, are refused (exit 2) naming the problem, writing no run directory;
               a damaged image byte stops the run (non-zero exit) with a message naming
               the shard, the record and the source file

Exit: 0 pass, 1 fail, 2 usage, 77 skip (no PIL or no photo). MDENAS_E2E_KEEP=1 keeps
the folders.
"""
import glob
import json
import os
import random
import shutil
import struct
import sys

import harden_e2e
from e2e_common import check, crc32c, e2e_main, load_jsonl, read_bytes

class Skip(Exception):
    pass


PHOTOS = "/usr/share/backgrounds/mate"
CLASSES = ["n01000000", "n02000000", "n03000000", "n04000000"]


def make_jpegs(count, rng):
    """count (jpeg bytes, width, height, label, name) cut from one photo; class k's images
    come from the k-th quarter of it, so the label is somewhat visible."""
    try:
        from PIL import Image
    except ImportError as e:
        raise Skip(f"python3-pil is missing ({e})")
    import io
    photos = sorted(glob.glob(os.path.join(PHOTOS, "**", "*.jpg"), recursive=True))
    if not photos:
        raise Skip(f"no photo under {PHOTOS} (mate-backgrounds)")
    im = Image.open(photos[0]).convert("RGB")
    im = im.resize((640, 400))
    out = []
    for i in range(count):
        label = i % len(CLASSES)
        w, h = rng.randint(40, 90), rng.randint(40, 90)
        x0 = label * 160 + rng.randint(0, 160 - 40)
        y0 = rng.randint(0, 400 - 90)
        crop = im.crop((x0, y0, x0 + 40, y0 + 90)).resize((w, h))
        buf = io.BytesIO()
        crop.save(buf, format="JPEG", quality=90, subsampling=2, optimize=False)
        out.append((buf.getvalue(), w, h, label, f"{CLASSES[label]}/img_{i:04d}.JPEG"))
    return out


def write_shard(path, shard_id, records, first_source):
    """A shard as docs/formats.md lays it out; returns the records' source ids."""
    n = len(records)
    data_off = 64 + 40 * n
    index, data, off = b"", b"", data_off
    for k, (jpg, w, h, label, _) in enumerate(records):
        index += struct.pack("<QIiIIIIQ", off, len(jpg), label, w, h, crc32c(jpg), 16,
                             first_source + k)
        data += jpg
        off += len(jpg)
    head = b"MDSHARD\0" + struct.pack("<IIIIQQQIII", 1, 64, 40, n, 64,
                                      data_off, off, crc32c(index), shard_id, 0)
    head += struct.pack("<I", crc32c(head))
    assert len(head) == 64
    with open(path + ".tmp", "wb") as f:
        f.write(head + index + data)
    os.rename(path + ".tmp", path)


def make_folder(d):
    rng = random.Random(5)
    os.makedirs(d)
    with open(os.path.join(d, "classes.txt"), "w") as f:
        f.write("".join(c + "\n" for c in CLASSES))
    images = make_jpegs(48 + 16 + 8, rng)
    splits = {"train": (images[:48], 20), "search_val": (images[48:64], 20),
              "val": (images[64:], 20)}
    manifest = {"format": 1, "splits": {}}
    rows, source = [], 0
    for split, (imgs, per) in splits.items():
        shards = []
        for s, at in enumerate(range(0, len(imgs), per)):
            part = imgs[at:at + per]
            name = f"{split}-{s:05d}.mds"
            write_shard(os.path.join(d, name), s, part, source)
            for k, (_, w, h, _, src) in enumerate(part):
                rows.append(f"{source + k}\t{split}\t{src}\tjpeg\trgb\t{w}\t{h}\tok\t")
            source += len(part)
            shards.append({"file": name, "count": len(part)})
        manifest["splits"][split] = {"shards": shards}
    with open(os.path.join(d, "sources.tsv"), "w") as f:
        f.write("id\tsplit\tpath\tformat\tcolour\twidth\theight\tstatus\treason\n")
        f.write("".join(r + "\n" for r in rows))
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(manifest, f)


BASE = ["--dataset", "imagenet", "--image-size", "32", "--batch", "8", "--epochs", "2",
        "--cells", "2", "--channels", "4", "--nodes", "2", "--period-steps", "3",
        "--ckpt-every", "2", "--lr", "0.05", "--alpha", "0.05", "--seed", "3", "--threads", "1",
        "--log-every", "1"]


def run(argv, rc=0, env=None, timeout=300):
    """harden_e2e's runner: exit status checked, sanitizer output refused."""
    return harden_e2e.run(argv, rc=rc, env=env, timeout=timeout)


def search(data, out, *extra):
    return ["search"] + BASE + ["--data", data] + list(extra) + ["--out", out]


def newest_checkpoint(d):
    names = sorted(glob.glob(os.path.join(d, "checkpoints", "ckpt-*.safetensors")))
    check(names, f"no checkpoint in {d}")
    return names[-1]


def tensors(path):
    data = read_bytes(path)
    (n,) = struct.unpack("<Q", data[:8])
    return data[8 + n:]


TIMING = ("img_per_s", "period_time_s", "data_wait_s")


def metric_lines(d):
    out = {}
    for m in load_jsonl(os.path.join(d, "metrics.jsonl")):
        key = (m.get("type"), m.get("step"))
        m = {k: v for k, v in m.items() if k not in TIMING}
        check(key not in out or out[key] == m, f"{d}: {key} written twice with other values")
        out[key] = m
    return out


def t_resume(tmp):
    data = os.path.join(tmp, "prepared")
    make_folder(data)
    ref, d = os.path.join(tmp, "ref"), os.path.join(tmp, "stopped")
    out, _ = run(search(data, ref, "--data-threads", "1"))
    check("imagenet/train" in out and "48 search-train / 16 validation" in out,
          f"the first line should name the source and the split sizes:\n{out[:600]}")
    check("data wait" in out, f"the progress lines should show the data wait:\n{out[:1500]}")
    intervals = [m for m in load_jsonl(os.path.join(ref, "metrics.jsonl"))
                 if m.get("type") == "interval"]
    check(len(intervals) == 12 and all(isinstance(m.get("data_wait_s"), (int, float)) and
                                       m["data_wait_s"] >= 0 for m in intervals),
          f"12 interval lines with data_wait_s expected: {intervals[:2]}")
    run(search(data, d, "--data-threads", "1"), rc=75, env={"MDENAS_RAISE_AT_STEP": "5"})
    out, _ = run(search(data, d, "--data-threads", "3"))
    check("resuming from" in out, f"the second run did not resume:\n{out[:800]}")
    for name in ("history.jsonl", "state.json", "genotype.txt", "genotype.json"):
        check(read_bytes(os.path.join(ref, name)) == read_bytes(os.path.join(d, name)),
              f"{name} differs between the uninterrupted and the resumed run")
    a, b = newest_checkpoint(ref), newest_checkpoint(d)
    check(os.path.basename(a) == os.path.basename(b) and tensors(a) == tensors(b),
          f"final checkpoints differ: {a} {b}")
    ma, mb = metric_lines(ref), metric_lines(d)
    check(ma == mb, "metrics.jsonl differs (less timings): "
                    f"{[k for k in ma if ma.get(k) != mb.get(k)][:5]}")
    hist = load_jsonl(os.path.join(ref, "history.jsonl"))
    check(len(hist) == 4, f"4 periods expected in history.jsonl, {len(hist)}")
    print(f"   resumed at step 5 with 3 decode threads: results, {len(ma)} metrics lines and "
          f"the final checkpoint identical; val_acc {[round(h['val_acc'], 3) for h in hist]}")


def t_bad_folder(tmp):
    data = os.path.join(tmp, "prepared")
    make_folder(data)
    nomani = os.path.join(tmp, "no_manifest")
    shutil.copytree(data, nomani)
    os.remove(os.path.join(nomani, "manifest.json"))
    out_dir = os.path.join(tmp, "run1")
    _, err = run(search(nomani, out_dir), rc=2)
    check("manifest.json" in err and "did not finish" in err,
          f"the message should say the folder is unfinished:\n{err[-1500:]}")
    check(not os.path.exists(out_dir), "a refused run wrote its run directory")
    missing = os.path.join(tmp, "missing_shard")
    shutil.copytree(data, missing)
    os.remove(os.path.join(missing, "train-00001.mds"))
    _, err = run(search(missing, os.path.join(tmp, "run2")), rc=2)
    check("train-00001.mds" in err and "missing" in err, f"message:\n{err[-1500:]}")
    # One byte in the middle of train-00001.mds record 7's JPEG.
    bad = os.path.join(tmp, "damaged")
    shutil.copytree(data, bad)
    path = os.path.join(bad, "train-00001.mds")
    blob = bytearray(read_bytes(path))
    off, size = struct.unpack_from("<QI", blob, 64 + 40 * 7)
    blob[off + size // 2] ^= 0x10
    with open(path, "wb") as f:
        f.write(blob)
    _, err = run(search(bad, os.path.join(tmp, "run3"), "--data-threads", "2"), rc=None)
    check("train-00001.mds" in err and "record 7" in err and "img_0027.JPEG" in err,
          f"the message should name the shard, the record and the source:\n{err[-1500:]}")
    print("   unfinished folder, missing shard and damaged image each named")


def t_np2(tmp):
    """-np 2 against -np 1, both with --sync-bn: each rank decodes its half of every
    global batch, so the losses agree to float rounding (the same rows twice, or rows
    missing, would put them far apart)."""
    import dist_e2e
    dist_e2e.init(harden_e2e.BINARY, harden_e2e.WORK)
    data = os.path.join(tmp, "prepared")
    make_folder(data)
    one, two = os.path.join(tmp, "np1"), os.path.join(tmp, "np2")
    extra = ("--sync-bn", "--epochs", "1", "--data-threads", "2")
    run(search(data, one, *extra))
    out = dist_e2e.mpirun(2, search(data, two, *extra))
    check("over 2 rank(s)" in out, f"the run should say it uses 2 ranks:\n{out[:800]}")
    la = [m["loss"] for m in load_jsonl(os.path.join(one, "metrics.jsonl"))
          if m["type"] == "interval"]
    lb = [m["loss"] for m in load_jsonl(os.path.join(two, "metrics.jsonl"))
          if m["type"] == "interval"]
    check(len(la) == len(lb) == 6, f"6 interval lines expected: {len(la)}, {len(lb)}")
    worst = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(la[:3], lb[:3]))
    check(worst < 1e-5, f"-np 2 losses {lb[:3]} against -np 1 {la[:3]}: relative {worst:.3g}")
    print(f"   -np 2 vs -np 1: the first 3 steps' losses within {worst:.2g} (relative)")


TESTS = {"resume": t_resume, "bad_folder": t_bad_folder, "np2": t_np2}


def init(binary, work):
    harden_e2e.init(binary, work)


if __name__ == "__main__":
    sys.exit(e2e_main(__doc__, TESTS, init, skips=(Skip,)))
