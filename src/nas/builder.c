#include "nas/builder.h"

#include <stdlib.h>
#include <string.h>

md_status md_builder_begin(md_builder *b, md_build_mode mode, md_model *m, md_backend *be,
                           int rows) {
    memset(b, 0, sizeof *b); /* plan NULL until the shell is made */
    b->model = m, b->mode = mode;
    b->status = md_plan_shell(m, mode == MD_BUILD_EMIT ? be : NULL, rows, &b->plan);
    return b->status;
}

md_status md_builder_end(md_builder *b, md_plan **out) {
    md_status s = b->status;
    if (out) *out = NULL;
    if (b->mode != MD_BUILD_EMIT) {
        md_plan_free_shell(b->plan);
        return s;
    }
    if (s == MD_OK && b->plan->logits < 0) s = md_fail(MD_ERR_ARG, "plan: no classifier");
    if (s == MD_OK) s = md_plan_finish(b->plan);
    if (s != MD_OK) {
        md_plan_destroy(b->plan);
        return s;
    }
    *out = b->plan;
    return MD_OK;
}

int md_build_ok(const md_builder *b) {
    return b->status == MD_OK;
}

const md_tensor *md_build_shape(const md_builder *b, int buf) {
    return &b->plan->bufs[buf].act;
}

int md_build_buf(md_builder *b, int c, int h, int w) {
    if (!md_build_ok(b)) return MD_BUILD_NONE;
    int id = md_plan_add_buf(b->plan, b->plan->rows, c, h, w);
    if (id < 0) b->status = md_fail(MD_ERR_NOMEM, "plan: buffer table");
    return id;
}

static void add_step(md_builder *b, const md_step *st) {
    if (!md_build_ok(b) || b->mode != MD_BUILD_EMIT) return;
    md_step s = *st;
    s.train_only = b->train_only;
    b->status = md_plan_add_step(b->plan, &s);
}

static void count(md_builder *b, double params, double madds) {
    b->params += params, b->madds += madds;
    if (b->train_only) b->train_params += params, b->train_madds += madds;
}

enum { PARAMS, STATS };

/* Declare (or find) a tensor in the model's params or stats; returns its index
 * (-1 when counting: there is no model then). */
static int tensor(md_builder *b, int which, const char *name, int ndim, const int *dim) {
    if (!md_build_ok(b) || b->mode == MD_BUILD_COUNT) return -1;
    md_arena *arena = which == PARAMS ? &b->model->params : &b->model->stats;
    int       idx = -1;
    if (b->mode == MD_BUILD_DECLARE) {
        b->status = md_arena_add(arena, name, ndim, dim, &idx);
        return idx;
    }
    idx = md_arena_find(arena, name);
    if (idx < 0) b->status = md_fail(MD_ERR_ARG, "supernet: no tensor '%s'", name);
    return idx;
}

