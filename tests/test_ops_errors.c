/* Bad shapes and arguments: each op refuses them with MD_ERR_ARG and a
 * message that names the op and the shapes involved, and writes nothing. */
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "testutil.h"

static md_backend *be;

/* The call failed with MD_ERR_ARG and the message holds every fragment. */
static void expect_error(md_status s, const char *what, const char *frag1, const char *frag2) {
    const char *m = md_error_message();
    CHECK(s == MD_ERR_ARG, "%s: status %d, expected MD_ERR_ARG", what, (int)s);
    CHECK(frag1 == NULL || strstr(m, frag1), "%s: message '%s' lacks '%s'", what, m, frag1);
    CHECK(frag2 == NULL || strstr(m, frag2), "%s: message '%s' lacks '%s'", what, m, frag2);
    md_error_clear();
}

static void test_conv_errors(void) {
    md_conv_desc d = {.n = 2, .c_in = 4, .h = 8, .w = 8, .c_out = 6, .kh = 3, .kw = 3,
                      .stride = 1, .pad = 1, .dilation = 1, .groups = 1};
    md_conv     *c = NULL;
    CHECK_OK(md_conv_create(be, &d, &c));
    md_tensor x = md_tbuf4(be, 2, 3, 8, 8), w = md_tbuf4(be, 6, 4, 3, 3),
              y = md_tbuf4(be, 2, 6, 8, 8);
    y.data[0] = 42.0f;
    expect_error(md_conv_forward(c, &x, &w, &y), "conv wrong input", "conv2d",
                 "input has shape [2,3,8,8], expected [2,4,8,8]");
    CHECK(y.data[0] == 42.0f, "failed conv wrote its output");
    md_tensor x2 = md_tbuf4(be, 2, 4, 8, 8), yb = md_tbuf4(be, 2, 6, 4, 4);
    expect_error(md_conv_forward(c, &x2, &w, &yb), "conv wrong output", "conv2d",
                 "output has shape [2,6,4,4], expected [2,6,8,8]");
    expect_error(md_conv_backward(c, &x2, &w, &y, &x, NULL), "conv wrong dx", "conv2d backward",
                 "input gradient has shape [2,3,8,8]");
    md_conv_destroy(c);
    md_tbuf_free(be, &x);
    md_tbuf_free(be, &x2);
    md_tbuf_free(be, &w);
    md_tbuf_free(be, &y);
    md_tbuf_free(be, &yb);

    md_conv_desc g = d;
    g.groups = 3;
    expect_error(md_conv_create(be, &g, &c), "groups", "divisible by groups=3", NULL);
    CHECK(c == NULL, "handle returned for a bad desc");
    md_conv_desc k = d;
    k.h = k.w = 2;
    k.kh = k.kw = 5;
    k.pad = 0;
    expect_error(md_conv_create(be, &k, &c), "kernel too big", "smaller than the dilated kernel",
                 NULL);
    md_conv_desc z = d;
    z.stride = 0;
    expect_error(md_conv_create(be, &z, &c), "stride 0", "stride=0", NULL);
}

