/* The plan executor: buffers, memory planning, forward, loss, backward.
 *
 * Activations: every buffer keeps its own storage for the whole step (backward
 * needs them). Gradients: planned by liveness over the reverse walk. A
 * gradient buffer is taken from a free list of equal size when its first
 * writer (its last consumer in forward order) runs, zeroed just before, and
 * returned once its producer's backward has run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nas/plan_impl.h"

static void prof_dump(void);

md_status md_plan_shell(md_model *m, md_backend *be, int rows, md_plan **out) {
    md_plan *p = calloc(1, sizeof *p);
    *out = NULL;
    if (!p) return md_fail(MD_ERR_NOMEM, "plan");
    p->model = m;
    p->be = be;
    p->rows = rows;
    p->input = p->logits = p->aux = -1;
    *out = p;
    return MD_OK;
}

void md_plan_free_shell(md_plan *p) {
    if (!p) return;
    free(p->steps);
    free(p->bufs);
    free(p->ranges);
    free(p->ranges_bn);
    free(p->ranges_other);
    free(p);
}

int md_plan_add_buf(md_plan *p, int n, int c, int h, int w) {
    if (p->nbufs == p->cap_bufs) {
        int      cap = p->cap_bufs ? 2 * p->cap_bufs : 256;
        md_pbuf *b = realloc(p->bufs, (size_t)cap * sizeof *b);
        if (!b) return -1;
        p->bufs = b;
        p->cap_bufs = cap;
    }
    md_pbuf *b = &p->bufs[p->nbufs];
    memset(b, 0, sizeof *b);
    b->act = md_tensor_4d(NULL, n, c, h, w);
    b->grad = b->act;
    b->producer = -1;
    b->relu = -1;
    return p->nbufs++;
}

md_status md_plan_add_step(md_plan *p, const md_step *st) {
    if (p->nsteps == p->cap_steps) {
        int      cap = p->cap_steps ? 2 * p->cap_steps : 256;
        md_step *s = realloc(p->steps, (size_t)cap * sizeof *s);
        if (!s) return md_fail(MD_ERR_NOMEM, "plan: %d steps", cap);
        p->steps = s;
        p->cap_steps = cap;
    }
    p->bufs[st->out].producer = p->nsteps;
    p->steps[p->nsteps++] = *st;
    return MD_OK;
}

/* ---- memory planning ---------------------------------------------------------- */

typedef struct {
    size_t *off, *numel;
    int     n, cap;
} free_list;

static size_t grad_take(free_list *fl, size_t numel, size_t *top) {
    for (int i = 0; i < fl->n; i++)
        if (fl->numel[i] == numel) {
            size_t off = fl->off[i];
            fl->off[i] = fl->off[fl->n - 1];
            fl->numel[i] = fl->numel[fl->n - 1];
            fl->n--;
            return off;
        }
    size_t off = *top;
    *top += (numel + 15) / 16 * 16;
    return off;
}

static md_status grad_give(free_list *fl, size_t off, size_t numel) {
    if (fl->n == fl->cap) {
        int     cap = fl->cap ? 2 * fl->cap : 64;
        size_t *a = realloc(fl->off, (size_t)cap * sizeof *a);
        if (a) fl->off = a;
        size_t *b = realloc(fl->numel, (size_t)cap * sizeof *b);
        if (b) fl->numel = b;
        if (!a || !b) return md_fail(MD_ERR_NOMEM, "plan: free list");
        fl->cap = cap;
    }
    fl->off[fl->n] = off;
    fl->numel[fl->n++] = numel;
    return MD_OK;
}

