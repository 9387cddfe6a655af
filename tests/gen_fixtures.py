#!/usr/bin/python3
"""Write the PyTorch reference fixtures that tests/test_ops_torch.c and
tests/test_tiny_net.c compare the backend against.

Run from anywhere with the system interpreter (Debian python3-torch, CPU):

    /usr/bin/python3 tests/gen_fixtures.py            # writes tests/fixtures/*.bin
    /usr/bin/python3 tests/gen_fixtures.py OUT_DIR    # somewhere else

Every section draws from its own seeded torch.Generator (and the tiny net's
default initialisation from torch.manual_seed), so a rerun with the same torch
version rewrites the files byte for byte. Inputs are drawn in
float32 (what the C side gets); the reference is computed in float64 from
those float32 values and stored rounded to float32, so the only difference
left to the C side is its own float32 arithmetic.

File format (all little-endian), read by tests/fixture.c:

    char  magic[4] = "MDFX"
    u32   version  = 1
    u32   count                     number of records
    count records, each:
        u32   name_len              bytes, no terminating NUL, < 96
        char  name[name_len]        "<case>/<tensor>", e.g. "dense3x3_s1/dx"
        u32   ndim                  0..4 (0: a scalar, one value)
        i32   dim[ndim]
        f32   data[prod(dim)]       row-major

Integers (shapes of a case, labels, counts) are stored as exact float32
values. A case's "desc" record holds the op's parameters, documented where
the case is written below.
"""
import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

MAGIC = b"MDFX"
VERSION = 1
NAME_MAX = 95
F64 = torch.float64


class FixtureWriter:
    def __init__(self):
        self.records = []
        self.names = set()

    def add(self, name, value):
        t = torch.as_tensor(value).detach().to(torch.float32).contiguous().clone()
        if t.dim() > 4:
            raise ValueError(f"{name}: {t.dim()} dims, at most 4")
        if len(name.encode()) > NAME_MAX or name in self.names:
            raise ValueError(f"{name}: name too long or repeated")
        self.names.add(name)
        self.records.append((name, t))

    def add_network(self, x, labels, loss, logits, weights, order):
        """A whole network's case: input, labels, loss, logits, then every weight
        (w/<name>) and its gradient (g/<name>) in declaration order."""
        self.add("x", x)
        self.add("labels", labels.float())
        self.add("loss", loss.detach())
        self.add("logits", logits.detach())
        for name in order:
            self.add("w/" + name, weights[name].detach())
            self.add("g/" + name, weights[name].grad)

    def save(self, path):
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(MAGIC)
            f.write(struct.pack("<II", VERSION, len(self.records)))
            for name, t in self.records:
                nb = name.encode()
                f.write(struct.pack("<I", len(nb)))
                f.write(nb)
                f.write(struct.pack("<I", t.dim()))
                f.write(struct.pack(f"<{t.dim()}i", *t.shape))
                f.write(t.numpy().astype("<f4").tobytes())
        os.replace(tmp, path)
        print(f"{path}: {len(self.records)} records, {os.path.getsize(path)} bytes")


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(g, *shape, scale=1.0, shift=0.0):
    """float32 normal values, the inputs both sides see."""
    return (torch.randn(*shape, generator=g) * scale + shift).to(torch.float32)


def uniform(g, *shape, lo=-1.0, hi=1.0):
    return (torch.rand(*shape, generator=g) * (hi - lo) + lo).to(torch.float32)


def leaf(t):
    """A float64 copy of a float32 input that records gradients."""
    return t.to(F64).requires_grad_(True)


# ---- convolution --------------------------------------------------------------

