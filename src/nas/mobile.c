/* The mobile search space (MDENAS.md, "ImageNet, mobile setting"): the
 * ProxylessNAS GPU search supernet. A stem conv, a first MBConv block, stages
 * of searchable blocks, a feature-mix 1x1 conv, global pool, classifier;
 * ReLU6 and BN (eps 1e-3) throughout. Each searchable block is one
 * distribution over the candidate MBConv ops plus `zero` (skip the block),
 * which is masked on blocks without a residual path. Weight names follow the
 * ProxylessNAS model zoo's modules, so an export is a rename:
 * blocks.<i>.<op>.{inverted_bottleneck,depth_conv,point_linear}.{conv,bn}. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nas/space_impl.h"

typedef struct {
    int in, out, stride; /* channels in and out, stride of the block */
    int dist;            /* its distribution, -1 for the fixed first block */
    int shortcut;        /* identity shortcut: stride 1, in == out, not the first block */
} block_shape;

typedef struct {
    md_space         base;
    md_mobile_config cfg;
    int              stem, feature_mix; /* scaled widths */
    int              nblocks;
    block_shape      blocks[MD_MOBILE_MAX_BLOCKS];
    char             names[MD_MOBILE_MAX_CANDIDATES][24];
    const char      *op_names[MD_MOBILE_MAX_CANDIDATES];
    unsigned char   *allowed;
    md_space_group   group;
} mobile_space;

static const mobile_space *mobile_of(const md_space *s) {
    return (const mobile_space *)s;
}

/* ProxylessNAS's make_divisible(v, 8): nearest multiple of 8, never 10% below v. */
static int divisible8(double v) {
    int n = (int)(v + 4.0) / 8 * 8;
    if (n < 8) n = 8;
    if (n < 0.9 * v) n += 8;
    return n;
}

void md_mobile_config_default(md_mobile_config *c) {
    memset(c, 0, sizeof *c);
    c->stem = 32;
    c->first = (md_mbconv){3, 1};
    c->first_width = 16;
    static const int w[6] = {24, 40, 80, 96, 192, 320}, n[6] = {4, 4, 4, 4, 4, 1},
                     st[6] = {2, 2, 2, 1, 2, 1};
    c->nstages = 6;
    for (int i = 0; i < 6; i++) c->width[i] = w[i], c->blocks[i] = n[i], c->stride[i] = st[i];
    c->feature_mix = 1280;
    c->width_mult = 1.0;
    static const md_mbconv cand[7] = {{3, 3}, {3, 6}, {5, 3}, {5, 6}, {7, 3}, {7, 6}, {0, 0}};
    c->ncand = 7;
    memcpy(c->cand, cand, sizeof cand);
    c->bn_eps = 1e-3;
}

md_status md_mbconv_parse(const char *name, md_mbconv *out) {
    if (!strcmp(name, "zero")) {
        *out = (md_mbconv){0, 0};
        return MD_OK;
    }
    int  k1 = 0, k2 = 0, e = 0, used = 0;
    if (sscanf(name, "%dx%d_MBConv%d%n", &k1, &k2, &e, &used) != 3 || name[used] || k1 != k2 ||
        k1 < 1 || k1 > 15 || k1 % 2 == 0 || e < 1 || e > 16)
        return md_fail(MD_ERR_ARG, "op '%s': use KxK_MBConvE with odd K <= 15 and E in 1..16, "
                                   "or zero", name);
    char canon[32];
    snprintf(canon, sizeof canon, "%dx%d_MBConv%d", k1, k1, e);
    if (strcmp(canon, name))
        return md_fail(MD_ERR_ARG, "op '%s': write it as %s", name, canon);
    *out = (md_mbconv){k1, e};
    return MD_OK;
}

static void op_name(const md_mbconv *m, char *buf, size_t len) {
    if (!m->expand) snprintf(buf, len, "zero");
    else snprintf(buf, len, "%dx%d_MBConv%d", m->kernel, m->kernel, m->expand);
}

/* ---- the network --------------------------------------------------------------------- */

/* ConvLayer of ProxylessNAS: conv (no bias) + BN + ReLU6. */
static int conv_bn_act(md_builder *b, const char *name, int in, int c_out, int k, int stride,
                       float eps) {
    char n[MD_NAME_MAX];
    md_build_name(n, name, ".conv");
    int x = md_build_conv(b, n, in, c_out, k, stride, k / 2, 1, 1);
    md_build_name(n, name, ".bn");
    return md_build_relu6(b, md_build_bn(b, n, x, 1, eps));
}

/* MBInvertedConvLayer: [1x1 expand + BN + ReLU6], depthwise kxk + BN + ReLU6,
 * 1x1 project + BN. */
