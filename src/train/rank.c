/* Kendall's tau-b by counting every pair: n is the number of architectures
 * trained in a rank check (tens), so O(n^2) exact counts beat a merge sort. */
#include "mdenas/rank.h"

#include <limits.h>
#include <math.h>
#include <stddef.h>

static int sign_of(double d) {
    return (d > 0) - (d < 0);
}

/* x[i*sx], y[i*sy] for i in [0, n): finite values, n >= 0 checked by callers. */
static double tau_b_strided(const double *x, size_t sx, const double *y, size_t sy, int n) {
    if (n < 2) return NAN;
    long con = 0, dis = 0, xtie = 0, ytie = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            int dx = sign_of(x[(size_t)i * sx] - x[(size_t)j * sx]);
            int dy = sign_of(y[(size_t)i * sy] - y[(size_t)j * sy]);
            if (dx == 0) xtie++;
            if (dy == 0) ytie++;
            if (dx * dy > 0)
                con++;
            else if (dx * dy < 0)
                dis++;
        }
    long pairs = (long)n * (n - 1) / 2;
    if (pairs == xtie || pairs == ytie) return NAN; /* x or y constant */
    double tau = (double)(con - dis) / sqrt((double)(pairs - xtie) * (double)(pairs - ytie));
    return tau > 1 ? 1 : tau < -1 ? -1 : tau;
}

/* n (n-1) / 2 pair counts must fit in a long (a 32-bit long holds n <= 65536). */
static md_status check_count(const char *what, int n) {
    if ((double)n * ((double)n - 1) / 2 > (double)LONG_MAX)
        return md_fail(MD_ERR_ARG, "%s: %d values are too many to count pairs of", what, n);
    return MD_OK;
}

md_status md_kendall_tau_b(const double *x, const double *y, int n, double *tau) {
    if (!tau) return md_fail(MD_ERR_ARG, "kendall tau: no output");
    *tau = NAN;
    if (n < 0) return md_fail(MD_ERR_ARG, "kendall tau: n = %d (must be >= 0)", n);
    if (n > 0 && (!x || !y)) return md_fail(MD_ERR_ARG, "kendall tau: no x or no y for n = %d", n);
    MD_TRY(check_count("kendall tau", n));
    for (int i = 0; i < n; i++) {
        if (!isfinite(x[i]))
            return md_fail(MD_ERR_ARG, "kendall tau: x[%d] = %g is not finite", i, x[i]);
        if (!isfinite(y[i]))
            return md_fail(MD_ERR_ARG, "kendall tau: y[%d] = %g is not finite", i, y[i]);
    }
    *tau = tau_b_strided(x, 1, y, 1, n);
    return MD_OK;
}

md_status md_rank_tau_by_epoch(const double *acc, int k, int e, double *tau) {
    if (!acc || !tau) return md_fail(MD_ERR_ARG, "rank tau by epoch: no accuracies or no output");
    if (k < 1 || e < 1)
        return md_fail(MD_ERR_ARG, "rank tau by epoch: %d architectures x %d epochs (each >= 1)", k,
                       e);
    MD_TRY(check_count("rank tau by epoch", k));
    for (int a = 0; a < k; a++)
        for (int ep = 0; ep < e; ep++) {
            double v = acc[(size_t)a * e + ep];
            if (!isfinite(v))
                return md_fail(MD_ERR_ARG,
                               "rank tau by epoch: acc[%zu] (architecture %d, epoch index %d) "
                               "= %g is not finite",
                               (size_t)a * e + ep, a, ep, v);
        }
    const double *last = acc + (e - 1);
    for (int ep = 0; ep < e; ep++)
        tau[ep] = tau_b_strided(acc + ep, (size_t)e, last, (size_t)e, k);
    return MD_OK;
}
