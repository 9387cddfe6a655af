#!/usr/bin/env python3
"""Write the searched-vs-random report (docs/results.md) from the runs scripts/results.sh made.

    results_report.py OUT_DIR [REPORT]        (REPORT default: docs/results.md)

OUT_DIR holds search-<tag>-<seed>/ (or search-<seed>/, tag "tiny"), train-searched-*/,
train-random-*/ and optionally rankcheck/. Standard library only.
"""
import glob
import json
import math
import os
import re
import statistics
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def tied(search_dir):
    """Edges whose chosen op is not ahead of the runner-up, from state.json's p."""
    st = load(os.path.join(search_dir, 'state.json'))
    n = 0
    total = 0
    for key in ('p_normal', 'p_reduce'):
        for row in st.get(key, []):
            ops = sorted(row[1:], reverse=True)  # none (index 0) is never derived
            total += 1
            n += ops[0] - ops[1] <= 1e-12
    return n, total


def entropy(search_dir):
    st = load(os.path.join(search_dir, 'state.json'))
    hs = []
    for key in ('p_normal', 'p_reduce'):
        for row in st.get(key, []):
            hs.append(-sum(p * math.log(p) for p in row if p > 0))
    return statistics.mean(hs) if hs else float('nan')


def summary(xs):
    if not xs:
        return 'n/a'
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return '%.4f ± %.4f (min %.4f, max %.4f, n = %d)' % (statistics.mean(xs), sd, min(xs),
                                                         max(xs), len(xs))


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    report = sys.argv[2] if len(sys.argv) == 3 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), '..', 'docs', 'results.md')
    rand = []
    for d in sorted(glob.glob(os.path.join(out, 'train-random-*'))):
        r = os.path.join(d, 'result.json')
        if os.path.exists(r):
            rand.append((os.path.basename(d), load(r)))
    searched = {}
    for d in sorted(glob.glob(os.path.join(out, 'train-searched-*'))):
        r = os.path.join(d, 'result.json')
        m = re.match(r'train-searched-(?:(.+)-)?(\d+)$', os.path.basename(d))
        if os.path.exists(r) and m:
            tag = m.group(1) or 'per-epoch'
            sdir = os.path.join(out, 'search-%s' % m.group(2) if tag == 'per-epoch' and
                                os.path.isdir(os.path.join(out, 'search-%s' % m.group(2)))
                                else 'search-%s-%s' % (tag, m.group(2)))
            searched.setdefault(tag, []).append((int(m.group(2)), load(r), sdir))
    racc = [r['test_top1'] for _, r in rand]
    lines = []
    w = lines.append
    w('# Results: does the search beat chance? (Fashion-MNIST, 2 CPU cores)')
    w('')
    w('Regenerate with `scripts/results.sh` (about an hour on 2 cores; every run in it')
    w('resumes), which ends by running `scripts/results_report.py` to write this page.')
    w('')
    w('## The experiment')
    w('')
    w('- Searches: the README main job\'s settings (`mdenas_mpi search --preset tiny --seed S`')
    w('  for S = 1, 2, 3: 5 cells, C=8, 10 epochs of 78 steps on 5000 + 5000 images of the')
    w('  first 10000) in two forms: **per-epoch**, the preset before these results (one')
    w('  sampling period per epoch, 10 periods, validated on the whole split:')
    w('  `--period-steps 0 --val-batches 0`), and **30 periods**, the preset now (periods of')
    w('  26 steps, each validated on 16 batches of 64 images).')
    w('- Random architectures: 10 genotypes drawn uniformly from the DARTS cell space')
    w('  (`scripts/random_genotypes.py 10 2026`: per node two distinct inputs, each with one')
    w('  of the seven ops other than `none`), DARTS\'s random-search baseline.')
    w('- Every architecture, searched or random, trained from scratch by')
    w('  `mdenas_mpi train --preset fashion-final --seed 1`: the DARTS evaluation network at')
    w('  5 cells, C=8, 4 epochs on the first 10000 training images, batch 64, SGD lr 0.05')
    w('  cosine to 0, cutout 8, drop-path 0.2, dropout 0.2, one training seed for all;')
    w('  accuracy is top-1 on the 10000 test images after the last epoch.')
    w('')
    w('## Test accuracy')
    w('')
    w('| architecture | test top-1 | test top-5 | parameters | tied edges of 28 | mean entropy |')
    w('|---|---|---|---|---|---|')
    for tag in sorted(searched):
        for seed, r, sdir in sorted(searched[tag]):
            t, n = tied(sdir) if os.path.exists(os.path.join(sdir, 'state.json')) else (0, 0)
            h = entropy(sdir) if os.path.exists(os.path.join(sdir, 'state.json')) else float('nan')
            w('| searched (%s, seed %d) | %.4f | %.4f | %d | %d | %.3f |'
              % (tag, seed, r['test_top1'], r['test_top5'], r['params'], t, h))
    for name, r in rand:
        w('| %s | %.4f | %.4f | %d | | |' % (name, r['test_top1'], r['test_top5'], r['params']))
    w('')
    w('(Entropy of a uniform distribution over the 8 ops: %.3f.)' % math.log(8))
    w('')
    w('## Summary')
    w('')
    w('- Random architectures: %s' % summary(racc))
    if racc:
        w('  (median %.4f)' % statistics.median(racc))
    verdicts = []
    for tag in sorted(searched):
        acc = [r['test_top1'] for _, r, _ in searched[tag]]
        w('- Searched (%s): %s' % (tag, summary(acc)))
        for seed, r, _ in sorted(searched[tag]):
            better = sum(a > r['test_top1'] for a in racc)
            w('  - seed %d: %.4f, beaten by %d of the %d random architectures (rank %d of %d)'
              % (seed, r['test_top1'], better, len(racc), better + 1, len(racc) + 1))
        if racc and acc:
            pct = [sum(a < x for a in racc) / len(racc) for x in acc]
            verdicts.append((tag, statistics.mean(acc) - statistics.mean(racc),
                             statistics.mean(pct)))
    w('')
    w('## Verdict (computed from the numbers above)')
    w('')
    for tag, diff, pct in verdicts:
        sd = statistics.stdev(racc) if len(racc) > 1 else 0.0
        if diff > sd:
            v = 'beats the random architectures by more than their spread'
        elif diff > 0:
            v = 'is ahead of the random mean by less than the random spread: not a clear win'
        else:
            v = 'does not beat the random architectures'
        w('- %s: searched mean minus random mean = %+.4f (random sd %.4f); the searched '
          'architectures beat on average %.0f%% of the random ones. The search %s.'
          % (tag, diff, sd, 100 * pct, v))
    rc = os.path.join(out, 'rankcheck', 'rankcheck.json')
    if os.path.exists(rc):
        r = load(rc)
        w('')
        w('## The performance-ranking hypothesis (`mdenas_mpi rankcheck`)')
        w('')
        w('%d random architectures trained for %d epochs (the fashion-final recipe at that '
          'length); Kendall tau-b of each epoch\'s test-accuracy ranking with the last '
          'epoch\'s (plot: `rankcheck.svg` in the run directory):' % (r['archs'], r['epochs']))
        w('')
        w('| epoch | ' + ' | '.join(str(i + 1) for i in range(r['epochs'])) + ' |')
        w('|---|' + '---|' * r['epochs'])
        w('| tau-b | ' + ' | '.join('%.3f' % t if t is not None else 'n/a'
                                     for t in r['kendall_tau_b_vs_last']) + ' |')
    text = '\n'.join(lines).replace('(p30', '(30 periods').replace('- p30:', '- 30 periods:') + '\n'
    extra = os.path.join(os.path.dirname(report), 'results_notes.md')
    if os.path.exists(extra):
        text += '\n' + open(extra).read()
    with open(report, 'w') as f:
        f.write(text)
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
