/* The DARTS evaluation network of a genotype (NetworkCIFAR of quark0/darts
 * cnn/model.py), built with the shared builder so that training runs on the
 * same plans, backends and loops as the search. Its weights carry DARTS's
 * state_dict names, with this project's suffixes (.w, .gamma, .beta, .b) that
 * reference_name turns into PyTorch's: the export is a suffix rewrite.
 *
 * Differences from the search network (MDENAS.md): every BN is affine, pools
 * have no BN, a node sums the two ops of its genes, drop-path scales every op
 * output but the identity, the auxiliary head (training only) follows the cell
 * at 2/3 depth, dropout comes before the classifier. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mdenas/supernet.h"
#include "nas/space_impl.h"

#define GENES (2 * MD_DARTS_NET_MAX_NODES)

typedef struct {
    md_space            base;
    md_darts_net_config cfg;
    md_space_group      groups[2];
    unsigned char       allowed[2 * GENES * MD_DARTS_OPS];
} net_space;

static const net_space *net_of(const md_space *s) {
    return (const net_space *)s;
}

typedef md_builder builder;
enum { NO_BUF = MD_BUILD_NONE };

static int bn(builder *b, const char *prefix, const char *part, int in) {
    char n[MD_NAME_MAX];
    md_build_name(n, prefix, part);
    return md_build_bn(b, n, in, 1, 1e-5f);
}

static int conv(builder *b, const char *prefix, const char *part, int in, int c_out, int k,
                int stride, int pad, int dil, int groups) {
    char n[MD_NAME_MAX];
    md_build_name(n, prefix, part);
    return md_build_conv(b, n, in, c_out, k, stride, pad, dil, groups);
}

/* ReLUConvBN(C_in, C_out, 1, 1, 0): op.1 the conv, op.2 the BN. */
static int relu_conv_bn(builder *b, const char *prefix, int in, int c_out) {
    int x = conv(b, prefix, ".op.1", md_build_relu(b, in), c_out, 1, 1, 0, 1, 1);
    return bn(b, prefix, ".op.2", x);
}

/* FactorizedReduce: conv_1 on relu(x), conv_2 on relu(x)[:, :, 1:, 1:], concat, bn. */
static int factorized_reduce(builder *b, const char *prefix, int in, int c_out) {
    if (!md_build_ok(b)) return NO_BUF;
    const md_tensor *x = md_build_shape(b, in);
    if (c_out % 2 || x->dim[2] % 2 || x->dim[3] % 2) {
        b->status = md_fail(MD_ERR_ARG,
                            "%s: FactorizedReduce needs an even channel count and even H, W "
                            "(got %d channels at %dx%d)",
                            prefix, c_out, x->dim[2], x->dim[3]);
        return NO_BUF;
    }
    int r = md_build_relu(b, in), parts[2];
    parts[0] = conv(b, prefix, ".conv_1", r, c_out / 2, 1, 2, 0, 1, 1);
    parts[1] = conv(b, prefix, ".conv_2", md_build_slice(b, r), c_out / 2, 1, 2, 0, 1, 1);
    return bn(b, prefix, ".bn", md_build_multi(b, MD_STEP_CONCAT, parts, 2, c_out));
}

/* SepConv: op = [ReLU, dw, pw, BN, ReLU, dw, pw, BN]; DilConv: [ReLU, dw, pw, BN]. */
static int sep_conv(builder *b, const char *prefix, int in, int c, int stride, int k) {
    int x = conv(b, prefix, ".op.1", md_build_relu(b, in), c, k, stride, k / 2, 1, c);
    x = bn(b, prefix, ".op.3", conv(b, prefix, ".op.2", x, c, 1, 1, 0, 1, 1));
    x = conv(b, prefix, ".op.5", md_build_relu(b, x), c, k, 1, k / 2, 1, c);
    return bn(b, prefix, ".op.7", conv(b, prefix, ".op.6", x, c, 1, 1, 0, 1, 1));
}

static int dil_conv(builder *b, const char *prefix, int in, int c, int stride, int k) {
    int x = conv(b, prefix, ".op.1", md_build_relu(b, in), c, k, stride, k == 3 ? 2 : 4, 2, c);
    return bn(b, prefix, ".op.3", conv(b, prefix, ".op.2", x, c, 1, 1, 0, 1, 1));
}

