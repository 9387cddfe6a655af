/* Search spaces: all the search loop knows of one (DESIGN.md). A space is a
 * set of categorical distributions ("dists", one per DARTS edge or mobile
 * block) over the same list of K candidate ops, some masked (p = 0, never
 * sampled) where an op does not apply. It declares the supernet's weights
 * into a model, emits the plan of one sampled architecture (one op index per
 * distribution), derives and exports the final architecture from p, and
 * describes its configuration. Two spaces implement it: darts (cells) and
 * mobile (MBConv blocks, ProxylessNAS skeleton). */
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
/* The reverse: weights and statistics from such a file into m (names, dtypes and
 * shapes checked; MD_ERR_DATA naming the file and tensor). */
md_status md_space_import_weights(const md_space *s, md_model *m, const int *choice,
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

/* ---- the DARTS evaluation network of a genotype ----------------------------------- */

#define MD_DARTS_NET_MAX_NODES 6

/* NetworkCIFAR of DARTS (quark0/darts cnn/model.py): stem 3x3 conv to 3C + BN,
 * `cells` cells of the genotype (reductions at 1/3 and 2/3 of the depth), every
 * BN affine, no BN after pools, drop-path on every op but the identity, an
 * optional auxiliary head after the cell at 2/3 depth, dropout before the
 * classifier. A fixed network: as a space it has one distribution per gene, each
 * with the gene's op as its only candidate. Weights carry DARTS's state_dict
 * names (docs/formats.md). */
typedef struct {
    md_darts_config net;   /* image, classes, cells (20), channels (36), nodes (from the genotype) */
    int   gene[2][2 * MD_DARTS_NET_MAX_NODES][2]; /* [normal, reduce][gene] = {op, input} */
    int   auxiliary;       /* the auxiliary head (needs an 8x8 map at 2/3 depth) */
    float aux_weight;      /* its loss weight (0.4) */
    float dropout;         /* before the classifier */
} md_darts_net_config;

/* The genes of a DARTS genotype: a `Genotype(normal=[('sep_conv_3x3', 0), ...],
 * normal_concat=range(2, 6), reduce=[...], reduce_concat=range(2, 6))` string, or
 * the name of a published one ("mdenas": the MdeNAS authors' CIFAR-10 cell,
 * "darts_v2"). Sets c->gene and c->net.nodes; `what` names the source. */
md_status md_darts_genotype_parse(const char *text, const char *what, md_darts_net_config *c);
/* A genotype drawn uniformly from the DARTS cell space (DARTS's random-search
 * baseline): each of `nodes` nodes takes two distinct inputs uniformly from its
 * predecessors, each with an op uniform over the seven other than none; normal
 * and reduction cells independent. Sets c->gene and c->net.nodes. */
void      md_darts_genotype_random(uint64_t seed, int nodes, md_darts_net_config *c);
/* c's genes as DARTS prints a Genotype; MD_ERR_ARG when longer than len. */
md_status md_darts_genotype_format(const md_darts_net_config *c, char *buf, size_t len);
md_status md_space_darts_net_create(const md_darts_net_config *c, md_space **out);
/* Parameters with and without the auxiliary head, multiply-adds without it
 * (what inference runs), per image at the configured input size. */
md_status md_darts_net_count(const md_darts_net_config *c, double *params, double *params_no_aux,
                             double *madds);

/* ---- mobile (MBConv blocks) ---------------------------------------------------- */

enum { MD_MOBILE_MAX_STAGES = 32, MD_MOBILE_MAX_CANDIDATES = 16, MD_MOBILE_MAX_BLOCKS = 128 };

typedef struct {
    int kernel, expand; /* expand 0: `zero` (skip the block) */
} md_mbconv;

typedef struct {
    int in_c, in_h, in_w, classes;
    int stem;                  /* stem conv width (before the width multiplier) */
    md_mbconv first;           /* the fixed first block (searched with first_searchable) */
    int first_width;
    int first_searchable;      /* the first block is a distribution too (no zero there) */
    int nstages;
    int width[MD_MOBILE_MAX_STAGES], blocks[MD_MOBILE_MAX_STAGES], stride[MD_MOBILE_MAX_STAGES];
    int feature_mix;           /* 1x1 conv width before the pool (0: none) */
    double width_mult;         /* scales every width, rounded to a multiple of 8 */
    int ncand;
    md_mbconv cand[MD_MOBILE_MAX_CANDIDATES]; /* zero, if present, is masked where no residual */
    double bn_eps;
    int exact_widths;          /* widths as given (a released net's), not scaled and rounded */
    double dropout;            /* before the classifier (a network being trained; 0: none) */
    int nfixed;                /* > 0: a fixed network, block d takes candidate fixed[d] only */
    int fixed[MD_MOBILE_MAX_BLOCKS];
} md_mobile_config;

/* ProxylessNAS's GPU search supernet (MDENAS.md): stem 32, first block 3x3
 * e1 to 16, stages 24/40/80/96/192/320 x 4/4/4/4/4/1 with strides
 * 2/2/2/1/2/1, feature mix 1280; candidates zero + {3,5,7} x {3,6}. */
void      md_mobile_config_default(md_mobile_config *c);
/* Settings from a JSON object (keys as md_space_config_json writes them; absent
 * keys keep c's values); `what` names the file. user = 1: a user's --space-file,
 * which may not hold the run's own keys (input, classes, width_mult: those come
 * from the data and the options) nor state.json's; user = 0: a state.json or a
 * checkpoint's record, which holds them. */
md_status md_mobile_config_parse(const md_jvalue *obj, const char *what, int user,
                                 md_mobile_config *c);
/* "3x3_MBConv6" / "zero" -> k, e. */
md_status md_mbconv_parse(const char *name, md_mbconv *out);
md_status md_space_mobile_create(const md_mobile_config *cfg, md_space **out);
/* A ProxylessNAS model-zoo net config (`first_conv`, `blocks`, `feature_mix_layer`,
 * `classifier`) as a mobile space of one stage per block, candidates the
 * net's (k, e) pairs and zero, and the architecture that is the net (choice,
 * MD_MOBILE_MAX_BLOCKS entries). Input side and classes come from the caller. */
md_status md_mobile_from_net_config(const md_jvalue *net, const char *what, int in_side,
                                    md_mobile_config *cfg, int *choice, int *nchoice);

/* Parameters and multiply-adds of the network of one architecture (an op per
 * distribution) at the space's input size, counted as ProxylessNAS does:
 * conv and linear weights + biases + BN affine; multiply-adds of conv and linear. */
md_status md_space_count(const md_space *s, const int *choice, double *params, double *madds);
/* The same without the parts that run in training only (an auxiliary head). */
md_status md_space_count_inference(const md_space *s, const int *choice, double *params,
                                   double *madds);
/* The most probable allowed op per distribution (ties: the lower op index). */
void      md_space_argmax(const md_space *s, const double *p, int *choice);

#endif
