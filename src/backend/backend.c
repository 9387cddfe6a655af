/* The validated front of the op table: checks shapes and arguments, names the
 * op and the shapes in every error, then dispatches to the backend's vtable. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend_impl.h"

/* ---- shape checks ------------------------------------------------------ */

static md_status want(const char *op, const char *what, const md_tensor *t, int ndim,
                      const int *dim) {
    md_tensor expect = {0};
    expect.ndim = ndim;
    memcpy(expect.dim, dim, (size_t)ndim * sizeof(int));
    char e[64], g[64];
    md_tensor_shape_str(&expect, e, sizeof e);
    if (!t) return md_fail(MD_ERR_ARG, "%s: %s is missing (expected shape %s)", op, what, e);
    if (!t->data) return md_fail(MD_ERR_ARG, "%s: %s has no data (shape %s)", op, what, e);
    if (!md_tensor_same_shape(t, &expect))
        return md_fail(MD_ERR_ARG, "%s: %s has shape %s, expected %s", op, what,
                       md_tensor_shape_str(t, g, sizeof g), e);
    return MD_OK;
}

static md_status want4(const char *op, const char *what, const md_tensor *t, int n, int c, int h,
                       int w) {
    int d[4] = {n, c, h, w};
    return want(op, what, t, 4, d);
}

static md_status want_nchw(const char *op, const char *what, const md_tensor *t) {
    char g[64];
    if (!t) return md_fail(MD_ERR_ARG, "%s: %s is missing (expected an NCHW tensor)", op, what);
    if (!t->data) return md_fail(MD_ERR_ARG, "%s: %s has no data", op, what);
    if (t->ndim != 4)
        return md_fail(MD_ERR_ARG, "%s: %s has shape %s, expected 4 dims (NCHW)", op, what,
                       md_tensor_shape_str(t, g, sizeof g));
    for (int i = 0; i < 4; i++)
        if (t->dim[i] <= 0)
            return md_fail(MD_ERR_ARG, "%s: %s has shape %s, every dim must be > 0", op, what,
                           md_tensor_shape_str(t, g, sizeof g));
    return MD_OK;
}

static md_status want_same(const char *op, const char *what, const md_tensor *t,
                           const md_tensor *ref) {
    return want(op, what, t, ref->ndim, ref->dim);
}

/* An optional tensor: NULL passes, otherwise its shape must match. */
static md_status maybe_same(const char *op, const char *what, const md_tensor *t,
                            const md_tensor *ref) {
    return t ? want_same(op, what, t, ref) : MD_OK;
}

/* ---- lifetime and memory ------------------------------------------------ */

void md_backend_destroy(md_backend *be) {
    if (!be) return;
    for (struct md_conv *c = be->convs, *next; c; c = next) {
        next = c->next;
        be->vt->conv_destroy(be, c->impl);
        free(c);
    }
    be->convs = NULL;
    be->vt->destroy(be);
}

const char *md_backend_name(const md_backend *be) {
    return be->vt->name;
}

const char *md_backend_describe(const md_backend *be) {
    return be->describe;
}

md_status md_backend_alloc(md_backend *be, size_t bytes, void **out) {
    *out = NULL;
    return be->vt->alloc(be, bytes, out);
}

void md_backend_free(md_backend *be, void *p) {
    if (p) be->vt->free(be, p);
}

md_status md_backend_alloc_shared(md_backend *be, size_t bytes, void **out) {
    *out = NULL;
    return be->vt->alloc_shared(be, bytes, out);
}

void md_backend_free_shared(md_backend *be, void *p) {
    if (p) be->vt->free_shared(be, p);
}

md_status md_backend_alloc_host(md_backend *be, size_t bytes, void **out) {
    *out = NULL;
    return be->vt->alloc_host(be, bytes, out);
}

void md_backend_free_host(md_backend *be, void *p) {
    if (p) be->vt->free_host(be, p);
}

int md_backend_is_host(const md_backend *be) {
    return be->vt->host;
}

md_status md_backend_upload(md_backend *be, void *dst, const void *host, size_t bytes) {
    return be->vt->upload(be, dst, host, bytes);
}

md_status md_backend_download(md_backend *be, void *host, const void *src, size_t bytes) {
    return be->vt->download(be, host, src, bytes);
}

md_status md_backend_sync(md_backend *be) {
    return be->vt->sync(be);
}

/* ---- convolution ---------------------------------------------------------- */

