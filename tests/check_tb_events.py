#!/usr/bin/env python3
"""Reads what `test_runlog --sample DIR` writes with the real readers.

  check_tb_events.py TEST_RUNLOG --svg   the heatmap is well-formed SVG (xml.etree)
  check_tb_events.py TEST_RUNLOG --tb    TensorBoard's EventAccumulator loads the
                                         events with the expected tags, steps and
                                         float32 values; exits 77 (CTest: skipped)
                                         when tensorboard is not installed
                                         (pip install tensorboard)
"""
import math
import shutil
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

SKIP = 77
DARTS_OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
             "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def expected_scalars():
    """Mirror of write_sample() in tests/test_runlog.c."""
    want = {"loss/train": [], "accuracy/val": []}
    for s in range(10):
        want["loss/train"].append((s, f32(2.5 / (s + 1))))
        if s % 5 == 0:
            want["accuracy/val"].append((s, f32(0.1 * s)))
    want["big/step"] = [(1 << 40, 65504.0)]
    want["\u7cbe\u5ea6 caf\u00e9"] = [(7, -3.25)]
    want["special/nan"] = [(1, math.nan)]
    want["special/tiny"] = [(2, f32(1e-45))]
    return want


def check_svg(path):
    root = ET.parse(path).getroot()  # raises on malformed XML
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == ns + "svg", root.tag
    cells = [r for r in root.iter(ns + "rect") if r.get("class") == "cell"]
    assert len(cells) == 2 * 14 * 8, f"{len(cells)} cells"
    texts = {"".join(t.itertext()) for t in root.iter(ns + "text")}
    for op in DARTS_OPS:
        assert op in texts, f"op {op} not labelled"
    assert "normal" in texts and "reduce" in texts, "group names"
    assert "MdeNAS search: p per edge & op <darts>" in texts, "title"
    assert not list(root.iter(ns + "script")), "script in the SVG"
    for c in cells:
        assert c.get("fill", "").startswith("#") and len(c.get("fill")) == 7, c.get("fill")
    print(f"svg: well-formed, {len(cells)} cells, all op names present")


def check_tb(tbdir):
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError as e:
        print(f"tensorboard not importable ({e}); pip install tensorboard", file=sys.stderr)
        sys.exit(SKIP)
    acc = event_accumulator.EventAccumulator(tbdir, size_guidance={"scalars": 0})
    acc.Reload()
    want = expected_scalars()
    tags = sorted(acc.Tags()["scalars"])
    assert tags == sorted(want), f"tags {tags} != {sorted(want)}"
    for tag, pairs in want.items():
        got = [(e.step, e.value) for e in acc.Scalars(tag)]
        assert len(got) == len(pairs), f"{tag}: {got}"
        for (gs, gv), (ws, wv) in zip(got, pairs):
            assert gs == ws, f"{tag}: step {gs} != {ws}"
            same = (math.isnan(gv) and math.isnan(wv)) or gv == wv
            assert same, f"{tag} step {gs}: value {gv!r} != {wv!r}"
        for e in acc.Scalars(tag):
            assert e.wall_time > 1.6e9, f"{tag}: wall_time {e.wall_time}"
    n = sum(len(p) for p in want.values())
    print(f"tensorboard {__import__('tensorboard').__version__}: {len(want)} tags, {n} scalars read back exactly")


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in ("--svg", "--tb"):
        print(__doc__, file=sys.stderr)
        return 2
    binary, mode = sys.argv[1], sys.argv[2]
    out = tempfile.mkdtemp(prefix="runlog_py.", dir=".")
    try:
        subprocess.run([binary, "--sample", out + "/sample"], check=True)
        if mode == "--svg":
            check_svg(out + "/sample/heatmap.svg")
        else:
            check_tb(out + "/sample/tb")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