static int mbconv(md_builder *b, const char *name, int in, const block_shape *bs,
                  const md_mbconv *op, float eps) {
    char n[MD_NAME_MAX], m[MD_NAME_MAX];
    int  x = in, mid = bs->in * op->expand;
    if (op->expand != 1) {
        md_build_name(n, name, ".inverted_bottleneck");
        x = conv_bn_act(b, n, x, mid, 1, 1, eps);
    }
    md_build_name(n, name, ".depth_conv");
    md_build_name(m, n, ".conv");
    x = md_build_conv(b, m, x, mid, op->kernel, bs->stride, op->kernel / 2, 1, mid);
    md_build_name(m, n, ".bn");
    x = md_build_relu6(b, md_build_bn(b, m, x, 1, eps));
    md_build_name(n, name, ".point_linear");
    md_build_name(m, n, ".conv");
    x = md_build_conv(b, m, x, bs->out, 1, 1, 0, 1, 1);
    md_build_name(m, n, ".bn");
    return md_build_bn(b, m, x, 1, eps);
}


/* One block: op `op` (zero: the input itself), with the shortcut where the shapes allow. */
static int block(md_builder *b, int index, int in, const block_shape *bs, const md_mbconv *op,
                 float eps) {
    if (!op->expand) return in; /* ZeroLayer + IdentityLayer shortcut */
    char name[MD_NAME_MAX], opn[24];
    op_name(op, opn, sizeof opn);
    snprintf(name, sizeof name, "blocks.%d.%s", index, opn);
    int y = mbconv(b, name, in, bs, op, eps);
    if (!bs->shortcut || !md_build_ok(b)) return y;
    int terms[2] = {y, in};
    return md_build_multi(b, MD_STEP_SUM, terms, 2, bs->out);
}

static md_status build(const md_space *sp, md_builder *b, const int *choice) {
    const mobile_space *s = mobile_of(sp);
    const md_mobile_config *c = &s->cfg;
    float               eps = (float)c->bn_eps;
    md_plan            *p = b->plan;
    p->input = md_build_buf(b, sp->in_c, sp->in_h, sp->in_w);
    int x = conv_bn_act(b, "first_conv", p->input, s->stem, 3, 2, eps);
    for (int i = 0; i < s->nblocks && md_build_ok(b); i++) {
        const block_shape *bs = &s->blocks[i];
        if (bs->dist < 0) {
            x = block(b, i, x, bs, &c->first, eps);
            continue;
        }
        if (choice) {
            x = block(b, i, x, bs, &c->cand[choice[bs->dist]], eps);
            continue;
        }
        /* Declaring: every candidate of the block reads x; the next block's input
         * has the shape of any non-zero candidate's output. */
        int next = x;
        for (int k = 0; k < c->ncand; k++)
            if (c->cand[k].expand && s->allowed[(size_t)bs->dist * c->ncand + k])
                next = block(b, i, x, bs, &c->cand[k], eps);
        x = next;
    }
    if (s->feature_mix) x = conv_bn_act(b, "feature_mix_layer", x, s->feature_mix, 1, 1, eps);
    md_build_head(b, x, sp->classes, "classifier", (float)c->dropout, 0, 0.0f);
    return b->status;
}

/* ProxylessNAS's init: conv weights N(0, sqrt(2 / (k*k*C_out))) ("he_fout"),
 * BN gamma 1 and beta 0, the classifier U(-1/sqrt(in), +) with bias 0. */
static void init_weights(const md_space *s, md_model *m, uint64_t seed) {
    (void)s;
    md_rng root;
    md_rng_seed(&root, seed, 0x6d6f62);
    for (int i = 0; i < m->params.count; i++) {
        md_param *p = &m->params.table[i];
        float    *d = m->params.data + p->offset;
        md_rng    r = md_rng_split(&root, (uint64_t)i);
        if (md_name_ends_with(p->name, ".gamma"))
            for (size_t j = 0; j < p->numel; j++) d[j] = 1.0f;
        else if (p->ndim == 4) {
            float sd = sqrtf(2.0f / (float)(p->dim[0] * p->dim[2] * p->dim[3]));
            for (size_t j = 0; j < p->numel; j++) d[j] = sd * md_rng_normal(&r);
        } else if (p->ndim == 2) {
            float bound = 1.0f / sqrtf((float)p->dim[1]);
            for (size_t j = 0; j < p->numel; j++) d[j] = bound * (2.0f * md_rng_uniform(&r) - 1.0f);
        } else
            memset(d, 0, p->numel * sizeof *d); /* BN beta, the classifier bias */
    }
    md_init_bn_stats(m);
}

/* ---- derive and export ---------------------------------------------------------------- */

static md_status summary(const md_space *sp, const double *p, char *buf, size_t len) {
    const mobile_space *s = mobile_of(sp);
    int                 choice[MD_MOBILE_MAX_BLOCKS];
    md_space_argmax(sp, p, choice);
    size_t pos = (size_t)snprintf(buf, len, "MobileNet(blocks=[");
    for (int d = 0; d < sp->info.dists && pos < len; d++)
        pos += (size_t)snprintf(buf + pos, len - pos, "%s'%s'", d ? ", " : "",
                                s->op_names[choice[d]]);
    if (pos < len) pos += (size_t)snprintf(buf + pos, len - pos, "])");
    if (pos >= len) return md_fail(MD_ERR_ARG, "mobile: summary longer than %zu bytes", len);
    return MD_OK;
}

