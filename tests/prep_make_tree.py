"""A small ImageNet-like tree for imagenet_prep's tests and benchmark, made from
the photos Debian's mate-backgrounds ships (/usr/share/backgrounds/mate): patches
cropped from them and encoded every way ImageNet's files come (baseline,
progressive, 4:2:2, 4:4:4, restart markers, arithmetic coding, EXIF, grayscale),
plus, with bad=True, one file of every messy kind a real tree holds (CMYK and
YCCK JPEGs, PNGs named .JPEG, truncated, empty, random, GIF, 1x1, elongated,
corrupt, a FIFO, symlink loops, an unreadable file...).

make_tree() returns what imagenet_prep must say about each file:
expected[path] = ("accepted", kinds) or ("rejected", reason code), path as in
sources.tsv ("train/<wnid>/<file>", "val/<file>").

Needs /usr/bin/python3 with PIL and numpy (python3-pil, python3-numpy) and
jpegtran (libjpeg-turbo-progs).
Usage: prep_make_tree.py OUT [CLASSES PER_CLASS [clean]]   (clean: no bad files)."""
import glob
import io
import os
import random
import shutil
import struct
import subprocess
import sys

import numpy as np
from PIL import Image

PHOTOS = "/usr/share/backgrounds/mate"
WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331",
         "n01498041", "n01514668"]
# How the good images are encoded, in turn.
STYLES = ["baseline", "progressive", "422", "444", "restart", "exif", "gray", "arith", "q60",
          "baseline"]


class Missing(Exception):
    """Something the tree needs is not installed (the test skips)."""


def photos():
    files = sorted(glob.glob(os.path.join(PHOTOS, "*", "*.jpg")))
    if len(files) < 4:
        raise Missing(f"no photos in {PHOTOS} (apt-get install mate-backgrounds)")
    if not shutil.which("jpegtran"):
        raise Missing("no jpegtran (apt-get install libjpeg-turbo-progs)")
    return files


