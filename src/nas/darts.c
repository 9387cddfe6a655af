/* The DARTS search space (MDENAS.md): the builder that both declares the
 * supernet's weights (every op of every edge) and emits the steps of a plan
 * (the sampled op of every edge), so the two can never disagree. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nas/plan_impl.h"

const char *const md_darts_op_names[MD_DARTS_OPS] = {
    "none",         "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"};

struct md_supernet {
    md_darts_config cfg;
    md_arena        params, grads, momentum, stats;
};

/* Builder state. Declaring: weights are added to the arenas and buffers only
 * carry shapes. Emitting: weights are looked up and steps are added. */
typedef struct {
    md_supernet *net;
    md_plan     *plan;
    int          declaring;
    md_status    status; /* first failure; later calls do nothing */
} builder;

enum { NO_BUF = -1 };

static int ok(builder *b) {
    return b->status == MD_OK;
}

static const md_tensor *shape_of(builder *b, int buf) {
    return &b->plan->bufs[buf].act;
}

static int new_buf(builder *b, int c, int h, int w) {
    if (!ok(b)) return NO_BUF;
    int id = md_plan_add_buf(b->plan, b->plan->rows, c, h, w);
    if (id < 0) b->status = md_fail(MD_ERR_NOMEM, "plan: buffer table");
    return id;
}

static void add_step(builder *b, const md_step *st) {
    if (ok(b) && !b->declaring) b->status = md_plan_add_step(b->plan, st);
}

/* Declare (or find) a tensor in `arena`; returns its index. */
static int tensor(builder *b, md_arena *arena, const char *name, int ndim, const int *dim) {
    if (!ok(b)) return -1;
    int idx = -1;
    if (b->declaring) {
        b->status = md_arena_add(arena, name, ndim, dim, &idx);
        return idx;
    }
    idx = md_arena_find(arena, name);
    if (idx < 0) b->status = md_fail(MD_ERR_ARG, "supernet: no tensor '%s'", name);
    return idx;
}

/* dst = a + b, cut at MD_NAME_MAX - 1 characters (names are far shorter). */
static void join_name(char *dst, const char *a, const char *b) {
    size_t la = strnlen(a, MD_NAME_MAX - 1), lb = strnlen(b, MD_NAME_MAX - 1 - la);
    memmove(dst, a, la);
    memcpy(dst + la, b, lb);
    dst[la + lb] = '\0';
}

static md_step step_of(md_step_kind kind, int in, int out) {
    md_step st;
    memset(&st, 0, sizeof st);
    st.kind = kind;
    st.in[0] = in;
    st.nin = 1;
    st.out = out;
    st.w = st.b = st.gamma = st.beta = st.rmean = st.rvar = st.save = -1;
    return st;
}

static int b_conv(builder *b, const char *name, int in, int c_out, int k, int stride, int pad,
                  int dil, int groups) {
    if (!ok(b)) return NO_BUF;
    const md_tensor *x = shape_of(b, in);
    md_conv_desc     d = {.n = x->dim[0], .c_in = x->dim[1], .h = x->dim[2], .w = x->dim[3],
                          .c_out = c_out, .kh = k, .kw = k, .stride = stride, .pad = pad,
                          .dilation = dil, .groups = groups};
    int              oh = 0, ow = 0;
    b->status = md_conv_out_hw(&d, &oh, &ow);
    char pname[MD_NAME_MAX];
    join_name(pname, name, ".w");
    int wd[4] = {c_out, d.c_in / groups, k, k};
    int w = tensor(b, &b->net->params, pname, 4, wd);
    int out = new_buf(b, c_out, oh, ow);
    if (!ok(b) || b->declaring) return out;
    md_step st = step_of(MD_STEP_CONV, in, out);
    st.w = w;
    b->status = md_conv_create(b->plan->be, &d, &st.conv);
    add_step(b, &st);
    return out;
}

