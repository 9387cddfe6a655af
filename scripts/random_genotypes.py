#!/usr/bin/env python3
"""Print N DARTS genotypes drawn uniformly from the DARTS cell space, one per line.

    random_genotypes.py N [SEED]

Each intermediate node i (0..3) takes two distinct inputs drawn uniformly from its
i + 2 predecessors, each with an op drawn uniformly from the seven ops other than
`none` (DARTS's random-search baseline); the normal and the reduction cell are drawn
independently. Standard library only, so the same SEED gives the same list anywhere.
"""
import random
import sys

OPS = ['max_pool_3x3', 'avg_pool_3x3', 'skip_connect', 'sep_conv_3x3', 'sep_conv_5x5',
       'dil_conv_3x3', 'dil_conv_5x5']


def cell(rng, nodes=4):
    genes = []
    for i in range(nodes):
        for j in sorted(rng.sample(range(i + 2), 2)):
            genes.append((rng.choice(OPS), j))
    return genes


def genotype(rng):
    def fmt(g):
        return '[' + ', '.join("('%s', %d)" % (op, j) for op, j in g) + ']'
    return ('Genotype(normal=%s, normal_concat=range(2, 6), reduce=%s, '
            'reduce_concat=range(2, 6))' % (fmt(cell(rng)), fmt(cell(rng))))


def main():
    if len(sys.argv) not in (2, 3) or not sys.argv[1].isdigit():
        print(__doc__, file=sys.stderr)
        return 2
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) == 3 else 1)
    for _ in range(int(sys.argv[1])):
        print(genotype(rng))
    return 0


if __name__ == '__main__':
    sys.exit(main())
