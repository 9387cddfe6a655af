"""End-to-end tests of imagenet_prep on a small messy ImageNet-like tree made by
tests/prep_make_tree.py from Debian's mate-backgrounds photos.

  prep_e2e.py IMAGENET_PREP CASE      (run with /usr/bin/python3: PIL, numpy)

cases:
  report         every file ends in sources.tsv/report.json with the right status and
                 reason; the shards, read by the docs' Python reader, hold baseline 4:2:0
                 JPEGs with the labels of classes.txt, the stored sizes of the short-side
                 rule, close to Pillow's resize of the source (CMYK/YCCK colours too);
                 the manifest's counts and CRCs match the files
  deterministic  1 rank x 1 thread, 1 x 2 and 2 ranks (mpirun) give byte-identical folders;
                 another seed holds out other files
  resume         a prep killed after its first shard, with one finished shard damaged, is
                 finished by the same command and equals an uninterrupted one; a finished
                 folder is left alone; another command on it is refused
  val_layouts    class-folder val/, labels.txt, Kaggle's CSV and the devkit's ground truth
                 with an id map give the same val shards; the devkit's without a map is refused
  bad_input      exit status 2 and a message for bad options, trees, labels, OUT;
                 --accept-warnings keeps a JPEG with warnings
"""
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_common import Fail, check, e2e_main, snapshot, snapshot_diff  # noqa: E402

try:
    import numpy as np
    from PIL import Image, JpegImagePlugin

    import prep_make_tree as tree
    HAVE_DEPS = True
except ImportError as e:  # the case is skipped (exit 77)
    HAVE_DEPS = str(e)

BINARY = None
MPIRUN = shutil.which("mpirun")
HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.join(HERE, "..", "docs", "formats.md")
COMMON = ["--search-val-per-class", "3", "--images-per-shard", "8", "--quiet"]


class Skip(Exception):
    pass


def env(extra=None):
    e = dict(os.environ)
    e.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
              "OMPI_MCA_rmaps_base_oversubscribe": "1", "ASAN_OPTIONS": "detect_leaks=0"})
    e.update(extra or {})
    return e


def prep(args, rc=0, np_=0, timeout=120):
    """Runs imagenet_prep (under `mpirun -np np_` when np_ > 0); checks the exit status.
    Returns (stdout, stderr)."""
    cmd = [BINARY] + args
    if np_:
        if not MPIRUN:
            raise Skip("no mpirun")
        cmd = [MPIRUN, "-np", str(np_), "--bind-to", "none"] + cmd
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env())
    out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    shown = " ".join(os.path.basename(c) if c in (BINARY, MPIRUN) else c for c in cmd)
    print(f"$ {shown}  -> exit {p.returncode} ({time.time() - t:.1f} s)")
    if p.returncode != rc:
        raise Fail(f"exit status {p.returncode}, expected {rc}: {shown}\n--- stdout\n"
                   f"{out[-3000:]}\n--- stderr\n{err[-3000:]}")
    check("Sanitizer" not in err and "runtime error" not in err, f"sanitizer: {err[-3000:]}")
    return out, err


def reader():
    """The Python shard reader of docs/formats.md, run as written there."""
    text = open(DOCS, encoding="utf-8").read()
    m = re.search(r"<!-- shard-reader -->\n```python\n(.*?)```", text, re.S)
    check(m, f"{DOCS}: no shard-reader block")
    ns = {}
    exec(m.group(1), ns)
    check(ns["crc32c"](b"123456789") == 0xE3069283, "the docs' crc32c check value")
    return ns


TSV_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}


def read_tsv(path):
    """Rows of sources.tsv as dicts, fields unescaped; names that are not UTF-8
    come back as os.fsdecode gives them."""
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        lines = f.read().split("\n")
    check(lines[-1] == "", f"{path}: no newline at the end")
    head = lines[0].split("\t")
    rows = []
    for ln in lines[1:-1]:
        fields = [re.sub(r"\\(.)", lambda m: TSV_ESCAPES[m.group(1)], f) for f in ln.split("\t")]
        check(len(fields) == len(head), f"{path}: row with {len(fields)} fields: {ln!r}")
        rows.append(dict(zip(head, fields)))
    return rows


