/* bench_ops: forward and backward time of every op of the CIFAR DARTS search
 * network, at the shapes that network runs them, on the CPU backend.
 *
 * For each (op, shape) it warms up, then times `iters` iterations of
 * forward (then sync) and backward (then sync) separately with
 * CLOCK_MONOTONIC, and prints one JSON line with the medians:
 *   {"bench":"op","impl":"mdenas","op":"dw3x3_s1","shape":[64,16,32,32],
 *    "threads":2,"fwd_ms":..,"bwd_ms":..,"total_ms":..}
 * total_ms is the median of the per-iteration fwd+bwd sums, total_min_ms
 * their minimum (steadier on a busy machine). "shape" is the
 * shape of the op's (first) input. bench/bench_ops_torch.py prints the same
 * lines for PyTorch; bench/compare_ops.sh joins the two.
 *
 * Backward ops accumulate into their gradient buffers (see backend.h); the
 * buffers are never re-zeroed, which changes the values but not the work. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mdenas/backend.h"
#include "mdenas/error.h"
#include "mdenas/tensor.h"

/* ---- options ---------------------------------------------------------- */

typedef struct {
    int         threads;
    int         iters;
    int         warmup;
    int         batch;
    const char *filter;
} bench_opts;

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [options]\n"
            "Times forward and backward of each op of the CIFAR DARTS search network\n"
            "(C,HxW in (16,32x32) (32,16x16) (64,8x8)) on the mdenas CPU backend and prints\n"
            "one JSON line per (op, shape) with the median fwd_ms, bwd_ms and total_ms.\n"
            "\n"
            "options:\n"
            "  --threads N    threads for md_backend_cpu_create (default 1; 0 = OpenMP default)\n"
            "  --iters N      timed iterations, median taken (default 20)\n"
            "  --warmup N     untimed iterations first (default 3)\n"
            "  --batch N      batch size (default 64)\n"
            "  --filter SUB   only ops whose name contains SUB\n"
            "  --help         this text\n"
            "\n"
            "ops: conv3x3_stem, dw{3x3,5x5}_s{1,2}, dil{3x3,5x5}_d2_s{1,2}, pw1x1, pw1x1_s2,\n"
            "     bn_train, relu, {max,avg}pool3x3_s{1,2}, add, concat4, gap, linear, softmax_ce\n",
            prog);
}

static int parse_int(const char *prog, const char *flag, const char *s, int lo, int *out)
{
    char *end = NULL;
    errno     = 0;
    long v    = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > 1000000) {
        fprintf(stderr, "%s: %s wants an integer >= %d, got '%s'\n", prog, flag, lo, s);
        return 0;
    }
    *out = (int)v;
    return 1;
}

static int parse_args(int argc, char **argv, bench_opts *o)
{
    o->threads = 1;
    o->iters   = 20;
    o->warmup  = 3;
    o->batch   = 64;
    o->filter  = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout, argv[0]);
            exit(0);
        }
        if (strcmp(a, "--threads") != 0 && strcmp(a, "--iters") != 0 &&
            strcmp(a, "--warmup") != 0 && strcmp(a, "--batch") != 0 &&
            strcmp(a, "--filter") != 0) {
            fprintf(stderr, "%s: unknown option '%s' (see --help)\n", argv[0], a);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: %s needs a value (see --help)\n", argv[0], a);
            return 0;
        }
        const char *v = argv[++i];
        int         ok = 1;
        if (strcmp(a, "--threads") == 0)
            ok = parse_int(argv[0], a, v, 0, &o->threads);
        else if (strcmp(a, "--iters") == 0)
            ok = parse_int(argv[0], a, v, 1, &o->iters);
        else if (strcmp(a, "--warmup") == 0)
            ok = parse_int(argv[0], a, v, 0, &o->warmup);
        else if (strcmp(a, "--batch") == 0)
            ok = parse_int(argv[0], a, v, 1, &o->batch);
        else
            o->filter = v;
        if (!ok) return 0;
    }
    return 1;
}