md_status md_conv_out_hw(const md_conv_desc *d, int *oh, int *ow) {
    if (d->n <= 0 || d->c_in <= 0 || d->h <= 0 || d->w <= 0 || d->c_out <= 0 || d->kh <= 0 ||
        d->kw <= 0 || d->stride <= 0 || d->pad < 0 || d->dilation <= 0 || d->groups <= 0)
        return md_fail(MD_ERR_ARG,
                       "conv2d: bad descriptor (n=%d c_in=%d h=%d w=%d c_out=%d k=%dx%d stride=%d "
                       "pad=%d dilation=%d groups=%d): sizes must be > 0, pad >= 0",
                       d->n, d->c_in, d->h, d->w, d->c_out, d->kh, d->kw, d->stride, d->pad,
                       d->dilation, d->groups);
    if (d->c_in % d->groups || d->c_out % d->groups)
        return md_fail(MD_ERR_ARG, "conv2d: c_in=%d and c_out=%d must both be divisible by groups=%d",
                       d->c_in, d->c_out, d->groups);
    int eh = d->dilation * (d->kh - 1) + 1, ew = d->dilation * (d->kw - 1) + 1;
    int h = (d->h + 2 * d->pad - eh) / d->stride + 1, w = (d->w + 2 * d->pad - ew) / d->stride + 1;
    if (d->h + 2 * d->pad < eh || d->w + 2 * d->pad < ew || h <= 0 || w <= 0)
        return md_fail(MD_ERR_ARG,
                       "conv2d: input %dx%d with pad %d is smaller than the dilated kernel %dx%d",
                       d->h, d->w, d->pad, eh, ew);
    *oh = h;
    *ow = w;
    return MD_OK;
}

md_status md_conv_create(md_backend *be, const md_conv_desc *d, md_conv **out) {
    *out = NULL;
    int oh = 0, ow = 0;
    MD_TRY(md_conv_out_hw(d, &oh, &ow));
    for (struct md_conv *c = be->convs; c; c = c->next)
        if (memcmp(&c->desc, d, sizeof *d) == 0) {
            c->refs++;
            *out = c;
            return MD_OK;
        }
    struct md_conv *c = calloc(1, sizeof *c);
    if (!c) return md_fail(MD_ERR_NOMEM, "conv2d: handle");
    c->be = be;
    c->desc = *d;
    c->oh = oh;
    c->ow = ow;
    c->refs = 1;
    md_status s = be->vt->conv_create(be, d, &c->impl);
    if (s != MD_OK) {
        free(c);
        return s;
    }
    c->next = be->convs;
    be->convs = c;
    *out = c;
    return MD_OK;
}

/* Unused handles stay cached (compiled primitives are reused by the next plan,
 * which usually has most shapes in common); past this many, they are freed. */
enum { CONV_CACHE_MAX = 512 };

static void conv_free_unused(md_backend *be) {
    for (struct md_conv **p = &be->convs; *p;) {
        struct md_conv *c = *p;
        if (c->refs > 0) {
            p = &c->next;
            continue;
        }
        *p = c->next;
        be->vt->conv_destroy(be, c->impl);
        free(c);
    }
}

void md_conv_destroy(md_conv *c) {
    if (!c || --c->refs > 0) return;
    md_backend *be = c->be;
    int         n = 0;
    for (struct md_conv *q = be->convs; q; q = q->next) n++;
    if (n > CONV_CACHE_MAX) conv_free_unused(be);
}

const md_conv_desc *md_conv_get_desc(const md_conv *c) {
    return &c->desc;
}

static md_status conv_check(md_conv *c, const md_tensor *x, const md_tensor *w, const md_tensor *y,
                            const char *yname) {
    const md_conv_desc *d = &c->desc;
    MD_TRY(want4("conv2d", "input", x, d->n, d->c_in, d->h, d->w));
    MD_TRY(want4("conv2d", "weight", w, d->c_out, d->c_in / d->groups, d->kh, d->kw));
    if (y) MD_TRY(want4("conv2d", yname, y, d->n, d->c_out, c->oh, c->ow));
    return MD_OK;
}

md_status md_conv_forward(md_conv *c, const md_tensor *x, const md_tensor *w, const md_tensor *y) {
    if (!y) return md_fail(MD_ERR_ARG, "conv2d: output is missing");
    MD_TRY(conv_check(c, x, w, y, "output"));
    return c->be->vt->conv_forward(c->be, c->impl, x->data, w->data, y->data);
}