def build(tmp, **kw):
    if HAVE_DEPS is not True:
        raise Skip(f"needs PIL and numpy in {sys.executable}: {HAVE_DEPS}")
    try:
        return tree.make_tree(os.path.join(tmp, "in"), **kw)
    except tree.Missing as e:
        raise Skip(str(e))


def kaggle(info):
    return ["--val-labels", os.path.join(info["root"], "LOC_val_solution.csv")]


# ---- report ----

FLAG_CMYK, FLAG_PNG, FLAG_GRAY, FLAG_RESIZED, FLAG_REENCODED = 1, 2, 4, 8, 16


def stored_size(w, h, split):
    short, long_ = min(w, h), max(w, h)
    side = 256
    if split != "val" and short <= side:
        return w, h
    nl = (long_ * side * 2 + short) // (2 * short)
    return (side, nl) if w <= h else (nl, side)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def check_sources(rows, info):
    exp = info["expected"]
    by_path = {r["path"]: r for r in rows}
    check(len(by_path) == len(rows), "sources.tsv lists a path twice")
    check(set(by_path) == set(exp),
          f"sources.tsv paths differ: extra {sorted(set(by_path) - set(exp))}, "
          f"missing {sorted(set(exp) - set(by_path))}")
    check([r["path"] for r in rows] == sorted((r["path"] for r in rows), key=os.fsencode),
          "rows not sorted by path (bytewise)")
    for i, r in enumerate(rows):
        check(r["id"] == str(i), f"row {i} has id {r['id']}")
        status, why = exp[r["path"]]
        check(r["status"] == status, f"{r['path']}: status {r['status']}, expected {status} "
                                     f"({r['reason']})")
        got = r["reason"].split(":")[0]
        check(got == why, f"{r['path']}: reason '{r['reason']}', expected {why}")
        if r["path"].startswith("val/"):
            check(r["split"] == "val", f"{r['path']}: split {r['split']}")
        else:
            check(r["split"] in ("train", "search_val"), f"{r['path']}: split {r['split']}")
    for p, fmt, colour, w, h in [
            (f"train/{info['classes'][1]}/huge.JPEG", "jpeg-progressive", None, 5640, 3172),
            (f"train/{info['classes'][0]}/cmyk.JPEG", "jpeg", "cmyk", 360, 280),
            (f"train/{info['classes'][0]}/ycck.JPEG", "jpeg", "ycck-444", 360, 280),
            (f"train/{info['classes'][0]}/png_named.JPEG", "png", "rgb", 300, 280),
            (f"train/{info['classes'][0]}/gray_alpha_png.JPEG", "png", "gray-alpha", 200, 300),
            (f"train/{info['classes'][0]}/fake_huge.JPEG", "jpeg", None, 30000, 20000),
            (f"train/{info['classes'][0]}/gif.JPEG", "gif", "-", 0, 0)]:
        r = by_path.get(p)
        if r is None:
            continue
        check(r["format"] == fmt and (colour is None or r["colour"] == colour) and
              (int(r["width"]), int(r["height"])) == (w, h),
              f"{p}: format/colour/size {r['format']} {r['colour']} {r['width']}x{r['height']}")
    kinds = {r["format"]: r["colour"] for r in rows if r["status"] == "accepted"}
    for fmt in ("jpeg", "jpeg-progressive", "jpeg-arithmetic"):
        check(fmt in kinds, f"no accepted {fmt} source")
    colours = {r["colour"] for r in rows}
    for c in ("ycbcr-420", "ycbcr-422", "ycbcr-444", "gray"):
        check(c in colours, f"no source with colour {c}: {colours}")


