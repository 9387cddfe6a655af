#!/usr/bin/python3
"""The mobile search step in PyTorch (CPU or CUDA): the nets bench_step --space mobile
sampled (its --archs-out: exports holding ProxylessNAS net configs), built by the
independent ProxylessNAS builder tests/proxyless_ref.py, trained with the same
recipe (label smoothing 0.1, SGD Nesterov momentum 0.9, weight decay 4e-5 except on
BN, no clip) on a random batch. JSON lines like bench_step's."""
import argparse
import json
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from proxyless_ref import build_net  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", required=True, help="JSON list written by bench_step --archs-out")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)  # as mdenas does
    torch.manual_seed(1)
    dev = torch.device(a.device)
    gpu = a.device == "cuda"
    if gpu:
        torch.backends.cudnn.benchmark = True
    archs = json.load(open(a.archs))
    total = 0.0
    for i, arch in enumerate(archs):
        net = build_net(arch["net_config"]).to(dev).train()
        classes = arch["net_config"]["classifier"]["out_features"]
        x = (torch.rand(a.batch, 3, a.size, a.size) * 2 - 1).to(dev)
        y = torch.randint(0, classes, (a.batch,)).to(dev)
        bn = [p for n, p in net.named_parameters() if ".bn." in n or n.startswith("bn.")]
        ids = {id(p) for p in bn}
        rest = [p for p in net.parameters() if id(p) not in ids]
        opt = torch.optim.SGD([{"params": rest, "weight_decay": 4e-5},
                               {"params": bn, "weight_decay": 0.0}],
                              lr=0.025, momentum=0.9, nesterov=True)
        for s in range(a.warmup + a.steps):
            if s == a.warmup:
                if gpu:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
            loss.backward()
            opt.step()
        if gpu:
            torch.cuda.synchronize()
        ms = 1e3 * (time.perf_counter() - t0) / a.steps
        total += ms
        print(json.dumps({"bench": "step", "impl": "pytorch", "space": "mobile", "arch": i,
                          "batch": a.batch, "size": a.size, "threads": a.threads,
                          "ms_per_step": round(ms, 3), "img_per_s": round(1e3 * a.batch / ms, 1)}),
              flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"bench": "step_summary", "impl": "pytorch", "space": "mobile",
                      "device": a.device, "batch": a.batch, "size": a.size, "threads": a.threads,
                      "archs": len(archs), "ms_per_step": round(total / len(archs), 3),
                      "img_per_s": round(1e3 * a.batch * len(archs) / total, 1),
                      "peak_rss_mb": round(rss, 1),
                      "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 1048576.0, 1)
                      if gpu else 0.0, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
