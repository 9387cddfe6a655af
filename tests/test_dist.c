/* Data-parallel building blocks without MPI: cross-replica batch norm (two
 * replicas as two threads, the allreduce a shared buffer between barriers)
 * against one batch norm over the whole batch; the safetensors writer and its
 * validating reader, including the corruptions a crash or a disk can cause. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mdenas/optim.h"
#include "mdenas/safetensors.h"
#include "testutil.h"

/* ---- cross-replica BN ----------------------------------------------------------- */

#define REPLICAS 2

typedef struct {
    pthread_barrier_t bar;
    double            slot[REPLICAS][512];
    int               calls;
} shared_sum;

typedef struct {
    shared_sum *sh;
    int         id;
} replica_ctx;

static md_status sum_over_replicas(void *ctx, double *buf, int n) {
    replica_ctx *r = ctx;
    if (n > 512) return md_fail(MD_ERR_ARG, "test allreduce: %d values", n);
    memcpy(r->sh->slot[r->id], buf, sizeof(double) * (size_t)n);
    pthread_barrier_wait(&r->sh->bar);
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int k = 0; k < REPLICAS; k++) s += r->sh->slot[k][i];
        buf[i] = s;
    }
    if (r->id == 0) r->sh->calls++;
    pthread_barrier_wait(&r->sh->bar); /* nobody overwrites a slot still being read */
    return MD_OK;
}

enum { N = 6, C = 5, H = 3, W = 4 };

typedef struct {
    md_backend *be;
    replica_ctx ctx;
    md_bn_sync  sync;
    int         n0, n; /* rows [n0, n0+n) of the global batch */
    const float *x, *dy, *gamma, *beta;
    float       *y, *dx, *dgamma, *dbeta, *rmean, *rvar;
    md_status    status;
} replica;

static md_status run_bn(md_backend *be, int n, const float *x, const float *dy,
                        const float *gamma, const float *beta, float *y, float *dx, float *dgamma,
                        float *dbeta, float *rmean, float *rvar, const md_bn_sync *sync) {
    size_t    plane = (size_t)C * H * W;
    float     mean[C], invstd[C];
    md_tensor tx = md_tensor_4d((float *)x + 0, n, C, H, W), ty = md_tensor_4d(y, n, C, H, W);
    md_tensor tdy = md_tensor_4d((float *)dy, n, C, H, W), tdx = md_tensor_4d(dx, n, C, H, W);
    md_tensor g = md_tensor_1d((float *)gamma, C), b = md_tensor_1d((float *)beta, C);
    md_tensor dg = md_tensor_1d(dgamma, C), db = md_tensor_1d(dbeta, C);
    md_tensor rm = md_tensor_1d(rmean, C), rv = md_tensor_1d(rvar, C);
    md_tensor sm = md_tensor_1d(mean, C), si = md_tensor_1d(invstd, C);
    md_bn_state st = {.gamma = &g, .beta = &b, .running_mean = &rm, .running_var = &rv,
                      .save_mean = &sm, .save_invstd = &si, .momentum = 0.1f, .eps = 1e-5f,
                      .sync = sync};
    (void)plane;
    MD_TRY(md_bn_forward_train(be, &tx, &ty, &st));
    return md_bn_backward_train(be, &tx, &tdy, &tdx, &dg, &db, &st);
}

static void *replica_main(void *arg) {
    replica *r = arg;
    size_t   plane = (size_t)C * H * W;
    r->status = run_bn(r->be, r->n, r->x + r->n0 * plane, r->dy + r->n0 * plane, r->gamma, r->beta,
                       r->y + r->n0 * plane, r->dx + r->n0 * plane, r->dgamma, r->dbeta, r->rmean,
                       r->rvar, &r->sync);
    return NULL;
}

