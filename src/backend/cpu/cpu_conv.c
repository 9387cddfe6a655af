/* Convolution on oneDNN. Each handle compiles three primitives once (forward,
 * backward data, backward weights), letting oneDNN choose its preferred
 * (blocked) layouts; tensors stay plain NCHW/OIHW at the API, with reorders
 * compiled alongside where the layouts differ (what PyTorch's CPU path does). */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_dwconv.h"

/* One memory argument of one primitive: the plain user view and, when the
 * primitive wants another layout, its own buffer plus a compiled reorder. */
typedef struct {
    dnnl_memory_t    user;    /* plain layout; data handle set per call */
    dnnl_memory_t    prim;    /* what the primitive reads/writes (== user if same layout) */
    dnnl_primitive_t reorder; /* user->prim for inputs, prim->user for outputs; NULL if same */
    int              is_output;
} conv_arg;

enum { ARG_MAX = 3 };

typedef struct {
    dnnl_primitive_t prim;
    int              nargs;
    int              arg_kind[ARG_MAX]; /* DNNL_ARG_* */
    conv_arg         arg[ARG_MAX];
} conv_step;

typedef struct {
    int       is_pw; /* pointwise 1x1, stride 1: one GEMM per image on NCHW, no reorders */
    int       n, c_in, c_out, hw;
    int       is_dw; /* depthwise: our own NCHW kernels, no oneDNN */
    md_dwconv dw;
    conv_step fwd, bwd_data, bwd_weights;
    size_t    x_numel, w_numel;
} cpu_conv;

static md_status arg_init(md_cpu_backend *cb, conv_arg *a, const dnnl_memory_desc_t *user_md,
                          const dnnl_memory_desc_t *prim_md, int is_output) {
    memset(a, 0, sizeof *a);
    a->is_output = is_output;
    DNNL_TRY(dnnl_memory_create(&a->user, user_md, cb->engine, DNNL_MEMORY_NONE));
    if (dnnl_memory_desc_equal(user_md, prim_md)) {
        a->prim = a->user;
        return MD_OK;
    }
    DNNL_TRY(dnnl_memory_create(&a->prim, prim_md, cb->engine, DNNL_MEMORY_ALLOCATE));
    dnnl_primitive_desc_t rpd;
    const dnnl_memory_desc_t *src = is_output ? prim_md : user_md;
    const dnnl_memory_desc_t *dst = is_output ? user_md : prim_md;
    DNNL_TRY(dnnl_reorder_primitive_desc_create(&rpd, src, cb->engine, dst, cb->engine, NULL));
    dnnl_status_t st = dnnl_primitive_create(&a->reorder, rpd);
    dnnl_primitive_desc_destroy(rpd);
    DNNL_TRY(st);
    return MD_OK;
}

static void arg_fini(conv_arg *a) {
    if (a->reorder) dnnl_primitive_destroy(a->reorder);
    if (a->prim && a->prim != a->user) dnnl_memory_destroy(a->prim);
    if (a->user) dnnl_memory_destroy(a->user);
    memset(a, 0, sizeof *a);
}

static void step_fini(conv_step *s) {
    for (int i = 0; i < s->nargs; i++) arg_fini(&s->arg[i]);
    if (s->prim) dnnl_primitive_destroy(s->prim);
    memset(s, 0, sizeof *s);
}

static md_status reorder_run(md_cpu_backend *cb, conv_arg *a) {
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, a->is_output ? a->prim : a->user},
                               {DNNL_ARG_TO, a->is_output ? a->user : a->prim}};
    DNNL_TRY(dnnl_primitive_execute(a->reorder, cb->stream, 2, args));
    return MD_OK;
}

