/* Multinomial distribution learning: both update rules on hand-worked cases,
 * derivation on crafted distributions, sampling frequencies, history. */
#include <math.h>
#include <string.h>

#include "mdenas/mdl.h"
#include "mdenas/supernet.h" /* the DARTS derivation */
#include "testutil.h"

static int near(double a, double b) {
    return fabs(a - b) < 1e-12;
}

/* One edge of K=4 with the given state. */
static void setup(md_mdl *m, md_mdl_rule rule, const double *p, const double *he,
                  const double *ha) {
    CHECK_OK(md_mdl_init(m, 1, 4, 0.01, rule));
    memcpy(m->p, p, 4 * sizeof(double));
    memcpy(m->he, he, 4 * sizeof(double));
    memcpy(m->ha, ha, 4 * sizeof(double));
}

static void expect_p(const md_mdl *m, const double *want, const char *what) {
    double sum = 0.0;
    for (int i = 0; i < 4; i++) {
        CHECK(near(m->p[i], want[i]), "%s: p[%d] = %.12f, expected %.12f", what, i, m->p[i],
              want[i]);
        sum += m->p[i];
    }
    CHECK(near(sum, 1.0), "%s: sum of p = %.15f", what, sum);
}

static void test_first_epoch_no_change(md_mdl_rule rule) {
    md_mdl m;
    CHECK_OK(md_mdl_init(&m, 28, 8, 0.01, rule));
    md_rng r;
    md_rng_seed(&r, 5, 0);
    int choice[28];
    md_mdl_sample(&m, &r, choice);
    CHECK_OK(md_mdl_record(&m, choice, 0.63));
    CHECK_OK(md_mdl_update(&m));
    for (int i = 0; i < 28 * 8; i++)
        CHECK(near(m.p[i], 0.125), "%s: p changed after the first epoch (%g)",
              md_mdl_rule_name(rule), m.p[i]);
    CHECK(m.he[3 * 8 + choice[3]] == 1.0 && m.ha[3 * 8 + choice[3]] == 0.63, "record");
    CHECK(m.periods == 1 && near(m.hist_p[5], 0.125), "history after one update");
    md_mdl_free(&m);
}

static void test_paper_rule(void) {
    /* he = [2,1,1,0], ha = [.5,.6,.4,0]: op 1 beat op 0 (fewer epochs, higher accuracy),
     * op 0 lost to op 1; ops 1 and 2 tie on epochs (no effect); op 3 has lower
     * accuracy with fewer epochs (no effect). */
    const double he[4] = {2, 1, 1, 0}, ha[4] = {0.5, 0.6, 0.4, 0.0};
    const double uni[4] = {0.25, 0.25, 0.25, 0.25};
    md_mdl       m;
    setup(&m, MD_UPDATE_PAPER, uni, he, ha);
    CHECK_OK(md_mdl_update(&m));
    expect_p(&m, (double[]){0.24, 0.26, 0.25, 0.25}, "paper win/loss");
    md_mdl_free(&m);

    /* Clipping: op 0 loses 0.01 from 0.004 -> clipped to 0, then renormalised by 1.006. */
    setup(&m, MD_UPDATE_PAPER, (double[]){0.004, 0.496, 0.25, 0.25}, he, ha);
    CHECK_OK(md_mdl_update(&m));
    expect_p(&m, (double[]){0.0, 0.506 / 1.006, 0.25 / 1.006, 0.25 / 1.006}, "paper clipping");
    md_mdl_free(&m);

    /* Ties in accuracy or in epochs move nothing. */
    setup(&m, MD_UPDATE_PAPER, uni, (double[]){3, 1, 2, 0}, (double[]){0.5, 0.5, 0.5, 0.5});
    CHECK_OK(md_mdl_update(&m));
    expect_p(&m, uni, "paper accuracy ties");
    md_mdl_free(&m);

    /* Several wins: op 3 trained once at 0.9 beats ops 0,1,2 (more epochs, lower accuracy). */
    setup(&m, MD_UPDATE_PAPER, uni, (double[]){2, 3, 2, 1}, (double[]){0.5, 0.6, 0.4, 0.9});
    CHECK_OK(md_mdl_update(&m));
    /* op0: vs1 win(de<0,da<0? no: de=-1, da=-0.1 -> none), vs2 (de 0), vs3 loss -> -1
     * op1: vs0 (de 1, da .1) none, vs2 (de 1, da .2) none, vs3 loss -> -1
     * op2: vs0 de 0, vs1 (de -1, da -.2) none, vs3 loss -> -1; op3: +3 */
    expect_p(&m, (double[]){0.24, 0.24, 0.24, 0.28}, "paper three wins");
    md_mdl_free(&m);
}