def check_report(report, rows):
    acc = [r for r in rows if r["status"] == "accepted"]
    check(report["sources"] == len(rows) and report["accepted"] == len(acc) and
          report["rejected"] == len(rows) - len(acc), f"report counts {report}")
    for code, n in report["rejected_by_reason"].items():
        want = sum(1 for r in rows if r["status"] == "rejected" and r["reason"].split(":")[0] == code)
        check(n == want, f"report: {code} {n}, sources.tsv {want}")
    for kind, n in report["converted"].items():
        want = sum(1 for r in acc if kind in r["reason"].split(":")[0].split("+"))
        check(n == want, f"report: converted {kind} {n}, sources.tsv {want}")
    check(report["converted"]["cmyk"] == 1 and report["converted"]["ycck"] == 1 and
          report["converted"]["png"] == 2, f"converted: {report['converted']}")
    rej = {f["path"]: f["reason"] for f in report["rejected_files"]}
    check(rej == {r["path"]: r["reason"] for r in rows if r["status"] == "rejected"},
          "report.json rejected_files differ from sources.tsv")
    for s in ("train", "search_val", "val"):
        n = sum(1 for r in rows if r["split"] == s)
        check(report["splits"][s]["sources"] == n, f"report split {s}: {report['splits'][s]}")


def check_shards(out, rows, info, rd):
    man = json.load(open(os.path.join(out, "manifest.json")))
    classes = open(os.path.join(out, "classes.txt")).read().split("\n")
    check(classes[-1] == "" and classes[:-1] == sorted(info["classes"]), f"classes.txt {classes}")
    check(man["classes"] == classes[:-1], "manifest classes")
    labels_of_val = dict(info["val_labels"])
    seen = set()
    names = sorted(n for n in os.listdir(out) if n.endswith(".mds"))
    listed = [s["file"] for sp in man["splits"].values() for s in sp["shards"]]
    check(sorted(listed) == names, f"manifest shards {listed} vs files {names}")
    for split, sp in man["splits"].items():
        check(sp["images"] == sum(s["count"] for s in sp["shards"]), f"manifest {split} images")
        for k, s in enumerate(sp["shards"]):
            path = os.path.join(out, s["file"])
            data = open(path, "rb").read()
            check(s["file"] == f"{split}-{k:05d}.mds", f"shard name {s['file']}")
            check(len(data) == s["bytes"] and rd["crc32c"](data) == s["crc32c"],
                  f"{s['file']}: size/CRC differ from the manifest")
            recs = rd["read_shard"](path)
            check(len(recs) == s["count"], f"{s['file']}: {len(recs)} records, manifest {s['count']}")
            for i, (rec, jpg) in enumerate(recs):
                check(rec["shard"] == k, f"{s['file']}: shard id {rec['shard']}")
                row = rows[rec["source"]]
                check(row["stored"] == f"{s['file']}:{i}", f"{row['path']}: stored {row['stored']}")
                check(row["split"] == split, f"{row['path']} in a {split} shard")
                parts = row["path"].split("/")
                wnid = parts[1] if parts[0] == "train" or len(parts) == 3 else labels_of_val[parts[1]]
                check(rec["label"] == classes.index(wnid) == int(row["label"]),
                      f"{row['path']}: label {rec['label']}, class {wnid}")
                w, h = int(row["width"]), int(row["height"])
                want = stored_size(w, h, split)
                check((rec["width"], rec["height"]) == want ==
                      (int(row["stored_width"]), int(row["stored_height"])),
                      f"{row['path']} {w}x{h} ({split}): stored {rec['width']}x{rec['height']}, "
                      f"expected {want}")
                check_image(row, rec, jpg, info)
                seen.add(rec["source"])
    accepted = {int(r["id"]) for r in rows if r["status"] == "accepted"}
    check(seen == accepted, f"shards hold {len(seen)} sources, {len(accepted)} accepted")
    files = man["files"]
    for name, f in files.items():
        data = open(os.path.join(out, name), "rb").read()
        check(len(data) == f["bytes"] and rd["crc32c"](data) == f["crc32c"],
              f"manifest: {name} size/CRC")


