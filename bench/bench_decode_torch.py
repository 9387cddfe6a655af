#!/usr/bin/python3
"""The peer of bench_decode: torchvision's ImageNet training transform on Pillow, one
thread. usage: bench_decode_torch.py [--seconds S] [--full] FILE.jpg...
  default  Image.open + convert("RGB"), RandomResizedCrop(224), RandomHorizontalFlip,
           ToTensor, Normalize (torchvision.transforms, as its ImageNet reference does)
  --full   Image.open + convert("RGB") only (the full decode)
Prints one JSON line; exit 77 when torch or torchvision is missing."""
import io
import json
import sys
import time

try:
    import torch
    import torchvision
    import torchvision.transforms as T
    from PIL import Image
except ImportError as e:
    print(f"bench_decode_torch: {e} (apt-get install python3-torchvision)", file=sys.stderr)
    sys.exit(77)


def main():
    args = sys.argv[1:]
    seconds, full = 3.0, False
    while args and args[0].startswith("--"):
        if args[0] == "--seconds":
            seconds = float(args[1])
            args = args[2:]
        elif args[0] == "--full":
            full = True
            args = args[1:]
        else:
            sys.exit(__doc__)
    torch.set_num_threads(1)
    data = [open(f, "rb").read() for f in args]
    tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    torch.manual_seed(1)
    done, check = 0, 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        for b in data:
            img = Image.open(io.BytesIO(b)).convert("RGB")
            if full:
                check += img.getpixel((0, 0))[0]
            else:
                check += float(tf(img)[1, 112, 112])
            done += 1
    el, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"bench": "decode", "impl": "torchvision", "mode": "full_decode" if full else
                      "rrc_flip_normalize", "threads": 1, "files": len(data), "size": 224,
                      "torchvision": torchvision.__version__, "images": done,
                      "seconds": round(el, 3), "images_per_s": round(done / el, 1),
                      "cpu_seconds": round(cpu, 3), "images_per_cpu_s": round(done / cpu, 1),
                      "checksum": round(check, 3)}))


if __name__ == "__main__":
    main()
