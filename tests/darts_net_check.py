#!/usr/bin/python3
"""The DARTS evaluation network mdenas builds equals an independent PyTorch build of
DARTS's NetworkCIFAR (tests/darts_ref.py): same state_dict names and shapes, eval-mode
logits, and one training forward + backward with drop-path, dropout, the auxiliary head
and label smoothing (logits, loss, every gradient, the running statistics after it).

    darts_net_check.py TEST_DARTS_NET

test_darts_net DIR writes the files; `darts_ref.py check DIR` compares them. Exit 0
when all agree, 1 otherwise, 77 when torch is missing.
"""
import os
import subprocess
import sys
import tempfile

try:
    import numpy  # noqa: F401
    import torch  # noqa: F401
except ImportError as e:
    print(f"skip: {e}")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([sys.argv[1], d], capture_output=True, text=True)
        print(r.stdout, r.stderr)
        if r.returncode != 0:
            print("FAIL: test_darts_net could not export")
            return 1
        r = subprocess.run([sys.executable, os.path.join(HERE, "darts_ref.py"), "check", d],
                           capture_output=True, text=True)
        print(r.stdout, r.stderr)
        return 0 if r.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