/* Build a step from its primitive descriptor: query each argument's layout. */
static md_status step_init(md_cpu_backend *cb, conv_step *s, dnnl_primitive_desc_t pd, int nargs,
                           const int *kinds, const dnnl_memory_desc_t *const *user_mds,
                           const int *is_output) {
    memset(s, 0, sizeof *s);
    s->nargs = nargs;
    for (int i = 0; i < nargs; i++) {
        s->arg_kind[i] = kinds[i];
        const dnnl_memory_desc_t *pmd = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md,
                                                                     kinds[i]);
        if (!pmd) return md_fail(MD_ERR_BACKEND, "conv2d: oneDNN gave no layout for arg %d", kinds[i]);
        MD_TRY(arg_init(cb, &s->arg[i], user_mds[i], pmd, is_output[i]));
    }
    DNNL_TRY(dnnl_primitive_create(&s->prim, pd));
    return MD_OK;
}

/* Point the user views at the caller's buffers, reorder inputs, run, reorder outputs. */
static md_status step_run(md_cpu_backend *cb, conv_step *s, void *const *buffers) {
    dnnl_exec_arg_t args[ARG_MAX];
    for (int i = 0; i < s->nargs; i++) {
        DNNL_TRY(dnnl_memory_set_data_handle(s->arg[i].user, buffers[i]));
        if (s->arg[i].reorder && !s->arg[i].is_output) MD_TRY(reorder_run(cb, &s->arg[i]));
        args[i].arg = s->arg_kind[i];
        args[i].memory = s->arg[i].prim;
    }
    DNNL_TRY(dnnl_primitive_execute(s->prim, cb->stream, s->nargs, args));
    for (int i = 0; i < s->nargs; i++)
        if (s->arg[i].reorder && s->arg[i].is_output) MD_TRY(reorder_run(cb, &s->arg[i]));
    DNNL_TRY(dnnl_stream_wait(cb->stream));
    return MD_OK;
}

typedef struct {
    dnnl_memory_desc_t x, w, y;       /* plain */
    dnnl_memory_desc_t xa, wa, ya;    /* format any */
    dnnl_dims_t        strides, dilates, pad_l, pad_r;
} conv_mds;

static md_status conv_mds_init(const md_conv_desc *d, conv_mds *m) {
    int oh = 0, ow = 0;
    MD_TRY(md_conv_out_hw(d, &oh, &ow));
    dnnl_dims_t xd = {d->n, d->c_in, d->h, d->w}, yd = {d->n, d->c_out, oh, ow};
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&m->x, 4, xd, dnnl_f32, dnnl_nchw));
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&m->y, 4, yd, dnnl_f32, dnnl_nchw));
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&m->xa, 4, xd, dnnl_f32, dnnl_format_tag_any));
    DNNL_TRY(dnnl_memory_desc_init_by_tag(&m->ya, 4, yd, dnnl_f32, dnnl_format_tag_any));
    if (d->groups > 1) {
        dnnl_dims_t wd = {d->groups, d->c_out / d->groups, d->c_in / d->groups, d->kh, d->kw};
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&m->w, 5, wd, dnnl_f32, dnnl_goihw));
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&m->wa, 5, wd, dnnl_f32, dnnl_format_tag_any));
    } else {
        dnnl_dims_t wd = {d->c_out, d->c_in, d->kh, d->kw};
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&m->w, 4, wd, dnnl_f32, dnnl_oihw));
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&m->wa, 4, wd, dnnl_f32, dnnl_format_tag_any));
    }
    int eh = d->dilation * (d->kh - 1) + 1, ew = d->dilation * (d->kw - 1) + 1;
    m->strides[0] = m->strides[1] = d->stride;
    m->dilates[0] = m->dilates[1] = d->dilation - 1; /* oneDNN counts the gaps */
    m->pad_l[0] = m->pad_l[1] = d->pad;
    /* PyTorch floors the output size; the right/bottom padding that makes oneDNN agree: */
    m->pad_r[0] = (oh - 1) * d->stride + eh - d->h - d->pad;
    m->pad_r[1] = (ow - 1) * d->stride + ew - d->w - d->pad;
    return MD_OK;
}

