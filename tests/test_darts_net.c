/* The DARTS evaluation network of a genotype (src/nas/darts_net.c) and what
 * training adds around it:
 *  - genotype parsing: DARTS's printed form, lists or ranges as concat, the
 *    published names, and a clear refusal of malformed strings;
 *  - parameter counts against independent PyTorch counts (tests/darts_ref.py,
 *    whose DARTS_V2 figure is the 3,349,342 that DARTS's own log prints);
 *  - drop-path and dropout masks: keep rates, 1/keep scales, keyed by global row;
 *  - cutout in the loader: one clipped square of zeros in every channel;
 *  - the train-only auxiliary head is skipped in evaluation.
 * With an argument DIR it writes the files tests/darts_ref.py `check` reads
 * (net.json, weights.safetensors with DARTS names, input.bin, labels.bin,
 * eval.safetensors, train.safetensors: one training forward + backward with
 * drop-path 0.3, dropout 0.2, the auxiliary head at weight 0.4 and label
 * smoothing 0.1): tests/darts_net_check.py runs both. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdenas/data.h"
#include "mdenas/model.h"
#include "mdenas/safetensors.h"
#include "mdenas/space.h"
#include "mdenas/supernet.h"
#include "testutil.h"

/* Every op kind: none, both pools, skip at stride 1 and 2, all convs. */
static const char *const ALL_OPS =
    "Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ('dil_conv_3x3', 0), "
    "('avg_pool_3x3', 2), ('sep_conv_5x5', 3), ('avg_pool_3x3', 1), ('dil_conv_5x5', 4), "
    "('none', 2)], normal_concat=range(2, 6), reduce=[('skip_connect', 0), ('max_pool_3x3', 1), "
    "('avg_pool_3x3', 0), ('sep_conv_3x3', 2), ('skip_connect', 2), ('dil_conv_5x5', 1), "
    "('sep_conv_5x5', 4), ('dil_conv_3x3', 0)], reduce_concat=[2, 3, 4, 5])";

static md_darts_net_config net_config(const char *genotype, int cells, int c, int side,
                                      int aux) {
    md_darts_net_config d;
    memset(&d, 0, sizeof d);
    CHECK_OK(md_darts_genotype_parse(genotype, "test", &d));
    d.net.in_c = 3, d.net.in_h = side, d.net.in_w = side, d.net.classes = 10;
    d.net.cells = cells, d.net.channels = c;
    d.auxiliary = aux, d.aux_weight = 0.4f;
    return d;
}

static void test_parse(void) {
    md_darts_net_config d;
    memset(&d, 0, sizeof d);
    CHECK_OK(md_darts_genotype_parse("  MdeNAS \n", "name", &d));
    CHECK(d.net.nodes == 4, "nodes %d", d.net.nodes);
    /* The released cell (MDENAS.md): normal gene 7 is ('max_pool_3x3', 4), reduce gene 5
     * ('skip_connect', 2). */
    CHECK(d.gene[0][7][0] == MD_OP_MAX_POOL_3X3 && d.gene[0][7][1] == 4, "normal gene 7");
    CHECK(d.gene[1][5][0] == MD_OP_SKIP_CONNECT && d.gene[1][5][1] == 2, "reduce gene 5");
    CHECK(d.gene[0][0][0] == MD_OP_SEP_CONV_5X5 && d.gene[0][0][1] == 1, "normal gene 0");
    CHECK_OK(md_darts_genotype_parse(ALL_OPS, "all ops", &d));
    CHECK(d.gene[0][7][0] == MD_OP_NONE && d.gene[1][4][0] == MD_OP_SKIP_CONNECT, "all ops");
    /* Two nodes, double quotes, no spaces. */
    CHECK_OK(md_darts_genotype_parse("Genotype(normal=[(\"skip_connect\",0),(\"sep_conv_3x3\",1),"
                                     "(\"avg_pool_3x3\",2),(\"none\",0)],normal_concat=range(2,4),"
                                     "reduce=[(\"max_pool_3x3\",0),(\"max_pool_3x3\",1),"
                                     "(\"skip_connect\",2),(\"dil_conv_5x5\",1)],"
                                     "reduce_concat=[2,3])",
                                     "two nodes", &d));
    CHECK(d.net.nodes == 2 && d.gene[1][3][0] == MD_OP_DIL_CONV_5X5, "two nodes");
    static const char *const bad[] = {
        "",
        "darts_v3",
        "Genotype(normal=[('sep_conv_3x3', 0)], normal_concat=range(2, 3), reduce=[('sep_conv_3x3', "
        "0)], reduce_concat=range(2, 3))", /* one gene per node */
        "Genotype(normal=[('conv_7x7', 0), ('sep_conv_3x3', 1)], normal_concat=range(2, 3), "
        "reduce=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], reduce_concat=range(2, 3))",
        "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 2)], normal_concat=range(2, 3), "
        "reduce=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], reduce_concat=range(2, 3))",
        "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=range(2, 4), "
        "reduce=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], reduce_concat=range(2, 3))",
        "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=range(2, 3), "
        "reduce=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], reduce_concat=range(2, 3)) extra",
        "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=range(2, 3), "
        "reduce=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', "
        "1)], reduce_concat=range(2, 4))",
        "Genotype(normal=[('sep_conv_3x3, 0)])",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        md_status s = md_darts_genotype_parse(bad[i], "bad.txt", &d);
        CHECK(s == MD_ERR_ARG, "bad genotype %zu accepted", i);
        CHECK(strstr(md_error_message(), "bad.txt") != NULL, "message names the source: %s",
              md_error_message());
    }
}

