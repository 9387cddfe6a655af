/* Core: tensors, the parameter arena, the Philox RNG, and the optimiser
 * arithmetic (SGD, gradient clipping, cosine schedule) on hand-worked cases. */
#include <math.h>
#include <string.h>

#include "mdenas/arena.h"
#include "mdenas/optim.h"
#include "testutil.h"

static void test_tensor(void) {
    float     buf[24];
    md_tensor t = md_tensor_4d(buf, 1, 2, 3, 4);
    char      s[64];
    CHECK(md_tensor_numel(&t) == 24, "numel %zu", md_tensor_numel(&t));
    CHECK(strcmp(md_tensor_shape_str(&t, s, sizeof s), "[1,2,3,4]") == 0, "shape str '%s'", s);
    md_tensor u = md_tensor_2d(buf, 4, 6);
    CHECK(!md_tensor_same_shape(&t, &u), "different shapes compare equal");
    CHECK(strcmp(md_tensor_shape_str(&u, s, 4), "[4,") == 0, "truncated shape str '%s'", s);
}

static void test_arena(void) {
    md_arena a;
    md_arena_init(&a);
    int d1[4] = {16, 3, 3, 3}, d2[1] = {5}, d3[2] = {10, 7}, idx = -1;
    CHECK_OK(md_arena_add(&a, "stem.conv", 4, d1, &idx));
    CHECK(idx == 0, "first index %d", idx);
    CHECK_OK(md_arena_add(&a, "stem.bn.gamma", 1, d2, &idx));
    CHECK_OK(md_arena_add(&a, "classifier.w", 2, d3, &idx));
    CHECK(idx == 2, "third index %d", idx);
    CHECK(md_arena_add(&a, "stem.conv", 1, d2, NULL) == MD_ERR_ARG, "duplicate name accepted");
    CHECK(strstr(md_error_message(), "stem.conv") != NULL, "message '%s'", md_error_message());
    int bad[2] = {3, 0};
    CHECK(md_arena_add(&a, "zero", 2, bad, NULL) == MD_ERR_ARG, "zero dim accepted");
    CHECK_OK(md_arena_finalize(&a));
    /* 432 floats, then 5 padded to 16, then 70 padded to 80. */
    CHECK(a.table[0].offset == 0 && a.table[1].offset == 432 && a.table[2].offset == 448,
          "offsets %zu %zu %zu", a.table[0].offset, a.table[1].offset, a.table[2].offset);
    CHECK(a.numel == 528, "arena numel %zu", a.numel);
    CHECK(((uintptr_t)a.data % 64) == 0, "arena not 64-byte aligned");
    for (int i = 0; i < a.count; i++)
        CHECK(a.table[i].offset % 16 == 0, "tensor %d offset %zu", i, a.table[i].offset);
    CHECK(md_arena_add(&a, "late", 1, d2, NULL) == MD_ERR_ARG, "add after finalize accepted");
    CHECK(md_arena_find(&a, "classifier.w") == 2 && md_arena_find(&a, "nope") == -1, "find");
    md_tensor t = md_arena_tensor(&a, 2);
    CHECK(t.data == a.data + 448 && t.ndim == 2 && t.dim[0] == 10 && t.dim[1] == 7,
          "tensor view of classifier.w");
    t.data[3] = 1.5f;
    md_arena g;
    CHECK_OK(md_arena_mirror(&g, &a));
    CHECK(g.count == 3 && g.numel == a.numel && g.table[2].offset == 448, "mirror table");
    CHECK(g.data != a.data && g.data[448 + 3] == 0.0f, "mirror must be zeroed, separate memory");
    md_arena_free(&g);
    md_arena_free(&a);
}