static md_status plan_grads(md_plan *p) {
    free_list fl = {0};
    size_t    top = 0;
    char     *live = calloc((size_t)p->nbufs, 1);
    if (!live) return md_fail(MD_ERR_NOMEM, "plan: liveness");
    for (int i = 0; i < p->nbufs; i++) p->bufs[i].needs_grad = i != p->input;
    md_pbuf *lg = &p->bufs[p->logits];
    lg->grad_off = grad_take(&fl, md_tensor_numel(&lg->act), &top);
    live[p->logits] = 1;
    if (p->aux >= 0) {
        md_pbuf *ax = &p->bufs[p->aux];
        ax->grad_off = grad_take(&fl, md_tensor_numel(&ax->act), &top);
        live[p->aux] = 1;
    }
    md_status st = MD_OK;
    for (int s = p->nsteps - 1; s >= 0 && st == MD_OK; s--) {
        md_step *step = &p->steps[s];
        step->nzero = 0;
        if (!live[step->out]) continue; /* nothing flows back through this step */
        for (int i = 0; i < step->nin; i++) {
            int in = step->in[i];
            if (in < 0 || !p->bufs[in].needs_grad || live[in]) continue;
            p->bufs[in].grad_off = grad_take(&fl, md_tensor_numel(&p->bufs[in].act), &top);
            live[in] = 1;
            step->zero[step->nzero++] = in;
        }
        live[step->out] = 2; /* done: its storage is free for others */
        st = grad_give(&fl, p->bufs[step->out].grad_off, md_tensor_numel(&p->bufs[step->out].act));
    }
    for (int i = 0; i < p->nbufs; i++)
        if (!live[i]) p->bufs[i].needs_grad = 0;
    free(live);
    free(fl.off);
    free(fl.numel);
    p->grad_floats = top;
    return st;
}

static int cmp_range(const void *a, const void *b) {
    const md_range *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Ranges of the weights the steps use (which: RANGES_ALL, RANGES_BN for BN
 * gamma and beta, RANGES_OTHER for the rest), sorted and merged across
 * alignment padding. */
enum { RANGES_ALL, RANGES_BN, RANGES_OTHER };
static md_status collect_ranges(md_plan *p, int which, md_range **out, int *count) {
    md_arena *params = &p->model->params;
    md_range *r = malloc((size_t)(4 * p->nsteps + 1) * sizeof *r);
    *out = r, *count = 0;
    if (!r) return md_fail(MD_ERR_NOMEM, "plan: ranges");
    int n = 0;
    for (int s = 0; s < p->nsteps; s++) {
        const md_step *st = &p->steps[s];
        int            ids[4] = {st->w, st->b, st->gamma, st->beta};
        for (int k = which == RANGES_BN ? 2 : 0; k < (which == RANGES_OTHER ? 2 : 4); k++)
            if (ids[k] >= 0) {
                const md_param *pr = &params->table[ids[k]];
                r[n++] = (md_range){pr->offset, pr->numel};
            }
    }
    qsort(r, (size_t)n, sizeof *r, cmp_range);
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (m && r[i].offset == r[m - 1].offset) continue; /* shared weight */
        size_t end = m ? r[m - 1].offset + (r[m - 1].count + 15) / 16 * 16 : 0;
        if (m && r[i].offset == end)
            r[m - 1].count = r[i].offset + r[i].count - r[m - 1].offset;
        else
            r[m++] = r[i];
    }
    *count = m;
    return MD_OK;
}

