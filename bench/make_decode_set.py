#!/usr/bin/python3
"""Write the JPEG set bench/decode_bench.sh measures: N crops of the mate-backgrounds
photos, each scaled to a short side of 256 and stored at quality 90 with 4:2:0 chroma,
as imagenet_prep stores ImageNet. usage: make_decode_set.py OUT_DIR [N]"""
import glob
import os
import random
import sys

from PIL import Image

def main():
    out, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 64
    photos = sorted(glob.glob("/usr/share/backgrounds/mate/*/*.jpg"))
    if not photos:
        sys.exit("make_decode_set: no /usr/share/backgrounds/mate/*/*.jpg (apt-get install mate-backgrounds)")
    rng = random.Random(0)
    os.makedirs(out, exist_ok=True)
    for k in range(n):
        with Image.open(photos[k % len(photos)]) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = rng.uniform(0.3, 1.0)
            cw = int(w * s)
            ch = min(h, int(h * s * rng.uniform(0.75, 1.33)))
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            crop = im.crop((x, y, x + cw, y + ch))
            f = 256 / min(cw, ch)
            crop = crop.resize((max(256, round(cw * f)), max(256, round(ch * f))), Image.BICUBIC)
            crop.save(os.path.join(out, f"{k:03d}.jpg"), quality=90, subsampling=2)

if __name__ == "__main__":
    main()
