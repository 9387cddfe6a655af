/* Every op of backend.h, forward and backward, against PyTorch references
 * written by tests/gen_fixtures.py (inputs in float32, references computed in
 * float64). Backward ops are run twice to check that they accumulate.
 *
 * Usage: test_ops_torch FIXTURE_DIR
 *
 * Error measure: md_norm_err (max |a-b| / max(1, max |ref|)), divided further
 * by max |ref| when that is below 1, so small tensors are held to the same
 * relative standard as large ones. Tolerances are per group, below: about ten
 * times the float32 error measured on the CPU backend (the summary printed at
 * the end gives each measured maximum), zero where no arithmetic rounds.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "mdenas/backend.h"
#include "mdenas/optim.h"
#include "testutil.h"

#define TOL_EXACT  0.0  /* copies, masks, max: no arithmetic to round */
#define TOL_CONV   2e-6 /* sums of up to 50 products; dw sums over N*H*W */
#define TOL_BN     1e-6 /* batch statistics and their gradient */
#define TOL_POOL   1e-6 /* a mean of at most 9 values / sums of up to 9 dy */
#define TOL_LINEAR 1e-6
#define TOL_LOSS   1e-6
#define TOL_OPTIM  1e-6

static md_backend *be;

/* ---- comparison and summary --------------------------------------------- */

typedef struct {
    char   key[64];
    double max_err, tol;
    int    count;
} err_row;

static err_row rows[96];
static int     nrows;

static void record_err(const char *group, const char *what, double err, double tol) {
    char key[64];
    snprintf(key, sizeof key, "%s/%s", group, what);
    err_row *r = NULL;
    for (int i = 0; i < nrows && !r; i++)
        if (strcmp(rows[i].key, key) == 0) r = &rows[i];
    if (!r && nrows < (int)(sizeof rows / sizeof rows[0])) {
        r = &rows[nrows++];
        snprintf(r->key, sizeof r->key, "%s", key);
    }
    if (!r) return;
    if (err > r->max_err || isnan(err)) r->max_err = err;
    if (tol > r->tol) r->tol = tol;
    r->count++;
}

static void print_summary(void) {
    printf("\n%-34s %10s %8s %6s\n", "op/tensor", "max_err", "tol", "checks");
    for (int i = 0; i < nrows; i++)
        printf("%-34s %10.3g %8.1g %6d\n", rows[i].key, rows[i].max_err, rows[i].tol,
               rows[i].count);
}

static double scaled_err(const float *got, const float *ref, size_t n) {
    double maxref = 0.0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)ref[i]) > maxref) maxref = fabs((double)ref[i]);
    double err = md_norm_err(got, ref, n);
    return (maxref > 0.0 && maxref < 1.0) ? err / maxref : err;
}

/* Compare host values with mult * ref. `label` names the case for messages. */
static double check_host(const char *group, const char *label, const char *what, const float *got,
                         const md_fx_tensor *ref, double mult, double tol) {
    float *want = calloc(ref->numel + 1, sizeof *want);
    if (!want) exit(2);
    for (size_t i = 0; i < ref->numel; i++)
        want[i] = (float)(mult * ref->data[i]);
    double err = scaled_err(got, want, ref->numel);
    free(want);
    record_err(group, what, err, tol);
    CHECK(err <= tol, "%s %s %s%s: error %.3g > tol %.3g", group, label, what,
          mult != 1.0 ? " (second backward call)" : "", err, tol);
    return err;
}

/* Compare a backend tensor (same shape as ref) with mult * ref. */
static double check_tensor(const char *group, const char *label, const char *what,
                           const md_tensor *got, const md_fx_tensor *ref, double mult, double tol) {
    if (md_tensor_numel(got) != ref->numel) {
        CHECK(0, "%s %s %s: %zu values, reference has %zu", group, label, what,
              md_tensor_numel(got), ref->numel);
        return INFINITY;
    }
    float *host = malloc(ref->numel * sizeof *host);
    if (!host) exit(2);
    md_tbuf_get(be, got, host);
    double err = check_host(group, label, what, host, ref, mult, tol);
    free(host);
    return err;
}

static void check_scalar(const char *group, const char *label, double got, double want,
                         double tol) {
    double err = fabs(got - want) / fmax(1.0, fabs(want));
    record_err(group, label, err, tol);
    CHECK(err <= tol, "%s %s: got %.9g, PyTorch %.9g, error %.3g > tol %.3g", group, label, got,
          want, err, tol);
}

/* ---- scratch tensors of one case, freed together ---------------------------- */

typedef struct {
    void *p[48];
    int   n;
} scratch;

static md_tensor keep(scratch *s, md_tensor t) {
    if (s->n == (int)(sizeof s->p / sizeof s->p[0])) {
        fprintf(stderr, "scratch full\n");
        exit(2);
    }
    s->p[s->n++] = t.data;
    return t;
}

static void release(scratch *s) {
    for (int i = 0; i < s->n; i++)
        md_backend_free(be, s->p[i]);
    s->n = 0;
}

static md_tensor up(scratch *s, const md_fx_tensor *t) {
    return keep(s, md_fx_upload(be, t));
}

static md_tensor zeros_like(scratch *s, const md_fx_tensor *t) {
    int one = 1;
    return keep(s, t->ndim ? md_tbuf(be, t->ndim, t->dim) : md_tbuf(be, 1, &one));
}