static void test_sync_bn(void) {
    size_t total = (size_t)N * C * H * W;
    float *x = malloc(total * 4), *dy = malloc(total * 4), *y1 = calloc(total, 4),
          *dx1 = calloc(total, 4), *y2 = calloc(total, 4), *dx2 = calloc(total, 4);
    float  gamma[C], beta[C], dg1[C] = {0}, db1[C] = {0}, rm1[C] = {0}, rv1[C];
    float  dg[REPLICAS][C], db[REPLICAS][C], rm[REPLICAS][C], rv[REPLICAS][C];
    md_rng rng;
    md_rng_seed(&rng, 7, 1);
    md_fill_uniform(&rng, x, total, -2.0f, 3.0f);
    md_fill_uniform(&rng, dy, total, -1.0f, 1.0f);
    md_fill_uniform(&rng, gamma, C, 0.5f, 1.5f);
    md_fill_uniform(&rng, beta, C, -0.5f, 0.5f);
    for (int c = 0; c < C; c++) rv1[c] = 1.0f;
    memset(dg, 0, sizeof dg), memset(db, 0, sizeof db), memset(rm, 0, sizeof rm);
    for (int k = 0; k < REPLICAS; k++)
        for (int c = 0; c < C; c++) rv[k][c] = 1.0f;

    md_backend *be = NULL;
    CHECK_OK(md_backend_cpu_create(1, &be));
    if (!be) return;
    /* The whole batch on one replica: the reference. */
    CHECK_OK(run_bn(be, N, x, dy, gamma, beta, y1, dx1, dg1, db1, rm1, rv1, NULL));

    /* Uneven split (4 + 2 rows), each replica in its own thread. */
    shared_sum sh;
    memset(&sh, 0, sizeof sh);
    pthread_barrier_init(&sh.bar, NULL, REPLICAS);
    replica   rep[REPLICAS];
    pthread_t th[REPLICAS];
    int       n0[REPLICAS] = {0, 4}, nr[REPLICAS] = {4, 2};
    for (int k = 0; k < REPLICAS; k++) {
        rep[k] = (replica){.be = be, .ctx = {&sh, k}, .n0 = n0[k], .n = nr[k], .x = x, .dy = dy,
                           .gamma = gamma, .beta = beta, .y = y2, .dx = dx2, .dgamma = dg[k],
                           .dbeta = db[k], .rmean = rm[k], .rvar = rv[k]};
        rep[k].sync = (md_bn_sync){sum_over_replicas, &rep[k].ctx};
    }
    for (int k = 0; k < REPLICAS; k++) pthread_create(&th[k], NULL, replica_main, &rep[k]);
    for (int k = 0; k < REPLICAS; k++) pthread_join(th[k], NULL);
    pthread_barrier_destroy(&sh.bar);
    for (int k = 0; k < REPLICAS; k++) CHECK(rep[k].status == MD_OK, "replica %d: %s", k, md_error_message());
    CHECK(sh.calls == 3, "forward + backward made %d reductions, the protocol says 3", sh.calls);

    /* Outputs and input gradients equal the whole-batch ones; the replicas'
     * dgamma/dbeta add up to the whole batch's; running statistics agree. */
    double ey = md_norm_err(y2, y1, total), edx = md_norm_err(dx2, dx1, total);
    float  dgs[C], dbs[C];
    for (int c = 0; c < C; c++) dgs[c] = dg[0][c] + dg[1][c], dbs[c] = db[0][c] + db[1][c];
    double edg = md_norm_err(dgs, dg1, C), edb = md_norm_err(dbs, db1, C);
    double erm = fmax(md_norm_err(rm[0], rm1, C), md_norm_err(rm[1], rm1, C));
    double erv = fmax(md_norm_err(rv[0], rv1, C), md_norm_err(rv[1], rv1, C));
    printf("sync BN, 2 replicas (4+2 rows) vs one batch: y %.2g, dx %.2g, dgamma %.2g, "
           "dbeta %.2g, running mean %.2g, var %.2g\n", ey, edx, edg, edb, erm, erv);
    CHECK(ey < 1e-6 && edx < 1e-6, "y err %g, dx err %g", ey, edx);
    CHECK(edg < 1e-5 && edb < 1e-5, "dgamma err %g, dbeta err %g", edg, edb);
    CHECK(erm < 1e-6 && erv < 1e-6, "running stats err %g %g", erm, erv);
    /* Without sync the replicas' statistics are their own: the outputs differ. */
    float *y3 = calloc(total, 4), *dx3 = calloc(total, 4), dg3[C] = {0}, db3[C] = {0},
          rm3[C] = {0}, rv3[C] = {1, 1, 1, 1, 1};
    size_t plane = (size_t)C * H * W;
    CHECK_OK(run_bn(be, 2, x + 4 * plane, dy + 4 * plane, gamma, beta, y3, dx3, dg3, db3, rm3,
                    rv3, NULL));
    CHECK(md_norm_err(y3, y1 + 4 * plane, 2 * plane) > 1e-3, "unsynced BN matched the global one");
    free(y3), free(dx3);
    md_backend_destroy(be);
    free(x), free(dy), free(y1), free(dx1), free(y2), free(dx2);
}