def conv_case(w, g, name, n, cin, h, wd, cout, k, stride, pad, dil, groups):
    """desc = [n, c_in, h, w, c_out, kh, kw, stride, pad, dilation, groups]."""
    x = randn(g, n, cin, h, wd)
    weight = randn(g, cout, cin // groups, k, k, scale=1.0 / math.sqrt(cin // groups * k * k))
    x64, w64 = leaf(x), leaf(weight)
    y = F.conv2d(x64, w64, None, stride, pad, dil, groups)
    dy = randn(g, *y.shape)
    y.backward(dy.to(F64))
    w.add(f"{name}/desc", [n, cin, h, wd, cout, k, k, stride, pad, dil, groups])
    w.add(f"{name}/x", x)
    w.add(f"{name}/w", weight)
    w.add(f"{name}/y", y)
    w.add(f"{name}/dy", dy)
    w.add(f"{name}/dx", x64.grad)
    w.add(f"{name}/dw", w64.grad)


def write_conv(out):
    w, g = FixtureWriter(), gen(101)
    cases = [
        # name            n cin h  w cout k s p d groups
        ("dense3x3_s1",   2, 4, 7, 6, 6, 3, 1, 1, 1, 1),
        ("dense3x3_s2",   2, 4, 8, 8, 6, 3, 2, 1, 1, 1),
        ("dw3x3_s1",      2, 5, 8, 7, 5, 3, 1, 1, 1, 5),
        ("dw3x3_s2",      2, 5, 8, 8, 5, 3, 2, 1, 1, 5),
        ("dw5x5_s1",      2, 5, 8, 7, 5, 5, 1, 2, 1, 5),
        ("dw5x5_s2",      2, 5, 8, 8, 5, 5, 2, 2, 1, 5),
        ("dil3x3_s1",     2, 5, 8, 7, 5, 3, 1, 2, 2, 5),
        ("dil3x3_s2",     2, 5, 8, 8, 5, 3, 2, 2, 2, 5),
        ("dil5x5_s1",     2, 5, 8, 7, 5, 5, 1, 4, 2, 5),
        ("dil5x5_s2",     2, 5, 8, 8, 5, 5, 2, 4, 2, 5),
        ("pw1x1",         2, 6, 6, 5, 8, 1, 1, 0, 1, 1),
        ("pw1x1_s2",      2, 6, 8, 8, 3, 1, 2, 0, 1, 1),
        ("pw1x1_s2_odd",  2, 6, 7, 7, 3, 1, 2, 0, 1, 1),
    ]
    for c in cases:
        conv_case(w, g, *c)
    w.save(os.path.join(out, "conv.bin"))


# ---- batch normalisation ------------------------------------------------------

def bn_case(w, g, name, affine, n, c, h, wd):
    """desc = [affine, momentum, eps]."""
    momentum, eps = 0.1, 1e-5
    x = randn(g, n, c, h, wd, scale=2.0, shift=0.5)
    x[:, 0] = x[:, 0] * 0.002  # batch variance ~1e-5: eps visibly matters
    gamma = randn(g, c, scale=0.3, shift=1.0)
    beta = randn(g, c, scale=0.5)
    rm0 = randn(g, c, scale=0.2)
    rv0 = uniform(g, c, lo=0.5, hi=1.5)
    rv0[1] = 2e-4  # and in eval mode
    dy = randn(g, n, c, h, wd)

    x64 = leaf(x)
    g64 = leaf(gamma) if affine else None
    b64 = leaf(beta) if affine else None
    rm, rv = rm0.to(F64).clone(), rv0.to(F64).clone()
    y = F.batch_norm(x64, rm, rv, g64, b64, training=True, momentum=momentum, eps=eps)
    y.backward(dy.to(F64))
    _, save_mean, save_invstd = torch.native_batch_norm(
        x.to(F64), None, None, None, None, True, momentum, eps)

    w.add(f"{name}/desc", [1 if affine else 0, momentum, eps])
    w.add(f"{name}/x", x)
    if affine:
        w.add(f"{name}/gamma", gamma)
        w.add(f"{name}/beta", beta)
    w.add(f"{name}/running_mean0", rm0)
    w.add(f"{name}/running_var0", rv0)
    w.add(f"{name}/dy", dy)
    w.add(f"{name}/train_y", y)
    w.add(f"{name}/train_save_mean", save_mean)
    w.add(f"{name}/train_save_invstd", save_invstd)
    w.add(f"{name}/train_running_mean1", rm)
    w.add(f"{name}/train_running_var1", rv)
    w.add(f"{name}/train_dx", x64.grad)
    if affine:
        w.add(f"{name}/train_dgamma", g64.grad)
        w.add(f"{name}/train_dbeta", b64.grad)

    x64 = leaf(x)
    g64 = leaf(gamma) if affine else None
    b64 = leaf(beta) if affine else None
    y = F.batch_norm(x64, rm0.to(F64), rv0.to(F64), g64, b64, training=False, eps=eps)
    y.backward(dy.to(F64))
    w.add(f"{name}/eval_y", y)
    w.add(f"{name}/eval_dx", x64.grad)
    if affine:
        w.add(f"{name}/eval_dgamma", g64.grad)
        w.add(f"{name}/eval_dbeta", b64.grad)


def write_bn(out):
    w, g = FixtureWriter(), gen(202)
    bn_case(w, g, "bn_affine", True, 2, 6, 5, 7)
    bn_case(w, g, "bn_plain", False, 3, 4, 6, 5)
    w.save(os.path.join(out, "bn.bin"))


# ---- elementwise ----------------------------------------------------------------

def write_elementwise(out):
    w, g = FixtureWriter(), gen(303)
    for name, fn in (("relu", F.relu), ("relu6", F.relu6)):
        x = randn(g, 2, 3, 5, 6, scale=4.0)
        flat = x.view(-1)
        flat[0:3] = 0.0  # the boundaries, where the gradient is 0 in torch
        flat[3:6] = 6.0
        flat[6:8] = -6.0
        x64 = leaf(x)
        y = fn(x64)
        dy = randn(g, *x.shape)
        y.backward(dy.to(F64))
        w.add(f"{name}/x", x)
        w.add(f"{name}/y", y)
        w.add(f"{name}/dy", dy)
        w.add(f"{name}/dx", x64.grad)
    x = randn(g, 2, 3, 4, 5)
    y0 = randn(g, 2, 3, 4, 5)
    w.add("add/x", x)
    w.add("add/y0", y0)
    w.add("add/y", x.to(F64) + y0.to(F64))
    w.save(os.path.join(out, "elementwise.bin"))


# ---- pooling ------------------------------------------------------------------------

def pool_case(w, g, name, kind, shape, k, stride, pad, ties=False):
    """desc = [kind (0 max, 1 avg), k, stride, pad]."""
    if ties:  # few distinct values: windows with several maxima
        x = torch.randint(0, 3, shape, generator=g).to(torch.float32)
    else:
        x = randn(g, *shape)
    x64 = leaf(x)
    if kind == 0:
        y = F.max_pool2d(x64, k, stride, pad)
    else:
        y = F.avg_pool2d(x64, k, stride, pad, count_include_pad=False)
    dy = randn(g, *y.shape)
    y.backward(dy.to(F64))
    w.add(f"{name}/desc", [kind, k, stride, pad])
    w.add(f"{name}/x", x)
    w.add(f"{name}/y", y)
    w.add(f"{name}/dy", dy)
    w.add(f"{name}/dx", x64.grad)


def write_pool(out):
    w, g = FixtureWriter(), gen(404)
    cases = [
        # name           kind shape         k  s  p  ties
        ("max_s1",       0, (2, 3, 6, 7), 3, 1, 1, False),
        ("max_s2",       0, (2, 3, 8, 8), 3, 2, 1, False),
        ("max_s2_odd",   0, (2, 3, 7, 5), 3, 2, 1, False),
        ("max_ties_s1",  0, (2, 3, 6, 6), 3, 1, 1, True),
        ("max_ties_s2",  0, (2, 3, 7, 7), 3, 2, 1, True),
        ("avg_s1",       1, (2, 3, 6, 7), 3, 1, 1, False),
        ("avg_s2",       1, (2, 3, 8, 8), 3, 2, 1, False),
        ("avg_s2_odd",   1, (2, 3, 7, 5), 3, 2, 1, False),
    ]
    for c in cases:
        pool_case(w, g, *c)
    x = randn(g, 2, 5, 4, 3)
    x64 = leaf(x)
    y = x64.mean(dim=(2, 3))
    dy = randn(g, 2, 5)
    y.backward(dy.to(F64))
    w.add("gap/x", x)
    w.add("gap/y", y)
    w.add("gap/dy", dy)
    w.add("gap/dx", x64.grad)
    w.save(os.path.join(out, "pool.bin"))


# ---- shape ops -----------------------------------------------------------------------

def write_shape(out):
    w, g = FixtureWriter(), gen(505)
    xs = [randn(g, 2, c, 5, 4) for c in (2, 3, 1)]
    x64 = [leaf(x) for x in xs]
    y = torch.cat(x64, dim=1)
    dy = randn(g, *y.shape)
    y.backward(dy.to(F64))
    for i in range(3):
        w.add(f"concat/x{i}", xs[i])
        w.add(f"concat/dx{i}", x64[i].grad)
    w.add("concat/y", y)
    w.add("concat/dy", dy)

    # desc = [oh, ow]; the output shape is that of y.
    for name, shape, oh, ow, hy, wy in (("slice_fr", (2, 3, 6, 6), 1, 1, 5, 5),
                                        ("slice_rect", (2, 3, 6, 7), 2, 1, 3, 4)):
        x = randn(g, *shape)
        x64 = leaf(x)
        y = x64[:, :, oh:oh + hy, ow:ow + wy]
        dy = randn(g, *y.shape)
        y.backward(dy.to(F64))
        w.add(f"{name}/desc", [oh, ow])
        w.add(f"{name}/x", x)
        w.add(f"{name}/y", y)
        w.add(f"{name}/dy", dy)
        w.add(f"{name}/dx", x64.grad)
    w.save(os.path.join(out, "shape.bin"))


# ---- classifier, loss ----------------------------------------------------------------

def first_argmax(row):
    best = 0
    for j in range(1, len(row)):
        if row[j] > row[best]:
            best = j
    return best


def last_argmax(row):
    best = 0
    for j in range(1, len(row)):
        if row[j] >= row[best]:
            best = j
    return best


def write_classifier(out):
    w, g = FixtureWriter(), gen(606)
    x = randn(g, 4, 7)
    weight = randn(g, 5, 7, scale=0.4)
    bias = randn(g, 5)
    x64, w64, b64 = leaf(x), leaf(weight), leaf(bias)
    y = F.linear(x64, w64, b64)
    dy = randn(g, 4, 5)
    y.backward(dy.to(F64))
    w.add("linear/x", x)
    w.add("linear/w", weight)
    w.add("linear/b", bias)
    w.add("linear/y", y)
    w.add("linear/y_nobias", F.linear(x.to(F64), weight.to(F64)))
    w.add("linear/dy", dy)
    w.add("linear/dx", x64.grad)
    w.add("linear/dw", w64.grad)
    w.add("linear/db", b64.grad)

    logits = randn(g, 6, 5, scale=3.0)
    logits[0] += 100.0  # a naive exp() overflows here
    logits[1, 2] = 90.0
    labels = torch.randint(0, 5, (6,), generator=g)
    l64 = leaf(logits)
    loss = F.cross_entropy(l64, labels)
    loss.backward()
    w.add("ce/logits", logits)
    w.add("ce/labels", labels)
    w.add("ce/loss", loss)
    w.add("ce/dlogits", l64.grad)

    # top-1 with ties: rows 0-3 have two equal maxima; labels point at the
    # first (counts) or the second (does not) so a last-on-ties bug changes the count.
    logits = torch.randint(0, 4, (16, 5), generator=g).to(torch.float32)
    labels = torch.randint(0, 5, (16,), generator=g)
    for r, (a, b, lab) in enumerate(((0, 3, 0), (1, 4, 4), (2, 3, 2), (0, 1, 1))):
        logits[r] = 0.0
        logits[r, a] = logits[r, b] = 5.0
        labels[r] = lab
    correct = int((logits.argmax(dim=1) == labels).sum())
    first = sum(first_argmax(logits[i].tolist()) == int(labels[i]) for i in range(16))
    last = sum(last_argmax(logits[i].tolist()) == int(labels[i]) for i in range(16))
    if correct != first or first == last or correct == 0 or correct == 16:
        raise RuntimeError("top1 fixture does not discriminate tie handling")
    w.add("top1/logits", logits)
    w.add("top1/labels", labels)
    w.add("top1/correct", correct)
    w.save(os.path.join(out, "classifier.bin"))


# ---- optimiser -----------------------------------------------------------------------

def write_optim(out):
    w, g = FixtureWriter(), gen(707)
    # SGD: params ~1 and grads ~0.1 so weight decay (a 1e-4 effect) and
    # momentum are both far above float32 rounding.
    lr, mom, wd, steps = 0.1, 0.9, 3e-4, 3
    p0 = [randn(g, 10), randn(g, 7)]
    params = [leaf(p) for p in p0]
    opt = torch.optim.SGD(params, lr=lr, momentum=mom, weight_decay=wd)
    w.add("sgd/hyper", [lr, mom, wd, steps])
    for i, p in enumerate(p0):
        w.add(f"sgd/p{i}_0", p)
    for s in range(1, steps + 1):
        grads = [randn(g, p.numel(), scale=0.1) for p in p0]
        for p, gr in zip(params, grads):
            p.grad = gr.to(F64).clone()
        opt.step()
        for i in range(2):
            w.add(f"sgd/g{i}_{s}", grads[i])
            w.add(f"sgd/p{i}_{s}", params[i])
    for i, p in enumerate(params):
        w.add(f"sgd/v{i}", opt.state[p]["momentum_buffer"])

    # clip_grad_norm_: one case that clips, one that does not.
    for name, max_norm in (("clip_on", 1.0), ("clip_off", 5.0)):
        grads = [randn(g, 10, scale=0.7), randn(g, 7, scale=0.7)]
        ps = [torch.zeros(10, dtype=F64, requires_grad=True),
              torch.zeros(7, dtype=F64, requires_grad=True)]
        for p, gr in zip(ps, grads):
            p.grad = gr.to(F64).clone()
        total = torch.nn.utils.clip_grad_norm_(ps, max_norm)
        if (name == "clip_on") != (float(total) > max_norm):
            raise RuntimeError(f"{name}: total norm {float(total)} on the wrong side")
        w.add(f"{name}/max_norm", max_norm)
        w.add(f"{name}/total", total)
        for i in range(2):
            w.add(f"{name}/g{i}", grads[i])
            w.add(f"{name}/g{i}_clipped", ps[i].grad)

    # CosineAnnealingLR, stepped as a training loop steps it: lr at t = 0..T.
    for name, lr0, lr_min, T in (("cosine_a", 0.025, 0.001, 10), ("cosine_b", 0.1, 0.0, 7)):
        p = torch.zeros(1, dtype=F64, requires_grad=True)
        opt = torch.optim.SGD([p], lr=lr0)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=T, eta_min=lr_min)
        lrs = []
        for _ in range(T + 1):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        w.add(f"{name}/hyper", [lr0, lr_min, T])
        w.add(f"{name}/lr", torch.tensor(lrs, dtype=F64))

    x = randn(g, 37)
    w.add("sumsq/x", x)
    w.add("sumsq/value", (x.to(F64) ** 2).sum())
    w.add("scale/x", x)
    w.add("scale/factor", 0.375)
    w.add("scale/y", x.to(F64) * 0.375)
    w.save(os.path.join(out, "optim.bin"))