static md_status make_pd(md_cpu_backend *cb, const void *op_desc, const_dnnl_primitive_desc_t hint,
                         dnnl_primitive_desc_t *pd) {
    DNNL_TRY(dnnl_primitive_desc_create(pd, op_desc, NULL, cb->engine, hint));
    return MD_OK;
}

/* The forward primitive desc and its step (with its reorders). */
static md_status forward_pd(md_cpu_backend *cb, const conv_mds *m, dnnl_primitive_desc_t *fpd) {
    dnnl_convolution_desc_t fd;
    DNNL_TRY(dnnl_dilated_convolution_forward_desc_init(
        &fd, dnnl_forward_training, dnnl_convolution_direct, &m->xa, &m->wa, NULL, &m->ya,
        m->strides, m->dilates, m->pad_l, m->pad_r));
    return make_pd(cb, &fd, NULL, fpd);
}

static md_status forward_step(md_cpu_backend *cb, cpu_conv *c, dnnl_primitive_desc_t fpd,
                              const conv_mds *m) {
    int                       kinds[3] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
    const dnnl_memory_desc_t *mds[3] = {&m->x, &m->w, &m->y};
    int                       out[3] = {0, 0, 1};
    return step_init(cb, &c->fwd, fpd, 3, kinds, mds, out);
}

/* The forward primitive alone: small depthwise planes (below), whose backward
 * passes stay on ours. */
static md_status conv_build_forward(md_cpu_backend *cb, const md_conv_desc *d, cpu_conv *c) {
    conv_mds m;
    MD_TRY(conv_mds_init(d, &m));
    dnnl_primitive_desc_t fpd = NULL;
    md_status             s = forward_pd(cb, &m, &fpd);
    if (s == MD_OK) s = forward_step(cb, c, fpd, &m);
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    return s;
}

static md_status conv_build(md_cpu_backend *cb, const md_conv_desc *d, cpu_conv *c) {
    conv_mds m;
    MD_TRY(conv_mds_init(d, &m));
    dnnl_convolution_desc_t bdd, bwd;
    DNNL_TRY(dnnl_dilated_convolution_backward_data_desc_init(
        &bdd, dnnl_convolution_direct, &m.xa, &m.wa, &m.ya, m.strides, m.dilates, m.pad_l, m.pad_r));
    DNNL_TRY(dnnl_dilated_convolution_backward_weights_desc_init(
        &bwd, dnnl_convolution_direct, &m.xa, &m.wa, NULL, &m.ya, m.strides, m.dilates, m.pad_l,
        m.pad_r));

    dnnl_primitive_desc_t fpd = NULL, bdpd = NULL, bwpd = NULL;
    md_status s = forward_pd(cb, &m, &fpd);
    if (s == MD_OK) s = make_pd(cb, &bdd, fpd, &bdpd);
    if (s == MD_OK) s = make_pd(cb, &bwd, fpd, &bwpd);
    if (s == MD_OK) s = forward_step(cb, c, fpd, &m);
    if (s == MD_OK) {
        int kinds[3] = {DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC};
        const dnnl_memory_desc_t *mds[3] = {&m.y, &m.w, &m.x};
        int                       out[3] = {0, 0, 1};
        s = step_init(cb, &c->bwd_data, bdpd, 3, kinds, mds, out);
    }
    if (s == MD_OK) {
        int kinds[3] = {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS};
        const dnnl_memory_desc_t *mds[3] = {&m.x, &m.y, &m.w};
        int                       out[3] = {0, 0, 1};
        s = step_init(cb, &c->bwd_weights, bwpd, 3, kinds, mds, out);
    }
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    if (bdpd) dnnl_primitive_desc_destroy(bdpd);
    if (bwpd) dnnl_primitive_desc_destroy(bwpd);
    return s;
}