/* The fields every ProxylessNAS layer config ends with. */
static void layer_tail_json(md_json *j, int use_bn, const char *act) {
    md_json_key(j, "use_bn"), md_json_bool(j, use_bn);
    md_json_key(j, "act_func");
    if (act) md_json_string(j, act);
    else md_json_null(j);
    md_json_key(j, "dropout_rate"), md_json_int(j, 0);
    md_json_key(j, "ops_order"), md_json_string(j, "weight_bn_act");
}

static void conv_layer_json(md_json *j, int in, int out, int k, int stride) {
    md_json_begin_object(j);
    md_json_key(j, "name"), md_json_string(j, "ConvLayer");
    md_json_key(j, "kernel_size"), md_json_int(j, k);
    md_json_key(j, "stride"), md_json_int(j, stride);
    md_json_key(j, "dilation"), md_json_int(j, 1);
    md_json_key(j, "groups"), md_json_int(j, 1);
    md_json_key(j, "bias"), md_json_bool(j, 0);
    md_json_key(j, "has_shuffle"), md_json_bool(j, 0);
    md_json_key(j, "in_channels"), md_json_int(j, in);
    md_json_key(j, "out_channels"), md_json_int(j, out);
    layer_tail_json(j, 1, "relu6");
    md_json_end_object(j);
}

static void block_json(md_json *j, const block_shape *bs, const md_mbconv *op) {
    md_json_begin_object(j);
    md_json_key(j, "name"), md_json_string(j, "MobileInvertedResidualBlock");
    md_json_key(j, "mobile_inverted_conv");
    md_json_begin_object(j);
    if (op->expand) {
        md_json_key(j, "name"), md_json_string(j, "MBInvertedConvLayer");
        md_json_key(j, "in_channels"), md_json_int(j, bs->in);
        md_json_key(j, "out_channels"), md_json_int(j, bs->out);
        md_json_key(j, "kernel_size"), md_json_int(j, op->kernel);
        md_json_key(j, "stride"), md_json_int(j, bs->stride);
        md_json_key(j, "expand_ratio"), md_json_int(j, op->expand);
    } else {
        md_json_key(j, "name"), md_json_string(j, "ZeroLayer");
        md_json_key(j, "stride"), md_json_int(j, bs->stride);
    }
    md_json_end_object(j);
    md_json_key(j, "shortcut");
    if (!bs->shortcut) md_json_null(j);
    else {
        md_json_begin_object(j);
        md_json_key(j, "name"), md_json_string(j, "IdentityLayer");
        md_json_key(j, "in_channels"), md_json_int(j, bs->in);
        md_json_key(j, "out_channels"), md_json_int(j, bs->out);
        layer_tail_json(j, 0, NULL);
        md_json_end_object(j);
    }
    md_json_end_object(j);
}

/* The derived network in the ProxylessNAS model-zoo layout. */
static void net_config_json(const mobile_space *s, const int *choice, md_json *j) {
    const md_space *sp = &s->base;
    int             last = s->blocks[s->nblocks - 1].out;
    md_json_begin_object(j);
    md_json_key(j, "name"), md_json_string(j, "ProxylessNASNets");
    md_json_key(j, "bn");
    md_json_begin_object(j);
    md_json_key(j, "momentum"), md_json_double(j, 0.1);
    md_json_key(j, "eps"), md_json_double(j, s->cfg.bn_eps);
    md_json_end_object(j);
    md_json_key(j, "first_conv"), conv_layer_json(j, sp->in_c, s->stem, 3, 2);
    md_json_key(j, "blocks");
    md_json_begin_array(j);
    for (int i = 0; i < s->nblocks; i++) {
        const block_shape *bs = &s->blocks[i];
        block_json(j, bs, bs->dist < 0 ? &s->cfg.first : &s->cfg.cand[choice[bs->dist]]);
    }
    md_json_end_array(j);
    md_json_key(j, "feature_mix_layer");
    if (s->feature_mix) conv_layer_json(j, last, s->feature_mix, 1, 1);
    else md_json_null(j);
    md_json_key(j, "classifier");
    md_json_begin_object(j);
    md_json_key(j, "name"), md_json_string(j, "LinearLayer");
    md_json_key(j, "in_features"), md_json_int(j, s->feature_mix ? s->feature_mix : last);
    md_json_key(j, "out_features"), md_json_int(j, sp->classes);
    md_json_key(j, "bias"), md_json_bool(j, 1);
    layer_tail_json(j, 0, NULL);
    md_json_end_object(j);
    md_json_end_object(j);
}

/* genotype.json: the ops per block, the network's size at 224x224 (and at the
 * searched input), and the net config. */