/* One gene's op on `in`; *identity = 1 for skip_connect at stride 1 (no drop-path). */
static int gene_op(builder *b, const char *prefix, int op, int in, int c, int stride,
                   int *identity) {
    *identity = 0;
    if (!md_build_ok(b)) return NO_BUF;
    const md_tensor *x = md_build_shape(b, in);
    switch (op) {
    case MD_OP_NONE:
        return md_build_zero(b, c, (x->dim[2] - 1) / stride + 1, (x->dim[3] - 1) / stride + 1);
    case MD_OP_MAX_POOL_3X3: return md_build_pool(b, in, MD_POOL_MAX, stride);
    case MD_OP_AVG_POOL_3X3: return md_build_pool(b, in, MD_POOL_AVG, stride);
    case MD_OP_SKIP_CONNECT:
        if (stride == 1) {
            *identity = 1;
            return in;
        }
        return factorized_reduce(b, prefix, in, c);
    case MD_OP_SEP_CONV_3X3: return sep_conv(b, prefix, in, c, stride, 3);
    case MD_OP_SEP_CONV_5X5: return sep_conv(b, prefix, in, c, stride, 5);
    case MD_OP_DIL_CONV_3X3: return dil_conv(b, prefix, in, c, stride, 3);
    case MD_OP_DIL_CONV_5X5: return dil_conv(b, prefix, in, c, stride, 5);
    default:
        b->status = md_fail(MD_ERR_ARG, "%s: unknown op %d", prefix, op);
        return NO_BUF;
    }
}

static int cell(builder *b, const md_darts_net_config *cfg, int index, int s0, int s1, int c,
                int reduction, int reduction_prev) {
    int  nodes = cfg->net.nodes, states[2 + MD_DARTS_NET_MAX_NODES];
    char prefix[MD_NAME_MAX];
    snprintf(prefix, sizeof prefix, "cells.%d.preprocess0", index);
    states[0] = reduction_prev ? factorized_reduce(b, prefix, s0, c) : relu_conv_bn(b, prefix, s0, c);
    snprintf(prefix, sizeof prefix, "cells.%d.preprocess1", index);
    states[1] = relu_conv_bn(b, prefix, s1, c);
    for (int node = 0; node < nodes; node++) {
        int terms[2];
        for (int t = 0; t < 2; t++) {
            const int *g = cfg->gene[reduction][2 * node + t];
            int        identity, stride = reduction && g[1] < 2 ? 2 : 1;
            snprintf(prefix, sizeof prefix, "cells.%d._ops.%d", index, 2 * node + t);
            int x = gene_op(b, prefix, g[0], states[g[1]], c, stride, &identity);
            terms[t] = identity ? x : md_build_noise(b, x, MD_NOISE_DROP_PATH, 0.0f);
        }
        states[2 + node] = md_build_multi(b, MD_STEP_SUM, terms, 2, c);
        if (!md_build_ok(b)) return NO_BUF;
    }
    return md_build_multi(b, MD_STEP_CONCAT, states + 2, nodes, nodes * c);
}

/* AuxiliaryHeadCIFAR: ReLU, 5x5 average pool stride 3 (no padding), 1x1 conv to
 * 128 + BN + ReLU, 2x2 conv to 768 + BN + ReLU, linear; for an 8x8 map (32x32
 * images). Training only. */
static void aux_head(builder *b, const md_darts_net_config *cfg, int in) {
    if (!md_build_ok(b)) return;
    const md_tensor *x = md_build_shape(b, in);
    int              h = x->dim[2], w = x->dim[3];
    if (h < 5 || w < 5 || (h - 5) / 3 + 1 != 2 || (w - 5) / 3 + 1 != 2) {
        b->status = md_fail(MD_ERR_ARG,
                            "the auxiliary head needs an 8x8 map after cell %d (32x32 images), "
                            "this network has %dx%d there: turn it off (--aux-weight 0)",
                            2 * cfg->net.cells / 3, h, w);
        return;
    }
    if (2 * cfg->net.cells / 3 == cfg->net.cells - 1) {
        /* DARTS's head begins with an in-place ReLU, which the classifier of a
         * network that ends at that cell would see in training only. */
        b->status = md_fail(MD_ERR_ARG, "the auxiliary head needs at least 4 cells (it follows "
                                        "cell %d of %d): add cells or turn it off (--aux-weight 0)",
                            2 * cfg->net.cells / 3, cfg->net.cells);
        return;
    }
    b->train_only = 1;
    const char *f = "auxiliary_head.features";
    int         y = md_build_pool_k(b, md_build_relu(b, in), MD_POOL_AVG, 5, 3, 0);
    y = md_build_relu(b, bn(b, f, ".3", conv(b, f, ".2", y, 128, 1, 1, 0, 1, 1)));
    y = md_build_relu(b, bn(b, f, ".6", conv(b, f, ".5", y, 768, 2, 1, 0, 1, 1)));
    md_build_head(b, y, cfg->net.classes, "auxiliary_head.classifier", 0.0f, 1, cfg->aux_weight);
    b->train_only = 0;
}

