#include "mdenas/arena.h"

#include <stdlib.h>
#include <string.h>

#define MD_ARENA_ALIGN_FLOATS 16 /* 64 bytes: one cache line, one AVX-512 vector */

void md_arena_init(md_arena *a) {
    memset(a, 0, sizeof *a);
}

md_status md_arena_add(md_arena *a, const char *name, int ndim, const int *dim, int *index) {
    if (a->data) return md_fail(MD_ERR_ARG, "arena: cannot add '%s' after finalize", name);
    if (ndim < 1 || ndim > MD_MAX_DIMS)
        return md_fail(MD_ERR_ARG, "arena: '%s' has %d dims (1..%d allowed)", name, ndim,
                       MD_MAX_DIMS);
    if (strlen(name) >= MD_NAME_MAX)
        return md_fail(MD_ERR_ARG, "arena: name '%s' longer than %d characters", name,
                       MD_NAME_MAX - 1);
    if (md_arena_find(a, name) >= 0)
        return md_fail(MD_ERR_ARG, "arena: tensor '%s' declared twice", name);
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (dim[i] <= 0)
            return md_fail(MD_ERR_ARG, "arena: '%s' dim %d is %d (must be > 0)", name, i, dim[i]);
        numel *= (size_t)dim[i];
    }
    if (a->count == a->capacity) {
        int       cap = a->capacity ? 2 * a->capacity : 64;
        md_param *t = realloc(a->table, (size_t)cap * sizeof *t);
        if (!t) return md_fail(MD_ERR_NOMEM, "arena: table of %d entries", cap);
        a->table = t;
        a->capacity = cap;
    }
    md_param *p = &a->table[a->count];
    memset(p, 0, sizeof *p);
    strcpy(p->name, name);
    p->offset = a->numel;
    p->ndim = ndim;
    memcpy(p->dim, dim, (size_t)ndim * sizeof(int));
    p->numel = numel;
    a->numel += (numel + MD_ARENA_ALIGN_FLOATS - 1) / MD_ARENA_ALIGN_FLOATS * MD_ARENA_ALIGN_FLOATS;
    if (index) *index = a->count;
    a->count++;
    return MD_OK;
}

static md_status arena_alloc(md_arena *a) {
    size_t bytes = (a->numel ? a->numel : MD_ARENA_ALIGN_FLOATS) * sizeof(float);
    if (a->alloc.alloc) {
        void *p = NULL;
        MD_TRY(a->alloc.alloc(a->alloc.ctx, bytes, &p));
        a->data = p;
        return MD_OK;
    }
    a->data = aligned_alloc(64, bytes);
    if (!a->data)
        return md_fail(MD_ERR_NOMEM, "cannot allocate %.2f GiB (%zu bytes) for %d tensors",
                       (double)bytes / (1024.0 * 1024.0 * 1024.0), bytes, a->count);
    memset(a->data, 0, bytes);
    return MD_OK;
}

md_status md_arena_finalize(md_arena *a) {
    if (a->data) return md_fail(MD_ERR_ARG, "arena: finalized twice");
    return arena_alloc(a);
}

md_status md_arena_mirror(md_arena *dst, const md_arena *src) {
    if (!src->data) return md_fail(MD_ERR_ARG, "arena: mirror of an arena not finalized");
    md_arena_init(dst);
    dst->alloc = src->alloc;
    if (src->count) {
        dst->table = malloc((size_t)src->count * sizeof *dst->table);
        if (!dst->table) return md_fail(MD_ERR_NOMEM, "arena: mirror table");
        memcpy(dst->table, src->table, (size_t)src->count * sizeof *dst->table);
    }
    dst->count = dst->capacity = src->count;
    dst->numel = src->numel;
    md_status s = arena_alloc(dst);
    if (s != MD_OK) md_arena_free(dst);
    return s;
}

void md_arena_free(md_arena *a) {
    free(a->table);
    if (a->alloc.free && a->data) a->alloc.free(a->alloc.ctx, a->data);
    else free(a->data);
    md_allocator keep = a->alloc;
    md_arena_init(a);
    a->alloc = keep;
}

int md_arena_find(const md_arena *a, const char *name) {
    for (int i = 0; i < a->count; i++)
        if (strcmp(a->table[i].name, name) == 0) return i;
    return -1;
}

md_tensor md_arena_tensor(const md_arena *a, int index) {
    md_tensor t = {0};
    if (index < 0 || index >= a->count) return t;
    const md_param *p = &a->table[index];
    t.data = a->data ? a->data + p->offset : NULL;
    t.ndim = p->ndim;
    memcpy(t.dim, p->dim, sizeof t.dim);
    return t;
}
