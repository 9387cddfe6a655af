/* Every op of the CUDA backend against the CPU backend (the reference that
 * test_ops_grad and test_ops_torch check against finite differences and
 * PyTorch), forward and backward, with gradients accumulated onto non-zero
 * buffers to check the += contract. Exit 77 (skipped) without a GPU or without
 * the CUDA backend in this build. Tolerances are normalised errors
 * (md_norm_err): 1e-5 for exact-arithmetic ops, 2e-3 for convolutions and GEMMs
 * (TF32 is forbidden here, but cuDNN and oneDNN sum in different orders).
 * Also: cross-replica BN against a stand-in second replica (the same sequence
 * of collectives on both backends, dx or not), bad labels (refused, nothing
 * changed), a recorded graph replayed after every buffer it captured has been
 * outgrown (run it under compute-sanitizer: bench/gpu_check.sh does), and the
 * deterministic algorithms (two runs, the same bits). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdenas/optim.h"
#include "testutil.h"

static md_backend *cpu, *gpu;
static md_rng      rng;
static double      worst_ratio;

/* A tensor held on both backends with the same contents. */
typedef struct {
    md_tensor c, g; /* cpu, gpu views */
    size_t    n;
} dual;

static dual dual_make(int ndim, const int *dim, float lo, float hi) {
    dual d;
    d.c = md_tbuf(cpu, ndim, dim);
    d.g = md_tbuf(gpu, ndim, dim);
    d.n = md_tensor_numel(&d.c);
    if (hi > lo) md_fill_uniform(&rng, d.c.data, d.n, lo, hi);
    md_tbuf_set(gpu, &d.g, d.c.data);
    return d;
}
static dual dual4(int n, int c, int h, int w, float lo, float hi) {
    int dim[4] = {n, c, h, w};
    return dual_make(4, dim, lo, hi);
}
static dual dual1(int n, float lo, float hi) {
    return dual_make(1, &n, lo, hi);
}
static void dual_free(dual *d) {
    md_tbuf_free(cpu, &d->c);
    md_tbuf_free(gpu, &d->g);
}

static void same(const char *what, const dual *d, double tol) {
    float *h = malloc(d->n * sizeof *h);
    md_tbuf_get(gpu, &d->g, h);
    double e = md_norm_err(h, d->c.data, d->n);
    free(h);
    if (e / tol > worst_ratio) worst_ratio = e / tol;
    CHECK(e <= tol, "%s: cuda vs cpu normalised error %.3g > %.3g", what, e, tol);
}

static void test_conv(void) {
    static const md_conv_desc cases[] = {
        {4, 3, 16, 16, 8, 3, 3, 1, 1, 1, 1},   /* stem */
        {4, 8, 16, 16, 8, 3, 3, 2, 1, 1, 1},   /* strided */
        {4, 8, 16, 16, 8, 3, 3, 1, 1, 1, 8},   /* depthwise 3x3 */
        {4, 8, 16, 16, 8, 5, 5, 2, 2, 1, 8},   /* depthwise 5x5 s2 */
        {4, 8, 16, 16, 8, 3, 3, 1, 2, 2, 8},   /* dilated 3x3 */
        {4, 8, 16, 16, 8, 5, 5, 1, 4, 2, 8},   /* dilated 5x5 */
        {4, 8, 16, 16, 16, 1, 1, 1, 0, 1, 1},  /* pointwise */
        {4, 8, 16, 16, 8, 1, 1, 2, 0, 1, 1},   /* FactorizedReduce half */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const md_conv_desc *d = &cases[i];
        int oh, ow;
        CHECK_OK(md_conv_out_hw(d, &oh, &ow));
        md_conv *cc = NULL, *gc = NULL;
        CHECK_OK(md_conv_create(cpu, d, &cc));
        CHECK_OK(md_conv_create(gpu, d, &gc));
        if (!cc || !gc) continue;
        dual x = dual4(d->n, d->c_in, d->h, d->w, -1, 1);
        dual w = dual4(d->c_out, d->c_in / d->groups, d->kh, d->kw, -0.5f, 0.5f);
        dual y = dual4(d->n, d->c_out, oh, ow, 0, 0), dy = dual4(d->n, d->c_out, oh, ow, -1, 1);
        dual dx = dual4(d->n, d->c_in, d->h, d->w, -1, 1);
        dual dw = dual4(d->c_out, d->c_in / d->groups, d->kh, d->kw, -1, 1);
        CHECK_OK(md_conv_forward(cc, &x.c, &w.c, &y.c));
        CHECK_OK(md_conv_forward(gc, &x.g, &w.g, &y.g));
        CHECK_OK(md_conv_backward(cc, &x.c, &w.c, &dy.c, &dx.c, &dw.c));
        CHECK_OK(md_conv_backward(gc, &x.g, &w.g, &dy.g, &dx.g, &dw.g));
        char name[64];
        snprintf(name, sizeof name, "conv case %zu y", i);
        same(name, &y, 2e-3);
        snprintf(name, sizeof name, "conv case %zu dx (+=)", i);
        same(name, &dx, 2e-3);
        snprintf(name, sizeof name, "conv case %zu dw (+=)", i);
        same(name, &dw, 2e-3);
        dual_free(&x), dual_free(&w), dual_free(&y), dual_free(&dy), dual_free(&dx), dual_free(&dw);
        md_conv_destroy(cc), md_conv_destroy(gc);
    }
}

