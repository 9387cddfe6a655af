#include "mdenas/mdl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

md_status md_mdl_init(md_mdl *m, int edges, int k, double alpha, md_mdl_rule rule) {
    memset(m, 0, sizeof *m);
    if (edges < 1 || k < 2)
        return md_fail(MD_ERR_ARG, "mdl: %d edges with %d ops each (need >= 1 and >= 2)", edges, k);
    if (!(alpha > 0.0 && alpha <= 1.0))
        return md_fail(MD_ERR_ARG, "mdl: alpha=%g must be in (0, 1]", alpha);
    if (rule != MD_UPDATE_PAPER && rule != MD_UPDATE_PAIRWISE)
        return md_fail(MD_ERR_ARG, "mdl: unknown update rule %d", (int)rule);
    size_t n = (size_t)edges * k;
    m->edges = edges;
    m->k = k;
    m->alpha = alpha;
    m->rule = rule;
    m->p = malloc(n * sizeof(double));
    m->he = calloc(n, sizeof(double));
    m->ha = calloc(n, sizeof(double));
    if (!m->p || !m->he || !m->ha) {
        md_mdl_free(m);
        return md_fail(MD_ERR_NOMEM, "mdl: %zu entries", n);
    }
    for (size_t i = 0; i < n; i++) m->p[i] = 1.0 / k;
    return MD_OK;
}

void md_mdl_free(md_mdl *m) {
    free(m->p);
    free(m->he);
    free(m->ha);
    free(m->hist_p);
    free(m->hist_he);
    free(m->hist_ha);
    free(m->allowed);
    memset(m, 0, sizeof *m);
}

md_status md_mdl_set_mask(md_mdl *m, const unsigned char *allowed) {
    size_t n = (size_t)m->edges * m->k;
    if (!m->allowed && !(m->allowed = malloc(n))) return md_fail(MD_ERR_NOMEM, "mdl: mask");
    for (int e = 0; e < m->edges; e++) {
        int live = 0;
        for (int k = 0; k < m->k; k++) live += allowed[(size_t)e * m->k + k] != 0;
        if (live < 1)
            return md_fail(MD_ERR_ARG, "mdl: distribution %d has no candidate op", e);
        for (int k = 0; k < m->k; k++) {
            size_t i = (size_t)e * m->k + k;
            m->allowed[i] = allowed[i] != 0;
            m->p[i] = m->allowed[i] ? 1.0 / live : 0.0;
        }
    }
    return MD_OK;
}

md_status md_mdl_clone_empty(const md_mdl *src, md_mdl *dst) {
    MD_TRY(md_mdl_init(dst, src->edges, src->k, src->alpha, src->rule));
    if (src->allowed) {
        md_status s = md_mdl_set_mask(dst, src->allowed);
        if (s != MD_OK) md_mdl_free(dst);
        return s;
    }
    return MD_OK;
}

static int masked(const md_mdl *m, int e, int k) {
    return m->allowed && !m->allowed[(size_t)e * m->k + k];
}

void md_mdl_sample(const md_mdl *m, md_rng *rng, int *choice) {
    for (int e = 0; e < m->edges; e++) {
        const double *p = m->p + (size_t)e * m->k;
        double        total = 0.0;
        for (int i = 0; i < m->k; i++) total += p[i];
        double u = md_rng_uniform_double(rng) * total, acc = 0.0;
        int    pick = -1;
        for (int i = 0; i < m->k; i++) {
            if (p[i] <= 0.0) continue;
            pick = i; /* the last op with mass, should rounding leave u beyond the sum */
            acc += p[i];
            if (u < acc) break;
        }
        choice[e] = pick < 0 ? 0 : pick;
    }
}

md_status md_mdl_record(md_mdl *m, const int *choice, double accuracy) {
    if (!(accuracy >= 0.0 && accuracy <= 1.0))
        return md_fail(MD_ERR_ARG, "mdl: accuracy %g is not a fraction in [0, 1]", accuracy);
    for (int e = 0; e < m->edges; e++)
        if (choice[e] < 0 || choice[e] >= m->k || masked(m, e, choice[e]))
            return md_fail(MD_ERR_ARG, "mdl: edge %d chose op %d of %d%s", e, choice[e], m->k,
                           choice[e] >= 0 && choice[e] < m->k ? ", a masked one" : "");
    for (int e = 0; e < m->edges; e++) {
        size_t i = (size_t)e * m->k + choice[e];
        m->he[i] += 1.0;
        m->ha[i] = accuracy;
    }
    return MD_OK;
}

/* The paper's rule on one edge. Deltas come from the state before the update.
 * Masked ops (live[i] = 0) take no part: they are no rival, and stay at 0. */
static void update_paper(double *p, const double *he, const double *ha, int k, double alpha,
                         const unsigned char *live) {
    double delta[64];
    for (int i = 0; i < k; i++) {
        int score = 0;
        for (int j = 0; j < k; j++) {
            if (live && (!live[i] || !live[j])) continue;
            double de = he[i] - he[j], da = ha[i] - ha[j];
            if (de < 0 && da > 0) score++;
            if (de > 0 && da < 0) score--;
        }
        delta[i] = alpha * score;
    }
    double sum = 0.0;
    for (int i = 0; i < k; i++) {
        p[i] += delta[i];
        if (p[i] < 0.0 || (live && !live[i])) p[i] = 0.0;
        sum += p[i];
    }
    for (int i = 0; i < k; i++) p[i] /= sum;
}

