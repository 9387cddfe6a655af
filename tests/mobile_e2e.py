#!/usr/bin/env python3
"""End-to-end tests of `mdenas_mpi search --space mobile` on the tiny ImageNet-style
folder of tests/imagenet_e2e.py (4 classes, 48 search-train / 16 validation JPEGs).

  mobile_e2e.py MDENAS_MPI TEST

Searches: --preset mobile-tiny narrowed further (--image-size 32, --width-mult 0.25,
batch 8: 6 steps an epoch, 2 epochs, periods of 3 steps). TEST is one of:

  search   the run directory of a mobile search: state.json names the space and holds
           p_blocks; `zero` is masked (p = 0 in every history line, never sampled) on
           the blocks without a shortcut and allowed on the others; genotype.json's
           blocks are the most probable ops with the network's size; net.config is
           a ProxylessNAS net config of those ops; derive and inspect agree with
           genotype.txt; metrics carry entropy_blocks
  resume   stopped at step 5 (exit 75) and resumed: history, state, genotype, net.config
           and the final checkpoint byte-identical to an uninterrupted run
  kill9    kill -9 after the first checkpoint and run again: the same results
  np2      mpirun -np 2 --sync-bn against one process: the first steps' losses agree
  space_changed  a stopped run whose --space-file then changes (an eps, a stage width) is
           refused (exit 2) naming the space, its checkpoints left as they were (none
           renamed .corrupt); with the file as it was, it resumes
  margins  derive (stderr) and the end of a search report, per block / edge, the chosen op,
           the runner-up, the margin and the periods behind it, and warn with the number
           of tied distributions: a mobile search against p in state.json, and a
           one-period DARTS search (p cannot move in one period: every edge tied)
  bad_input  --space, --width-mult, --candidates, --space-file (missing, not JSON, an
           unknown key, a block left with no candidate), --label-smoothing, --nesterov:
           each refused (exit 2) naming the option or the file, nothing written

Exit: 0 pass, 1 fail, 2 usage, 77 skip (no PIL or no photo).
"""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import harden_e2e
import imagenet_e2e
from e2e_common import check, e2e_main, load_jsonl, read_bytes

BASE = ["--preset", "mobile-tiny", "--image-size", "32", "--width-mult", "0.25",
        "--batch", "8", "--epochs", "2", "--period-steps", "3", "--ckpt-every", "2",
        "--seed", "3", "--threads", "1", "--log-every", "1", "--data-threads", "1"]
RESULTS = ("history.jsonl", "state.json", "genotype.txt", "genotype.json", "net.config")


def run(argv, rc=0, env=None, timeout=600):
    return harden_e2e.run(argv, rc=rc, env=env, timeout=timeout)


def search(data, out, *extra):
    return ["search"] + BASE + ["--data", data] + list(extra) + ["--out", out]


def folder(tmp):
    data = os.path.join(tmp, "prepared")
    if not os.path.exists(data):
        imagenet_e2e.make_folder(data)
    return data


def same_results(a, b):
    for name in RESULTS:
        check(read_bytes(os.path.join(a, name)) == read_bytes(os.path.join(b, name)),
              f"{name} differs between {a} and {b}")
    ca = sorted(glob.glob(os.path.join(a, "checkpoints", "ckpt-*.safetensors")))[-1]
    cb = sorted(glob.glob(os.path.join(b, "checkpoints", "ckpt-*.safetensors")))[-1]
    check(os.path.basename(ca) == os.path.basename(cb) and
          imagenet_e2e.tensors(ca) == imagenet_e2e.tensors(cb), f"final checkpoints differ: {ca} {cb}")


