/* A tiny network built by hand from backend ops and trained for a few steps,
 * against the same network trained in PyTorch (tests/gen_fixtures.py,
 * write_tiny_net): stem conv3x3 + BN(affine), sep_conv_3x3 as in MDENAS.md
 * (ReLU, dw3x3, pw1x1, BN, ReLU, dw3x3, pw1x1, BN; affine = false),
 * max_pool 3x3 s1 + BN(affine = false), global average pool, linear, softmax-CE;
 * SGD with momentum and weight decay after clip_grad_norm_ (max norm 5, and
 * again with max norm 1 so that clipping is exercised). Every step's loss
 * and gradient norm must match to 1e-4 relative, and so must the BN running
 * statistics and weights after the last step.
 *
 * Usage: test_tiny_net FIXTURE_DIR
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "mdenas/arena.h"
#include "mdenas/backend.h"
#include "mdenas/optim.h"
#include "testutil.h"

#define TOL_REL 1e-4

enum { P_STEM_W, P_STEM_G, P_STEM_B, P_DW1, P_PW1, P_DW2, P_PW2, P_FC_W, P_FC_B, P_COUNT };
static const char *const param_names[P_COUNT] = {
    "stem_conv.weight", "stem_bn.weight", "stem_bn.bias", "sep_dw1.weight", "sep_pw1.weight",
    "sep_dw2.weight",   "sep_pw2.weight", "fc.weight",    "fc.bias"};

enum { BN_STEM, BN_SEP1, BN_SEP2, BN_POOL, BN_COUNT };
static const char *const bn_names[BN_COUNT] = {"stem_bn", "sep_bn1", "sep_bn2", "pool_bn"};

/* Activations in forward order; grad[i] is d(loss)/d(act[i]). */
enum {
    A_STEM,
    A_STEM_BN,
    A_RELU1,
    A_DW1,
    A_PW1,
    A_BN1,
    A_RELU2,
    A_DW2,
    A_PW2,
    A_BN2,
    A_POOL,
    A_POOL_BN,
    A_COUNT
};

typedef struct {
    md_bn_state st;
    md_tensor   gamma, beta; /* views into the parameter arena, when affine */
    md_tensor   rm, rv, save_mean, save_invstd;
} bn_layer;

typedef struct {
    md_backend  *be;
    int          n, c_in, hw, c, classes;
    md_arena     params, grads, momentum, stats;
    int          pidx[P_COUNT];
    md_range     ranges[P_COUNT];
    md_conv     *stem, *dw, *pw;
    md_pool_desc pool;
    bn_layer     bn[BN_COUNT];
    md_tensor    x, act[A_COUNT], grad[A_COUNT], gap, dgap, logits, dlogits;
    int32_t     *labels;
} tiny_net;

static md_tensor P(const tiny_net *t, int p) {
    return md_arena_tensor(&t->params, t->pidx[p]);
}
static md_tensor G(const tiny_net *t, int p) {
    return md_arena_tensor(&t->grads, t->pidx[p]);
}

/* ---- setup ------------------------------------------------------------------- */

static void fatal_if(md_status s, const char *what) {
    if (s != MD_OK) {
        fprintf(stderr, "%s: %s\n", what, md_error_message());
        exit(1);
    }
}

/* Parameters take their shapes and initial values from the fixture's init/ records. */
static void params_init(tiny_net *t, const md_fixture *fx) {
    md_arena_init(&t->params);
    for (int p = 0; p < P_COUNT; p++) {
        const md_fx_tensor *init = md_fixture_need(fx, "init/%s", param_names[p]);
        fatal_if(md_arena_add(&t->params, param_names[p], init->ndim, init->dim, &t->pidx[p]),
                 param_names[p]);
    }
    fatal_if(md_arena_finalize(&t->params), "params finalize");
    fatal_if(md_arena_mirror(&t->grads, &t->params), "grads mirror");
    fatal_if(md_arena_mirror(&t->momentum, &t->params), "momentum mirror");
    for (int p = 0; p < P_COUNT; p++) {
        md_tensor w = P(t, p);
        md_tbuf_set(t->be, &w, md_fixture_need(fx, "init/%s", param_names[p])->data);
        t->ranges[p].offset = t->params.table[t->pidx[p]].offset;
        t->ranges[p].count = t->params.table[t->pidx[p]].numel;
    }
}

