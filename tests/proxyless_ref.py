#!/usr/bin/python3
"""Independent PyTorch reference for ProxylessNAS model-zoo nets (ProxylessNASNets JSON configs).

Rebuilds the module tree of mit-han-lab/proxylessnas `proxyless_nas/` (layers.py, nas_modules.py) so
that state_dict names are the model zoo's own, e.g.
    first_conv.conv.weight, first_conv.bn.{weight,bias,running_mean,running_var}
    blocks.<i>.mobile_inverted_conv.inverted_bottleneck.{conv,bn}.*   (absent at expand_ratio 1)
    blocks.<i>.mobile_inverted_conv.depth_conv.{conv,bn}.*
    blocks.<i>.mobile_inverted_conv.point_linear.{conv,bn}.*
    feature_mix_layer.{conv,bn}.*, classifier.linear.{weight,bias}
ZeroLayer blocks and IdentityLayer shortcuts hold no tensors.

Use /usr/bin/python3 (Debian python3-torch).  Commands:
  proxyless_ref.py count CONFIG [--size 224]
      -> {"params": N, "madds": M}; params = sum(p.numel() for p in net.parameters()) (conv/linear
         weights and biases, BN weight and bias); madds as ProxylessNAS's get_flops() counts them:
         every conv Cin*Cout*k*k*out_h*out_w/groups with out_h = int(H_in/stride) (H_in the real
         input size of that conv), linear in*out (weight.numel(), bias not counted); BN, activations,
         pooling, shortcut adds and ZeroLayer blocks count nothing.
  proxyless_ref.py logits CONFIG WEIGHTS.safetensors INPUT.bin OUT.bin [--shape N,C,H,W] [--size S]
                          [--eval | --train]
      INPUT.bin raw float32 NCHW (default shape 1,3,S,S); OUT.bin raw float32 logits (N, classes).
  proxyless_ref.py init CONFIG --random-weights SEED --save-weights W.safetensors
      (also accepted: `logits CONFIG --random-weights SEED --save-weights W ...` with no WEIGHTS
      argument) writes a randomly initialised model with non-trivial BN affine and running stats.
"""
import argparse
import json
import math
import struct
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn


# ----------------------------------------------------------------------------------------------
# layers (module attribute names and registration order follow proxyless_nas/layers.py)

def same_padding(k):
    if isinstance(k, (list, tuple)):
        return tuple(same_padding(x) for x in k)
    assert isinstance(k, int) and k % 2 == 1, 'kernel size should be an odd int: %r' % (k,)
    return k // 2


def pair(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v)


def make_act(name, inplace=True):
    if name is None or name == 'none':
        return None
    if name == 'relu':
        return nn.ReLU(inplace=inplace)
    if name == 'relu6':
        return nn.ReLU6(inplace=inplace)
    if name == 'tanh':
        return nn.Tanh()
    if name == 'sigmoid':
        return nn.Sigmoid()
    raise ValueError('unsupported act_func %r' % (name,))


def shuffle_channels(x, groups):
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class BasicLayer(nn.Module):
    """bn / activation / dropout registered before the weight op, as in the original."""

    def __init__(self, in_channels, out_channels, use_bn=True, act_func='relu', dropout_rate=0,
                 ops_order='weight_bn_act', bn_cls=nn.BatchNorm2d, drop_cls=nn.Dropout2d):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.ops_list = ops_order.split('_')
        for op in self.ops_list:
            if op not in ('weight', 'bn', 'act'):
                raise ValueError('bad ops_order %r' % ops_order)
        bn_first = self.ops_list.index('bn') < self.ops_list.index('weight') if 'bn' in self.ops_list else False
        self.bn = bn_cls(in_channels if bn_first else out_channels) if use_bn else None
        self.activation = make_act(act_func, inplace=self.ops_list[0] != 'act')
        self.dropout = drop_cls(dropout_rate) if dropout_rate and dropout_rate > 0 else None

    def weight_call(self, x):
        raise NotImplementedError

    def forward(self, x):
        for op in self.ops_list:
            if op == 'weight':
                if self.dropout is not None:
                    x = self.dropout(x)
                x = self.weight_call(x)
            elif op == 'bn':
                if self.bn is not None:
                    x = self.bn(x)
            elif op == 'act':
                if self.activation is not None:
                    x = self.activation(x)
        return x

    def madds(self, hw):
        return 0, hw


