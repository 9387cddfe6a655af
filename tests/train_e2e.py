#!/usr/bin/env python3
"""End-to-end tests of `mdenas_mpi train`, `eval` and `rankcheck` on tiny settings.

  train_e2e.py MDENAS_MPI TEST

Trainings run on --dataset synthetic (32x32x3, 10 classes, its 1024-image test set),
4 cells at C=4, so that the DARTS network keeps its auxiliary head (an 8x8 map at 2/3
depth). TEST is one of:

  train_eval  a 1-epoch training with the auxiliary head, drop-path, dropout and cutout:
           the run directory (config.json, train.log, metrics.jsonl with one epoch
           line, result.json, net.json, weights.safetensors with DARTS NetworkCIFAR
           names), result.json's counts against the network's; `eval RUNDIR` agrees
           with result.json (top-1 within one image of the 1024, loss to 1e-4); a
           second run of the command does nothing; genotypes given as a run directory,
           a genotype.json, a genotype.txt and a published name
  resume   stopped by SIGUSR1 at step 5 of 2 epochs (exit 75) and resumed: weights,
           result.json's accuracies and the epoch lines byte-identical to an
           uninterrupted run, and the stop inside an epoch's evaluation too
  bad_input  no --genotype, a malformed genotype, a missing file, a genotype.json
           without one, train-only options given to search, the auxiliary head on a
           map it cannot take, a mobile net with DARTS parts: each exit 2 with a
           message naming the problem, nothing written
  rankcheck  3 random architectures for 2 epochs: rankcheck.json's accuracies equal
           each architecture's metrics, its Kendall tau-b equals an independent
           computation, rankcheck.svg is a plot; rerunning trains nothing again
  np2      mpirun -np 2 --sync-bn against one process for one epoch with dropout (its
           masks, like drop-path's, keyed by the global row: the code path both share):
           every step's loss and the test loss agree. (Longer runs drift apart as
           dist_e2e.py explains: a ReLU input within rounding of 0.)
  mobile   ProxylessNAS's released GPU net (tests/fixtures/proxyless_gpu.config) trained
           on the synthetic images for one epoch: ProxylessNAS names in the weights,
           eval agrees

Exit: 0 pass, 1 fail, 2 usage.
"""
import json
import math
import os
import shutil
import struct
import sys

import dist_e2e
import harden_e2e
from e2e_common import check, e2e_main, load_jsonl, read_bytes

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = ["--dataset", "synthetic", "--subset", "256", "--batch", "32", "--cells", "4",
        "--channels", "4", "--threads", "1", "--log-every", "4", "--ckpt-every", "3",
        "--seed", "5", "--lr", "0.05"]
DARTS = ["--aux-weight", "0.4", "--drop-path", "0.2", "--dropout", "0.2", "--cutout", "8"]


def run(argv, rc=0, env=None, timeout=600):
    return harden_e2e.run(argv, rc=rc, env=env, timeout=timeout)


def train(out, *extra, genotype="mdenas"):
    return ["train", "--genotype", genotype] + BASE + DARTS + list(extra) + ["--out", out]