md_status md_conv_backward(md_conv *c, const md_tensor *x, const md_tensor *w, const md_tensor *dy,
                           const md_tensor *dx, const md_tensor *dw) {
    if (!dy) return md_fail(MD_ERR_ARG, "conv2d backward: output gradient is missing");
    MD_TRY(conv_check(c, x, w, dy, "output gradient"));
    MD_TRY(maybe_same("conv2d backward", "input gradient", dx, x));
    MD_TRY(maybe_same("conv2d backward", "weight gradient", dw, w));
    return c->be->vt->conv_backward(c->be, c->impl, x->data, w->data, dy->data,
                                    dx ? dx->data : NULL, dw ? dw->data : NULL);
}

/* ---- batch norm ------------------------------------------------------------ */

static md_status bn_check(const char *op, const md_tensor *x, const md_tensor *y,
                          const md_bn_state *s, int need_running, int need_saved) {
    MD_TRY(want_nchw(op, "input", x));
    MD_TRY(want_same(op, y == x ? "input" : "output", y, x));
    if (!s) return md_fail(MD_ERR_ARG, "%s: state is missing", op);
    int c = x->dim[1];
    if ((s->gamma == NULL) != (s->beta == NULL))
        return md_fail(MD_ERR_ARG, "%s: gamma and beta must both be given (affine) or both NULL",
                       op);
    if (s->gamma) {
        MD_TRY(want(op, "gamma", s->gamma, 1, &c));
        MD_TRY(want(op, "beta", s->beta, 1, &c));
    }
    if (need_running || s->running_mean || s->running_var) {
        MD_TRY(want(op, "running_mean", s->running_mean, 1, &c));
        MD_TRY(want(op, "running_var", s->running_var, 1, &c));
    }
    if (need_saved) {
        MD_TRY(want(op, "save_mean", s->save_mean, 1, &c));
        MD_TRY(want(op, "save_invstd", s->save_invstd, 1, &c));
    }
    if (!(s->eps > 0.0f)) return md_fail(MD_ERR_ARG, "%s: eps=%g must be > 0", op, s->eps);
    if (!(s->momentum >= 0.0f && s->momentum <= 1.0f))
        return md_fail(MD_ERR_ARG, "%s: momentum=%g must be in [0, 1]", op, s->momentum);
    return MD_OK;
}

md_status md_bn_forward_train(md_backend *be, const md_tensor *x, const md_tensor *y,
                              const md_bn_state *s) {
    MD_TRY(bn_check("batch_norm(train)", x, y, s, 0, 1));
    if ((size_t)x->dim[0] * x->dim[2] * x->dim[3] < 2 && s->running_var && !s->sync)
        return md_fail(MD_ERR_ARG,
                       "batch_norm(train): one value per channel (shape N=%d H=%d W=%d) has no "
                       "unbiased variance",
                       x->dim[0], x->dim[2], x->dim[3]);
    return be->vt->bn_forward_train(be, x, y, s);
}

md_status md_bn_forward_eval(md_backend *be, const md_tensor *x, const md_tensor *y,
                             const md_bn_state *s) {
    MD_TRY(bn_check("batch_norm(eval)", x, y, s, 1, 0));
    return be->vt->bn_forward_eval(be, x, y, s);
}

static md_status bn_grads_check(const char *op, const md_tensor *x, const md_tensor *dy,
                                const md_tensor *dx, const md_tensor *dgamma,
                                const md_tensor *dbeta, const md_bn_state *s) {
    MD_TRY(want_same(op, "output gradient", dy, x));
    MD_TRY(maybe_same(op, "input gradient", dx, x));
    if ((dgamma || dbeta) && !s->gamma)
        return md_fail(MD_ERR_ARG, "%s: dgamma/dbeta given for a non-affine batch norm", op);
    int c = x->dim[1];
    if (dgamma) MD_TRY(want(op, "dgamma", dgamma, 1, &c));
    if (dbeta) MD_TRY(want(op, "dbeta", dbeta, 1, &c));
    return MD_OK;
}

md_status md_bn_backward_train(md_backend *be, const md_tensor *x, const md_tensor *dy,
                               const md_tensor *dx, const md_tensor *dgamma,
                               const md_tensor *dbeta, const md_bn_state *s) {
    const char *op = "batch_norm(train) backward";
    MD_TRY(bn_check(op, x, x, s, 0, 1));
    MD_TRY(bn_grads_check(op, x, dy, dx, dgamma, dbeta, s));
    return be->vt->bn_backward_train(be, x, dy, dx, dgamma, dbeta, s);
}

