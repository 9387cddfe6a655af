/* Parameter arena: every tensor of a model in one contiguous, 64-byte aligned
 * buffer, with a table of (name, offset, shape). Gradients and momentum are
 * arenas that mirror the table of the parameter arena; BN running statistics
 * live in an arena of their own. A set of tensors is then a set of offset
 * ranges, which is what allreduce, checkpointing and the optimiser work on. */
#ifndef MDENAS_ARENA_H
#define MDENAS_ARENA_H

#include <stddef.h>

#include "mdenas/error.h"
#include "mdenas/tensor.h"

#define MD_NAME_MAX 96

typedef struct {
    char   name[MD_NAME_MAX];
    size_t offset; /* in floats from the arena base, a multiple of 16 */
    int    ndim;
    int    dim[MD_MAX_DIMS];
    size_t numel;
} md_param;

/* Where an arena's buffer lives: NULL functions mean host memory. A compute
 * backend passes memory that both the host and itself can address (CUDA:
 * managed memory), so initialisation, checkpoints and MPI work on it as is. */
typedef struct {
    md_status (*alloc)(void *ctx, size_t bytes, void **out); /* zeroed */
    void (*free)(void *ctx, void *p);
    void *ctx;
} md_allocator;

typedef struct {
    md_allocator alloc; /* set before md_arena_finalize; mirrors inherit it */
    md_param *table;
    int       count;
    int       capacity;
    size_t    numel; /* floats allocated, including alignment padding */
    float    *data;  /* NULL until md_arena_finalize */
} md_arena;

void md_arena_init(md_arena *a);
/* Declare a tensor; its index is returned in *index (may be NULL). Names are unique. */
md_status md_arena_add(md_arena *a, const char *name, int ndim, const int *dim, int *index);
/* Allocate the zeroed buffer; no md_arena_add afterwards. */
md_status md_arena_finalize(md_arena *a);
/* Make `dst` a zeroed arena with the same table as the finalized `src`. */
md_status md_arena_mirror(md_arena *dst, const md_arena *src);
void      md_arena_free(md_arena *a);
/* Index of a tensor by name, or -1. */
int       md_arena_find(const md_arena *a, const char *name);
md_tensor md_arena_tensor(const md_arena *a, int index);

#endif