static md_status identity_sum(void *ctx, double *buf, int n) {
    (void)ctx, (void)buf, (void)n;
    return MD_OK;
}

static void test_bn(void) {
    static const md_bn_sync one_replica = {identity_sum, NULL};
    for (int mode = 0; mode < 4; mode++) { /* affine, plain, synced (one replica), eval */
        int  affine = mode != 1, eval = mode == 3;
        int  C = 6;
        dual x = dual4(5, C, 7, 7, -2, 3), y = dual4(5, C, 7, 7, 0, 0);
        dual dy = dual4(5, C, 7, 7, -1, 1), dx = dual4(5, C, 7, 7, -1, 1);
        dual g = dual1(C, 0.5f, 1.5f), b = dual1(C, -0.5f, 0.5f), dg = dual1(C, -1, 1),
             db = dual1(C, -1, 1);
        dual rm = dual1(C, -0.2f, 0.2f), rv = dual1(C, 0.5f, 2.0f);
        dual sm = dual1(C, 0, 0), si = dual1(C, 0, 0);
        md_bn_state sc = {affine ? &g.c : NULL, affine ? &b.c : NULL, &rm.c, &rv.c, &sm.c, &si.c,
                          0.1f, 1e-5f, mode == 2 ? &one_replica : NULL};
        md_bn_state sg = {affine ? &g.g : NULL, affine ? &b.g : NULL, &rm.g, &rv.g, &sm.g, &si.g,
                          0.1f, 1e-5f, mode == 2 ? &one_replica : NULL};
        if (eval) {
            CHECK_OK(md_bn_forward_eval(cpu, &x.c, &y.c, &sc));
            CHECK_OK(md_bn_forward_eval(gpu, &x.g, &y.g, &sg));
            CHECK_OK(md_bn_backward_eval(cpu, &x.c, &dy.c, &dx.c, &dg.c, &db.c, &sc));
            CHECK_OK(md_bn_backward_eval(gpu, &x.g, &dy.g, &dx.g, &dg.g, &db.g, &sg));
        } else {
            CHECK_OK(md_bn_forward_train(cpu, &x.c, &y.c, &sc));
            CHECK_OK(md_bn_forward_train(gpu, &x.g, &y.g, &sg));
            CHECK_OK(md_bn_backward_train(cpu, &x.c, &dy.c, &dx.c, affine ? &dg.c : NULL,
                                          affine ? &db.c : NULL, &sc));
            CHECK_OK(md_bn_backward_train(gpu, &x.g, &dy.g, &dx.g, affine ? &dg.g : NULL,
                                          affine ? &db.g : NULL, &sg));
            same("bn save_mean", &sm, 1e-5);
            same("bn save_invstd", &si, 1e-5);
        }
        static const char *const names[4] = {"bn affine", "bn plain", "bn synced", "bn eval"};
        char n1[64];
        snprintf(n1, sizeof n1, "%s y", names[mode]), same(n1, &y, 1e-5);
        snprintf(n1, sizeof n1, "%s dx (+=)", names[mode]), same(n1, &dx, 1e-5);
        snprintf(n1, sizeof n1, "%s dgamma (+=)", names[mode]), same(n1, &dg, 1e-5);
        snprintf(n1, sizeof n1, "%s dbeta (+=)", names[mode]), same(n1, &db, 1e-5);
        snprintf(n1, sizeof n1, "%s running mean", names[mode]), same(n1, &rm, 1e-5);
        snprintf(n1, sizeof n1, "%s running var", names[mode]), same(n1, &rv, 1e-5);
        dual *all[] = {&x, &y, &dy, &dx, &g, &b, &dg, &db, &rm, &rv, &sm, &si};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) dual_free(all[i]);
    }
}

