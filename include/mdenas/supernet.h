/* The DARTS search space as a supernet, and plans of sampled networks.
 *
 * The supernet owns every weight of every candidate op of every cell in one
 * parameter arena (plus mirrored gradient and momentum arenas, and an arena of
 * BN running statistics). A plan is one sampled network compiled into a flat
 * list of op invocations over planned buffers: forward walks it, backward
 * walks it in reverse. Only the sampled ops run and only their weights get
 * gradients; the memory of a step is that of one ordinary network. */
#ifndef MDENAS_SUPERNET_H
#define MDENAS_SUPERNET_H

#include <stddef.h>
#include <stdint.h>

#include "mdenas/arena.h"
#include "mdenas/backend.h"
#include "mdenas/mdl.h"
#include "mdenas/optim.h"

/* DARTS candidate ops, in DARTS's order. */
enum {
    MD_OP_NONE,
    MD_OP_MAX_POOL_3X3,
    MD_OP_AVG_POOL_3X3,
    MD_OP_SKIP_CONNECT,
    MD_OP_SEP_CONV_3X3,
    MD_OP_SEP_CONV_5X5,
    MD_OP_DIL_CONV_3X3,
    MD_OP_DIL_CONV_5X5,
    MD_DARTS_OPS
};
extern const char *const md_darts_op_names[MD_DARTS_OPS];

typedef struct {
    int in_c, in_h, in_w; /* image shape */
    int classes;
    int cells;    /* 8 in the search network */
    int channels; /* C: 16 */
    int nodes;    /* intermediate nodes per cell: 4 (1 .. MD_MAX_NODES) */
} md_darts_config;

typedef struct md_supernet md_supernet;

md_status md_supernet_create(const md_darts_config *cfg, uint64_t seed, md_supernet **out);
/* The same, with every arena in memory that backend `be` and the host share
 * (md_backend_alloc_shared); be must outlive the supernet. */
md_status md_supernet_create_on(const md_darts_config *cfg, uint64_t seed, md_backend *be,
                                md_supernet **out);
void      md_supernet_destroy(md_supernet *s);
const md_darts_config *md_supernet_config(const md_supernet *s);
int       md_supernet_edges(const md_supernet *s); /* per cell type: 14 for 4 nodes */
int       md_supernet_is_reduction(const md_supernet *s, int cell);
md_arena *md_supernet_params(md_supernet *s);
md_arena *md_supernet_grads(md_supernet *s);
md_arena *md_supernet_momentum(md_supernet *s);
md_arena *md_supernet_stats(md_supernet *s); /* BN running mean/var */

/* At most this many intermediate nodes per cell (27 edges); DARTS uses 4. */
#define MD_MAX_NODES 6
#define MD_MAX_EDGES (MD_MAX_NODES * (MD_MAX_NODES + 3) / 2)

/* An architecture: one op per edge for normal cells, one per edge for reduction cells. */
typedef struct {
    int normal[MD_MAX_EDGES];
    int reduce[MD_MAX_EDGES];
} md_arch;

typedef struct md_plan md_plan;

/* Compile `arch` for `rows` images per step on backend `be`. */
md_status md_plan_create(md_supernet *s, md_backend *be, const md_arch *arch, int rows,
                         md_plan **out);
void      md_plan_destroy(md_plan *p);
int       md_plan_rows(const md_plan *p);
/* x: rows images, NCHW floats (backend memory). train: BN uses batch statistics
 * and updates running statistics; eval_batch_stats: BN uses batch statistics
 * without touching running statistics (MdeNAS validation); otherwise running. */
typedef enum { MD_MODE_TRAIN, MD_MODE_EVAL_BATCH_STATS, MD_MODE_EVAL } md_mode;
md_status md_plan_forward(md_plan *p, const float *x, md_mode mode);
/* Cross-replica BN for every BN step of the plan (NULL: per-replica statistics). */
void      md_plan_set_bn_sync(md_plan *p, const md_bn_sync *sync);
/* A replica with no rows in this batch takes part in the BN reductions of a
 * forward pass that the other replicas run (a no-op without BN sync). */
md_status md_plan_forward_absent(md_plan *p, md_mode mode);
/* After forward: mean loss and top-1 correct count over the rows; with
 * `backward`, also the gradients of the active weights (accumulated into the
 * grads arena: zero them first with md_plan_zero_grads). */
md_status md_plan_loss(md_plan *p, const int32_t *labels, float *loss, int *correct);
/* Multiply the loss gradient (after md_plan_loss) by factor: a data-parallel
 * replica passes its rows / the global rows, so that its gradients are its part
 * of the global batch's mean-loss gradient and the allreduce is a plain sum. */
md_status md_plan_scale_loss_grad(md_plan *p, float factor);
/* md_plan_loss with the mean loss and the correct count left in backend memory
 * (out[0], out[1]): no host round trip, so a step can be captured in a graph. */
md_status md_plan_loss_dev(md_plan *p, const int32_t *labels, float *out);
md_status md_plan_backward(md_plan *p);
md_status md_plan_zero_grads(md_plan *p);
/* Arena ranges of the weights this plan uses (stem, preprocessing, sampled
 * ops, classifier), merged where adjacent. */
const md_range *md_plan_ranges(const md_plan *p, int *count);
/* Bytes of activation and gradient memory the plan holds. */
size_t    md_plan_bytes(const md_plan *p);
int       md_plan_steps(const md_plan *p);

/* Derive the final normal and reduction cells (MDENAS.md step 6) from p
 * (edges x MD_DARTS_OPS each) and write the DARTS genotype string, e.g.
 * "Genotype(normal=[('sep_conv_5x5', 1), ...], normal_concat=range(2, 6), ...)".
 * genes_normal / genes_reduce (may be NULL) receive 2 * nodes genes each. */
md_status md_darts_genotype(const double *p_normal, const double *p_reduce, int nodes, char *str,
                            size_t len, md_gene *genes_normal, md_gene *genes_reduce);

#endif