/* Running statistics in an arena of their own, at torch's initial values (0, 1). */
static void bn_init(tiny_net *t) {
    int idx[BN_COUNT][2];
    md_arena_init(&t->stats);
    for (int b = 0; b < BN_COUNT; b++) {
        char name[64];
        snprintf(name, sizeof name, "%s.running_mean", bn_names[b]);
        fatal_if(md_arena_add(&t->stats, name, 1, &t->c, &idx[b][0]), name);
        snprintf(name, sizeof name, "%s.running_var", bn_names[b]);
        fatal_if(md_arena_add(&t->stats, name, 1, &t->c, &idx[b][1]), name);
    }
    fatal_if(md_arena_finalize(&t->stats), "stats finalize");
    float *ones = malloc((size_t)t->c * sizeof *ones);
    if (!ones) exit(2);
    for (int i = 0; i < t->c; i++)
        ones[i] = 1.0f;
    for (int b = 0; b < BN_COUNT; b++) {
        bn_layer *l = &t->bn[b];
        l->rm = md_arena_tensor(&t->stats, idx[b][0]);
        l->rv = md_arena_tensor(&t->stats, idx[b][1]);
        md_tbuf_set(t->be, &l->rv, ones);
        l->save_mean = md_tbuf1(t->be, t->c);
        l->save_invstd = md_tbuf1(t->be, t->c);
        l->st = (md_bn_state){.running_mean = &l->rm,
                              .running_var = &l->rv,
                              .save_mean = &l->save_mean,
                              .save_invstd = &l->save_invstd,
                              .momentum = 0.1f,
                              .eps = 1e-5f};
    }
    free(ones);
    bn_layer *stem = &t->bn[BN_STEM];
    stem->gamma = P(t, P_STEM_G);
    stem->beta = P(t, P_STEM_B);
    stem->st.gamma = &stem->gamma;
    stem->st.beta = &stem->beta;
}

static void convs_init(tiny_net *t) {
    md_conv_desc stem = {.n = t->n,
                         .c_in = t->c_in,
                         .h = t->hw,
                         .w = t->hw,
                         .c_out = t->c,
                         .kh = 3,
                         .kw = 3,
                         .stride = 1,
                         .pad = 1,
                         .dilation = 1,
                         .groups = 1};
    md_conv_desc dw = stem, pw = stem;
    dw.c_in = dw.groups = t->c;
    pw.c_in = t->c;
    pw.kh = pw.kw = 1;
    pw.pad = 0;
    fatal_if(md_conv_create(t->be, &stem, &t->stem), "stem conv");
    fatal_if(md_conv_create(t->be, &dw, &t->dw), "depthwise conv");
    fatal_if(md_conv_create(t->be, &pw, &t->pw), "pointwise conv");
    t->pool = (md_pool_desc){.kind = MD_POOL_MAX, .k = 3, .stride = 1, .pad = 1};
}

static void net_init(tiny_net *t, md_backend *be, const md_fixture *fx) {
    memset(t, 0, sizeof *t);
    t->be = be;
    const md_fx_tensor *x = md_fixture_need(fx, "x");
    const md_fx_tensor *fc = md_fixture_need(fx, "init/fc.weight");
    t->n = x->dim[0];
    t->c_in = x->dim[1];
    t->hw = x->dim[2];
    t->classes = fc->dim[0];
    t->c = fc->dim[1];
    params_init(t, fx);
    bn_init(t);
    convs_init(t);
    t->x = md_fx_upload(be, x);
    t->labels = md_fx_upload_labels(be, md_fixture_need(fx, "labels"));
    for (int a = 0; a < A_COUNT; a++) {
        t->act[a] = md_tbuf4(be, t->n, t->c, t->hw, t->hw);
        t->grad[a] = md_tbuf4(be, t->n, t->c, t->hw, t->hw);
    }
    t->gap = md_tbuf2(be, t->n, t->c);
    t->dgap = md_tbuf2(be, t->n, t->c);
    t->logits = md_tbuf2(be, t->n, t->classes);
    t->dlogits = md_tbuf2(be, t->n, t->classes);
}