static int b_bn(builder *b, const char *name, int in, int affine) {
    if (!ok(b)) return NO_BUF;
    const md_tensor *x = shape_of(b, in);
    int              c = x->dim[1];
    char             n1[MD_NAME_MAX], n2[MD_NAME_MAX];
    md_step          st = step_of(MD_STEP_BN, in, NO_BUF);
    if (affine) {
        join_name(n1, name, ".gamma");
        join_name(n2, name, ".beta");
        st.gamma = tensor(b, &b->net->params, n1, 1, &c);
        st.beta = tensor(b, &b->net->params, n2, 1, &c);
    }
    join_name(n1, name, ".running_mean");
    join_name(n2, name, ".running_var");
    st.rmean = tensor(b, &b->net->stats, n1, 1, &c);
    st.rvar = tensor(b, &b->net->stats, n2, 1, &c);
    st.out = new_buf(b, c, x->dim[2], x->dim[3]);
    add_step(b, &st);
    return st.out;
}

/* relu(x) is computed once per buffer and shared by every consumer. */
static int b_relu(builder *b, int in) {
    if (!ok(b)) return NO_BUF;
    if (b->plan->bufs[in].relu >= 0) return b->plan->bufs[in].relu;
    const md_tensor *x = shape_of(b, in);
    int              out = new_buf(b, x->dim[1], x->dim[2], x->dim[3]);
    md_step          st = step_of(MD_STEP_RELU, in, out);
    add_step(b, &st);
    if (ok(b)) b->plan->bufs[in].relu = out;
    return out;
}

static int b_pool(builder *b, int in, md_pool_kind kind, int stride) {
    if (!ok(b)) return NO_BUF;
    const md_tensor *x = shape_of(b, in);
    md_step          st = step_of(MD_STEP_POOL, in, NO_BUF);
    st.pool = (md_pool_desc){.kind = kind, .k = 3, .stride = stride, .pad = 1};
    st.out = new_buf(b, x->dim[1], (x->dim[2] - 1) / stride + 1, (x->dim[3] - 1) / stride + 1);
    add_step(b, &st);
    return st.out;
}

static int b_multi(builder *b, md_step_kind kind, const int *in, int n, int c) {
    if (!ok(b)) return NO_BUF;
    if (n > MD_STEP_MAX_IN) {
        b->status = md_fail(MD_ERR_ARG, "plan: %d inputs to one step (at most %d)", n,
                            MD_STEP_MAX_IN);
        return NO_BUF;
    }
    const md_tensor *x = shape_of(b, in[0]);
    md_step          st = step_of(kind, in[0], NO_BUF);
    memcpy(st.in, in, (size_t)n * sizeof *in);
    st.nin = n;
    st.out = new_buf(b, c, x->dim[2], x->dim[3]);
    add_step(b, &st);
    return st.out;
}

static int b_slice(builder *b, int in) {
    if (!ok(b)) return NO_BUF;
    const md_tensor *x = shape_of(b, in);
    int              out = new_buf(b, x->dim[1], x->dim[2] - 1, x->dim[3] - 1);
    md_step          st = step_of(MD_STEP_SLICE, in, out);
    add_step(b, &st);
    return out;
}

/* ---- the candidate ops -------------------------------------------------------- */

static int relu_conv_bn(builder *b, const char *name, int in, int c_out) {
    char n[MD_NAME_MAX];
    join_name(n, name, ".conv");
    int x = b_conv(b, n, b_relu(b, in), c_out, 1, 1, 0, 1, 1);
    join_name(n, name, ".bn");
    return b_bn(b, n, x, 0);
}

