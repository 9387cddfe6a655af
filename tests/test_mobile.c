/* The mobile search space against independent references:
 *  - the supernet's parameter table, a sampled network's logits, loss (label
 *    smoothing 0.1) and every weight gradient, and the loss after one SGD step
 *    with Nesterov momentum and no decay on BN, against PyTorch
 *    (tests/gen_fixture_mobile.py);
 *  - masks: zero only on blocks with a shortcut; never sampled; p stays 0
 *    under both update rules;
 *  - the counter against ProxylessNAS-GPU's published size (its released net
 *    config, tests/fixtures/proxyless_gpu.config: 7.12 M / 465 M);
 *  - derive/export round trip through the net config layout.
 * With a second argument DIR it also writes DIR/net.config, DIR/weights.safetensors
 * (ProxylessNAS names), DIR/input.bin and DIR/logits.bin (eval mode), which
 * tests/mobile_export_check.py feeds to tests/proxyless_ref.py. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "mdenas/mdl.h"
#include "mdenas/space.h"
#include "testutil.h"

/* Largest difference over the largest reference value, floored at 1e-3: the
 * beta of a BN whose output reaches the loss only through another training-mode
 * BN has a gradient that is 0 in exact arithmetic (the next BN removes a
 * per-channel shift), ~1e-8 in float in either code; the other gradients here
 * are 4e-3 .. 1e-1. */
static double rel_err(const float *a, const float *b, size_t n) {
    return md_max_rel_err(a, b, n, 1e-3);
}

static md_mobile_config fixture_config(const md_fixture *fx, int *rows) {
    const md_fx_tensor *c = md_fixture_need(fx, "cfg");
    md_mobile_config    m;
    md_mobile_config_default(&m);
    m.in_c = md_fx_int(c, 0), m.in_h = m.in_w = md_fx_int(c, 1), m.classes = md_fx_int(c, 2);
    *rows = md_fx_int(c, 3);
    m.stem = md_fx_int(c, 4), m.first_width = md_fx_int(c, 5), m.feature_mix = md_fx_int(c, 6);
    m.nstages = md_fx_int(c, 7);
    for (int i = 0; i < m.nstages; i++)
        m.width[i] = md_fx_int(c, 8 + 3 * i), m.blocks[i] = md_fx_int(c, 9 + 3 * i),
        m.stride[i] = md_fx_int(c, 10 + 3 * i);
    return m;
}

/* Every tensor PyTorch declares, with its shape, and no other. */
static void check_table(const md_fixture *fx, const md_model *m) {
    int n = 0;
    for (int i = 0; i < fx->count; i++) {
        if (strncmp(fx->t[i].name, "t/", 2)) continue;
        n++;
        int idx = md_arena_find(&m->params, fx->t[i].name + 2);
        CHECK(idx >= 0, "supernet lacks %s", fx->t[i].name + 2);
        if (idx < 0) continue;
        const md_param *p = &m->params.table[idx];
        int             same = p->ndim == (int)fx->t[i].numel;
        for (int k = 0; same && k < p->ndim; k++) same = p->dim[k] == md_fx_int(&fx->t[i], k);
        CHECK(same, "%s has another shape than PyTorch's", p->name);
    }
    CHECK(n == m->params.count, "supernet has %d weight tensors, PyTorch %d", m->params.count, n);
    printf("supernet: %d weight tensors (%zu floats) as PyTorch declares them\n", n,
           m->params.numel);
}