md_status md_bn_sync_absent(const md_bn_sync *sync, int C) {
    if (!sync) return MD_OK;
    if (C < 1) return md_fail(MD_ERR_ARG, "batch_norm sync: %d channels", C);
    double *zero = calloc((size_t)C + 1, sizeof *zero);
    if (!zero) return md_fail(MD_ERR_NOMEM, "batch_norm sync: %d channels", C);
    md_status s = sync->allreduce(sync->ctx, zero, C + 1);
    if (s == MD_OK) {
        memset(zero, 0, ((size_t)C + 1) * sizeof *zero);
        s = sync->allreduce(sync->ctx, zero, C);
    }
    free(zero);
    return s;
}

md_status md_bn_backward_eval(md_backend *be, const md_tensor *x, const md_tensor *dy,
                              const md_tensor *dx, const md_tensor *dgamma,
                              const md_tensor *dbeta, const md_bn_state *s) {
    const char *op = "batch_norm(eval) backward";
    MD_TRY(bn_check(op, x, x, s, 1, 0));
    MD_TRY(bn_grads_check(op, x, dy, dx, dgamma, dbeta, s));
    return be->vt->bn_backward_eval(be, x, dy, dx, dgamma, dbeta, s);
}

/* ---- elementwise ------------------------------------------------------------ */

static md_status want_any(const char *op, const char *what, const md_tensor *t) {
    if (!t || !t->data) return md_fail(MD_ERR_ARG, "%s: %s is missing", op, what);
    if (t->ndim < 1 || t->ndim > MD_MAX_DIMS)
        return md_fail(MD_ERR_ARG, "%s: %s has %d dims", op, what, t->ndim);
    return MD_OK;
}

static const char *act_name(md_act a) {
    return a == MD_ACT_RELU ? "relu" : a == MD_ACT_RELU6 ? "relu6" : NULL;
}

md_status md_act_forward(md_backend *be, md_act act, const md_tensor *x, const md_tensor *y) {
    const char *op = act_name(act);
    if (!op) return md_fail(MD_ERR_ARG, "activation: unknown kind %d", (int)act);
    MD_TRY(want_any(op, "input", x));
    MD_TRY(want_same(op, "output", y, x));
    return be->vt->act_forward(be, act, x->data, y->data, md_tensor_numel(x));
}

md_status md_act_backward(md_backend *be, md_act act, const md_tensor *y, const md_tensor *dy,
                          const md_tensor *dx) {
    const char *op = act_name(act);
    if (!op) return md_fail(MD_ERR_ARG, "activation backward: unknown kind %d", (int)act);
    MD_TRY(want_any(op, "output", y));
    MD_TRY(want_same(op, "output gradient", dy, y));
    MD_TRY(want_same(op, "input gradient", dx, y));
    return be->vt->act_backward(be, act, y->data, dy->data, dx->data, md_tensor_numel(y));
}

md_status md_add(md_backend *be, const md_tensor *x, const md_tensor *y) {
    MD_TRY(want_any("add", "input", x));
    MD_TRY(want_same("add", "accumulator", y, x));
    return be->vt->add(be, x->data, y->data, md_tensor_numel(x));
}

md_status md_copy(md_backend *be, const md_tensor *x, const md_tensor *y) {
    MD_TRY(want_any("copy", "input", x));
    MD_TRY(want_same("copy", "output", y, x));
    return be->vt->copy(be, x->data, y->data, md_tensor_numel(x));
}

md_status md_zero(md_backend *be, const md_tensor *y) {
    MD_TRY(want_any("zero", "output", y));
    return be->vt->zero(be, y->data, md_tensor_numel(y));
}

/* ---- pooling ------------------------------------------------------------------ */

static md_status pool_out(const char *op, const md_pool_desc *p, const md_tensor *x, int *oh,
                          int *ow) {
    if (!p) return md_fail(MD_ERR_ARG, "%s: descriptor is missing", op);
    if (p->kind != MD_POOL_MAX && p->kind != MD_POOL_AVG)
        return md_fail(MD_ERR_ARG, "%s: unknown pool kind %d", op, (int)p->kind);
    if (p->k <= 0 || p->stride <= 0 || p->pad < 0 || 2 * p->pad > p->k)
        return md_fail(MD_ERR_ARG, "%s: k=%d stride=%d pad=%d (need k, stride > 0, 0 <= pad <= k/2)",
                       op, p->k, p->stride, p->pad);
    MD_TRY(want_nchw(op, "input", x));
    int h = x->dim[2] + 2 * p->pad - p->k, w = x->dim[3] + 2 * p->pad - p->k;
    if (h < 0 || w < 0)
        return md_fail(MD_ERR_ARG, "%s: input %dx%d with pad %d is smaller than the %dx%d window",
                       op, x->dim[2], x->dim[3], p->pad, p->k, p->k);
    *oh = h / p->stride + 1;
    *ow = w / p->stride + 1;
    return MD_OK;
}