static void net_free(tiny_net *t) {
    for (int a = 0; a < A_COUNT; a++) {
        md_tbuf_free(t->be, &t->act[a]);
        md_tbuf_free(t->be, &t->grad[a]);
    }
    for (int b = 0; b < BN_COUNT; b++) {
        md_tbuf_free(t->be, &t->bn[b].save_mean);
        md_tbuf_free(t->be, &t->bn[b].save_invstd);
    }
    md_tbuf_free(t->be, &t->x);
    md_tbuf_free(t->be, &t->gap);
    md_tbuf_free(t->be, &t->dgap);
    md_tbuf_free(t->be, &t->logits);
    md_tbuf_free(t->be, &t->dlogits);
    md_backend_free(t->be, t->labels);
    md_conv_destroy(t->stem);
    md_conv_destroy(t->dw);
    md_conv_destroy(t->pw);
    md_arena_free(&t->params);
    md_arena_free(&t->grads);
    md_arena_free(&t->momentum);
    md_arena_free(&t->stats);
}

/* ---- one training step ---------------------------------------------------------- */

static md_status forward(tiny_net *t, float *loss) {
    md_backend *be = t->be;
    md_tensor  *a = t->act;
    md_tensor   w_stem = P(t, P_STEM_W);
    md_tensor   dw1 = P(t, P_DW1), pw1 = P(t, P_PW1), dw2 = P(t, P_DW2), pw2 = P(t, P_PW2);
    md_tensor   fc_w = P(t, P_FC_W), fc_b = P(t, P_FC_B);
    MD_TRY(md_conv_forward(t->stem, &t->x, &w_stem, &a[A_STEM]));
    MD_TRY(md_bn_forward_train(be, &a[A_STEM], &a[A_STEM_BN], &t->bn[BN_STEM].st));
    MD_TRY(md_act_forward(be, MD_ACT_RELU, &a[A_STEM_BN], &a[A_RELU1]));
    MD_TRY(md_conv_forward(t->dw, &a[A_RELU1], &dw1, &a[A_DW1]));
    MD_TRY(md_conv_forward(t->pw, &a[A_DW1], &pw1, &a[A_PW1]));
    MD_TRY(md_bn_forward_train(be, &a[A_PW1], &a[A_BN1], &t->bn[BN_SEP1].st));
    MD_TRY(md_act_forward(be, MD_ACT_RELU, &a[A_BN1], &a[A_RELU2]));
    MD_TRY(md_conv_forward(t->dw, &a[A_RELU2], &dw2, &a[A_DW2]));
    MD_TRY(md_conv_forward(t->pw, &a[A_DW2], &pw2, &a[A_PW2]));
    MD_TRY(md_bn_forward_train(be, &a[A_PW2], &a[A_BN2], &t->bn[BN_SEP2].st));
    MD_TRY(md_pool_forward(be, &t->pool, &a[A_BN2], &a[A_POOL]));
    MD_TRY(md_bn_forward_train(be, &a[A_POOL], &a[A_POOL_BN], &t->bn[BN_POOL].st));
    MD_TRY(md_gap_forward(be, &a[A_POOL_BN], &t->gap));
    MD_TRY(md_linear_forward(be, &t->gap, &fc_w, &fc_b, &t->logits));
    return md_softmax_ce(be, &t->logits, t->labels, loss, &t->dlogits);
}

/* Gradients accumulate: every buffer they land in is zeroed first. */
static md_status zero_grads(tiny_net *t) {
    md_tensor all = md_tensor_1d(t->grads.data, (int)t->grads.numel);
    MD_TRY(md_zero(t->be, &all));
    for (int a = 0; a < A_COUNT; a++)
        MD_TRY(md_zero(t->be, &t->grad[a]));
    MD_TRY(md_zero(t->be, &t->dgap));
    return md_zero(t->be, &t->dlogits);
}