static void check_network(md_fixture *fx, const md_space *sp, md_model *m, md_backend *be,
                          int rows, const int *arch) {
    for (int i = 0; i < fx->count; i++) {
        if (strncmp(fx->t[i].name, "w/", 2)) continue;
        int idx = md_arena_find(&m->params, fx->t[i].name + 2);
        CHECK(idx >= 0 && m->params.table[idx].numel == fx->t[i].numel, "weight %s",
              fx->t[i].name + 2);
        if (idx >= 0 && m->params.table[idx].numel == fx->t[i].numel)
            memcpy(m->params.data + m->params.table[idx].offset, fx->t[i].data, fx->t[i].numel * 4);
    }
    md_plan *plan = NULL;
    CHECK_OK(md_space_plan(sp, m, be, arch, rows, &plan));
    if (!plan) return;
    md_tensor x = md_fx_upload(be, md_fixture_need(fx, "x"));
    int32_t  *labels = md_fx_upload_labels(be, md_fixture_need(fx, "labels"));
    float     out[2] = {0, 0};
    CHECK_OK(md_plan_zero_grads(plan));
    CHECK_OK(md_plan_forward(plan, x.data, MD_MODE_TRAIN));
    CHECK_OK(md_plan_loss_dev_smoothed(plan, labels, 0.1f, out));
    CHECK_OK(md_plan_backward(plan));
    double want = md_fx_value(md_fixture_need(fx, "loss"), 0);
    CHECK(fabs(out[0] - want) < 1e-5 * fabs(want), "loss %.8f, PyTorch %.8f", out[0], want);
    const md_fx_tensor *lg = md_fixture_need(fx, "logits");
    double worst = 0;
    for (int i = 0; i < fx->count; i++) {
        if (strncmp(fx->t[i].name, "g/", 2)) continue;
        int idx = md_arena_find(&m->grads, fx->t[i].name + 2);
        if (idx < 0) continue;
        double e = rel_err(m->grads.data + m->grads.table[idx].offset, fx->t[i].data,
                           fx->t[i].numel);
        worst = fmax(worst, e);
        CHECK(e < 2e-4, "gradient of %s: relative error %.3g", fx->t[i].name + 2, e);
    }
    float *z = malloc(lg->numel * 4);
    CHECK_OK(md_plan_logits(plan, z, lg->numel));
    double le = rel_err(z, lg->data, lg->numel);
    CHECK(le < 1e-5, "logits: relative error %.3g", le);
    free(z);
    printf("sampled network: loss %.6f (PyTorch %.6f), worst gradient error %.3g\n", out[0], want,
           worst);
    /* A candidate that was not sampled gets no gradient. */
    int   ip = md_arena_find(&m->grads, "blocks.1.7x7_MBConv6.depth_conv.conv.w");
    float mass = 0;
    CHECK(ip >= 0, "blocks.1.7x7_MBConv6 missing");
    for (size_t j = 0; ip >= 0 && j < m->grads.table[ip].numel; j++)
        mass += fabsf(m->grads.data[m->grads.table[ip].offset + j]);
    CHECK(mass == 0.0f, "an unsampled candidate has gradient mass %g", mass);

    /* SGD, Nesterov momentum 0.9, weight decay 4e-5 except on BN gamma/beta. */
    for (int bn = 0; bn < 2; bn++) {
        int             nr;
        const md_range *r = md_plan_ranges_split(plan, bn, &nr);
        CHECK_OK(md_sgd_step_nesterov(be, m->params.data, m->grads.data, m->momentum.data, r, nr,
                                      0.1f, 0.9f, bn ? 0.0f : 4e-5f, 1));
    }
    CHECK_OK(md_plan_forward(plan, x.data, MD_MODE_TRAIN));
    CHECK_OK(md_plan_loss_dev_smoothed(plan, labels, 0.1f, out));
    double want2 = md_fx_value(md_fixture_need(fx, "loss2"), 0);
    CHECK(fabs(out[0] - want2) < 1e-4 * fabs(want2), "loss after SGD %.8f, PyTorch %.8f", out[0],
          want2);
    md_plan_destroy(plan);
    md_tbuf_free(be, &x);
    md_backend_free(be, labels);
}

