#!/usr/bin/python3
"""src/data/jpeg.c against Pillow, the library torchvision's ImageNet transforms run on.

usage: /usr/bin/python3 tests/jpeg_pil_check.py BUILD/tests/test_jpeg

  resize  md_resize_rgb == Image.crop(box).resize(size, BILINEAR) (then FLIP_LEFT_RIGHT
          when mirrored), byte for byte: the same triangle filter with the same 22-bit
          fixed point, horizontal pass first into 8-bit rows, then vertical.
  decode  md_jpeg_decode_full == Image.open(...).convert("RGB"), byte for byte: both are
          libjpeg-turbo with the accurate integer IDCT and fancy upsampling.
  crop    md_jpeg_decode_crop where no reduced DCT scale covers the output (8/8) ==
          torchvision's resized_crop + hflip on the Pillow image, byte for byte.
Exit 0 when all agree, 1 on a difference, 77 (a CTest skip) without Pillow.
"""
import os
import random
import subprocess
import sys
import tempfile

try:
    from PIL import Image
except ImportError:
    print("jpeg_pil_check: Pillow is not installed (apt-get install python3-pil); skipped")
    sys.exit(77)

PHOTO = "/usr/share/backgrounds/mate/nature/FreshFlower.jpg"


def run(tool, *args):
    subprocess.run([tool, *map(str, args)], check=True)


def diff(a, b):
    """(count of differing bytes, largest difference)."""
    if a.size != b.size:
        return (-1, -1)
    x, y = a.tobytes(), b.tobytes()
    d = [abs(p - q) for p, q in zip(x, y) if p != q]
    return (len(d), max(d) if d else 0)


def source_images(rng, tmp):
    """A noisy synthetic image (the worst case for rounding) and a photo region."""
    w, h = 173, 129
    noise = Image.frombytes("RGB", (w, h), rng.randbytes(w * h * 3))
    smooth = Image.linear_gradient("L").resize((w, h)).convert("RGB")
    yield "noise+gradient", Image.blend(noise, smooth, 0.5)
    if os.path.exists(PHOTO):
        with Image.open(PHOTO) as im:
            yield "FreshFlower region", im.convert("RGB").crop((300, 200, 300 + 417, 200 + 311))


def random_box(rng, w, h):
    cw, ch = rng.randint(1, w), rng.randint(1, h)
    return rng.randint(0, w - cw), rng.randint(0, h - ch), cw, ch


def same_as_pillow(tool, mode, path, img, box, ow, oh, mirror, tmp, label):
    """Run `test_jpeg MODE PATH box ow oh mirror OUT` and compare with Pillow's
    crop + resize(BILINEAR) (+ FLIP_LEFT_RIGHT) of img; True when equal."""
    x, y, cw, ch = box
    out = os.path.join(tmp, "out.ppm")
    run(tool, mode, path, x, y, cw, ch, ow, oh, mirror, out)
    want = img.crop((x, y, x + cw, y + ch)).resize((ow, oh), Image.BILINEAR)
    if mirror:
        want = want.transpose(Image.FLIP_LEFT_RIGHT)
    with Image.open(out) as got:
        n, m = diff(got.convert("RGB"), want)
    if n:
        print(f"{mode} {label} {cw}x{ch}@({x},{y}) -> {ow}x{oh} mirror {mirror}: "
              f"{n} bytes differ, max {m}")
    return n == 0


def check_resize(tool, tmp, rng):
    bad = cases = 0
    for name, img in source_images(rng, tmp):
        src = os.path.join(tmp, "src.ppm")
        img.save(src)
        w, h = img.size
        for _ in range(40):
            box = random_box(rng, w, h)
            ow, oh = rng.choice([(224, 224), (37, 19), (w, h), (3, 200), (box[2], box[3])])
            cases += 1
            bad += not same_as_pillow(tool, "resize", src, img, box, ow, oh, rng.randint(0, 1),
                                      tmp, name)
    print(f"jpeg_pil_check: resize: {cases - bad}/{cases} crops equal to Pillow's")
    return bad


def check_decode(tool, tmp, rng):
    bad = cases = 0
    for name, img in source_images(rng, tmp):
        for sub, prog in [(0, False), (1, True), (2, False), (2, True)]:
            jpg = os.path.join(tmp, "in.jpg")
            img.save(jpg, quality=90, subsampling=sub, progressive=prog)
            out = os.path.join(tmp, "out.ppm")
            run(tool, "decode", jpg, out)
            with Image.open(jpg) as ref, Image.open(out) as got:
                ref = ref.convert("RGB")
                n, m = diff(got.convert("RGB"), ref)
            cases += 1
            if n:
                bad += 1
                print(f"decode {name} subsampling {sub} progressive {prog}: {n} bytes differ, max {m}")
            w, h = ref.size
            # Outputs wider than half the crop: no reduced DCT scale covers them (8/8).
            for _ in range(15):
                box = random_box(rng, w, h)
                lo = box[2] // 2 + 1
                ow, oh = rng.randint(lo, max(lo, 300)), rng.randint(1, 300)
                cases += 1
                bad += not same_as_pillow(tool, "crop", jpg, ref, box, ow, oh, rng.randint(0, 1),
                                          tmp, f"{name} subsampling {sub}")
    print(f"jpeg_pil_check: decode and 8/8 crops: {cases - bad}/{cases} equal to Pillow's")
    return bad


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    tool = sys.argv[1]
    rng = random.Random(20261201)
    with tempfile.TemporaryDirectory() as tmp:
        bad = check_resize(tool, tmp, rng) + check_decode(tool, tmp, rng)
    if bad:
        print(f"jpeg_pil_check: {bad} case(s) differ from Pillow")
        return 1
    print("jpeg_pil_check: all cases equal to Pillow's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