static md_status export_json(const md_space *sp, const double *p, md_json *j) {
    const mobile_space *s = mobile_of(sp);
    int                 choice[MD_MOBILE_MAX_BLOCKS];
    char                line[4096];
    md_space_argmax(sp, p, choice);
    MD_TRY(summary(sp, p, line, sizeof line));
    double params = 0, madds = 0, params224 = 0, madds224 = 0;
    MD_TRY(md_space_count(sp, choice, &params, &madds));
    mobile_space at224 = *s; /* the same network on 3x224x224 */
    at224.base.in_c = 3, at224.base.in_h = at224.base.in_w = 224;
    MD_TRY(md_space_count(&at224.base, choice, &params224, &madds224));
    md_json_begin_object(j);
    md_json_key(j, "genotype"), md_json_string(j, line);
    md_json_key(j, "blocks");
    md_json_begin_array(j);
    for (int d = 0; d < sp->info.dists; d++) md_json_string(j, s->op_names[choice[d]]);
    md_json_end_array(j);
    md_json_key(j, "params"), md_json_double(j, params);
    md_json_key(j, "madds"), md_json_double(j, madds);
    md_json_key(j, "input"), md_json_int(j, sp->in_h);
    md_json_key(j, "params_224"), md_json_double(j, params224);
    md_json_key(j, "madds_224"), md_json_double(j, madds224);
    md_json_key(j, "net_config"), net_config_json(s, choice, j);
    md_json_end_object(j);
    return MD_OK;
}

/* net.config: what the ProxylessNAS model zoo's builder loads. */
static md_status write_files(const md_space *sp, const double *p, const char *dir) {
    int choice[MD_MOBILE_MAX_BLOCKS];
    md_space_argmax(sp, p, choice);
    md_json j;
    md_json_init(&j);
    net_config_json(mobile_of(sp), choice, &j);
    char path[700];
    snprintf(path, sizeof path, "%s/net.config", dir);
    md_status st = md_json_write_file(&j, path);
    md_json_free(&j);
    return st;
}

static void config_json(const md_space *sp, md_json *j) {
    const md_mobile_config *c = &mobile_of(sp)->cfg;
    char                    n[24];
    md_json_key(j, "space"), md_json_string(j, "mobile");
    md_json_key(j, "input");
    md_json_begin_array(j);
    md_json_int(j, sp->in_c), md_json_int(j, sp->in_h), md_json_int(j, sp->in_w);
    md_json_end_array(j);
    md_json_key(j, "classes"), md_json_int(j, sp->classes);
    md_json_key(j, "stem"), md_json_int(j, c->stem);
    op_name(&c->first, n, sizeof n);
    md_json_key(j, "first"), md_json_string(j, n);
    md_json_key(j, "first_width"), md_json_int(j, c->first_width);
    md_json_key(j, "first_searchable"), md_json_bool(j, c->first_searchable);
    md_json_key(j, "stages");
    md_json_begin_array(j);
    for (int i = 0; i < c->nstages; i++) {
        md_json_begin_object(j);
        md_json_key(j, "width"), md_json_int(j, c->width[i]);
        md_json_key(j, "blocks"), md_json_int(j, c->blocks[i]);
        md_json_key(j, "stride"), md_json_int(j, c->stride[i]);
        md_json_end_object(j);
    }
    md_json_end_array(j);
    md_json_key(j, "feature_mix"), md_json_int(j, c->feature_mix);
    md_json_key(j, "width_mult"), md_json_double(j, c->width_mult);
    if (c->exact_widths) md_json_key(j, "exact_widths"), md_json_bool(j, 1);
    /* A network being trained (absent from a search's record, as before). */
    if (c->dropout > 0) md_json_key(j, "dropout"), md_json_double(j, c->dropout);
    if (c->nfixed) {
        md_json_key(j, "fixed");
        md_json_begin_array(j);
        for (int d = 0; d < c->nfixed; d++) md_json_int(j, c->fixed[d]);
        md_json_end_array(j);
    }
    md_json_key(j, "candidates");
    md_json_begin_array(j);
    for (int k = 0; k < c->ncand; k++) {
        op_name(&c->cand[k], n, sizeof n);
        md_json_string(j, n);
    }
    md_json_end_array(j);
    md_json_key(j, "bn_eps"), md_json_double(j, c->bn_eps);
}

/* ---- configuration --------------------------------------------------------------------- */

static md_status get_int(const md_jvalue *o, const char *key, const char *what, int lo, int hi,
                         int *out) {
    const md_jvalue *v = md_json_get(o, key);
    if (!v) return MD_OK;
    if (v->type == MD_JBOOL && lo == 0 && hi == 1) {
        *out = v->num != 0;
        return MD_OK;
    }
    if (v->type != MD_JNUM || v->num != floor(v->num) || v->num < lo || v->num > hi)
        return md_fail(MD_ERR_DATA, "%s: '%s' must be an integer in %d..%d", what, key, lo, hi);
    *out = (int)v->num;
    return MD_OK;
}

static md_status get_op(const md_jvalue *v, const char *what, const char *key, md_mbconv *out) {
    if (!v || v->type != MD_JSTR)
        return md_fail(MD_ERR_DATA, "%s: '%s' must hold op names such as \"5x5_MBConv6\"", what,
                       key);
    if (md_mbconv_parse(v->str, out) != MD_OK)
        return md_fail(MD_ERR_DATA, "%s: '%s': %s", what, key, md_error_message());
    return MD_OK;
}