md_status md_plan_finish(md_plan *p) {
    MD_TRY(plan_grads(p));
    MD_TRY(collect_ranges(p, RANGES_ALL, &p->ranges, &p->nranges));
    MD_TRY(collect_ranges(p, RANGES_BN, &p->ranges_bn, &p->nranges_bn));
    MD_TRY(collect_ranges(p, RANGES_OTHER, &p->ranges_other, &p->nranges_other));
    size_t top = 0;
    for (int i = 0; i < p->nbufs; i++) {
        if (i == p->input) continue; /* the caller's batch */
        p->bufs[i].act_off = top;
        top += (md_tensor_numel(&p->bufs[i].act) + 15) / 16 * 16;
    }
    p->act_floats = top;
    void *a = NULL, *g = NULL, *sv = NULL;
    MD_TRY(md_backend_alloc(p->be, (p->act_floats + 16) * sizeof(float), &a));
    p->act_mem = a;
    MD_TRY(md_backend_alloc(p->be, (p->grad_floats + 16) * sizeof(float), &g));
    p->grad_mem = g;
    size_t save = 0;
    for (int s = 0; s < p->nsteps; s++)
        if (p->steps[s].kind == MD_STEP_BN) save += 2 * (size_t)p->bufs[p->steps[s].out].act.dim[1];
    MD_TRY(md_backend_alloc(p->be, (save + 16) * sizeof(float), &sv));
    p->save_mem = sv;
    /* Saved BN statistics: consecutive (mean, invstd) pairs in step order. */
    size_t so = 0;
    for (int s = 0; s < p->nsteps; s++)
        if (p->steps[s].kind == MD_STEP_BN) {
            p->steps[s].save = (int)so; /* reuse: offset into save_mem */
            so += 2 * (size_t)p->bufs[p->steps[s].out].act.dim[1];
        }
    size_t noise = 0;
    for (int s = 0; s < p->nsteps; s++) {
        md_step *st = &p->steps[s];
        if (st->kind != MD_STEP_NOISE) continue;
        st->mask = noise;
        const md_tensor *x = &p->bufs[st->in[0]].act;
        noise += st->noise == MD_NOISE_DROP_PATH ? (size_t)x->dim[0] : md_tensor_numel(x);
    }
    p->noise_floats = noise;
    if (noise) {
        void *nm = NULL;
        MD_TRY(md_backend_alloc(p->be, noise * sizeof(float), &nm));
        p->noise_mem = nm;
        if (!md_backend_is_host(p->be) && !(p->noise_host = malloc(noise * sizeof(float))))
            return md_fail(MD_ERR_NOMEM, "plan: %zu drop-path and dropout scales", noise);
    }
    for (int i = 0; i < p->nbufs; i++) {
        md_pbuf *b = &p->bufs[i];
        b->act.data = i == p->input ? NULL : p->act_mem + b->act_off;
        b->grad.data = b->needs_grad ? p->grad_mem + b->grad_off : NULL;
    }
    return MD_OK;
}

void md_plan_destroy(md_plan *p) {
    if (!p) return;
    prof_dump();
    for (int s = 0; s < p->nsteps; s++)
        if (p->steps[s].conv) md_conv_destroy(p->steps[s].conv);
    if (p->be) {
        md_backend_free(p->be, p->act_mem);
        md_backend_free(p->be, p->grad_mem);
        md_backend_free(p->be, p->save_mem);
        md_backend_free(p->be, p->noise_mem);
    }
    free(p->noise_host);
    md_plan_free_shell(p);
}

/* ---- execution ---------------------------------------------------------------------- */

static md_tensor as_2d(const md_tensor *t, float *data) {
    return md_tensor_2d(data, t->dim[0], t->dim[1]);
}

static md_tensor param(md_arena *a, int idx) {
    return md_arena_tensor(a, idx);
}

typedef struct {
    md_tensor gamma, beta, rmean, rvar, mean, invstd;
    md_bn_state st;
} bn_view;

static void bn_state(md_plan *p, const md_step *s, md_mode mode, bn_view *v) {
    md_arena *params = &p->model->params, *stats = &p->model->stats;
    int       c = p->bufs[s->out].act.dim[1];
    memset(v, 0, sizeof *v);
    if (s->gamma >= 0) {
        v->gamma = param(params, s->gamma);
        v->beta = param(params, s->beta);
        v->st.gamma = &v->gamma;
        v->st.beta = &v->beta;
    }
    v->rmean = param(stats, s->rmean);
    v->rvar = param(stats, s->rvar);
    if (mode != MD_MODE_EVAL_BATCH_STATS) {
        v->st.running_mean = &v->rmean;
        v->st.running_var = &v->rvar;
    }
    v->mean = md_tensor_1d(p->save_mem + s->save, c);
    v->invstd = md_tensor_1d(p->save_mem + s->save + c, c);
    v->st.save_mean = &v->mean;
    v->st.save_invstd = &v->invstd;
    v->st.momentum = 0.1f;
    v->st.eps = s->eps;
    v->st.sync = p->bn_sync;
}