/* Independent counts: tests/darts_ref.py `count` (PyTorch modules of DARTS's
 * NetworkCIFAR); DARTS_V2 at 20/36 is the "param size = 3.349342MB" of DARTS's log. */
static void test_counts(void) {
    static const struct {
        const char *g;
        int         cells, c;
        double      with_aux, without;
    } cases[] = {
        {"mdenas", 20, 36, 4259712, 3783286},
        {"mdenas", 8, 16, 766660, 331194},
        {"darts_v2", 20, 36, -1, 3349342},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        md_darts_net_config d = net_config(cases[i].g, cases[i].cells, cases[i].c, 32, 1);
        double              p = 0, p0 = 0, madds = 0;
        CHECK_OK(md_darts_net_count(&d, &p, &p0, &madds));
        /* for tests/darts_net_check.py, which counts the same with PyTorch */
        printf("count %s %d %d %.0f %.0f\n", cases[i].g, cases[i].cells, cases[i].c, p, p0);
        CHECK(p0 == cases[i].without, "%s %d/%d: %.0f parameters without the head, PyTorch %.0f",
              cases[i].g, cases[i].cells, cases[i].c, p0, cases[i].without);
        if (cases[i].with_aux > 0)
            CHECK(p == cases[i].with_aux, "%s %d/%d: %.0f with the head, PyTorch %.0f",
                  cases[i].g, cases[i].cells, cases[i].c, p, cases[i].with_aux);
    }
    /* The head needs an 8x8 map at 2/3 depth and at least 4 cells. */
    md_darts_net_config d = net_config("mdenas", 5, 8, 28, 1);
    md_space           *s = NULL;
    CHECK(md_space_darts_net_create(&d, &s) == MD_ERR_ARG, "aux head on 7x7 accepted");
    CHECK(strstr(md_error_message(), "--aux-weight 0") != NULL, "%s", md_error_message());
    d = net_config("mdenas", 3, 8, 32, 1);
    CHECK(md_space_darts_net_create(&d, &s) == MD_ERR_ARG, "aux head on the last cell accepted");
    d = net_config("mdenas", 5, 8, 28, 0);
    CHECK_OK(md_space_darts_net_create(&d, &s));
    md_space_destroy(s);
}

/* Masks: the keep rate, the scale, and rows keyed globally (the masks of rows
 * [4, 8) drawn by a replica holding only those rows equal those of one holding all). */
