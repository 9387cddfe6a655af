/* Every op's backward against central finite differences of its forward.
 * For an op y = f(x1..xk) and a fixed random r, L = <r, y>; the backward run
 * with dy = r must give dL/dxi, which is checked element by element against
 * (L(xi + h) - L(xi - h)) / 2h computed in double from the float forward.
 * Inputs are kept away from kinks (ReLU at 0 and 6, ties in max pooling). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

enum { MAXIN = 4 };

typedef struct fd_case fd_case;
struct fd_case {
    const char *name;
    int         nin;
    md_tensor   in[MAXIN];
    int         check[MAXIN]; /* which inputs get a gradient check */
    md_tensor   out;
    md_status (*fwd)(fd_case *c);
    /* dy -> grads[i] (accumulated into zeroed buffers) */
    md_status (*bwd)(fd_case *c, const md_tensor *dy, md_tensor *grads);
    void   *ctx;
    double  h, atol, rtol;
};

static md_backend *be;
static md_rng      rng;

static double loss_of(fd_case *c, const float *r) {
    if (c->fwd(c) != MD_OK) {
        fprintf(stderr, "%s forward failed: %s\n", c->name, md_error_message());
        exit(2);
    }
    double l = 0.0;
    size_t n = md_tensor_numel(&c->out);
    for (size_t i = 0; i < n; i++) l += (double)r[i] * c->out.data[i];
    return l;
}

static void run_case(fd_case *c) {
    size_t ny = md_tensor_numel(&c->out);
    float *r = malloc(ny * sizeof *r);
    md_fill_uniform(&rng, r, ny, -1.0f, 1.0f);
    md_tensor dy = md_tbuf(be, c->out.ndim, c->out.dim);
    md_tbuf_set(be, &dy, r);
    md_tensor grads[MAXIN];
    for (int i = 0; i < c->nin; i++) grads[i] = md_tbuf(be, c->in[i].ndim, c->in[i].dim);
    loss_of(c, r); /* forward state (BN saved statistics, masks) for backward */
    CHECK_OK(c->bwd(c, &dy, grads));
    double worst = 0.0;
    for (int i = 0; i < c->nin; i++) {
        if (!c->check[i]) continue;
        size_t n = md_tensor_numel(&c->in[i]);
        for (size_t j = 0; j < n; j++) {
            float *p = &c->in[i].data[j], saved = *p;
            *p = saved + (float)c->h;
            double lp = loss_of(c, r);
            *p = saved - (float)c->h;
            double lm = loss_of(c, r);
            *p = saved;
            double num = (lp - lm) / (2.0 * c->h), ana = grads[i].data[j];
            double err = fabs(num - ana) / (c->atol + c->rtol * fabs(num));
            if (err > worst) worst = err;
            if (err > 1.0) {
                CHECK(0, "%s: input %d element %zu: analytic %.6g, numeric %.6g", c->name, i, j,
                      ana, num);
                j = n; /* one report per input is enough */
            }
        }
    }
    printf("%-28s worst error / tolerance = %.3f\n", c->name, worst);
    for (int i = 0; i < c->nin; i++) md_tbuf_free(be, &grads[i]);
    md_tbuf_free(be, &dy);
    free(r);
}

static void case_free(fd_case *c) {
    for (int i = 0; i < c->nin; i++) md_tbuf_free(be, &c->in[i]);
    md_tbuf_free(be, &c->out);
}

/* Random input away from the points where ReLU/ReLU6 have kinks. */
static void fill_away_from_kinks(md_tensor *t, float lo, float hi) {
    size_t n = md_tensor_numel(t);
    for (size_t i = 0; i < n; i++) {
        float v;
        do v = lo + (hi - lo) * md_rng_uniform(&rng);
        while (fabsf(v) < 0.1f || fabsf(v - 6.0f) < 0.1f);
        t->data[i] = v;
    }
}

/* Distinct values 0.05 apart in random order: max pooling has no ties. */
static void fill_distinct(md_tensor *t) {
    size_t n = md_tensor_numel(t);
    for (size_t i = 0; i < n; i++) t->data[i] = 0.05f * (float)i - 0.025f * (float)n;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = md_rng_u32(&rng) % (i + 1);
        float  tmp = t->data[i];
        t->data[i] = t->data[j];
        t->data[j] = tmp;
    }
}

