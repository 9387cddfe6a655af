/* Rank agreement for the performance-ranking hypothesis (MdeNAS, Sec. 3): how
 * well the ranking of architectures by validation accuracy after each epoch
 * agrees with their ranking after the last one, as Kendall's tau-b. */
#ifndef MDENAS_RANK_H
#define MDENAS_RANK_H

#include "mdenas/error.h"

/* Kendall's tau-b of x[0..n) and y[0..n), as scipy.stats.kendalltau computes it
 * by default (variant 'b'):
 *   tau = (C - D) / sqrt((n0 - n1) (n0 - n2))
 * over the n0 = n(n-1)/2 pairs, C concordant, D discordant, n1 the pairs tied
 * in x, n2 the pairs tied in y (a pair tied in both counts in n1 and in n2 and
 * in neither C nor D). The counts are exact integers; tau is clipped to [-1, 1].
 * n < 2, or x or y constant (a zero denominator): MD_OK with *tau = NAN, as
 * scipy returns nan. n < 0, NULL pointers, or a NaN or infinite value:
 * MD_ERR_ARG (naming the element), *tau = NAN where tau is not NULL. O(n^2). */
md_status md_kendall_tau_b(const double *x, const double *y, int n, double *tau);

/* acc is k x e, architecture-major: acc[a*e + ep] is the validation accuracy of
 * architecture a after epoch ep. tau[ep] (e values) = md_kendall_tau_b of
 * column ep against column e-1 over the k architectures, so tau[e-1] = 1 unless
 * the last column is constant (then every tau[ep] is NAN, as it is when k = 1).
 * k < 1, e < 1, NULL pointers or a non-finite accuracy: MD_ERR_ARG, tau left
 * unwritten. */
md_status md_rank_tau_by_epoch(const double *acc, int k, int e, double *tau);

#endif
