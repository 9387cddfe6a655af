#!/usr/bin/python3
"""One training step of the CIFAR DARTS search network in PyTorch CPU, over
the sampled architectures bench_step wrote (--archs FILE), the same way:
zero grads, forward, cross-entropy, backward, clip_grad_norm_(5), SGD
(lr 0.025, momentum 0.9, wd 3e-4). The network is the one in
tests/gen_fixture_net.py (checked against mdenas there), as nn.Modules.

    /usr/bin/python3 bench/bench_step_torch.py --archs archs.json --batch 64 --threads 2
"""
import argparse
import json
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def bn(c, affine=False):
    return nn.BatchNorm2d(c, affine=affine)


class ReLUConvBN(nn.Sequential):
    def __init__(self, ci, co):
        super().__init__(nn.ReLU(), nn.Conv2d(ci, co, 1, bias=False), bn(co))


class FactorizedReduce(nn.Module):
    def __init__(self, ci, co):
        super().__init__()
        self.c1 = nn.Conv2d(ci, co // 2, 1, 2, bias=False)
        self.c2 = nn.Conv2d(ci, co // 2, 1, 2, bias=False)
        self.bn = bn(co)

    def forward(self, x):
        x = F.relu(x)
        return self.bn(torch.cat([self.c1(x), self.c2(x[:, :, 1:, 1:])], dim=1))


def sep_conv(c, k, s):
    return nn.Sequential(
        nn.ReLU(), nn.Conv2d(c, c, k, s, k // 2, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False), bn(c),
        nn.ReLU(), nn.Conv2d(c, c, k, 1, k // 2, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False), bn(c))


def dil_conv(c, k, s):
    return nn.Sequential(
        nn.ReLU(), nn.Conv2d(c, c, k, s, 2 if k == 3 else 4, dilation=2, groups=c, bias=False),
        nn.Conv2d(c, c, 1, bias=False), bn(c))


class Pool(nn.Module):
    def __init__(self, kind, c, s):
        super().__init__()
        self.pool = (nn.MaxPool2d(3, s, 1) if kind == "max"
                     else nn.AvgPool2d(3, s, 1, count_include_pad=False))
        self.bn = bn(c)

    def forward(self, x):
        return self.bn(self.pool(x))


def make_op(name, c, s):
    if name == "max_pool_3x3":
        return Pool("max", c, s)
    if name == "avg_pool_3x3":
        return Pool("avg", c, s)
    if name == "skip_connect":
        return nn.Identity() if s == 1 else FactorizedReduce(c, c)
    if name.startswith("sep_conv"):
        return sep_conv(c, int(name[-1]), s)
    if name.startswith("dil_conv"):
        return dil_conv(c, int(name[-1]), s)
    raise ValueError(name)


class Cell(nn.Module):
    def __init__(self, arch, cpp, cp, c, reduction, reduction_prev, nodes=4):
        super().__init__()
        self.pre0 = FactorizedReduce(cpp, c) if reduction_prev else ReLUConvBN(cpp, c)
        self.pre1 = ReLUConvBN(cp, c)
        self.nodes, self.c, self.reduction = nodes, c, reduction
        self.edges, self.inputs = nn.ModuleList(), []
        e = 0
        for i in range(nodes):
            for j in range(i + 2):
                if arch[e] != "none":
                    self.edges.append(make_op(arch[e], c, 2 if reduction and j < 2 else 1))
                    self.inputs.append((i, j))
                e += 1

    def forward(self, s0, s1):
        states = [self.pre0(s0), self.pre1(s1)]
        k = 0
        for i in range(self.nodes):
            terms = []
            while k < len(self.inputs) and self.inputs[k][0] == i:
                terms.append(self.edges[k](states[self.inputs[k][1]]))
                k += 1
            if terms:
                states.append(sum(terms))
            else:
                n, _, h, w = states[1].shape
                if self.reduction:
                    h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
                states.append(states[1].new_zeros(n, self.c, h, w))
        return torch.cat(states[2:], dim=1)


class Network(nn.Module):
    def __init__(self, arch, C=16, cells=8, classes=10, in_c=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_c, 3 * C, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(3 * C))
        cpp, cp, c, rp = 3 * C, 3 * C, C, False
        self.cells = nn.ModuleList()
        for i in range(cells):
            red = i in (cells // 3, 2 * cells // 3)
            if red:
                c *= 2
            self.cells.append(Cell(arch["reduce" if red else "normal"], cpp, cp, c, red, rp))
            cpp, cp, rp = cp, 4 * c, red
        self.classifier = nn.Linear(cp, classes)

    def forward(self, x):
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self.classifier(s1.mean(dim=(2, 3)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", required=True, help="JSON list written by bench_step --archs-out")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)  # as mdenas does: denormals cost ~100x on x86
    torch.manual_seed(1)
    dev = torch.device(a.device)
    gpu = a.device == "cuda"
    if gpu:  # PyTorch's defaults on GPU: cuDNN autotuning, TF32 for convolutions
        torch.backends.cudnn.benchmark = True
    archs = json.load(open(a.archs))
    x = (torch.rand(a.batch, 3, 32, 32) * 2 - 1).to(dev)
    y = torch.randint(0, 10, (a.batch,)).to(dev)
    total = 0.0
    for i, arch in enumerate(archs):
        net = Network(arch, a.channels, a.cells).to(dev)
        opt = torch.optim.SGD(net.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
        for s in range(a.warmup + a.steps):
            if s == a.warmup:
                t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
        if gpu:
            torch.cuda.synchronize()
        ms = 1e3 * (time.perf_counter() - t0) / a.steps
        total += ms
        print(json.dumps({"bench": "step", "impl": "pytorch", "arch": i, "batch": a.batch,
                          "threads": a.threads, "ms_per_step": round(ms, 3),
                          "img_per_s": round(1e3 * a.batch / ms, 1)}), flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    peak_gpu = torch.cuda.max_memory_allocated() / 1048576.0 if gpu else 0.0
    print(json.dumps({"bench": "step_summary", "impl": "pytorch", "device": a.device,
                      "peak_gpu_mb": round(peak_gpu, 1), "batch": a.batch,
                      "threads": a.threads, "archs": len(archs),
                      "ms_per_step": round(total / len(archs), 3),
                      "img_per_s": round(1e3 * a.batch * len(archs) / total, 1),
                      "peak_rss_mb": round(rss, 1), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
