#!/usr/bin/python3
"""Self-test of tests/darts_ref.py (run with /usr/bin/python3; < 30 s on 2 cores).

1. parameter counts at 20 cells, C=36, 10 classes: the MdeNAS genotype (params_no_aux in the
   paper's 3.6-4.1 M range, printed), and two pinned anchors published elsewhere: DARTS_V2
   3,349,342 (DARTS's train.py log "param size = 3.349342MB", aux excluded) and P-DARTS
   3,433,798 / 3,910,224 with the auxiliary head;
2. state_dict names and shapes of DARTS's module tree; genotype parsing (range, lists, 3 nodes,
   rejects code);
3. a reduction cell recomputed by hand with torch.nn.functional (FactorizedReduce, stride-2 max
   pool, injected drop-path masks);
4. DARTS's in-place aux ReLU: changes the training logits only when the aux cell is the last;
5. round trip through `darts_ref.py check DIR` (subprocess) of directories in the C side's
   format written from this model's own float64 outputs: a 6-cell aux net on 3x32x32 (drop path
   0.3, dropout 0.2, aux weight 0.4) and a 5-cell 3-node net on 3x16x16 with label smoothing must
   pass (exit 0); a corrupted gradient and a renamed weight must fail (exit 1); a missing mask, an
   extra mask, a wrong weight shape and a missing stats tensor must fail (in process).
Exit 0 pass, 1 fail, 77 when torch/numpy are missing.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:  # a skip for CTest (SKIP_RETURN_CODE 77)
    print('skip: %s' % e)
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import darts_ref as ref  # noqa: E402

REF = os.path.join(HERE, 'darts_ref.py')
PY = sys.executable or '/usr/bin/python3'
failures = []

MDENAS_STR = ("Genotype(normal=[('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), "
              "('sep_conv_5x5', 1), ('sep_conv_5x5', 3), ('sep_conv_3x3', 1), ('dil_conv_5x5', 3), "
              "('max_pool_3x3', 4)], normal_concat=range(2, 6), reduce=[('max_pool_3x3', 0), "
              "('sep_conv_5x5', 1), ('skip_connect', 0), ('skip_connect', 1), ('sep_conv_3x3', 3), "
              "('skip_connect', 2), ('dil_conv_3x3', 3), ('sep_conv_5x5', 0)], "
              "reduce_concat=range(2, 6))")
DARTS_V2_STR = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
                "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), "
                "('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
                "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
                "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), "
                "('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
PDARTS_STR = ("Genotype(normal=[('skip_connect', 0), ('dil_conv_3x3', 1), ('skip_connect', 0),"
              "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('sep_conv_3x3', 3), ('sep_conv_3x3',0), "
              "('dil_conv_5x5', 4)], normal_concat=range(2, 6), reduce=[('avg_pool_3x3', 0), "
              "('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('dil_conv_5x5', 2), ('max_pool_3x3', 0), "
              "('dil_conv_3x3', 1), ('dil_conv_3x3', 1), ('dil_conv_5x5', 3)], "
              "reduce_concat=range(2, 6))")
# 3 intermediate nodes, every op kind, 'none' included
THREE_NODE_STR = ("Genotype(normal=[('none', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), "
                  "('dil_conv_5x5', 2), ('skip_connect', 3), ('max_pool_3x3', 1)], "
                  "normal_concat=range(2, 5), reduce=[('skip_connect', 0), ('none', 1), "
                  "('sep_conv_5x5', 1), ('dil_conv_3x3', 2), ('avg_pool_3x3', 0), "
                  "('skip_connect', 3)], reduce_concat=range(2, 5))")


def check(cond, what):
    print(('ok   ' if cond else 'FAIL ') + what)
    if not cond:
        failures.append(what)
    return cond


def cli_count(g, cells, C, K, aux):
    cmd = [PY, REF, 'count', '--genotype', g, '--cells', str(cells), '--channels', str(C),
           '--classes', str(K), '--in-channels', '3'] + (['--auxiliary'] if aux else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout + r.stderr)
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------

def test_counts():
    c = cli_count(MDENAS_STR, 20, 36, 10, True)
    if not check(c is not None, 'count CLI runs'):
        return
    print('     MdeNAS 20 cells C=36 10 classes: params %d, params_no_aux %d'
          % (c['params'], c['params_no_aux']))
    check(3.6e6 <= c['params_no_aux'] <= 4.1e6, 'MdeNAS params_no_aux %.3f M in 3.6-4.1 M'
          % (c['params_no_aux'] / 1e6))
    check(c['params'] > c['params_no_aux'], 'auxiliary head adds parameters')
    for g, cells, C in ((MDENAS_STR, 8, 16),):
        net = ref.NetworkCIFAR(C, 10, cells, True, ref.parse_genotype(g))
        t, n = ref.count_params(net)
        print('     MdeNAS %d cells C=%d 10 classes: params %d, params_no_aux %d' % (cells, C, t, n))
    t, n = ref.count_params(ref.NetworkCIFAR(36, 10, 20, False, ref.parse_genotype(DARTS_V2_STR)))
    check(t == n == 3349342, 'DARTS_V2 20/36 = %d params (DARTS log: 3.349342 MB)' % n)
    t, n = ref.count_params(ref.NetworkCIFAR(36, 10, 20, True, ref.parse_genotype(PDARTS_STR)))
    check((t, n) == (3910224, 3433798), 'P-DARTS 20/36 = %d / %d with aux (published 3433798 / '
          '3910224)' % (n, t))
    # aux head by hand: C_aux = 4 * 4C; 1x1 conv, BN, 2x2 conv, BN, linear
    Ca = 16 * 36
    check(t - n == Ca * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * 10 + 10,
          'aux head parameter count by hand')


def test_names_and_parse():
    g = ref.parse_genotype(MDENAS_STR)
    check(g.normal[0] == ('sep_conv_5x5', 1) and g.reduce_concat == [2, 3, 4, 5],
          'parse_genotype: DARTS print format with range(2, 6)')
    g2 = ref.parse_genotype(DARTS_V2_STR)
    check(g2.normal_concat == [2, 3, 4, 5], 'parse_genotype: list concat')
    g3 = ref.parse_genotype(THREE_NODE_STR)
    check(len(g3.normal) == 6 and g3.normal_concat == [2, 3, 4], 'parse_genotype: 3 nodes')
    check(ref.parse_genotype(ref.genotype_str(g)) == g, 'genotype_str round trip')
    for bad in ("__import__('os').system('true')",
                "Genotype(normal=[('sep_conv_3x3', 0)], reduce=[('none', 0), ('none', 1)])",
                "Genotype(normal=[('conv_7x7', 0), ('none', 1)], reduce=[('none', 0), ('none', 1)])",
                "Genotype(normal=[('none', 2), ('none', 1)], reduce=[('none', 0), ('none', 1)])",
                "Genotype(normal=[('none', 0), ('none', 1)], reduce=[('none', 0), ('none', 1)],"
                " normal_concat=open('x'))"):
        try:
            ref.parse_genotype(bad)
            ok = False
        except (ValueError, SyntaxError):
            ok = True
        check(ok, 'parse_genotype rejects %s' % bad[:60])

    net = ref.NetworkCIFAR(8, 10, 6, True, g)
    sd = net.state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    want = {
        'stem.0.weight': (24, 3, 3, 3), 'stem.1.running_var': (24,),
        'cells.0.preprocess0.op.1.weight': (8, 24, 1, 1),
        'cells.0.preprocess1.op.2.weight': (8,),
        'cells.0._ops.0.op.1.weight': (8, 1, 5, 5),         # sep_conv_5x5 depthwise
        'cells.0._ops.0.op.7.running_mean': (8,),
        'cells.0._ops.6.op.1.weight': (8, 1, 5, 5),         # dil_conv_5x5
        'cells.0._ops.6.op.3.bias': (8,),
        'cells.2._ops.2.conv_1.weight': (8, 16, 1, 1),      # reduce skip_connect(0): FR
        'cells.2._ops.2.bn.weight': (16,),
        'cells.3.preprocess0.conv_2.weight': (8, 32, 1, 1),  # FR from cell 1
        'cells.3.preprocess1.op.1.weight': (16, 64, 1, 1),
        'auxiliary_head.features.2.weight': (128, 128, 1, 1),
        'auxiliary_head.features.3.running_var': (128,),
        'auxiliary_head.features.5.weight': (768, 128, 2, 2),
        'auxiliary_head.features.6.weight': (768,),
        'auxiliary_head.classifier.weight': (10, 768),
        'classifier.weight': (10, 128),
    }
    bad = [(k, shapes.get(k), v) for k, v in want.items() if shapes.get(k) != v]
    check(not bad, 'state_dict names and shapes follow DARTS %s' % (bad[:3] if bad else ''))
    check(isinstance(net.cells[0]._ops[2], ref.Identity)
          and isinstance(net.cells[2]._ops[5], ref.Identity)
          and 'cells.0._ops.2.conv_1.weight' not in sd,
          'stride-1 skip_connect is Identity and holds no tensors')
    check('cells.2._ops.3.conv_1.weight' in sd and 'cells.2._ops.5.conv_1.weight' not in sd,
          'reduction: stride 2 exactly for inputs 0 and 1')


def test_cell_by_hand():
    torch.manual_seed(1)
    g = ref.parse_genotype("Genotype(normal=[('none', 0), ('none', 1)], "
                           "reduce=[('skip_connect', 0), ('max_pool_3x3', 1), "
                           "('skip_connect', 2), ('avg_pool_3x3', 0)], reduce_concat=[2, 3])")
    cell = ref.Cell(g, 6, 5, 4, True, True).double()
    for m in cell.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    cell.train()
    s0 = torch.randn(3, 6, 16, 16, dtype=torch.float64)
    s1 = torch.randn(3, 5, 8, 8, dtype=torch.float64)
    masks = {0: torch.tensor([1., 0., 1.]), 1: torch.tensor([0., 1., 1.]),
             3: torch.tensor([1., 1., 0.])}
    used = []

    def mf(j, n):
        used.append(j)
        return masks[j]
    out = cell(s0, s1, 0.25, mf)

    def bn(x, m):
        return F.batch_norm(x, None, None, m.weight, m.bias, True, 0.1, 1e-5)

    def fr(x, m):
        x = F.relu(x)
        a = F.conv2d(x, m.conv_1.weight, stride=2)
        b = F.conv2d(x[:, :, 1:, 1:], m.conv_2.weight, stride=2)
        return bn(torch.cat([a, b], 1), m.bn)

    def dp(x, j):
        return x / 0.75 * masks[j].view(-1, 1, 1, 1)
    p0 = fr(s0, cell.preprocess0)
    p1 = bn(F.conv2d(F.relu(s1), cell.preprocess1.op[1].weight), cell.preprocess1.op[2])
    n2 = dp(fr(p0, cell._ops[0]), 0) + dp(F.max_pool2d(p1, 3, 2, 1), 1)
    n3 = n2 + dp(F.avg_pool2d(p0, 3, 2, 1, count_include_pad=False), 3)
    want = torch.cat([n2, n3], 1)
    check(used == [0, 1, 3], 'drop path masks asked for exactly the non-Identity ops %s' % used)
    check(out.shape == want.shape and torch.allclose(out, want, rtol=1e-12, atol=1e-12),
          'reduction cell by hand (FR, pools, drop path): max|d| %.2e'
          % (out - want).abs().max().item())


def test_aux_inplace():
    torch.manual_seed(2)
    g = ref.parse_genotype(MDENAS_STR)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    for layers, differs in ((3, True), (6, False)):
        a = ref.NetworkCIFAR(8, 10, layers, True, g).double()
        b = ref.NetworkCIFAR(8, 10, layers, False, g).double()
        with torch.no_grad():
            for p in a.parameters():
                p.uniform_(-0.5, 0.5)
        b.load_state_dict(a.state_dict(), strict=False)
        a.train(), b.train()
        la, _ = a(x)
        lb, _ = b(x)
        d = (la - lb).abs().max().item()
        check((d > 1e-6) == differs, '%d cells: aux head in-place ReLU %s the training logits '
              '(max|d| %.2e)' % (layers, 'changes' if differs else 'leaves', d))


# ----------------------------------------------------------------------------------------------
# round trip in the C side's directory format

def perturb(net, gen):
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen) - 0.5)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def write_case(d, cfg, seed):
    os.makedirs(d, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net32 = ref.build_from_cfg(cfg)
    perturb(net32, gen)
    sd = {k: v for k, v in net32.state_dict().items() if not k.endswith('num_batches_tracked')}
    ref.write_safetensors(os.path.join(d, 'weights.safetensors'),
                          {k: v.float() for k, v in sd.items()}, {'format': 'pt'})
    N, c, h, w, K = cfg['batch'], cfg['in_channels'], cfg['height'], cfg['width'], cfg['classes']
    x = torch.randn(N, c, h, w, generator=gen).float()
    y = torch.randint(0, K, (N,), generator=gen).int()
    x.numpy().astype('<f4').tofile(os.path.join(d, 'input.bin'))
    y.numpy().astype('<i4').tofile(os.path.join(d, 'labels.bin'))
    with open(os.path.join(d, 'net.json'), 'w') as f:
        json.dump(cfg, f)

    net = ref.build_from_cfg(cfg).double()
    net.load_state_dict({k: v.double() for k, v in sd.items()}, strict=False)
    xd = x.double()
    net.eval()
    with torch.no_grad():
        logits, _ = net(xd)
    ref.write_safetensors(os.path.join(d, 'eval.safetensors'), {'logits': logits.float()})

    # masks for exactly the ops that get drop path, drawn at random
    masks = {}
    if cfg['drop_path'] > 0:
        for i, cell in enumerate(net.cells):
            for j, op in enumerate(cell._ops):
                if not isinstance(op, ref.Identity):
                    masks['mask.cells.%d._ops.%d' % (i, j)] = torch.bernoulli(
                        torch.full((N,), 1 - cfg['drop_path']), generator=gen)
    if cfg['dropout'] > 0:
        masks['mask.dropout'] = torch.bernoulli(
            torch.full((N, net.C_final), 1 - cfg['dropout']), generator=gen)
    net.train()
    net.drop_path_prob = cfg['drop_path']
    net.injected_masks = {k: v.double() for k, v in masks.items()}
    logits, logits_aux = net(xd)
    yl = y.long()
    loss = ref.cross_entropy(logits, yl, cfg['label_smoothing'])
    if cfg['auxiliary']:
        loss = loss + cfg['aux_weight'] * ref.cross_entropy(logits_aux, yl, cfg['label_smoothing'])
    loss.backward()
    assert net.consumed_masks == set(masks), 'self-test masks do not match the model'
    out = dict((k, v.float()) for k, v in masks.items())
    out['logits'] = logits.detach().float()
    if cfg['auxiliary']:
        out['logits_aux'] = logits_aux.detach().float()
    out['loss'] = loss.detach().reshape(1).float()
    for n, p in net.named_parameters():
        out['grad.' + n] = (p.grad if p.grad is not None else torch.zeros_like(p)).float()
    for n, b in net.named_buffers():
        if n.endswith('running_mean') or n.endswith('running_var'):
            out['stats.' + n] = b.float()
    ref.write_safetensors(os.path.join(d, 'train.safetensors'), out)
    return len(masks)


def run_check(d):
    r = subprocess.run([PY, REF, 'check', d], capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def quiet_check(d):
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ok = ref.check_dir(d)
    return ok, buf.getvalue()


def edit_st(path, fn):
    t, meta = ref.read_safetensors(path)
    t = fn(dict(t))
    ref.write_safetensors(path, t, meta)


def test_round_trip(tmp):
    aux_cfg = {"genotype": MDENAS_STR, "cells": 6, "channels": 8, "classes": 10,
               "in_channels": 3, "height": 32, "width": 32, "auxiliary": True, "aux_weight": 0.4,
               "drop_path": 0.3, "dropout": 0.2, "batch": 4, "label_smoothing": 0.0}
    small_cfg = {"genotype": THREE_NODE_STR, "cells": 5, "channels": 8, "classes": 7,
                 "in_channels": 3, "height": 16, "width": 16, "auxiliary": False,
                 "aux_weight": 0.4, "drop_path": 0.3, "dropout": 0.2, "batch": 3,
                 "label_smoothing": 0.1}
    A = os.path.join(tmp, 'aux')
    B = os.path.join(tmp, 'small')
    nm = write_case(A, aux_cfg, 11)
    print('     wrote %s (%d masks)' % (A, nm))
    nm = write_case(B, small_cfg, 12)
    print('     wrote %s (%d masks)' % (B, nm))
    for d in (A, B):
        rc, out = run_check(d)
        if not check(rc == 0, 'check %s: exit %d (want 0)' % (os.path.basename(d), rc)):
            print(out)
        else:
            print('     | ' + '\n     | '.join(out.strip().splitlines()))

    # corrupted gradient -> exit 1
    C1 = os.path.join(tmp, 'bad_grad')
    shutil.copytree(A, C1)

    def bump(t):
        k = 'grad.cells.1._ops.0.op.1.weight'
        g = t[k].copy()
        g.flat[0] += 0.01 * np.abs(g).max() + 1e-4
        t[k] = g
        return t
    edit_st(os.path.join(C1, 'train.safetensors'), bump)
    rc, out = run_check(C1)
    check(rc == 1 and 'grad.cells.1._ops.0.op.1.weight' in out,
          'a gradient off by 1%% of its max fails (exit %d)' % rc)

    # renamed weight -> exit 1
    C2 = os.path.join(tmp, 'bad_name')
    shutil.copytree(A, C2)

    def rename(t):
        t['cells.0._ops.0.op.1.weights'] = t.pop('cells.0._ops.0.op.1.weight')
        return t
    edit_st(os.path.join(C2, 'weights.safetensors'), rename)
    rc, out = run_check(C2)
    check(rc == 1 and 'unexpected key cells.0._ops.0.op.1.weights' in out,
          'a renamed weight fails (exit %d)' % rc)

    # in process: missing mask, unconsumed mask, wrong shape, missing stats, stale running var
    cases = []

    def drop_mask(t):
        del t['mask.cells.3._ops.1']
        return t
    cases.append(('train.safetensors', drop_mask, 'needs mask.cells.3._ops.1', 'a missing mask'))

    def extra_mask(t):
        t['mask.cells.0._ops.2'] = np.ones(4, np.float32)   # normal skip_connect: Identity
        return t
    cases.append(('train.safetensors', extra_mask, 'mask.cells.0._ops.2 in train',
                  'a mask for an Identity op'))

    def bad_shape(t):
        t['classifier.weight'] = np.zeros((10, 127), np.float32)
        return t
    cases.append(('weights.safetensors', bad_shape, 'classifier.weight shape', 'a shape mismatch'))

    def no_stats(t):
        del t['stats.cells.4._ops.2.bn.running_var']
        return t
    cases.append(('train.safetensors', no_stats, 'lacks stats.cells.4._ops.2.bn.running_var',
                  'a missing stats tensor'))

    def stale_var(t):
        k = 'stats.auxiliary_head.features.6.running_var'
        t[k] = t[k] * np.float32(1.01)
        return t
    cases.append(('train.safetensors', stale_var, 'FAIL stats', 'a running_var off by 1%'))

    def eval_off(t):
        t['logits'] = t['logits'] + np.float32(1e-3)
        return t
    cases.append(('eval.safetensors', eval_off, 'FAIL eval', 'eval logits off by 1e-3'))
    for i, (fname, fn, needle, what) in enumerate(cases):
        D = os.path.join(tmp, 'neg%d' % i)
        shutil.copytree(A, D)
        edit_st(os.path.join(D, fname), fn)
        ok, out = quiet_check(D)
        if not check(not ok and needle in out, '%s fails' % what):
            print(out)


def main():
    t0 = time.time()
    torch.set_num_threads(2)
    test_counts()
    test_names_and_parse()
    test_cell_by_hand()
    test_aux_inplace()
    tmp = tempfile.mkdtemp(prefix='darts_ref_selftest.')
    try:
        test_round_trip(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print('%s: %d failure(s), %.1f s' % ('FAIL' if failures else 'PASS', len(failures),
                                         time.time() - t0))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
