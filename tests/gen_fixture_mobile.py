#!/usr/bin/python3
"""PyTorch reference for the mobile search space (tests/test_mobile.c).

Written from MDENAS.md's mobile section and ProxylessNAS's modules, not from
the C builder: stem ConvLayer (3x3 stride 2, BN, ReLU6), a first MBConv block
(expansion 1, no shortcut), searchable MBConv blocks (1x1 expand + BN + ReLU6
unless e = 1, depthwise kxk stride s pad k/2 + BN + ReLU6, 1x1 project + BN,
identity shortcut at stride 1 with equal widths; `zero` leaves only the
shortcut), a feature-mix ConvLayer, global average pool, linear classifier.
BN in training mode, eps 1e-3, affine.

The fixture holds the supernet's parameter table (every candidate of every
block: "t/<name>" = its shape), one sampled architecture, weights named as the
C arena names them, the input, labels, the loss with label smoothing 0.1,
the logits, every gradient, and the loss after one SGD step with Nesterov
momentum 0.9, weight decay 4e-5 on all but BN gamma/beta, lr 0.1.

    /usr/bin/python3 tests/gen_fixture_mobile.py [OUT_DIR]
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_fixtures import FixtureWriter  # noqa: E402

CAND = [(3, 3), (3, 6), (5, 3), (5, 6), (7, 3), (7, 6), None]  # None: zero
NAMES = [f"{k}x{k}_MBConv{e}" if (k, e) != (0, 0) else "zero" for k, e in
         [c if c else (0, 0) for c in CAND]]
CFG = dict(in_c=3, hw=32, classes=6, batch=4, stem=8, first=8,
           stages=[(8, 2, 1), (16, 2, 2), (24, 1, 2)], mix=32)
# one op per searchable block (5 of them): a zero on the second
ARCH = ["5x5_MBConv3", "zero", "7x7_MBConv6", "3x3_MBConv3", "3x3_MBConv6"]
EPS = 1e-3


def blocks():
    """(in, out, stride, shortcut) of every block, the first one included."""
    out = [(CFG["stem"], CFG["first"], 1, False)]
    c = CFG["first"]
    for w, n, s in CFG["stages"]:
        for b in range(n):
            st = s if b == 0 else 1
            out.append((c, w, st, st == 1 and c == w))
            c = w
    return out


class Net:
    def __init__(self, gen):
        self.gen, self.w, self.order, self.table = gen, {}, [], []

    def weight(self, name, shape, kind):
        self.table.append((name, shape))
        if self.gen is None:
            return None
        if name not in self.w:
            if kind == "conv":
                t = torch.randn(shape, generator=self.gen) * (2.0 / (shape[0] * shape[2] * shape[3])) ** 0.5
            elif kind == "gamma":
                t = 1 + 0.2 * torch.randn(shape, generator=self.gen)
            elif kind == "beta":
                t = 0.1 * torch.randn(shape, generator=self.gen)
            else:  # linear
                t = (torch.rand(shape, generator=self.gen) * 2 - 1) / shape[-1] ** 0.5
            self.w[name] = t.requires_grad_()
            self.order.append(name)
        return self.w[name]

    def conv(self, name, x, cin, cout, k, stride, groups=1):
        w = self.weight(name + ".w", (cout, cin // groups, k, k), "conv")
        return None if x is None else F.conv2d(x, w, None, stride, k // 2, 1, groups)

    def bn(self, name, x, c):
        g = self.weight(name + ".gamma", (c,), "gamma")
        b = self.weight(name + ".beta", (c,), "beta")
        return None if x is None else F.batch_norm(x, None, None, g, b, True, 0.1, EPS)

    def conv_bn_act(self, name, x, cin, cout, k, stride):
        y = self.bn(name + ".bn", self.conv(name + ".conv", x, cin, cout, k, stride), cout)
        return None if y is None else F.relu6(y)

    def mbconv(self, name, x, cin, cout, k, e, stride):
        mid = cin * e
        if e != 1:
            x = self.conv_bn_act(name + ".inverted_bottleneck", x, cin, mid, 1, 1)
        x = self.conv(name + ".depth_conv.conv", x, mid, mid, k, stride, groups=mid)
        x = self.bn(name + ".depth_conv.bn", x, mid)
        x = None if x is None else F.relu6(x)
        x = self.conv(name + ".point_linear.conv", x, mid, cout, 1, 1)
        return self.bn(name + ".point_linear.bn", x, cout)

    def forward(self, x, arch):
        """arch: an op name per searchable block, or None to declare every candidate."""
        x = self.conv_bn_act("first_conv", x, CFG["in_c"], CFG["stem"], 3, 2)
        for i, (cin, cout, s, sc) in enumerate(blocks()):
            if i == 0:
                x = self.mbconv("blocks.0.3x3_MBConv1", x, cin, cout, 3, 1, s)
                continue
            ops = [arch[i - 1]] if arch else [n for n, c in zip(NAMES, CAND) if c or sc]
            y = x
            for op in ops:
                if op == "zero":
                    continue
                k, e = CAND[NAMES.index(op)]
                y = self.mbconv(f"blocks.{i}.{op}", x, cin, cout, k, e, s)
                if sc and y is not None:
                    y = y + x
            x = y
        x = self.conv_bn_act("feature_mix_layer", x, CFG["stages"][-1][0], CFG["mix"], 1, 1)
        w = self.weight("classifier.w", (CFG["classes"], CFG["mix"]), "linear")
        b = self.weight("classifier.b", (CFG["classes"],), "linear")
        return None if x is None else F.linear(x.mean((2, 3)), w, b)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "fixtures")
    torch.manual_seed(0)
    table = Net(None)
    table.forward(None, None)
    gen = torch.Generator().manual_seed(11)
    net = Net(gen)
    x = torch.randn(CFG["batch"], CFG["in_c"], CFG["hw"], CFG["hw"], generator=gen)
    labels = torch.tensor([0, 5, 2, 3])
    logits = net.forward(x, ARCH)
    loss = F.cross_entropy(logits, labels, label_smoothing=0.1)
    loss.backward()
    fx = FixtureWriter()
    flat = [CFG["in_c"], CFG["hw"], CFG["classes"], CFG["batch"], CFG["stem"], CFG["first"],
            CFG["mix"], len(CFG["stages"])]
    for w, n, s in CFG["stages"]:
        flat += [w, n, s]
    fx.add("cfg", torch.tensor(flat, dtype=torch.float32))
    fx.add("arch", torch.tensor([NAMES.index(o) for o in ARCH], dtype=torch.float32))
    for name, shape in table.table:
        fx.add("t/" + name, torch.tensor(shape, dtype=torch.float32))
    fx.add_network(x, labels, loss, logits, net.w, net.order)
    decay = [net.w[n] for n in net.order if not n.endswith((".gamma", ".beta"))]
    no_decay = [net.w[n] for n in net.order if n.endswith((".gamma", ".beta"))]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 4e-5},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=0.1, momentum=0.9, nesterov=True)
    opt.step()
    with torch.no_grad():
        loss2 = F.cross_entropy(net.forward(x, ARCH), labels, label_smoothing=0.1)
    fx.add("loss2", loss2)
    path = os.path.join(out, "mobile_net.bin")
    fx.save(path)
    print(f"{path}: {len(table.table)} supernet tensors, {len(net.order)} sampled, loss "
          f"{loss.item():.6f}, after SGD {loss2.item():.6f}")


if __name__ == "__main__":
    main()