static md_status step_forward(md_plan *p, const md_step *s, md_mode mode) {
    md_backend      *be = p->be;
    md_arena        *params = &p->model->params;
    const md_tensor *x = s->nin > 0 && s->in[0] >= 0 ? &p->bufs[s->in[0]].act : NULL;
    const md_tensor *y = &p->bufs[s->out].act;
    switch (s->kind) {
    case MD_STEP_CONV: {
        md_tensor w = param(params, s->w);
        return md_conv_forward(s->conv, x, &w, y);
    }
    case MD_STEP_BN: {
        bn_view v;
        bn_state(p, s, mode, &v);
        return mode == MD_MODE_EVAL ? md_bn_forward_eval(be, x, y, &v.st)
                                    : md_bn_forward_train(be, x, y, &v.st);
    }
    case MD_STEP_RELU: return md_act_forward(be, MD_ACT_RELU, x, y);
    case MD_STEP_RELU6: return md_act_forward(be, MD_ACT_RELU6, x, y);
    case MD_STEP_POOL: return md_pool_forward(be, &s->pool, x, y);
    case MD_STEP_SUM:
        MD_TRY(md_copy(be, x, y));
        for (int i = 1; i < s->nin; i++) MD_TRY(md_add(be, &p->bufs[s->in[i]].act, y));
        return MD_OK;
    case MD_STEP_CONCAT: {
        const md_tensor *xs[MD_STEP_MAX_IN];
        for (int i = 0; i < s->nin; i++) xs[i] = &p->bufs[s->in[i]].act;
        return md_concat_forward(be, xs, s->nin, y);
    }
    case MD_STEP_SLICE: return md_slice_forward(be, x, 1, 1, y);
    case MD_STEP_ZERO: return md_zero(be, y);
    case MD_STEP_GAP: {
        md_tensor y2 = as_2d(y, y->data);
        return md_gap_forward(be, x, &y2);
    }
    case MD_STEP_LINEAR: {
        md_tensor x2 = as_2d(x, x->data), y2 = as_2d(y, y->data);
        md_tensor w = param(params, s->w), b = param(params, s->b);
        return md_linear_forward(be, &x2, &w, &b, &y2);
    }
    case MD_STEP_NOISE: {
        if (!p->noise_used) return md_copy(be, x, y);
        md_tensor x1 = *x, y1 = *y;
        if (s->noise == MD_NOISE_DROPOUT) {
            x1 = md_tensor_1d(x->data, (int)md_tensor_numel(x));
            y1 = md_tensor_1d(y->data, (int)md_tensor_numel(y));
        }
        return md_row_scale(be, &x1, p->noise_mem + s->mask, &y1, 0);
    }
    }
    return md_fail(MD_ERR_ARG, "plan: unknown step kind %d", (int)s->kind);
}

/* MDENAS_PROFILE=1: time every step by kind and print the totals when the plan
 * is destroyed (to stderr). Costs two clock reads per step when on. */
static const char *const kind_names[] = {"conv",   "bn",   "relu", "pool",   "sum",  "concat",
                                         "slice",  "zero", "gap",  "linear", "relu6", "noise"};
enum { PROF_DW = 12, PROF_KINDS = 13 };
static double prof_t[2][PROF_KINDS];
static long   prof_n[2][PROF_KINDS];
static int    prof_on = -1;

static double prof_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int prof_kind(const md_step *s) {
    if (s->kind == MD_STEP_CONV && md_conv_get_desc(s->conv)->groups > 1) return PROF_DW;
    return (int)s->kind;
}

static void prof_dump(void) {
    if (prof_on != 1) return;
    double total = 0;
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < PROF_KINDS; k++) total += prof_t[d][k];
    for (int d = 0; d < 2; d++)
        for (int k = 0; k < PROF_KINDS; k++)
            if (prof_n[d][k])
                fprintf(stderr, "profile %-8s %-9s %9.1f ms %5.1f%% (%ld calls)\n",
                        d ? "backward" : "forward", k == PROF_DW ? "dw_conv" : kind_names[k],
                        1e3 * prof_t[d][k], 100 * prof_t[d][k] / total, prof_n[d][k]);
    memset(prof_t, 0, sizeof prof_t);
    memset(prof_n, 0, sizeof prof_n);
}

