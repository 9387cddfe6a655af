/* Private to src/train: the state of a search run, shared by the loop
 * (search.c) and checkpoint-restart (checkpoint.c). */
#ifndef MDENAS_TRAIN_SEARCH_IMPL_H
#define MDENAS_TRAIN_SEARCH_IMPL_H

#include <stdio.h>

#include "mdenas/comm.h"
#include "mdenas/data.h"
#include "mdenas/runlog.h"
#include "mdenas/safetensors.h"
#include "mdenas/search.h"
#include "mdenas/supernet.h"

/* Where the loop stands: everything besides the arenas and p/H^e/H^a that a
 * checkpoint must hold to continue bit for bit. Broadcast as bytes. */
typedef struct {
    long   step;   /* global steps done */
    long   period; /* the period in progress (or next, at a period end) */
    long   train_epoch, val_epoch;
    int    train_batch, val_batch; /* loader positions (md_loader_tell) */
    long   period_correct, period_seen;
    double period_loss; /* sum of per-step mean losses of the period so far */
    long   iv_steps, iv_correct, iv_seen; /* the progress line being accumulated */
    double iv_loss;
    long   metrics_bytes, history_bytes; /* lengths of those files when saved */
    int    periods_done;
    int    saved_world;   /* ranks of the run that wrote the checkpoint */
    int    saved_threads; /* CPU threads per rank of that run (0: unknown or not CPU) */
} md_run_pos;

typedef struct {
    const md_search_config *cfg;
    md_comm                *comm;
    int                     rank, world;
    md_backend             *be;
    md_dataset              ds;       /* in-memory datasets */
    md_source              *train_src, *val_src; /* imagenet */
    int                    *train_idx, *val_idx, ntrain, nval;
    md_loader              *train, *val;
    md_supernet            *net;
    md_mdl                  mdl; /* normal edges first, then reduction edges */
    int                     edges;
    FILE                   *log, *metrics, *history;
    md_tb                  *tb;
    md_plan                *plans[2]; /* of the current architecture, by row count */
    double                  t0;
    long                    step0; /* global step when this process started */
    long                    last_ckpt_step;
    md_run_pos              pos;
    int                     past_verdict; /* rank 0's run-directory verdict is shared */
    void                   *stage_x, *stage_y; /* batch copies on a device backend */
    float                  *scalars; /* backend memory: loss, correct, the clip norm (double) */
    md_graph               *graph;   /* the recorded step of graph_plan at graph_lr */
    md_plan                *graph_plan;
    float                   graph_lr;
    size_t                  stage_x_bytes, stage_y_bytes;
    int                     lock_fd; /* rank 0: the run directory's lock, -1 if none */
    int                     threads; /* CPU threads per rank of this process (0: not CPU) */
    int                     uniform_threads; /* threads when every rank has as many, else 0 */
} md_run;

/* config JSON: every option (full) or only those that define the result (what a
 * checkpoint must agree on to be resumed). */
void md_search_config_json(md_json *j, const md_search_config *c, int world, int full);

/* ---- rundir.c ---- */
#define MD_RUNDIR_LOCK "lock"
/* --out names a directory this process can write, or one it can create
 * (MD_ERR_ARG naming --out: "not a directory", "permission denied"). */
md_status md_rundir_check_out(const char *dir);
/* MD_ERR_ARG unless dir is absent or holds nothing but the lock and leftover
 * temporaries of a run's own files. */
md_status md_rundir_check_empty(const char *dir);
/* Take the run directory's lock (dir exists): MD_ERR_ARG naming the holder
 * (host, pid) while another process holds it. *fd keeps it until unlock. */
md_status md_rundir_lock(const char *dir, int *fd);
void      md_rundir_unlock(int fd);

/* ---- checkpoint.c ---- */
/* Rank 0: write <out>/checkpoints/ckpt-<step>.safetensors from r and r->pos,
 * then keep only the newest cfg->keep. Logs a line and a metrics record. */
md_status md_ckpt_save(md_run *r, char *path, size_t path_len, size_t *bytes);
/* Rank 0: load the newest usable checkpoint of <out>, if any, by calling
 * accept(ctx, file) on each from the newest: a file that fails to read or to
 * load with MD_ERR_DATA (corrupt, truncated, not matching this network) is
 * reported on stderr, renamed to *.corrupt, and the previous one is tried; any
 * other error stops. A configuration that differs from c is refused (MD_ERR_ARG
 * naming the options). Stale *.tmp files are removed. *found = 0 when there is
 * none; else path receives the file used. */
typedef md_status (*md_ckpt_accept)(void *ctx, const md_st_file *f);
md_status md_ckpt_find(const md_search_config *c, md_ckpt_accept accept, void *ctx, char *path,
                       size_t path_len, int *found);
/* Copy a checkpoint into the net, the distribution and r->pos. */
md_status md_ckpt_load(md_run *r, const md_st_file *f);
/* MD_ERR_ARG naming each option whose value in the JSON text `saved` (written
 * by md_search_config_json) differs from c's; `what` names where it came from. */
md_status md_ckpt_check_config(const md_search_config *c, const char *saved, const char *what);

#endif