/* ---- safetensors ------------------------------------------------------------------- */

static char tmpdir[256];

static void path_of(char *buf, size_t len, const char *name) {
    snprintf(buf, len, "%s/%s", tmpdir, name);
}

static long write_sample(const char *path) {
    float   a[6] = {1, -2, 3.5f, 0, 1e-30f, 7};
    double  b[3] = {0.125, -1e300, 3};
    int64_t c[2] = {-5, 1LL << 40};
    md_st_entry t[3] = {
        {.name = "param/conv.w", .dtype = MD_ST_F32, .ndim = 2, .dim = {2, 3}, .data = a},
        {.name = "mdl/p", .dtype = MD_ST_F64, .ndim = 1, .dim = {3}, .data = b},
        {.name = "step", .dtype = MD_ST_I64, .ndim = 1, .dim = {2}, .data = c},
    };
    md_st_meta m[2] = {{"format", "test-1"}, {"quote", "a \"b\"\n"}};
    size_t     bytes = 0;
    CHECK_OK(md_st_write(path, t, 3, m, 2, &bytes));
    return (long)bytes;
}

static void corrupt_at(const char *src, const char *dst, long offset, long truncate_to) {
    FILE *f = fopen(src, "rb");
    char  buf[4096];
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f) fclose(f);
    if (offset >= 0 && (size_t)offset < n) buf[offset] ^= 0x10;
    if (truncate_to >= 0 && (size_t)truncate_to < n) n = (size_t)truncate_to;
    f = fopen(dst, "wb");
    if (f) fwrite(buf, 1, n, f), fclose(f);
}

static void expect_bad(const char *path, const char *needle) {
    md_st_file f;
    md_status  s = md_st_read(path, &f);
    CHECK(s != MD_OK, "%s was accepted", path);
    CHECK(strstr(md_error_message(), path) != NULL, "message lacks the path: %s",
          md_error_message());
    CHECK(strstr(md_error_message(), needle) != NULL, "message lacks '%s': %s", needle,
          md_error_message());
}

