/* The CPU backend: host memory, a oneDNN engine and stream, OpenMP threads. */
#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_ops.h"
#include "data/augment_inline.h"

md_status md_dnnl_check(dnnl_status_t st, const char *what, const char *file, int line) {
    if (st == dnnl_success) return MD_OK;
    return md_fail_at(file, line, MD_ERR_BACKEND, "oneDNN call %s failed with status %d", what,
                      (int)st);
}

md_status md_cpu_scratch(md_backend *be, size_t floats, float **out) {
    md_cpu_backend *cb = md_cpu(be);
    if (floats > cb->scratch_floats) {
        size_t n = (floats + 15) / 16 * 16;
        float *p = aligned_alloc(64, n * sizeof(float));
        if (!p) return md_fail(MD_ERR_NOMEM, "cpu backend: scratch of %zu floats", n);
        free(cb->scratch);
        cb->scratch = p;
        cb->scratch_floats = n;
    }
    *out = cb->scratch;
    return MD_OK;
}

static void cpu_destroy(md_backend *be) {
    md_cpu_backend *cb = md_cpu(be);
    free(cb->scratch);
    if (cb->stream) dnnl_stream_destroy(cb->stream);
    if (cb->engine) dnnl_engine_destroy(cb->engine);
    free(cb);
}

static md_status cpu_alloc(md_backend *be, size_t bytes, void **out) {
    (void)be;
    size_t rounded = (bytes + 63) / 64 * 64;
    void  *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p) return md_fail(MD_ERR_NOMEM, "cpu backend: allocation of %zu bytes failed", bytes);
    memset(p, 0, rounded ? rounded : 64);
    *out = p;
    return MD_OK;
}

static void cpu_free(md_backend *be, void *p) {
    (void)be;
    free(p);
}

static md_status cpu_copy_bytes(md_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes && (!dst || !src)) return md_fail(MD_ERR_ARG, "cpu backend: copy with a NULL buffer");
    if (bytes) memmove(dst, src, bytes);
    return MD_OK;
}

static md_status cpu_sync(md_backend *be) {
    DNNL_TRY(dnnl_stream_wait(md_cpu(be)->stream));
    return MD_OK;
}

/* A batch of an in-memory dataset: the host loader's augmentation, one sample
 * per iteration; each row's stream depends on its position only, so the
 * thread count does not change the bits. */
static md_status cpu_augment_u8(md_backend *be, const md_u8_batch *b) {
    (void)be;
    size_t chw = (size_t)b->c * b->h * b->w;
#pragma omp parallel for schedule(static) if (b->rows * chw >= 16384)
    for (int i = 0; i < b->rows; i++) {
        long   j = b->j0 + i;
        int    src = b->order[j];
        md_rng r = md_rng_at_key(md_aug_sample_key(b->epoch_key, j));
        md_aug_image(b->images + (size_t)src * chw, b->lut, b->c, b->h, b->w, b->crop_pad,
                     b->flip, b->cutout, &r, b->x + (size_t)i * chw);
        b->y[i] = b->labels[src];
    }
    return MD_OK;
}

static const md_backend_vtable cpu_vtable = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .alloc_shared = cpu_alloc,
    .free_shared = cpu_free,
    .alloc_host = cpu_alloc,
    .free_host = cpu_free,
    .host = 1,
    .upload = cpu_copy_bytes,
    .download = cpu_copy_bytes,
    .sync = cpu_sync,
    .conv_create = md_cpu_conv_create,
    .conv_destroy = md_cpu_conv_destroy,
    .conv_forward = md_cpu_conv_forward,
    .conv_backward = md_cpu_conv_backward,
    .bn_forward_train = md_cpu_bn_forward_train,
    .bn_forward_eval = md_cpu_bn_forward_eval,
    .bn_backward_train = md_cpu_bn_backward_train,
    .bn_backward_eval = md_cpu_bn_backward_eval,
    .act_forward = md_cpu_act_forward,
    .act_backward = md_cpu_act_backward,
    .add = md_cpu_add,
    .copy = md_cpu_copy,
    .zero = md_cpu_zero,
    .pool_forward = md_cpu_pool_forward,
    .pool_backward = md_cpu_pool_backward,
    .gap_forward = md_cpu_gap_forward,
    .gap_backward = md_cpu_gap_backward,
    .concat_forward = md_cpu_concat_forward,
    .concat_backward = md_cpu_concat_backward,
    .slice_forward = md_cpu_slice_forward,
    .slice_backward = md_cpu_slice_backward,
    .linear_forward = md_cpu_linear_forward,
    .linear_backward = md_cpu_linear_backward,
    .dropout_forward = md_cpu_dropout_forward,
    .mul_add = md_cpu_mul_add,
    .row_scale = md_cpu_row_scale,
    .softmax_ce = md_cpu_softmax_ce,
    .top1_correct = md_cpu_top1_correct,
    .sgd_update = md_cpu_sgd_update,
    .sumsq = md_cpu_sumsq,
    .scale = md_cpu_scale,
    .loss_dev = md_cpu_loss_dev,
    .sumsq_dev = md_cpu_sumsq_dev,
    .clip_scale_dev = md_cpu_clip_scale_dev,
    .augment_u8 = cpu_augment_u8,
};

/* Denormal floats (gradients that decay through many layers) cost ~100x per
 * operation on x86; flush them to zero in every thread, as training
 * frameworks do. The OpenMP pool keeps its threads, so this sticks. */
static void flush_denormals(void) {
#if defined(__x86_64__) || defined(__i386__)
#pragma omp parallel
    _mm_setcsr(_mm_getcsr() | 0x8040); /* FTZ | DAZ */
#endif
}

md_status md_backend_cpu_create(int threads, md_backend **out) {
    *out = NULL;
    if (threads > MD_MAX_THREADS)
        return md_fail(MD_ERR_ARG, "cpu backend: %d threads asked, at most %d", threads,
                       MD_MAX_THREADS);
    md_cpu_backend *cb = calloc(1, sizeof *cb);
    if (!cb) return md_fail(MD_ERR_NOMEM, "cpu backend");
    cb->base.vt = &cpu_vtable;
    if (threads > 0) omp_set_num_threads(threads);
    if (omp_get_max_threads() > MD_MAX_THREADS) omp_set_num_threads(MD_MAX_THREADS);
    cb->threads = omp_get_max_threads();
    flush_denormals();
    md_status s = md_dnnl_check(dnnl_engine_create(&cb->engine, dnnl_cpu, 0), "dnnl_engine_create",
                                __FILE__, __LINE__);
    if (s == MD_OK)
        s = md_dnnl_check(dnnl_stream_create(&cb->stream, cb->engine, dnnl_stream_default_flags),
                          "dnnl_stream_create", __FILE__, __LINE__);
    if (s != MD_OK) {
        cpu_destroy(&cb->base);
        return s;
    }
    const dnnl_version_t *v = dnnl_version();
    snprintf(cb->base.describe, sizeof cb->base.describe, "cpu: oneDNN %d.%d.%d (%s), %d threads",
             v->major, v->minor, v->patch, v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other",
             cb->threads);
    *out = &cb->base;
    return MD_OK;
}

int md_backend_cpu_threads(const md_backend *be) {
    return be && be->vt == &cpu_vtable ? ((const md_cpu_backend *)be)->threads : 0;
}