/* Names of the cases of a file: the records called "<case>/desc". */
static int case_names(const md_fixture *fx, char names[][MD_FX_NAME_MAX], int max) {
    int n = 0;
    for (int i = 0; i < fx->count && n < max; i++) {
        const char *slash = strrchr(fx->t[i].name, '/');
        if (slash && strcmp(slash, "/desc") == 0) {
            size_t len = (size_t)(slash - fx->t[i].name);
            memcpy(names[n], fx->t[i].name, len);
            names[n][len] = '\0';
            n++;
        }
    }
    return n;
}

/* ---- convolution ---------------------------------------------------------------- */

static void conv_backward_checks(md_conv *c, const md_fixture *fx, const char *name,
                                 const md_tensor *x, const md_tensor *w) {
    scratch             s = {0};
    md_tensor           dy = up(&s, md_fixture_need(fx, "%s/dy", name));
    const md_fx_tensor *rdx = md_fixture_need(fx, "%s/dx", name);
    const md_fx_tensor *rdw = md_fixture_need(fx, "%s/dw", name);
    md_tensor           dx = zeros_like(&s, rdx), dw = zeros_like(&s, rdw);
    for (int call = 1; call <= 2; call++) {
        CHECK_OK(md_conv_backward(c, x, w, &dy, &dx, &dw));
        check_tensor("conv", name, "dx", &dx, rdx, call, TOL_CONV);
        check_tensor("conv", name, "dw", &dw, rdw, call, TOL_CONV);
    }
    md_tensor dx_only = zeros_like(&s, rdx), dw_only = zeros_like(&s, rdw);
    CHECK_OK(md_conv_backward(c, x, w, &dy, &dx_only, NULL));
    check_tensor("conv", name, "dx (dw NULL)", &dx_only, rdx, 1, TOL_CONV);
    CHECK_OK(md_conv_backward(c, x, w, &dy, NULL, &dw_only));
    check_tensor("conv", name, "dw (dx NULL)", &dw_only, rdw, 1, TOL_CONV);
    release(&s);
}

static void test_conv_case(const md_fixture *fx, const char *name) {
    const md_fx_tensor *dsc = md_fixture_need(fx, "%s/desc", name);
    const md_fx_tensor *ry = md_fixture_need(fx, "%s/y", name);
    md_conv_desc        d = {.n = md_fx_int(dsc, 0),
                             .c_in = md_fx_int(dsc, 1),
                             .h = md_fx_int(dsc, 2),
                             .w = md_fx_int(dsc, 3),
                             .c_out = md_fx_int(dsc, 4),
                             .kh = md_fx_int(dsc, 5),
                             .kw = md_fx_int(dsc, 6),
                             .stride = md_fx_int(dsc, 7),
                             .pad = md_fx_int(dsc, 8),
                             .dilation = md_fx_int(dsc, 9),
                             .groups = md_fx_int(dsc, 10)};
    int                 oh = -1, ow = -1;
    CHECK_OK(md_conv_out_hw(&d, &oh, &ow));
    CHECK(oh == ry->dim[2] && ow == ry->dim[3], "conv %s: md_conv_out_hw %dx%d, PyTorch %dx%d",
          name, oh, ow, ry->dim[2], ry->dim[3]);
    md_conv *c = NULL;
    CHECK_OK(md_conv_create(be, &d, &c));
    if (!c) return;
    const md_conv_desc *got = md_conv_get_desc(c);
    CHECK(got && memcmp(got, &d, sizeof d) == 0, "conv %s: md_conv_get_desc differs", name);

    scratch   s = {0};
    md_tensor x = up(&s, md_fixture_need(fx, "%s/x", name));
    md_tensor w = up(&s, md_fixture_need(fx, "%s/w", name));
    md_tensor y = zeros_like(&s, ry);
    for (int call = 1; call <= 2; call++) { /* forward overwrites: the same y twice */
        CHECK_OK(md_conv_forward(c, &x, &w, &y));
        check_tensor("conv", name, "y", &y, ry, 1, TOL_CONV);
    }
    conv_backward_checks(c, fx, name, &x, &w);
    release(&s);
    md_conv_destroy(c);
}

static void test_conv(const char *dir) {
    md_fixture fx;
    md_fixture_load_or_exit(&fx, dir, "conv.bin");
    char names[32][MD_FX_NAME_MAX];
    int  n = case_names(&fx, names, 32);
    CHECK(n >= 13, "conv.bin: %d cases, expected 13", n);
    for (int i = 0; i < n; i++)
        test_conv_case(&fx, names[i]);
    md_fixture_free(&fx);
}

/* ---- batch normalisation --------------------------------------------------- */

typedef struct {
    md_bn_state st;
    md_tensor   gamma, beta, rm, rv, save_mean, save_invstd;
} bn_bufs;

static void bn_setup(scratch *s, const md_fixture *fx, const char *name, int affine, bn_bufs *b) {
    const md_fx_tensor *dsc = md_fixture_need(fx, "%s/desc", name);
    const md_fx_tensor *rm0 = md_fixture_need(fx, "%s/running_mean0", name);
    memset(b, 0, sizeof *b);
    b->rm = up(s, rm0);
    b->rv = up(s, md_fixture_need(fx, "%s/running_var0", name));
    b->save_mean = zeros_like(s, rm0);
    b->save_invstd = zeros_like(s, rm0);
    b->st.running_mean = &b->rm;
    b->st.running_var = &b->rv;
    b->st.save_mean = &b->save_mean;
    b->st.save_invstd = &b->save_invstd;
    b->st.momentum = (float)md_fx_value(dsc, 1);
    b->st.eps = (float)md_fx_value(dsc, 2);
    if (affine) {
        b->gamma = up(s, md_fixture_need(fx, "%s/gamma", name));
        b->beta = up(s, md_fixture_need(fx, "%s/beta", name));
        b->st.gamma = &b->gamma;
        b->st.beta = &b->beta;
    }
}

