/* The DARTS search space in the terms of its own: a supernet (the darts space
 * and its model, every weight of every candidate op of every cell) and plans
 * of md_arch architectures. The search loop uses the generic interface
 * (space.h, model.h, plan.h); this is for tests, benchmarks and users that
 * work with DARTS cells by name. */
#ifndef MDENAS_SUPERNET_H
#define MDENAS_SUPERNET_H

#include <stddef.h>
#include <stdint.h>

#include "mdenas/arena.h"
#include "mdenas/backend.h"
#include "mdenas/mdl.h"
#include "mdenas/optim.h"
#include "mdenas/plan.h"
#include "mdenas/space.h"

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
md_space *md_supernet_space(md_supernet *s);
md_model *md_supernet_model(md_supernet *s);

/* ---- derivation of the final cell (MDENAS.md step 6) ----------------------- */

/* For a cell with `nodes` intermediate nodes, edges are ordered node by node:
 * node i has inputs 0 .. i+1 (two cell inputs, then earlier nodes), so it owns
 * edges [sum_{m<i}(m+2), +i+2). Returns the edge count of such a cell. */
int md_cell_edges(int nodes);

typedef struct {
    int op;    /* index into the op list */
    int input; /* input node index */
} md_gene;

/* From the k probabilities of each of the cell's edges (p[edge*k + op]),
 * choose for every node its 2 strongest incoming edges (strength = the highest
 * probability of an op other than op `none_op`), each with that op.
 * Ties break toward the lower op index, then the lower input index.
 * genes receives 2 * nodes entries, per node strongest first. */
md_status md_derive_cell(const double *p, int nodes, int k, int none_op, md_gene *genes);

/* At most this many intermediate nodes per cell (27 edges); DARTS uses 4. */
#define MD_MAX_NODES 6
#define MD_MAX_EDGES (MD_MAX_NODES * (MD_MAX_NODES + 3) / 2)

/* An architecture: one op per edge for normal cells, one per edge for reduction cells. */
typedef struct {
    int normal[MD_MAX_EDGES];
    int reduce[MD_MAX_EDGES];
} md_arch;

/* Compile `arch` for `rows` images per step on backend `be`. */
md_status md_plan_create(md_supernet *s, md_backend *be, const md_arch *arch, int rows,
                         md_plan **out);

/* Derive the final normal and reduction cells (MDENAS.md step 6) from p
 * (edges x MD_DARTS_OPS each) and write the DARTS genotype string, e.g.
 * "Genotype(normal=[('sep_conv_5x5', 1), ...], normal_concat=range(2, 6), ...)".
 * genes_normal / genes_reduce (may be NULL) receive 2 * nodes genes each. */
md_status md_darts_genotype(const double *p_normal, const double *p_reduce, int nodes, char *str,
                            size_t len, md_gene *genes_normal, md_gene *genes_reduce);

#endif
