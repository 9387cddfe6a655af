/* Private to src/nas: what a search space implements (space.h dispatches). */
#ifndef MDENAS_NAS_SPACE_IMPL_H
#define MDENAS_NAS_SPACE_IMPL_H

#include "mdenas/space.h"
#include "mdenas/supernet.h"
#include "nas/builder.h"

typedef struct {
    void (*destroy)(md_space *s);
    /* Describe the network: every op of every distribution when choice is
     * NULL (declaring), else the op choice[d] of each distribution d. */
    md_status (*build)(const md_space *s, md_builder *b, const int *choice);
    void (*init_weights)(const md_space *s, md_model *m, uint64_t seed);
    md_status (*summary)(const md_space *s, const double *p, char *buf, size_t len);
    md_status (*export_json)(const md_space *s, const double *p, md_json *j);
    md_status (*write_files)(const md_space *s, const double *p, const char *dir); /* optional */
    void (*config_json)(const md_space *s, md_json *j);
    /* optional: the name a weight of architecture choice has in the reference
     * PyTorch code, or 0 when the tensor is not part of that network */
    int (*reference_name)(const md_space *s, const int *choice, const char *name, char *out,
                          size_t len);
} md_space_vt;

/* Every space struct begins with this. */
struct md_space {
    const md_space_vt *vt;
    md_space_info      info;
    int                in_c, in_h, in_w, classes;
};

/* PyTorch's default init: conv/linear weights and biases U(-1/sqrt(fan_in),
 * +), BN gamma 1 and beta 0, running var 1. Each tensor draws from its own
 * stream. */
void md_init_torch_default(md_model *m, uint64_t seed);
/* Running statistics: mean 0, var 1. */
void md_init_bn_stats(md_model *m);
int  md_name_ends_with(const char *s, const char *suffix);
/* A DARTS genotype.json object: the string, each cell's genes as [op, input] pairs
 * and its concat (darts.c; the search's export and the evaluation network's). */
void md_darts_genotype_json(md_json *j, const char *genotype, const md_gene *normal,
                            const md_gene *reduce, int nodes);

#endif