/* ---- errors ------------------------------------------------------------- */

static void die_status(const char *what, md_status s, const char *file, int line)
{
    fprintf(stderr, "bench_ops: %s:%d: %s failed (%s): %s\n", file, line, what, md_status_name(s),
            md_error_message());
    exit(1);
}

#define CHECK(expr)                                                                                \
    do {                                                                                           \
        md_status chk_s_ = (expr);                                                                 \
        if (chk_s_ != MD_OK) die_status(#expr, chk_s_, __FILE__, __LINE__);                        \
    } while (0)

/* ---- buffers ------------------------------------------------------------ */

#define MAX_BUFS 32

/* Everything one (op, shape) case needs; the step functions pick their fields. */
typedef struct {
    md_backend  *be;
    void        *bufs[MAX_BUFS];
    int          nbufs;
    uint64_t     seed;
    /* generic operands */
    md_tensor    x, y, dy, dx, w, dw, b, db;
    md_tensor    xs[4], dxs[4];
    md_conv     *conv;
    md_pool_desc pool;
    md_bn_state  bn;
    md_tensor    bn_rmean, bn_rvar, bn_smean, bn_sinvstd;
    int32_t     *labels;
    float        loss;
} bench_case;

static float *case_alloc(bench_case *c, size_t nfloats)
{
    if (c->nbufs >= MAX_BUFS) {
        fprintf(stderr, "bench_ops: internal error: more than %d buffers in one case\n", MAX_BUFS);
        exit(1);
    }
    void *p = NULL;
    CHECK(md_backend_alloc(c->be, nfloats * sizeof(float), &p));
    c->bufs[c->nbufs++] = p;
    return (float *)p;
}

/* xorshift64*: uniform in [-1, 1). Test data only; quality does not matter. */
static float next_uniform(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    uint64_t r = *s * 2685821657736338717ULL;
    return (float)((double)(r >> 40) / (double)(1ULL << 24)) * 2.0f - 1.0f;
}

/* A tensor in backend memory: zero, or uniform random in [-1, 1). */
static md_tensor case_tensor(bench_case *c, int ndim, const int *dim, int random)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)dim[i];
    float *p = case_alloc(c, n);
    if (random) {
        float *host = malloc(n * sizeof(float));
        if (!host) {
            fprintf(stderr, "bench_ops: out of host memory (%zu floats)\n", n);
            exit(1);
        }
        for (size_t i = 0; i < n; i++) host[i] = next_uniform(&c->seed);
        CHECK(md_backend_upload(c->be, p, host, n * sizeof(float)));
        free(host);
    }
    md_tensor t;
    switch (ndim) {
    case 1: t = md_tensor_1d(p, dim[0]); break;
    case 2: t = md_tensor_2d(p, dim[0], dim[1]); break;
    default: t = md_tensor_4d(p, dim[0], dim[1], dim[2], dim[3]); break;
    }
    return t;
}

static md_tensor mk4(bench_case *c, int n, int ch, int h, int w, int random)
{
    int d[4] = {n, ch, h, w};
    return case_tensor(c, 4, d, random);
}

static md_tensor mk2(bench_case *c, int rows, int cols, int random)
{
    int d[2] = {rows, cols};
    return case_tensor(c, 2, d, random);
}

static md_tensor mk1(bench_case *c, int n, int random)
{
    int d[1] = {n};
    return case_tensor(c, 1, d, random);
}

/* The usual operands of a one-input op: x [n,ch,h,h] and dy [n,ch,oh,oh] random,
 * y [n,ch,oh,oh] (random when y_random: an accumulator) and dx zeroed. */
static void case_io(bench_case *c, int n, int ch, int h, int oh, int y_random)
{
    c->x  = mk4(c, n, ch, h, h, 1);
    c->y  = mk4(c, n, ch, oh, oh, y_random);
    c->dy = mk4(c, n, ch, oh, oh, 1);
    c->dx = mk4(c, n, ch, h, h, 0);
}