static const char *const file_keys[] = {"space",       "stem",   "first",     "first_width",
                                        "first_searchable", "stages", "feature_mix",
                                        "candidates",  "bn_eps"};
static const char *const run_keys[] = {"input", "classes", "width_mult", "exact_widths"};
static const char *const state_keys[] = {"format", "ops",   "periods", "genotype",
                                         "edges",  "fixed", "dropout"};

static int listed(const char *key, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(key, list[i])) return 1;
    return 0;
}

#define LISTED(key, list) listed(key, list, sizeof list / sizeof *list)

md_status md_mobile_config_parse(const md_jvalue *o, const char *what, int user,
                                 md_mobile_config *c) {
    if (!o || o->type != MD_JOBJ) return md_fail(MD_ERR_DATA, "%s: not a JSON object", what);
    for (int i = 0; i < o->count; i++) {
        const char *k = o->keys[i];
        int         ok = LISTED(k, file_keys) ||
                 (!user && (LISTED(k, run_keys) || LISTED(k, state_keys) || !strncmp(k, "p_", 2) ||
                            !strncmp(k, "he_", 3)));
        if (!ok && user && LISTED(k, run_keys))
            return md_fail(MD_ERR_DATA, "%s: '%s' comes from the data or the options (--width-mult), "
                                        "not from a space file", what, k);
        if (!ok)
            return md_fail(MD_ERR_DATA, "%s: unknown key '%s' (known: stem, first, first_width, "
                                        "first_searchable, stages, feature_mix, candidates, "
                                        "bn_eps)", what, k);
    }
    const md_jvalue *sp = md_json_get(o, "space");
    if (sp && (sp->type != MD_JSTR || strcmp(sp->str, "mobile")))
        return md_fail(MD_ERR_DATA, "%s: 'space' must be \"mobile\"", what);
    MD_TRY(get_int(o, "exact_widths", what, 0, 1, &c->exact_widths));
    const md_jvalue *fx = md_json_get(o, "fixed"), *dr = md_json_get(o, "dropout");
    if (dr && (dr->type != MD_JNUM || !(dr->num >= 0 && dr->num < 1)))
        return md_fail(MD_ERR_DATA, "%s: 'dropout' must be a number in [0, 1)", what);
    if (dr) c->dropout = dr->num;
    if (fx) {
        if (fx->type != MD_JARR || fx->count < 1 || fx->count > MD_MOBILE_MAX_BLOCKS)
            return md_fail(MD_ERR_DATA, "%s: 'fixed' must be an array of 1..%d candidate indices",
                           what, MD_MOBILE_MAX_BLOCKS);
        for (int i = 0; i < fx->count; i++) {
            const md_jvalue *e = &fx->items[i];
            if (e->type != MD_JNUM || e->num != (double)(int)e->num || e->num < 0 ||
                e->num >= MD_MOBILE_MAX_CANDIDATES)
                return md_fail(MD_ERR_DATA, "%s: fixed[%d] is not a candidate index", what, i);
            c->fixed[i] = (int)e->num;
        }
        c->nfixed = fx->count;
    }
    MD_TRY(get_int(o, "stem", what, 1, 4096, &c->stem));
    MD_TRY(get_int(o, "first_width", what, 1, 4096, &c->first_width));
    MD_TRY(get_int(o, "first_searchable", what, 0, 1, &c->first_searchable));
    MD_TRY(get_int(o, "feature_mix", what, 0, 16384, &c->feature_mix));
    MD_TRY(get_int(o, "classes", what, 2, 1 << 20, &c->classes));
    const md_jvalue *v = md_json_get(o, "first");
    if (v) MD_TRY(get_op(v, what, "first", &c->first));
    if ((v = md_json_get(o, "width_mult"))) {
        if (v->type != MD_JNUM) return md_fail(MD_ERR_DATA, "%s: 'width_mult' must be a number", what);
        c->width_mult = v->num;
    }
    if ((v = md_json_get(o, "bn_eps"))) {
        if (v->type != MD_JNUM || !(v->num > 0 && v->num < 1))
            return md_fail(MD_ERR_DATA, "%s: 'bn_eps' must be a number in (0, 1)", what);
        c->bn_eps = v->num;
    }
    if ((v = md_json_get(o, "input"))) {
        if (v->type != MD_JARR || v->count != 3)
            return md_fail(MD_ERR_DATA, "%s: 'input' must be [channels, height, width]", what);
        int *dst[3] = {&c->in_c, &c->in_h, &c->in_w};
        for (int i = 0; i < 3; i++) {
            if (v->items[i].type != MD_JNUM || v->items[i].num < 1 || v->items[i].num > 8192 ||
                v->items[i].num != floor(v->items[i].num))
                return md_fail(MD_ERR_DATA, "%s: 'input' entries must be integers 1..8192", what);
            *dst[i] = (int)v->items[i].num;
        }
    }
    if ((v = md_json_get(o, "stages"))) {
        if (v->type != MD_JARR || v->count < 1 || v->count > MD_MOBILE_MAX_STAGES)
            return md_fail(MD_ERR_DATA, "%s: 'stages' must be an array of 1..%d objects", what,
                           MD_MOBILE_MAX_STAGES);
        c->nstages = v->count;
        for (int i = 0; i < v->count; i++) {
            const md_jvalue *st = &v->items[i];
            char             w[96];
            snprintf(w, sizeof w, "%s: stages[%d]", what, i);
            if (st->type != MD_JOBJ) return md_fail(MD_ERR_DATA, "%s is not an object", w);
            for (int k = 0; k < st->count; k++)
                if (strcmp(st->keys[k], "width") && strcmp(st->keys[k], "blocks") &&
                    strcmp(st->keys[k], "stride"))
                    return md_fail(MD_ERR_DATA, "%s: unknown key '%s' (width, blocks, stride)", w,
                                   st->keys[k]);
            c->width[i] = c->blocks[i] = 0, c->stride[i] = 1;
            MD_TRY(get_int(st, "width", w, 1, 8192, &c->width[i]));
            MD_TRY(get_int(st, "blocks", w, 1, MD_MOBILE_MAX_BLOCKS, &c->blocks[i]));
            MD_TRY(get_int(st, "stride", w, 1, 2, &c->stride[i]));
            if (!c->width[i] || !c->blocks[i])
                return md_fail(MD_ERR_DATA, "%s needs 'width' and 'blocks'", w);
        }
    }
    if ((v = md_json_get(o, "candidates"))) {
        if (v->type != MD_JARR || v->count < 1 || v->count > MD_MOBILE_MAX_CANDIDATES)
            return md_fail(MD_ERR_DATA, "%s: 'candidates' must be an array of 1..%d op names",
                           what, MD_MOBILE_MAX_CANDIDATES);
        c->ncand = v->count;
        for (int i = 0; i < v->count; i++) MD_TRY(get_op(&v->items[i], what, "candidates", &c->cand[i]));
    }
    return MD_OK;
}