static const char *pool_name(const md_pool_desc *p, int backward) {
    if (p && p->kind == MD_POOL_AVG) return backward ? "avg_pool backward" : "avg_pool";
    return backward ? "max_pool backward" : "max_pool";
}

md_status md_pool_forward(md_backend *be, const md_pool_desc *p, const md_tensor *x,
                          const md_tensor *y) {
    const char *op = pool_name(p, 0);
    int oh = 0, ow = 0;
    MD_TRY(pool_out(op, p, x, &oh, &ow));
    MD_TRY(want4(op, "output", y, x->dim[0], x->dim[1], oh, ow));
    return be->vt->pool_forward(be, p, x, y);
}

md_status md_pool_backward(md_backend *be, const md_pool_desc *p, const md_tensor *x,
                           const md_tensor *dy, const md_tensor *dx) {
    const char *op = pool_name(p, 1);
    int oh = 0, ow = 0;
    MD_TRY(pool_out(op, p, x, &oh, &ow));
    MD_TRY(want4(op, "output gradient", dy, x->dim[0], x->dim[1], oh, ow));
    MD_TRY(want_same(op, "input gradient", dx, x));
    return be->vt->pool_backward(be, p, x, dy, dx);
}

md_status md_gap_forward(md_backend *be, const md_tensor *x, const md_tensor *y) {
    MD_TRY(want_nchw("global_avg_pool", "input", x));
    int d[2] = {x->dim[0], x->dim[1]};
    MD_TRY(want("global_avg_pool", "output", y, 2, d));
    return be->vt->gap_forward(be, x, y);
}

md_status md_gap_backward(md_backend *be, const md_tensor *dy, const md_tensor *dx) {
    MD_TRY(want_nchw("global_avg_pool backward", "input gradient", dx));
    int d[2] = {dx->dim[0], dx->dim[1]};
    MD_TRY(want("global_avg_pool backward", "output gradient", dy, 2, d));
    return be->vt->gap_backward(be, dy, dx);
}

/* ---- shape ops ------------------------------------------------------------------ */

static md_status concat_check(const char *op, const md_tensor *y, const md_tensor *const *xs,
                              int k, const char *part) {
    if (!xs || k < 1) return md_fail(MD_ERR_ARG, "%s: needs at least one %s (got %d)", op, part, k);
    MD_TRY(want_nchw(op, "concatenated tensor", y));
    int c = 0;
    char name[32];
    for (int i = 0; i < k; i++) {
        snprintf(name, sizeof name, "%s %d", part, i);
        MD_TRY(want_nchw(op, name, xs[i]));
        if (xs[i]->dim[0] != y->dim[0] || xs[i]->dim[2] != y->dim[2] ||
            xs[i]->dim[3] != y->dim[3]) {
            char a[64], b[64];
            return md_fail(MD_ERR_ARG, "%s: %s has shape %s, N/H/W must match %s", op, name,
                           md_tensor_shape_str(xs[i], a, sizeof a),
                           md_tensor_shape_str(y, b, sizeof b));
        }
        c += xs[i]->dim[1];
    }
    if (c != y->dim[1])
        return md_fail(MD_ERR_ARG, "%s: %d %ss have %d channels in all, concatenated tensor has %d",
                       op, k, part, c, y->dim[1]);
    return MD_OK;
}

md_status md_concat_forward(md_backend *be, const md_tensor *const *xs, int k, const md_tensor *y) {
    MD_TRY(concat_check("concat", y, xs, k, "input"));
    return be->vt->concat_forward(be, xs, k, y);
}

md_status md_concat_backward(md_backend *be, const md_tensor *dy, const md_tensor *const *dxs,
                             int k) {
    MD_TRY(concat_check("concat backward", dy, dxs, k, "input gradient"));
    return be->vt->concat_backward(be, dy, dxs, k);
}