static int factorized_reduce(builder *b, const char *name, int in, int c_out) {
    if (!ok(b)) return NO_BUF;
    const md_tensor *x = shape_of(b, in);
    if (c_out % 2 || x->dim[2] % 2 || x->dim[3] % 2) {
        b->status = md_fail(MD_ERR_ARG,
                            "%s: FactorizedReduce needs an even channel count and even H, W "
                            "(got %d channels at %dx%d)",
                            name, c_out, x->dim[2], x->dim[3]);
        return NO_BUF;
    }
    char n[MD_NAME_MAX];
    int  r = b_relu(b, in), parts[2];
    join_name(n, name, ".conv1");
    parts[0] = b_conv(b, n, r, c_out / 2, 1, 2, 0, 1, 1);
    join_name(n, name, ".conv2");
    parts[1] = b_conv(b, n, b_slice(b, r), c_out / 2, 1, 2, 0, 1, 1);
    int cat = b_multi(b, MD_STEP_CONCAT, parts, 2, c_out);
    join_name(n, name, ".bn");
    return b_bn(b, n, cat, 0);
}

/* ReLU, depthwise kxk, pointwise 1x1, BN (non-affine): weights name.dw<tag>,
 * name.pw<tag>, name.bn<tag>. One of these is dil_conv; two are sep_conv. */
static int relu_dw_pw_bn(builder *b, const char *name, const char *tag, int in, int c, int k,
                         int stride, int pad, int dil) {
    char n[MD_NAME_MAX];
    join_name(n, name, ".dw");
    join_name(n, n, tag);
    int x = b_conv(b, n, b_relu(b, in), c, k, stride, pad, dil, c);
    join_name(n, name, ".pw");
    join_name(n, n, tag);
    x = b_conv(b, n, x, c, 1, 1, 0, 1, 1);
    join_name(n, name, ".bn");
    join_name(n, n, tag);
    return b_bn(b, n, x, 0);
}

static int sep_conv(builder *b, const char *name, int in, int c, int stride, int k) {
    int x = relu_dw_pw_bn(b, name, "1", in, c, k, stride, k / 2, 1);
    return relu_dw_pw_bn(b, name, "2", x, c, k, 1, k / 2, 1);
}

static int dil_conv(builder *b, const char *name, int in, int c, int stride, int k) {
    return relu_dw_pw_bn(b, name, "", in, c, k, stride, k == 3 ? 2 : 4, 2);
}

/* Build op `op` on buffer `in`; NO_BUF for `none` (contributes nothing). */
static int edge_op(builder *b, const char *prefix, int op, int in, int c, int stride) {
    char name[MD_NAME_MAX];
    join_name(name, prefix, ".");
    join_name(name, name, md_darts_op_names[op]);
    char bn[MD_NAME_MAX];
    join_name(bn, name, ".bn");
    switch (op) {
    case MD_OP_MAX_POOL_3X3: return b_bn(b, bn, b_pool(b, in, MD_POOL_MAX, stride), 0);
    case MD_OP_AVG_POOL_3X3: return b_bn(b, bn, b_pool(b, in, MD_POOL_AVG, stride), 0);
    case MD_OP_SKIP_CONNECT: return stride == 1 ? in : factorized_reduce(b, name, in, c);
    case MD_OP_SEP_CONV_3X3: return sep_conv(b, name, in, c, stride, 3);
    case MD_OP_SEP_CONV_5X5: return sep_conv(b, name, in, c, stride, 5);
    case MD_OP_DIL_CONV_3X3: return dil_conv(b, name, in, c, stride, 3);
    case MD_OP_DIL_CONV_5X5: return dil_conv(b, name, in, c, stride, 5);
    default: return NO_BUF;
    }
}

/* Node = sum of its edges; one edge is the node itself (an alias, gradients included). */
static int node_sum(builder *b, const int *terms, int n, int c, int h, int w) {
    if (n == 0) {
        int     out = new_buf(b, c, h, w);
        md_step st = step_of(MD_STEP_ZERO, NO_BUF, out);
        st.nin = 0;
        add_step(b, &st);
        return out;
    }
    if (n == 1) return terms[0];
    return b_multi(b, MD_STEP_SUM, terms, n, c);
}