def check_image(row, rec, jpg, info):
    kinds = row["reason"].split(":")[0].split("+")
    want_flags = FLAG_REENCODED | (FLAG_CMYK if kinds[0] in ("cmyk", "ycck") else 0)
    want_flags |= FLAG_PNG if "png" in kinds else 0
    want_flags |= FLAG_GRAY if "gray" in kinds else 0
    want_flags |= FLAG_RESIZED if (rec["width"], rec["height"]) != (
        int(row["width"]), int(row["height"])) else 0
    check(rec["flags"] == want_flags, f"{row['path']}: flags {rec['flags']}, expected {want_flags}")
    # Baseline (SOF0), 4:2:0, no EXIF or other APPn but JFIF.
    check(b"\xff\xc0" in jpg[:2000] and b"\xff\xc2" not in jpg[:2000],
          f"{row['path']}: not a baseline JPEG")
    check(jpg[:2] == b"\xff\xd8" and jpg[-2:] == b"\xff\xd9", f"{row['path']}: SOI/EOI")
    check(b"Exif" not in jpg and b"\xff\xe1" not in jpg[:2000], f"{row['path']}: metadata kept")
    import io
    im = Image.open(io.BytesIO(jpg))
    check(im.mode == "RGB" and im.size == (rec["width"], rec["height"]),
          f"{row['path']}: stored image {im.mode} {im.size}")
    check(JpegImagePlugin.get_sampling(im) == 2, f"{row['path']}: not 4:2:0")
    # Against Pillow's own reading and resize of the source.
    src = Image.open(os.path.join(info["root"], row["path"])).convert("RGB")
    ref = src.resize(im.size, Image.BILINEAR)
    got = np.asarray(im.convert("RGB"))
    q = psnr(got, np.asarray(ref))
    check(q > 30, f"{row['path']}: PSNR {q:.1f} dB against Pillow's resize of the source")