/* Gradients dx (and dgamma, dbeta when affine) of one mode, checked twice. */
static void bn_backward_checks(const md_fixture *fx, const char *name, const char *mode, int affine,
                               const md_tensor *x, const bn_bufs *b) {
    scratch s = {0};
    char    label[128];
    snprintf(label, sizeof label, "%s %s", name, mode);
    md_tensor           dy = up(&s, md_fixture_need(fx, "%s/dy", name));
    const md_fx_tensor *rdx = md_fixture_need(fx, "%s/%s_dx", name, mode);
    md_tensor           dx = zeros_like(&s, rdx);
    md_tensor           dg = zeros_like(&s, md_fixture_need(fx, "%s/running_mean0", name));
    md_tensor           db = zeros_like(&s, md_fixture_need(fx, "%s/running_mean0", name));
    int                 train = strcmp(mode, "train") == 0;
    for (int call = 1; call <= 2; call++) {
        const md_tensor *pg = affine ? &dg : NULL, *pb = affine ? &db : NULL;
        if (train)
            CHECK_OK(md_bn_backward_train(be, x, &dy, &dx, pg, pb, &b->st));
        else
            CHECK_OK(md_bn_backward_eval(be, x, &dy, &dx, pg, pb, &b->st));
        check_tensor("bn", label, train ? "train_dx" : "eval_dx", &dx, rdx, call, TOL_BN);
        if (!affine) continue;
        check_tensor("bn", label, train ? "train_dgamma" : "eval_dgamma", &dg,
                     md_fixture_need(fx, "%s/%s_dgamma", name, mode), call, TOL_BN);
        check_tensor("bn", label, train ? "train_dbeta" : "eval_dbeta", &db,
                     md_fixture_need(fx, "%s/%s_dbeta", name, mode), call, TOL_BN);
    }
    release(&s);
}

static void test_bn_train(const md_fixture *fx, const char *name, int affine) {
    scratch s = {0};
    bn_bufs b;
    bn_setup(&s, fx, name, affine, &b);
    md_tensor           x = up(&s, md_fixture_need(fx, "%s/x", name));
    const md_fx_tensor *ry = md_fixture_need(fx, "%s/train_y", name);
    md_tensor           y = zeros_like(&s, ry);
    CHECK_OK(md_bn_forward_train(be, &x, &y, &b.st));
    check_tensor("bn", name, "train_y", &y, ry, 1, TOL_BN);
    check_tensor("bn", name, "save_mean", &b.save_mean,
                 md_fixture_need(fx, "%s/train_save_mean", name), 1, TOL_BN);
    check_tensor("bn", name, "save_invstd", &b.save_invstd,
                 md_fixture_need(fx, "%s/train_save_invstd", name), 1, TOL_BN);
    check_tensor("bn", name, "running_mean", &b.rm,
                 md_fixture_need(fx, "%s/train_running_mean1", name), 1, TOL_BN);
    check_tensor("bn", name, "running_var", &b.rv,
                 md_fixture_need(fx, "%s/train_running_var1", name), 1, TOL_BN);
    bn_backward_checks(fx, name, "train", affine, &x, &b);

    /* Running statistics are optional in training. */
    bn_bufs nr = b;
    nr.st.running_mean = nr.st.running_var = NULL;
    md_tensor y2 = zeros_like(&s, ry);
    CHECK_OK(md_bn_forward_train(be, &x, &y2, &nr.st));
    check_tensor("bn", name, "train_y (no running stats)", &y2, ry, 1, TOL_BN);
    release(&s);
}

static void test_bn_eval(const md_fixture *fx, const char *name, int affine) {
    scratch s = {0};
    bn_bufs b;
    bn_setup(&s, fx, name, affine, &b);
    md_tensor           x = up(&s, md_fixture_need(fx, "%s/x", name));
    const md_fx_tensor *ry = md_fixture_need(fx, "%s/eval_y", name);
    md_tensor           y = zeros_like(&s, ry);
    CHECK_OK(md_bn_forward_eval(be, &x, &y, &b.st));
    check_tensor("bn", name, "eval_y", &y, ry, 1, TOL_BN);
    check_tensor("bn", name, "eval keeps running_mean", &b.rm,
                 md_fixture_need(fx, "%s/running_mean0", name), 1, TOL_EXACT);
    check_tensor("bn", name, "eval keeps running_var", &b.rv,
                 md_fixture_need(fx, "%s/running_var0", name), 1, TOL_EXACT);
    bn_backward_checks(fx, name, "eval", affine, &x, &b);
    release(&s);
}

static void test_bn(const char *dir) {
    md_fixture fx;
    md_fixture_load_or_exit(&fx, dir, "bn.bin");
    static const char *const cases[] = {"bn_affine", "bn_plain"};
    for (int i = 0; i < 2; i++) {
        int affine = md_fx_int(md_fixture_need(&fx, "%s/desc", cases[i]), 0);
        test_bn_train(&fx, cases[i], affine);
        test_bn_eval(&fx, cases[i], affine);
    }
    md_fixture_free(&fx);
}

/* ---- elementwise ------------------------------------------------------------------ */