void md_build_name(char *dst, const char *a, const char *b) {
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

int md_build_conv(md_builder *b, const char *name, int in, int c_out, int k, int stride, int pad,
                  int dil, int groups) {
    if (!md_build_ok(b)) return MD_BUILD_NONE;
    const md_tensor *x = md_build_shape(b, in);
    md_conv_desc     d = {.n = x->dim[0], .c_in = x->dim[1], .h = x->dim[2], .w = x->dim[3],
                          .c_out = c_out, .kh = k, .kw = k, .stride = stride, .pad = pad,
                          .dilation = dil, .groups = groups};
    int              oh = 0, ow = 0;
    b->status = md_conv_out_hw(&d, &oh, &ow);
    char pname[MD_NAME_MAX];
    md_build_name(pname, name, ".w");
    int wd[4] = {c_out, d.c_in / groups, k, k};
    int w = tensor(b, PARAMS, pname, 4, wd);
    int out = md_build_buf(b, c_out, oh, ow);
    if (!md_build_ok(b)) return MD_BUILD_NONE;
    double weights = (double)c_out * (d.c_in / groups) * k * k;
    count(b, weights, weights * oh * ow);
    if (b->mode != MD_BUILD_EMIT) return out;
    md_step st = step_of(MD_STEP_CONV, in, out);
    st.w = w;
    b->status = md_conv_create(b->plan->be, &d, &st.conv);
    add_step(b, &st);
    return out;
}

int md_build_bn(md_builder *b, const char *name, int in, int affine, float eps) {
    if (!md_build_ok(b)) return MD_BUILD_NONE;
    const md_tensor *x = md_build_shape(b, in);
    int              c = x->dim[1];
    char             n1[MD_NAME_MAX], n2[MD_NAME_MAX];
    md_step          st = step_of(MD_STEP_BN, in, MD_BUILD_NONE);
    st.eps = eps;
    if (affine) {
        md_build_name(n1, name, ".gamma");
        md_build_name(n2, name, ".beta");
        st.gamma = tensor(b, PARAMS, n1, 1, &c);
        st.beta = tensor(b, PARAMS, n2, 1, &c);
        count(b, 2.0 * c, 0.0);
    }
    md_build_name(n1, name, ".running_mean");
    md_build_name(n2, name, ".running_var");
    st.rmean = tensor(b, STATS, n1, 1, &c);
    st.rvar = tensor(b, STATS, n2, 1, &c);
    st.out = md_build_buf(b, c, x->dim[2], x->dim[3]);
    add_step(b, &st);
    return st.out;
}

static int activation(md_builder *b, int in, md_step_kind kind) {
    if (!md_build_ok(b)) return MD_BUILD_NONE;
    const md_tensor *x = md_build_shape(b, in);
    int              out = md_build_buf(b, x->dim[1], x->dim[2], x->dim[3]);
    md_step          st = step_of(kind, in, out);
    add_step(b, &st);
    return out;
}

int md_build_relu(md_builder *b, int in) {
    if (!md_build_ok(b)) return MD_BUILD_NONE;
    if (b->plan->bufs[in].relu >= 0) return b->plan->bufs[in].relu;
    int out = activation(b, in, MD_STEP_RELU);
    /* One made for a training-only part does not run outside training: not shared. */
    if (md_build_ok(b) && !b->train_only) b->plan->bufs[in].relu = out;
    return out;
}

int md_build_relu6(md_builder *b, int in) {
    return activation(b, in, MD_STEP_RELU6);
}

int md_build_pool(md_builder *b, int in, md_pool_kind kind, int stride) {
    return md_build_pool_k(b, in, kind, 3, stride, 1);
}

int md_build_pool_k(md_builder *b, int in, md_pool_kind kind, int k, int stride, int pad) {
    if (!md_build_ok(b)) return MD_BUILD_NONE;
    const md_tensor *x = md_build_shape(b, in);
    int              oh = (x->dim[2] + 2 * pad - k) / stride + 1;
    int              ow = (x->dim[3] + 2 * pad - k) / stride + 1;
    if (k < 1 || stride < 1 || pad < 0 || 2 * pad > k || x->dim[2] + 2 * pad < k ||
        x->dim[3] + 2 * pad < k) {
        b->status = md_fail(MD_ERR_ARG,
                            "plan: a %dx%d pool (stride %d, padding %d) does not fit a %dx%d "
                            "input",
                            k, k, stride, pad, x->dim[2], x->dim[3]);
        return MD_BUILD_NONE;
    }
    md_step st = step_of(MD_STEP_POOL, in, MD_BUILD_NONE);
    st.pool = (md_pool_desc){.kind = kind, .k = k, .stride = stride, .pad = pad};
    st.out = md_build_buf(b, x->dim[1], oh, ow);
    add_step(b, &st);
    return st.out;
}

int md_build_noise(md_builder *b, int in, md_noise_kind kind, float rate) {
    if (!md_build_ok(b)) return MD_BUILD_NONE;
    if (!(rate >= 0.0f && rate < 1.0f)) {
        b->status = md_fail(MD_ERR_ARG, "plan: dropout probability %g must be in [0, 1)",
                            (double)rate);
        return MD_BUILD_NONE;
    }
    const md_tensor *x = md_build_shape(b, in);
    int              out = md_build_buf(b, x->dim[1], x->dim[2], x->dim[3]);
    md_step          st = step_of(MD_STEP_NOISE, in, out);
    st.noise = kind;
    st.rate = rate;
    add_step(b, &st);
    return out;
}

int md_build_multi(md_builder *b, md_step_kind kind, const int *in, int n, int c) {
    if (!md_build_ok(b)) return MD_BUILD_NONE;
    if (n > MD_STEP_MAX_IN) {
        b->status = md_fail(MD_ERR_ARG, "plan: %d inputs to one step (at most %d)", n,
                            MD_STEP_MAX_IN);
        return MD_BUILD_NONE;
    }
    const md_tensor *x = md_build_shape(b, in[0]);
    md_step          st = step_of(kind, in[0], MD_BUILD_NONE);
    memcpy(st.in, in, (size_t)n * sizeof *in);
    st.nin = n;
    st.out = md_build_buf(b, c, x->dim[2], x->dim[3]);
    add_step(b, &st);
    return st.out;
}

int md_build_slice(md_builder *b, int in) {
    if (!md_build_ok(b)) return MD_BUILD_NONE;
    const md_tensor *x = md_build_shape(b, in);
    int              out = md_build_buf(b, x->dim[1], x->dim[2] - 1, x->dim[3] - 1);
    md_step          st = step_of(MD_STEP_SLICE, in, out);
    add_step(b, &st);
    return out;
}

int md_build_zero(md_builder *b, int c, int h, int w) {
    int     out = md_build_buf(b, c, h, w);
    md_step st = step_of(MD_STEP_ZERO, MD_BUILD_NONE, out);
    st.nin = 0;
    add_step(b, &st);
    return out;
}

int md_build_classifier(md_builder *b, int in, int classes) {
    return md_build_head(b, in, classes, "classifier", 0.0f, 0, 0.0f);
}

int md_build_head(md_builder *b, int in, int classes, const char *prefix, float dropout, int aux,
                  float aux_weight) {
    if (!md_build_ok(b)) return MD_BUILD_NONE;
    int     ci = md_build_shape(b, in)->dim[1];
    int     g = md_build_buf(b, ci, 1, 1); /* [N, C] viewed as [N, C, 1, 1] */
    md_step st = step_of(MD_STEP_GAP, in, g);
    add_step(b, &st);
    if (dropout > 0.0f) g = md_build_noise(b, g, MD_NOISE_DROPOUT, dropout);
    if (!md_build_ok(b)) return MD_BUILD_NONE;
    int  wd[2] = {classes, ci};
    char wn[MD_NAME_MAX], bn[MD_NAME_MAX];
    md_build_name(wn, prefix, ".w");
    md_build_name(bn, prefix, ".b");
    st = step_of(MD_STEP_LINEAR, g, md_build_buf(b, classes, 1, 1));
    st.w = tensor(b, PARAMS, wn, 2, wd);
    st.b = tensor(b, PARAMS, bn, 1, &classes);
    count(b, (double)classes * ci + classes, (double)classes * ci);
    add_step(b, &st);
    if (!md_build_ok(b)) return MD_BUILD_NONE;
    if (aux)
        b->plan->aux = st.out, b->plan->aux_weight = aux_weight;
    else
        b->plan->logits = st.out;
    return st.out;
}