static void test_noise(md_backend *be) {
    md_darts_net_config d = net_config(ALL_OPS, 4, 4, 16, 0);
    d.dropout = 0.5f;
    md_space *s = NULL;
    md_model *m = NULL;
    md_plan  *p8 = NULL, *p4 = NULL;
    CHECK_OK(md_space_darts_net_create(&d, &s));
    CHECK_OK(md_space_model_create(s, 3, NULL, &m));
    int choice[64];
    double u[64 * MD_DARTS_OPS];
    for (size_t i = 0; i < sizeof u / sizeof *u; i++) u[i] = 1.0;
    md_space_argmax(s, u, choice);
    CHECK_OK(md_space_plan(s, m, be, choice, 8, &p8));
    CHECK_OK(md_space_plan(s, m, be, choice, 4, &p4));
    if (!p8 || !p4) return;
    CHECK(md_plan_has_noise(p8) && !md_plan_has_aux(p8), "noise steps, no head");
    CHECK_OK(md_plan_set_noise(p8, 0.25f, 9, 77, 0));
    CHECK_OK(md_plan_set_noise(p4, 0.25f, 9, 77, 4));
    size_t       n8, n4;
    const float *m8 = md_plan_noise_masks(p8, &n8), *m4 = md_plan_noise_masks(p4, &n4);
    /* Per cell, one drop-path step of 8 rows per op that is not the identity; the
     * dropout step last (C_last = 4 * 4 * C = 64 per row). */
    size_t dropout = 8 * 64, drop_steps = (n8 - dropout) / 8;
    CHECK(n8 == 2 * n4 && (n8 - dropout) % 8 == 0, "%zu and %zu masks", n8, n4);
    long   kept = 0, total = 0;
    int    bad = 0, same = 1;
    for (size_t st = 0; st < drop_steps; st++)
        for (int r = 0; r < 8; r++) {
            float v = m8[st * 8 + r];
            bad += !(v == 0.0f || fabsf(v - 1.0f / 0.75f) < 1e-6f);
            kept += v != 0.0f, total++;
            if (r >= 4) same &= v == m4[st * 4 + r - 4];
        }
    for (int r = 0; r < 8; r++)
        for (int i = 0; i < 64; i++) {
            float v = m8[drop_steps * 8 + (size_t)r * 64 + i];
            bad += !(v == 0.0f || v == 2.0f);
            if (r >= 4) same &= v == m4[drop_steps * 4 + (size_t)(r - 4) * 64 + i];
        }
    CHECK(!bad, "%d mask values other than 0 and 1/keep", bad);
    CHECK(same, "a replica's masks differ from the whole batch's rows");
    double rate = (double)kept / (double)total; /* binomial: sd sqrt(.75*.25/total) */
    CHECK(fabs(rate - 0.75) < 4 * sqrt(0.75 * 0.25 / (double)total), "kept %.3f of %ld", rate,
          total);
    /* Evaluation ignores the masks: eval logits do not change with them. */
    size_t in = (size_t)8 * 3 * 16 * 16;
    float *x = malloc(in * sizeof *x), a[80], b[80];
    md_rng r;
    md_rng_seed(&r, 5, 0);
    md_fill_uniform(&r, x, in, -1, 1);
    CHECK_OK(md_plan_forward(p8, x, MD_MODE_EVAL));
    CHECK_OK(md_plan_logits(p8, a, 80));
    CHECK_OK(md_plan_set_noise(p8, 0.0f, 1, 1, 0));
    CHECK_OK(md_plan_forward(p8, x, MD_MODE_EVAL));
    CHECK_OK(md_plan_logits(p8, b, 80));
    CHECK(!memcmp(a, b, sizeof a), "eval logits depend on the masks");
    /* ... and training with masks does differ. */
    CHECK_OK(md_plan_set_noise(p8, 0.5f, 1, 1, 0));
    CHECK_OK(md_plan_forward(p8, x, MD_MODE_TRAIN));
    CHECK_OK(md_plan_logits(p8, a, 80));
    CHECK_OK(md_plan_set_noise(p8, 0.0f, 1, 1, 0));
    CHECK_OK(md_plan_forward(p8, x, MD_MODE_TRAIN));
    CHECK_OK(md_plan_logits(p8, b, 80));
    CHECK(memcmp(a, b, sizeof a), "training logits ignore the masks");
    CHECK(md_plan_set_noise(p8, 1.0f, 1, 1, 0) == MD_ERR_ARG, "drop-path 1 accepted");
    free(x);
    md_plan_destroy(p8);
    md_plan_destroy(p4);
    md_model_destroy(m);
    md_space_destroy(s);
}