static void test_act(const md_fixture *fx, const char *name, md_act act) {
    scratch             s = {0};
    const md_fx_tensor *rx = md_fixture_need(fx, "%s/x", name);
    const md_fx_tensor *ry = md_fixture_need(fx, "%s/y", name);
    const md_fx_tensor *rdx = md_fixture_need(fx, "%s/dx", name);
    md_tensor           x = up(&s, rx), y = zeros_like(&s, ry);
    CHECK_OK(md_act_forward(be, act, &x, &y));
    check_tensor("act", name, "y", &y, ry, 1, TOL_EXACT);
    md_tensor inplace = zeros_like(&s, rx);
    CHECK_OK(md_copy(be, &x, &inplace));
    check_tensor("copy", name, "y", &inplace, rx, 1, TOL_EXACT);
    CHECK_OK(md_act_forward(be, act, &inplace, &inplace));
    check_tensor("act", name, "y (in place)", &inplace, ry, 1, TOL_EXACT);
    md_tensor dy = up(&s, md_fixture_need(fx, "%s/dy", name)), dx = zeros_like(&s, rdx);
    for (int call = 1; call <= 2; call++) {
        CHECK_OK(md_act_backward(be, act, &y, &dy, &dx));
        check_tensor("act", name, "dx", &dx, rdx, call, TOL_EXACT);
    }
    CHECK_OK(md_zero(be, &dx));
    float *host = malloc(rdx->numel * sizeof *host);
    if (!host) exit(2);
    md_tbuf_get(be, &dx, host);
    size_t nonzero = 0;
    for (size_t i = 0; i < rdx->numel; i++)
        nonzero += host[i] != 0.0f;
    CHECK(nonzero == 0, "md_zero left %zu non-zero values", nonzero);
    free(host);
    release(&s);
}

static void test_elementwise(const char *dir) {
    md_fixture fx;
    md_fixture_load_or_exit(&fx, dir, "elementwise.bin");
    test_act(&fx, "relu", MD_ACT_RELU);
    test_act(&fx, "relu6", MD_ACT_RELU6);
    scratch   s = {0};
    md_tensor x = up(&s, md_fixture_need(&fx, "add/x"));
    md_tensor y = up(&s, md_fixture_need(&fx, "add/y0"));
    CHECK_OK(md_add(be, &x, &y));
    check_tensor("add", "add", "y", &y, md_fixture_need(&fx, "add/y"), 1, TOL_EXACT);
    release(&s);
    md_fixture_free(&fx);
}

/* ---- pooling ------------------------------------------------------------------ */

static void test_pool_case(const md_fixture *fx, const char *name) {
    scratch             s = {0};
    const md_fx_tensor *dsc = md_fixture_need(fx, "%s/desc", name);
    md_pool_desc        p = {.kind = md_fx_int(dsc, 0) == 0 ? MD_POOL_MAX : MD_POOL_AVG,
                             .k = md_fx_int(dsc, 1),
                             .stride = md_fx_int(dsc, 2),
                             .pad = md_fx_int(dsc, 3)};
    const md_fx_tensor *ry = md_fixture_need(fx, "%s/y", name);
    const md_fx_tensor *rdx = md_fixture_need(fx, "%s/dx", name);
    md_tensor           x = up(&s, md_fixture_need(fx, "%s/x", name)), y = zeros_like(&s, ry);
    CHECK_OK(md_pool_forward(be, &p, &x, &y));
    check_tensor("pool", name, "y", &y, ry, 1, p.kind == MD_POOL_MAX ? TOL_EXACT : TOL_POOL);
    md_tensor dy = up(&s, md_fixture_need(fx, "%s/dy", name)), dx = zeros_like(&s, rdx);
    for (int call = 1; call <= 2; call++) {
        CHECK_OK(md_pool_backward(be, &p, &x, &dy, &dx));
        check_tensor("pool", name, "dx", &dx, rdx, call, TOL_POOL);
    }
    release(&s);
}

static void test_gap(const md_fixture *fx) {
    scratch             s = {0};
    const md_fx_tensor *ry = md_fixture_need(fx, "gap/y");
    const md_fx_tensor *rdx = md_fixture_need(fx, "gap/dx");
    md_tensor           x = up(&s, md_fixture_need(fx, "gap/x")), y = zeros_like(&s, ry);
    CHECK_OK(md_gap_forward(be, &x, &y));
    check_tensor("gap", "gap", "y", &y, ry, 1, TOL_POOL);
    md_tensor dy = up(&s, md_fixture_need(fx, "gap/dy")), dx = zeros_like(&s, rdx);
    for (int call = 1; call <= 2; call++) {
        CHECK_OK(md_gap_backward(be, &dy, &dx));
        check_tensor("gap", "gap", "dx", &dx, rdx, call, TOL_POOL);
    }
    release(&s);
}

static void test_pool(const char *dir) {
    md_fixture fx;
    md_fixture_load_or_exit(&fx, dir, "pool.bin");
    char names[16][MD_FX_NAME_MAX];
    int  n = case_names(&fx, names, 16);
    CHECK(n >= 8, "pool.bin: %d cases, expected 8", n);
    for (int i = 0; i < n; i++)
        test_pool_case(&fx, names[i]);
    test_gap(&fx);
    md_fixture_free(&fx);
}

/* ---- shape ops ------------------------------------------------------------------ */

