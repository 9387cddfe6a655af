#include "mdenas/model.h"

#include <stdlib.h>

static md_status shared_alloc(void *ctx, size_t bytes, void **out) {
    return md_backend_alloc_shared(ctx, bytes, out);
}

static void shared_free(void *ctx, void *p) {
    md_backend_free_shared(ctx, p);
}

static md_status device_alloc(void *ctx, size_t bytes, void **out) {
    return md_backend_alloc(ctx, bytes, out);
}

static void device_free(void *ctx, void *p) {
    md_backend_free(ctx, p);
}

md_status md_model_create(md_backend *be, md_model **out) {
    md_model *m = calloc(1, sizeof *m);
    *out = NULL;
    if (!m) return md_fail(MD_ERR_NOMEM, "model");
    m->be = be;
    md_arena_init(&m->params);
    md_arena_init(&m->stats);
    if (be) {
        md_allocator a = {shared_alloc, shared_free, be};
        m->params.alloc = a, m->stats.alloc = a;
    }
    *out = m;
    return MD_OK;
}

md_status md_model_finalize(md_model *m) {
    MD_TRY(md_arena_finalize(&m->params));
    MD_TRY(md_arena_finalize(&m->stats));
    /* Gradients only ever meet the host through the communicator, which copies
     * them explicitly: plain device memory, where NCCL sums them. */
    md_arena like_params = m->params;
    if (m->be) like_params.alloc = (md_allocator){device_alloc, device_free, m->be};
    MD_TRY(md_arena_mirror(&m->grads, &like_params));
    return md_arena_mirror(&m->momentum, &m->params);
}

void md_model_destroy(md_model *m) {
    if (!m) return;
    md_arena_free(&m->params);
    md_arena_free(&m->grads);
    md_arena_free(&m->momentum);
    md_arena_free(&m->stats);
    free(m);
}