/* A stand-in for a second replica holding the same rows: every reduction
 * doubles (sums and counts alike), and the sequence of calls is recorded. */
typedef struct {
    int n[16];
    int calls;
} sync_log;

static md_status doubled_sum(void *ctx, double *buf, int n) {
    sync_log *l = ctx;
    if (l->calls < 16) l->n[l->calls] = n;
    l->calls++;
    for (int i = 0; i < n; i++) buf[i] *= 2.0;
    return MD_OK;
}

static void test_bn_sync(void) {
    for (int with_dx = 0; with_dx < 2; with_dx++) {
        int         C = 6;
        sync_log    lc = {{0}, 0}, lg = {{0}, 0};
        md_bn_sync  syc = {doubled_sum, &lc}, syg = {doubled_sum, &lg};
        dual x = dual4(4, C, 5, 5, -2, 3), y = dual4(4, C, 5, 5, 0, 0);
        dual dy = dual4(4, C, 5, 5, -1, 1), dx = dual4(4, C, 5, 5, -1, 1);
        dual g = dual1(C, 0.5f, 1.5f), b = dual1(C, -0.5f, 0.5f), dg = dual1(C, -1, 1),
             db = dual1(C, -1, 1);
        dual rm = dual1(C, -0.2f, 0.2f), rv = dual1(C, 0.5f, 2.0f);
        dual sm = dual1(C, 0, 0), si = dual1(C, 0, 0);
        md_bn_state sc = {&g.c, &b.c, &rm.c, &rv.c, &sm.c, &si.c, 0.1f, 1e-5f, &syc};
        md_bn_state sg = {&g.g, &b.g, &rm.g, &rv.g, &sm.g, &si.g, 0.1f, 1e-5f, &syg};
        CHECK_OK(md_bn_forward_train(cpu, &x.c, &y.c, &sc));
        CHECK_OK(md_bn_forward_train(gpu, &x.g, &y.g, &sg));
        CHECK_OK(md_bn_backward_train(cpu, &x.c, &dy.c, with_dx ? &dx.c : NULL, &dg.c, &db.c, &sc));
        CHECK_OK(md_bn_backward_train(gpu, &x.g, &dy.g, with_dx ? &dx.g : NULL, &dg.g, &db.g, &sg));
        same("bn two replicas: y", &y, 1e-5), same("bn two replicas: save_mean", &sm, 1e-5);
        same("bn two replicas: save_invstd", &si, 1e-5);
        same("bn two replicas: running mean", &rm, 1e-5);
        same("bn two replicas: running var (unbiased over the global count)", &rv, 1e-5);
        same("bn two replicas: dgamma (+=)", &dg, 1e-5), same("bn two replicas: dbeta (+=)", &db, 1e-5);
        if (with_dx) same("bn two replicas: dx (+=)", &dx, 1e-5);
        /* forward [C+1], [C]; backward [2C+1], with or without dx */
        CHECK(lc.calls == 3 && lc.n[0] == C + 1 && lc.n[1] == C && lc.n[2] == 2 * C + 1,
              "cpu sync-BN protocol: %d calls", lc.calls);
        CHECK(lg.calls == lc.calls && !memcmp(lg.n, lc.n, sizeof lc.n),
              "sync-BN collectives differ by backend (dx %s): cpu %d calls, cuda %d", with_dx ? "given" : "NULL",
              lc.calls, lg.calls);
        dual *all[] = {&x, &y, &dy, &dx, &g, &b, &dg, &db, &rm, &rv, &sm, &si};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) dual_free(all[i]);
    }
}

/* A recorded sequence (convolution, BN with its constants, ReLU, a device
 * reduction) replays to the bits of the eager run, also after the workspace,
 * the reduction buffers and the BN constants it captured were outgrown by
 * bigger shapes (which must not free or move them while the graph lives).
 * Eager runs twice give the same bits too (deterministic algorithms). */