md_status md_plan_forward(md_plan *p, const float *x, md_mode mode) {
    if (prof_on < 0) prof_on = getenv("MDENAS_PROFILE") && !strcmp(getenv("MDENAS_PROFILE"), "1");
    p->bufs[p->input].act.data = (float *)x;
    p->grads_ready = 0;
    p->noise_used = mode == MD_MODE_TRAIN && p->noise_on;
    for (int s = 0; s < p->nsteps; s++) {
        if (p->steps[s].train_only && mode != MD_MODE_TRAIN) continue;
        double t = prof_on == 1 ? prof_now() : 0;
        MD_TRY(step_forward(p, &p->steps[s], mode));
        if (prof_on == 1) {
            int k = prof_kind(&p->steps[s]);
            prof_t[0][k] += prof_now() - t;
            prof_n[0][k]++;
        }
    }
    return MD_OK;
}

void md_plan_set_bn_sync(md_plan *p, const md_bn_sync *sync) {
    p->bn_sync = sync;
}

md_status md_plan_forward_absent(md_plan *p, md_mode mode) {
    if (!p->bn_sync || mode == MD_MODE_EVAL) return MD_OK;
    for (int s = 0; s < p->nsteps; s++)
        if (p->steps[s].kind == MD_STEP_BN)
            MD_TRY(md_bn_sync_absent(p->bn_sync, p->bufs[p->steps[s].out].act.dim[1]));
    return MD_OK;
}

md_status md_plan_loss(md_plan *p, const int32_t *labels, float *loss, int *correct) {
    md_pbuf  *lg = &p->bufs[p->logits];
    md_tensor z = as_2d(&lg->act, lg->act.data), dz = as_2d(&lg->act, lg->grad.data);
    MD_TRY(md_zero(p->be, &dz));
    MD_TRY(md_softmax_ce(p->be, &z, labels, loss, &dz));
    if (correct) MD_TRY(md_top1_correct(p->be, &z, labels, correct));
    p->grads_ready = 1;
    return MD_OK;
}

md_status md_plan_loss_dev(md_plan *p, const int32_t *labels, float *out) {
    return md_plan_loss_dev_smoothed(p, labels, 0.0f, out);
}

md_status md_plan_loss_dev_smoothed(md_plan *p, const int32_t *labels, float smoothing,
                                    float *out) {
    md_pbuf  *lg = &p->bufs[p->logits];
    md_tensor z = as_2d(&lg->act, lg->act.data), dz = as_2d(&lg->act, lg->grad.data);
    MD_TRY(md_zero(p->be, &dz));
    MD_TRY(md_loss_dev_smoothed(p->be, &z, labels, smoothing, out, &dz));
    p->grads_ready = 1;
    return MD_OK;
}

md_status md_plan_scale_loss_grad(md_plan *p, float factor) {
    if (!p->grads_ready) return md_fail(MD_ERR_ARG, "plan: scaling the loss gradient before the loss");
    md_pbuf *lg = &p->bufs[p->logits];
    MD_TRY(md_scale(p->be, lg->grad.data, (size_t)lg->act.dim[0] * lg->act.dim[1], factor));
    if (p->aux < 0) return MD_OK;
    md_pbuf *ax = &p->bufs[p->aux];
    return md_scale(p->be, ax->grad.data, (size_t)ax->act.dim[0] * ax->act.dim[1], factor);
}

static const md_tensor *grad_of(md_plan *p, int buf) {
    return buf >= 0 && p->bufs[buf].needs_grad ? &p->bufs[buf].grad : NULL;
}