def t_search(tmp):
    data, d = folder(tmp), os.path.join(tmp, "run")
    out, _ = run(search(data, d))
    check("mobile space" in out, f"the first line should name the mobile space:\n{out[:600]}")
    st = json.load(open(os.path.join(d, "state.json")))
    ops = st.get("ops", [])
    check(st.get("space") == "mobile" and "p_blocks" in st and "zero" in ops,
          f"state.json: {sorted(st)}")
    p = st["p_blocks"]
    zero = ops.index("zero")
    check(len(p) == 21, f"21 searchable blocks expected, {len(p)}")
    # stages 24x4 s2, 40x4 s2, 80x4 s2, 96x4 s1, 192x4 s2, 320x1 s1 at width 0.25:
    # widths 8, 16, 24, 24, 48, 80; no shortcut where the stride or the width changes
    widths = [8, 16, 24, 24, 48, 80]
    counts, strides = [4, 4, 4, 4, 4, 1], [2, 2, 2, 1, 2, 1]
    shortcut, c = [], 8  # the first block's width: 16 * 0.25 -> 8
    for w, n, s in zip(widths, counts, strides):
        for b in range(n):
            shortcut.append((s if b == 0 else 1) == 1 and c == w)
            c = w
    hist = load_jsonl(os.path.join(d, "history.jsonl"))
    check(len(hist) == 4, f"4 periods expected, {len(hist)}")
    for h in hist:
        for blk, row in enumerate(h["p"]):
            if not shortcut[blk]:
                check(row[zero] == 0.0, f"period {h['period']}: p(zero) = {row[zero]} on "
                                        f"block {blk + 1}, which has no shortcut")
            else:
                check(row[zero] > 0.0, f"period {h['period']}: zero not allowed on block "
                                       f"{blk + 1}, which has a shortcut")
            check(abs(sum(row) - 1) < 1e-9, f"p of block {blk + 1} sums to {sum(row)}")
        for blk, op in enumerate(h["arch"]["blocks"]):
            check(shortcut[blk] or op != "zero", f"zero sampled on block {blk + 1}")
    g = json.load(open(os.path.join(d, "genotype.json")))
    want = [max((q, -k) for k, q in enumerate(row) if shortcut[b] or k != zero)
            for b, row in enumerate(p)]
    check(g["blocks"] == [ops[-k] for _, k in want], f"genotype.json blocks {g['blocks']}")
    check(g["params"] > 0 and g["madds"] > 0 and g["madds_224"] > g["madds"],
          f"genotype.json size: {g['params']} params, {g['madds']} / {g['madds_224']} madds")
    net = json.load(open(os.path.join(d, "net.config")))
    check(net == g["net_config"] and len(net["blocks"]) == 22, "net.config")
    for blk, (b, op) in enumerate(zip(net["blocks"][1:], g["blocks"])):
        mic = b["mobile_inverted_conv"]
        name = "zero" if mic["name"] == "ZeroLayer" else \
            f"{mic['kernel_size']}x{mic['kernel_size']}_MBConv{mic['expand_ratio']}"
        check(name == op and (b["shortcut"] is not None) == shortcut[blk],
              f"net.config block {blk + 1}: {b}")
    txt = read_bytes(os.path.join(d, "genotype.txt")).decode()
    dout, _ = run(["derive", d])
    check(dout == txt and txt.startswith("MobileNet(blocks=["), f"derive printed {dout!r}, "
                                                                 f"genotype.txt {txt!r}")
    ck = sorted(glob.glob(os.path.join(d, "checkpoints", "ckpt-*.safetensors")))[-1]
    iout, _ = run(["inspect", ck])
    check("space           mobile" in iout and txt.strip() in iout,
          f"inspect should name the space and the genotype:\n{iout}")
    per = [m for m in load_jsonl(os.path.join(d, "metrics.jsonl")) if m["type"] == "period"]
    check(all("entropy_blocks" in m for m in per), "period lines lack entropy_blocks")
    check(os.path.getsize(os.path.join(d, "p_heatmap.svg")) > 1000, "p_heatmap.svg")
    print(f"   mobile search: {len(hist)} periods, genotype {txt.strip()[:70]}..., "
          f"{g['params']:.0f} parameters at 32 px")


def t_resume(tmp):
    data = folder(tmp)
    ref, d = os.path.join(tmp, "ref"), os.path.join(tmp, "stopped")
    run(search(data, ref))
    run(search(data, d), rc=75, env={"MDENAS_RAISE_AT_STEP": "5"})
    out, _ = run(search(data, d, "--data-threads", "2"))
    check("resuming from" in out, f"the second run did not resume:\n{out[:800]}")
    same_results(ref, d)
    print("   stopped at step 5, resumed with 2 decode threads: results and checkpoint identical")


