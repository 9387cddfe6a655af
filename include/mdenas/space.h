/* Search spaces: all the search loop knows of one (DESIGN.md). A space is a
 * set of categorical distributions ("dists", one per DARTS edge or mobile
 * block) over the same list of K candidate ops, some masked (p = 0, never
 * sampled) where an op does not apply. It declares the supernet's weights
 * into a model, emits the plan of one sampled architecture (one op index per
 * distribution), derives and exports the final architecture from p, and
 * describes its configuration. darts (cells) implements it. */
#ifndef MDENAS_SPACE_H
#define MDENAS_SPACE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mdenas/runlog.h"
#include "mdenas/model.h"
#include "mdenas/plan.h"

typedef struct md_space md_space;

/* Rows of p that belong together: DARTS's normal and reduction cells, the
 * mobile space's blocks. key names them in files (p_<key>, entropy_<key>,
 * arch.<key>), label in pictures and logs. */
typedef struct {
    const char *key, *label;
    int         first, count; /* distributions [first, first + count) */
} md_space_group;

typedef struct {
    const char                  *name; /* "darts" | "mobile" */
    int                          dists, k;
    const char *const           *op_names;   /* [k] */
    const unsigned char         *allowed;    /* [dists * k]: 0 = masked */
    const md_space_group        *groups;
    int                          ngroups;
} md_space_info;

const md_space_info *md_space_describe(const md_space *s);
void                 md_space_destroy(md_space *s);

/* The supernet: every weight of every candidate op, initialised from seed, in
 * memory that be and the host share (be NULL: host memory). */
md_status md_space_model_create(const md_space *s, uint64_t seed, md_backend *be,
                                md_model **out);
/* Compile the architecture `choice` (an op index per distribution, none
 * masked) for `rows` images per step on backend be. */
md_status md_space_plan(const md_space *s, md_model *m, md_backend *be, const int *choice,
                        int rows, md_plan **out);
/* The final architecture derived from p ([dists * k]): one line for logs and
 * genotype.txt, ... */
md_status md_space_summary(const md_space *s, const double *p, char *buf, size_t len);
/* ... and the value of genotype.json (an object). */
md_status md_space_export(const md_space *s, const double *p, md_json *j);
/* Files besides genotype.json that a finished search writes into dir (the
 * mobile space: net.config in the ProxylessNAS model-zoo layout). */
md_status md_space_write_files(const md_space *s, const double *p, const char *dir);
/* The space's own settings as key/value pairs into an open JSON object
 * (state.json, for derive and inspect to rebuild the space). */
void      md_space_config_json(const md_space *s, md_json *j);
/* The weights and BN statistics of architecture `choice` as a safetensors file
 * with the names of the reference PyTorch code (the mobile space: the
 * ProxylessNAS model zoo's state_dict names; docs/formats.md has the map).
 * MD_ERR_ARG for a space without such names. */
md_status md_space_export_weights(const md_space *s, const md_model *m, const int *choice,
                                  const char *path);
/* A space again from what md_space_config_json wrote (or from a state.json
 * written before spaces had names: DARTS, its "nodes"); `what` names the file. */
md_status md_space_from_json(const md_jvalue *obj, const char *what, md_space **out);

/* ---- DARTS -------------------------------------------------------------------- */

typedef struct {
    int in_c, in_h, in_w; /* image shape */
    int classes;
    int cells;    /* 8 in the search network */
    int channels; /* C: 16 */
    int nodes;    /* intermediate nodes per cell: 4 (1 .. MD_MAX_NODES) */
} md_darts_config;

md_status md_space_darts_create(const md_darts_config *cfg, md_space **out);

/* Parameters and multiply-adds of the network of one architecture (an op per
 * distribution) at the space's input size, counted as ProxylessNAS does:
 * conv and linear weights + biases + BN affine; multiply-adds of conv and linear. */
md_status md_space_count(const md_space *s, const int *choice, double *params, double *madds);
/* The most probable allowed op per distribution (ties: the lower op index). */
void      md_space_argmax(const md_space *s, const double *p, int *choice);

#endif