static void test_safetensors(void) {
    char good[512];
    path_of(good, sizeof good, "good.safetensors");
    long bytes = write_sample(good);
    md_st_file f;
    CHECK_OK(md_st_read(good, &f));
    CHECK((long)f.size == bytes, "size %zu, writer said %ld", f.size, bytes);
    CHECK(f.data_start % 8 == 0, "data section at %zu, not 8-aligned", f.data_start);
    CHECK(f.n == 3, "%d tensors", f.n);
    const md_st_tensor *w = md_st_find(&f, "param/conv.w"), *p = md_st_find(&f, "mdl/p");
    CHECK(w && w->dtype == MD_ST_F32 && w->ndim == 2 && w->dim[0] == 2 && w->dim[1] == 3,
          "param/conv.w header");
    CHECK(p && p->dtype == MD_ST_F64 && p->bytes == 24, "mdl/p header");
    if (w && p) {
        const float  *wd = md_st_data(&f, w);
        const double *pd = md_st_data(&f, p);
        CHECK(wd[2] == 3.5f && wd[4] == 1e-30f && pd[1] == -1e300, "values read back wrong");
        CHECK(w->begin == 0 && p->begin == 24, "laid out in order: %zu %zu", w->begin, p->begin);
    }
    CHECK(md_st_meta_get(&f, "format") && !strcmp(md_st_meta_get(&f, "format"), "test-1"),
          "metadata format");
    CHECK(md_st_meta_get(&f, "quote") && !strcmp(md_st_meta_get(&f, "quote"), "a \"b\"\n"),
          "metadata escaping");
    CHECK(md_st_meta_get(&f, "crc32c") != NULL, "no crc32c in the metadata");
    CHECK(md_st_find(&f, "absent") == NULL, "found an absent tensor");
    size_t data_start = f.data_start;
    md_st_free(&f);
    /* No temp file is left behind. */
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", good);
    CHECK(access(tmp, F_OK) != 0, "%s left behind", tmp);

    char bad[512];
    path_of(bad, sizeof bad, "flip.safetensors");
    corrupt_at(good, bad, (long)data_start + 9, -1); /* a bit in mdl/p */
    expect_bad(bad, "checksum");
    /* A digit of a metadata value (a loop position, in a checkpoint). */
    path_of(bad, sizeof bad, "meta.safetensors");
    {
        FILE *g = fopen(good, "rb");
        char  buf[4096];
        size_t n = g ? fread(buf, 1, sizeof buf, g) : 0;
        if (g) fclose(g);
        char *at = NULL;
        for (size_t i = 0; i + 6 <= n && !at; i++)
            if (!memcmp(buf + i, "test-1", 6)) at = buf + i;
        CHECK(at != NULL, "metadata value not found in %s", good);
        if (at) {
            at[5] = '2';
            g = fopen(bad, "wb");
            if (g) fwrite(buf, 1, n, g), fclose(g);
            expect_bad(bad, "checksum");
        }
    }
    path_of(bad, sizeof bad, "trunc.safetensors");
    corrupt_at(good, bad, -1, bytes - 3);
    expect_bad(bad, "truncated");
    path_of(bad, sizeof bad, "short.safetensors");
    corrupt_at(good, bad, -1, 5);
    expect_bad(bad, "not a safetensors file");
    path_of(bad, sizeof bad, "hdr.safetensors");
    corrupt_at(good, bad, 3, -1); /* the header length */
    expect_bad(bad, "header length");
    path_of(bad, sizeof bad, "json.safetensors");
    corrupt_at(good, bad, 8, -1); /* '{' -> 'k' */
    expect_bad(bad, "header");
    /* A gap between tensors, hand-made. */
    path_of(bad, sizeof bad, "gap.safetensors");
    const char hdr[] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
    FILE      *g = fopen(bad, "wb");
    if (g) {
        unsigned char len8[8] = {(unsigned char)(sizeof hdr - 1)};
        fwrite(len8, 1, 8, g), fwrite(hdr, 1, sizeof hdr - 1, g), fwrite("\0\0\0\0\0\0\0\0", 1, 8, g);
        fclose(g);
    }
    expect_bad(bad, "starts at byte 4");
    /* Found by tests/fuzz/fuzz_safetensors: the header is JSON from its first byte,
     * '{', to its last: leading spaces, or a NUL hiding the rest, are refused. */
    static const struct {
        const char *name, *hdr, *needle;
    } hdr_cases[] = {{"space.safetensors", "  {}    ", "start with '{'"},
                     {"nul.safetensors", "{}\0garbg", "NUL"}};
    for (int k = 0; k < 2; k++) {
        path_of(bad, sizeof bad, hdr_cases[k].name);
        g = fopen(bad, "wb");
        if (g) {
            unsigned char len8[8] = {8};
            fwrite(len8, 1, 8, g), fwrite(hdr_cases[k].hdr, 1, 8, g);
            fclose(g);
        }
        expect_bad(bad, hdr_cases[k].needle);
    }
    /* md_st_read_mem: the same checks and result as md_st_read, on bytes in memory. */
    {
        FILE         *h = fopen(good, "rb");
        unsigned char buf[4096];
        size_t        n = h ? fread(buf, 1, sizeof buf, h) : 0;
        if (h) fclose(h);
        md_st_file mf;
        CHECK_OK(md_st_read_mem("in-memory", buf, n, &mf));
        const md_st_tensor *mp = md_st_find(&mf, "mdl/p");
        CHECK(mf.n == 3 && mp && mp->begin == 24 && mf.size == n &&
                  ((const double *)md_st_data(&mf, mp))[1] == -1e300,
              "md_st_read_mem read another file");
        md_st_free(&mf);
        CHECK(md_st_read_mem("in-memory", buf, n - 3, &mf) == MD_ERR_DATA &&
                  strstr(md_error_message(), "in-memory") && mf.file == NULL,
              "a truncated buffer: %s", md_error_message());
    }
    path_of(bad, sizeof bad, "missing.safetensors");
    md_st_file m;
    CHECK(md_st_read(bad, &m) == MD_ERR_IO, "a missing file is not MD_ERR_IO");
}

