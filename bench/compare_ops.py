#!/usr/bin/python3
"""Join bench_ops and bench_ops_torch.py JSON lines into a side-by-side table.

usage: compare_ops.py FILE.jsonl [FILE.jsonl ...]   ('-' reads stdin)

Rows are matched on (op, shape, threads). speedup = pytorch total / mdenas
total, so > 1 means mdenas is faster; fwd x and bwd x are the same ratio for
the forward and backward parts. Rows where mdenas is slower are marked and
listed at the end. Standard library only.
"""
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


def ratio(a, b):
    return a / b if b > 0 else float("inf")


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    rows, order = load(sys.argv[1:])
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
            print(f"{op:<14} {sh:<15} {thr:>3}  (only {have['impl']}: total {have['total_ms']:.3f} ms)")
            continue
        sp = ratio(pt["total_ms"], md["total_ms"])
        fx = ratio(pt["fwd_ms"], md["fwd_ms"])
        bx = ratio(pt["bwd_ms"], md["bwd_ms"])
        md_sum += md["total_ms"]
        pt_sum += pt["total_ms"]
        mark = "  SLOWER" if sp < 1.0 else ""
        print(f"{op:<14} {sh:<15} {thr:>3} {md['fwd_ms']:>8.3f} {md['bwd_ms']:>8.3f} "
              f"{md['total_ms']:>9.3f} {pt['fwd_ms']:>8.3f} {pt['bwd_ms']:>8.3f} "
              f"{pt['total_ms']:>9.3f} {sp:>7.2f}x {fx:>6.2f} {bx:>6.2f}{mark}")
        if sp < 1.0:
            slower.append((sp, op, sh, thr))
    print("-" * len(hdr))
    if md_sum > 0:
        print(f"sum of matched totals: mdenas {md_sum:.3f} ms, pytorch {pt_sum:.3f} ms, "
              f"{ratio(pt_sum, md_sum):.2f}x")
    if slower:
        print(f"mdenas slower than PyTorch ({len(slower)} rows, worst first):")
        for sp, op, sh, thr in sorted(slower):
            print(f"  {op:<14} {sh:<15} threads {thr}: {sp:.2f}x")
    else:
        print("mdenas is not slower than PyTorch on any matched row")


if __name__ == "__main__":
    main()