static void case_init(bench_case *c, md_backend *be)
{
    memset(c, 0, sizeof(*c));
    c->be   = be;
    c->seed = 0x9E3779B97F4A7C15ULL;
}

static void case_free(bench_case *c)
{
    if (c->conv) md_conv_destroy(c->conv);
    for (int i = 0; i < c->nbufs; i++) md_backend_free(c->be, c->bufs[i]);
    c->nbufs = 0;
    c->conv  = NULL;
}

/* ---- step functions ------------------------------------------------------ */

typedef md_status (*step_fn)(bench_case *c);

static md_status conv_fwd(bench_case *c) { return md_conv_forward(c->conv, &c->x, &c->w, &c->y); }
static md_status conv_bwd(bench_case *c)
{
    /* The stem's input is the image: no dx, as in PyTorch. */
    return md_conv_backward(c->conv, &c->x, &c->w, &c->dy, c->dx.data ? &c->dx : NULL, &c->dw);
}

static md_status bn_fwd(bench_case *c) { return md_bn_forward_train(c->be, &c->x, &c->y, &c->bn); }
static md_status bn_bwd(bench_case *c)
{
    return md_bn_backward_train(c->be, &c->x, &c->dy, &c->dx, NULL, NULL, &c->bn);
}

static md_status relu_fwd(bench_case *c) { return md_act_forward(c->be, MD_ACT_RELU, &c->x, &c->y); }
static md_status relu_bwd(bench_case *c)
{
    return md_act_backward(c->be, MD_ACT_RELU, &c->y, &c->dy, &c->dx);
}

static md_status pool_fwd(bench_case *c) { return md_pool_forward(c->be, &c->pool, &c->x, &c->y); }
static md_status pool_bwd(bench_case *c)
{
    return md_pool_backward(c->be, &c->pool, &c->x, &c->dy, &c->dx);
}

/* add: y += x (a node summing two edges); backward: both inputs get dy. */
static md_status add_fwd(bench_case *c) { return md_add(c->be, &c->x, &c->y); }
static md_status add_bwd(bench_case *c)
{
    MD_TRY(md_add(c->be, &c->dy, &c->dx));
    return md_add(c->be, &c->dy, &c->db);
}

static md_status concat_fwd(bench_case *c)
{
    const md_tensor *xs[4] = {&c->xs[0], &c->xs[1], &c->xs[2], &c->xs[3]};
    return md_concat_forward(c->be, xs, 4, &c->y);
}
static md_status concat_bwd(bench_case *c)
{
    const md_tensor *dxs[4] = {&c->dxs[0], &c->dxs[1], &c->dxs[2], &c->dxs[3]};
    return md_concat_backward(c->be, &c->dy, dxs, 4);
}

static md_status gap_fwd(bench_case *c) { return md_gap_forward(c->be, &c->x, &c->y); }
static md_status gap_bwd(bench_case *c) { return md_gap_backward(c->be, &c->dy, &c->dx); }

static md_status linear_fwd(bench_case *c)
{
    return md_linear_forward(c->be, &c->x, &c->w, &c->b, &c->y);
}
static md_status linear_bwd(bench_case *c)
{
    return md_linear_backward(c->be, &c->x, &c->w, &c->dy, &c->dx, &c->dw, &c->db);
}

/* softmax_ce: "fwd" is the loss-only call, "bwd" the fused loss+gradient call
 * (the one training makes); both are timed, so total counts the loss twice. */
static md_status ce_fwd(bench_case *c)
{
    return md_softmax_ce(c->be, &c->x, c->labels, &c->loss, NULL);
}
static md_status ce_bwd(bench_case *c)
{
    return md_softmax_ce(c->be, &c->x, c->labels, &c->loss, &c->dx);
}