static md_status step_backward(md_plan *p, const md_step *s) {
    md_backend      *be = p->be;
    md_arena        *params = &p->model->params, *grads = &p->model->grads;
    const md_tensor *x = s->nin > 0 && s->in[0] >= 0 ? &p->bufs[s->in[0]].act : NULL;
    const md_tensor *dx = s->nin > 0 ? grad_of(p, s->in[0]) : NULL;
    const md_tensor *dy = &p->bufs[s->out].grad;
    switch (s->kind) {
    case MD_STEP_CONV: {
        md_tensor w = param(params, s->w), dw = param(grads, s->w);
        return md_conv_backward(s->conv, x, &w, dy, dx, &dw);
    }
    case MD_STEP_BN: {
        bn_view v;
        bn_state(p, s, MD_MODE_TRAIN, &v);
        md_tensor dg = {0}, db = {0};
        if (s->gamma >= 0) dg = param(grads, s->gamma), db = param(grads, s->beta);
        return md_bn_backward_train(be, x, dy, dx, s->gamma >= 0 ? &dg : NULL,
                                    s->gamma >= 0 ? &db : NULL, &v.st);
    }
    case MD_STEP_RELU: return dx ? md_act_backward(be, MD_ACT_RELU, &p->bufs[s->out].act, dy, dx) : MD_OK;
    case MD_STEP_RELU6:
        return dx ? md_act_backward(be, MD_ACT_RELU6, &p->bufs[s->out].act, dy, dx) : MD_OK;
    case MD_STEP_POOL: return dx ? md_pool_backward(be, &s->pool, x, dy, dx) : MD_OK;
    case MD_STEP_SUM:
        for (int i = 0; i < s->nin; i++) {
            const md_tensor *g = grad_of(p, s->in[i]);
            if (g) MD_TRY(md_add(be, dy, g));
        }
        return MD_OK;
    case MD_STEP_CONCAT: {
        const md_tensor *dxs[MD_STEP_MAX_IN];
        for (int i = 0; i < s->nin; i++) dxs[i] = grad_of(p, s->in[i]);
        return md_concat_backward(be, dy, dxs, s->nin);
    }
    case MD_STEP_SLICE: return dx ? md_slice_backward(be, dy, 1, 1, dx) : MD_OK;
    case MD_STEP_ZERO: return MD_OK;
    case MD_STEP_GAP: {
        md_tensor dy2 = as_2d(dy, dy->data);
        return dx ? md_gap_backward(be, &dy2, dx) : MD_OK;
    }
    case MD_STEP_LINEAR: {
        md_tensor x2 = as_2d(x, x->data), dy2 = as_2d(dy, dy->data), dx2 = {0};
        if (dx) dx2 = as_2d(dx, dx->data);
        md_tensor w = param(params, s->w), dw = param(grads, s->w), db = param(grads, s->b);
        return md_linear_backward(be, &x2, &w, &dy2, dx ? &dx2 : NULL, &dw, &db);
    }
    case MD_STEP_NOISE: {
        if (!dx) return MD_OK;
        if (!p->noise_used) return md_add(be, dy, dx);
        md_tensor dy1 = *dy, dx1 = *dx;
        if (s->noise == MD_NOISE_DROPOUT) {
            dy1 = md_tensor_1d(dy->data, (int)md_tensor_numel(dy));
            dx1 = md_tensor_1d(dx->data, (int)md_tensor_numel(dx));
        }
        return md_row_scale(be, &dy1, p->noise_mem + s->mask, &dx1, 1);
    }
    }
    return md_fail(MD_ERR_ARG, "plan: unknown step kind %d", (int)s->kind);
}

md_status md_plan_backward(md_plan *p) {
    if (!p->grads_ready)
        return md_fail(MD_ERR_ARG, "plan: backward without a training forward and loss");
    for (int s = p->nsteps - 1; s >= 0; s--) {
        const md_step *st = &p->steps[s];
        if (!p->bufs[st->out].needs_grad) continue;
        double t = prof_on == 1 ? prof_now() : 0;
        for (int i = 0; i < st->nzero; i++) MD_TRY(md_zero(p->be, &p->bufs[st->zero[i]].grad));
        MD_TRY(step_backward(p, st));
        if (prof_on == 1) {
            int k = prof_kind(st);
            prof_t[1][k] += prof_now() - t;
            prof_n[1][k]++;
        }
    }
    p->grads_ready = 0;
    return MD_OK;
}

md_status md_plan_zero_grads(md_plan *p) {
    md_arena *g = &p->model->grads;
    for (int i = 0; i < p->nranges; i++) {
        md_tensor t = md_tensor_1d(g->data + p->ranges[i].offset, (int)p->ranges[i].count);
        MD_TRY(md_zero(p->be, &t));
    }
    return MD_OK;
}

const md_range *md_plan_ranges(const md_plan *p, int *count) {
    *count = p->nranges;
    return p->ranges;
}

const md_range *md_plan_ranges_split(const md_plan *p, int bn, int *count) {
    *count = bn ? p->nranges_bn : p->nranges_other;
    return bn ? p->ranges_bn : p->ranges_other;
}

size_t md_plan_bytes(const md_plan *p) {
    return (p->act_floats + p->grad_floats) * sizeof(float);
}