static md_status check_config(const md_mobile_config *c) {
    if (c->in_c < 1 || c->in_h < 8 || c->in_w < 8 || c->classes < 2)
        return md_fail(MD_ERR_ARG, "mobile space: input %dx%dx%d with %d classes (need >= 8x8 "
                                   "images and >= 2 classes)", c->in_c, c->in_h, c->in_w,
                       c->classes);
    if (c->ncand < 2)
        return md_fail(MD_ERR_ARG, "mobile space: %d candidate op(s); a distribution needs at "
                                   "least 2 (--candidates)", c->ncand);
    for (int i = 0; i < c->ncand; i++)
        for (int j = 0; j < i; j++)
            if (c->cand[i].kernel == c->cand[j].kernel && c->cand[i].expand == c->cand[j].expand)
                return md_fail(MD_ERR_ARG, "mobile space: candidate %d repeats candidate %d", i, j);
    if (!c->first.expand)
        return md_fail(MD_ERR_ARG, "mobile space: the first block cannot be zero");
    if (c->first.kernel < 1 || c->first.kernel % 2 == 0)
        return md_fail(MD_ERR_ARG, "mobile space: the first block's kernel must be odd");
    if (c->nstages < 1 || c->nstages > MD_MOBILE_MAX_STAGES)
        return md_fail(MD_ERR_ARG, "mobile space: %d stages (1..%d)", c->nstages,
                       MD_MOBILE_MAX_STAGES);
    if (!(c->width_mult >= 0.05 && c->width_mult <= 8) || !(c->bn_eps > 0 && c->bn_eps < 1))
        return md_fail(MD_ERR_ARG, "mobile space: width multiplier %g, BN eps %g", c->width_mult,
                       c->bn_eps);
    return MD_OK;
}

/* Arena name -> ProxylessNAS state_dict name: .w -> .weight, .gamma -> .weight,
 * .beta -> .bias, a block's chosen op -> mobile_inverted_conv, the classifier's
 * linear module; other candidates are not part of the network. */
static int reference_name(const md_space *sp, const int *choice, const char *name, char *out,
                          size_t len) {
    const mobile_space *s = mobile_of(sp);
    char                head[MD_NAME_MAX] = "", op[32] = "";
    const char         *rest = name;
    int                 index = -1, used = 0;
    if (sscanf(name, "blocks.%d.%31[^.].%n", &index, op, &used) == 2 && used > 0) {
        if (index < 0 || index >= s->nblocks) return 0;
        const block_shape *bs = &s->blocks[index];
        char               want[32];
        op_name(bs->dist < 0 ? &s->cfg.first : &s->cfg.cand[choice[bs->dist]], want, sizeof want);
        if (strcmp(op, want)) return 0;
        snprintf(head, sizeof head, "blocks.%d.mobile_inverted_conv.", index);
        rest = name + used;
    } else if (!strcmp(name, "classifier.w") || !strcmp(name, "classifier.b")) {
        snprintf(out, len, "classifier.linear.%s", name[11] == 'w' ? "weight" : "bias");
        return 1;
    }
    size_t      n = strlen(rest);
    const char *suffix = "";
    if (md_name_ends_with(rest, ".w")) n -= 2, suffix = ".weight";
    else if (md_name_ends_with(rest, ".gamma")) n -= 6, suffix = ".weight";
    else if (md_name_ends_with(rest, ".beta")) n -= 5, suffix = ".bias";
    snprintf(out, len, "%s%.*s%s", head, (int)n, rest, suffix);
    return 1;
}