/* ---- timing -------------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return (n % 2) ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int selected(const bench_opts *o, const char *op)
{
    return o->filter == NULL || strstr(op, o->filter) != NULL;
}

static void run_case(const bench_opts *o, bench_case *c, const char *op, const md_tensor *shape,
                     step_fn fwd, step_fn bwd)
{
    double *tf = malloc((size_t)o->iters * sizeof(double));
    double *tb = malloc((size_t)o->iters * sizeof(double));
    double *tt = malloc((size_t)o->iters * sizeof(double));
    if (!tf || !tb || !tt) {
        fprintf(stderr, "bench_ops: out of host memory\n");
        exit(1);
    }
    CHECK(md_backend_sync(c->be));
    for (int it = 0; it < o->warmup + o->iters; it++) {
        double    t0 = now_ms();
        md_status s  = fwd(c);
        if (s != MD_OK) die_status(op, s, __FILE__, __LINE__);
        CHECK(md_backend_sync(c->be));
        double t1 = now_ms();
        s         = bwd(c);
        if (s != MD_OK) die_status(op, s, __FILE__, __LINE__);
        CHECK(md_backend_sync(c->be));
        double t2 = now_ms();
        if (it >= o->warmup) {
            int k = it - o->warmup;
            tf[k] = t1 - t0;
            tb[k] = t2 - t1;
            tt[k] = t2 - t0;
        }
    }
    double mf = median(tf, o->iters), mb = median(tb, o->iters), mt = median(tt, o->iters);
    double nt = tt[0]; /* sorted by median() */
    printf("{\"bench\":\"op\",\"impl\":\"mdenas\",\"op\":\"%s\",\"shape\":[", op);
    for (int i = 0; i < shape->ndim; i++) printf("%s%d", i ? "," : "", shape->dim[i]);
    printf("],\"threads\":%d,\"fwd_ms\":%.4f,\"bwd_ms\":%.4f,\"total_ms\":%.4f,"
           "\"total_min_ms\":%.4f}\n",
           o->threads, mf, mb, mt, nt);
    fflush(stdout);
    free(tf);
    free(tb);
    free(tt);
}

/* ---- cases ---------------------------------------------------------------- */

/* One convolution: x [n,cin,h,w], weight [cout, cin/groups, k, k]. */
static void bench_conv(const bench_opts *o, md_backend *be, const char *op, int n, int cin, int h,
                       int cout, int k, int stride, int pad, int dil, int groups, int want_dx)
{
    if (!selected(o, op)) return;
    bench_case c;
    case_init(&c, be);
    md_conv_desc d = {.n = n, .c_in = cin, .h = h, .w = h, .c_out = cout, .kh = k, .kw = k,
                      .stride = stride, .pad = pad, .dilation = dil, .groups = groups};
    int          oh = 0, ow = 0;
    CHECK(md_conv_out_hw(&d, &oh, &ow));
    CHECK(md_conv_create(be, &d, &c.conv));
    c.x  = mk4(&c, n, cin, h, h, 1);
    c.w  = mk4(&c, cout, cin / groups, k, k, 1);
    c.dw = mk4(&c, cout, cin / groups, k, k, 0);
    c.y  = mk4(&c, n, cout, oh, ow, 0);
    c.dy = mk4(&c, n, cout, oh, ow, 1);
    if (want_dx) c.dx = mk4(&c, n, cin, h, h, 0);
    run_case(o, &c, op, &c.x, conv_fwd, conv_bwd);
    case_free(&c);
}

static void bench_bn(const bench_opts *o, md_backend *be, int n, int ch, int h)
{
    const char *op = "bn_train";
    if (!selected(o, op)) return;
    bench_case c;
    case_init(&c, be);
    case_io(&c, n, ch, h, h, 0);
    c.bn_rmean          = mk1(&c, ch, 0);
    c.bn_rvar           = mk1(&c, ch, 0);
    c.bn_smean          = mk1(&c, ch, 0);
    c.bn_sinvstd        = mk1(&c, ch, 0);
    c.bn.gamma          = NULL; /* search network: affine = false */
    c.bn.beta           = NULL;
    c.bn.running_mean   = &c.bn_rmean; /* track_running_stats, as nn.BatchNorm2d */
    c.bn.running_var    = &c.bn_rvar;
    c.bn.save_mean      = &c.bn_smean;
    c.bn.save_invstd    = &c.bn_sinvstd;
    c.bn.momentum       = 0.1f;
    c.bn.eps            = 1e-5f;
    run_case(o, &c, op, &c.x, bn_fwd, bn_bwd);
    case_free(&c);
}

