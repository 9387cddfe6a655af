#!/usr/bin/python3
"""PyTorch reference for a whole sampled DARTS search network (tests/test_supernet.c).

Written independently of the C builder from MDENAS.md / the DARTS search code
(model_search.py): stem conv3x3 + BN(affine), cells with ReLU-conv1x1-BN or
FactorizedReduce preprocessing, one op per edge, node = sum of its edges,
cell output = concat of the nodes, reductions at cells//3 and 2*cells//3,
global average pool, linear. Search BNs are affine=False, training mode.

Weights are named as the C arena names them, drawn here, and stored with the
input batch, the labels, the loss, the logits and every weight's gradient;
then one SGD step (lr 0.1, momentum 0.9, wd 3e-4) and the second loss.

    /usr/bin/python3 tests/gen_fixture_net.py [OUT_DIR]
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_fixtures import FixtureWriter  # noqa: E402

OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
       "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
CFG = dict(in_c=3, hw=8, classes=5, cells=3, C=4, nodes=4, batch=4)
# node0: e0,e1; node1: e2..e4; node2: e5..e8; node3: e9..e13 (inputs in0, in1, n0, n1, n2)
NORMAL = ["sep_conv_3x3", "skip_connect",
          "none", "none", "skip_connect",                       # node1 is node0 (an alias)
          "skip_connect", "max_pool_3x3", "dil_conv_5x5", "avg_pool_3x3",
          "dil_conv_3x3", "sep_conv_5x5", "skip_connect", "none", "skip_connect"]
REDUCE = ["none", "none",                                       # node0 is zero
          "skip_connect", "max_pool_3x3", "avg_pool_3x3",
          "sep_conv_3x3", "dil_conv_5x5", "none", "skip_connect",
          "sep_conv_5x5", "dil_conv_3x3", "max_pool_3x3", "avg_pool_3x3", "skip_connect"]


class Net:
    def __init__(self, gen):
        self.gen = gen
        self.w = {}        # name -> leaf tensor (requires grad)
        self.order = []

    def weight(self, name, shape):
        if name not in self.w:
            fan_in = 1
            for d in shape[1:]:
                fan_in *= d
            bound = 1.0 / fan_in ** 0.5
            t = (torch.rand(shape, generator=self.gen) * 2 - 1) * bound
            self.w[name] = t.requires_grad_()
            self.order.append(name)
        return self.w[name]

    def conv(self, name, x, c_out, k, stride=1, pad=0, dil=1, groups=1):
        w = self.weight(name + ".w", (c_out, x.shape[1] // groups, k, k))
        return F.conv2d(x, w, None, stride, pad, dil, groups)

    @staticmethod
    def bn(x, gamma=None, beta=None):
        return F.batch_norm(x, None, None, gamma, beta, training=True, momentum=0.1, eps=1e-5)

    def relu_conv_bn(self, name, x, c_out):
        return self.bn(self.conv(name + ".conv", F.relu(x), c_out, 1))

    def fact_reduce(self, name, x, c_out):
        x = F.relu(x)
        a = self.conv(name + ".conv1", x, c_out // 2, 1, 2)
        b = self.conv(name + ".conv2", x[:, :, 1:, 1:], c_out // 2, 1, 2)
        return self.bn(torch.cat([a, b], dim=1))

    def sep_conv(self, name, x, c, stride, k):
        x = self.conv(name + ".dw1", F.relu(x), c, k, stride, k // 2, 1, c)
        x = self.bn(self.conv(name + ".pw1", x, c, 1))
        x = self.conv(name + ".dw2", F.relu(x), c, k, 1, k // 2, 1, c)
        return self.bn(self.conv(name + ".pw2", x, c, 1))

    def dil_conv(self, name, x, c, stride, k):
        x = self.conv(name + ".dw", F.relu(x), c, k, stride, 2 if k == 3 else 4, 2, c)
        return self.bn(self.conv(name + ".pw", x, c, 1))

    def op(self, name, op, x, c, stride):
        if op == "max_pool_3x3":
            return self.bn(F.max_pool2d(x, 3, stride, 1))
        if op == "avg_pool_3x3":
            return self.bn(F.avg_pool2d(x, 3, stride, 1, count_include_pad=False))
        if op == "skip_connect":
            return x if stride == 1 else self.fact_reduce(name, x, c)
        if op.startswith("sep_conv"):
            return self.sep_conv(name, x, c, stride, int(op[-1]))
        if op.startswith("dil_conv"):
            return self.dil_conv(name, x, c, stride, int(op[-1]))
        raise ValueError(op)

    def cell(self, i, s0, s1, c, reduction, reduction_prev, arch):
        pre = f"cell{i}.pre0"
        s0 = self.fact_reduce(pre, s0, c) if reduction_prev else self.relu_conv_bn(pre, s0, c)
        s1 = self.relu_conv_bn(f"cell{i}.pre1", s1, c)
        states, e = [s0, s1], 0
        n, h, w = s1.shape[0], s1.shape[2], s1.shape[3]
        if reduction:
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        for node in range(CFG["nodes"]):
            terms = []
            for j in range(node + 2):
                op = arch[e]
                if op != "none":
                    stride = 2 if reduction and j < 2 else 1
                    terms.append(self.op(f"cell{i}.edge{e}.{op}", op, states[j], c, stride))
                e += 1
            states.append(sum(terms) if terms else torch.zeros(n, c, h, w))
        return torch.cat(states[2:], dim=1)

    def forward(self, x):
        C, cells = CFG["C"], CFG["cells"]
        s = self.conv("stem.conv", x, 3 * C, 3, 1, 1)
        g = self.weight("stem.bn.gamma", (3 * C,))
        b = self.weight("stem.bn.beta", (3 * C,))
        s = self.bn(s, g, b)
        s0 = s1 = s
        c, reduction_prev = C, False
        for i in range(cells):
            reduction = i in (cells // 3, 2 * cells // 3)
            if reduction:
                c *= 2
            out = self.cell(i, s0, s1, c, reduction, reduction_prev,
                            REDUCE if reduction else NORMAL)
            s0, s1, reduction_prev = s1, out, reduction
        v = s1.mean(dim=(2, 3))
        wc = self.weight("classifier.w", (CFG["classes"], v.shape[1]))
        bc = self.weight("classifier.b", (CFG["classes"],))
        return F.linear(v, wc, bc)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "fixtures")
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(2024)
    net = Net(gen)
    x = torch.randn(CFG["batch"], CFG["in_c"], CFG["hw"], CFG["hw"], generator=gen)
    labels = torch.randint(0, CFG["classes"], (CFG["batch"],), generator=gen)
    net.forward(x)  # creates the weights
    with torch.no_grad():  # an affine BN away from the identity
        net.w["stem.bn.gamma"].uniform_(0.5, 1.5, generator=gen)
        net.w["stem.bn.beta"].uniform_(-0.5, 0.5, generator=gen)
    logits = net.forward(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()

    fx = FixtureWriter()
    fx.add("cfg", torch.tensor([CFG[k] for k in ("in_c", "hw", "classes", "cells", "C",
                                                   "nodes", "batch")], dtype=torch.float32))
    fx.add("arch/normal", torch.tensor([OPS.index(o) for o in NORMAL], dtype=torch.float32))
    fx.add("arch/reduce", torch.tensor([OPS.index(o) for o in REDUCE], dtype=torch.float32))
    fx.add_network(x, labels, loss, logits, net.w, net.order)
    opt = torch.optim.SGD([net.w[n] for n in net.order], lr=0.1, momentum=0.9, weight_decay=3e-4)
    opt.step()
    opt.zero_grad()
    loss2 = F.cross_entropy(net.forward(x), labels)
    fx.add("loss2", loss2.detach())
    fx.save(os.path.join(out, "darts_net.bin"))


if __name__ == "__main__":
    main()