/* The authors' lab code: pairs in order, non-strict epoch comparison. */
static void update_pairwise(double *p, const double *he, const double *ha, int k, double alpha,
                            const unsigned char *live) {
    for (int i = 0; i < k; i++)
        for (int j = i + 1; j < k; j++) {
            if (live && (!live[i] || !live[j])) continue;
            if (he[i] >= he[j] && ha[i] < ha[j]) {
                double mv = p[i] < alpha ? p[i] : alpha;
                p[i] -= mv;
                p[j] += mv;
            } else if (he[i] <= he[j] && ha[i] > ha[j]) {
                double mv = p[j] < alpha ? p[j] : alpha;
                p[j] -= mv;
                p[i] += mv;
            }
        }
}

/* Room in the history for at least `periods` entries. */
static md_status history_reserve(md_mdl *m, int periods) {
    size_t n = (size_t)m->edges * m->k;
    if (periods > m->hist_cap) {
        int cap = m->hist_cap ? m->hist_cap : 16;
        while (cap < periods) cap *= 2;
        double *hp = realloc(m->hist_p, (size_t)cap * n * sizeof(double));
        if (hp) m->hist_p = hp;
        double *he = realloc(m->hist_he, (size_t)cap * n * sizeof(double));
        if (he) m->hist_he = he;
        double *ha = realloc(m->hist_ha, (size_t)cap * n * sizeof(double));
        if (ha) m->hist_ha = ha;
        if (!hp || !he || !ha) return md_fail(MD_ERR_NOMEM, "mdl: history of %d periods", cap);
        m->hist_cap = cap;
    }
    return MD_OK;
}

static md_status history_append(md_mdl *m) {
    size_t n = (size_t)m->edges * m->k;
    MD_TRY(history_reserve(m, m->periods + 1));
    size_t o = (size_t)m->periods * n;
    memcpy(m->hist_p + o, m->p, n * sizeof(double));
    memcpy(m->hist_he + o, m->he, n * sizeof(double));
    memcpy(m->hist_ha + o, m->ha, n * sizeof(double));
    m->periods++;
    return MD_OK;
}

md_status md_mdl_update(md_mdl *m) {
    if (m->k > 64) return md_fail(MD_ERR_ARG, "mdl: %d ops per edge (at most 64)", m->k);
    for (int e = 0; e < m->edges; e++) {
        size_t o = (size_t)e * m->k;
        if (m->rule == MD_UPDATE_PAPER)
            update_paper(m->p + o, m->he + o, m->ha + o, m->k, m->alpha,
                         m->allowed ? m->allowed + o : NULL);
        else
            update_pairwise(m->p + o, m->he + o, m->ha + o, m->k, m->alpha,
                            m->allowed ? m->allowed + o : NULL);
    }
    return history_append(m);
}

double md_mdl_entropy(const md_mdl *m, int e) {
    double h = 0.0;
    for (int i = 0; i < m->k; i++) {
        double q = m->p[(size_t)e * m->k + i];
        if (q > 0.0) h -= q * log(q);
    }
    return h;
}

md_status md_mdl_rule_parse(const char *s, md_mdl_rule *out) {
    if (!strcmp(s, "paper")) *out = MD_UPDATE_PAPER;
    else if (!strcmp(s, "pairwise")) *out = MD_UPDATE_PAIRWISE;
    else return md_fail(MD_ERR_ARG, "unknown update rule '%s' (use paper or pairwise)", s);
    return MD_OK;
}

const char *md_mdl_rule_name(md_mdl_rule r) {
    return r == MD_UPDATE_PAIRWISE ? "pairwise" : "paper";
}

md_status md_mdl_restore(md_mdl *m, int periods, const double *p, const double *he,
                         const double *ha, const double *hist_p, const double *hist_he,
                         const double *hist_ha) {
    size_t n = (size_t)m->edges * m->k;
    if (periods < 0) return md_fail(MD_ERR_ARG, "mdl: %d periods", periods);
    for (size_t i = 0; i < n; i++) {
        double pv, ev, av; /* copies: a file's doubles need not be 8-byte aligned */
        memcpy(&pv, (const char *)p + i * sizeof pv, sizeof pv);
        memcpy(&ev, (const char *)he + i * sizeof ev, sizeof ev);
        memcpy(&av, (const char *)ha + i * sizeof av, sizeof av);
        int bad = !(pv >= 0.0 && pv <= 1.0) || !(ev >= 0.0) || !isfinite(av);
        if (bad || (m->allowed && !m->allowed[i] && (pv != 0.0 || ev != 0.0)))
            return md_fail(MD_ERR_ARG, "mdl: distribution %zu, op %zu: p %g, H^e %g, H^a %g %s",
                           i / (size_t)m->k, i % (size_t)m->k, pv, ev, av,
                           bad ? "out of range" : "on an op that this space masks");
    }
    MD_TRY(history_reserve(m, periods));
    if (p != m->p) memcpy(m->p, p, n * sizeof(double));
    if (he != m->he) memcpy(m->he, he, n * sizeof(double));
    if (ha != m->ha) memcpy(m->ha, ha, n * sizeof(double));
    if (hist_p && periods > 0) {
        memcpy(m->hist_p, hist_p, (size_t)periods * n * sizeof(double));
        memcpy(m->hist_he, hist_he, (size_t)periods * n * sizeof(double));
        memcpy(m->hist_ha, hist_ha, (size_t)periods * n * sizeof(double));
    } else if (periods > 0) {
        /* No history given (a replica that only samples): the current state stands in. */
        for (int t = 0; t < periods; t++) {
            memcpy(m->hist_p + (size_t)t * n, p, n * sizeof(double));
            memcpy(m->hist_he + (size_t)t * n, he, n * sizeof(double));
            memcpy(m->hist_ha + (size_t)t * n, ha, n * sizeof(double));
        }
    }
    m->periods = periods;
    return MD_OK;
}