# ---- tiny network --------------------------------------------------------------------

class TinyNet(nn.Module):
    """stem conv3x3 + BN, sep_conv_3x3 (MDENAS.md), max_pool 3x3 + BN, GAP, linear."""

    def __init__(self, c_in=3, c=8, classes=4):
        super().__init__()
        self.stem_conv = nn.Conv2d(c_in, c, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(c)
        self.sep_dw1 = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.sep_pw1 = nn.Conv2d(c, c, 1, bias=False)
        self.sep_bn1 = nn.BatchNorm2d(c, affine=False)
        self.sep_dw2 = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.sep_pw2 = nn.Conv2d(c, c, 1, bias=False)
        self.sep_bn2 = nn.BatchNorm2d(c, affine=False)
        self.pool_bn = nn.BatchNorm2d(c, affine=False)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        h = self.stem_bn(self.stem_conv(x))
        h = self.sep_bn1(self.sep_pw1(self.sep_dw1(F.relu(h))))
        h = self.sep_bn2(self.sep_pw2(self.sep_dw2(F.relu(h))))
        h = self.pool_bn(F.max_pool2d(h, 3, 1, 1))
        return self.fc(h.mean(dim=(2, 3)))


def train_tiny_net(w, prefix, init_state, x, labels, clip):
    """Train a copy of the net from init_state; records under `prefix`."""
    lr, mom, wd, steps = 0.05, 0.9, 3e-4, 5
    net = TinyNet(x.shape[1], 8, int(init_state["fc.weight"].shape[0])).to(F64)
    net.load_state_dict(init_state)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=mom, weight_decay=wd)
    losses, norms = [], []
    net.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(net(x.to(F64)), labels)
        loss.backward()
        norms.append(float(nn.utils.clip_grad_norm_(net.parameters(), clip)))
        opt.step()
        losses.append(float(loss))
    print(f"tiny net, clip {clip}: losses", ["%.6f" % v for v in losses], "grad norms",
          ["%.3f" % v for v in norms])
    w.add(f"{prefix}hyper", [lr, mom, wd, clip, steps])
    w.add(f"{prefix}losses", torch.tensor(losses, dtype=F64))
    w.add(f"{prefix}grad_norms", torch.tensor(norms, dtype=F64))
    w.add(f"{prefix}final/stem_bn.running_mean", net.stem_bn.running_mean)
    w.add(f"{prefix}final/stem_bn.running_var", net.stem_bn.running_var)
    w.add(f"{prefix}final/sep_bn2.running_mean", net.sep_bn2.running_mean)
    w.add(f"{prefix}final/fc.weight", net.fc.weight)
    w.add(f"{prefix}final/stem_conv.weight", net.stem_conv.weight)
    return norms