/* ---- the device-side step ops on the CPU equal the host ones ----------------------------- */

static void test_step_ops_dev(void) {
    md_backend *be = NULL;
    CHECK_OK(md_backend_cpu_create(1, &be));
    if (!be) return;
    enum { NR = 7, K = 10, NG = 3000 };
    float   z[NR * K], d1[NR * K] = {0}, d2[NR * K] = {0}, out[2] = {-1, -1};
    int32_t lab[NR];
    md_rng  rng;
    md_rng_seed(&rng, 3, 4);
    md_fill_uniform(&rng, z, NR * K, -3, 3);
    for (int i = 0; i < NR; i++) lab[i] = (int32_t)(md_rng_u32(&rng) % K);
    md_tensor tz = md_tensor_2d(z, NR, K), t1 = md_tensor_2d(d1, NR, K), t2 = md_tensor_2d(d2, NR, K);
    float loss = 0;
    int   correct = -1;
    CHECK_OK(md_softmax_ce(be, &tz, lab, &loss, &t1));
    CHECK_OK(md_top1_correct(be, &tz, lab, &correct));
    CHECK_OK(md_loss_dev(be, &tz, lab, out, &t2));
    CHECK(out[0] == loss && out[1] == (float)correct, "loss_dev %g/%g vs %g/%d", out[0], out[1],
          loss, correct);
    CHECK(md_norm_err(d2, d1, NR * K) == 0, "loss_dev gradient differs");
    /* Clip over three ranges, norm above and below the limit. */
    float    g1[NG], g2[NG];
    md_range rg[3] = {{0, 1000}, {1200, 800}, {2500, 500}};
    for (int lim = 0; lim < 2; lim++) {
        md_fill_uniform(&rng, g1, NG, -1, 1);
        memcpy(g2, g1, sizeof g1);
        float  max_norm = lim ? 1e6f : 2.0f, total = 0;
        double acc[2] = {123.0, 0};
        CHECK_OK(md_clip_grad_norm(be, g1, rg, 3, max_norm, &total));
        CHECK_OK(md_clip_grad_norm_dev(be, g2, rg, 3, max_norm, acc));
        CHECK(fabs(sqrt(acc[0]) - total) <= 1e-6 * total, "clip_dev norm %g vs %g", sqrt(acc[0]),
              total);
        CHECK(md_norm_err(g2, g1, NG) == 0, "clip_dev result differs (limit %g)", max_norm);
        CHECK(lim || total > max_norm, "the clip case did not clip (norm %g)", total);
    }
    CHECK(!md_backend_has_graphs(be), "the CPU backend claims graphs");
    CHECK(md_graph_capture_begin(be) == MD_ERR_BACKEND, "graph capture on the CPU did not fail");
    md_backend_destroy(be);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/md_test_dist.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_sync_bn();
    test_safetensors();
    test_step_ops_dev();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir);
    return md_test_finish("test_dist");
}