class ConvLayer(BasicLayer):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1, groups=1,
                 bias=False, has_shuffle=False, use_bn=True, act_func='relu', dropout_rate=0,
                 ops_order='weight_bn_act', **extra):
        _check_extra('ConvLayer', extra)
        super().__init__(in_channels, out_channels, use_bn, act_func, dropout_rate, ops_order)
        pad = same_padding(kernel_size)
        pad = tuple(p * dilation for p in pair(pad))
        self.groups, self.has_shuffle = groups, has_shuffle
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad, dilation=dilation,
                              groups=groups, bias=bias)

    def weight_call(self, x):
        x = self.conv(x)
        if self.has_shuffle and self.groups > 1:
            x = shuffle_channels(x, self.groups)
        return x

    def madds(self, hw):
        return conv_madds(self.conv, hw)


class IdentityLayer(BasicLayer):
    def __init__(self, in_channels, out_channels, use_bn=False, act_func=None, dropout_rate=0,
                 ops_order='weight_bn_act', **extra):
        _check_extra('IdentityLayer', extra)
        super().__init__(in_channels, out_channels, use_bn, act_func, dropout_rate, ops_order)

    def weight_call(self, x):
        return x


class LinearLayer(BasicLayer):
    def __init__(self, in_features, out_features, bias=True, use_bn=False, act_func=None,
                 dropout_rate=0, ops_order='weight_bn_act', **extra):
        _check_extra('LinearLayer', extra)
        super().__init__(in_features, out_features, use_bn, act_func, dropout_rate, ops_order,
                         bn_cls=nn.BatchNorm1d, drop_cls=nn.Dropout)
        self.linear = nn.Linear(in_features, out_features, bias)

    def weight_call(self, x):
        return self.linear(x)

    def madds(self, hw):
        return self.linear.weight.numel(), hw


class MBInvertedConvLayer(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, expand_ratio=6,
                 mid_channels=None, act_func='relu6', use_se=False, **extra):
        _check_extra('MBInvertedConvLayer', extra)
        if use_se:
            raise ValueError('use_se is not part of the ProxylessNAS model zoo')
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride = stride
        if expand_ratio > 1:
            feature_dim = mid_channels if mid_channels is not None else round(in_channels * expand_ratio)
            self.inverted_bottleneck = nn.Sequential(OrderedDict([
                ('conv', nn.Conv2d(in_channels, feature_dim, 1, 1, 0, bias=False)),
                ('bn', nn.BatchNorm2d(feature_dim)),
                ('relu', make_act(act_func)),
            ]))
        else:
            feature_dim = in_channels
            self.inverted_bottleneck = None
        pad = same_padding(kernel_size)
        self.depth_conv = nn.Sequential(OrderedDict([
            ('conv', nn.Conv2d(feature_dim, feature_dim, kernel_size, stride, pad, groups=feature_dim,
                               bias=False)),
            ('bn', nn.BatchNorm2d(feature_dim)),
            ('relu', make_act(act_func)),
        ]))
        self.point_linear = nn.Sequential(OrderedDict([
            ('conv', nn.Conv2d(feature_dim, out_channels, 1, 1, 0, bias=False)),
            ('bn', nn.BatchNorm2d(out_channels)),
        ]))

    def forward(self, x):
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        return self.point_linear(self.depth_conv(x))

    def madds(self, hw):
        total = 0
        for seq in (self.inverted_bottleneck, self.depth_conv, self.point_linear):
            if seq is not None:
                m, hw = conv_madds(seq.conv, hw)
                total += m
        return total, hw

    @staticmethod
    def is_zero_layer():
        return False