static md_status build(const md_space *sp, builder *b, const int *choice) {
    (void)choice; /* the network is the genotype: check_choice allowed nothing else */
    const md_darts_net_config *cfg = &net_of(sp)->cfg;
    md_plan                   *p = b->plan;
    p->input = md_build_buf(b, cfg->net.in_c, cfg->net.in_h, cfg->net.in_w);
    int x = md_build_conv(b, "stem.0", p->input, 3 * cfg->net.channels, 3, 1, 1, 1, 1);
    x = md_build_bn(b, "stem.1", x, 1, 1e-5f);
    int s0 = x, s1 = x, c = cfg->net.channels, reduction_prev = 0;
    for (int i = 0; i < cfg->net.cells; i++) {
        int reduction = i == cfg->net.cells / 3 || i == 2 * cfg->net.cells / 3;
        if (reduction) c *= 2;
        int out = cell(b, cfg, i, s0, s1, c, reduction, reduction_prev);
        s0 = s1, s1 = out, reduction_prev = reduction;
        if (i == 2 * cfg->net.cells / 3 && cfg->auxiliary) aux_head(b, cfg, s1);
    }
    md_build_head(b, s1, cfg->net.classes, "classifier", cfg->dropout, 0, 0.0f);
    return b->status;
}

static void init_weights(const md_space *s, md_model *m, uint64_t seed) {
    (void)s;
    md_init_torch_default(m, seed);
}

/* ---- genotypes ------------------------------------------------------------------- */

static const char *const published[][2] = {
    {"mdenas",
     "Genotype(normal=[('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('skip_connect', 0), "
     "('sep_conv_5x5', 1), ('sep_conv_5x5', 3), ('sep_conv_3x3', 1), ('dil_conv_5x5', 3), "
     "('max_pool_3x3', 4)], normal_concat=range(2, 6), reduce=[('max_pool_3x3', 0), "
     "('sep_conv_5x5', 1), ('skip_connect', 0), ('skip_connect', 1), ('sep_conv_3x3', 3), "
     "('skip_connect', 2), ('dil_conv_3x3', 3), ('sep_conv_5x5', 0)], reduce_concat=range(2, 6))"},
    {"darts_v2",
     "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
     "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
     "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
     "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
     "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"},
};

typedef struct {
    const char *s, *what;
} cursor;

static void skip_ws(cursor *c) {
    while (isspace((unsigned char)*c->s)) c->s++;
}

static int eat(cursor *c, const char *tok) {
    skip_ws(c);
    size_t n = strlen(tok);
    if (strncmp(c->s, tok, n)) return 0;
    c->s += n;
    return 1;
}

static md_status expect(cursor *c, const char *tok) {
    if (eat(c, tok)) return MD_OK;
    return md_fail(MD_ERR_ARG, "%s: not a DARTS genotype: expected \"%s\" at \"%.24s\"", c->what,
                   tok, c->s);
}

static md_status read_int(cursor *c, int *v) {
    skip_ws(c);
    char *end;
    long  x = strtol(c->s, &end, 10);
    if (end == c->s || x < 0 || x > 1000)
        return md_fail(MD_ERR_ARG, "%s: expected a small non-negative integer at \"%.24s\"",
                       c->what, c->s);
    c->s = end, *v = (int)x;
    return MD_OK;
}