static void test_graph(void) {
    CHECK(md_backend_has_graphs(gpu), "the cuda backend has no graphs");
    if (!md_backend_has_graphs(gpu)) return;
    md_conv_desc d = {8, 4, 12, 12, 8, 3, 3, 1, 1, 1, 1};
    md_conv     *gc = NULL;
    CHECK_OK(md_conv_create(gpu, &d, &gc));
    if (!gc) return;
    dual x = dual4(8, 4, 12, 12, -1, 1), w = dual4(8, 4, 3, 3, -0.5f, 0.5f);
    dual y = dual4(8, 8, 12, 12, 0, 0), z = dual4(8, 8, 12, 12, 0, 0);
    dual rm = dual1(8, 0, 0), rv = dual1(8, 1, 1), sm = dual1(8, 0, 0), si = dual1(8, 0, 0);
    md_bn_state st = {NULL, NULL, &rm.g, &rv.g, &sm.g, &si.g, 0.1f, 1e-5f, NULL}; /* plain BN */
    double     *acc = NULL, a_eager[2], a_graph;
    CHECK_OK(md_backend_alloc(gpu, sizeof(double), (void **)&acc));
    float *e1 = malloc(z.n * sizeof *e1), *e2 = malloc(z.n * sizeof *e2);
    for (int run = 0; run < 3; run++) { /* eager, eager, capture */
        CHECK_OK(md_zero(gpu, &rm.g));
        CHECK_OK(md_backend_upload(gpu, rv.g.data, rv.c.data, 8 * sizeof(float)));
        if (run == 2) CHECK_OK(md_graph_capture_begin(gpu));
        CHECK_OK(md_zero(gpu, &z.g)); /* a capturable way to reset the accumulator's source */
        CHECK_OK(md_conv_forward(gc, &x.g, &w.g, &y.g));
        CHECK_OK(md_bn_forward_train(gpu, &y.g, &z.g, &st));
        CHECK_OK(md_act_forward(gpu, MD_ACT_RELU, &z.g, &z.g));
        CHECK_OK(md_sumsq_dev(gpu, z.g.data, z.n, acc));
        if (run == 2) break;
        md_tbuf_get(gpu, &z.g, run ? e2 : e1);
        CHECK_OK(md_backend_download(gpu, &a_eager[run], acc, sizeof(double)));
        CHECK_OK(md_backend_upload(gpu, acc, &(double){0}, sizeof(double)));
    }
    md_graph *g = NULL;
    CHECK_OK(md_graph_capture_end(gpu, &g));
    CHECK(!memcmp(e1, e2, z.n * sizeof *e1) && a_eager[0] == a_eager[1],
          "two eager runs differ: convolution algorithms are not deterministic");
    /* Outgrow everything the graph captured, checking the bigger shapes too. */
    md_conv_desc big = {16, 64, 32, 32, 64, 3, 3, 1, 1, 1, 1};
    md_conv     *bc = NULL, *bcc = NULL;
    CHECK_OK(md_conv_create(gpu, &big, &bc));
    CHECK_OK(md_conv_create(cpu, &big, &bcc));
    if (bc && bcc) {
        dual bx = dual4(16, 64, 32, 32, -1, 1), bw = dual4(64, 64, 3, 3, -0.1f, 0.1f);
        dual by = dual4(16, 64, 32, 32, 0, 0);
        CHECK_OK(md_conv_forward(bc, &bx.g, &bw.g, &by.g));
        CHECK_OK(md_conv_forward(bcc, &bx.c, &bw.c, &by.c));
        same("big conv after a graph (workspace grown)", &by, 2e-3);
        dual_free(&bx), dual_free(&bw), dual_free(&by);
    }
    md_conv_destroy(bc), md_conv_destroy(bcc);
    {
        int  C = 300; /* more channels than the BN constants held */
        dual bx = dual4(2, C, 3, 3, -1, 1), by = dual4(2, C, 3, 3, 0, 0);
        dual bsm = dual1(C, 0, 0), bsi = dual1(C, 0, 0);
        md_bn_state bc_s = {NULL, NULL, NULL, NULL, &bsm.c, &bsi.c, 0.1f, 1e-5f, NULL};
        md_bn_state bg_s = {NULL, NULL, NULL, NULL, &bsm.g, &bsi.g, 0.1f, 1e-5f, NULL};
        CHECK_OK(md_bn_forward_train(cpu, &bx.c, &by.c, &bc_s));
        CHECK_OK(md_bn_forward_train(gpu, &bx.g, &by.g, &bg_s));
        same("bn of 300 channels after a graph (constants grown)", &by, 1e-5);
        dual_free(&bx), dual_free(&by), dual_free(&bsm), dual_free(&bsi);
    }
    {
        int      N = 6000, K = 3, dim[2] = {6000, 3}; /* more rows than the reduction buffer */
        dual     lz = dual_make(2, dim, -2, 2);
        int32_t *lab = calloc((size_t)N, sizeof *lab), *lab_g = NULL;
        for (int n = 0; n < N; n++) lab[n] = n % K;
        CHECK_OK(md_backend_alloc(gpu, sizeof *lab * (size_t)N, (void **)&lab_g));
        CHECK_OK(md_backend_upload(gpu, lab_g, lab, sizeof *lab * (size_t)N));
        float lc = 0, lg = 0;
        CHECK_OK(md_softmax_ce(cpu, &lz.c, lab, &lc, NULL));
        CHECK_OK(md_softmax_ce(gpu, &lz.g, lab_g, &lg, NULL));
        CHECK(fabsf(lc - lg) <= 1e-5f * fabsf(lc), "softmax-CE of 6000 rows cpu %g cuda %g", lc, lg);
        md_backend_free(gpu, lab_g);
        free(lab);
        dual_free(&lz);
    }
    /* Replay on the same inputs: the eager bits. */
    CHECK_OK(md_backend_upload(gpu, acc, &(double){0}, sizeof(double)));
    CHECK_OK(md_zero(gpu, &rm.g));
    CHECK_OK(md_backend_upload(gpu, rv.g.data, rv.c.data, 8 * sizeof(float)));
    if (g) CHECK_OK(md_graph_launch(g));
    md_tbuf_get(gpu, &z.g, e2);
    CHECK_OK(md_backend_download(gpu, &a_graph, acc, sizeof(double)));
    CHECK(!memcmp(e1, e2, z.n * sizeof *e1), "graph replay after reallocations: output differs");
    CHECK(a_graph == a_eager[0], "graph replay: sum of squares %.17g, eager %.17g", a_graph, a_eager[0]);
    md_graph_destroy(g);
    md_backend_free(gpu, acc);
    free(e1), free(e2);
    dual *all[] = {&x, &w, &y, &z, &rm, &rv, &sm, &si};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) dual_free(all[i]);
    md_conv_destroy(gc);
}