/* Depthwise kernels that oneDNN 2.6's AVX2 JIT does not cover in every pass
 * (5x5, dilated: it falls back to im2col + GEMM) run on ours (cpu_dwconv.c);
 * plain 3x3 stays on oneDNN's jit_dw, faster per call on small planes.
 * MDENAS_DW=own forces ours for all (for comparisons). */
static int is_depthwise(const md_conv_desc *d) {
    int         dw = d->groups > 1 && d->groups == d->c_in && d->c_in == d->c_out &&
             d->kh == d->kw && d->kh <= 11;
    const char *force = getenv("MDENAS_DW");
    int         jit_covers = d->kh == 3 && d->dilation == 1;
    return dw && (!jit_covers || (force && !strcmp(force, "own")));
}

static int is_pointwise(const md_conv_desc *d) {
    return d->groups == 1 && d->kh == 1 && d->kw == 1 && d->stride == 1 && d->pad == 0;
}

/* Pointwise conv as GEMMs over the images, in parallel (oneDNN's sgemm runs
 * single-threaded inside a parallel region). y[n] = W x[n]. */
static md_status pw_forward(const cpu_conv *c, const float *x, const float *w, float *y) {
    int failed = 0;
#pragma omp parallel for schedule(static) reduction(| : failed)
    for (int n = 0; n < c->n; n++) {
        size_t xo = (size_t)n * c->c_in * c->hw, yo = (size_t)n * c->c_out * c->hw;
        failed |= dnnl_sgemm('N', 'N', c->c_out, c->hw, c->c_in, 1.0f, w, c->c_in, x + xo, c->hw,
                             0.0f, y + yo, c->hw) != dnnl_success;
    }
    return failed ? md_fail(MD_ERR_BACKEND, "conv2d 1x1: sgemm failed") : MD_OK;
}

/* dx[n] += W^T dy[n]; dW += sum_n dy[n] x[n]^T (per-thread partial sums, then added). */
static md_status pw_backward(md_backend *be, const cpu_conv *c, const float *x, const float *w,
                             const float *dy, float *dx, float *dw) {
    int    failed = 0, nthr = omp_get_max_threads();
    size_t wn = (size_t)c->c_out * c->c_in;
    float *part = NULL;
    if (dw) {
        MD_TRY(md_cpu_scratch(be, wn * (size_t)nthr, &part));
        memset(part, 0, wn * (size_t)nthr * sizeof(float));
    }
#pragma omp parallel reduction(| : failed)
    {
        float *mine = part ? part + wn * (size_t)omp_get_thread_num() : NULL;
#pragma omp for schedule(static)
        for (int n = 0; n < c->n; n++) {
            const float *xn = x + (size_t)n * c->c_in * c->hw, *gn = dy + (size_t)n * c->c_out * c->hw;
            if (dx)
                failed |= dnnl_sgemm('T', 'N', c->c_in, c->hw, c->c_out, 1.0f, w, c->c_in, gn,
                                     c->hw, 1.0f, dx + (size_t)n * c->c_in * c->hw,
                                     c->hw) != dnnl_success;
            if (mine)
                failed |= dnnl_sgemm('N', 'T', c->c_out, c->c_in, c->hw, 1.0f, gn, c->hw, xn,
                                     c->hw, 1.0f, mine, c->c_in) != dnnl_success;
        }
    }
    if (failed) return md_fail(MD_ERR_BACKEND, "conv2d 1x1 backward: sgemm failed");
    for (int t = 0; t < nthr && dw; t++)
        for (size_t i = 0; i < wn; i++) dw[i] += part[(size_t)t * wn + i];
    return MD_OK;
}