/* [('op', input), ...] */
static md_status read_genes(cursor *c, int genes[][2], int *n) {
    *n = 0;
    MD_TRY(expect(c, "["));
    if (eat(c, "]")) return MD_OK;
    do {
        if (*n == GENES)
            return md_fail(MD_ERR_ARG, "%s: more than %d genes in a cell (at most %d nodes)",
                           c->what, GENES, MD_DARTS_NET_MAX_NODES);
        MD_TRY(expect(c, "("));
        skip_ws(c);
        char q = *c->s;
        if (q != '\'' && q != '"')
            return md_fail(MD_ERR_ARG, "%s: expected a quoted op name at \"%.24s\"", c->what, c->s);
        const char *name = ++c->s, *end = strchr(name, q);
        if (!end) return md_fail(MD_ERR_ARG, "%s: unterminated op name", c->what);
        int op = -1;
        for (int k = 0; k < MD_DARTS_OPS; k++)
            if (strlen(md_darts_op_names[k]) == (size_t)(end - name) &&
                !strncmp(name, md_darts_op_names[k], (size_t)(end - name)))
                op = k;
        if (op < 0)
            return md_fail(MD_ERR_ARG, "%s: '%.*s' is not a DARTS op (none, max_pool_3x3, "
                                       "avg_pool_3x3, skip_connect, sep_conv_3x3, sep_conv_5x5, "
                                       "dil_conv_3x3, dil_conv_5x5)",
                           c->what, (int)(end - name), name);
        c->s = end + 1;
        MD_TRY(expect(c, ","));
        MD_TRY(read_int(c, &genes[*n][1]));
        genes[*n][0] = op;
        (*n)++;
        MD_TRY(expect(c, ")"));
    } while (eat(c, ","));
    return expect(c, "]");
}

/* range(2, n) or [2, 3, ...]: the nodes whose concat is the cell output. */
static md_status read_concat(cursor *c, int nodes) {
    int lo = 0, hi = 0;
    if (eat(c, "range")) {
        MD_TRY(expect(c, "("));
        MD_TRY(read_int(c, &lo));
        MD_TRY(expect(c, ","));
        MD_TRY(read_int(c, &hi));
        MD_TRY(expect(c, ")"));
    } else {
        MD_TRY(expect(c, "["));
        MD_TRY(read_int(c, &lo));
        hi = lo + 1;
        while (eat(c, ",")) {
            int v = 0;
            MD_TRY(read_int(c, &v));
            if (v != hi) hi = -1000;
            else hi++;
        }
        MD_TRY(expect(c, "]"));
    }
    if (lo != 2 || hi != 2 + nodes)
        return md_fail(MD_ERR_ARG, "%s: the concat must be every intermediate node, range(2, %d)",
                       c->what, 2 + nodes);
    return MD_OK;
}

md_status md_darts_genotype_parse(const char *text, const char *what, md_darts_net_config *cfg) {
    cursor c = {text, what};
    skip_ws(&c);
    for (size_t i = 0; i < sizeof published / sizeof *published; i++) {
        size_t n = strlen(published[i][0]);
        if (strncasecmp(c.s, published[i][0], n)) continue; /* stops at text's end */
        const char *rest = c.s + n;
        while (isspace((unsigned char)*rest)) rest++;
        if (!*rest) {
            c.s = published[i][1];
            break;
        }
    }
    int genes[2][GENES][2], count[2];
    static const char *const names[2] = {"normal", "reduce"};
    if (strncmp(c.s, "Genotype", 8))
        return md_fail(MD_ERR_ARG, "%s: '%.40s' is not a DARTS genotype: give a "
                                   "Genotype(normal=[...], ...) string or a published cell "
                                   "(mdenas, darts_v2)", what, c.s);
    MD_TRY(expect(&c, "Genotype"));
    MD_TRY(expect(&c, "("));
    for (int t = 0; t < 2; t++) {
        if (t) MD_TRY(expect(&c, ","));
        MD_TRY(expect(&c, names[t]));
        MD_TRY(expect(&c, "="));
        MD_TRY(read_genes(&c, genes[t], &count[t]));
        if (count[t] < 2 || count[t] % 2)
            return md_fail(MD_ERR_ARG, "%s: the %s cell has %d genes: a cell needs two per node",
                           what, names[t], count[t]);
        MD_TRY(expect(&c, ","));
        MD_TRY(expect(&c, names[t]));
        MD_TRY(expect(&c, "_concat"));
        MD_TRY(expect(&c, "="));
        MD_TRY(read_concat(&c, count[t] / 2));
    }
    MD_TRY(expect(&c, ")"));
    skip_ws(&c);
    if (*c.s) return md_fail(MD_ERR_ARG, "%s: text after the genotype: \"%.24s\"", what, c.s);
    if (count[0] != count[1])
        return md_fail(MD_ERR_ARG, "%s: the normal cell has %d genes, the reduction cell %d", what,
                       count[0], count[1]);
    for (int t = 0; t < 2; t++)
        for (int g = 0; g < count[t]; g++)
            if (genes[t][g][1] >= g / 2 + 2)
                return md_fail(MD_ERR_ARG,
                               "%s: gene %d of the %s cell takes input %d, but node %d can only "
                               "take 0..%d (the cell inputs and earlier nodes)",
                               what, g, names[t], genes[t][g][1], g / 2, g / 2 + 1);
    cfg->net.nodes = count[0] / 2;
    memcpy(cfg->gene, genes, sizeof genes);
    return MD_OK;
}