static void fill(md_tensor *t) {
    md_fill_uniform(&rng, t->data, md_tensor_numel(t), -1.0f, 1.0f);
}

static void defaults(fd_case *c, const char *name) {
    memset(c, 0, sizeof *c);
    c->name = name;
    c->h = 1e-2;
    c->atol = 2e-3;
    c->rtol = 1e-2;
}

/* ---- conv ---------------------------------------------------------------- */

static md_status conv_fwd(fd_case *c) {
    return md_conv_forward(c->ctx, &c->in[0], &c->in[1], &c->out);
}
static md_status conv_bwd(fd_case *c, const md_tensor *dy, md_tensor *g) {
    return md_conv_backward(c->ctx, &c->in[0], &c->in[1], dy, &g[0], &g[1]);
}

static void test_conv(const char *name, int cin, int hw, int cout, int k, int stride, int pad,
                      int dil, int groups) {
    md_conv_desc d = {.n = 2, .c_in = cin, .h = hw, .w = hw, .c_out = cout, .kh = k, .kw = k,
                      .stride = stride, .pad = pad, .dilation = dil, .groups = groups};
    int          oh = 0, ow = 0;
    CHECK_OK(md_conv_out_hw(&d, &oh, &ow));
    md_conv *conv = NULL;
    CHECK_OK(md_conv_create(be, &d, &conv));
    if (!conv) return;
    fd_case c;
    defaults(&c, name);
    c.nin = 2;
    c.in[0] = md_tbuf4(be, 2, cin, hw, hw);
    c.in[1] = md_tbuf4(be, cout, cin / groups, k, k);
    c.check[0] = c.check[1] = 1;
    c.out = md_tbuf4(be, 2, cout, oh, ow);
    fill(&c.in[0]);
    fill(&c.in[1]);
    c.fwd = conv_fwd;
    c.bwd = conv_bwd;
    c.ctx = conv;
    run_case(&c);
    case_free(&c);
    md_conv_destroy(conv);
}

/* ---- batch norm -------------------------------------------------------------- */

typedef struct {
    md_tensor   mean, invstd, rmean, rvar;
    md_bn_state st;
    int         train;
} bn_ctx;

static md_status bn_fwd(fd_case *c) {
    bn_ctx *b = c->ctx;
    b->st.gamma = c->nin > 1 ? &c->in[1] : NULL;
    b->st.beta = c->nin > 1 ? &c->in[2] : NULL;
    return b->train ? md_bn_forward_train(be, &c->in[0], &c->out, &b->st)
                    : md_bn_forward_eval(be, &c->in[0], &c->out, &b->st);
}
static md_status bn_bwd(fd_case *c, const md_tensor *dy, md_tensor *g) {
    bn_ctx          *b = c->ctx;
    const md_tensor *dg = c->nin > 1 ? &g[1] : NULL, *db = c->nin > 1 ? &g[2] : NULL;
    return b->train ? md_bn_backward_train(be, &c->in[0], dy, &g[0], dg, db, &b->st)
                    : md_bn_backward_eval(be, &c->in[0], dy, &g[0], dg, db, &b->st);
}