static md_status slice_check(const char *op, const md_tensor *big, int oh, int ow,
                             const md_tensor *small) {
    MD_TRY(want_nchw(op, "full tensor", big));
    MD_TRY(want_nchw(op, "slice", small));
    char a[64], b[64];
    if (oh < 0 || ow < 0 || small->dim[0] != big->dim[0] || small->dim[1] != big->dim[1] ||
        oh + small->dim[2] > big->dim[2] || ow + small->dim[3] > big->dim[3])
        return md_fail(MD_ERR_ARG, "%s: a %s window at offset (%d,%d) does not fit in %s", op,
                       md_tensor_shape_str(small, a, sizeof a), oh, ow,
                       md_tensor_shape_str(big, b, sizeof b));
    return MD_OK;
}

md_status md_slice_forward(md_backend *be, const md_tensor *x, int oh, int ow, const md_tensor *y) {
    MD_TRY(slice_check("slice", x, oh, ow, y));
    return be->vt->slice_forward(be, x, oh, ow, y);
}

md_status md_slice_backward(md_backend *be, const md_tensor *dy, int oh, int ow,
                            const md_tensor *dx) {
    MD_TRY(slice_check("slice backward", dx, oh, ow, dy));
    return be->vt->slice_backward(be, dy, oh, ow, dx);
}

/* ---- classifier, loss ------------------------------------------------------------- */

static md_status linear_check(const char *op, const md_tensor *x, const md_tensor *w,
                              const md_tensor *b) {
    char a[64];
    if (!x || !x->data || x->ndim != 2)
        return md_fail(MD_ERR_ARG, "%s: input must be [N, in], got %s", op,
                       x ? md_tensor_shape_str(x, a, sizeof a) : "nothing");
    if (!w || !w->data || w->ndim != 2 || w->dim[1] != x->dim[1])
        return md_fail(MD_ERR_ARG, "%s: weight must be [out, %d], got %s", op, x->dim[1],
                       w ? md_tensor_shape_str(w, a, sizeof a) : "nothing");
    if (b) MD_TRY(want(op, "bias", b, 1, &w->dim[0]));
    return MD_OK;
}

md_status md_linear_forward(md_backend *be, const md_tensor *x, const md_tensor *w,
                            const md_tensor *b, const md_tensor *y) {
    MD_TRY(linear_check("linear", x, w, b));
    int d[2] = {x->dim[0], w->dim[0]};
    MD_TRY(want("linear", "output", y, 2, d));
    return be->vt->linear_forward(be, x, w, b, y);
}

md_status md_linear_backward(md_backend *be, const md_tensor *x, const md_tensor *w,
                             const md_tensor *dy, const md_tensor *dx, const md_tensor *dw,
                             const md_tensor *db) {
    const char *op = "linear backward";
    MD_TRY(linear_check(op, x, w, db));
    int d[2] = {x->dim[0], w->dim[0]};
    MD_TRY(want(op, "output gradient", dy, 2, d));
    MD_TRY(maybe_same(op, "input gradient", dx, x));
    MD_TRY(maybe_same(op, "weight gradient", dw, w));
    return be->vt->linear_backward(be, x, w, dy, dx, dw, db);
}

md_status md_dropout_forward(md_backend *be, float p, md_rng *rng, const md_tensor *x,
                             const md_tensor *mask, const md_tensor *y) {
    if (!(p >= 0.0f && p < 1.0f))
        return md_fail(MD_ERR_ARG, "dropout: p=%g must be in [0, 1)", p);
    if (!rng) return md_fail(MD_ERR_ARG, "dropout: rng is missing");
    MD_TRY(want_any("dropout", "input", x));
    MD_TRY(want_same("dropout", "mask", mask, x));
    MD_TRY(want_same("dropout", "output", y, x));
    return be->vt->dropout_forward(be, p, rng, x, mask, y);
}

md_status md_dropout_backward(md_backend *be, const md_tensor *mask, const md_tensor *dy,
                              const md_tensor *dx) {
    MD_TRY(want_any("dropout backward", "mask", mask));
    MD_TRY(want_same("dropout backward", "output gradient", dy, mask));
    MD_TRY(want_same("dropout backward", "input gradient", dx, mask));
    return be->vt->mul_add(be, mask->data, dy->data, dx->data, md_tensor_numel(mask));
}

md_status md_row_scale(md_backend *be, const md_tensor *x, const float *s, const md_tensor *y,
                       int accumulate) {
    MD_TRY(want_any("row_scale", "input", x));
    MD_TRY(want_same("row_scale", "output", y, x));
    if (!s) return md_fail(MD_ERR_ARG, "row_scale: the scales are missing");
    size_t rows = (size_t)x->dim[0];
    if (rows == 0) return MD_OK;
    return be->vt->row_scale(be, x->data, s, y->data, rows, md_tensor_numel(x) / rows,
                             accumulate);
}