static void check_masks(const md_space *sp) {
    const md_space_info *in = md_space_describe(sp);
    int                  zero = -1;
    for (int k = 0; k < in->k; k++)
        if (!strcmp(in->op_names[k], "zero")) zero = k;
    CHECK(zero >= 0 && in->dists == 5, "zero op %d, %d distributions", zero, in->dists);
    if (zero < 0 || in->dists != 5) return;
    /* blocks 1..5: 8->8, 8->8, 8->16 s2, 16->16, 16->24 s2 */
    static const int shortcut[5] = {1, 1, 0, 1, 0};
    for (int d = 0; d < 5; d++)
        CHECK(in->allowed[d * in->k + zero] == shortcut[d], "block %d: zero allowed %d", d + 1,
              in->allowed[d * in->k + zero]);
    for (int rule = 0; rule < 2; rule++) {
        md_mdl m;
        md_rng rng;
        md_rng_seed(&rng, 7, 1);
        CHECK_OK(md_mdl_init(&m, in->dists, in->k, 0.2, rule ? MD_UPDATE_PAIRWISE : MD_UPDATE_PAPER));
        CHECK_OK(md_mdl_set_mask(&m, in->allowed));
        CHECK(fabs(m.p[2 * in->k + 0] - 1.0 / 6) < 1e-12 && m.p[2 * in->k + zero] == 0.0 &&
                  fabs(m.p[0 * in->k + zero] - 1.0 / 7) < 1e-12,
              "initial p not uniform over the allowed ops");
        int choice[5], masked_drawn = 0;
        for (int t = 0; t < 300; t++) {
            md_mdl_sample(&m, &rng, choice);
            for (int d = 0; d < 5; d++) masked_drawn += !in->allowed[d * in->k + choice[d]];
            CHECK_OK(md_mdl_record(&m, choice, md_rng_uniform_double(&rng)));
            CHECK_OK(md_mdl_update(&m));
        }
        double masked_p = 0, sum2 = 0;
        for (int d = 0; d < 5; d++) {
            double sum = 0;
            for (int k = 0; k < in->k; k++) {
                sum += m.p[d * in->k + k];
                if (!in->allowed[d * in->k + k]) masked_p += m.p[d * in->k + k];
            }
            sum2 += fabs(sum - 1);
        }
        CHECK(masked_drawn == 0 && masked_p == 0.0 && sum2 < 1e-9,
              "%s rule: %d masked draws, masked p %g, sums off by %g", rule ? "pairwise" : "paper",
              masked_drawn, masked_p, sum2);
        choice[2] = zero;
        CHECK(md_mdl_record(&m, choice, 0.5) == MD_ERR_ARG, "a masked op was recorded");
        md_mdl_free(&m);
    }
}

static md_status load_json(const char *path, md_jvalue *v) {
    FILE *f = fopen(path, "rb");
    if (!f) return md_fail(MD_ERR_IO, "cannot open %s", path);
    static char buf[1 << 20];
    size_t      n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return md_json_parse(buf, path, v);
}

/* ProxylessNAS-GPU from its released net config: 7,119,848 parameters and
 * 465,260,160 multiply-adds at 224x224 (tests/proxyless_ref.py counts the same;
 * the paper rounds them to 7.12 M and 465 M). */
static void check_proxyless_gpu(const char *dir) {
    char path[600];
    snprintf(path, sizeof path, "%s/proxyless_gpu.config", dir);
    md_jvalue v;
    CHECK_OK(load_json(path, &v));
    md_mobile_config c;
    int              choice[MD_MOBILE_MAX_BLOCKS], n = 0;
    CHECK_OK(md_mobile_from_net_config(&v, path, 224, &c, choice, &n));
    md_json_value_free(&v);
    md_space *sp = NULL;
    CHECK_OK(md_space_mobile_create(&c, &sp));
    double params = 0, madds = 0;
    if (sp) CHECK_OK(md_space_count(sp, choice, &params, &madds));
    CHECK(n == 21 && params == 7119848.0 && madds == 465260160.0,
          "ProxylessNAS-GPU: %d blocks, %.0f parameters, %.0f multiply-adds (want 21, 7119848, "
          "465260160)", n, params, madds);
    printf("ProxylessNAS-GPU: %.0f parameters (7.12 M published), %.0f multiply-adds (465 M)\n",
           params, madds);
    md_space_destroy(sp);
}

/* Export the derived net, read it back as a net config: same ops, same size. */
static void check_round_trip(const md_space *sp, const int *arch) {
    const md_space_info *in = md_space_describe(sp);
    double              *p = calloc((size_t)in->dists * in->k, sizeof *p);
    for (int d = 0; d < in->dists; d++) {
        int live = 0;
        for (int k = 0; k < in->k; k++) live += in->allowed[d * in->k + k];
        for (int k = 0; k < in->k; k++)
            if (in->allowed[d * in->k + k])
                p[d * in->k + k] = k == arch[d] ? 0.5 : 0.5 / (live - 1);
    }
    md_json j;
    md_json_init(&j);
    CHECK_OK(md_space_export(sp, p, &j));
    md_jvalue v;
    CHECK_OK(md_json_parse(j.buf, "export", &v));
    md_json_free(&j);
    const md_jvalue *net = md_json_get(&v, "net_config"), *blocks = md_json_get(&v, "blocks");
    CHECK(net && blocks && blocks->count == in->dists, "export lacks net_config or blocks");
    for (int d = 0; blocks && d < blocks->count && d < in->dists; d++)
        CHECK(!strcmp(blocks->items[d].str, in->op_names[arch[d]]), "block %d exported as %s",
              d, blocks->items[d].str);
    md_mobile_config c;
    int              back[MD_MOBILE_MAX_BLOCKS], n = 0;
    double           pa = 0, ma = 0, pb = 0, mb = 0;
    md_space        *again = NULL;
    if (net) CHECK_OK(md_mobile_from_net_config(net, "export", 32, &c, back, &n));
    c.in_c = 3, c.classes = 6;
    if (net) CHECK_OK(md_space_mobile_create(&c, &again));
    CHECK_OK(md_space_count(sp, arch, &pa, &ma));
    if (again) CHECK_OK(md_space_count(again, back, &pb, &mb));
    const md_jvalue *jp = md_json_get(&v, "params"), *jm = md_json_get(&v, "madds");
    CHECK(pa == pb && ma == mb && pa > 0 && jp && jp->num == pa && jm && jm->num == ma,
          "round trip: %.0f/%.0f parameters, %.0f/%.0f multiply-adds", pa, pb, ma, mb);
    md_space_destroy(again);
    md_json_value_free(&v);
    free(p);
}