static size_t genotype_string(const md_darts_net_config *c, char *buf, size_t len) {
    size_t pos = 0;
    static const char *const names[2] = {"normal", "reduce"};
#define PUT(...) (pos += pos < len ? (size_t)snprintf(buf + pos, len - pos, __VA_ARGS__) : 0)
    PUT("Genotype(");
    for (int t = 0; t < 2; t++) {
        PUT("%s%s=[", t ? ", " : "", names[t]);
        for (int g = 0; g < 2 * c->net.nodes; g++)
            PUT("%s('%s', %d)", g ? ", " : "", md_darts_op_names[c->gene[t][g][0]], c->gene[t][g][1]);
        PUT("], %s_concat=range(2, %d)", names[t], 2 + c->net.nodes);
    }
    PUT(")");
#undef PUT
    return pos;
}

md_status md_darts_genotype_format(const md_darts_net_config *c, char *buf, size_t len) {
    if (genotype_string(c, buf, len) >= len)
        return md_fail(MD_ERR_ARG, "genotype: longer than %zu bytes", len);
    return MD_OK;
}

void md_darts_genotype_random(uint64_t seed, int nodes, md_darts_net_config *c) {
    md_rng r;
    md_rng_seed(&r, seed, 0x7a4d0);
    if (nodes < 1) nodes = 1;
    if (nodes > MD_DARTS_NET_MAX_NODES) nodes = MD_DARTS_NET_MAX_NODES;
    c->net.nodes = nodes;
    for (int t = 0; t < 2; t++)
        for (int node = 0; node < nodes; node++) {
            int n = node + 2, a = (int)(md_rng_u32(&r) % (uint32_t)n);
            int b = (int)(md_rng_u32(&r) % (uint32_t)(n - 1));
            b += b >= a; /* distinct from a */
            int in[2] = {a < b ? a : b, a < b ? b : a};
            for (int k = 0; k < 2; k++) {
                c->gene[t][2 * node + k][0] = 1 + (int)(md_rng_u32(&r) % (MD_DARTS_OPS - 1));
                c->gene[t][2 * node + k][1] = in[k];
            }
        }
}

/* ---- the space ------------------------------------------------------------------- */

static md_status summary(const md_space *s, const double *p, char *buf, size_t len) {
    (void)p;
    return md_darts_genotype_format(&net_of(s)->cfg, buf, len);
}

static md_status export_json(const md_space *s, const double *p, md_json *j) {
    const md_darts_net_config *c = &net_of(s)->cfg;
    char                       g[4096];
    md_gene                    genes[2][GENES];
    MD_TRY(summary(s, p, g, sizeof g));
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < 2 * c->net.nodes; i++)
            genes[t][i] = (md_gene){.op = c->gene[t][i][0], .input = c->gene[t][i][1]};
    md_darts_genotype_json(j, g, genes[0], genes[1], c->net.nodes);
    return MD_OK;
}

static void config_json(const md_space *s, md_json *j) {
    const md_darts_net_config *c = &net_of(s)->cfg;
    char                       g[4096];
    genotype_string(c, g, sizeof g);
    md_json_key(j, "space"), md_json_string(j, "darts_net");
    md_json_key(j, "genotype"), md_json_string(j, g);
    md_json_key(j, "nodes"), md_json_int(j, c->net.nodes);
    md_json_key(j, "cells"), md_json_int(j, c->net.cells);
    md_json_key(j, "channels"), md_json_int(j, c->net.channels);
    md_json_key(j, "auxiliary"), md_json_bool(j, c->auxiliary);
    md_json_key(j, "aux_weight"), md_json_double(j, c->aux_weight);
    md_json_key(j, "dropout"), md_json_double(j, c->dropout);
}