int md_plan_rows(const md_plan *p) {
    return p->rows;
}

int md_plan_steps(const md_plan *p) {
    return p->nsteps;
}

md_status md_plan_logits(const md_plan *p, float *out, size_t n) {
    const md_pbuf *lg = &p->bufs[p->logits];
    size_t         have = md_tensor_numel(&lg->act);
    if (n != have) return md_fail(MD_ERR_ARG, "plan: %zu logits asked, the plan has %zu", n, have);
    return md_backend_download(p->be, out, lg->act.data, n * sizeof *out);
}

/* ---- training-only parts: drop-path, dropout, the auxiliary head ---------------------- */

int md_plan_has_noise(const md_plan *p) {
    return p->noise_floats > 0;
}

int md_plan_has_aux(const md_plan *p) {
    return p->aux >= 0;
}

md_status md_plan_set_noise(md_plan *p, float drop_path, uint64_t seed, uint64_t counter,
                            long row0) {
    if (!(drop_path >= 0.0f && drop_path < 1.0f))
        return md_fail(MD_ERR_ARG, "plan: drop-path probability %g must be in [0, 1)",
                       (double)drop_path);
    if (row0 < 0) return md_fail(MD_ERR_ARG, "plan: first row %ld", row0);
    p->noise_on = 0;
    if (!p->noise_floats) return MD_OK;
    float *m = p->noise_host ? p->noise_host : p->noise_mem;
    md_rng root;
    md_rng_seed(&root, seed, counter);
    int any = 0, ordinal = 0; /* streams keyed by the noise step's rank among them */
    for (int s = 0; s < p->nsteps; s++) {
        const md_step *st = &p->steps[s];
        if (st->kind != MD_STEP_NOISE) continue;
        uint64_t key = (uint64_t)ordinal++ << 40;
        const md_tensor *x = &p->bufs[st->in[0]].act;
        float            rate = st->noise == MD_NOISE_DROP_PATH ? drop_path : st->rate;
        size_t           per_row = st->noise == MD_NOISE_DROP_PATH ? 1 : md_tensor_numel(x) / (size_t)x->dim[0];
        float           *dst = m + st->mask, keep = 1.0f - rate;
        any |= rate > 0.0f;
        for (int r = 0; r < x->dim[0]; r++) {
            md_rng g = md_rng_split(&root, key ^ (uint64_t)(row0 + r));
            for (size_t i = 0; i < per_row; i++)
                dst[(size_t)r * per_row + i] = md_rng_uniform(&g) < keep ? 1.0f / keep : 0.0f;
        }
    }
    if (!any) return MD_OK;
    if (p->noise_host)
        MD_TRY(md_backend_upload(p->be, p->noise_mem, p->noise_host,
                                 p->noise_floats * sizeof(float)));
    p->noise_on = 1;
    return MD_OK;
}

const float *md_plan_noise_masks(const md_plan *p, size_t *n) {
    *n = p->noise_floats;
    return p->noise_host ? p->noise_host : p->noise_mem;
}

md_status md_plan_aux_loss_dev(md_plan *p, const int32_t *labels, float smoothing, float *out) {
    if (p->aux < 0) return md_fail(MD_ERR_ARG, "plan: no auxiliary head");
    md_pbuf  *ax = &p->bufs[p->aux];
    md_tensor z = as_2d(&ax->act, ax->act.data), dz = as_2d(&ax->act, ax->grad.data);
    MD_TRY(md_zero(p->be, &dz));
    MD_TRY(md_loss_dev_smoothed(p->be, &z, labels, smoothing, out, &dz));
    return md_scale(p->be, dz.data, md_tensor_numel(&dz), p->aux_weight);
}

md_status md_plan_aux_logits(const md_plan *p, float *out, size_t n) {
    if (p->aux < 0) return md_fail(MD_ERR_ARG, "plan: no auxiliary head");
    const md_pbuf *ax = &p->bufs[p->aux];
    size_t         have = md_tensor_numel(&ax->act);
    if (n != have) return md_fail(MD_ERR_ARG, "plan: %zu logits asked, the head has %zu", n, have);
    return md_backend_download(p->be, out, ax->act.data, n * sizeof *out);
}