/* Cutout on constant images (every pixel normalises to 1): each image has one
 * rectangle of zeros, the same in every channel, [cy - 2, cy + 2) x [cx - 2,
 * cx + 2) clipped: each side 2, 3 or 4 pixels, 4 unless at a border. */
static void test_cutout(void) {
    enum { N = 400, C = 2, H = 9, W = 7, L = 4 };
    md_dataset ds;
    memset(&ds, 0, sizeof ds);
    snprintf(ds.name, sizeof ds.name, "const");
    ds.n = N, ds.c = C, ds.h = H, ds.w = W, ds.classes = 2;
    ds.images = malloc((size_t)N * C * H * W);
    ds.labels = calloc(N, sizeof *ds.labels);
    memset(ds.images, 255, (size_t)N * C * H * W);
    ds.mean[0] = ds.mean[1] = 0.0f, ds.std[0] = ds.std[1] = 1.0f;
    int idx[N];
    for (int i = 0; i < N; i++) idx[i] = i;
    md_loader_config lc = {.ds = &ds, .idx = idx, .n = N, .batch = N, .seed = 4, .world = 1,
                           .aug = {.cutout = L}};
    md_loader *l = NULL;
    CHECK_OK(md_loader_create(&lc, &l));
    const float   *x;
    const int32_t *y;
    int            rows, grows, seen_y[H] = {0}, seen_x[W] = {0}, bad = 0;
    CHECK_OK(md_loader_next(l, &x, &y, &rows, &grows));
    for (int n = 0; l && n < rows; n++) {
        const float *im = x + (size_t)n * C * H * W;
        int          y0 = H, y1 = -1, x0 = W, x1 = -1, zeros = 0;
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++)
                if (im[i * W + j] == 0.0f) {
                    zeros++;
                    y0 = i < y0 ? i : y0, y1 = i > y1 ? i : y1;
                    x0 = j < x0 ? j : x0, x1 = j > x1 ? j : x1;
                }
        int hh = y1 - y0 + 1, ww = x1 - x0 + 1;
        bad += zeros != hh * ww || hh < 2 || hh > L || ww < 2 || ww > L;
        bad += (hh < L && y0 != 0 && y1 != H - 1) || (ww < L && x0 != 0 && x1 != W - 1);
        for (int i = 0; i < C * H * W; i++) {
            int ch = i / (H * W), k = i % (H * W);
            bad += im[i] != im[k] || (im[i] != 0.0f && im[i] != 1.0f);
            (void)ch;
        }
        /* the centre: y0 + 2 unless clipped at the top */
        seen_y[y0 == 0 ? y1 + 1 - L / 2 : y0 + L / 2]++;
        seen_x[x0 == 0 ? x1 + 1 - L / 2 : x0 + L / 2]++;
    }
    CHECK(!bad, "%d cutout images are not one clipped %dx%d square in every channel", bad, L, L);
    for (int i = 0; i < H; i++) CHECK(seen_y[i] > 0, "no centre in row %d", i);
    for (int j = 0; j < W; j++) CHECK(seen_x[j] > 0, "no centre in column %d", j);
    md_loader_destroy(l);
    md_dataset_free(&ds);
}

/* ---- the files tests/darts_ref.py checks ------------------------------------------------ */

static md_status write_floats(const char *dir, const char *name, const void *p, size_t bytes) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return md_fail(MD_ERR_IO, "%s", path);
    size_t w = fwrite(p, 1, bytes, f);
    return fclose(f) == 0 && w == bytes ? MD_OK : md_fail(MD_ERR_IO, "%s", path);
}