static void write_floats(const char *dir, const char *name, const float *x, size_t n) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(x, 4, n, f) == n, "cannot write %s", path);
    if (f) fclose(f);
}

/* For tests/mobile_export_check.py: a trained-a-little net in eval mode. */
static void export_for_torch(const char *dir, md_fixture *fx, const md_space *sp, md_model *m,
                             md_backend *be, int rows, const int *arch) {
    md_plan  *plan = NULL;
    md_tensor x = md_fx_upload(be, md_fixture_need(fx, "x"));
    CHECK_OK(md_space_plan(sp, m, be, arch, rows, &plan));
    if (!plan) return;
    for (int t = 0; t < 3; t++) CHECK_OK(md_plan_forward(plan, x.data, MD_MODE_TRAIN)); /* stats */
    CHECK_OK(md_plan_forward(plan, x.data, MD_MODE_EVAL));
    const md_fx_tensor *lg = md_fixture_need(fx, "logits");
    float              *logits = malloc(lg->numel * 4);
    /* The logits are the plan's output buffer: a loss call reads them back. */
    int32_t *labels = md_fx_upload_labels(be, md_fixture_need(fx, "labels"));
    float    loss = 0;
    CHECK_OK(md_plan_loss(plan, labels, &loss, NULL));
    CHECK_OK(md_plan_logits(plan, logits, lg->numel));
    write_floats(dir, "logits.bin", logits, lg->numel);
    write_floats(dir, "input.bin", x.data, md_tensor_numel(&x));
    char   path[600];
    double p1[MD_MOBILE_MAX_BLOCKS * MD_MOBILE_MAX_CANDIDATES] = {0};
    const md_space_info *in = md_space_describe(sp);
    for (int d = 0; d < in->dists; d++) p1[d * in->k + arch[d]] = 1.0;
    CHECK_OK(md_space_write_files(sp, p1, dir));
    snprintf(path, sizeof path, "%s/weights.safetensors", dir);
    CHECK_OK(md_space_export_weights(sp, m, arch, path));
    free(logits);
    md_backend_free(be, labels);
    md_tbuf_free(be, &x);
    md_plan_destroy(plan);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_mobile FIXTURE_DIR [EXPORT_DIR]\n");
        return 2;
    }
    md_fixture fx;
    md_fixture_load_or_exit(&fx, argv[1], "mobile_net.bin");
    int              rows = 0;
    md_mobile_config c = fixture_config(&fx, &rows);
    md_space        *sp = NULL;
    md_model        *m = NULL;
    md_backend      *be = NULL;
    if (md_backend_cpu_create(0, &be) != MD_OK || md_space_mobile_create(&c, &sp) != MD_OK ||
        md_space_model_create(sp, 1, NULL, &m) != MD_OK) {
        fprintf(stderr, "setup: %s\n", md_error_message());
        return 2;
    }
    int                 arch[5];
    const md_fx_tensor *a = md_fixture_need(&fx, "arch");
    for (int d = 0; d < 5; d++) arch[d] = md_fx_int(a, d);
    check_table(&fx, m);
    check_masks(sp);
    check_network(&fx, sp, m, be, rows, arch);
    check_proxyless_gpu(argv[1]);
    check_round_trip(sp, arch);
    if (argc > 2) export_for_torch(argv[2], &fx, sp, m, be, rows, arch);
    md_model_destroy(m);
    md_space_destroy(sp);
    md_backend_destroy(be);
    md_fixture_free(&fx);
    return md_test_finish("test_mobile");
}