static md_status backward_head(tiny_net *t) {
    md_backend *be = t->be;
    md_tensor  *a = t->act, *d = t->grad;
    md_tensor   fc_w = P(t, P_FC_W), dfc_w = G(t, P_FC_W), dfc_b = G(t, P_FC_B);
    MD_TRY(md_linear_backward(be, &t->gap, &fc_w, &t->dlogits, &t->dgap, &dfc_w, &dfc_b));
    MD_TRY(md_gap_backward(be, &t->dgap, &d[A_POOL_BN]));
    MD_TRY(md_bn_backward_train(be, &a[A_POOL], &d[A_POOL_BN], &d[A_POOL], NULL, NULL,
                                &t->bn[BN_POOL].st));
    return md_pool_backward(be, &t->pool, &a[A_BN2], &d[A_POOL], &d[A_BN2]);
}

static md_status backward_sep(tiny_net *t) {
    md_backend *be = t->be;
    md_tensor  *a = t->act, *d = t->grad;
    md_tensor   dw1 = P(t, P_DW1), pw1 = P(t, P_PW1), dw2 = P(t, P_DW2), pw2 = P(t, P_PW2);
    md_tensor   ddw1 = G(t, P_DW1), dpw1 = G(t, P_PW1), ddw2 = G(t, P_DW2), dpw2 = G(t, P_PW2);
    MD_TRY(
        md_bn_backward_train(be, &a[A_PW2], &d[A_BN2], &d[A_PW2], NULL, NULL, &t->bn[BN_SEP2].st));
    MD_TRY(md_conv_backward(t->pw, &a[A_DW2], &pw2, &d[A_PW2], &d[A_DW2], &dpw2));
    MD_TRY(md_conv_backward(t->dw, &a[A_RELU2], &dw2, &d[A_DW2], &d[A_RELU2], &ddw2));
    MD_TRY(md_act_backward(be, MD_ACT_RELU, &a[A_RELU2], &d[A_RELU2], &d[A_BN1]));
    MD_TRY(
        md_bn_backward_train(be, &a[A_PW1], &d[A_BN1], &d[A_PW1], NULL, NULL, &t->bn[BN_SEP1].st));
    MD_TRY(md_conv_backward(t->pw, &a[A_DW1], &pw1, &d[A_PW1], &d[A_DW1], &dpw1));
    MD_TRY(md_conv_backward(t->dw, &a[A_RELU1], &dw1, &d[A_DW1], &d[A_RELU1], &ddw1));
    return md_act_backward(be, MD_ACT_RELU, &a[A_RELU1], &d[A_RELU1], &d[A_STEM_BN]);
}

static md_status backward_stem(tiny_net *t) {
    md_tensor *a = t->act, *d = t->grad;
    md_tensor  w = P(t, P_STEM_W);
    md_tensor  dw = G(t, P_STEM_W), dg = G(t, P_STEM_G), db = G(t, P_STEM_B);
    MD_TRY(md_bn_backward_train(t->be, &a[A_STEM], &d[A_STEM_BN], &d[A_STEM], &dg, &db,
                                &t->bn[BN_STEM].st));
    return md_conv_backward(t->stem, &t->x, &w, &d[A_STEM], NULL, &dw);
}

typedef struct {
    float lr, momentum, weight_decay, clip;
} sgd_hyper;

static md_status train_step(tiny_net *t, const sgd_hyper *h, float *loss, float *norm) {
    MD_TRY(zero_grads(t));
    MD_TRY(forward(t, loss));
    MD_TRY(backward_head(t));
    MD_TRY(backward_sep(t));
    MD_TRY(backward_stem(t));
    MD_TRY(md_clip_grad_norm(t->be, t->grads.data, t->ranges, P_COUNT, h->clip, norm));
    return md_sgd_step(t->be, t->params.data, t->grads.data, t->momentum.data, t->ranges, P_COUNT,
                       h->lr, h->momentum, h->weight_decay);
}

/* ---- checks ------------------------------------------------------------------- */

static double rel_err(double got, double want) {
    return fabs(got - want) / fmax(fabs(want), 1e-12);
}

