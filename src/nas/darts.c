/* The DARTS search space (MDENAS.md): cells of 14 edges, 8 candidate ops,
 * one distribution per edge of the normal cell and one per edge of the
 * reduction cell (normal first). Built with the shared declare/emit builder,
 * so the supernet's weights and a plan's steps can never disagree. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdenas/supernet.h"
#include "nas/space_impl.h"

const char *const md_darts_op_names[MD_DARTS_OPS] = {
    "none",         "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"};

typedef struct {
    md_space        base;
    md_darts_config cfg;
    md_space_group  groups[2];
    unsigned char   allowed[2 * MD_MAX_EDGES * MD_DARTS_OPS];
} darts_space;

static const darts_space *darts_of(const md_space *s) {
    return (const darts_space *)s;
}

typedef md_builder builder;
enum { NO_BUF = MD_BUILD_NONE };
#define ok md_build_ok
#define shape_of md_build_shape
#define join_name md_build_name
#define b_conv md_build_conv
#define b_relu md_build_relu
#define b_pool md_build_pool
#define b_multi md_build_multi
#define b_slice md_build_slice
#define DARTS_BN_EPS 1e-5f

static int b_bn(builder *b, const char *name, int in, int affine) {
    return md_build_bn(b, name, in, affine, DARTS_BN_EPS);
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
    if (n == 0) return md_build_zero(b, c, h, w);
    if (n == 1) return terms[0];
    return b_multi(b, MD_STEP_SUM, terms, n, c);
}

static int cell(builder *b, const md_darts_config *cfg, int index, int s0, int s1, int c,
                int reduction, int reduction_prev, const int *choice) {
    int  declaring = b->mode == MD_BUILD_DECLARE;
    int  nodes = cfg->nodes, states[2 + MD_MAX_NODES], e = 0;
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
                if (!declaring && op != choice[e]) continue;
                int t = edge_op(b, name, op, states[j], c, stride);
                if (t != NO_BUF) terms[n++] = t;
            }
        }
        /* Declaring, a node's shape is all that matters: the first term stands for it. */
        states[2 + node] = declaring ? (n ? terms[0] : NO_BUF) : node_sum(b, terms, n, c, h, w);
        if (!ok(b)) return NO_BUF;
    }
    return b_multi(b, MD_STEP_CONCAT, states + 2, nodes, nodes * c);
}

static int is_reduction(const md_darts_config *c, int cell_index) {
    return cell_index == c->cells / 3 || cell_index == 2 * c->cells / 3;
}

static md_status build(const md_space *sp, builder *b, const int *choice) {
    const md_darts_config *cfg = &darts_of(sp)->cfg;
    int                    E = md_cell_edges(cfg->nodes);
    md_plan               *p = b->plan;
    p->input = md_build_buf(b, cfg->in_c, cfg->in_h, cfg->in_w);
    int x = b_conv(b, "stem.conv", p->input, 3 * cfg->channels, 3, 1, 1, 1, 1);
    x = b_bn(b, "stem.bn", x, 1);
    int s0 = x, s1 = x, c = cfg->channels, reduction_prev = 0;
    for (int i = 0; i < cfg->cells; i++) {
        int reduction = is_reduction(cfg, i);
        if (reduction) c *= 2;
        int out = cell(b, cfg, i, s0, s1, c, reduction, reduction_prev,
                       choice ? choice + (reduction ? E : 0) : NULL);
        s0 = s1;
        s1 = out;
        reduction_prev = reduction;
    }
    if (!ok(b)) return b->status;
    md_build_classifier(b, s1, cfg->classes);
    return b->status;
}