static void test_bn(const char *name, int affine, int train) {
    const int C = 3;
    bn_ctx    b = {0};
    b.train = train;
    b.mean = md_tbuf1(be, C);
    b.invstd = md_tbuf1(be, C);
    b.rmean = md_tbuf1(be, C);
    b.rvar = md_tbuf1(be, C);
    for (int i = 0; i < C; i++) {
        b.rmean.data[i] = 0.1f * (float)i;
        b.rvar.data[i] = 0.5f + 0.3f * (float)i;
    }
    b.st.save_mean = &b.mean;
    b.st.save_invstd = &b.invstd;
    b.st.running_mean = train ? NULL : &b.rmean; /* training FD must not drift the stats */
    b.st.running_var = train ? NULL : &b.rvar;
    b.st.momentum = 0.1f;
    b.st.eps = 1e-5f;
    fd_case c;
    defaults(&c, name);
    c.nin = affine ? 3 : 1;
    c.in[0] = md_tbuf4(be, 2, C, 4, 4);
    fill(&c.in[0]);
    for (int i = 0; i < 32; i++) c.in[0].data[i] *= 3.0f; /* unequal channel statistics */
    if (affine) {
        c.in[1] = md_tbuf1(be, C);
        c.in[2] = md_tbuf1(be, C);
        md_fill_uniform(&rng, c.in[1].data, C, 0.5f, 1.5f);
        fill(&c.in[2]);
    }
    for (int i = 0; i < c.nin; i++) c.check[i] = 1;
    c.out = md_tbuf4(be, 2, C, 4, 4);
    c.fwd = bn_fwd;
    c.bwd = bn_bwd;
    c.ctx = &b;
    c.h = 3e-3; /* BN is nonlinear through the batch statistics */
    run_case(&c);
    case_free(&c);
    md_tbuf_free(be, &b.mean);
    md_tbuf_free(be, &b.invstd);
    md_tbuf_free(be, &b.rmean);
    md_tbuf_free(be, &b.rvar);
}

/* ---- activations, pools, shape ops ------------------------------------------ */

static md_status act_fwd(fd_case *c) {
    return md_act_forward(be, *(md_act *)c->ctx, &c->in[0], &c->out);
}
static md_status act_bwd(fd_case *c, const md_tensor *dy, md_tensor *g) {
    return md_act_backward(be, *(md_act *)c->ctx, &c->out, dy, &g[0]);
}

static void test_act(const char *name, md_act act) {
    fd_case c;
    defaults(&c, name);
    c.nin = 1;
    c.check[0] = 1;
    c.in[0] = md_tbuf4(be, 2, 3, 4, 4);
    fill_away_from_kinks(&c.in[0], -8.0f, 8.0f);
    c.out = md_tbuf4(be, 2, 3, 4, 4);
    c.fwd = act_fwd;
    c.bwd = act_bwd;
    c.ctx = &act;
    run_case(&c);
    case_free(&c);
}

static md_status pool_fwd(fd_case *c) {
    return md_pool_forward(be, c->ctx, &c->in[0], &c->out);
}
static md_status pool_bwd(fd_case *c, const md_tensor *dy, md_tensor *g) {
    return md_pool_backward(be, c->ctx, &c->in[0], dy, &g[0]);
}

static void test_pool(const char *name, md_pool_kind kind, int stride, int hw) {
    md_pool_desc p = {.kind = kind, .k = 3, .stride = stride, .pad = 1};
    int          o = (hw + 2 - 3) / stride + 1;
    fd_case      c;
    defaults(&c, name);
    c.nin = 1;
    c.check[0] = 1;
    c.in[0] = md_tbuf4(be, 2, 2, hw, hw);
    fill_distinct(&c.in[0]);
    c.out = md_tbuf4(be, 2, 2, o, o);
    c.fwd = pool_fwd;
    c.bwd = pool_bwd;
    c.ctx = &p;
    run_case(&c);
    case_free(&c);
}

static md_status gap_fwd(fd_case *c) {
    return md_gap_forward(be, &c->in[0], &c->out);
}
static md_status gap_bwd(fd_case *c, const md_tensor *dy, md_tensor *g) {
    (void)c;
    return md_gap_backward(be, dy, &g[0]);
}

static md_status concat_fwd(fd_case *c) {
    const md_tensor *xs[3] = {&c->in[0], &c->in[1], &c->in[2]};
    return md_concat_forward(be, xs, 3, &c->out);
}
static md_status concat_bwd(fd_case *c, const md_tensor *dy, md_tensor *g) {
    (void)c;
    const md_tensor *dxs[3] = {&g[0], &g[1], &g[2]};
    return md_concat_backward(be, dy, dxs, 3);
}

static md_status slice_fwd(fd_case *c) {
    return md_slice_forward(be, &c->in[0], 1, 1, &c->out);
}
static md_status slice_bwd(fd_case *c, const md_tensor *dy, md_tensor *g) {
    (void)c;
    return md_slice_backward(be, dy, 1, 1, &g[0]);
}

