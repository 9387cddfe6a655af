#!/usr/bin/python3
"""Join bench_ops and bench_ops_torch.py JSON lines into a side-by-side table.

usage: compare_ops.py [--min] FILE.jsonl [FILE.jsonl ...]   ('-' reads stdin)

Rows are matched on (op, shape, threads). speedup = pytorch total / mdenas
total (the medians; with --min the per-iteration minimum totals, steadier
when other processes share the CPUs), so > 1 means mdenas is faster; fwd x and bwd x are the same ratio for
the forward and backward parts. Rows below 0.9x are marked SLOWER, rows in
[0.9, 1.0) "~" (within run-to-run noise on a shared machine); both are listed
at the end. Standard library only.
"""
import argparse
import json
import sys


def load(paths):
    rows = {}
    order = []
    for path in paths:
        f = sys.stdin if path == "-" else open(path, encoding="utf-8")
        with f:
            for ln, line in enumerate(f, 1):
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    r = json.loads(line)
                except json.JSONDecodeError as e:
                    sys.exit(f"compare_ops.py: {path}:{ln}: bad JSON: {e}")
                if r.get("bench") != "op":
                    continue
                key = (r["op"], tuple(r["shape"]), r["threads"])
                if key not in rows:
                    rows[key] = {}
                    order.append(key)
                rows[key][r["impl"]] = r
    return rows, order


NOISE = 0.9  # below this speedup a row is clearly slower


def ratio(a, b):
    return a / b if b > 0 else float("inf")


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--min", action="store_true",
                   help="compare total_min_ms (minimum over iterations) instead of the median")
    p.add_argument("files", nargs="+", metavar="FILE.jsonl", help="JSON lines; '-' is stdin")
    args = p.parse_args()
    tkey = "total_min_ms" if args.min else "total_ms"
    rows, order = load(args.files)
    print(f"totals and speedup use {'the minimum' if args.min else 'the median'} over iterations")
    hdr = (f"{'op':<14} {'shape':<15} {'thr':>3} {'md fwd':>8} {'md bwd':>8} {'md total':>9} "
           f"{'pt fwd':>8} {'pt bwd':>8} {'pt total':>9} {'speedup':>8} {'fwd x':>6} {'bwd x':>6}")
    print(hdr)
    print("-" * len(hdr))
    slower = []
    md_sum = pt_sum = 0.0
    for key in order:
        op, shape, thr = key
        md, pt = rows[key].get("mdenas"), rows[key].get("pytorch")
        sh = "x".join(str(d) for d in shape)
        if md is None or pt is None:
            have = md or pt
            print(f"{op:<14} {sh:<15} {thr:>3}  (only {have['impl']}: total {have[tkey]:.3f} ms)")
            continue
        if tkey not in md or tkey not in pt:
            sys.exit(f"compare_ops.py: {op} {sh}: no {tkey} in the input (older results?)")
        sp = ratio(pt[tkey], md[tkey])
        fx = ratio(pt["fwd_ms"], md["fwd_ms"])
        bx = ratio(pt["bwd_ms"], md["bwd_ms"])
        md_sum += md[tkey]
        pt_sum += pt[tkey]
        mark = "  SLOWER" if sp < NOISE else ("  ~" if sp < 1.0 else "")
        print(f"{op:<14} {sh:<15} {thr:>3} {md['fwd_ms']:>8.3f} {md['bwd_ms']:>8.3f} "
              f"{md[tkey]:>9.3f} {pt['fwd_ms']:>8.3f} {pt['bwd_ms']:>8.3f} "
              f"{pt[tkey]:>9.3f} {sp:>7.2f}x {fx:>6.2f} {bx:>6.2f}{mark}")
        if sp < 1.0:
            slower.append((sp, op, sh, thr))
    print("-" * len(hdr))
    if md_sum > 0:
        print(f"sum of matched totals: mdenas {md_sum:.3f} ms, pytorch {pt_sum:.3f} ms, "
              f"{ratio(pt_sum, md_sum):.2f}x")
    clear = [r for r in sorted(slower) if r[0] < NOISE]
    near = [r for r in sorted(slower) if r[0] >= NOISE]
    if clear:
        print(f"mdenas SLOWER than PyTorch (< {NOISE}x, {len(clear)} rows, worst first):")
        for sp, op, sh, thr in clear:
            print(f"  {op:<14} {sh:<15} threads {thr}: {sp:.2f}x")
    if near:
        print(f"mdenas slightly slower ([{NOISE}, 1.0)x, {len(near)} rows, may be noise):")
        for sp, op, sh, thr in near:
            print(f"  {op:<14} {sh:<15} threads {thr}: {sp:.2f}x")
    if not slower:
        print("mdenas is not slower than PyTorch on any matched row")


if __name__ == "__main__":
    main()