static void test_other_errors(void) {
    md_tensor x = md_tbuf4(be, 2, 3, 4, 4), y = md_tbuf4(be, 2, 3, 4, 4);
    md_tensor g4 = md_tbuf1(be, 4), b3 = md_tbuf1(be, 3), m = md_tbuf1(be, 3), v = md_tbuf1(be, 3);
    md_bn_state s = {.gamma = &g4, .beta = &b3, .save_mean = &m, .save_invstd = &v,
                     .momentum = 0.1f, .eps = 1e-5f};
    expect_error(md_bn_forward_train(be, &x, &y, &s), "bn gamma", "batch_norm(train)",
                 "gamma has shape [4], expected [3]");
    s.gamma = NULL;
    expect_error(md_bn_forward_train(be, &x, &y, &s), "bn half affine", "both be given", NULL);
    s.beta = NULL;
    expect_error(md_bn_forward_eval(be, &x, &y, &s), "bn eval without stats", "running_mean",
                 "missing");
    s.eps = 0.0f;
    expect_error(md_bn_forward_train(be, &x, &y, &s), "bn eps", "eps=0", NULL);

    md_pool_desc p = {.kind = MD_POOL_MAX, .k = 3, .stride = 2, .pad = 1};
    expect_error(md_pool_forward(be, &p, &x, &y), "pool output", "max_pool",
                 "output has shape [2,3,4,4], expected [2,3,2,2]");
    p.pad = 2;
    expect_error(md_pool_forward(be, &p, &x, &y), "pool pad", "max_pool", "pad=2");

    md_tensor a = md_tbuf4(be, 2, 1, 4, 4), bb = md_tbuf4(be, 2, 1, 4, 5);
    const md_tensor *xs[2] = {&a, &bb};
    expect_error(md_concat_forward(be, xs, 2, &x), "concat hw", "concat",
                 "input 1 has shape [2,1,4,5]");
    xs[1] = &a;
    expect_error(md_concat_forward(be, xs, 2, &x), "concat channels", "2 channels in all", "has 3");

    md_tensor s5 = md_tbuf4(be, 2, 3, 4, 4);
    expect_error(md_slice_forward(be, &x, 1, 1, &s5), "slice", "slice",
                 "window at offset (1,1) does not fit in [2,3,4,4]");

    md_tensor lx = md_tbuf2(be, 2, 5), lw = md_tbuf2(be, 3, 4), ly = md_tbuf2(be, 2, 3);
    expect_error(md_linear_forward(be, &lx, &lw, NULL, &ly), "linear", "linear",
                 "weight must be [out, 5], got [3,4]");

    int32_t labels[2] = {0, 7};
    float   loss = -1.0f;
    expect_error(md_softmax_ce(be, &ly, labels, &loss, NULL), "labels", "softmax_cross_entropy",
                 "label 7 of row 1 is outside [0, 3)");
    expect_error(md_act_forward(be, MD_ACT_RELU, &x, &a), "relu", "relu",
                 "output has shape [2,1,4,4], expected [2,3,4,4]");
    expect_error(md_add(be, &x, &a), "add", "add", "accumulator has shape");
    md_rng r;
    md_rng_seed(&r, 1, 0);
    expect_error(md_dropout_forward(be, 1.0f, &r, &x, &y, &y), "dropout p", "dropout", "p=1");
    CHECK_OK(md_gap_forward(be, &x, &ly)); /* the right shape passes */
    md_tensor gy = md_tbuf2(be, 2, 4);
    expect_error(md_gap_forward(be, &x, &gy), "gap2", "global_avg_pool",
                 "output has shape [2,4], expected [2,3]");

    md_tensor *all[] = {&x, &y, &g4, &b3, &m, &v, &a, &bb, &s5, &lx, &lw, &ly, &gy};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) md_tbuf_free(be, all[i]);
}

/* The depthwise kernels' per-thread scratch cannot be had: the op fails with
 * MD_ERR_NOMEM instead of returning success with its output untouched.
 * RLIMIT_AS makes the allocation fail; the sanitizers reserve terabytes of
 * address space, so this runs only in plain builds. */
static void test_dwconv_nomem(void) {
#if defined(__SANITIZE_ADDRESS__)
    printf("test_dwconv_nomem: skipped under AddressSanitizer\n");
#else
    /* 5x5: our own kernel (plain 3x3 goes to oneDNN) */
    md_conv_desc d = {.n = 1, .c_in = 2, .h = 1500, .w = 1500, .c_out = 2, .kh = 5, .kw = 5,
                      .stride = 1, .pad = 2, .dilation = 1, .groups = 2};
    md_conv     *c = NULL;
    CHECK_OK(md_conv_create(be, &d, &c));
    md_tensor x = md_tbuf4(be, 1, 2, 1500, 1500), w = md_tbuf4(be, 2, 1, 5, 5),
              y = md_tbuf4(be, 1, 2, 1500, 1500);
    y.data[0] = 42.0f;
    long          pages = 0;
    FILE         *f = fopen("/proc/self/statm", "r");
    int           got = f && fscanf(f, "%ld", &pages) == 1;
    struct rlimit old;
    if (f) fclose(f);
    CHECK(got && getrlimit(RLIMIT_AS, &old) == 0, "cannot read this process's memory size");
    /* 1 MiB above what is mapped now; the scratch is a 9 MB padded plane. */
    struct rlimit tight = {(rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (1 << 20), old.rlim_max};
    CHECK(setrlimit(RLIMIT_AS, &tight) == 0, "setrlimit");
    md_status s = md_conv_forward(c, &x, &w, &y);
    setrlimit(RLIMIT_AS, &old);
    CHECK(s == MD_ERR_NOMEM, "depthwise forward without memory for its scratch: status %d, "
                             "expected MD_ERR_NOMEM", (int)s);
    CHECK(strstr(md_error_message(), "scratch"), "message '%s' does not name the scratch",
          md_error_message());
    md_error_clear();
    md_conv_destroy(c);
    md_tbuf_free(be, &x);
    md_tbuf_free(be, &w);
    md_tbuf_free(be, &y);
#endif
}


int main(void) {
    if (md_backend_cpu_create(1, &be) != MD_OK) {
        fprintf(stderr, "backend: %s\n", md_error_message());
        return 2;
    }
    test_conv_errors();
    test_other_errors();
    test_dwconv_nomem();
    md_test_host_memory(be);
    md_backend_destroy(be);
    return md_test_finish("test_ops_errors");
}
