#!/usr/bin/python3
"""Writes the seed inputs of fuzz_jpeg (needs Pillow and mate-backgrounds):
   /usr/bin/python3 tests/fuzz/gen_jpeg_corpus.py [tests/fuzz/corpus]
Each seed is 6 parameter bytes (see fuzz_jpeg.c) and a small JPEG made from a
mate-backgrounds photo: 4 sizes x 4:4:4, 4:2:2, 4:2:0 x baseline, progressive,
and a grayscale one per size."""
import os
import random
import sys

from PIL import Image

OUT = os.path.join(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus"), "jpeg")
PHOTO = "/usr/share/backgrounds/mate/nature/FreshFlower.jpg"


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(1)
    im = Image.open(PHOTO).convert("RGB")
    k = 0
    for size in [(33, 17), (64, 48), (9, 9), (120, 70)]:
        small = im.resize(size)
        variants = [(small, dict(subsampling=s, progressive=p)) for s in (0, 1, 2) for p in (False, True)]
        variants.append((small.convert("L"), {}))
        for img, opts in variants:
            path = os.path.join(OUT, f"seed-{k:02d}.jpg")
            img.save(path, quality=80, **opts)
            with open(path, "rb") as f:
                data = f.read()
            with open(path, "wb") as f:
                f.write(bytes(rng.randrange(256) for _ in range(6)) + data)
            k += 1


if __name__ == "__main__":
    main()