static int cell(builder *b, int index, int s0, int s1, int c, int reduction, int reduction_prev,
                const int *choice) {
    int  nodes = b->net->cfg.nodes, states[2 + MD_MAX_NODES], e = 0;
    char name[MD_NAME_MAX];
    snprintf(name, sizeof name, "cell%d.pre0", index);
    states[0] = reduction_prev ? factorized_reduce(b, name, s0, c) : relu_conv_bn(b, name, s0, c);
    snprintf(name, sizeof name, "cell%d.pre1", index);
    states[1] = relu_conv_bn(b, name, s1, c);
    if (!ok(b)) return NO_BUF;
    int h = shape_of(b, states[1])->dim[2], w = shape_of(b, states[1])->dim[3];
    if (reduction) h = (h - 1) / 2 + 1, w = (w - 1) / 2 + 1;
    for (int node = 0; node < nodes; node++) {
        int terms[MD_DARTS_OPS * 18], n = 0;
        for (int j = 0; j < node + 2; j++, e++) {
            int stride = reduction && j < 2 ? 2 : 1;
            snprintf(name, sizeof name, "cell%d.edge%d", index, e);
            for (int op = 1; op < MD_DARTS_OPS; op++) {
                if (!b->declaring && op != choice[e]) continue;
                int t = edge_op(b, name, op, states[j], c, stride);
                if (t != NO_BUF) terms[n++] = t;
            }
        }
        /* Declaring, a node's shape is all that matters: the first term stands for it. */
        states[2 + node] = b->declaring ? (n ? terms[0] : NO_BUF) : node_sum(b, terms, n, c, h, w);
        if (!ok(b)) return NO_BUF;
    }
    return b_multi(b, MD_STEP_CONCAT, states + 2, nodes, nodes * c);
}

static md_status build(builder *b, const md_arch *arch) {
    const md_darts_config *cfg = &b->net->cfg;
    md_plan               *p = b->plan;
    p->input = new_buf(b, cfg->in_c, cfg->in_h, cfg->in_w);
    int x = b_conv(b, "stem.conv", p->input, 3 * cfg->channels, 3, 1, 1, 1, 1);
    x = b_bn(b, "stem.bn", x, 1);
    int s0 = x, s1 = x, c = cfg->channels, reduction_prev = 0;
    for (int i = 0; i < cfg->cells; i++) {
        int reduction = md_supernet_is_reduction(b->net, i);
        if (reduction) c *= 2;
        int out = cell(b, i, s0, s1, c, reduction, reduction_prev,
                       arch ? (reduction ? arch->reduce : arch->normal) : NULL);
        s0 = s1;
        s1 = out;
        reduction_prev = reduction;
    }
    if (!ok(b)) return b->status;
    int g = new_buf(b, shape_of(b, s1)->dim[1], 1, 1); /* [N, C] viewed as [N, C, 1, 1] */
    md_step st = step_of(MD_STEP_GAP, s1, g);
    add_step(b, &st);
    int ci = shape_of(b, s1)->dim[1], wd[2] = {cfg->classes, ci};
    st = step_of(MD_STEP_LINEAR, g, new_buf(b, cfg->classes, 1, 1));
    st.w = tensor(b, &b->net->params, "classifier.w", 2, wd);
    st.b = tensor(b, &b->net->params, "classifier.b", 1, &cfg->classes);
    add_step(b, &st);
    p->logits = st.out;
    return b->status;
}

/* ---- supernet ------------------------------------------------------------------- */

int md_supernet_is_reduction(const md_supernet *s, int cell_index) {
    return cell_index == s->cfg.cells / 3 || cell_index == 2 * s->cfg.cells / 3;
}

int md_supernet_edges(const md_supernet *s) {
    return s->cfg.nodes * (s->cfg.nodes + 3) / 2;
}