static void bench_relu(const bench_opts *o, md_backend *be, int n, int ch, int h)
{
    const char *op = "relu";
    if (!selected(o, op)) return;
    bench_case c;
    case_init(&c, be);
    case_io(&c, n, ch, h, h, 0);
    run_case(o, &c, op, &c.x, relu_fwd, relu_bwd);
    case_free(&c);
}

static void bench_pool(const bench_opts *o, md_backend *be, const char *op, md_pool_kind kind,
                       int stride, int n, int ch, int h)
{
    if (!selected(o, op)) return;
    bench_case c;
    case_init(&c, be);
    c.pool.kind   = kind;
    c.pool.k      = 3;
    c.pool.stride = stride;
    c.pool.pad    = 1;
    int oh        = (h + 2 * 1 - 3) / stride + 1;
    case_io(&c, n, ch, h, oh, 0);
    run_case(o, &c, op, &c.x, pool_fwd, pool_bwd);
    case_free(&c);
}

static void bench_add(const bench_opts *o, md_backend *be, int n, int ch, int h)
{
    const char *op = "add";
    if (!selected(o, op)) return;
    bench_case c;
    case_init(&c, be);
    case_io(&c, n, ch, h, h, 1); /* y: the accumulator; dx: the gradient of x */
    c.db = mk4(&c, n, ch, h, h, 0); /* gradient of the other summand */
    run_case(o, &c, op, &c.x, add_fwd, add_bwd);
    case_free(&c);
}

static void bench_concat(const bench_opts *o, md_backend *be, int n, int ch, int h)
{
    const char *op = "concat4";
    if (!selected(o, op)) return;
    bench_case c;
    case_init(&c, be);
    for (int i = 0; i < 4; i++) {
        c.xs[i]  = mk4(&c, n, ch, h, h, 1);
        c.dxs[i] = mk4(&c, n, ch, h, h, 0);
    }
    c.y  = mk4(&c, n, 4 * ch, h, h, 0);
    c.dy = mk4(&c, n, 4 * ch, h, h, 1);
    run_case(o, &c, op, &c.xs[0], concat_fwd, concat_bwd);
    case_free(&c);
}

static void bench_gap(const bench_opts *o, md_backend *be, int n, int ch, int h)
{
    const char *op = "gap";
    if (!selected(o, op)) return;
    bench_case c;
    case_init(&c, be);
    c.x  = mk4(&c, n, ch, h, h, 1);
    c.y  = mk2(&c, n, ch, 0);
    c.dy = mk2(&c, n, ch, 1);
    c.dx = mk4(&c, n, ch, h, h, 0);
    run_case(o, &c, op, &c.x, gap_fwd, gap_bwd);
    case_free(&c);
}

static void bench_linear(const bench_opts *o, md_backend *be, int n, int in, int out)
{
    const char *op = "linear";
    if (!selected(o, op)) return;
    bench_case c;
    case_init(&c, be);
    c.x  = mk2(&c, n, in, 1);
    c.w  = mk2(&c, out, in, 1);
    c.b  = mk1(&c, out, 1);
    c.y  = mk2(&c, n, out, 0);
    c.dy = mk2(&c, n, out, 1);
    c.dx = mk2(&c, n, in, 0);
    c.dw = mk2(&c, out, in, 0);
    c.db = mk1(&c, out, 0);
    run_case(o, &c, op, &c.x, linear_fwd, linear_bwd);
    case_free(&c);
}