class ZeroLayer(nn.Module):
    def __init__(self, stride, **extra):
        _check_extra('ZeroLayer', extra)
        super().__init__()
        self.stride = stride

    def forward(self, x):
        n, c, h, w = x.shape
        return x.new_zeros(n, c, h // self.stride, w // self.stride)

    def madds(self, hw):
        return 0, (hw[0] // self.stride, hw[1] // self.stride)

    @staticmethod
    def is_zero_layer():
        return True


def _is_zero(m):
    return m is None or getattr(m, 'is_zero_layer', lambda: False)()


class MobileInvertedResidualBlock(nn.Module):
    def __init__(self, mobile_inverted_conv, shortcut):
        super().__init__()
        self.mobile_inverted_conv = mobile_inverted_conv
        self.shortcut = shortcut

    def forward(self, x):
        if _is_zero(self.mobile_inverted_conv):
            return x
        if self.shortcut is None or _is_zero(self.shortcut):
            return self.mobile_inverted_conv(x)
        return self.shortcut(x) + self.mobile_inverted_conv(x)

    def madds(self, hw):
        if _is_zero(self.mobile_inverted_conv):
            return 0, hw  # the block passes x through unchanged
        m, out = self.mobile_inverted_conv.madds(hw)
        if self.shortcut is not None:
            m += self.shortcut.madds(hw)[0]
        return m, out


class ProxylessNASNets(nn.Module):
    def __init__(self, first_conv, blocks, feature_mix_layer, classifier):
        super().__init__()
        self.first_conv = first_conv
        self.blocks = nn.ModuleList(blocks)
        self.feature_mix_layer = feature_mix_layer
        self.global_avg_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier

    def forward(self, x):
        x = self.first_conv(x)
        for b in self.blocks:
            x = b(x)
        if self.feature_mix_layer is not None:
            x = self.feature_mix_layer(x)
        x = self.global_avg_pooling(x).view(x.size(0), -1)
        return self.classifier(x)

    def madds(self, size):
        hw = pair(size)
        total, hw = self.first_conv.madds(hw)
        for b in self.blocks:
            m, hw = b.madds(hw)
            total += m
        if self.feature_mix_layer is not None:
            m, hw = self.feature_mix_layer.madds(hw)
            total += m
        total += self.classifier.madds((1, 1))[0]
        return total


def conv_madds(conv, hw):
    """ProxylessNAS utils.count_conv_flop: out = int(in / stride) for the count; returns the real
    output size (PyTorch conv arithmetic) for the next layer."""
    h, w = hw
    sh, sw = conv.stride
    count = (conv.in_channels * conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
             * int(h / sh) * int(w / sw) / conv.groups)
    out = []
    for d, (i, k, s, p, dil) in enumerate(zip(hw, conv.kernel_size, conv.stride, conv.padding, conv.dilation)):
        out.append((i + 2 * p - dil * (k - 1) - 1) // s + 1)
    return count, tuple(out)


# ----------------------------------------------------------------------------------------------
# config

def _check_extra(name, extra):
    if extra:
        raise ValueError('%s: unknown config keys %s' % (name, sorted(extra)))


LAYERS = {c.__name__: c for c in (ConvLayer, IdentityLayer, LinearLayer, MBInvertedConvLayer, ZeroLayer)}


def layer_from_config(cfg):
    if cfg is None:
        return None
    cfg = dict(cfg)
    name = cfg.pop('name')
    if name not in LAYERS:
        raise ValueError('unsupported layer %r' % name)
    return LAYERS[name](**cfg)


def build_net(config):
    if isinstance(config, str):
        with open(config) as f:
            config = json.load(f)
    if config.get('name') != 'ProxylessNASNets':
        raise ValueError('not a ProxylessNASNets config: name=%r' % config.get('name'))
    blocks = []
    for b in config['blocks']:
        if b.get('name') != 'MobileInvertedResidualBlock':
            raise ValueError('unsupported block %r' % b.get('name'))
        blocks.append(MobileInvertedResidualBlock(layer_from_config(b['mobile_inverted_conv']),
                                                  layer_from_config(b.get('shortcut'))))
    net = ProxylessNASNets(layer_from_config(config['first_conv']), blocks,
                           layer_from_config(config.get('feature_mix_layer')),
                           layer_from_config(config['classifier']))
    bn = config.get('bn')
    if bn:  # model_zoo.proxyless_base -> set_bn_param: BatchNorm2d only
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = bn['momentum']
                m.eps = bn['eps']
    return net


def count(net, size):
    params = sum(p.numel() for p in net.parameters())
    madds = net.madds(size)
    if float(madds).is_integer():
        madds = int(madds)
    return {'params': int(params), 'madds': madds}


# ----------------------------------------------------------------------------------------------
# safetensors (F32 only), no dependency on the safetensors package

def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        a = np.ascontiguousarray(t.detach().cpu().numpy(), dtype='<f4')
        b = a.tobytes()
        header[name] = {'dtype': 'F32', 'shape': list(a.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(',', ':')).encode('utf-8')
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    with open(path, 'rb') as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError('%s: too short for a safetensors file' % path)
    (hlen,) = struct.unpack('<Q', data[:8])
    if 8 + hlen > len(data):
        raise ValueError('%s: header length %d past end of file' % (path, hlen))
    header = json.loads(data[8:8 + hlen].decode('utf-8'))
    body = memoryview(data)[8 + hlen:]
    out = OrderedDict()
    for name, info in header.items():
        if name == '__metadata__':
            continue
        if info['dtype'] != 'F32':
            raise ValueError('%s: tensor %s has dtype %s; only F32 is supported' % (path, name, info['dtype']))
        shape = [int(s) for s in info['shape']]
        b, e = info['data_offsets']
        n = int(np.prod(shape)) if shape else 1
        if e - b != 4 * n or e > len(body) or b < 0:
            raise ValueError('%s: tensor %s: bad data_offsets %r for shape %r' % (path, name, (b, e), shape))
        a = np.frombuffer(body[b:e], dtype='<f4').reshape(shape).copy()
        out[name] = torch.from_numpy(a)
    return out


def state_for_save(net):
    """Every state_dict entry except num_batches_tracked (int64; not F32)."""
    return OrderedDict((k, v) for k, v in net.state_dict().items() if not k.endswith('num_batches_tracked'))


def load_weights(net, path):
    tensors = load_safetensors(path)
    sd = net.state_dict()
    missing = [k for k in sd if k not in tensors and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in tensors if k not in sd]
    if missing or unexpected:
        raise KeyError('strict load failed: missing %s unexpected %s' % (missing[:8], unexpected[:8]))
    for k, v in tensors.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise ValueError('shape mismatch for %s: model %s file %s' % (k, tuple(sd[k].shape), tuple(v.shape)))
    # strict=True except for num_batches_tracked, which the file may omit
    full = OrderedDict((k, tensors[k] if k in tensors else sd[k]) for k in sd)
    net.load_state_dict(full, strict=True)
    return net


def random_init(net, seed):
    """he_fout conv init (ProxylessNAS init_model), uniform linear, and non-trivial BN params/stats."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels / m.groups
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / n))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                c = m.num_features
                m.weight.copy_(1.0 + 0.2 * torch.randn(c, generator=g))
                m.bias.copy_(0.1 * torch.randn(c, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                m.weight.copy_((torch.rand(m.weight.shape, generator=g) * 2 - 1) * bound)
                if m.bias is not None:
                    m.bias.copy_((torch.rand(m.bias.shape, generator=g) * 2 - 1) * bound)
    return net


def run_logits(net, x, train=False):
    net.train(train)
    with torch.no_grad():
        return net(x)


# ----------------------------------------------------------------------------------------------
# command line

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = p.add_subparsers(dest='cmd', required=True)
    c = sub.add_parser('count')
    c.add_argument('config')
    c.add_argument('--size', type=int, default=224)
    for name in ('logits', 'init'):
        q = sub.add_parser(name)
        q.add_argument('config')
        q.add_argument('files', nargs='*', help='logits: WEIGHTS.safetensors INPUT.bin OUT.bin '
                       '(WEIGHTS omitted with --random-weights)')
        q.add_argument('--size', type=int, default=224)
        q.add_argument('--shape', default=None, help='N,C,H,W of INPUT.bin (default 1,3,SIZE,SIZE)')
        mode = q.add_mutually_exclusive_group()
        mode.add_argument('--eval', action='store_true', help='BN running stats (default)')
        mode.add_argument('--train', action='store_true', help='BN batch stats')
        q.add_argument('--random-weights', type=int, default=None, metavar='SEED')
        q.add_argument('--save-weights', default=None, metavar='W.safetensors')
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))

    net = build_net(a.config)
    if a.cmd == 'count':
        print(json.dumps(count(net, a.size)))
        return 0

    files = list(a.files)
    if a.random_weights is not None:
        random_init(net, a.random_weights)
        if a.save_weights:
            save_safetensors(a.save_weights, state_for_save(net))
    elif a.cmd == 'init':
        p.error('init needs --random-weights SEED')
    else:
        if not files:
            p.error('logits needs WEIGHTS.safetensors')
        load_weights(net, files.pop(0))
    if a.cmd == 'init' or not files:
        if a.cmd == 'logits' and a.random_weights is None:
            p.error('logits needs INPUT.bin OUT.bin')
        return 0
    if len(files) != 2:
        p.error('logits needs INPUT.bin OUT.bin')
    inp, outp = files
    shape = [int(s) for s in a.shape.split(',')] if a.shape else [1, 3, a.size, a.size]
    if len(shape) != 4:
        p.error('--shape must be N,C,H,W')
    x = np.fromfile(inp, dtype='<f4')
    if x.size != int(np.prod(shape)):
        raise ValueError('%s holds %d floats; --shape %s needs %d' % (inp, x.size, shape, int(np.prod(shape))))
    y = run_logits(net, torch.from_numpy(x.reshape(shape)), train=a.train)
    y.numpy().astype('<f4').tofile(outp)
    return 0


if __name__ == '__main__':
    sys.exit(main())