const md_darts_config *md_supernet_config(const md_supernet *s) {
    return &s->cfg;
}
md_arena *md_supernet_params(md_supernet *s) {
    return &s->params;
}
md_arena *md_supernet_grads(md_supernet *s) {
    return &s->grads;
}
md_arena *md_supernet_momentum(md_supernet *s) {
    return &s->momentum;
}
md_arena *md_supernet_stats(md_supernet *s) {
    return &s->stats;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* PyTorch's defaults: conv/linear weights and bias U(-1/sqrt(fan_in), +), BN
 * gamma 1, beta 0, running var 1. Each tensor draws from its own stream. */
static void init_weights(md_supernet *s, uint64_t seed) {
    md_rng root;
    md_rng_seed(&root, seed, 0x5eed);
    for (int i = 0; i < s->params.count; i++) {
        md_param *p = &s->params.table[i];
        float    *d = s->params.data + p->offset;
        if (ends_with(p->name, ".gamma")) {
            for (size_t j = 0; j < p->numel; j++) d[j] = 1.0f;
            continue;
        }
        if (ends_with(p->name, ".beta")) continue;
        size_t fan_in = p->ndim > 1 ? p->numel / (size_t)p->dim[0] : 0;
        if (p->ndim == 1) { /* classifier bias: fan_in of its weight */
            int w = md_arena_find(&s->params, "classifier.w");
            fan_in = w >= 0 ? (size_t)s->params.table[w].dim[1] : 1;
        }
        float  bound = 1.0f / sqrtf((float)fan_in);
        md_rng r = md_rng_split(&root, (uint64_t)i);
        for (size_t j = 0; j < p->numel; j++) d[j] = bound * (2.0f * md_rng_uniform(&r) - 1.0f);
    }
    for (int i = 0; i < s->stats.count; i++) {
        md_param *p = &s->stats.table[i];
        if (ends_with(p->name, ".running_var"))
            for (size_t j = 0; j < p->numel; j++) s->stats.data[p->offset + j] = 1.0f;
    }
}

static md_status check_config(const md_darts_config *c) {
    if (c->in_c < 1 || c->in_h < 4 || c->in_w < 4 || c->classes < 2 || c->cells < 1 ||
        c->channels < 2 || c->channels % 2 || c->nodes < 1 || c->nodes > MD_MAX_NODES)
        return md_fail(MD_ERR_ARG,
                       "supernet: bad config (input %dx%dx%d, %d classes, %d cells, C=%d, %d "
                       "nodes): need >= 4x4 images, >= 2 classes, >= 1 cell, even C >= 2, "
                       "1..6 nodes",
                       c->in_c, c->in_h, c->in_w, c->classes, c->cells, c->channels, c->nodes);
    return MD_OK;
}

static md_status shared_alloc(void *ctx, size_t bytes, void **out) {
    return md_backend_alloc_shared(ctx, bytes, out);
}

static void shared_free(void *ctx, void *p) {
    md_backend_free_shared(ctx, p);
}

md_status md_supernet_create(const md_darts_config *cfg, uint64_t seed, md_supernet **out) {
    return md_supernet_create_on(cfg, seed, NULL, out);
}

md_status md_supernet_create_on(const md_darts_config *cfg, uint64_t seed, md_backend *be,
                                md_supernet **out) {
    *out = NULL;
    MD_TRY(check_config(cfg));
    md_supernet *s = calloc(1, sizeof *s);
    if (!s) return md_fail(MD_ERR_NOMEM, "supernet");
    s->cfg = *cfg;
    md_arena_init(&s->params);
    md_arena_init(&s->stats);
    if (be) {
        md_allocator a = {shared_alloc, shared_free, be};
        s->params.alloc = a, s->stats.alloc = a;
    }
    md_plan *shape = NULL;
    md_status st = md_plan_shell(s, NULL, 1, &shape);
    if (st == MD_OK) {
        builder b = {.net = s, .plan = shape, .declaring = 1, .status = MD_OK};
        st = build(&b, NULL);
        md_plan_free_shell(shape);
    }
    if (st == MD_OK) st = md_arena_finalize(&s->params);
    if (st == MD_OK) st = md_arena_finalize(&s->stats);
    if (st == MD_OK) st = md_arena_mirror(&s->grads, &s->params);
    if (st == MD_OK) st = md_arena_mirror(&s->momentum, &s->params);
    if (st != MD_OK) {
        md_supernet_destroy(s);
        return st;
    }
    init_weights(s, seed);
    *out = s;
    return MD_OK;
}

void md_supernet_destroy(md_supernet *s) {
    if (!s) return;
    md_arena_free(&s->params);
    md_arena_free(&s->grads);
    md_arena_free(&s->momentum);
    md_arena_free(&s->stats);
    free(s);
}

md_status md_plan_create(md_supernet *s, md_backend *be, const md_arch *arch, int rows,
                         md_plan **out) {
    *out = NULL;
    int edges = md_supernet_edges(s);
    if (edges > MD_MAX_EDGES)
        return md_fail(MD_ERR_ARG, "plan: %d edges per cell (at most %d)", edges, MD_MAX_EDGES);
    for (int e = 0; e < edges; e++)
        if (arch->normal[e] < 0 || arch->normal[e] >= MD_DARTS_OPS || arch->reduce[e] < 0 ||
            arch->reduce[e] >= MD_DARTS_OPS)
            return md_fail(MD_ERR_ARG, "plan: edge %d has op %d/%d (0..%d)", e, arch->normal[e],
                           arch->reduce[e], MD_DARTS_OPS - 1);
    if (rows < 1) return md_fail(MD_ERR_ARG, "plan: %d rows", rows);
    md_plan *p = NULL;
    MD_TRY(md_plan_shell(s, be, rows, &p));
    builder   b = {.net = s, .plan = p, .declaring = 0, .status = MD_OK};
    md_status st = build(&b, arch);
    if (st == MD_OK) st = md_plan_finish(p);
    if (st != MD_OK) {
        md_plan_destroy(p);
        return st;
    }
    *out = p;
    return MD_OK;
}

/* ---- genotype ------------------------------------------------------------------- */

static size_t genes_str(char *s, size_t len, const md_gene *g, int n) {
    size_t pos = 0;
    for (int i = 0; i < n && pos < len; i++)
        pos += (size_t)snprintf(s + pos, len - pos, "%s('%s', %d)", i ? ", " : "",
                                md_darts_op_names[g[i].op], g[i].input);
    return pos < len ? pos : len;
}

md_status md_darts_genotype(const double *p_normal, const double *p_reduce, int nodes, char *str,
                            size_t len, md_gene *genes_normal, md_gene *genes_reduce) {
    md_gene gn[2 * MD_MAX_NODES], gr[2 * MD_MAX_NODES];
    if (nodes < 1 || nodes > MD_MAX_NODES) return md_fail(MD_ERR_ARG, "genotype: %d nodes", nodes);
    MD_TRY(md_derive_cell(p_normal, nodes, MD_DARTS_OPS, MD_OP_NONE, gn));
    MD_TRY(md_derive_cell(p_reduce, nodes, MD_DARTS_OPS, MD_OP_NONE, gr));
    if (genes_normal) memcpy(genes_normal, gn, (size_t)(2 * nodes) * sizeof *gn);
    if (genes_reduce) memcpy(genes_reduce, gr, (size_t)(2 * nodes) * sizeof *gr);
    size_t pos = (size_t)snprintf(str, len, "Genotype(normal=[");
    if (pos < len) pos += genes_str(str + pos, len - pos, gn, 2 * nodes);
    if (pos < len)
        pos += (size_t)snprintf(str + pos, len - pos, "], normal_concat=range(2, %d), reduce=[",
                                2 + nodes);
    if (pos < len) pos += genes_str(str + pos, len - pos, gr, 2 * nodes);
    if (pos < len) pos += (size_t)snprintf(str + pos, len - pos, "], reduce_concat=range(2, %d))",
                                           2 + nodes);
    if (pos >= len) return md_fail(MD_ERR_ARG, "genotype: string longer than %zu bytes", len);
    return MD_OK;
}
