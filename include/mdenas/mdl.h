/* Multinomial distribution learning (MdeNAS, Zheng et al. 2019).
 *
 * One categorical distribution per edge over K candidate ops. Each sampling
 * period an architecture is drawn (one op per edge), trained, validated; the
 * sampled op of every edge records H^e += 1 (epochs trained) and H^a = accuracy
 * (overwritten). The update moves probability towards ops that reached higher
 * accuracy with fewer epochs than a rival (see MDENAS.md for both rules).
 * The full history (p, H^e, H^a after every update) is kept. */
#ifndef MDENAS_MDL_H
#define MDENAS_MDL_H

#include "mdenas/error.h"
#include "mdenas/rng.h"

typedef enum {
    MD_UPDATE_PAPER,   /* p[i] += alpha * (wins - losses), clip at 0, renormalise */
    MD_UPDATE_PAIRWISE /* the authors' lab code: order-dependent pairwise moves */
} md_mdl_rule;

typedef struct {
    int         edges, k; /* number of distributions, ops per distribution */
    double      alpha;
    md_mdl_rule rule;
    double     *p, *he, *ha; /* [edges * k] */
    int         periods;     /* updates applied */
    /* History: after update t (0-based), p/he/ha at hist_*[t * edges * k]. */
    double *hist_p, *hist_he, *hist_ha;
    int     hist_cap;
    unsigned char *allowed; /* [edges * k], 0: a masked op (p = 0, never sampled); NULL: none */
} md_mdl;

md_status md_mdl_init(md_mdl *m, int edges, int k, double alpha, md_mdl_rule rule);
void      md_mdl_free(md_mdl *m);
/* Mask ops (allowed[e * k + op] = 0): p is then uniform over each
 * distribution's allowed ops and 0 elsewhere, and stays 0 under both rules. */
md_status md_mdl_set_mask(md_mdl *m, const unsigned char *allowed);
/* dst: a fresh distribution with src's shape, rule and mask. */
md_status md_mdl_clone_empty(const md_mdl *src, md_mdl *dst);
/* One op per edge drawn from p. */
void      md_mdl_sample(const md_mdl *m, md_rng *rng, int *choice);
/* The sampled architecture reached `accuracy` (a fraction in [0, 1]). */
md_status md_mdl_record(md_mdl *m, const int *choice, double accuracy);
/* Apply the rule to every edge and append to the history. */
md_status md_mdl_update(md_mdl *m);
/* Put back a saved state (checkpoint, or rank 0's broadcast): p, H^e, H^a after
 * `periods` updates, and their history (hist_* [periods][edges*k]); with the
 * history NULL it is filled with the current state. */
md_status md_mdl_restore(md_mdl *m, int periods, const double *p, const double *he,
                         const double *ha, const double *hist_p, const double *hist_he,
                         const double *hist_ha);
/* Shannon entropy (nats) of edge e's distribution. */
double    md_mdl_entropy(const md_mdl *m, int e);
/* Parse "paper" / "pairwise". */
md_status md_mdl_rule_parse(const char *s, md_mdl_rule *out);
const char *md_mdl_rule_name(md_mdl_rule r);

#endif