static void test_concat(const md_fixture *fx) {
    scratch          s = {0};
    md_tensor        x[3], dx[3];
    const md_tensor *xs[3], *dxs[3];
    for (int i = 0; i < 3; i++) {
        x[i] = up(&s, md_fixture_need(fx, "concat/x%d", i));
        dx[i] = zeros_like(&s, md_fixture_need(fx, "concat/dx%d", i));
        xs[i] = &x[i];
        dxs[i] = &dx[i];
    }
    const md_fx_tensor *ry = md_fixture_need(fx, "concat/y");
    md_tensor           y = zeros_like(&s, ry), dy = up(&s, md_fixture_need(fx, "concat/dy"));
    CHECK_OK(md_concat_forward(be, xs, 3, &y));
    check_tensor("concat", "concat", "y", &y, ry, 1, TOL_EXACT);
    for (int call = 1; call <= 2; call++) {
        CHECK_OK(md_concat_backward(be, &dy, dxs, 3));
        for (int i = 0; i < 3; i++) {
            char what[16];
            snprintf(what, sizeof what, "dx%d", i);
            check_tensor("concat", "concat", what, &dx[i], md_fixture_need(fx, "concat/dx%d", i),
                         call, TOL_EXACT);
        }
    }
    release(&s);
}

static void test_slice(const md_fixture *fx, const char *name) {
    scratch             s = {0};
    const md_fx_tensor *dsc = md_fixture_need(fx, "%s/desc", name);
    int                 oh = md_fx_int(dsc, 0), ow = md_fx_int(dsc, 1);
    const md_fx_tensor *ry = md_fixture_need(fx, "%s/y", name);
    const md_fx_tensor *rdx = md_fixture_need(fx, "%s/dx", name);
    md_tensor           x = up(&s, md_fixture_need(fx, "%s/x", name)), y = zeros_like(&s, ry);
    CHECK_OK(md_slice_forward(be, &x, oh, ow, &y));
    check_tensor("slice", name, "y", &y, ry, 1, TOL_EXACT);
    md_tensor dy = up(&s, md_fixture_need(fx, "%s/dy", name)), dx = zeros_like(&s, rdx);
    for (int call = 1; call <= 2; call++) {
        CHECK_OK(md_slice_backward(be, &dy, oh, ow, &dx));
        check_tensor("slice", name, "dx", &dx, rdx, call, TOL_EXACT);
    }
    release(&s);
}

static void test_shape(const char *dir) {
    md_fixture fx;
    md_fixture_load_or_exit(&fx, dir, "shape.bin");
    test_concat(&fx);
    test_slice(&fx, "slice_fr");
    test_slice(&fx, "slice_rect");
    md_fixture_free(&fx);
}

/* ---- classifier, loss ----------------------------------------------------------- */

static void test_linear(const md_fixture *fx) {
    scratch             s = {0};
    const md_fx_tensor *ry = md_fixture_need(fx, "linear/y");
    const md_fx_tensor *rdx = md_fixture_need(fx, "linear/dx");
    const md_fx_tensor *rdw = md_fixture_need(fx, "linear/dw");
    const md_fx_tensor *rdb = md_fixture_need(fx, "linear/db");
    md_tensor           x = up(&s, md_fixture_need(fx, "linear/x"));
    md_tensor           w = up(&s, md_fixture_need(fx, "linear/w"));
    md_tensor           b = up(&s, md_fixture_need(fx, "linear/b"));
    md_tensor           y = zeros_like(&s, ry), y_nb = zeros_like(&s, ry);
    CHECK_OK(md_linear_forward(be, &x, &w, &b, &y));
    check_tensor("linear", "linear", "y", &y, ry, 1, TOL_LINEAR);
    CHECK_OK(md_linear_forward(be, &x, &w, NULL, &y_nb));
    check_tensor("linear", "linear", "y (no bias)", &y_nb, md_fixture_need(fx, "linear/y_nobias"),
                 1, TOL_LINEAR);
    md_tensor dy = up(&s, md_fixture_need(fx, "linear/dy"));
    md_tensor dx = zeros_like(&s, rdx), dw = zeros_like(&s, rdw), db = zeros_like(&s, rdb);
    for (int call = 1; call <= 2; call++) {
        CHECK_OK(md_linear_backward(be, &x, &w, &dy, &dx, &dw, &db));
        check_tensor("linear", "linear", "dx", &dx, rdx, call, TOL_LINEAR);
        check_tensor("linear", "linear", "dw", &dw, rdw, call, TOL_LINEAR);
        check_tensor("linear", "linear", "db", &db, rdb, call, TOL_LINEAR);
    }
    md_tensor dw2 = zeros_like(&s, rdw);
    CHECK_OK(md_linear_backward(be, &x, &w, &dy, NULL, &dw2, NULL));
    check_tensor("linear", "linear", "dw (dx, db NULL)", &dw2, rdw, 1, TOL_LINEAR);
    release(&s);
}