static void test_elementwise(void) {
    for (int a = 0; a < 2; a++) {
        md_act act = a ? MD_ACT_RELU6 : MD_ACT_RELU;
        dual x = dual4(3, 4, 9, 9, -8, 8), y = dual4(3, 4, 9, 9, 0, 0);
        dual dy = dual4(3, 4, 9, 9, -1, 1), dx = dual4(3, 4, 9, 9, -1, 1);
        CHECK_OK(md_act_forward(cpu, act, &x.c, &y.c));
        CHECK_OK(md_act_forward(gpu, act, &x.g, &y.g));
        CHECK_OK(md_act_backward(cpu, act, &y.c, &dy.c, &dx.c));
        CHECK_OK(md_act_backward(gpu, act, &y.g, &dy.g, &dx.g));
        same(a ? "relu6 y" : "relu y", &y, 0), same(a ? "relu6 dx" : "relu dx", &dx, 0);
        CHECK_OK(md_add(cpu, &x.c, &dx.c)); CHECK_OK(md_add(gpu, &x.g, &dx.g));
        same("add", &dx, 0);
        CHECK_OK(md_copy(cpu, &x.c, &y.c)); CHECK_OK(md_copy(gpu, &x.g, &y.g));
        same("copy", &y, 0);
        CHECK_OK(md_zero(cpu, &y.c)); CHECK_OK(md_zero(gpu, &y.g));
        same("zero", &y, 0);
        CHECK_OK(md_scale(cpu, dx.c.data, dx.n, 0.37f)); CHECK_OK(md_scale(gpu, dx.g.data, dx.n, 0.37f));
        same("scale", &dx, 0);
        double sc = 1.5, sg = 1.5; /* md_sumsq accumulates */
        CHECK_OK(md_sumsq(cpu, x.c.data, x.n, &sc)); CHECK_OK(md_sumsq(gpu, x.g.data, x.n, &sg));
        CHECK(fabs(sc - sg) <= 1e-9 * sc, "sumsq cpu %.17g cuda %.17g", sc, sg);
        dual w = dual4(3, 4, 9, 9, -1, 1), g = dual4(3, 4, 9, 9, -1, 1), v = dual4(3, 4, 9, 9, -1, 1);
        CHECK_OK(md_sgd_update(cpu, w.c.data, g.c.data, v.c.data, w.n, 0.1f, 0.9f, 3e-4f));
        CHECK_OK(md_sgd_update(gpu, w.g.data, g.g.data, v.g.data, w.n, 0.1f, 0.9f, 3e-4f));
        same("sgd w", &w, 1e-6), same("sgd momentum", &v, 1e-6);
        CHECK_OK(md_sgd_update_nesterov(cpu, w.c.data, g.c.data, v.c.data, w.n, 0.1f, 0.9f, 4e-5f, 1));
        CHECK_OK(md_sgd_update_nesterov(gpu, w.g.data, g.g.data, v.g.data, w.n, 0.1f, 0.9f, 4e-5f, 1));
        same("sgd nesterov w", &w, 1e-6), same("sgd nesterov momentum", &v, 1e-6);
        dual *all[] = {&x, &y, &dy, &dx, &w, &g, &v};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) dual_free(all[i]);
    }
}

