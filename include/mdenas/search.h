/* The MdeNAS search: data, supernet, sampling periods, multinomial updates,
 * and everything a run directory holds. */
#ifndef MDENAS_SEARCH_H
#define MDENAS_SEARCH_H

#include <stdint.h>

#include "mdenas/error.h"
#include "mdenas/mdl.h"

typedef struct {
    char        preset[16];
    char        dataset[16]; /* fashion-mnist | cifar10 | synthetic */
    char        data_dir[512];
    int         subset;       /* use the first N training images (0: all) */
    double      val_fraction; /* of the (subset of the) training set held out */
    int         epochs;
    int         batch; /* global */
    double      lr, lr_min, momentum, weight_decay, clip;
    int         cells, channels, nodes;
    double      alpha;
    md_mdl_rule rule;
    int         period_steps; /* 0: one sampling period per epoch */
    int         val_batches;  /* 0: the whole validation split each period */
    int         crop_pad, flip;
    uint64_t    seed;
    int         threads;
    int         log_every; /* steps between progress lines */
    char        out[512];  /* run directory */
} md_search_config;

/* Defaults, then a preset's values ("cifar10", "tiny", "" for none). */
md_status md_search_config_preset(md_search_config *c, const char *preset);
/* Cross-field checks; the message names the option. */
md_status md_search_config_check(const md_search_config *c);
/* Fill options that depend on others (the dataset's default folder), then check. */
md_status md_search_config_resolve(md_search_config *c);

/* Run the search; rank 0 writes the run directory. world = 1 for now. */
md_status md_search_run(const md_search_config *c, int rank, int world);

/* Print the genotype of the run in `dir` (finished or not) to stdout. */
md_status md_search_derive(const char *dir);

#endif