def t_kill9(tmp):
    data = folder(tmp)
    ref, d = os.path.join(tmp, "ref"), os.path.join(tmp, "killed")
    run(search(data, ref))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    p = subprocess.Popen([harden_e2e.BINARY] + search(data, d), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if glob.glob(os.path.join(d, "checkpoints", "ckpt-*.safetensors")):
            break
        time.sleep(0.05)
    check(p.poll() is None, f"the run ended (exit {p.returncode}) before it could be killed")
    p.send_signal(signal.SIGKILL)
    p.wait()
    out, _ = run(search(data, d))
    check("resuming from" in out, f"the rerun did not resume:\n{out[:800]}")
    same_results(ref, d)
    print("   killed with SIGKILL after its first checkpoint, rerun: results identical")


def t_np2(tmp):
    import dist_e2e
    dist_e2e.init(harden_e2e.BINARY, harden_e2e.WORK)
    data = folder(tmp)
    one, two = os.path.join(tmp, "np1"), os.path.join(tmp, "np2")
    extra = ("--sync-bn", "--epochs", "1")
    run(search(data, one, *extra))
    out = dist_e2e.mpirun(2, search(data, two, *extra))
    check("over 2 rank(s)" in out, f"the run should say it uses 2 ranks:\n{out[:800]}")
    la = [m["loss"] for m in load_jsonl(os.path.join(one, "metrics.jsonl")) if m["type"] == "interval"]
    lb = [m["loss"] for m in load_jsonl(os.path.join(two, "metrics.jsonl")) if m["type"] == "interval"]
    check(len(la) == len(lb) == 6, f"6 interval lines expected: {len(la)}, {len(lb)}")
    # Step 1 agrees to float rounding; later steps drift by the rounding of synced BN
    # statistics summed in another order (1e-4 by step 3); rows lost or doubled would
    # put them 1e-2 and more apart.
    first = abs(la[0] - lb[0]) / abs(la[0])
    worst = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(la[:3], lb[:3]))
    check(first < 1e-5 and worst < 1e-3,
          f"-np 2 losses {lb[:3]} against -np 1 {la[:3]}: relative {first:.3g} at step 1, "
          f"{worst:.3g} over 3 steps")
    print(f"   -np 2 vs -np 1 (mobile, synced BN): first 3 losses within {worst:.2g} (relative)")


def t_space_changed(tmp):
    data = folder(tmp)
    d, sf = os.path.join(tmp, "run"), os.path.join(tmp, "space.json")
    with open(sf, "w") as f:
        f.write('{"bn_eps": 0.001}')
    run(search(data, d, "--space-file", sf), rc=75, env={"MDENAS_RAISE_AT_STEP": "5"})
    cks = sorted(os.listdir(os.path.join(d, "checkpoints")))
    for text in ('{"bn_eps": 0.002}', '{"stages": [{"width": 24, "blocks": 2, "stride": 2}, '
                                      '{"width": 48, "blocks": 2, "stride": 2}]}'):
        with open(sf, "w") as f:
            f.write(text)
        _, err = run(search(data, d, "--space-file", sf), rc=2)
        check("another search space" in err and "nothing was changed" in err,
              f"a changed space file should be refused by name:\n{err[-800:]}")
        check(sorted(os.listdir(os.path.join(d, "checkpoints"))) == cks,
              f"the checkpoints changed: {os.listdir(os.path.join(d, 'checkpoints'))} (were {cks})")
    with open(sf, "w") as f:
        f.write('{"bn_eps": 0.001}')
    out, _ = run(search(data, d, "--space-file", sf))
    check("resuming from" in out, f"with the file as it was, the run should resume:\n{out[:600]}")
    print("   a changed space file refused twice (eps, widths), checkpoints kept; resumed after")


def margin_lines(text):
    return [l for l in text.splitlines() if " margin " in l]


def tied_count(text):
    import re
    m = re.search(r"warning: (\d+) of (\d+) (blocks|edges) are tied", text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, None)