static void test_pool_shape(void) {
    for (int kind = 0; kind < 2; kind++)
        for (int st = 1; st <= 2; st++) {
            md_pool_desc p = {kind ? MD_POOL_AVG : MD_POOL_MAX, 3, st, 1};
            int oh = (9 + 2 - 3) / st + 1;
            dual x = dual4(2, 3, 9, 9, -1, 1), y = dual4(2, 3, oh, oh, 0, 0);
            /* Ties: a quarter of the values repeat, so "first maximum" matters. */
            for (size_t i = 0; i < x.n; i += 4) x.c.data[i] = 0.5f;
            md_tbuf_set(gpu, &x.g, x.c.data);
            dual dy = dual4(2, 3, oh, oh, -1, 1), dx = dual4(2, 3, 9, 9, -1, 1);
            CHECK_OK(md_pool_forward(cpu, &p, &x.c, &y.c)); CHECK_OK(md_pool_forward(gpu, &p, &x.g, &y.g));
            CHECK_OK(md_pool_backward(cpu, &p, &x.c, &dy.c, &dx.c));
            CHECK_OK(md_pool_backward(gpu, &p, &x.g, &dy.g, &dx.g));
            same(kind ? "avg pool y" : "max pool y", &y, 1e-6);
            same(kind ? "avg pool dx" : "max pool dx", &dx, 1e-6);
            dual_free(&x), dual_free(&y), dual_free(&dy), dual_free(&dx);
        }
    dual x = dual4(3, 5, 6, 6, -1, 1), dx = dual4(3, 5, 6, 6, -1, 1);
    int  d2[2] = {3, 5};
    dual y = dual_make(2, d2, 0, 0), dy = dual_make(2, d2, -1, 1);
    CHECK_OK(md_gap_forward(cpu, &x.c, &y.c)); CHECK_OK(md_gap_forward(gpu, &x.g, &y.g));
    CHECK_OK(md_gap_backward(cpu, &dy.c, &dx.c)); CHECK_OK(md_gap_backward(gpu, &dy.g, &dx.g));
    same("gap y", &y, 1e-6), same("gap dx", &dx, 1e-6);
    /* concat of 3, slice with FactorizedReduce's shift */
    dual a = dual4(2, 3, 5, 5, -1, 1), b = dual4(2, 4, 5, 5, -1, 1), c = dual4(2, 2, 5, 5, -1, 1);
    dual cat = dual4(2, 9, 5, 5, 0, 0), dcat = dual4(2, 9, 5, 5, -1, 1);
    const md_tensor *xc[3] = {&a.c, &b.c, &c.c}, *xg[3] = {&a.g, &b.g, &c.g};
    CHECK_OK(md_concat_forward(cpu, xc, 3, &cat.c)); CHECK_OK(md_concat_forward(gpu, xg, 3, &cat.g));
    same("concat y", &cat, 0);
    CHECK_OK(md_concat_backward(cpu, &dcat.c, xc, 3)); CHECK_OK(md_concat_backward(gpu, &dcat.g, xg, 3));
    same("concat dx a (+=)", &a, 0), same("concat dx b (+=)", &b, 0), same("concat dx c (+=)", &c, 0);
    dual s = dual4(2, 9, 4, 4, 0, 0);
    CHECK_OK(md_slice_forward(cpu, &cat.c, 1, 1, &s.c)); CHECK_OK(md_slice_forward(gpu, &cat.g, 1, 1, &s.g));
    same("slice y", &s, 0);
    CHECK_OK(md_slice_backward(cpu, &s.c, 1, 1, &dcat.c)); CHECK_OK(md_slice_backward(gpu, &s.g, 1, 1, &dcat.g));
    same("slice dx (+=)", &dcat, 0);
    dual *all[] = {&x, &dx, &y, &dy, &a, &b, &c, &cat, &dcat, &s};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) dual_free(all[i]);
}