static void destroy(md_space *s) {
    mobile_space *m = (mobile_space *)s;
    free(m->allowed);
    free(m);
}

static const md_space_vt mobile_vt = {
    .destroy = destroy,
    .build = build,
    .init_weights = init_weights,
    .summary = summary,
    .export_json = export_json,
    .write_files = write_files,
    .config_json = config_json,
    .reference_name = reference_name,
};

md_status md_space_mobile_create(const md_mobile_config *cfg, md_space **out) {
    *out = NULL;
    MD_TRY(check_config(cfg));
    mobile_space *s = calloc(1, sizeof *s);
    if (!s) return md_fail(MD_ERR_NOMEM, "mobile space");
    s->cfg = *cfg;
    double mult = cfg->width_mult;
#define WIDTH(v) (cfg->exact_widths ? (v) : divisible8((v) * mult))
    s->stem = WIDTH(cfg->stem);
    /* ProxylessNAS keeps the feature mix at its width below multiplier 1. */
    s->feature_mix = cfg->feature_mix && mult > 1.0 && !cfg->exact_widths
                         ? divisible8(cfg->feature_mix * mult)
                         : cfg->feature_mix;
    int in = s->stem, dists = 0, n = 0;
    s->blocks[n++] = (block_shape){in, WIDTH(cfg->first_width), 1,
                                   cfg->first_searchable ? dists++ : -1, 0};
    in = s->blocks[0].out;
    for (int st = 0; st < cfg->nstages; st++)
        for (int b = 0; b < cfg->blocks[st]; b++) {
            if (n == MD_MOBILE_MAX_BLOCKS) {
                free(s);
                return md_fail(MD_ERR_ARG, "mobile space: more than %d blocks",
                               MD_MOBILE_MAX_BLOCKS);
            }
            int outc = WIDTH(cfg->width[st]);
            int stride = b == 0 ? cfg->stride[st] : 1;
            s->blocks[n++] = (block_shape){in, outc, stride, dists++, stride == 1 && in == outc};
            in = outc;
        }
    s->nblocks = n;
    s->allowed = calloc((size_t)(dists ? dists : 1) * cfg->ncand, 1);
    if (!s->allowed) {
        free(s);
        return md_fail(MD_ERR_NOMEM, "mobile space");
    }
    for (int k = 0; k < cfg->ncand; k++) {
        op_name(&cfg->cand[k], s->names[k], sizeof s->names[k]);
        s->op_names[k] = s->names[k];
    }
    for (int i = 0; i < n; i++) {
        const block_shape *bs = &s->blocks[i];
        if (bs->dist < 0) continue;
        int live = 0;
        for (int k = 0; k < cfg->ncand; k++) {
            /* zero only where the block has a residual path (and not the first block) */
            int ok = cfg->cand[k].expand || bs->shortcut;
            s->allowed[(size_t)bs->dist * cfg->ncand + k] = (unsigned char)ok;
            live += ok;
        }
        if (!live) {
            md_status st = md_fail(MD_ERR_ARG, "mobile space: block %d (stride %d, %d -> %d "
                                               "channels) has no candidate but zero, which needs "
                                               "a shortcut", i, bs->stride, bs->in, bs->out);
            destroy(&s->base);
            return st;
        }
    }
    if (!dists) {
        destroy(&s->base);
        return md_fail(MD_ERR_ARG, "mobile space: no searchable block");
    }
    if (cfg->nfixed) { /* a fixed network: each block's one candidate */
        if (cfg->nfixed != dists) {
            destroy(&s->base);
            return md_fail(MD_ERR_ARG, "mobile network: %d fixed choices for %d blocks",
                           cfg->nfixed, dists);
        }
        for (int d = 0; d < dists; d++) {
            int k = cfg->fixed[d];
            if (k < 0 || k >= cfg->ncand || !s->allowed[(size_t)d * cfg->ncand + k]) {
                destroy(&s->base);
                return md_fail(MD_ERR_ARG, "mobile network: block choice %d of distribution %d "
                                           "is not one of its candidates", k, d);
            }
            memset(s->allowed + (size_t)d * cfg->ncand, 0, (size_t)cfg->ncand);
            s->allowed[(size_t)d * cfg->ncand + k] = 1;
        }
    }
    s->group = (md_space_group){"blocks", "searchable blocks", 0, dists};
    s->base.vt = &mobile_vt;
    s->base.info = (md_space_info){.name = "mobile", .dists = dists, .k = cfg->ncand,
                                   .op_names = s->op_names, .allowed = s->allowed,
                                   .groups = &s->group, .ngroups = 1};
    s->base.in_c = cfg->in_c, s->base.in_h = cfg->in_h, s->base.in_w = cfg->in_w;
    s->base.classes = cfg->classes;
    *out = &s->base;
    return MD_OK;
}