md_status md_cpu_conv_create(md_backend *be, const md_conv_desc *d, void **impl) {
    cpu_conv *c = calloc(1, sizeof *c);
    if (!c) return md_fail(MD_ERR_NOMEM, "conv2d: handle");
    c->x_numel = (size_t)d->n * d->c_in * d->h * d->w;
    c->w_numel = (size_t)d->c_out * (d->c_in / d->groups) * d->kh * d->kw;
    md_status s = MD_OK;
    if (is_pointwise(d)) {
        c->is_pw = 1;
        c->n = d->n, c->c_in = d->c_in, c->c_out = d->c_out, c->hw = d->h * d->w;
    } else if (is_depthwise(d)) {
        int oh = 0, ow = 0;
        s = md_conv_out_hw(d, &oh, &ow);
        c->is_dw = 1;
        c->dw = (md_dwconv){.n = d->n, .c = d->c_in, .h = d->h, .w = d->w, .oh = oh, .ow = ow,
                            .k = d->kh, .stride = d->stride, .pad = d->pad,
                            .dilation = d->dilation};
        /* Planes of 16x16 and less fill a fraction of a vector per output row in
         * ours; oneDNN's JIT forward (16 channels a vector) is 2-5x faster there
         * (7x7, 480 channels at 8x8: 1.6 ms against 6). Its backward passes are
         * not JIT for these kernels, so they stay on ours. */
        if (s == MD_OK && d->h * d->w <= 256 && d->dilation == 1 && !getenv("MDENAS_DW"))
            s = conv_build_forward(md_cpu(be), d, c);
    } else {
        s = conv_build(md_cpu(be), d, c);
    }
    if (s != MD_OK) {
        md_cpu_conv_destroy(be, c);
        return s;
    }
    *impl = c;
    return MD_OK;
}

void md_cpu_conv_destroy(md_backend *be, void *impl) {
    (void)be;
    cpu_conv *c = impl;
    if (!c) return;
    step_fini(&c->fwd);
    step_fini(&c->bwd_data);
    step_fini(&c->bwd_weights);
    free(c);
}

md_status md_cpu_conv_forward(md_backend *be, void *impl, const float *x, const float *w, float *y) {
    cpu_conv *c = impl;
    if (c->is_pw) return pw_forward(c, x, w, y);
    if (c->is_dw && !c->fwd.prim) {
        float *scratch = NULL;
        MD_TRY(md_cpu_scratch(be, md_dwconv_scratch_floats(&c->dw), &scratch));
        md_dwconv_forward(&c->dw, x, w, y, scratch);
        return MD_OK;
    }
    void *bufs[3] = {(void *)x, (void *)w, y};
    return step_run(md_cpu(be), &c->fwd, bufs);
}

static void accumulate(float *restrict dst, const float *restrict src, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

md_status md_cpu_conv_backward(md_backend *be, void *impl, const float *x, const float *w,
                               const float *dy, float *dx, float *dw) {
    cpu_conv *c = impl;
    if (c->is_pw) return pw_backward(be, c, x, w, dy, dx, dw);
    if (c->is_dw) {
        float *scratch = NULL;
        MD_TRY(md_cpu_scratch(be, md_dwconv_scratch_floats(&c->dw), &scratch));
        if (dx) md_dwconv_backward_data(&c->dw, dy, w, dx, scratch);
        if (dw) md_dwconv_backward_weights(&c->dw, x, dy, dw, scratch);
        return MD_OK;
    }
    /* oneDNN overwrites its outputs: compute into the shared scratch, then add. */
    float *tmp = NULL;
    MD_TRY(md_cpu_scratch(be, c->x_numel > c->w_numel ? c->x_numel : c->w_numel, &tmp));
    if (dx) {
        void *bufs[3] = {(void *)dy, (void *)w, tmp};
        MD_TRY(step_run(md_cpu(be), &c->bwd_data, bufs));
        accumulate(dx, tmp, c->x_numel);
    }
    if (dw) {
        void *bufs[3] = {(void *)x, (void *)dy, tmp};
        MD_TRY(step_run(md_cpu(be), &c->bwd_weights, bufs));
        accumulate(dw, tmp, c->w_numel);
    }
    return MD_OK;
}