/* y = x0 + x1 through md_copy and md_add; the gradient of each is dy. */
static md_status add_fwd(fd_case *c) {
    MD_TRY(md_copy(be, &c->in[1], &c->out));
    return md_add(be, &c->in[0], &c->out);
}
static md_status add_bwd(fd_case *c, const md_tensor *dy, md_tensor *g) {
    (void)c;
    MD_TRY(md_add(be, dy, &g[0]));
    return md_add(be, dy, &g[1]);
}

static void test_shape_ops(void) {
    fd_case c;
    defaults(&c, "global_avg_pool");
    c.nin = 1;
    c.check[0] = 1;
    c.in[0] = md_tbuf4(be, 2, 3, 4, 5);
    fill(&c.in[0]);
    c.out = md_tbuf2(be, 2, 3);
    c.fwd = gap_fwd;
    c.bwd = gap_bwd;
    run_case(&c);
    case_free(&c);

    defaults(&c, "concat(3 inputs)");
    c.nin = 3;
    for (int i = 0; i < 3; i++) {
        c.in[i] = md_tbuf4(be, 2, i + 1, 3, 3);
        fill(&c.in[i]);
        c.check[i] = 1;
    }
    c.out = md_tbuf4(be, 2, 6, 3, 3);
    c.fwd = concat_fwd;
    c.bwd = concat_bwd;
    run_case(&c);
    case_free(&c);

    defaults(&c, "slice(1,1)");
    c.nin = 1;
    c.check[0] = 1;
    c.in[0] = md_tbuf4(be, 2, 2, 5, 5);
    fill(&c.in[0]);
    c.out = md_tbuf4(be, 2, 2, 4, 4);
    c.fwd = slice_fwd;
    c.bwd = slice_bwd;
    run_case(&c);
    case_free(&c);

    defaults(&c, "add");
    c.nin = 2;
    for (int i = 0; i < 2; i++) {
        c.in[i] = md_tbuf4(be, 2, 2, 3, 3);
        fill(&c.in[i]);
        c.check[i] = 1;
    }
    c.out = md_tbuf4(be, 2, 2, 3, 3);
    c.fwd = add_fwd;
    c.bwd = add_bwd;
    run_case(&c);
    case_free(&c);
}

/* ---- linear, dropout, loss ------------------------------------------------------- */

static md_status linear_fwd(fd_case *c) {
    return md_linear_forward(be, &c->in[0], &c->in[1], &c->in[2], &c->out);
}
static md_status linear_bwd(fd_case *c, const md_tensor *dy, md_tensor *g) {
    return md_linear_backward(be, &c->in[0], &c->in[1], dy, &g[0], &g[1], &g[2]);
}

typedef struct {
    md_tensor mask;
    float     p;
} drop_ctx;

static md_status dropout_fwd(fd_case *c) {
    drop_ctx *d = c->ctx;
    md_rng    r;
    md_rng_seed(&r, 7, 0); /* the same mask on every forward */
    return md_dropout_forward(be, d->p, &r, &c->in[0], &d->mask, &c->out);
}
static md_status dropout_bwd(fd_case *c, const md_tensor *dy, md_tensor *g) {
    drop_ctx *d = c->ctx;
    return md_dropout_backward(be, &d->mask, dy, &g[0]);
}

/* The loss is a scalar: `out` holds it, so L = r0 * loss. */
typedef struct {
    int32_t labels[4];
} ce_ctx;

static md_status ce_fwd(fd_case *c) {
    ce_ctx *e = c->ctx;
    return md_softmax_ce(be, &c->in[0], e->labels, &c->out.data[0], NULL);
}
static md_status ce_bwd(fd_case *c, const md_tensor *dy, md_tensor *g) {
    ce_ctx *e = c->ctx;
    float   loss;
    MD_TRY(md_softmax_ce(be, &c->in[0], e->labels, &loss, &g[0]));
    return md_scale(be, g[0].data, md_tensor_numel(&g[0]), dy->data[0]);
}