static md_status logits_check(const char *op, const md_tensor *logits, const int32_t *labels) {
    char a[64];
    if (!logits || !logits->data || logits->ndim != 2 || logits->dim[0] <= 0 ||
        logits->dim[1] <= 0)
        return md_fail(MD_ERR_ARG, "%s: logits must be [N, K] with N, K > 0, got %s", op,
                       logits ? md_tensor_shape_str(logits, a, sizeof a) : "nothing");
    if (!labels) return md_fail(MD_ERR_ARG, "%s: labels are missing", op);
    return MD_OK;
}

md_status md_softmax_ce(md_backend *be, const md_tensor *logits, const int32_t *labels,
                        float *loss, const md_tensor *dlogits) {
    MD_TRY(logits_check("softmax_cross_entropy", logits, labels));
    if (!loss) return md_fail(MD_ERR_ARG, "softmax_cross_entropy: loss output is missing");
    MD_TRY(maybe_same("softmax_cross_entropy", "logit gradient", dlogits, logits));
    return be->vt->softmax_ce(be, logits, labels, loss, dlogits);
}

md_status md_top1_correct(md_backend *be, const md_tensor *logits, const int32_t *labels,
                          int *correct) {
    MD_TRY(logits_check("top1_correct", logits, labels));
    if (!correct) return md_fail(MD_ERR_ARG, "top1_correct: count output is missing");
    return be->vt->top1_correct(be, logits, labels, correct);
}

/* ---- optimiser primitives ---------------------------------------------------------- */

md_status md_sgd_update(md_backend *be, float *w, const float *g, float *v, size_t n, float lr,
                        float momentum, float weight_decay) {
    return md_sgd_update_nesterov(be, w, g, v, n, lr, momentum, weight_decay, 0);
}

md_status md_sgd_update_nesterov(md_backend *be, float *w, const float *g, float *v, size_t n,
                                 float lr, float momentum, float weight_decay, int nesterov) {
    return md_sgd_update_guarded(be, w, g, v, n, lr, momentum, weight_decay, nesterov, NULL);
}

md_status md_sgd_update_guarded(md_backend *be, float *w, const float *g, float *v, size_t n,
                                float lr, float momentum, float weight_decay, int nesterov,
                                const double *guard) {
    if (!w || !g || (!v && momentum != 0.0f))
        return md_fail(MD_ERR_ARG, "sgd_update: weights, gradients or momentum buffer missing");
    if (!(lr >= 0.0f) || !(momentum >= 0.0f) || !(weight_decay >= 0.0f))
        return md_fail(MD_ERR_ARG, "sgd_update: lr=%g momentum=%g weight_decay=%g must be >= 0", lr,
                       momentum, weight_decay);
    if (nesterov && momentum == 0.0f)
        return md_fail(MD_ERR_ARG, "sgd_update: Nesterov momentum needs momentum > 0");
    return be->vt->sgd_update(be, w, g, v, n, lr, momentum, weight_decay, nesterov != 0, guard);
}

md_status md_loss_dev(md_backend *be, const md_tensor *logits, const int32_t *labels, float *out,
                      const md_tensor *dlogits) {
    return md_loss_dev_smoothed(be, logits, labels, 0.0f, out, dlogits);
}

md_status md_loss_dev_smoothed(md_backend *be, const md_tensor *logits, const int32_t *labels,
                               float smoothing, float *out, const md_tensor *dlogits) {
    const char *op = "loss_dev";
    if (!(smoothing >= 0.0f && smoothing < 1.0f))
        return md_fail(MD_ERR_ARG, "%s: label smoothing %g must be in [0, 1)", op, smoothing);
    MD_TRY(want_any(op, "logits", logits));
    if (logits->ndim != 2) return md_fail(MD_ERR_ARG, "%s: logits must be [N, K]", op);
    if (!labels || !out) return md_fail(MD_ERR_ARG, "%s: labels or output missing", op);
    if (dlogits) MD_TRY(want_same(op, "logits gradient", dlogits, logits));
    return be->vt->loss_dev(be, logits, labels, smoothing, out, dlogits);
}

md_status md_sumsq_dev(md_backend *be, const float *x, size_t n, double *acc) {
    if (!acc || (!x && n)) return md_fail(MD_ERR_ARG, "sumsq_dev: input or accumulator missing");
    return be->vt->sumsq_dev(be, x, n, acc);
}

