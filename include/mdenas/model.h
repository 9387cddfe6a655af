/* A model: the arenas of one network (or supernet) replica, and nothing of
 * the space it came from. params holds every weight, grads and momentum mirror
 * its table, stats holds the BN running statistics. On a device backend grads
 * is plain device memory (the host reads it only with md_backend_download),
 * the others memory that the host and the backend share. A search space declares
 * the tensors (md_space_model_create); plans, the optimiser, the communicator
 * and checkpoints work on the arenas by offset. */
#ifndef MDENAS_MODEL_H
#define MDENAS_MODEL_H

#include "mdenas/arena.h"
#include "mdenas/backend.h"

typedef struct md_model {
    md_arena    params, grads, momentum, stats;
    md_backend *be; /* where the arenas live (NULL: host memory); outlives the model */
} md_model;

/* An empty model whose arenas will live in `be`'s memory as above (NULL: host
 * memory). Declare tensors into params and stats, then finalize. */
md_status md_model_create(md_backend *be, md_model **out);
/* Allocate params and stats and mirror params into grads and momentum. */
md_status md_model_finalize(md_model *m);
void      md_model_destroy(md_model *m);

#endif