/* DARTS's names: a suffix rewrite of this project's. */
static int reference_name(const md_space *s, const int *choice, const char *name, char *out,
                          size_t len) {
    (void)s, (void)choice;
    static const char *const map[][2] = {
        {".w", ".weight"}, {".gamma", ".weight"}, {".beta", ".bias"}, {".b", ".bias"}};
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (md_name_ends_with(name, map[i][0])) {
            snprintf(out, len, "%.*s%s", (int)(strlen(name) - strlen(map[i][0])), name, map[i][1]);
            return 1;
        }
    snprintf(out, len, "%s", name); /* running_mean, running_var */
    return 1;
}

static void destroy(md_space *s) {
    free(s);
}

static const md_space_vt net_vt = {
    .destroy = destroy,
    .build = build,
    .init_weights = init_weights,
    .summary = summary,
    .export_json = export_json,
    .write_files = NULL,
    .config_json = config_json,
    .reference_name = reference_name,
};

md_status md_space_darts_net_create(const md_darts_net_config *cfg, md_space **out) {
    *out = NULL;
    const md_darts_config *n = &cfg->net;
    if (n->in_c < 1 || n->in_h < 4 || n->in_w < 4 || n->classes < 2 || n->cells < 1 ||
        n->cells > 256 || n->channels < 2 || n->channels % 2 || n->nodes < 1 ||
        n->nodes > MD_DARTS_NET_MAX_NODES)
        return md_fail(MD_ERR_ARG,
                       "DARTS network: bad config (input %dx%dx%d, %d classes, %d cells, C=%d, "
                       "%d nodes): need >= 4x4 images, >= 2 classes, 1..256 cells, even C >= 2",
                       n->in_c, n->in_h, n->in_w, n->classes, n->cells, n->channels, n->nodes);
    if (!(cfg->aux_weight >= 0.0f && cfg->aux_weight <= 100.0f) ||
        !(cfg->dropout >= 0.0f && cfg->dropout < 1.0f))
        return md_fail(MD_ERR_ARG, "DARTS network: auxiliary weight %g (0..100), dropout %g "
                                   "([0, 1))", (double)cfg->aux_weight, (double)cfg->dropout);
    net_space *s = calloc(1, sizeof *s);
    if (!s) return md_fail(MD_ERR_NOMEM, "DARTS network");
    s->cfg = *cfg;
    int G = 2 * n->nodes;
    for (int t = 0; t < 2; t++)
        for (int g = 0; g < G; g++) {
            int op = cfg->gene[t][g][0], in = cfg->gene[t][g][1];
            if (op < 0 || op >= MD_DARTS_OPS || in < 0 || in >= g / 2 + 2) {
                free(s);
                return md_fail(MD_ERR_ARG, "DARTS network: gene %d of cell type %d is (%d, %d)",
                               g, t, op, in);
            }
            s->allowed[(size_t)(t * G + g) * MD_DARTS_OPS + op] = 1;
        }
    s->groups[0] = (md_space_group){"normal", "normal cell", 0, G};
    s->groups[1] = (md_space_group){"reduce", "reduction cell", G, G};
    s->base.vt = &net_vt;
    s->base.info = (md_space_info){.name = "darts_net", .dists = 2 * G, .k = MD_DARTS_OPS,
                                   .op_names = md_darts_op_names, .allowed = s->allowed,
                                   .groups = s->groups, .ngroups = 2};
    s->base.in_c = n->in_c, s->base.in_h = n->in_h, s->base.in_w = n->in_w;
    s->base.classes = n->classes;
    /* A bad shape (an odd map at a reduction, the auxiliary head's size) fails here,
     * not at the first plan. */
    md_builder b;
    md_status  st = md_builder_begin(&b, MD_BUILD_COUNT, NULL, NULL, 1);
    if (st == MD_OK) st = build(&s->base, &b, NULL);
    if (b.plan) md_builder_end(&b, NULL);
    if (st != MD_OK) {
        free(s);
        return st;
    }
    *out = &s->base;
    return MD_OK;
}

md_status md_darts_net_count(const md_darts_net_config *c, double *params, double *params_no_aux,
                             double *madds) {
    md_space *s = NULL;
    MD_TRY(md_space_darts_net_create(c, &s));
    md_builder b;
    md_status  st = md_builder_begin(&b, MD_BUILD_COUNT, NULL, NULL, 1);
    if (st == MD_OK) st = build(s, &b, NULL);
    if (b.plan) md_builder_end(&b, NULL);
    md_space_destroy(s);
    *params = b.params, *params_no_aux = b.params - b.train_params;
    *madds = b.madds - b.train_madds;
    return st;
}