def t_report(tmp):
    info = build(tmp)
    out = os.path.join(tmp, "out")
    so, se = prep([info["root"], out] + COMMON + kaggle(info) + ["--threads", "2"])
    check("accepted" in so and "rejected" in so and "truncated" in so, f"summary: {so}")
    check(sorted(os.listdir(out)) == sorted(
        ["classes.txt", "sources.tsv", "report.json", "manifest.json"] +
        [n for n in os.listdir(out) if n.endswith(".mds")]), f"OUT holds {os.listdir(out)}")
    rows = read_tsv(os.path.join(out, "sources.tsv"))
    check_sources(rows, info)
    check_report(json.load(open(os.path.join(out, "report.json"))), rows)
    check_shards(out, rows, info, reader())
    # The held-out split: 3 per class (at most half), drawn from each class's files.
    for c in info["classes"]:
        mine = [r for r in rows if r["path"].startswith(f"train/{c}/")]
        held = [r for r in mine if r["split"] == "search_val"]
        check(len(held) == min(3, len(mine) // 2), f"class {c}: {len(held)} held out")
    # The reader this folder is for takes it: a two-period search on it.
    mdenas = os.path.join(os.path.dirname(os.path.dirname(BINARY)), "mdenas_mpi")
    if os.path.exists(mdenas):
        p = subprocess.run([mdenas, "search", "--dataset", "imagenet", "--data", out,
                            "--image-size", "32", "--batch", "8", "--epochs", "1", "--cells", "2",
                            "--channels", "4", "--nodes", "2", "--period-steps", "3",
                            "--val-batches", "1", "--threads", "1", "--out",
                            os.path.join(tmp, "search")], capture_output=True, timeout=300,
                           env=env())
        err = p.stdout.decode() + p.stderr.decode()
        check(p.returncode == 0 and "genotype:" in err,
              f"mdenas_mpi search --dataset imagenet on the prep's folder: exit {p.returncode}\n"
              f"{err[-2000:]}")


# ---- deterministic ----

def t_deterministic(tmp):
    info = build(tmp)
    args = [info["root"]] + COMMON + kaggle(info)
    runs = [("np1_t1", 0, ["--threads", "1"]), ("np1_t2", 0, ["--threads", "2"]),
            ("np2_t1", 2, ["--threads", "1"])]
    snaps = {}
    for name, np_, extra in runs:
        out = os.path.join(tmp, name)
        prep([args[0], out] + args[1:] + extra, np_=np_)
        snaps[name] = snapshot(out)
    ref = snaps["np1_t1"]
    check(any(k.endswith(".mds") for k in ref), "no shards")
    for name in snaps:
        diff = snapshot_diff(ref, snaps[name])
        check(not diff, f"{name} differs from np1_t1 in {diff}")
    out = os.path.join(tmp, "seed5")
    prep([args[0], out] + args[1:] + ["--seed", "5"])
    a = read_tsv(os.path.join(tmp, "np1_t1", "sources.tsv"))
    b = read_tsv(os.path.join(out, "sources.tsv"))
    check([r["split"] for r in a] != [r["split"] for r in b], "--seed 5 held out the same files")


# ---- resume ----

def kill_after_shards(cmd, out, n, while_stopped):
    """Starts cmd, stops it (SIGSTOP) as soon as n shards are finished (their
    records written), calls while_stopped(), kills it (SIGKILL). Returns the names
    of the shards it left."""
    work = os.path.join(out, ".imagenet_prep")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
    deadline = time.time() + 60
    try:
        while time.time() < deadline and p.poll() is None:
            if os.path.isdir(work) and sum(f.endswith(".mds.tsv") for f in os.listdir(work)) >= n:
                break
            time.sleep(0.002)
        p.send_signal(signal.SIGSTOP)
        if p.poll() is None:
            while_stopped()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    check(not os.path.exists(os.path.join(out, "manifest.json")),
          "the run finished before it was killed (too fast to interrupt)")
    shards = [n for n in os.listdir(out) if n.endswith(".mds")]
    check(shards, "killed before any shard was written")
    return sorted(shards)


def t_resume(tmp):
    info = build(tmp)
    args = COMMON + kaggle(info) + ["--threads", "1"]
    ref = os.path.join(tmp, "ref")
    prep([info["root"], ref] + args)
    out = os.path.join(tmp, "out")
    def second_prep():  # the same command while the first holds OUT
        _, err = prep([info["root"], out] + args, rc=2)
        check("in use by another imagenet_prep (pid" in err, f"concurrent prep: {err}")

    shards = kill_after_shards([BINARY, info["root"], out] + args, out, 3, second_prep)
    work = os.path.join(out, ".imagenet_prep")
    recorded = sorted({n[:-4] for n in os.listdir(work) if n.endswith(".tsv")} & set(shards))
    check(recorded, f"no finished shard to keep: {shards}")
    first = os.path.join(out, recorded[0])  # damaged below
    keep = recorded[1:]
    kept_before = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in keep}
    # Another command on the unfinished folder is refused and changes nothing.
    before = snapshot(out)
    _, err = prep([info["root"], out] + args[:-2] + ["--threads", "1", "--quality", "80"], rc=2)
    check("quality 90 there, 80 here" in err, f"refusal does not name the option: {err}")
    check(not snapshot_diff(before, snapshot(out)), "a refused command changed OUT")
    # Damage a finished shard: the rerun must notice (CRC) and remake it.
    data = bytearray(open(first, "rb").read())
    data[-10] ^= 0xFF
    open(first, "wb").write(bytes(data))
    # The rerun keeps the good shards and remakes the damaged one; here it also
    # meets an I/O failure (a folder where the last shard goes): exit 1, naming it.
    blocker = os.path.join(out, "val-00001.mds")
    os.mkdir(blocker)
    _, err = prep([info["root"], out] + args, rc=1)
    check("val-00001.mds" in err and "run the same command again" in err, f"I/O failure: {err}")
    check(not os.path.exists(os.path.join(out, "manifest.json")), "manifest after a failure")
    m = re.search(r"\((\d+) finished by an earlier run, kept\)", err)
    kept = int(m.group(1)) if m else 0
    check(kept == len(keep), f"kept {kept} shards, expected {len(keep)} ({keep}): {err}")
    print(f"killed with {len(shards)} shards written, {len(recorded)} finished; "
          f"{kept} kept, {recorded[0]} damaged and remade")
    for n, t in kept_before.items():
        check(os.stat(os.path.join(out, n)).st_mtime_ns == t, f"{n} was rewritten")
    os.rmdir(blocker)
    splits = json.load(open(os.path.join(ref, "manifest.json")))["splits"]
    nshards = sum(len(v["shards"]) for v in splits.values())
    _, err = prep([info["root"], out] + args[:-2] + ["--threads", "2"])
    check(f"({nshards - 1} finished by an earlier run, kept)" in err, f"last rerun: {err}")
    diff = snapshot_diff(snapshot(ref), snapshot(out))
    check(not diff, f"resumed folder differs from an uninterrupted one in {diff}")
    # Finished: the same command does nothing, another is refused.
    before = snapshot(out)
    so, _ = prep([info["root"], out] + args)
    check("already a finished prep" in so, f"rerun on a finished folder: {so}")
    _, err = prep([info["root"], out] + args + ["--seed", "9"], rc=2)
    check("seed 0 there, 9 here" in err, f"refusal: {err}")
    check(not snapshot_diff(before, snapshot(out)), "reruns changed a finished folder")


# ---- val layouts ----

def val_images(out, rd):
    got = []
    for n in sorted(os.listdir(out)):
        if n.startswith("val-") and n.endswith(".mds"):
            got += [(rec["label"], rec["width"], rec["height"], jpg)
                    for rec, jpg in rd["read_shard"](os.path.join(out, n))]
    return sorted(got)


def t_val_layouts(tmp):
    info = build(tmp, classes=4, per_class=2, val_per_class=3, bad=False)
    root = info["root"]
    rd = reader()
    base = [root, None, "--search-val-per-class", "0", "--quiet", "--images-per-shard", "5"]
    results = {}
    forms = {"pairs": ["--val-labels", os.path.join(root, "labels.txt")],
             "kaggle": kaggle(info),
             "devkit": ["--val-labels", os.path.join(root, "ILSVRC2012_validation_ground_truth.txt"),
                        "--val-id-map", os.path.join(root, "id_map.txt")]}
    for name, extra in forms.items():
        out = os.path.join(tmp, name)
        where = [root, "--out", out] if name == "kaggle" else [root, out]  # both spellings
        prep(where + base[2:] + extra)
        results[name] = val_images(out, rd)
    _, err = prep([root, os.path.join(tmp, "nomap")] + base[2:] +
                  ["--val-labels", os.path.join(root, "ILSVRC2012_validation_ground_truth.txt")],
                  rc=2)
    check("--val-id-map" in err, f"devkit labels without a map: {err}")
    check(not os.path.exists(os.path.join(tmp, "nomap", "manifest.json")), "nomap wrote a manifest")
    tree.class_folder_val(root, info)
    out = os.path.join(tmp, "folders")
    prep([root, out] + base[2:])
    results["folders"] = val_images(out, rd)
    want = sorted(info["classes"].index(w) for _, w in info["val_labels"])
    check([g[0] for g in results["pairs"]] == want, f"val labels {[g[0] for g in results['pairs']]}")
    for name, got in results.items():
        check(got == results["pairs"], f"val shards from {name} differ from labels.txt's")
    rows = read_tsv(os.path.join(out, "sources.tsv"))
    check(all(r["path"].count("/") == 2 for r in rows if r["split"] == "val"), "val/<wnid>/ paths")


# ---- bad input ----

def t_bad_input(tmp):
    info = build(tmp, classes=2, per_class=3, val_per_class=1, bad=False)
    root = info["root"]
    so, _ = prep(["--help"])
    for opt in ("--short-side", "--val-short-side", "--quality", "--search-val-per-class", "--seed",
                "--images-per-shard", "--threads", "--val-labels", "--val-id-map",
                "--accept-warnings", "--max-pixels", "--min-side", "--max-aspect", "--val-dir",
                "manifest.json", "sources.tsv", "Exit status"):
        check(opt in so, f"--help does not mention {opt}")
    out = os.path.join(tmp, "out")
    cases = [([], "give the input folder IN"),
             ([root], "give the input folder IN"),
             ([root, out, "--frobnicate", "1"], "unknown option '--frobnicate'"),
             ([root, out, "--quality", "0"], "--quality '0' is not a whole number in 1..100"),
             ([root, out, "--quality"], "--quality needs a value"),
             ([root, out, "--max-aspect", "nan"], "--max-aspect 'nan'"),
             ([root, out, "--val-id-map", "x"], "--val-id-map goes with --val-labels"),
             ([os.path.join(tmp, "nowhere"), out], "no such folder"),
             ([os.path.join(root, "val"), out], "IN must hold train/"),
             ([root, out], "but no class folders: give their labels with --val-labels"),
             ([root, out, "--val-labels", os.path.join(tmp, "nolabels.txt")], "nolabels.txt")]
    empty = os.path.join(tmp, "empty")
    os.makedirs(os.path.join(empty, "train", "n01440764"))
    cases.append(([empty, out], "hold no files"))
    os.makedirs(os.path.join(tmp, "noclass", "train"))
    cases.append(([os.path.join(tmp, "noclass"), out], "holds no class folders"))
    with open(os.path.join(tmp, "bad_labels.txt"), "w") as f:
        f.write("a.JPEG n01440764\nb.JPEG\n")
    cases.append(([root, out, "--val-labels", os.path.join(tmp, "bad_labels.txt")],
                  "bad_labels.txt:2: expected two words"))
    with open(os.path.join(tmp, "a_file"), "w") as f:
        f.write("x")
    cases.append(([root, os.path.join(tmp, "a_file")] + kaggle(info), "is not a folder"))
    foreign = os.path.join(tmp, "foreign")
    os.makedirs(foreign)
    open(os.path.join(foreign, "mine.txt"), "w").write("keep me")
    cases.append(([root, foreign] + kaggle(info), "is not empty (it holds 'mine.txt')"))
    for args, msg in cases:
        _, err = prep(args, rc=2)
        check(msg in err, f"imagenet_prep {' '.join(args)}: message lacks {msg!r}: {err}")
    check(not os.path.exists(out), "a refused command created OUT")
    check(os.listdir(foreign) == ["mine.txt"], "a refused command wrote into a foreign folder")
    # --accept-warnings keeps a JPEG libjpeg warns about; without it, it is rejected.
    good = open(os.path.join(root, "train", info["classes"][0],
                             f"{info['classes'][0]}_1.JPEG"), "rb").read()
    tree.write(os.path.join(root, "train", info["classes"][0], "warn.JPEG"),
               tree.with_garbage_before_eoi(good))
    for flag, status in (([], "rejected"), (["--accept-warnings"], "accepted")):
        o = os.path.join(tmp, "warn" + str(len(flag)))
        prep([root, o, "--quiet"] + kaggle(info) + flag)
        row = [r for r in read_tsv(os.path.join(o, "sources.tsv")) if r["path"].endswith("warn.JPEG")][0]
        check(row["status"] == status, f"warn.JPEG {flag}: {row['status']} {row['reason']}")
        if flag:
            check(row["reason"].startswith("warning: Corrupt JPEG data"), f"reason {row['reason']}")
            rep = json.load(open(os.path.join(o, "report.json")))
            check(rep["converted"]["warning"] == 1, f"report {rep['converted']}")
    # Sides beyond what is stored (8192) or what JPEG can hold (65500), allowed through
    # --max-aspect: rejected as bad_aspect, kept or not; never an error that stops the prep.
    from PIL import Image
    cls0 = os.path.join(root, "train", info["classes"][0])
    Image.new("RGB", (200, 9000), (90, 120, 30)).save(os.path.join(cls0, "long.JPEG"), "JPEG")
    Image.new("RGB", (8, 70000), (200, 10, 60)).save(os.path.join(cls0, "tall.JPEG"), "PNG")
    o = os.path.join(tmp, "aspect")
    prep([root, o, "--quiet", "--max-aspect", "65535", "--min-side", "1"] + kaggle(info))
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in read_tsv(os.path.join(o, "sources.tsv"))}
    for name in ("long.JPEG", "tall.JPEG"):
        r = rows.get(name, {})
        check(r.get("status") == "rejected" and r.get("reason", "").startswith("bad_aspect") and
              "8192" in r.get("reason", ""), f"{name}: {r}")
    os.remove(os.path.join(cls0, "long.JPEG"))
    os.remove(os.path.join(cls0, "tall.JPEG"))
    # An unreadable class folder is a bad tree, not a silent gap (root reads it anyway).
    if os.geteuid() != 0:
        d = os.path.join(root, "train", info["classes"][1])
        os.chmod(d, 0)
        try:
            _, err = prep([root, os.path.join(tmp, "noperm")] + kaggle(info), rc=2)
            check("cannot read folder" in err, f"unreadable class: {err}")
        finally:
            os.chmod(d, 0o755)


TESTS = {"report": t_report, "deterministic": t_deterministic, "resume": t_resume,
         "val_layouts": t_val_layouts, "bad_input": t_bad_input}


def init(binary, work):
    global BINARY
    BINARY = binary


if __name__ == "__main__":
    sys.exit(e2e_main(__doc__, TESTS, init, skips=(Skip,)))
