#!/usr/bin/env python3
"""End-to-end tests of --comm, the communicator's path (CPU only: no GPU in CI).

  comm_e2e.py MDENAS_MPI TEST

Runs go through dist_e2e.py's mpirun helpers on its tiny synthetic settings. TEST:

  nccl_on_cpu   --comm nccl --device cpu with -np 1 and -np 2: exit 2 within 60 s on
                every rank (no rank left in a collective), the message names --comm nccl
                and the CUDA backend, and the run directory was not created
  bad_value     --comm gloo: exit 2, the message names --comm 'gloo'; nothing created
  cpu_note      --comm auto (-np 1) and --comm mpi (-np 2) on the CPU: the run ends,
                search.log holds "comm: host MPI: CPU backend" once, config.json
                records the option ("comm": "auto" / "mpi"), and both runs end with
                the same state.json (p, H^e, genotype) as runs without --comm

Exit: 0 pass, 1 fail, 2 usage, 77 skip.
"""
import os
import sys
import time

import dist_e2e as d
from e2e_common import Fail, check, e2e_main, load_json


def t_nccl_on_cpu(tmp):
    for np_ in (1, 2):
        out_dir = os.path.join(tmp, f"np{np_}")
        t = time.time()
        out = d.mpirun(np_, d.search_args(out_dir, "--epochs", "1", "--device", "cpu",
                                          "--comm", "nccl"), rc=2, timeout=120)
        dt = time.time() - t
        check(dt < 60, f"-np {np_}: {dt:.0f} s to refuse --comm nccl")
        check("--comm nccl" in out and "CUDA backend" in out,
              f"-np {np_}: the message does not name --comm nccl and the CUDA backend:\n{out[-2000:]}")
        check(not os.path.exists(out_dir), f"-np {np_}: {out_dir} was created")


def t_bad_value(tmp):
    out_dir = os.path.join(tmp, "run")
    out = d.mpirun(1, d.search_args(out_dir, "--epochs", "1", "--comm", "gloo"), rc=2,
                   timeout=120)
    check("--comm 'gloo'" in out, f"the message does not name --comm 'gloo':\n{out[-2000:]}")
    check(not os.path.exists(out_dir), f"{out_dir} was created")


def final_state(run_dir):
    """state.json: p and H^e of every distribution, the genotype."""
    return load_json(os.path.join(run_dir, "state.json"))


def t_cpu_note(tmp):
    extra = ["--epochs", "1", "--period-steps", "4"]
    ref = os.path.join(tmp, "plain")
    d.mpirun(1, d.search_args(ref, *extra))
    ref2 = os.path.join(tmp, "plain2")
    d.mpirun(2, d.search_args(ref2, *extra))
    for np_, want, base in ((1, "auto", ref), (2, "mpi", ref2)):
        run = os.path.join(tmp, want)
        d.mpirun(np_, d.search_args(run, *extra, "--comm", want))
        with open(os.path.join(run, "search.log"), encoding="utf-8") as f:
            log = f.read()
        n = log.count("comm: host MPI: CPU backend")
        check(n == 1, f"-np {np_} --comm {want}: the note appears {n} times in search.log:\n"
                      f"{log[:2000]}")
        cfg = load_json(os.path.join(run, "config.json"))
        check(cfg.get("comm") == want, f"config.json comm {cfg.get('comm')!r}, want {want!r}")
        check(final_state(run) == final_state(base),
              f"-np {np_} --comm {want}: state.json differs from the run without --comm")


TESTS = {"nccl_on_cpu": t_nccl_on_cpu, "bad_value": t_bad_value, "cpu_note": t_cpu_note}

if __name__ == "__main__":
    sys.exit(e2e_main(__doc__, TESTS, d.init, skips=(d.Skip,)))