static void test_classifier(void) {
    int  N = 37, in = 64, K = 10;
    int  dx2[2] = {N, in}, dw2[2] = {K, in}, dy2[2] = {N, K};
    dual x = dual_make(2, dx2, -1, 1), w = dual_make(2, dw2, -0.3f, 0.3f), b = dual1(K, -1, 1);
    dual y = dual_make(2, dy2, 0, 0), dy = dual_make(2, dy2, -1, 1), dx = dual_make(2, dx2, -1, 1);
    dual dw = dual_make(2, dw2, -1, 1), db = dual1(K, -1, 1);
    CHECK_OK(md_linear_forward(cpu, &x.c, &w.c, &b.c, &y.c));
    CHECK_OK(md_linear_forward(gpu, &x.g, &w.g, &b.g, &y.g));
    CHECK_OK(md_linear_backward(cpu, &x.c, &w.c, &dy.c, &dx.c, &dw.c, &db.c));
    CHECK_OK(md_linear_backward(gpu, &x.g, &w.g, &dy.g, &dx.g, &dw.g, &db.g));
    same("linear y", &y, 2e-3), same("linear dx (+=)", &dx, 2e-3), same("linear dw (+=)", &dw, 2e-3);
    same("linear db (+=)", &db, 1e-5);
    /* loss and accuracy: labels in backend memory */
    int32_t *lab = malloc(sizeof *lab * (size_t)N), *lab_g = NULL;
    for (int n = 0; n < N; n++) lab[n] = (int32_t)(md_rng_u32(&rng) % (uint32_t)K);
    CHECK_OK(md_backend_alloc(gpu, sizeof *lab * (size_t)N, (void **)&lab_g));
    CHECK_OK(md_backend_upload(gpu, lab_g, lab, sizeof *lab * (size_t)N));
    float lc = 0, lg = 0;
    int   cc = -1, cg = -2;
    CHECK_OK(md_softmax_ce(cpu, &y.c, lab, &lc, &dy.c));
    CHECK_OK(md_softmax_ce(gpu, &y.g, lab_g, &lg, &dy.g));
    CHECK(fabsf(lc - lg) <= 1e-5f * fabsf(lc), "softmax-CE loss cpu %g cuda %g", lc, lg);
    same("softmax-CE dlogits (+=)", &dy, 1e-5);
    CHECK_OK(md_top1_correct(cpu, &y.c, lab, &cc));
    CHECK_OK(md_top1_correct(gpu, &y.g, lab_g, &cg));
    CHECK(cc == cg, "top-1 correct cpu %d cuda %d", cc, cg);
    lab[3] = K; /* a bad label is refused by both, and nothing is changed */
    CHECK_OK(md_backend_upload(gpu, lab_g, lab, sizeof *lab * (size_t)N));
    {
        float *before = malloc(dy.n * sizeof *before), *after = malloc(dy.n * sizeof *after);
        md_tbuf_get(gpu, &dy.g, before);
        CHECK(md_softmax_ce(gpu, &y.g, lab_g, &lg, &dy.g) == MD_ERR_ARG, "a label of %d was accepted", K);
        md_tbuf_get(gpu, &dy.g, after);
        CHECK(!memcmp(before, after, dy.n * sizeof *before),
              "softmax-CE changed the logit gradient before refusing a bad label");
        CHECK(md_top1_correct(cpu, &y.c, lab, &cc) == MD_ERR_ARG, "cpu top-1 accepted label %d", K);
        CHECK(md_top1_correct(gpu, &y.g, lab_g, &cg) == MD_ERR_ARG,
              "cuda top-1 accepted label %d (counted it as a miss?)", K);
        free(before), free(after);
    }
    lab[3] = K - 1; /* valid again: the CPU refuses a bad label, so they could not be compared */
    CHECK_OK(md_backend_upload(gpu, lab_g, lab, sizeof *lab * (size_t)N));
    /* the device-side loss: the same numbers, left in backend memory */
    {
        float *og = NULL, oc[2], oh[2];
        dual   d1 = dual_make(2, dy2, -1, 1);
        CHECK_OK(md_backend_alloc(gpu, 64, (void **)&og));
        CHECK_OK(md_loss_dev(cpu, &y.c, lab, oc, &d1.c));
        CHECK_OK(md_loss_dev(gpu, &y.g, lab_g, og, &d1.g));
        CHECK_OK(md_backend_download(gpu, oh, og, sizeof oh));
        CHECK(fabsf(oc[0] - oh[0]) <= 1e-5f * fabsf(oc[0]) && oc[1] == oh[1],
              "loss_dev cpu %g/%g cuda %g/%g", oc[0], oc[1], oh[0], oh[1]);
        same("loss_dev dlogits (+=)", &d1, 1e-5);
        CHECK_OK(md_loss_dev_smoothed(cpu, &y.c, lab, 0.1f, oc, &d1.c));
        CHECK_OK(md_loss_dev_smoothed(gpu, &y.g, lab_g, 0.1f, og, &d1.g));
        CHECK_OK(md_backend_download(gpu, oh, og, sizeof oh));
        CHECK(fabsf(oc[0] - oh[0]) <= 1e-5f * fabsf(oc[0]) && oc[1] == oh[1],
              "loss_dev smoothed cpu %g/%g cuda %g/%g", oc[0], oc[1], oh[0], oh[1]);
        same("loss_dev smoothed dlogits (+=)", &d1, 1e-5);
        /* clip over two ranges of dw's buffer, norm from the backend */
        double *acc_g = (double *)(og + 2), acc_c[1];
        md_range rg[2] = {{0, 100}, {200, 300}};
        CHECK_OK(md_clip_grad_norm_dev(cpu, dw.c.data, rg, 2, 0.5f, acc_c));
        CHECK_OK(md_clip_grad_norm_dev(gpu, dw.g.data, rg, 2, 0.5f, acc_g));
        same("clip_grad_norm_dev", &dw, 1e-6);
        md_backend_free(gpu, og);
        dual_free(&d1);
    }
    md_backend_free(gpu, lab_g);
    free(lab);
    /* dropout: the same host stream gives the same mask */
    dual m = dual_make(2, dx2, 0, 0), yd = dual_make(2, dx2, 0, 0);
    md_rng r1, r2;
    md_rng_seed(&r1, 5, 9), md_rng_seed(&r2, 5, 9);
    CHECK_OK(md_dropout_forward(cpu, 0.3f, &r1, &x.c, &m.c, &yd.c));
    CHECK_OK(md_dropout_forward(gpu, 0.3f, &r2, &x.g, &m.g, &yd.g));
    same("dropout mask", &m, 0), same("dropout y", &yd, 0);
    dual gdy = dual_make(2, dx2, -1, 1), gdx = dual_make(2, dx2, -1, 1);
    CHECK_OK(md_dropout_backward(cpu, &m.c, &gdy.c, &gdx.c));
    CHECK_OK(md_dropout_backward(gpu, &m.g, &gdy.g, &gdx.g));
    same("dropout dx (+=)", &gdx, 0);
    /* row scale: drop-path's forward and (accumulating) backward */
    dual sc = dual1(N, 0, 2);
    for (int n = 0; n < N; n += 3) sc.c.data[n] = 0.0f; /* dropped paths */
    md_tbuf_set(gpu, &sc.g, sc.c.data);
    CHECK_OK(md_row_scale(cpu, &x.c, sc.c.data, &yd.c, 0));
    CHECK_OK(md_row_scale(gpu, &x.g, sc.g.data, &yd.g, 0));
    same("row_scale y", &yd, 0);
    CHECK_OK(md_row_scale(cpu, &gdy.c, sc.c.data, &gdx.c, 1));
    CHECK_OK(md_row_scale(gpu, &gdy.g, sc.g.data, &gdx.g, 1));
    same("row_scale dx (+=)", &gdx, 0);
    dual_free(&gdy), dual_free(&gdx), dual_free(&sc);
    dual *all[] = {&x, &w, &b, &y, &dy, &dx, &dw, &db, &m, &yd};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) dual_free(all[i]);
}


int main(void) {
    if (!md_backend_cuda_built()) {
        printf("test_cuda_ops: skipped, this build has no CUDA backend\n");
        return 77;
    }
    if (md_backend_cuda_create(0, 0, 0, &gpu) != MD_OK) {
        printf("test_cuda_ops: skipped, %s\n", md_error_message());
        return 77;
    }
    CHECK_OK(md_backend_cpu_create(0, &cpu));
    md_rng_seed(&rng, 2024, 11);
    printf("%s\n%s\n", md_backend_describe(gpu), md_backend_describe(cpu));
    test_conv();
    test_bn();
    test_elementwise();
    test_pool_shape();
    test_classifier();
    test_bn_sync();
    test_graph();
    md_test_host_memory(gpu);
    printf("worst error / tolerance over all checks: %.3f\n", worst_ratio);
    md_backend_destroy(gpu);
    md_backend_destroy(cpu);
    return md_test_finish("test_cuda_ops");
}