/* DARTS's name of a weight: the suffix rewrite of darts_net.c. */
static void ref_name(const char *n, char *out, size_t len) {
    static const char *const map[][2] = {
        {".w", ".weight"}, {".gamma", ".weight"}, {".beta", ".bias"}, {".b", ".bias"}};
    for (size_t i = 0; i < 4; i++) {
        size_t a = strlen(n), b = strlen(map[i][0]);
        if (a > b && !strcmp(n + a - b, map[i][0])) {
            snprintf(out, len, "%.*s%s", (int)(a - b), n, map[i][1]);
            return;
        }
    }
    snprintf(out, len, "%s", n);
}

enum { CELLS = 6, CH = 8, SIDE = 32, ROWS = 8, K = 10, MAXT = 1024 };

static void export_check_dir(md_backend *be, const char *dir) {
    md_darts_net_config d = net_config(ALL_OPS, CELLS, CH, SIDE, 1);
    d.dropout = 0.2f;
    md_space *s = NULL;
    md_model *m = NULL;
    md_plan  *p = NULL;
    CHECK_OK(md_space_darts_net_create(&d, &s));
    CHECK_OK(md_space_model_create(s, 11, NULL, &m));
    int    choice[64];
    double u[64 * MD_DARTS_OPS];
    for (size_t i = 0; i < sizeof u / sizeof *u; i++) u[i] = 1.0;
    md_space_argmax(s, u, choice);
    CHECK_OK(md_space_plan(s, m, be, choice, ROWS, &p));
    if (!p) return;
    CHECK(md_plan_has_aux(p) && md_plan_has_noise(p), "head and noise");
    size_t   in = (size_t)ROWS * 3 * SIDE * SIDE;
    float   *x = malloc(in * sizeof *x);
    int32_t *y = malloc(ROWS * sizeof *y);
    md_rng   r;
    md_rng_seed(&r, 21, 0);
    md_fill_uniform(&r, x, in, -2, 2);
    for (int i = 0; i < ROWS; i++) y[i] = (int32_t)(md_rng_u32(&r) % K);
    /* Two training forwards move the running statistics away from (0, 1). */
    for (int i = 0; i < 2; i++) CHECK_OK(md_plan_forward(p, x, MD_MODE_TRAIN));
    char path[1024];
    snprintf(path, sizeof path, "%s/weights.safetensors", dir);
    CHECK_OK(md_space_export_weights(s, m, choice, path));
    CHECK_OK(write_floats(dir, "input.bin", x, in * sizeof *x));
    CHECK_OK(write_floats(dir, "labels.bin", y, ROWS * sizeof *y));
    char g[4096];
    CHECK_OK(md_space_summary(s, u, g, sizeof g));
    snprintf(path, sizeof path, "%s/net.json", dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "{\"genotype\": \"%s\", \"cells\": %d, \"channels\": %d, \"classes\": %d, "
                   "\"in_channels\": 3, \"height\": %d, \"width\": %d, \"auxiliary\": true, "
                   "\"aux_weight\": 0.4, \"drop_path\": 0.3, \"dropout\": 0.2, \"batch\": %d, "
                   "\"label_smoothing\": 0.1, \"max_pool_gap\": 1e-5}\n",
                g, CELLS, CH, K, SIDE, SIDE, ROWS);
        fclose(f);
    }
    /* Evaluation on running statistics. */
    float logits[ROWS * K], aux[ROWS * K], out[4];
    CHECK_OK(md_plan_forward(p, x, MD_MODE_EVAL));
    CHECK_OK(md_plan_logits(p, logits, ROWS * K));
    md_st_entry e[MAXT];
    e[0] = (md_st_entry){.name = "logits", .dtype = MD_ST_F32, .ndim = 2, .dim = {ROWS, K},
                         .data = logits};
    snprintf(path, sizeof path, "%s/eval.safetensors", dir);
    CHECK_OK(md_st_write(path, e, 1, NULL, 0, NULL));
    /* One training step's forward and backward with drop-path and dropout. */
    CHECK_OK(md_plan_set_noise(p, 0.3f, 5, 1, 0));
    CHECK_OK(md_plan_zero_grads(p));
    CHECK_OK(md_plan_forward(p, x, MD_MODE_TRAIN));
    CHECK_OK(md_plan_loss_dev_smoothed(p, y, 0.1f, out));
    CHECK_OK(md_plan_aux_loss_dev(p, y, 0.1f, out + 2));
    CHECK_OK(md_plan_backward(p));
    CHECK_OK(md_plan_logits(p, logits, ROWS * K));
    CHECK_OK(md_plan_aux_logits(p, aux, ROWS * K));
    float loss = out[0] + 0.4f * out[2];
    int   n = 0;
    static char names[MAXT][128];
    e[n++] = (md_st_entry){.name = "logits", .dtype = MD_ST_F32, .ndim = 2, .dim = {ROWS, K},
                           .data = logits};
    e[n++] = (md_st_entry){.name = "logits_aux", .dtype = MD_ST_F32, .ndim = 2,
                           .dim = {ROWS, K}, .data = aux};
    e[n++] = (md_st_entry){.name = "loss", .dtype = MD_ST_F32, .ndim = 1, .dim = {1},
                           .data = &loss};
    /* Masks as 0/1, named by the op they scale: cells in order, genes in order,
     * every op but the identity (skip_connect at stride 1); then the dropout. */
    size_t       nm;
    const float *masks = md_plan_noise_masks(p, &nm);
    float       *keep = malloc(nm * sizeof *keep);
    for (size_t i = 0; i < nm; i++) keep[i] = masks[i] != 0.0f ? 1.0f : 0.0f;
    size_t off = 0;
    for (int c = 0; c < CELLS; c++) {
        int red = c == CELLS / 3 || c == 2 * CELLS / 3;
        for (int gi = 0; gi < 8; gi++) {
            int op = d.gene[red][gi][0], inp = d.gene[red][gi][1];
            if (op == MD_OP_SKIP_CONNECT && !(red && inp < 2)) continue;
            snprintf(names[n], sizeof names[n], "mask.cells.%d._ops.%d", c, gi);
            e[n] = (md_st_entry){.name = names[n], .dtype = MD_ST_F32, .ndim = 1, .dim = {ROWS},
                                 .data = keep + off};
            off += ROWS, n++;
        }
    }
    int clast = 4 * CH * 4; /* two reductions double C twice; 4 nodes concatenated */
    CHECK(off + (size_t)ROWS * clast == nm, "%zu masks, %zu named", nm, off + (size_t)ROWS * clast);
    e[n++] = (md_st_entry){.name = "mask.dropout", .dtype = MD_ST_F32, .ndim = 2,
                           .dim = {ROWS, clast}, .data = keep + off};
    const md_arena *ar[2] = {&m->params, &m->stats};
    for (int a = 0; a < 2; a++)
        for (int i = 0; i < ar[a]->count && n < MAXT; i++) {
            const md_param *pr = &ar[a]->table[i];
            char            rn[100];
            ref_name(pr->name, rn, sizeof rn);
            snprintf(names[n], sizeof names[n], "%s.%s", a ? "stats" : "grad", rn);
            e[n] = (md_st_entry){.name = names[n], .dtype = MD_ST_F32, .ndim = pr->ndim,
                                 .data = (a ? m->stats.data : m->grads.data) + pr->offset};
            for (int k = 0; k < pr->ndim; k++) e[n].dim[k] = pr->dim[k];
            n++;
        }
    snprintf(path, sizeof path, "%s/train.safetensors", dir);
    CHECK_OK(md_st_write(path, e, n, NULL, 0, NULL));
    free(keep);
    free(x);
    free(y);
    md_plan_destroy(p);
    md_model_destroy(m);
    md_space_destroy(s);
}

int main(int argc, char **argv) {
    md_backend *be = NULL;
    CHECK_OK(md_backend_cpu_create(2, &be));
    test_parse();
    test_counts();
    test_cutout();
    if (be) test_noise(be);
    if (be && argc > 1) export_check_dir(be, argv[1]);
    md_backend_destroy(be);
    return md_test_finish("test_darts_net");
}
