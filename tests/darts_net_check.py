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
# DARTS's published second-order cell (quark0/darts cnn/genotypes.py), for the counts.
DARTS_V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
            "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
            "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
            "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
            "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
            "reduce_concat=[2, 3, 4, 5])")


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
        counts = [l.split() for l in r.stdout.splitlines() if l.startswith("count ")]
        sys.path.insert(0, HERE)
        import darts_ref
        bad = 0
        for _, name, cells, c, with_aux, without in counts:
            geno = darts_ref.MDENAS if name == "mdenas" else darts_ref.parse_genotype(DARTS_V2)
            net = darts_ref.NetworkCIFAR(int(c), 10, int(cells), True, geno)
            total = sum(p.numel() for p in net.parameters())
            head = sum(p.numel() for n, p in net.named_parameters() if n.startswith("auxiliary"))
            ok = total == float(with_aux) and total - head == float(without)
            bad += not ok
            print("%s count %s %s/%s: mdenas %s (%s without the head), PyTorch %d (%d)"
                  % ("ok  " if ok else "FAIL", name, cells, c, with_aux, without, total,
                     total - head))
        if not counts:
            print("FAIL: test_darts_net printed no counts")
            bad += 1
        r = subprocess.run([sys.executable, os.path.join(HERE, "darts_ref.py"), "check", d],
                           capture_output=True, text=True)
        print(r.stdout, r.stderr)
        return 0 if r.returncode == 0 and not bad else 1


if __name__ == "__main__":
    sys.exit(main())