static void test_classifier_ops(void) {
    fd_case c;
    defaults(&c, "linear(+bias)");
    c.nin = 3;
    c.in[0] = md_tbuf2(be, 3, 5);
    c.in[1] = md_tbuf2(be, 4, 5);
    c.in[2] = md_tbuf1(be, 4);
    for (int i = 0; i < 3; i++) {
        fill(&c.in[i]);
        c.check[i] = 1;
    }
    c.out = md_tbuf2(be, 3, 4);
    c.fwd = linear_fwd;
    c.bwd = linear_bwd;
    run_case(&c);
    case_free(&c);

    drop_ctx d = {.p = 0.3f};
    d.mask = md_tbuf4(be, 2, 2, 3, 3);
    defaults(&c, "dropout(p=0.3)");
    c.nin = 1;
    c.check[0] = 1;
    c.in[0] = md_tbuf4(be, 2, 2, 3, 3);
    fill(&c.in[0]);
    c.out = md_tbuf4(be, 2, 2, 3, 3);
    c.fwd = dropout_fwd;
    c.bwd = dropout_bwd;
    c.ctx = &d;
    run_case(&c);
    case_free(&c);
    md_tbuf_free(be, &d.mask);

    ce_ctx e = {{2, 0, 4, 1}};
    defaults(&c, "softmax_cross_entropy");
    c.nin = 1;
    c.check[0] = 1;
    c.in[0] = md_tbuf2(be, 4, 5);
    md_fill_uniform(&rng, c.in[0].data, 20, -3.0f, 3.0f);
    c.out = md_tbuf1(be, 1);
    c.fwd = ce_fwd;
    c.bwd = ce_bwd;
    c.ctx = &e;
    c.h = 3e-3;
    run_case(&c);
    case_free(&c);
}

int main(void) {
    md_rng_seed(&rng, 1234, 0);
    if (md_backend_cpu_create(0, &be) != MD_OK) {
        fprintf(stderr, "backend: %s\n", md_error_message());
        return 2;
    }
    test_conv("conv 3x3 s1 p1", 3, 6, 4, 3, 1, 1, 1, 1);
    test_conv("conv 3x3 s2 p1", 3, 7, 4, 3, 2, 1, 1, 1);
    test_conv("conv dw 3x3 s1", 4, 6, 4, 3, 1, 1, 1, 4);
    test_conv("conv dw 5x5 s2", 4, 7, 4, 5, 2, 2, 1, 4);
    test_conv("conv dil dw 3x3 d2 s1", 4, 6, 4, 3, 1, 2, 2, 4);
    test_conv("conv dil dw 5x5 d2 s2", 4, 9, 4, 5, 2, 4, 2, 4);
    /* The mobile space's MBConv depthwise kernels (7x7: its own row sweep; a plane
     * wider than one 16-lane block of the weight-gradient accumulators), and 9x9
     * (the generic path). */
    test_conv("conv dw 7x7 s1", 4, 21, 4, 7, 1, 3, 1, 4);
    test_conv("conv dw 7x7 s2", 4, 19, 4, 7, 2, 3, 1, 4);
    test_conv("conv dw 9x9 s1", 3, 11, 3, 9, 1, 4, 1, 3);
    test_conv("conv 1x1", 4, 5, 6, 1, 1, 0, 1, 1);
    test_conv("conv 1x1 s2 (odd input)", 4, 5, 2, 1, 2, 0, 1, 1);
    test_conv("conv grouped 3x3 g2", 4, 5, 6, 3, 1, 1, 1, 2);
    test_bn("batch_norm train affine", 1, 1);
    test_bn("batch_norm train plain", 0, 1);
    test_bn("batch_norm eval affine", 1, 0);
    test_bn("batch_norm eval plain", 0, 0);
    test_act("relu", MD_ACT_RELU);
    test_act("relu6", MD_ACT_RELU6);
    test_pool("max_pool 3x3 s1", MD_POOL_MAX, 1, 5);
    test_pool("max_pool 3x3 s2", MD_POOL_MAX, 2, 6);
    test_pool("avg_pool 3x3 s1", MD_POOL_AVG, 1, 5);
    test_pool("avg_pool 3x3 s2", MD_POOL_AVG, 2, 7);
    test_shape_ops();
    test_classifier_ops();
    md_backend_destroy(be);
    return md_test_finish("test_ops_grad");
}