static void test_softmax_ce(const md_fixture *fx) {
    scratch             s = {0};
    const md_fx_tensor *rdl = md_fixture_need(fx, "ce/dlogits");
    double              want = md_fx_value(md_fixture_need(fx, "ce/loss"), 0);
    md_tensor           logits = up(&s, md_fixture_need(fx, "ce/logits")), dl = zeros_like(&s, rdl);
    int32_t            *labels = md_fx_upload_labels(be, md_fixture_need(fx, "ce/labels"));
    for (int call = 1; call <= 2; call++) {
        float loss = NAN;
        CHECK_OK(md_softmax_ce(be, &logits, labels, &loss, &dl));
        check_scalar("softmax_ce", "loss", loss, want, TOL_LOSS);
        check_tensor("softmax_ce", "ce", "dlogits", &dl, rdl, call, TOL_LOSS);
    }
    float loss = NAN;
    CHECK_OK(md_softmax_ce(be, &logits, labels, &loss, NULL));
    check_scalar("softmax_ce", "loss (dlogits NULL)", loss, want, TOL_LOSS);
    md_backend_free(be, labels);

    md_tensor t_logits = up(&s, md_fixture_need(fx, "top1/logits"));
    int32_t  *t_labels = md_fx_upload_labels(be, md_fixture_need(fx, "top1/labels"));
    int       correct = -1, want_correct = md_fx_int(md_fixture_need(fx, "top1/correct"), 0);
    CHECK_OK(md_top1_correct(be, &t_logits, t_labels, &correct));
    record_err("top1", "correct", fabs((double)(correct - want_correct)), TOL_EXACT);
    CHECK(correct == want_correct, "top1_correct: %d, PyTorch %d (first arg-max on ties)", correct,
          want_correct);
    md_backend_free(be, t_labels);
    release(&s);
}

static void test_classifier(const char *dir) {
    md_fixture fx;
    md_fixture_load_or_exit(&fx, dir, "classifier.bin");
    test_linear(&fx);
    test_softmax_ce(&fx);
    md_fixture_free(&fx);
}

/* ---- dropout: torch's RNG cannot be matched; check the distribution -------------- */

static void dropout_run(float p, uint64_t seed, const md_tensor *x, const md_tensor *mask,
                        const md_tensor *y) {
    md_rng r;
    md_rng_seed(&r, seed, 0);
    CHECK_OK(md_dropout_forward(be, p, &r, x, mask, y));
}

static void test_dropout_identity(const md_tensor *x, const md_tensor *mask, const md_tensor *y,
                                  const float *hx, size_t n) {
    float *hm = malloc(n * sizeof *hm), *hy = malloc(n * sizeof *hy);
    if (!hm || !hy) exit(2);
    dropout_run(0.0f, 7, x, mask, y);
    md_tbuf_get(be, mask, hm);
    md_tbuf_get(be, y, hy);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += hm[i] != 1.0f || hy[i] != hx[i];
    CHECK(bad == 0, "dropout p=0: %zu values differ from the identity", bad);
    free(hm);
    free(hy);
}

/* Mask values, y = x * mask, zero fraction within 6 binomial standard deviations. */
static void test_dropout_p(float p, const md_tensor *x, const md_tensor *mask, const md_tensor *y,
                           const float *hx, size_t n) {
    float *hm = malloc(n * sizeof *hm), *hy = malloc(n * sizeof *hy);
    if (!hm || !hy) exit(2);
    dropout_run(p, 11, x, mask, y);
    md_tbuf_get(be, mask, hm);
    md_tbuf_get(be, y, hy);
    double keep_scale = 1.0 / (1.0 - (double)p);
    size_t zeros = 0, bad_mask = 0, bad_y = 0;
    for (size_t i = 0; i < n; i++) {
        if (hm[i] == 0.0f)
            zeros++;
        else if (fabs(hm[i] - keep_scale) > 1e-6 * keep_scale)
            bad_mask++;
        double want = (double)hx[i] * hm[i];
        if (fabs(hy[i] - want) > 1e-6 * fabs(want)) bad_y++;
    }
    double frac = (double)zeros / (double)n, sigma = sqrt(p * (1.0 - p) / (double)n);
    CHECK(bad_mask == 0, "dropout p=%g: %zu mask values not 0 or 1/(1-p)", p, bad_mask);
    CHECK(bad_y == 0, "dropout p=%g: %zu values of y != x * mask", p, bad_y);
    CHECK(fabs(frac - p) <= 6.0 * sigma, "dropout p=%g: zero fraction %.5f outside p +- %.5f", p,
          frac, 6.0 * sigma);
    record_err("dropout", "zero_frac - p (sigmas)", fabs(frac - p) / sigma, 6.0);
    free(hm);
    free(hy);
}

static void test_dropout_backward(const md_tensor *mask, const md_tensor *dy, const md_tensor *dx,
                                  const float *hdy, size_t n) {
    float *hm = malloc(n * sizeof *hm), *hdx = malloc(n * sizeof *hdx);
    if (!hm || !hdx) exit(2);
    md_tbuf_get(be, mask, hm);
    for (int call = 1; call <= 2; call++) {
        CHECK_OK(md_dropout_backward(be, mask, dy, dx));
        md_tbuf_get(be, dx, hdx);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) {
            double want = call * (double)hdy[i] * hm[i];
            bad += fabs(hdx[i] - want) > 1e-6 * fabs(want);
        }
        CHECK(bad == 0, "dropout backward call %d: %zu values != %d * dy * mask", call, bad, call);
    }
    free(hm);
    free(hdx);
}

/* Same seed, same mask; another seed or a second draw from one stream, another mask. */
static void test_dropout_streams(const md_tensor *x, const md_tensor *mask, const md_tensor *y,
                                 size_t n) {
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    if (!a || !b) exit(2);
    dropout_run(0.5f, 3, x, mask, y);
    md_tbuf_get(be, mask, a);
    dropout_run(0.5f, 3, x, mask, y);
    md_tbuf_get(be, mask, b);
    CHECK(memcmp(a, b, n * sizeof *a) == 0, "dropout: same seed gave different masks");
    dropout_run(0.5f, 4, x, mask, y);
    md_tbuf_get(be, mask, b);
    CHECK(memcmp(a, b, n * sizeof *a) != 0, "dropout: seeds 3 and 4 gave the same mask");
    md_rng r;
    md_rng_seed(&r, 3, 0);
    CHECK_OK(md_dropout_forward(be, 0.5f, &r, x, mask, y));
    CHECK_OK(md_dropout_forward(be, 0.5f, &r, x, mask, y));
    md_tbuf_get(be, mask, b);
    CHECK(memcmp(a, b, n * sizeof *a) != 0, "dropout: the rng did not advance between calls");
    free(a);
    free(b);
}