md_status md_clip_scale_dev(md_backend *be, float *x, size_t n, const double *acc,
                            float max_norm) {
    if (!acc || (!x && n)) return md_fail(MD_ERR_ARG, "clip_scale_dev: input or norm missing");
    if (!(max_norm > 0.0f))
        return md_fail(MD_ERR_ARG, "clip_scale_dev: max_norm=%g must be > 0", max_norm);
    return be->vt->clip_scale_dev(be, x, n, acc, max_norm);
}

/* ---- in-memory datasets on the backend -------------------------------------- */

int md_backend_has_augment_u8(const md_backend *be) {
    return be && be->vt->augment_u8 != NULL;
}

md_status md_backend_augment_u8(md_backend *be, const md_u8_batch *b) {
    if (!be || !b) return md_fail(MD_ERR_ARG, "augment_u8: no %s", be ? "batch" : "backend");
    if (!be->vt->augment_u8)
        return md_fail(MD_ERR_BACKEND,
                       "augment_u8: the %s backend has no batch op for in-memory datasets "
                       "(use --device-data off: the host loader)",
                       be->vt->name);
    if (!b->images || !b->labels || !b->lut || !b->order || !b->x || !b->y)
        return md_fail(MD_ERR_ARG, "augment_u8: %s is NULL",
                       !b->images ? "images" : !b->labels ? "labels" : !b->lut ? "lut"
                       : !b->order ? "order" : !b->x ? "x" : "y");
    if (b->n_images < 1 || b->c < 1 || b->c > 3 || b->h < 1 || b->w < 1 ||
        (size_t)b->c * b->h * b->w > ((size_t)1 << 30))
        return md_fail(MD_ERR_ARG,
                       "augment_u8: %d images of %dx%dx%d (need >= 1 image of 1..3 channels, "
                       "at most 2^30 values each)",
                       b->n_images, b->c, b->h, b->w);
    if (b->n < 1 || b->rows < 0 || b->j0 < 0 || b->j0 > b->n - b->rows)
        return md_fail(MD_ERR_ARG,
                       "augment_u8: rows [%ld, %ld) of an order of %ld positions (need 0 <= rows "
                       "and 0 <= j0 <= j0 + rows <= n)",
                       b->j0, b->j0 + b->rows, b->n);
    if (b->crop_pad < 0 || b->crop_pad > 4096 || b->cutout < 0 || b->cutout > 4096 ||
        (b->flip != 0 && b->flip != 1))
        return md_fail(MD_ERR_ARG,
                       "augment_u8: crop padding %d, cutout %d (both 0..4096), flip %d (0 or 1)",
                       b->crop_pad, b->cutout, b->flip);
    if (b->rows == 0) return MD_OK;
    return be->vt->augment_u8(be, b);
}

int md_backend_has_graphs(const md_backend *be) {
    return be->vt->graph_begin != NULL;
}

md_status md_graph_capture_begin(md_backend *be) {
    if (!be->vt->graph_begin)
        return md_fail(MD_ERR_BACKEND, "graphs: the %s backend has none", be->vt->name);
    return be->vt->graph_begin(be);
}

md_status md_graph_capture_end(md_backend *be, md_graph **out) {
    *out = NULL;
    if (!be->vt->graph_end)
        return md_fail(MD_ERR_BACKEND, "graphs: the %s backend has none", be->vt->name);
    md_graph *g = calloc(1, sizeof *g);
    if (!g) return md_fail(MD_ERR_NOMEM, "graph");
    g->be = be;
    md_status s = be->vt->graph_end(be, &g->impl);
    if (s != MD_OK) {
        free(g);
        return s;
    }
    *out = g;
    return MD_OK;
}

md_status md_graph_launch(md_graph *g) {
    return g->be->vt->graph_launch(g->be, g->impl);
}

void md_graph_destroy(md_graph *g) {
    if (!g) return;
    g->be->vt->graph_destroy(g->be, g->impl);
    free(g);
}

md_status md_sumsq(md_backend *be, const float *x, size_t n, double *out) {
    if (!out || (!x && n)) return md_fail(MD_ERR_ARG, "sumsq: input or output missing");
    return be->vt->sumsq(be, x, n, out);
}

md_status md_scale(md_backend *be, float *x, size_t n, float factor) {
    if (!x && n) return md_fail(MD_ERR_ARG, "scale: input missing");
    return be->vt->scale(be, x, n, factor);
}