static void test_pairwise_rule(void) {
    const double he[4] = {2, 1, 1, 0}, ha[4] = {0.5, 0.6, 0.4, 0.0};
    const double uni[4] = {0.25, 0.25, 0.25, 0.25};
    md_mdl       m;
    /* (0,1): E0>=E1, A0<A1: 0.01 from 0 to 1. (1,2): E1<=E2 (equal), A1>A2: 0.01 from 2 to 1.
     * The paper's rule would not move (1,2): equal epochs. */
    setup(&m, MD_UPDATE_PAIRWISE, uni, he, ha);
    CHECK_OK(md_mdl_update(&m));
    expect_p(&m, (double[]){0.24, 0.27, 0.24, 0.25}, "pairwise");
    md_mdl_free(&m);
    /* Clipping: only what op 0 has (0.004) moves. */
    setup(&m, MD_UPDATE_PAIRWISE, (double[]){0.004, 0.496, 0.25, 0.25}, he, ha);
    CHECK_OK(md_mdl_update(&m));
    expect_p(&m, (double[]){0.0, 0.510, 0.24, 0.25}, "pairwise clipping");
    md_mdl_free(&m);
    /* Full ties move nothing. */
    setup(&m, MD_UPDATE_PAIRWISE, uni, (double[]){1, 1, 1, 1}, (double[]){0.5, 0.5, 0.5, 0.5});
    CHECK_OK(md_mdl_update(&m));
    expect_p(&m, uni, "pairwise ties");
    md_mdl_free(&m);
}

static void test_sampling(void) {
    md_mdl m;
    CHECK_OK(md_mdl_init(&m, 1, 8, 0.01, MD_UPDATE_PAPER));
    const double p[8] = {0.5, 0.2, 0.1, 0.1, 0.05, 0.05, 0.0, 0.0};
    memcpy(m.p, p, sizeof p);
    md_rng r;
    md_rng_seed(&r, 77, 0);
    int count[8] = {0}, n = 100000;
    for (int t = 0; t < n; t++) {
        int c;
        md_mdl_sample(&m, &r, &c);
        count[c]++;
    }
    double chi2 = 0.0;
    for (int i = 0; i < 6; i++) chi2 += pow(count[i] - n * p[i], 2) / (n * p[i]);
    /* 5 degrees of freedom: P(chi2 > 20.5) = 0.001. */
    CHECK(chi2 < 20.5, "sampling chi-square %g over 5 dof", chi2);
    CHECK(count[6] == 0 && count[7] == 0, "ops with p = 0 were sampled (%d, %d)", count[6],
          count[7]);
    md_mdl_free(&m);
}

static void test_derive(void) {
    /* 2 nodes (5 edges), K = 4, none = op 0. Node 0 owns edges 0,1; node 1 edges 2,3,4. */
    double p[5][4] = {
        {0.70, 0.10, 0.10, 0.10}, /* none dominates: best non-none is op 1 (tie 1,2,3 -> 1), 0.10 */
        {0.10, 0.20, 0.50, 0.20}, /* op 2 at 0.50 */
        {0.25, 0.25, 0.25, 0.25}, /* tie 1,2,3 -> op 1 at 0.25 */
        {0.10, 0.15, 0.15, 0.60}, /* op 3 at 0.60 */
        {0.00, 0.25, 0.50, 0.25}, /* op 2 at 0.50 */
    };
    md_gene g[4];
    CHECK_OK(md_derive_cell(&p[0][0], 2, 4, 0, g));
    /* node 0: edge 1 (op 2, 0.5) then edge 0 (op 1, 0.1) */
    CHECK(g[0].op == 2 && g[0].input == 1 && g[1].op == 1 && g[1].input == 0,
          "node 0: (%d,%d) (%d,%d)", g[0].op, g[0].input, g[1].op, g[1].input);
    /* node 1: edge 3 (input 1, op 3, 0.6), edge 4 (input 2, op 2, 0.5); edge 2 drops */
    CHECK(g[2].op == 3 && g[2].input == 1 && g[3].op == 2 && g[3].input == 2,
          "node 1: (%d,%d) (%d,%d)", g[2].op, g[2].input, g[3].op, g[3].input);
    /* Equal strengths: the lower input wins. */
    double q[5][4];
    for (int e = 0; e < 5; e++)
        for (int k = 0; k < 4; k++) q[e][k] = 0.25;
    CHECK_OK(md_derive_cell(&q[0][0], 2, 4, 0, g));
    CHECK(g[0].input == 0 && g[1].input == 1 && g[2].input == 0 && g[3].input == 1,
          "input ties: %d %d %d %d", g[0].input, g[1].input, g[2].input, g[3].input);
    for (int i = 0; i < 4; i++) CHECK(g[i].op == 1, "op tie gene %d chose %d (not 1)", i, g[i].op);
    CHECK(md_cell_edges(4) == 14 && md_cell_edges(2) == 5, "edge count");
}

int main(void) {
    test_first_epoch_no_change(MD_UPDATE_PAPER);
    test_first_epoch_no_change(MD_UPDATE_PAIRWISE);
    test_paper_rule();
    test_pairwise_rule();
    test_sampling();
    test_derive();
    md_mdl m;
    CHECK(md_mdl_init(&m, 1, 4, 0.0, MD_UPDATE_PAPER) == MD_ERR_ARG, "alpha 0 accepted");
    md_mdl_rule rule;
    CHECK(md_mdl_rule_parse("softmax", &rule) == MD_ERR_ARG &&
              strstr(md_error_message(), "softmax"),
          "unknown rule accepted");
    return md_test_finish("test_mdl");
}