static void test_dropout(void) {
    const int n = 2, c = 10, h = 100, w = 100; /* 200000 values: 6 sigma = 0.006 at p = 0.3 */
    size_t    numel = (size_t)n * c * h * w;
    md_rng    r;
    md_rng_seed(&r, 42, 1);
    float *hx = malloc(numel * sizeof *hx), *hdy = malloc(numel * sizeof *hdy);
    if (!hx || !hdy) exit(2);
    md_fill_uniform(&r, hx, numel, -2.0f, 2.0f);
    md_fill_uniform(&r, hdy, numel, -1.0f, 1.0f);
    md_tensor x = md_tbuf4(be, n, c, h, w), mask = md_tbuf4(be, n, c, h, w);
    md_tensor y = md_tbuf4(be, n, c, h, w), dy = md_tbuf4(be, n, c, h, w);
    md_tensor dx = md_tbuf4(be, n, c, h, w);
    md_tbuf_set(be, &x, hx);
    md_tbuf_set(be, &dy, hdy);
    test_dropout_identity(&x, &mask, &y, hx, numel);
    test_dropout_p(0.9f, &x, &mask, &y, hx, numel);
    test_dropout_p(0.3f, &x, &mask, &y, hx, numel);
    test_dropout_backward(&mask, &dy, &dx, hdy, numel); /* the p = 0.3 mask */
    test_dropout_streams(&x, &mask, &y, numel);
    md_tbuf_free(be, &x);
    md_tbuf_free(be, &mask);
    md_tbuf_free(be, &y);
    md_tbuf_free(be, &dy);
    md_tbuf_free(be, &dx);
    free(hx);
    free(hdy);
}

/* ---- optimiser ------------------------------------------------------------------- */

#define GAP_SENTINEL 12345.0f

/* Two tensors at offsets 0 and 16 of one buffer, like arena ranges; the floats
 * between them hold a sentinel that no op may touch. */
typedef struct {
    md_tensor buf;
    md_range  r[2];
} two_ranges;

/* a, b: the values of the two ranges; NULL for zeros. */
static two_ranges ranges_make(const float *a, size_t na, const float *b, size_t nb) {
    two_ranges t = {.r = {{0, na}, {16, nb}}};
    size_t     total = 16 + nb;
    float     *h = malloc(total * sizeof *h);
    if (na > 16 || !h) exit(2);
    for (size_t i = 0; i < total; i++)
        h[i] = GAP_SENTINEL;
    for (size_t i = 0; i < na; i++)
        h[i] = a ? a[i] : 0.0f;
    for (size_t i = 0; i < nb; i++)
        h[16 + i] = b ? b[i] : 0.0f;
    t.buf = md_tbuf1(be, (int)total);
    md_tbuf_set(be, &t.buf, h);
    free(h);
    return t;
}

static two_ranges ranges_of(const md_fx_tensor *a, const md_fx_tensor *b) {
    return ranges_make(a->data, a->numel, b->data, b->numel);
}

static void ranges_check(const char *group, const char *label, const char *what,
                         const two_ranges *t, const md_fx_tensor *a, const md_fx_tensor *b,
                         double tol) {
    size_t total = md_tensor_numel(&t->buf), gap_bad = 0;
    float *h = malloc(total * sizeof *h);
    if (!h) exit(2);
    md_tbuf_get(be, &t->buf, h);
    char name[64];
    snprintf(name, sizeof name, "%s[0]", what);
    check_host(group, label, name, h, a, 1, tol);
    snprintf(name, sizeof name, "%s[1]", what);
    check_host(group, label, name, h + 16, b, 1, tol);
    for (size_t i = a->numel; i < 16; i++)
        gap_bad += h[i] != GAP_SENTINEL;
    CHECK(gap_bad == 0, "%s %s: %zu floats between the ranges were written", group, label, gap_bad);
    free(h);
}