static void init_weights(const md_space *s, md_model *m, uint64_t seed) {
    (void)s;
    md_init_torch_default(m, seed);
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

/* ---- derivation ----------------------------------------------------------------- */

int md_cell_edges(int nodes) {
    return nodes * (nodes + 3) / 2; /* sum over i < nodes of (i + 2) */
}

md_status md_derive_cell(const double *p, int nodes, int k, int none_op, md_gene *genes) {
    if (nodes < 1 || k < 2 || none_op < -1 || none_op >= k)
        return md_fail(MD_ERR_ARG, "derive: nodes=%d k=%d none_op=%d", nodes, k, none_op);
    int first = 0;
    for (int node = 0; node < nodes; node++) {
        int    inputs = node + 2, best_op[2] = {-1, -1}, best_in[2] = {-1, -1};
        double best_p[2] = {-1.0, -1.0};
        for (int in = 0; in < inputs; in++) {
            const double *q = p + (size_t)(first + in) * k;
            int           op = -1;
            for (int o = 0; o < k; o++)
                if (o != none_op && (op < 0 || q[o] > q[op])) op = o; /* strict: lower index wins ties */
            /* Inputs come in increasing order, so a strict comparison keeps the lower input on ties. */
            if (q[op] > best_p[0]) {
                best_p[1] = best_p[0], best_op[1] = best_op[0], best_in[1] = best_in[0];
                best_p[0] = q[op], best_op[0] = op, best_in[0] = in;
            } else if (q[op] > best_p[1]) {
                best_p[1] = q[op], best_op[1] = op, best_in[1] = in;
            }
        }
        for (int t = 0; t < 2; t++) {
            genes[2 * node + t].op = best_op[t];
            genes[2 * node + t].input = best_in[t];
        }
        first += inputs;
    }
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

/* ---- the space ------------------------------------------------------------------ */

static md_status summary(const md_space *s, const double *p, char *buf, size_t len) {
    const darts_space *d = darts_of(s);
    int                E = md_cell_edges(d->cfg.nodes);
    return md_darts_genotype(p, p + (size_t)E * MD_DARTS_OPS, d->cfg.nodes, buf, len, NULL, NULL);
}

void md_darts_genotype_json(md_json *j, const char *genotype, const md_gene *normal,
                            const md_gene *reduce, int nodes) {
    md_json_begin_object(j);
    md_json_key(j, "genotype"), md_json_string(j, genotype);
    static const char *const names[2] = {"normal", "reduce"};
    const md_gene           *genes[2] = {normal, reduce};
    for (int c = 0; c < 2; c++) {
        md_json_key(j, names[c]);
        md_json_begin_array(j);
        for (int i = 0; i < 2 * nodes; i++) {
            md_json_begin_array(j);
            md_json_string(j, md_darts_op_names[genes[c][i].op]);
            md_json_int(j, genes[c][i].input);
            md_json_end_array(j);
        }
        md_json_end_array(j);
        char key[32];
        snprintf(key, sizeof key, "%s_concat", names[c]);
        md_json_key(j, key);
        md_json_begin_array(j);
        for (int i = 2; i < 2 + nodes; i++) md_json_int(j, i);
        md_json_end_array(j);
    }
    md_json_end_object(j);
}

/* genotype.json: the string, and each cell's genes as [op, input] pairs. */
static md_status export_json(const md_space *s, const double *p, md_json *j) {
    const darts_space *d = darts_of(s);
    int                nodes = d->cfg.nodes, E = md_cell_edges(nodes);
    md_gene            g[2][2 * MD_MAX_NODES];
    char               genotype[4096];
    MD_TRY(md_darts_genotype(p, p + (size_t)E * MD_DARTS_OPS, nodes, genotype, sizeof genotype,
                             g[0], g[1]));
    md_darts_genotype_json(j, genotype, g[0], g[1], nodes);
    return MD_OK;
}

static void config_json(const md_space *s, md_json *j) {
    const md_darts_config *c = &darts_of(s)->cfg;
    md_json_key(j, "space"), md_json_string(j, "darts");
    md_json_key(j, "nodes"), md_json_int(j, c->nodes);
    md_json_key(j, "edges"), md_json_int(j, md_cell_edges(c->nodes));
    md_json_key(j, "cells"), md_json_int(j, c->cells);
    md_json_key(j, "channels"), md_json_int(j, c->channels);
}

static void destroy(md_space *s) {
    free(s);
}

static const md_space_vt darts_vt = {
    .destroy = destroy,
    .build = build,
    .init_weights = init_weights,
    .summary = summary,
    .export_json = export_json,
    .write_files = NULL,
    .config_json = config_json,
};

md_status md_space_darts_create(const md_darts_config *cfg, md_space **out) {
    *out = NULL;
    MD_TRY(check_config(cfg));
    darts_space *d = calloc(1, sizeof *d);
    if (!d) return md_fail(MD_ERR_NOMEM, "darts space");
    int E = md_cell_edges(cfg->nodes);
    d->cfg = *cfg;
    d->groups[0] = (md_space_group){"normal", "normal cell", 0, E};
    d->groups[1] = (md_space_group){"reduce", "reduction cell", E, E};
    memset(d->allowed, 1, sizeof d->allowed);
    d->base.vt = &darts_vt;
    d->base.info = (md_space_info){.name = "darts", .dists = 2 * E, .k = MD_DARTS_OPS,
                                   .op_names = md_darts_op_names, .allowed = d->allowed,
                                   .groups = d->groups, .ngroups = 2};
    d->base.in_c = cfg->in_c, d->base.in_h = cfg->in_h, d->base.in_w = cfg->in_w;
    d->base.classes = cfg->classes;
    *out = &d->base;
    return MD_OK;
}

/* ---- the DARTS supernet of earlier releases: a darts space and its model ------------ */

struct md_supernet {
    md_space *space;
    md_model *model;
};

md_status md_supernet_create(const md_darts_config *cfg, uint64_t seed, md_supernet **out) {
    return md_supernet_create_on(cfg, seed, NULL, out);
}

md_status md_supernet_create_on(const md_darts_config *cfg, uint64_t seed, md_backend *be,
                                md_supernet **out) {
    *out = NULL;
    md_supernet *s = calloc(1, sizeof *s);
    if (!s) return md_fail(MD_ERR_NOMEM, "supernet");
    md_status st = md_space_darts_create(cfg, &s->space);
    if (st == MD_OK) st = md_space_model_create(s->space, seed, be, &s->model);
    if (st != MD_OK) {
        md_supernet_destroy(s);
        return st;
    }
    *out = s;
    return MD_OK;
}

void md_supernet_destroy(md_supernet *s) {
    if (!s) return;
    md_model_destroy(s->model);
    md_space_destroy(s->space);
    free(s);
}

const md_darts_config *md_supernet_config(const md_supernet *s) {
    return &darts_of(s->space)->cfg;
}
int md_supernet_edges(const md_supernet *s) {
    return md_cell_edges(md_supernet_config(s)->nodes);
}
int md_supernet_is_reduction(const md_supernet *s, int cell_index) {
    return is_reduction(md_supernet_config(s), cell_index);
}
md_space *md_supernet_space(md_supernet *s) {
    return s->space;
}
md_model *md_supernet_model(md_supernet *s) {
    return s->model;
}
md_arena *md_supernet_params(md_supernet *s) {
    return &s->model->params;
}
md_arena *md_supernet_grads(md_supernet *s) {
    return &s->model->grads;
}
md_arena *md_supernet_momentum(md_supernet *s) {
    return &s->model->momentum;
}
md_arena *md_supernet_stats(md_supernet *s) {
    return &s->model->stats;
}

md_status md_plan_create(md_supernet *s, md_backend *be, const md_arch *arch, int rows,
                         md_plan **out) {
    int E = md_supernet_edges(s), choice[2 * MD_MAX_EDGES];
    for (int e = 0; e < E; e++) choice[e] = arch->normal[e], choice[E + e] = arch->reduce[e];
    return md_space_plan(s->space, s->model, be, choice, rows, out);
}
