#!/usr/bin/python3
"""Self-test of tests/proxyless_ref.py (run with /usr/bin/python3; < 30 s on 2 cores).

1. count of tests/fixtures/proxyless_gpu.config at 224: 7.12 M params, 465 M multiply-adds
   (ProxylessNAS-GPU's published numbers), exact values printed and pinned;
2. state_dict names of the fixture follow the model zoo's;
3. safetensors round trip through the command line (init -> logits) against in-process logits;
4. a one-MBConv config whose parameter and multiply-add counts are worked out by hand here, and
   whose eval-mode logits are recomputed with torch.nn.functional straight from the state_dict.
Exits non-zero on any failure.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:  # a skip for CTest (SKIP_RETURN_CODE 77)
    print(f"skip: {e}")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import proxyless_ref as ref  # noqa: E402

FIXTURE = os.path.join(HERE, 'fixtures', 'proxyless_gpu.config')
REF = os.path.join(HERE, 'proxyless_ref.py')
PY = sys.executable or '/usr/bin/python3'
failures = []


def check(cond, what):
    print(('ok   ' if cond else 'FAIL ') + what)
    if not cond:
        failures.append(what)


def cli(*args):
    r = subprocess.run([PY, REF] + [str(a) for a in args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError('proxyless_ref.py %s failed:\n%s' % (' '.join(map(str, args)), r.stderr))
    return r.stdout


def test_fixture_count():
    c = json.loads(cli('count', FIXTURE, '--size', 224))
    print('fixture count at 224: params %d  madds %d' % (c['params'], c['madds']))
    check(abs(c['params'] / 1e6 - 7.12) <= 0.005, 'params %.6f M == 7.12 M +- 0.005' % (c['params'] / 1e6))
    check(abs(c['madds'] / 1e6 - 465) <= 0.5, 'madds %.6f M == 465 M +- 0.5' % (c['madds'] / 1e6))
    # pinned exact values (7119848 is also what osmr/imgclsmob asserts for its proxylessnas_gpu)
    check(c['params'] == 7119848, 'params exactly 7119848')
    check(c['madds'] == 465260160, 'madds exactly 465260160')


def test_fixture_names():
    net = ref.build_net(FIXTURE)
    sd = net.state_dict()
    want = ['first_conv.conv.weight', 'first_conv.bn.weight', 'first_conv.bn.bias',
            'first_conv.bn.running_mean', 'first_conv.bn.running_var',
            'blocks.0.mobile_inverted_conv.depth_conv.conv.weight',
            'blocks.1.mobile_inverted_conv.inverted_bottleneck.conv.weight',
            'blocks.1.mobile_inverted_conv.inverted_bottleneck.bn.running_var',
            'blocks.1.mobile_inverted_conv.depth_conv.conv.weight',
            'blocks.1.mobile_inverted_conv.point_linear.bn.bias',
            'feature_mix_layer.conv.weight', 'feature_mix_layer.bn.weight',
            'classifier.linear.weight', 'classifier.linear.bias']
    check(all(k in sd for k in want), 'model-zoo state_dict names present')
    check(not any(k.startswith('blocks.0.mobile_inverted_conv.inverted_bottleneck') for k in sd),
          'no inverted_bottleneck at expand_ratio 1')
    check(not any(k.startswith('blocks.2.') for k in sd), 'ZeroLayer block (blocks.2) holds no tensors')
    check(tuple(sd['blocks.21.mobile_inverted_conv.depth_conv.conv.weight'].shape) == (1536, 1, 7, 7),
          'blocks.21 depthwise weight shape (1536,1,7,7)')
    check(tuple(sd['classifier.linear.weight'].shape) == (1000, 1728), 'classifier weight (1000,1728)')
    eps = {m.eps for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    check(eps == {1e-3}, 'BN eps from the config (1e-3)')
    n_float = sum(1 for k in sd if not k.endswith('num_batches_tracked'))
    print('fixture state_dict: %d entries, %d without num_batches_tracked' % (len(sd), n_float))


def test_roundtrip(tmp):
    w = os.path.join(tmp, 'w.safetensors')
    x_path, y_path, y2_path = (os.path.join(tmp, n) for n in ('x.bin', 'y.bin', 'y2.bin'))
    shape = (2, 3, 64, 64)
    x = torch.from_numpy(np.random.RandomState(1).randn(*shape).astype('<f4'))
    x.numpy().tofile(x_path)
    cli('init', FIXTURE, '--random-weights', 7, '--save-weights', w)
    cli('logits', FIXTURE, w, x_path, y_path, '--shape', ','.join(map(str, shape)))
    y = np.fromfile(y_path, dtype='<f4').reshape(2, 1000)
    # same seed in process, without the file
    net = ref.random_init(ref.build_net(FIXTURE), 7)
    y_ref = ref.run_logits(net, x).numpy()
    err = float(np.abs(y - y_ref).max())
    # not bitwise: the CLI and this process may run with different thread counts
    check(err <= 1e-5 * max(1.0, float(np.abs(y_ref).max())),
          'safetensors round trip: CLI logits == in-process logits (max err %.2e)' % err)
    # reload in process, compare every tensor
    t = ref.load_safetensors(w)
    sd = net.state_dict()
    check(set(t) == {k for k in sd if not k.endswith('num_batches_tracked')}, 'file holds every float state')
    check(all(torch.equal(t[k], sd[k]) for k in t), 'reloaded tensors equal the saved ones')
    check(float(sd['first_conv.bn.running_var'].min()) >= 0.5 and float(sd['first_conv.bn.running_mean'].abs().max()) > 0,
          'random BN running stats are non-trivial')
    # logits with --random-weights directly (no weights file read) give the same numbers
    cli('logits', FIXTURE, x_path, y2_path, '--shape', ','.join(map(str, shape)), '--random-weights', 7)
    check(np.array_equal(np.fromfile(y2_path, dtype='<f4').reshape(2, 1000), y), 'logits --random-weights == from file')
    # train mode uses batch statistics: different numbers
    cli('logits', FIXTURE, w, x_path, y2_path, '--shape', ','.join(map(str, shape)), '--train')
    y_tr = np.fromfile(y2_path, dtype='<f4').reshape(2, 1000)
    check(np.isfinite(y_tr).all() and not np.allclose(y_tr, y), '--train differs from eval')
    # header layout: 8-byte LE length, JSON, 8-byte aligned data start
    with open(w, 'rb') as f:
        (hlen,) = struct.unpack('<Q', f.read(8))
        hdr = json.loads(f.read(hlen))
    check((8 + hlen) % 8 == 0 and hdr['first_conv.conv.weight']['dtype'] == 'F32', 'safetensors header layout')
    # strict loading: a missing tensor and a non-F32 tensor are errors
    t2 = dict(t)
    del t2['blocks.1.mobile_inverted_conv.point_linear.bn.running_mean']
    bad = os.path.join(tmp, 'bad.safetensors')
    ref.save_safetensors(bad, t2)
    try:
        ref.load_weights(ref.build_net(FIXTURE), bad)
        check(False, 'strict load rejects a missing running_mean')
    except KeyError:
        check(True, 'strict load rejects a missing running_mean')
    hdr2 = json.dumps({'a': {'dtype': 'F16', 'shape': [2], 'data_offsets': [0, 4]}}).encode()
    with open(bad, 'wb') as f:
        f.write(struct.pack('<Q', len(hdr2)) + hdr2 + b'\0' * 4)
    try:
        ref.load_safetensors(bad)
        check(False, 'reader rejects F16')
    except ValueError:
        check(True, 'reader rejects F16')


HAND = {
    'name': 'ProxylessNASNets', 'bn': {'momentum': 0.1, 'eps': 0.001},
    'first_conv': {'name': 'ConvLayer', 'kernel_size': 3, 'stride': 2, 'dilation': 1, 'groups': 1,
                   'bias': False, 'has_shuffle': False, 'in_channels': 3, 'out_channels': 8,
                   'use_bn': True, 'act_func': 'relu6', 'dropout_rate': 0, 'ops_order': 'weight_bn_act'},
    'blocks': [
        {'name': 'MobileInvertedResidualBlock',
         'mobile_inverted_conv': {'name': 'MBInvertedConvLayer', 'in_channels': 8, 'out_channels': 16,
                                  'kernel_size': 5, 'stride': 2, 'expand_ratio': 6},
         'shortcut': None},
        {'name': 'MobileInvertedResidualBlock',
         'mobile_inverted_conv': {'name': 'ZeroLayer', 'stride': 1},
         'shortcut': {'name': 'IdentityLayer', 'in_channels': 16, 'out_channels': 16, 'use_bn': False,
                      'act_func': None, 'dropout_rate': 0, 'ops_order': 'weight_bn_act'}},
        {'name': 'MobileInvertedResidualBlock',
         'mobile_inverted_conv': {'name': 'MBInvertedConvLayer', 'in_channels': 16, 'out_channels': 16,
                                  'kernel_size': 3, 'stride': 1, 'expand_ratio': 1},
         'shortcut': {'name': 'IdentityLayer', 'in_channels': 16, 'out_channels': 16, 'use_bn': False,
                      'act_func': None, 'dropout_rate': 0, 'ops_order': 'weight_bn_act'}},
    ],
    'feature_mix_layer': {'name': 'ConvLayer', 'kernel_size': 1, 'stride': 1, 'dilation': 1, 'groups': 1,
                          'bias': False, 'has_shuffle': False, 'in_channels': 16, 'out_channels': 32,
                          'use_bn': True, 'act_func': 'relu6', 'dropout_rate': 0, 'ops_order': 'weight_bn_act'},
    'classifier': {'name': 'LinearLayer', 'in_features': 32, 'out_features': 10, 'bias': True, 'use_bn': False,
                   'act_func': None, 'dropout_rate': 0, 'ops_order': 'weight_bn_act'},
}


def test_hand(tmp):
    cfg = os.path.join(tmp, 'hand.config')
    with open(cfg, 'w') as f:
        json.dump(HAND, f)
    # parameters by hand
    stem = 3 * 8 * 3 * 3 + 2 * 8                      # 216 + BN 16
    mid = 8 * 6                                       # 48
    mb1 = (8 * mid + 2 * mid) + (mid * 5 * 5 + 2 * mid) + (mid * 16 + 2 * 16)   # 480 + 1296 + 800
    mb3 = (16 * 3 * 3 + 2 * 16) + (16 * 16 + 2 * 16)  # e=1: no expansion; 176 + 288
    mix = 16 * 32 + 2 * 32                            # 576
    cls = 32 * 10 + 10                                # 330
    params = stem + mb1 + 0 + mb3 + mix + cls
    check(params == 232 + 2576 + 464 + 576 + 330 == 4178, 'hand params arithmetic = 4178')
    # multiply-adds by hand at 32x32: 16x16 after the stem, 8x8 after block 1
    madds32 = (3 * 8 * 9 * 16 * 16                                  # stem
               + 8 * 48 * 16 * 16 + 48 * 25 * 8 * 8 + 48 * 16 * 8 * 8  # block 1 (dw counted at output 8x8)
               + 0                                                  # zero block
               + 16 * 9 * 8 * 8 + 16 * 16 * 8 * 8                   # block 3 (e=1)
               + 16 * 32 * 8 * 8                                    # feature mix
               + 32 * 10)                                           # classifier, bias not counted
    # at 33x33 the profiler counts int(H/stride) (16, then 8) while the real maps are 17x17 and 9x9
    madds33 = (3 * 8 * 9 * 16 * 16
               + 8 * 48 * 17 * 17 + 48 * 25 * 8 * 8 + 48 * 16 * 9 * 9
               + 16 * 9 * 9 * 9 + 16 * 16 * 9 * 9
               + 16 * 32 * 9 * 9 + 32 * 10)
    c32 = json.loads(cli('count', cfg, '--size', 32))
    c33 = json.loads(cli('count', cfg, '--size', 33))
    print('hand config: params %d (by hand %d); madds@32 %d (by hand %d); madds@33 %d (by hand %d)'
          % (c32['params'], params, c32['madds'], madds32, c33['madds'], madds33))
    check(c32['params'] == params, 'hand config params')
    check(c32['madds'] == madds32, 'hand config madds at 32')
    check(c33['madds'] == madds33, 'hand config madds at 33 (ProxylessNAS int(H/stride) convention)')

    # forward recomputed with torch.nn.functional from the state_dict (eval: running stats, eps 1e-3)
    net = ref.random_init(ref.build_net(HAND), 3)
    sd = net.state_dict()
    x = torch.from_numpy(np.random.RandomState(2).randn(3, 3, 33, 33).astype('<f4'))

    def bn(t, p):
        return F.batch_norm(t, sd[p + '.running_mean'], sd[p + '.running_var'], sd[p + '.weight'],
                            sd[p + '.bias'], False, 0.0, 1e-3)

    relu6 = lambda t: t.clamp(0, 6)  # noqa: E731
    h = relu6(bn(F.conv2d(x, sd['first_conv.conv.weight'], stride=2, padding=1), 'first_conv.bn'))
    p = 'blocks.0.mobile_inverted_conv.'
    h = relu6(bn(F.conv2d(h, sd[p + 'inverted_bottleneck.conv.weight']), p + 'inverted_bottleneck.bn'))
    h = relu6(bn(F.conv2d(h, sd[p + 'depth_conv.conv.weight'], stride=2, padding=2, groups=48), p + 'depth_conv.bn'))
    h = bn(F.conv2d(h, sd[p + 'point_linear.conv.weight']), p + 'point_linear.bn')
    # block 1 is a ZeroLayer block: output = input
    p = 'blocks.2.mobile_inverted_conv.'
    r = relu6(bn(F.conv2d(h, sd[p + 'depth_conv.conv.weight'], padding=1, groups=16), p + 'depth_conv.bn'))
    h = h + bn(F.conv2d(r, sd[p + 'point_linear.conv.weight']), p + 'point_linear.bn')
    h = relu6(bn(F.conv2d(h, sd['feature_mix_layer.conv.weight']), 'feature_mix_layer.bn'))
    want = F.linear(h.mean((2, 3)), sd['classifier.linear.weight'], sd['classifier.linear.bias'])
    got = ref.run_logits(net, x)
    err = float((got - want).abs().max())
    check(err < 1e-5, 'hand config eval logits == functional recomputation (max err %.2e)' % err)


def main():
    t0 = time.time()
    torch.set_num_threads(2)
    test_fixture_count()
    test_fixture_names()
    with tempfile.TemporaryDirectory() as tmp:
        test_roundtrip(tmp)
        test_hand(tmp)
    print('%d failure(s); %.1f s' % (len(failures), time.time() - t0))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