def st_names(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
    head.pop("__metadata__", None)
    return head


def eval_json(out):
    return json.loads(out.strip().splitlines()[-1])


def t_train_eval(tmp):
    d = os.path.join(tmp, "run")
    out, _ = run(train(d, "--epochs", "1"))
    for f in ("config.json", "train.log", "metrics.jsonl", "result.json", "net.json",
              "weights.safetensors"):
        check(os.path.exists(os.path.join(d, f)), f"{f} missing")
    epochs = [m for m in load_jsonl(os.path.join(d, "metrics.jsonl")) if m["type"] == "epoch"]
    check(len(epochs) == 1 and epochs[0]["test_images"] == 1024, f"epoch lines {epochs}")
    res = json.load(open(os.path.join(d, "result.json")))
    check(res["test_top1"] == epochs[0]["test_top1"], "result.json and the epoch line differ")
    check(res["params_training"] > res["params"] > 0, f"params {res}")
    names = st_names(os.path.join(d, "weights.safetensors"))
    for n in ("stem.0.weight", "stem.1.running_var", "cells.0.preprocess1.op.1.weight",
              "auxiliary_head.classifier.weight", "classifier.bias"):
        check(n in names, f"{n} not in the export")
    check(sum(math.prod(v["shape"]) for k, v in names.items()
              if "running" not in k) == res["params_training"], "exported size != params")
    ev, _ = run(["eval", d])
    e = eval_json(ev)
    check(abs(e["test_top1"] - res["test_top1"]) <= 1.0 / 1024 + 1e-9,
          f"eval top-1 {e['test_top1']} vs training's {res['test_top1']}")
    check(abs(e["test_loss"] - res["test_loss"]) <= 1e-4 * max(1, abs(res["test_loss"])),
          f"eval loss {e['test_loss']} vs {res['test_loss']}")
    check(e["params"] == res["params"] and e["madds"] == res["madds"], "eval counts differ")
    out2, _ = run(train(d, "--epochs", "1"))
    check("nothing to do" in out2, "a finished run trained again")
    # The same genotype from the other forms --genotype takes.
    g = res["network"]
    src = os.path.join(tmp, "search")
    os.makedirs(src)
    json.dump({"genotype": g}, open(os.path.join(src, "genotype.json"), "w"))
    open(os.path.join(tmp, "genotype.txt"), "w").write(g + "\n")
    for i, form in enumerate((src, os.path.join(src, "genotype.json"),
                              os.path.join(tmp, "genotype.txt"), g)):
        o = os.path.join(tmp, f"form{i}")
        run(["train", "--genotype", form] + BASE + DARTS + ["--epochs", "1", "--subset", "64",
                                                            "--val-batches", "1", "--out", o])
        r = json.load(open(os.path.join(o, "result.json")))
        check(r["network"] == g, f"form {i}: network {r['network']}")


def t_resume(tmp):
    ref, cut = os.path.join(tmp, "ref"), os.path.join(tmp, "cut")
    run(train(ref, "--epochs", "2"))
    run(train(cut, "--epochs", "2"), rc=75, env={"MDENAS_RAISE_AT_STEP": "5"})
    check(not os.path.exists(os.path.join(cut, "result.json")), "a stopped run finished")
    run(train(cut, "--epochs", "2"))
    check(read_bytes(os.path.join(ref, "weights.safetensors")) ==
          read_bytes(os.path.join(cut, "weights.safetensors")), "weights differ after resume")

    def epochs(d):
        return [{k: v for k, v in m.items() if k != "epoch_time_s"}
                for m in load_jsonl(os.path.join(d, "metrics.jsonl")) if m["type"] == "epoch"]
    check(epochs(ref) == epochs(cut), f"epoch lines differ:\n{epochs(ref)}\n{epochs(cut)}")
    a = json.load(open(os.path.join(ref, "result.json")))
    b = json.load(open(os.path.join(cut, "result.json")))
    check(a["test_top1"] == b["test_top1"] and a["test_loss"] == b["test_loss"], "results differ")
    # A stop during the first epoch's evaluation (SIGTERM raised at its second batch).
    ev = os.path.join(tmp, "ev")
    run(train(ev, "--epochs", "2", "--batch", "64"), rc=75,
        env={"MDENAS_RAISE_IN_EVAL": "0"})
    run(train(ev, "--epochs", "2", "--batch", "64"))
    ref2 = os.path.join(tmp, "ref2")
    run(train(ref2, "--epochs", "2", "--batch", "64"))
    check(epochs(ref2) == epochs(ev), "a stop in evaluation changed the results")
    check(read_bytes(os.path.join(ref2, "weights.safetensors")) ==
          read_bytes(os.path.join(ev, "weights.safetensors")), "weights differ (stop in eval)")


def t_bad_input(tmp):
    cases = [
        (["train"] + BASE + ["--out", "x1"], "--genotype is required"),
        (train("x2", genotype="Genotype(normal=[('sep_conv_3x3', 0)])"), "genotype"),
        (train("x3", genotype=os.path.join(tmp, "nope", "genotype.json")), "no such file"),
        (train("x4", genotype="bogus_name"), "not a DARTS genotype"),
        (["search"] + BASE + ["--cutout", "8", "--out", "x5"], "options of `mdenas_mpi train`"),
        (train("x6", "--dataset", "fashion-mnist"), "auxiliary head"),
        (["train", "--genotype", os.path.join(HERE, "fixtures", "proxyless_gpu.config")] + BASE
         + ["--drop-path", "0.2", "--out", "x7"], "DARTS parts"),
        (["rankcheck"] + BASE + ["--epochs", "2", "--out", "x8"], "--archs"),
    ]
    bad = os.path.join(tmp, "g.json")
    json.dump({"normal": []}, open(bad, "w"))
    cases.append((train("x9", genotype=bad), "neither a DARTS genotype.json"))
    for argv, want in cases:
        argv = [os.path.join(tmp, a) if a.startswith("x") and len(a) == 2 else a for a in argv]
        _, err = run(argv, rc=2)
        check(want in err, f"{argv}: message lacks '{want}':\n{err[-800:]}")
    left = [n for n in os.listdir(tmp) if n.startswith("x")]
    check(not left, f"bad input wrote {left}")


def tau_b(x, y):
    n = len(x)
    c = d = tx = ty = 0
    for i in range(n):
        for j in range(i + 1, n):
            a, b = x[i] - x[j], y[i] - y[j]
            if a == 0 and b == 0:
                tx += 1
                ty += 1
            elif a == 0:
                tx += 1
            elif b == 0:
                ty += 1
            elif (a > 0) == (b > 0):
                c += 1
            else:
                d += 1
    n0 = n * (n - 1) // 2
    den = math.sqrt((n0 - tx) * (n0 - ty))
    return (c - d) / den if den else None


def t_rankcheck(tmp):
    d = os.path.join(tmp, "rc")
    argv = (["rankcheck", "--archs", "3", "--epochs", "2", "--out", d] + BASE +
            ["--aux-weight", "0", "--subset", "128", "--val-batches", "4"])
    run(argv)
    rc = json.load(open(os.path.join(d, "rankcheck.json")))
    check(rc["archs"] == 3 and len(rc["architectures"]) == 3, f"rankcheck.json {rc}")
    acc = []
    for i, a in enumerate(rc["architectures"]):
        m = [x["test_top1"] for x in load_jsonl(os.path.join(d, f"arch-{i:03d}", "metrics.jsonl"))
             if x["type"] == "epoch"]
        check(m == a["test_top1"], f"arch {i}: {m} vs {a['test_top1']}")
        acc.append(m)
    genos = {a["genotype"] for a in rc["architectures"]}
    check(len(genos) == 3, "the random architectures are not distinct")
    for ep in range(2):
        want = tau_b([a[ep] for a in acc], [a[-1] for a in acc])
        got = rc["kendall_tau_b_vs_last"][ep]
        check((want is None and got is None) or abs(want - got) < 1e-12,
              f"epoch {ep + 1}: tau {got}, independently {want}")
    svg = open(os.path.join(d, "rankcheck.svg")).read()
    check(svg.lstrip().startswith(("<svg", "<?xml")) and "polyline" in svg, "not a plot")
    out, _ = run(argv)
    check(out.count("nothing to do") == 3, "rerunning rankcheck trained again")


def t_mobile(tmp):
    d = os.path.join(tmp, "mob")
    cfg = os.path.join(HERE, "fixtures", "proxyless_gpu.config")
    run(["train", "--genotype", cfg, "--preset", "imagenet-mobile-final"] + BASE +
        ["--dataset", "synthetic", "--epochs", "1", "--batch", "16", "--subset", "64",
         "--lr", "0.05", "--out", d])
    names = st_names(os.path.join(d, "weights.safetensors"))
    check("first_conv.conv.weight" in names and "classifier.linear.weight" in names,
          f"not ProxylessNAS names: {sorted(names)[:5]}")
    res = json.load(open(os.path.join(d, "result.json")))
    e = eval_json(run(["eval", d])[0])
    check(abs(e["test_top1"] - res["test_top1"]) <= 1.0 / 1024 + 1e-9, "eval disagrees")


def t_np2(tmp):
    one, two = os.path.join(tmp, "np1"), os.path.join(tmp, "np2")
    argv = train(one, "--epochs", "1", "--sync-bn", "--log-every", "1", "--subset", "128",
                 "--val-batches", "4")
    run(argv)
    dist_e2e.mpirun(2, argv[:-1] + [two])

    def losses(d):
        return [m["loss"] for m in load_jsonl(os.path.join(d, "metrics.jsonl"))
                if m["type"] == "interval"]
    a, b = losses(one), losses(two)
    check(len(a) == len(b) == 4, f"{len(a)} and {len(b)} steps")
    worst = max(abs(x - y) / max(1.0, abs(x)) for x, y in zip(a, b))
    check(worst < 1e-4, f"the step losses of 1 and 2 ranks differ by {worst:.2e}: {a} {b}")
    ra = json.load(open(os.path.join(one, "result.json")))
    rb = json.load(open(os.path.join(two, "result.json")))
    check(abs(ra["test_loss"] - rb["test_loss"]) < 1e-4 and
          abs(ra["test_top1"] - rb["test_top1"]) <= 1.0 / 1024 + 1e-9,
          f"results differ: {ra} {rb}")


TESTS = {"train_eval": t_train_eval, "np2": t_np2, "resume": t_resume, "bad_input": t_bad_input,
         "rankcheck": t_rankcheck, "mobile": t_mobile}


def init(binary, work):
    harden_e2e.init(binary, work)
    dist_e2e.init(binary, work)


if __name__ == "__main__":
    sys.exit(e2e_main(__doc__, TESTS, init))