/* ---- a released net as a space of one architecture ----------------------------------------- */

static int jint(const md_jvalue *o, const char *key) {
    const md_jvalue *v = o ? md_json_get(o, key) : NULL;
    return v && v->type == MD_JNUM && v->num == floor(v->num) && fabs(v->num) < 1e9 ? (int)v->num
                                                                                     : -1;
}

md_status md_mobile_from_net_config(const md_jvalue *net, const char *what, int in_side,
                                    md_mobile_config *c, int *choice, int *nchoice) {
    md_mobile_config_default(c);
    c->nstages = 0, c->ncand = 0;
    c->exact_widths = 1; /* the net's own widths, multiples of 8 or not */
    const md_jvalue *fc = md_json_get(net, "first_conv"), *bl = md_json_get(net, "blocks"),
                    *fm = md_json_get(net, "feature_mix_layer"),
                    *cl = md_json_get(net, "classifier"), *bn = md_json_get(net, "bn");
    if (!fc || !bl || bl->type != MD_JARR || bl->count < 2 || !cl)
        return md_fail(MD_ERR_DATA, "%s: not a ProxylessNAS net config (needs first_conv, "
                                    "blocks, classifier)", what);
    if (bl->count - 1 > MD_MOBILE_MAX_STAGES)
        return md_fail(MD_ERR_DATA, "%s: %d blocks (at most %d)", what, bl->count,
                       MD_MOBILE_MAX_STAGES + 1);
    c->in_c = jint(fc, "in_channels"), c->in_h = c->in_w = in_side;
    c->stem = jint(fc, "out_channels");
    c->classes = jint(cl, "out_features");
    c->feature_mix = fm && fm->type == MD_JOBJ ? jint(fm, "out_channels") : 0;
    const md_jvalue *eps = bn ? md_json_get(bn, "eps") : NULL;
    if (eps && eps->type == MD_JNUM) c->bn_eps = eps->num;
    int in = c->stem;
    for (int i = 0; i < bl->count; i++) {
        const md_jvalue *mc = md_json_get(&bl->items[i], "mobile_inverted_conv");
        const md_jvalue *nm = mc ? md_json_get(mc, "name") : NULL;
        if (!nm || nm->type != MD_JSTR)
            return md_fail(MD_ERR_DATA, "%s: blocks[%d] has no mobile_inverted_conv name", what, i);
        md_mbconv op = {0, 0};
        int       outc = in, stride = jint(mc, "stride");
        if (!strcmp(nm->str, "MBInvertedConvLayer")) {
            op = (md_mbconv){jint(mc, "kernel_size"), jint(mc, "expand_ratio")};
            outc = jint(mc, "out_channels");
            if (jint(mc, "in_channels") != in || op.kernel < 1 || op.expand < 1 || outc < 1)
                return md_fail(MD_ERR_DATA, "%s: blocks[%d]: bad or inconsistent channels, "
                                            "kernel or expand ratio", what, i);
        } else if (strcmp(nm->str, "ZeroLayer"))
            return md_fail(MD_ERR_DATA, "%s: blocks[%d] is a %s (MBInvertedConvLayer or "
                                        "ZeroLayer expected)", what, i, nm->str);
        if (stride != 1 && stride != 2)
            return md_fail(MD_ERR_DATA, "%s: blocks[%d]: stride %d", what, i, stride);
        if (i == 0) {
            if (!op.expand) return md_fail(MD_ERR_DATA, "%s: the first block is zero", what);
            c->first = op, c->first_width = outc;
            if (stride != 1)
                return md_fail(MD_ERR_DATA, "%s: the first block must have stride 1", what);
            in = outc;
            continue;
        }
        int k = 0;
        while (k < c->ncand && (c->cand[k].kernel != op.kernel || c->cand[k].expand != op.expand))
            k++;
        if (k == c->ncand) {
            if (c->ncand == MD_MOBILE_MAX_CANDIDATES)
                return md_fail(MD_ERR_DATA, "%s: more than %d kinds of block", what,
                               MD_MOBILE_MAX_CANDIDATES);
            c->cand[c->ncand++] = op;
        }
        int st = c->nstages++;
        c->width[st] = outc, c->blocks[st] = 1, c->stride[st] = stride;
        choice[i - 1] = k;
        in = outc;
    }
    *nchoice = bl->count - 1;
    /* zero (if absent) is a candidate too, so every block of the space has one */
    int has_zero = 0;
    for (int k = 0; k < c->ncand; k++) has_zero |= !c->cand[k].expand;
    if (!has_zero && c->ncand < MD_MOBILE_MAX_CANDIDATES) c->cand[c->ncand++] = (md_mbconv){0, 0};
    if (c->in_c < 1 || c->stem < 1 || c->classes < 2)
        return md_fail(MD_ERR_DATA, "%s: first_conv in/out channels or classifier out_features "
                                    "missing", what);
    return MD_OK;
}
