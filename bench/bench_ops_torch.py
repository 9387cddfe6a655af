#!/usr/bin/python3
"""PyTorch side of bench_ops: the same ops, shapes, names and JSON lines.

Each (op, shape) is warmed up, then `iters` iterations time the forward
(building the autograd graph, as in training) and the backward
(y.backward(dy), which accumulates into .grad of the inputs and weights,
as mdenas backward ops accumulate) separately with time.perf_counter.
The medians are printed as one JSON line:
  {"bench":"op","impl":"pytorch","op":"dw3x3_s1","shape":[64,16,32,32],
   "threads":2,"fwd_ms":..,"bwd_ms":..,"total_ms":..}
total_ms is the median of the per-iteration fwd+bwd sums, total_min_ms their
minimum (steadier on a busy machine); "shape" is the shape of the op's
(first) input.

Run with /usr/bin/python3 (Debian python3-torch, CPU).
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def parse_args():
    p = argparse.ArgumentParser(
        description="Time forward and backward of each op of the CIFAR DARTS search network "
        "in PyTorch (CPU), at (C,HxW) in (16,32x32) (32,16x16) (64,8x8); one JSON line "
        "per (op, shape), the same schema as bench_ops.")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads (default 1; 0 = leave PyTorch's default)")
    p.add_argument("--iters", type=int, default=20, help="timed iterations, median taken (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first (default 3)")
    p.add_argument("--batch", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--filter", default=None, metavar="SUB", help="only ops whose name contains SUB")
    a = p.parse_args()
    if a.threads < 0 or a.iters < 1 or a.warmup < 0 or a.batch < 1:
        p.error("--threads >= 0, --iters >= 1, --warmup >= 0, --batch >= 1")
    return a


def rand(*shape, grad=False):
    t = torch.rand(*shape) * 2.0 - 1.0
    return t.requires_grad_(grad)


class Bench:
    def __init__(self, args):
        self.a = args

    def selected(self, op):
        return self.a.filter is None or self.a.filter in op

    def run(self, op, shape, fwd, dy):
        """fwd() -> output tensor (with graph); dy: the gradient fed to backward."""
        tf, tb, tt = [], [], []
        for it in range(self.a.warmup + self.a.iters):
            t0 = time.perf_counter()
            y = fwd()
            t1 = time.perf_counter()
            y.backward(dy)
            t2 = time.perf_counter()
            del y
            if it >= self.a.warmup:
                tf.append((t1 - t0) * 1e3)
                tb.append((t2 - t1) * 1e3)
                tt.append((t2 - t0) * 1e3)
        rec = {"bench": "op", "impl": "pytorch", "op": op, "shape": list(shape),
               "threads": self.a.threads,
               "fwd_ms": round(statistics.median(tf), 4),
               "bwd_ms": round(statistics.median(tb), 4),
               "total_ms": round(statistics.median(tt), 4),
               "total_min_ms": round(min(tt), 4)}
        print(json.dumps(rec, separators=(",", ":")), flush=True)

    # ---- cases -----------------------------------------------------------

    def conv(self, op, n, cin, h, cout, k, stride, pad, dil, groups, want_dx=True):
        if not self.selected(op):
            return
        x = rand(n, cin, h, h, grad=want_dx)
        w = rand(cout, cin // groups, k, k, grad=True)
        with torch.no_grad():
            oh = F.conv2d(x, w, None, stride, pad, dil, groups).shape
        dy = rand(*oh)
        self.run(op, x.shape, lambda: F.conv2d(x, w, None, stride, pad, dil, groups), dy)

    def bn(self, n, c, h):
        op = "bn_train"
        if not self.selected(op):
            return
        x = rand(n, c, h, h, grad=True)
        # Search network: nn.BatchNorm2d(C, affine=False), running stats tracked.
        rm, rv = torch.zeros(c), torch.ones(c)
        dy = rand(n, c, h, h)
        self.run(op, x.shape,
                 lambda: F.batch_norm(x, rm, rv, None, None, True, 0.1, 1e-5), dy)

    def relu(self, n, c, h):
        op = "relu"
        if not self.selected(op):
            return
        x = rand(n, c, h, h, grad=True)
        dy = rand(n, c, h, h)
        self.run(op, x.shape, lambda: F.relu(x), dy)

    def pool(self, op, kind, stride, n, c, h):
        if not self.selected(op):
            return
        x = rand(n, c, h, h, grad=True)
        if kind == "max":
            f = lambda: F.max_pool2d(x, 3, stride, 1)
        else:
            f = lambda: F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)
        with torch.no_grad():
            oshape = f().shape
        self.run(op, x.shape, f, rand(*oshape))

    def add(self, n, c, h):
        op = "add"
        if not self.selected(op):
            return
        a = rand(n, c, h, h, grad=True)
        b = rand(n, c, h, h, grad=True)
        dy = rand(n, c, h, h)
        self.run(op, a.shape, lambda: a + b, dy)

    def concat(self, n, c, h):
        op = "concat4"
        if not self.selected(op):
            return
        xs = [rand(n, c, h, h, grad=True) for _ in range(4)]
        dy = rand(n, 4 * c, h, h)
        self.run(op, xs[0].shape, lambda: torch.cat(xs, 1), dy)

    def gap(self, n, c, h):
        op = "gap"
        if not self.selected(op):
            return
        x = rand(n, c, h, h, grad=True)
        dy = rand(n, c)
        # DARTS: nn.AdaptiveAvgPool2d(1) then flatten.
        self.run(op, x.shape, lambda: F.adaptive_avg_pool2d(x, 1).view(n, c), dy)

    def linear(self, n, fin, fout):
        op = "linear"
        if not self.selected(op):
            return
        x = rand(n, fin, grad=True)
        w = rand(fout, fin, grad=True)
        b = rand(fout, grad=True)
        dy = rand(n, fout)
        self.run(op, x.shape, lambda: F.linear(x, w, b), dy)

    def softmax_ce(self, n, k):
        op = "softmax_ce"
        if not self.selected(op):
            return
        x = rand(n, k, grad=True)
        labels = torch.arange(n, dtype=torch.long) % k
        self.run(op, x.shape, lambda: F.cross_entropy(x, labels), torch.tensor(1.0))


def main():
    args = parse_args()
    torch.manual_seed(0)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"bench_ops_torch: torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"mkldnn {torch.backends.mkldnn.is_available()}, batch {args.batch}, "
          f"warmup {args.warmup}, iters {args.iters}", file=sys.stderr)
    b = Bench(args)
    n = args.batch
    b.conv("conv3x3_stem", n, 3, 32, 48, 3, 1, 1, 1, 1, want_dx=False)
    for c, h in ((16, 32), (32, 16), (64, 8)):
        b.conv("dw3x3_s1", n, c, h, c, 3, 1, 1, 1, c)
        b.conv("dw5x5_s1", n, c, h, c, 5, 1, 2, 1, c)
        b.conv("dw3x3_s2", n, c, h, c, 3, 2, 1, 1, c)
        b.conv("dw5x5_s2", n, c, h, c, 5, 2, 2, 1, c)
        b.conv("dil3x3_d2_s1", n, c, h, c, 3, 1, 2, 2, c)
        b.conv("dil5x5_d2_s1", n, c, h, c, 5, 1, 4, 2, c)
        b.conv("dil3x3_d2_s2", n, c, h, c, 3, 2, 2, 2, c)
        b.conv("dil5x5_d2_s2", n, c, h, c, 5, 2, 4, 2, c)
        b.conv("pw1x1", n, c, h, c, 1, 1, 0, 1, 1)
        b.conv("pw1x1_s2", n, c, h, c // 2, 1, 2, 0, 1, 1)
        b.bn(n, c, h)
        b.relu(n, c, h)
        b.pool("maxpool3x3_s1", "max", 1, n, c, h)
        b.pool("avgpool3x3_s1", "avg", 1, n, c, h)
        b.pool("maxpool3x3_s2", "max", 2, n, c, h)
        b.pool("avgpool3x3_s2", "avg", 2, n, c, h)
        b.add(n, c, h)
        b.concat(n, c, h)
    b.gap(n, 256, 8)
    b.linear(n, 256, 10)
    b.softmax_ce(n, 10)


if __name__ == "__main__":
    main()