def write_tiny_net(out):
    """The run the brief asks for (clip 5, which these gradients never reach)
    and the same run with clip 1, where the first steps are clipped."""
    w, g = FixtureWriter(), gen(808)
    n, c_in, hw, classes = 8, 3, 8, 4
    torch.manual_seed(808)
    net = TinyNet(c_in, 8, classes)  # default torch init, in float32
    for name, p in net.named_parameters():
        w.add(f"init/{name}", p)
    init_state = {k: v.to(F64) for k, v in net.state_dict().items()}
    x = randn(g, n, c_in, hw, hw)
    labels = torch.randint(0, classes, (n,), generator=g)
    w.add("x", x)
    w.add("labels", labels)
    train_tiny_net(w, "", init_state, x, labels, 5.0)
    norms = train_tiny_net(w, "clip1/", init_state, x, labels, 1.0)
    if not any(v > 1.0 for v in norms):
        raise RuntimeError("tiny net: the clip-1 run never clips")
    w.save(os.path.join(out, "tiny_net.bin"))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "fixtures")
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    write_conv(out)
    write_bn(out)
    write_elementwise(out)
    write_pool(out)
    write_shape(out)
    write_classifier(out)
    write_optim(out)
    write_tiny_net(out)


if __name__ == "__main__":
    main()