def t_margins(tmp):
    data, d = folder(tmp), os.path.join(tmp, "run")
    out, _ = run(search(data, d))
    st = json.load(open(os.path.join(d, "state.json")))
    ops, p, he = st["ops"], st["p_blocks"], st["he_blocks"]
    zero = ops.index("zero")
    want_tied = 0
    for b, row in enumerate(p):
        live = sorted(((q, -k) for k, q in enumerate(row) if q > 0 or k != zero), reverse=True)
        want_tied += live[0][0] == live[1][0]
    _, err = run(["derive", d])
    lines = margin_lines(err)
    check(len(lines) == 21, f"derive should report 21 blocks:\n{err[-1500:]}")
    for b, line in enumerate(lines):
        row = p[b]
        best = max(range(len(row)), key=lambda k: (row[k], -k))
        check(f" {ops[best]} " in line and f"{int(he[b][best])} period(s)" in line,
              f"block {b + 1}: {line!r}; p {row}, H^e {he[b]}")
    check(tied_count(err)[0] == want_tied and ("TIED" in err) == (want_tied > 0),
          f"{want_tied} tied blocks expected:\n{err[-800:]}")
    check(margin_lines(out) == lines, "the end of the search should print derive's report")
    # DARTS, one period: no op can gain before a rival has been trained less often
    dd = os.path.join(tmp, "darts")
    out, _ = run(["search", "--dataset", "synthetic", "--subset", "64", "--epochs", "1",
                  "--batch", "16", "--cells", "2", "--channels", "4", "--nodes", "2",
                  "--threads", "1", "--out", dd])
    check(tied_count(out) == (10, 10) and len(margin_lines(out)) == 10,
          f"a one-period DARTS search: 10 of 10 edges tied expected:\n{out[-1500:]}")
    print(f"   mobile: {want_tied} of 21 blocks tied, as state.json's p says; DARTS after one "
          f"period: 10 of 10 edges tied, warned")


def t_bad_input(tmp):
    data = folder(tmp)

    def space_file(name, text):
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    cases = [
        (["--space", "cells"], ["--space", "darts or mobile"]),
        (["--space", "darts", "--width-mult", "2"], ["--width-mult", "--space mobile"]),
        (["--width-mult", "0"], ["--width-mult"]),
        (["--candidates", "3x3_MBConv6,4x4_MBConv3"], ["--candidates", "4x4_MBConv3"]),
        (["--candidates", "zero"], ["--candidates", "at least 2"]),
        (["--candidates", "3x3_MBConv3,3x3_MBConv3"], ["repeats"]),
        (["--space-file", os.path.join(tmp, "absent.json")], ["absent.json"]),
        (["--space-file", space_file("notjson.json", "{stages: [")], ["notjson.json"]),
        (["--space-file", space_file("unknown.json", '{"stagez": []}')],
         ["unknown.json", "stagez"]),
        (["--space-file", space_file("badstage.json", '{"stages": [{"width": 8, "stride": 3, '
                                                      '"blocks": 1}]}')],
         ["badstage.json", "stride"]),
        (["--space-file", space_file("typo.json", '{"stages": [{"width": 8, "stirde": 2, '
                                                  '"blocks": 1}]}')],
         ["typo.json", "stirde"]),
        (["--space-file", space_file("mult.json", '{"width_mult": 1.35}')],
         ["mult.json", "width_mult", "--width-mult"]),
        (["--space-file", space_file("state.json", '{"p_blocks": 3}')], ["state.json", "p_blocks"]),
        (["--candidates", ",3x3_MBConv3,,5x5_MBConv6"], ["--candidates", "empty"]),
        (["--candidates", "03x3_MBConv3,5x5_MBConv6"], ["3x3_MBConv3"]),
        (["--candidates", "3x3_MBConv3"], ["--candidates", "at least 2"]),
        (["--label-smoothing", "0.99999999"], ["--label-smoothing"]),
        (["--label-smoothing", "1"], ["--label-smoothing"]),
        (["--nesterov", "1", "--momentum", "0"], ["--nesterov"]),
    ]
    for extra, needles in cases:
        d = os.path.join(tmp, "refused")
        _, err = run(search(data, d, *extra), rc=2)
        for n in needles:
            check(n in err, f"{' '.join(extra)}: the message should name {n!r}:\n{err[-800:]}")
        check(not os.path.exists(d), f"{' '.join(extra)}: a refused run wrote {d}")
    print(f"   {len(cases)} bad options and space files refused by name, nothing written")


TESTS = {"search": t_search, "resume": t_resume, "kill9": t_kill9, "np2": t_np2,
         "space_changed": t_space_changed, "margins": t_margins, "bad_input": t_bad_input}


def init(binary, work):
    harden_e2e.init(binary, work)


if __name__ == "__main__":
    sys.exit(e2e_main(__doc__, TESTS, init, skips=(imagenet_e2e.Skip,)))
