#!/usr/bin/python3
"""A mobile network exported by mdenas loads in an independent PyTorch build of the
ProxylessNAS model zoo's nets (tests/proxyless_ref.py) and gives mdenas's logits.

    mobile_export_check.py TEST_MOBILE FIXTURE_DIR

test_mobile writes net.config (the ProxylessNAS layout), weights.safetensors (model-zoo
state_dict names, BN running statistics after three training passes), input.bin and
its eval-mode logits.bin; proxyless_ref.py builds the net from net.config, loads the
weights strictly (every name, no extra) and computes the logits of the same input.
Exit 0 when they agree to 1e-4 (relative to the largest logit), 1 otherwise, 77 when
torch is missing.
"""
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch  # noqa: F401  (proxyless_ref.py needs it)
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    test_mobile, fixtures = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([test_mobile, fixtures, d], capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout, r.stderr)
            print("FAIL: test_mobile could not export")
            return 1
        logits = np.fromfile(os.path.join(d, "logits.bin"), dtype="<f4")
        x = np.fromfile(os.path.join(d, "input.bin"), dtype="<f4")
        n = x.size // (3 * 32 * 32)
        out = os.path.join(d, "torch.bin")
        r = subprocess.run([sys.executable, os.path.join(HERE, "proxyless_ref.py"), "logits",
                            os.path.join(d, "net.config"), os.path.join(d, "weights.safetensors"),
                            os.path.join(d, "input.bin"), out, "--shape", f"{n},3,32,32",
                            "--eval"], capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout, r.stderr)
            print("FAIL: proxyless_ref.py refused the export")
            return 1
        ref = np.fromfile(out, dtype="<f4")
        if ref.shape != logits.shape:
            print(f"FAIL: {ref.size} logits from PyTorch, {logits.size} from mdenas")
            return 1
        err = float(np.abs(ref - logits).max() / max(np.abs(ref).max(), 1e-6))
        print(f"mdenas export -> ProxylessNAS builder: {logits.size} logits, relative error "
              f"{err:.3g}")
        if err > 1e-4:
            print(f"FAIL: mdenas {logits[:6]} PyTorch {ref[:6]}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
