/* The MdeNAS search: data, supernet, sampling periods, multinomial updates,
 * and everything a run directory holds. */
#ifndef MDENAS_SEARCH_H
#define MDENAS_SEARCH_H

#include <stdint.h>
#include <stdio.h>

#include "mdenas/error.h"
#include "mdenas/mdl.h"

typedef struct {
    char        preset[24];
    char        space[16];      /* darts | mobile */
    char        space_file[512]; /* mobile: JSON space description ("": the default space) */
    double      width_mult;     /* mobile: width multiplier */
    char        candidates[256]; /* mobile: comma list of candidate ops ("": the space's) */
    char        dataset[16]; /* fashion-mnist | cifar10 | synthetic | imagenet */
    char        data_dir[512];
    int         subset;       /* use the first N training images (0: all) */
    double      val_fraction; /* of the (subset of the) training set held out */
    int         epochs;
    int         batch; /* global */
    double      lr, lr_min, momentum, weight_decay, clip;
    double      label_smoothing; /* of the training loss, in [0, 1) */
    int         nesterov;        /* Nesterov momentum */
    int         bn_decay;        /* weight decay on BN gamma/beta too (ProxylessNAS: 0) */
    int         cells, channels, nodes;
    double      alpha;
    md_mdl_rule rule;
    int         period_steps; /* 0: one sampling period per epoch */
    int         val_batches;  /* 0: the whole validation split each period */
    int         crop_pad, flip;
    int         image_size;    /* imagenet: network input side (crops resized to it) */
    double      crop_scale[2]; /* imagenet: RandomResizedCrop area fraction, lo and hi */
    int         data_threads;  /* decode threads per rank (0: 1 in memory, min(4, cores) imagenet) */
    char        device_data[8]; /* in-memory sets held on the backend, batches made there:
                                   auto (on a device backend) | on | off */
    uint64_t    seed;
    int         threads;
    int         log_every; /* steps between progress lines */
    int         sync_bn;    /* BN statistics over all ranks */
    int         ckpt_every; /* steps between checkpoints (0: period ends only) */
    int         keep;       /* checkpoints kept (>= 2) */
    char        device[8];  /* cpu | cuda | auto */
    int         tf32;       /* CUDA: TF32 tensor-core math for fp32 */
    int         cuda_graphs; /* CUDA, one rank: replay each plan's step as a graph */
    char        comm[8];    /* gradients over: auto | mpi | nccl (md_comm_choose) */
    int         deterministic; /* CUDA: deterministic cuDNN algorithms only (else fastest) */
    char        out[512];  /* run directory */
    /* `mdenas_mpi train`: a fixed network trained on the whole training set and
     * evaluated on the test split every epoch (docs/usage.md, "Training"). */
    int         train;
    char        genotype[1024]; /* a run directory, genotype.json, net.config, a
                                   Genotype(...) string or a published name */
    double      aux_weight;     /* DARTS: auxiliary head's loss weight (0: no head) */
    double      drop_path;      /* DARTS: drop-path probability, ramped from 0 over the epochs */
    double      dropout;        /* before the classifier */
    int         cutout;         /* side of the cutout square in pixels (0: off) */
    int         archs;          /* rankcheck: random architectures trained (0: not rankcheck) */
} md_search_config;

/* Defaults, then a preset's values ("cifar10", "tiny", "imagenet-mobile",
 * "mobile-tiny"; for `train`: "cifar10-final", "fashion-final",
 * "imagenet-mobile-final"; "" for none). */
md_status md_search_config_preset(md_search_config *c, const char *preset);
/* Cross-field checks; the message names the option. */
md_status md_search_config_check(const md_search_config *c);
/* Fill options that depend on others (the dataset's default folder), then check. */
md_status md_search_config_resolve(md_search_config *c);

struct md_comm;

/* Exit status of `mdenas_mpi search` after SIGUSR1/SIGTERM stopped the run and a
 * checkpoint was written: rerun the same command to resume (EX_TEMPFAIL). */
#define MD_EXIT_STOPPED 75

/* Run the search, data-parallel over the ranks of comm; rank 0 writes the run
 * directory. Rerunning it on the same run directory resumes from the newest
 * valid checkpoint. *stopped = 1 when a signal stopped it (after a checkpoint).
 * MD_ERR_ARG: bad options, or a run directory that this run may not use. */
md_status md_search_run(const md_search_config *c, struct md_comm *comm, int *stopped);
/* Take SIGUSR1/SIGTERM/SIGINT as a stop request from now on (md_search_run does
 * it too): called before MPI_Init, a signal during start-up is not fatal. It
 * blocks them in the calling thread and every thread made later, and one
 * thread takes them: call it before any other thread exists. */
void      md_search_catch_stop_signals(void);

/* Print what a checkpoint holds; MD_ERR_DATA/MD_ERR_IO naming the file if it is
 * not a valid mdenas checkpoint. */
md_status md_ckpt_inspect(const char *path, FILE *out);

/* `mdenas_mpi rankcheck` (MdeNAS's performance-ranking hypothesis, its Fig. 1):
 * c->archs DARTS genotypes drawn uniformly (md_darts_genotype_random, from
 * c->seed), each trained as `train` would (c's options) in <out>/arch-NNN and
 * evaluated every epoch; then Kendall's tau-b between each epoch's ranking of
 * them and the last epoch's, into <out>/rankcheck.json and rankcheck.svg.
 * Resumable like train: a finished architecture is not trained again. */
md_status md_rankcheck_run(const md_search_config *c, struct md_comm *comm, int *stopped);

/* Evaluate the network a train run left in `dir` (net.json, weights.safetensors)
 * on its dataset's test split, printing top-1, top-5, loss, parameters and
 * multiply-adds to out. MD_ERR_ARG/DATA/IO naming the file on bad input. */
md_status md_train_eval(const char *dir, FILE *out);

/* Print the genotype of the run in `dir` (finished or not) to stdout. */
md_status md_search_derive(const char *dir);

#endif