static void test_rng(void) {
    /* Known answers from Random123's tests/kat_vectors (philox4x32 10). */
    static const uint32_t ctr[3][4] = {{0, 0, 0, 0},
                                       {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
                                       {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}};
    static const uint32_t key[3][2] = {{0, 0}, {0xffffffff, 0xffffffff}, {0xa4093822, 0x299f31d0}};
    static const uint32_t want[3][4] = {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
                                        {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
                                        {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}};
    for (int k = 0; k < 3; k++) {
        uint32_t out[4];
        md_philox4x32(ctr[k], key[k], out);
        CHECK(memcmp(out, want[k], sizeof out) == 0, "philox KAT %d: %08x %08x %08x %08x", k,
              out[0], out[1], out[2], out[3]);
    }
    md_rng a, b;
    md_rng_seed(&a, 42, 0);
    md_rng_seed(&b, 42, 0);
    int same = 1;
    for (int i = 0; i < 100; i++) same &= md_rng_u32(&a) == md_rng_u32(&b);
    CHECK(same, "same seed gave different streams");
    md_rng_seed(&b, 42, 1);
    md_rng_seed(&a, 42, 0);
    int diff = 0;
    for (int i = 0; i < 100; i++) diff += md_rng_u32(&a) != md_rng_u32(&b);
    CHECK(diff > 95, "streams 0 and 1 agree on %d of 100 draws", 100 - diff);
    /* A split child does not depend on how far the parent has advanced. */
    md_rng_seed(&a, 9, 0);
    md_rng c1 = md_rng_split(&a, 3);
    for (int i = 0; i < 17; i++) md_rng_u32(&a);
    md_rng c2 = md_rng_split(&a, 3);
    CHECK(md_rng_u32(&c1) == md_rng_u32(&c2), "split depends on parent position");
    /* Uniform moments over 200k draws: mean 1/2 (sd 6.5e-4), variance 1/12. */
    double s = 0, q = 0, nsum = 0, nsq = 0;
    int    n = 200000;
    float  lo = 1, hi = 0;
    for (int i = 0; i < n; i++) {
        float u = md_rng_uniform(&a);
        s += u;
        q += (double)u * u;
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
        float z = md_rng_normal(&a);
        nsum += z;
        nsq += (double)z * z;
    }
    double mean = s / n, var = q / n - mean * mean;
    CHECK(fabs(mean - 0.5) < 4e-3 && fabs(var - 1.0 / 12) < 2e-3, "uniform mean %g var %g", mean,
          var);
    CHECK(lo >= 0.0f && hi < 1.0f, "uniform range [%g, %g]", lo, hi);
    CHECK(fabs(nsum / n) < 0.01 && fabs(nsq / n - 1.0) < 0.02, "normal mean %g var %g", nsum / n,
          nsq / n);
}

static void test_optim(md_backend *be) {
    /* SGD, hand-worked: w=1, g=0.5, wd=0.1, mu=0.9, lr=0.1.
     * step 1: d = 0.5 + 0.1*1 = 0.6; v = 0.6; w = 1 - 0.06 = 0.94
     * step 2: d = 0.5 + 0.094 = 0.594; v = 0.9*0.6 + 0.594 = 1.134; w = 0.94 - 0.1134 = 0.8266 */
    float w = 1.0f, g = 0.5f, v = 0.0f;
    CHECK_OK(md_sgd_update(be, &w, &g, &v, 1, 0.1f, 0.9f, 0.1f));
    CHECK(fabsf(w - 0.94f) < 1e-6f && fabsf(v - 0.6f) < 1e-6f, "sgd step 1: w %g v %g", w, v);
    CHECK_OK(md_sgd_update(be, &w, &g, &v, 1, 0.1f, 0.9f, 0.1f));
    CHECK(fabsf(w - 0.8266f) < 1e-6f && fabsf(v - 1.134f) < 1e-6f, "sgd step 2: w %g v %g", w, v);
    /* Clipping: grads (3, 4) | (12) over two ranges: norm 13; max 6.5 halves them (to 1e-6). */
    float    grads[32] = {0};
    md_range r[2] = {{0, 2}, {16, 1}};
    grads[0] = 3, grads[1] = 4, grads[16] = 12, grads[5] = 100; /* [5] is outside the ranges */
    float norm = 0;
    CHECK_OK(md_clip_grad_norm(be, grads, r, 2, 6.5f, &norm));
    CHECK(fabsf(norm - 13.0f) < 1e-5f, "norm %g", norm);
    CHECK(fabsf(grads[0] - 1.5f) < 1e-5f && fabsf(grads[16] - 6.0f) < 1e-5f && grads[5] == 100,
          "clipped %g %g %g", grads[0], grads[16], grads[5]);
    CHECK_OK(md_clip_grad_norm(be, grads, r, 2, 100.0f, &norm));
    CHECK(fabsf(grads[0] - 1.5f) < 1e-6f, "clip below the threshold changed a gradient");
    CHECK(md_clip_grad_norm(be, grads, r, 2, 0.0f, NULL) == MD_ERR_ARG, "max_norm 0 accepted");
    /* Cosine: lr0 0.025 to 0 over 10 steps; t=5 is exactly half, t=10 and beyond is the minimum. */
    CHECK(md_lr_cosine(0.025f, 0.0f, 0, 10) == 0.025f, "cosine t=0");
    CHECK(fabsf(md_lr_cosine(0.025f, 0.0f, 5, 10) - 0.0125f) < 1e-8f, "cosine t=5");
    CHECK(fabsf(md_lr_cosine(0.025f, 0.001f, 2, 10) -
                (0.001f + 0.024f * (1.0f + cosf(0.2f * 3.14159265f)) / 2.0f)) < 1e-7f,
          "cosine t=2");
    CHECK(md_lr_cosine(0.025f, 0.001f, 12, 10) == 0.001f, "cosine past the end");
}

int main(void) {
    md_backend *be = NULL;
    if (md_backend_cpu_create(1, &be) != MD_OK) {
        fprintf(stderr, "backend: %s\n", md_error_message());
        return 2;
    }
    test_tensor();
    test_arena();
    test_rng();
    test_optim(be);
    md_backend_destroy(be);
    return md_test_finish("test_core");
}