static void test_sgd(const md_fixture *fx) {
    const md_fx_tensor *hyper = md_fixture_need(fx, "sgd/hyper");
    float               lr = (float)md_fx_value(hyper, 0), mu = (float)md_fx_value(hyper, 1);
    float               wd = (float)md_fx_value(hyper, 2);
    int                 steps = md_fx_int(hyper, 3);
    const md_fx_tensor *p0a = md_fixture_need(fx, "sgd/p0_0");
    const md_fx_tensor *p0b = md_fixture_need(fx, "sgd/p1_0");
    /* md_sgd_step over two ranges, and md_sgd_update on the first tensor alone. */
    two_ranges p = ranges_of(p0a, p0b);
    two_ranges v = ranges_make(NULL, p0a->numel, NULL, p0b->numel);
    scratch    s = {0};
    md_tensor  pa = up(&s, p0a), va = zeros_like(&s, p0a);
    for (int step = 1; step <= steps; step++) {
        const md_fx_tensor *ga = md_fixture_need(fx, "sgd/g0_%d", step);
        two_ranges          g = ranges_of(ga, md_fixture_need(fx, "sgd/g1_%d", step));
        md_tensor           gta = up(&s, ga);
        CHECK_OK(md_sgd_step(be, p.buf.data, g.buf.data, v.buf.data, p.r, 2, lr, mu, wd));
        CHECK_OK(md_sgd_update(be, pa.data, gta.data, va.data, md_tensor_numel(&pa), lr, mu, wd));
        char label[32];
        snprintf(label, sizeof label, "step %d", step);
        ranges_check("sgd_step", label, "param", &p, md_fixture_need(fx, "sgd/p0_%d", step),
                     md_fixture_need(fx, "sgd/p1_%d", step), TOL_OPTIM);
        check_tensor("sgd_update", label, "param", &pa, md_fixture_need(fx, "sgd/p0_%d", step), 1,
                     TOL_OPTIM);
        md_tbuf_free(be, &g.buf);
    }
    ranges_check("sgd_step", "after 3 steps", "momentum", &v, md_fixture_need(fx, "sgd/v0"),
                 md_fixture_need(fx, "sgd/v1"), TOL_OPTIM);
    check_tensor("sgd_update", "after 3 steps", "momentum", &va, md_fixture_need(fx, "sgd/v0"), 1,
                 TOL_OPTIM);
    md_tbuf_free(be, &p.buf);
    md_tbuf_free(be, &v.buf);
    release(&s);
}

static void test_clip(const md_fixture *fx, const char *name) {
    float      max_norm = (float)md_fx_value(md_fixture_need(fx, "%s/max_norm", name), 0);
    double     want = md_fx_value(md_fixture_need(fx, "%s/total", name), 0);
    two_ranges g =
        ranges_of(md_fixture_need(fx, "%s/g0", name), md_fixture_need(fx, "%s/g1", name));
    float total = NAN;
    CHECK_OK(md_clip_grad_norm(be, g.buf.data, g.r, 2, max_norm, &total));
    check_scalar("clip_grad_norm", "total_norm", total, want, TOL_OPTIM);
    ranges_check("clip_grad_norm", name, "grad", &g, md_fixture_need(fx, "%s/g0_clipped", name),
                 md_fixture_need(fx, "%s/g1_clipped", name), TOL_OPTIM);
    md_tbuf_free(be, &g.buf);
}

static void test_cosine(const md_fixture *fx, const char *name) {
    const md_fx_tensor *hyper = md_fixture_need(fx, "%s/hyper", name);
    const md_fx_tensor *lrs = md_fixture_need(fx, "%s/lr", name);
    float               lr0 = (float)md_fx_value(hyper, 0), lr_min = (float)md_fx_value(hyper, 1);
    long                T = md_fx_int(hyper, 2);
    for (long t = 0; t <= T; t++) {
        double got = md_lr_cosine(lr0, lr_min, t, T), want = md_fx_value(lrs, (size_t)t);
        double err = fabs(got - want) / lr0; /* relative to the schedule's scale */
        record_err("lr_cosine", "lr", err, TOL_OPTIM);
        CHECK(err <= TOL_OPTIM, "lr_cosine %s t=%ld: %.9g, PyTorch %.9g", name, t, got, want);
    }
    for (long t = T; t <= T + 5; t += 5)
        CHECK(md_lr_cosine(lr0, lr_min, t, T) == lr_min, "lr_cosine %s t=%ld: %.9g != lr_min %.9g",
              name, t, md_lr_cosine(lr0, lr_min, t, T), lr_min);
}

static void test_sumsq_scale(const md_fixture *fx) {
    scratch   s = {0};
    md_tensor x = up(&s, md_fixture_need(fx, "sumsq/x"));
    double    want = md_fx_value(md_fixture_need(fx, "sumsq/value"), 0), acc = 0.0;
    for (int call = 1; call <= 2; call++) { /* accumulates into *out */
        CHECK_OK(md_sumsq(be, x.data, md_tensor_numel(&x), &acc));
        check_scalar("sumsq", call == 1 ? "value" : "value (second call) / 2", acc / call, want,
                     TOL_OPTIM);
    }
    float     factor = (float)md_fx_value(md_fixture_need(fx, "scale/factor"), 0);
    md_tensor y = up(&s, md_fixture_need(fx, "scale/x"));
    CHECK_OK(md_scale(be, y.data, md_tensor_numel(&y), factor));
    check_tensor("scale", "scale", "y", &y, md_fixture_need(fx, "scale/y"), 1, TOL_EXACT);
    release(&s);
}

static void test_optim(const char *dir) {
    md_fixture fx;
    md_fixture_load_or_exit(&fx, dir, "optim.bin");
    test_sgd(&fx);
    test_clip(&fx, "clip_on");
    test_clip(&fx, "clip_off");
    test_cosine(&fx, "cosine_a");
    test_cosine(&fx, "cosine_b");
    test_sumsq_scale(&fx);
    md_fixture_free(&fx);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s FIXTURE_DIR\n", argv[0]);
        return 2;
    }
    if (md_backend_cpu_create(0, &be) != MD_OK) {
        fprintf(stderr, "md_backend_cpu_create: %s\n", md_error_message());
        return 1;
    }
    test_conv(argv[1]);
    test_bn(argv[1]);
    test_elementwise(argv[1]);
    test_pool(argv[1]);
    test_shape(argv[1]);
    test_classifier(argv[1]);
    test_dropout();
    test_optim(argv[1]);
    print_summary();
    md_backend_destroy(be);
    return md_test_finish("test_ops_torch");
}