/* Normalised error of an arena tensor against a final/ record, relative to its scale. */
static double check_final(md_backend *be, const md_arena *a, const char *name, const md_fixture *fx,
                          const char *run) {
    const md_fx_tensor *ref = md_fixture_need(fx, "%sfinal/%s", run, name);
    int                 i = md_arena_find(a, name);
    CHECK(i >= 0, "arena has no %s", name);
    if (i < 0) return INFINITY;
    md_tensor t = md_arena_tensor(a, i);
    CHECK(md_tensor_numel(&t) == ref->numel, "%s: %zu values, reference %zu", name,
          md_tensor_numel(&t), ref->numel);
    if (md_tensor_numel(&t) != ref->numel) return INFINITY;
    float *host = malloc(ref->numel * sizeof *host);
    if (!host) exit(2);
    md_tbuf_get(be, &t, host);
    double maxref = 0.0;
    for (size_t k = 0; k < ref->numel; k++)
        maxref = fmax(maxref, fabs((double)ref->data[k]));
    double err = md_norm_err(host, ref->data, ref->numel);
    if (maxref > 0.0 && maxref < 1.0) err /= maxref;
    free(host);
    printf("%sfinal %-26s error %.3g (tol %.0e)\n", run, name, err, TOL_REL);
    CHECK(err <= TOL_REL, "%sfinal %s: error %.3g > %.0e", run, name, err, TOL_REL);
    return err;
}

/* One training run from the initial weights; `run` prefixes its records. */
static void train_run(md_backend *be, const md_fixture *fx, const char *run) {
    const md_fx_tensor *hyper = md_fixture_need(fx, "%shyper", run);
    const md_fx_tensor *losses = md_fixture_need(fx, "%slosses", run);
    const md_fx_tensor *norms = md_fixture_need(fx, "%sgrad_norms", run);
    sgd_hyper           h = {(float)md_fx_value(hyper, 0), (float)md_fx_value(hyper, 1),
                             (float)md_fx_value(hyper, 2), (float)md_fx_value(hyper, 3)};
    int                 steps = md_fx_int(hyper, 4);
    tiny_net            t;
    net_init(&t, be, fx);
    printf("run '%s': clip %g\n", run, h.clip);
    double max_loss_err = 0.0, max_norm_err = 0.0;
    for (int s = 0; s < steps; s++) {
        float loss = NAN, norm = NAN;
        CHECK_OK(train_step(&t, &h, &loss, &norm));
        double want = md_fx_value(losses, (size_t)s), want_norm = md_fx_value(norms, (size_t)s);
        double le = rel_err(loss, want), ne = rel_err(norm, want_norm);
        max_loss_err = fmax(max_loss_err, isnan(le) ? INFINITY : le);
        max_norm_err = fmax(max_norm_err, isnan(ne) ? INFINITY : ne);
        printf("step %d/%d | loss %.7f (torch %.7f, rel err %.2e) | grad norm %.5f (torch %.5f, "
               "rel err %.2e)\n",
               s + 1, steps, loss, want, le, norm, want_norm, ne);
        CHECK(le <= TOL_REL, "run '%s' step %d: loss %.7f, PyTorch %.7f, rel err %.3g", run, s + 1,
              loss, want, le);
        CHECK(ne <= TOL_REL, "run '%s' step %d: grad norm %.7f, PyTorch %.7f, rel err %.3g", run,
              s + 1, norm, want_norm, ne);
    }
    printf("max relative error: loss %.3g, grad norm %.3g (tol %.0e)\n", max_loss_err, max_norm_err,
           TOL_REL);
    check_final(be, &t.stats, "stem_bn.running_mean", fx, run);
    check_final(be, &t.stats, "stem_bn.running_var", fx, run);
    check_final(be, &t.stats, "sep_bn2.running_mean", fx, run);
    check_final(be, &t.params, "fc.weight", fx, run);
    check_final(be, &t.params, "stem_conv.weight", fx, run);
    net_free(&t);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s FIXTURE_DIR\n", argv[0]);
        return 2;
    }
    md_backend *be = NULL;
    if (md_backend_cpu_create(0, &be) != MD_OK) {
        fprintf(stderr, "md_backend_cpu_create: %s\n", md_error_message());
        return 1;
    }
    md_fixture fx;
    md_fixture_load_or_exit(&fx, argv[1], "tiny_net.bin");
    train_run(be, &fx, "");       /* clip 5, as in the search settings: never reached here */
    train_run(be, &fx, "clip1/"); /* clip 1: the first four steps are clipped */
    md_fixture_free(&fx);
    md_backend_destroy(be);
    return md_test_finish("test_tiny_net");
}