class Patches:
    """Random crops of the photos, reduced first so a crop is quick."""

    def __init__(self, rng):
        self.rng = rng
        self.images = []
        for f in photos()[:8]:
            im = Image.open(f)
            im.draft("RGB", (im.width // 2, im.height // 2))
            self.images.append(im.convert("RGB"))

    def get(self, w, h):
        im = self.images[self.rng.randrange(len(self.images))]
        scale = max(w / im.width, h / im.height, 1.0)
        if scale > 1.0:
            im = im.resize((int(im.width * scale) + 1, int(im.height * scale) + 1))
        x = self.rng.randrange(im.width - w + 1)
        y = self.rng.randrange(im.height - h + 1)
        return im.crop((x, y, x + w, y + h))


def jpeg_bytes(im, style="baseline", quality=88):
    b = io.BytesIO()
    if style == "gray":
        im = im.convert("L")
    kw = {"quality": quality}
    if style == "progressive":
        kw["progressive"] = True
    elif style == "422":
        kw["subsampling"] = 1
    elif style == "444":
        kw["subsampling"] = 0
    elif style == "q60":
        kw["quality"] = 60
    elif style == "exif":
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90 (ignored, as PIL and torchvision do)
        exif[0x010F] = "mdenas test camera"
        kw["exif"] = exif.tobytes()
    im.save(b, "JPEG", **kw)
    data = b.getvalue()
    if style in ("restart", "arith"):
        flag = ["-restart", "1"] if style == "restart" else ["-arithmetic"]
        data = subprocess.run(["jpegtran"] + flag, input=data, capture_output=True,
                              check=True).stdout
    return data


def png_bytes(im):
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


def cmyk_jpeg(im):
    """A CMYK JPEG as Photoshop writes them (Adobe marker, inverted), with real black ink."""
    a = np.asarray(im.convert("RGB")).astype(np.int32)
    ks = 255 - (255 - a.max(axis=2)) // 2  # stored (inverted) K
    cs = np.clip(np.round(a * 255.0 / ks[..., None]), 0, 255).astype(np.uint8)
    pil = Image.fromarray(np.dstack([255 - cs, 255 - ks.astype(np.uint8)]), "CMYK")
    b = io.BytesIO()
    pil.save(b, "JPEG", quality=92)
    return b.getvalue()


def ycck_jpeg(im):
    """A YCCK JPEG (Adobe transform 2): the components hold Y, Cb, Cr of the
    inverted CMY, and K; PIL writes them through its CMYK path, then the
    Adobe marker's transform byte says YCCK."""
    a = np.asarray(im.convert("RGB")).astype(np.int32)
    ks = 255 - (255 - a.max(axis=2)) // 2
    cs = np.clip(np.round(a * 255.0 / ks[..., None]), 0, 255).astype(np.uint8)
    ycc = np.asarray(Image.fromarray(255 - cs, "RGB").convert("YCbCr")).astype(np.uint8)
    comp = np.dstack([ycc, ks.astype(np.uint8)])
    b = io.BytesIO()
    Image.fromarray(255 - comp, "CMYK").save(b, "JPEG", quality=92)
    d = bytearray(b.getvalue())
    i = d.find(b"Adobe")
    assert i > 0 and d[i + 11] == 0, "PIL wrote no Adobe marker"
    d[i + 11] = 2
    return bytes(d)


def with_size_in_sof(data, w, h):
    """The same JPEG claiming another size in its frame header."""
    d = bytearray(data)
    i = d.find(b"\xff\xc0")
    if i < 0:
        i = d.find(b"\xff\xc2")
    struct.pack_into(">HH", d, i + 5, h, w)
    return bytes(d)


def with_bad_dht(data):
    d = bytearray(data)
    i = d.find(b"\xff\xc4")
    d[i + 4] = 0x35  # table class 3, id 5: "Bogus DHT index"
    return bytes(d)


def with_garbage_before_eoi(data):
    assert data[-2:] == b"\xff\xd9"
    return data[:-2] + b"\x12\x34\x56" + data[-2:]


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def make_tree(root, classes=4, per_class=12, val_per_class=3, bad=True, seed=1):
    rng = random.Random(seed)
    patches = Patches(rng)
    wnids = WNIDS[:classes]
    expected = {}
    train = os.path.join(root, "train")
    for c, wnid in enumerate(wnids):
        for k in range(per_class):
            style = STYLES[(c * per_class + k) % len(STYLES)]
            w, h = rng.randrange(150, 700), rng.randrange(150, 700)
            name = f"{wnid}_{k + 1}.JPEG"
            write(os.path.join(train, wnid, name), jpeg_bytes(patches.get(w, h), style))
            expected[f"train/{wnid}/{name}"] = ("accepted", "gray" if style == "gray" else "-")
    val = os.path.join(root, "val")
    val_labels = []
    n = 0
    for c, wnid in enumerate(wnids):
        for k in range(val_per_class):
            n += 1
            name = f"ILSVRC2012_val_{n:08d}.JPEG"
            w, h = [(400, 300), (90, 120), (1000, 160)][k % 3]
            write(os.path.join(val, name), jpeg_bytes(patches.get(w, h), STYLES[n % 4]))
            val_labels.append((name, wnid))
            expected[f"val/{name}"] = ("accepted", "-")
    if bad:
        add_bad_files(root, wnids, patches, expected, val_labels)
    write_labels(root, wnids, val_labels)
    return {"root": root, "classes": wnids, "expected": expected, "val_labels": val_labels}


def add_bad_files(root, wnids, patches, expected, val_labels):
    d = os.path.join(root, "train", wnids[0])
    d2 = os.path.join(root, "train", wnids[1 % len(wnids)])
    good = jpeg_bytes(patches.get(320, 240))
    photo = patches.get(360, 280)
    cases = {
        "cmyk.JPEG": (cmyk_jpeg(photo), "accepted", "cmyk"),
        "ycck.JPEG": (ycck_jpeg(photo), "accepted", "ycck"),
        "png_named.JPEG": (png_bytes(patches.get(300, 280)), "accepted", "png"),
        "gray_alpha_png.JPEG": (png_bytes(patches.get(200, 300).convert("LA")), "accepted",
                                "png+gray"),
        "small.JPEG": (jpeg_bytes(patches.get(40, 30)), "accepted", "-"),
        "okwide.JPEG": (jpeg_bytes(patches.get(1200, 100)), "accepted", "-"),
        "fake_huge.JPEG": (with_size_in_sof(good, 30000, 20000), "rejected", "too_large"),
        "trunc_2.JPEG": (good[:2], "rejected", "truncated"),
        "trunc_head.JPEG": (good[:120], "rejected", "truncated"),
        "trunc_half.JPEG": (good[:len(good) // 2], "rejected", "truncated"),
        "trunc_eoi.JPEG": (good[:-2], "rejected", "truncated"),
        "trunc_png.JPEG": (png_bytes(photo)[:5000], "rejected", "truncated"),
        "empty.JPEG": (b"", "rejected", "empty"),
        "random.JPEG": (bytes(random.Random(7).randrange(256) for _ in range(3000)), "rejected",
                        "not_an_image"),
        "text.JPEG": (b"this is not an image\n", "rejected", "not_an_image"),
        "gif.JPEG": (gif_bytes(photo), "rejected", "unsupported"),
        "tiny.JPEG": (jpeg_bytes(patches.get(1, 1)), "rejected", "too_small"),
        "thin.JPEG": (jpeg_bytes(patches.get(4000, 3)), "rejected", "too_small"),
        "wide.JPEG": (jpeg_bytes(patches.get(4000, 40)), "rejected", "bad_aspect"),
        "garbage.JPEG": (with_garbage_before_eoi(good), "rejected", "corrupt"),
        "bad_dht.JPEG": (with_bad_dht(good), "rejected", "corrupt"),
    }
    # Names sources.tsv must escape (a tab, a backslash) or pass through as bytes (Latin-1).
    cases["tab\there \\ back.JPEG"] = (jpeg_bytes(patches.get(200, 260)), "accepted", "-")
    cases[os.fsdecode(b"latin1_caf\xe9.JPEG")] = (jpeg_bytes(patches.get(260, 200)), "accepted", "-")
    for name, (data, status, why) in cases.items():
        write(os.path.join(d, name), data)
        expected[f"train/{wnids[0]}/{name}"] = (status, why)
    # A large photo (17.9 megapixels, progressive): decoded at 1/8 scale.
    big = os.path.join(PHOTOS, "abstract", "Elephants_5640x3172.jpg")
    if os.path.exists(big):
        shutil.copy(big, os.path.join(d2, "huge.JPEG"))
        expected[f"train/{wnids[1 % len(wnids)]}/huge.JPEG"] = ("accepted", "-")
    os.mkfifo(os.path.join(d, "fifo.JPEG"))
    expected[f"train/{wnids[0]}/fifo.JPEG"] = ("rejected", "not_a_file")
    os.symlink("loop.JPEG", os.path.join(d, "loop.JPEG"))
    expected[f"train/{wnids[0]}/loop.JPEG"] = ("rejected", "not_a_file")
    os.symlink("no-such-file", os.path.join(d, "dangling.JPEG"))
    expected[f"train/{wnids[0]}/dangling.JPEG"] = ("rejected", "missing")
    os.mkdir(os.path.join(d, "folder.JPEG"))
    expected[f"train/{wnids[0]}/folder.JPEG"] = ("rejected", "not_a_file")
    noperm = os.path.join(d2, "noperm.JPEG")
    write(noperm, jpeg_bytes(patches.get(300, 300)))
    os.chmod(noperm, 0)
    # root reads it anyway
    expected[f"train/{wnids[1 % len(wnids)]}/noperm.JPEG"] = (
        ("accepted", "-") if os.geteuid() == 0 else ("rejected", "unreadable"))
    write(os.path.join(root, "train", "README.txt"), b"not a class\n")
    expected["train/README.txt"] = ("rejected", "no_class")
    # Validation: a damaged file, one no label names, one of an unknown class.
    val = os.path.join(root, "val")
    write(os.path.join(val, "ILSVRC2012_val_00000090.JPEG"), good[: len(good) // 3])
    val_labels.append(("ILSVRC2012_val_00000090.JPEG", wnids[0]))
    expected["val/ILSVRC2012_val_00000090.JPEG"] = ("rejected", "truncated")
    write(os.path.join(val, "ILSVRC2012_val_00000091.JPEG"), good)
    val_labels.append(("ILSVRC2012_val_00000091.JPEG", "n99999999"))
    expected["val/ILSVRC2012_val_00000091.JPEG"] = ("rejected", "unknown_class")
    write(os.path.join(val, "unlabelled.JPEG"), good)
    expected["val/unlabelled.JPEG"] = ("rejected", "no_label")


def gif_bytes(im):
    b = io.BytesIO()
    im.convert("P").save(b, "GIF")
    return b.getvalue()


def write_labels(root, wnids, val_labels):
    """The three forms of validation labels, all saying the same thing:
    labels.txt ("FILE WNID"), LOC_val_solution.csv (Kaggle), and the devkit's
    ground truth (ids by line number) with an id map in a shuffled order."""
    with open(os.path.join(root, "labels.txt"), "w") as f:
        for name, wnid in val_labels:
            f.write(f"{name} {wnid}\n")
    with open(os.path.join(root, "LOC_val_solution.csv"), "w") as f:
        f.write("ImageId,PredictionString\n")
        for name, wnid in val_labels:
            f.write(f"{name[:-5]},{wnid} 10 20 110 120 {wnid} 5 5 50 50\n")
    everyone = sorted(set(w for _, w in val_labels))
    order = list(reversed(everyone))  # the devkit's ids are not sorted-wnid order
    ids = {w: i + 1 for i, w in enumerate(order)}
    with open(os.path.join(root, "id_map.txt"), "w") as f:
        for w in order:
            f.write(f"{ids[w]} {w} some words\n")
    by_number = {int(n[15:23]): w for n, w in val_labels if n.startswith("ILSVRC2012_val_")}
    last = max(by_number)
    with open(os.path.join(root, "ILSVRC2012_validation_ground_truth.txt"), "w") as f:
        for i in range(1, last + 1):
            f.write(f"{ids[by_number.get(i, everyone[0])]}\n")


def class_folder_val(root, info):
    """Move the flat validation folder into val/<wnid>/ folders (the other layout)."""
    val = os.path.join(root, "val")
    for name, wnid in info["val_labels"]:
        src = os.path.join(val, name)
        if wnid not in info["classes"] or not os.path.exists(src):
            continue
        os.makedirs(os.path.join(val, wnid), exist_ok=True)
        os.rename(src, os.path.join(val, wnid, name))


if __name__ == "__main__":
    if (len(sys.argv) not in (2, 4, 5) or (len(sys.argv) == 5 and sys.argv[4] != "clean") or
            sys.argv[1].startswith("-")):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    args = [int(a) for a in sys.argv[2:4]]
    info = make_tree(sys.argv[1], *args, bad=len(sys.argv) != 5)
    print(f"{len(info['expected'])} files in {sys.argv[1]}")