static void bench_ce(const bench_opts *o, md_backend *be, int n, int k)
{
    const char *op = "softmax_ce";
    if (!selected(o, op)) return;
    bench_case c;
    case_init(&c, be);
    c.x  = mk2(&c, n, k, 1);
    c.dx = mk2(&c, n, k, 0);
    /* Labels: n int32 in backend memory (an int32 has the size of a float). */
    int32_t *host = malloc((size_t)n * sizeof(int32_t));
    if (!host) {
        fprintf(stderr, "bench_ops: out of host memory\n");
        exit(1);
    }
    for (int i = 0; i < n; i++) host[i] = (int32_t)(i % k);
    c.labels = (int32_t *)(void *)case_alloc(&c, (size_t)n);
    CHECK(md_backend_upload(be, c.labels, host, (size_t)n * sizeof(int32_t)));
    free(host);
    run_case(o, &c, op, &c.x, ce_fwd, ce_bwd);
    case_free(&c);
}

int main(int argc, char **argv)
{
    bench_opts o;
    if (!parse_args(argc, argv, &o)) return 2;

    md_backend *be = NULL;
    CHECK(md_backend_cpu_create(o.threads, &be));
    fprintf(stderr, "bench_ops: %s; threads %d, batch %d, warmup %d, iters %d\n",
            md_backend_describe(be), o.threads, o.batch, o.warmup, o.iters);

    const int n = o.batch;
    /* Stem: 3 -> 3*16 channels at 32x32. */
    bench_conv(&o, be, "conv3x3_stem", n, 3, 32, 48, 3, 1, 1, 1, 1, 0);

    static const int shapes[3][2] = {{16, 32}, {32, 16}, {64, 8}};
    for (int si = 0; si < 3; si++) {
        const int ch = shapes[si][0], h = shapes[si][1];
        /* depthwise (sep_conv), stride 1 and 2 */
        bench_conv(&o, be, "dw3x3_s1", n, ch, h, ch, 3, 1, 1, 1, ch, 1);
        bench_conv(&o, be, "dw5x5_s1", n, ch, h, ch, 5, 1, 2, 1, ch, 1);
        bench_conv(&o, be, "dw3x3_s2", n, ch, h, ch, 3, 2, 1, 1, ch, 1);
        bench_conv(&o, be, "dw5x5_s2", n, ch, h, ch, 5, 2, 2, 1, ch, 1);
        /* dilated depthwise (dil_conv), dilation 2 */
        bench_conv(&o, be, "dil3x3_d2_s1", n, ch, h, ch, 3, 1, 2, 2, ch, 1);
        bench_conv(&o, be, "dil5x5_d2_s1", n, ch, h, ch, 5, 1, 4, 2, ch, 1);
        bench_conv(&o, be, "dil3x3_d2_s2", n, ch, h, ch, 3, 2, 2, 2, ch, 1);
        bench_conv(&o, be, "dil5x5_d2_s2", n, ch, h, ch, 5, 2, 4, 2, ch, 1);
        /* pointwise C -> C, and FactorizedReduce's 1x1 stride 2, C -> C/2 */
        bench_conv(&o, be, "pw1x1", n, ch, h, ch, 1, 1, 0, 1, 1, 1);
        bench_conv(&o, be, "pw1x1_s2", n, ch, h, ch / 2, 1, 2, 0, 1, 1, 1);
        bench_bn(&o, be, n, ch, h);
        bench_relu(&o, be, n, ch, h);
        bench_pool(&o, be, "maxpool3x3_s1", MD_POOL_MAX, 1, n, ch, h);
        bench_pool(&o, be, "avgpool3x3_s1", MD_POOL_AVG, 1, n, ch, h);
        bench_pool(&o, be, "maxpool3x3_s2", MD_POOL_MAX, 2, n, ch, h);
        bench_pool(&o, be, "avgpool3x3_s2", MD_POOL_AVG, 2, n, ch, h);
        bench_add(&o, be, n, ch, h);
        bench_concat(&o, be, n, ch, h);
    }
    /* Classifier: the last cell's output is 4*64 channels at 8x8. */
    bench_gap(&o, be, n, 256, 8);
    bench_linear(&o, be, n, 256, 10);
    bench_ce(&o, be, n, 10);

    md_backend_destroy(be);
    return 0;
}
