/* Private to src/train: the state of a search run (search.c), the explicit
 * state a checkpoint holds (checkpoint.c), the run directory's files
 * (rundir.c, runfiles.c). */
#ifndef MDENAS_TRAIN_SEARCH_IMPL_H
#define MDENAS_TRAIN_SEARCH_IMPL_H

#include <stdio.h>

#include "mdenas/comm.h"
#include "mdenas/data.h"
#include "mdenas/runlog.h"
#include "mdenas/safetensors.h"
#include "mdenas/search.h"
#include "mdenas/space.h"
#include "train/devdata.h"
#include "train/step.h"

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
    md_dataset              test_ds;  /* train: the test split */
    md_source              *train_src, *val_src; /* imagenet */
    int                    *train_idx, *val_idx, ntrain, nval;
    md_loader              *train, *val;
    md_devset              *dev_ds, *dev_test;   /* --device-data: ds, test_ds on the backend */
    md_devdata             *dev_train, *dev_val; /* the loaders' device sides */
    md_space               *space;
    md_model               *model;
    md_mdl                  mdl; /* the space's distributions, in its order */
    int                    *choice; /* the architecture of the period */
    md_stepper              step;
    FILE                   *log, *metrics, *history;
    md_tb                  *tb;
    double                  t0;
    long                    step0; /* global step when this process started */
    long                    last_ckpt_step;
    md_run_pos              pos;
    int                     past_verdict; /* rank 0's run-directory verdict is shared */
    int                     lock_fd; /* rank 0: the run directory's lock, -1 if none */
    int                     threads; /* CPU threads per rank of this process (0: not CPU) */
    int                     uniform_threads; /* threads when every rank has as many, else 0 */
} md_run;

/* The steps one call of md_run_train_steps trains: a sampling period of a
 * search, an epoch of a training run. */
typedef struct {
    long   period, periods, steps_per_epoch, total_steps;
    long   step; /* global step at the start of the period */
    int    period_len;
    float  drop_path; /* training: the drop-path probability of these steps */
} schedule;

/* ---- search.c: the run's machinery, shared with train.c ---- */
double    md_run_now(void);
/* A line on the terminal and in the log, rank 0 only. */
void      md_run_say(md_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void      md_run_fmt_eta(char *buf, size_t len, double s);
md_status md_run_test_hooks(const md_run *r, long step);
md_status md_run_save_checkpoint(md_run *r, const char *why);
/* A step at (epoch, batch) of the loader whose loss or norm is not finite: the
 * last good state saved as a checkpoint, then the error that stops the run. */
md_status md_run_diverged(md_run *r, long step, float loss, double norm, float lr, long at_epoch,
                          int at_batch);
md_status md_run_upload(md_run *r, const float **x, const int32_t **y, int rows);
/* Train the rest of the steps of sc on architecture a, from r->pos.step; *stop
 * = 1 when every rank has agreed to stop. */
md_status md_run_train_steps(md_run *r, const int *a, const schedule *sc, int *stop);

/* ---- train.c ---- */
/* The network `mdenas_mpi train` trains: --genotype resolved, for the input. */
md_status md_train_make_space(const md_search_config *c, const md_source_info *in,
                              md_space **out);
/* The epochs of a training run, once set up (resumed or fresh, outputs open). */
md_status md_train_loop(md_run *r, int *stopped);
/* The file whose presence marks a finished run (genotype.txt, result.json). */
const char *md_run_finished_mark(const md_search_config *c);

/* What a checkpoint holds and restores: nothing else of the run. */
typedef struct {
    const md_space *space; /* recorded (save only), for inspect */
    md_model   *model;
    md_mdl     *mdl;
    md_run_pos *pos;
    int         world, uniform_threads; /* recorded (save only) */
} md_ckpt_state;

/* ---- runfiles.c ---- */
void      md_path_in(char *buf, size_t len, const char *dir, const char *name);
int       md_file_exists(const char *dir, const char *name);
md_status md_read_file(const char *path, char **out);
md_status md_read_json(const char *path, md_jvalue *out); /* md_read_file + md_json_parse */
md_status md_json_line(FILE *f, md_json *j); /* a line of a JSONL log, flushed */
void      md_arch_json(md_json *j, const md_space *s, const int *choice);
double    md_group_entropy(const md_mdl *m, const md_space_group *g); /* mean over the group */
/* state.json (what derive reads), rewritten atomically; summary receives the
 * derived architecture's line. */
md_status md_runfiles_state(const char *out, const md_space *s, const md_mdl *m, char *summary,
                            size_t len);
md_status md_runfiles_heatmap(const char *out, const md_space *s, const md_mdl *m);
/* genotype.json, the space's files, then genotype.txt (a finished run's mark). */
md_status md_runfiles_genotype(const char *out, const md_space *s, const md_mdl *m,
                               char *summary, size_t len);
/* One line of history.jsonl: period (0-based) done, p, H^e, H^a after it. */
md_status md_history_line(FILE *f, const md_space *s, long period, double val_acc,
                          const int *choice, const md_mdl *m, const double *p, const double *he,
                          const double *ha);
/* Per distribution of s: the op derive takes from p, its runner-up, the margin
 * and the periods behind it (he: H^e, may be NULL), to f (NULL: count only);
 * a warning when some are tied. Returns the number tied. */
int       md_margins_report(FILE *f, const md_space *s, const double *p, const double *he);
/* A log of a resumed run cut to the `keep` bytes its checkpoint recorded; one
 * shorter than that (lost in a crash) is repaired: history.jsonl rebuilt from
 * the distribution m, metrics.jsonl cut after its last whole line. */
md_status md_runfiles_trim_log(const char *path, int is_history, long keep, const md_space *s,
                               const md_mdl *m);

/* ---- config.c ---- */
/* The mobile space of the options: defaults, --space-file, --width-mult, --candidates. */
md_status md_search_mobile_config(const md_search_config *c, md_mobile_config *out);

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
/* Rank 0: write <out>/checkpoints/ckpt-<step>.safetensors from cs (its pos
 * holds the logs' lengths already), then keep only the newest c->keep. */
md_status md_ckpt_save(const md_search_config *c, const md_ckpt_state *cs, char *path,
                       size_t path_len, size_t *bytes);
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
/* Copy a checkpoint into cs's model, distribution and position, after checking
 * all of it (MD_ERR_DATA naming the file; nothing is changed then). */
md_status md_ckpt_load(const md_ckpt_state *cs, const md_st_file *f);
/* MD_ERR_ARG naming each option whose value in the JSON text `saved` (written
 * by md_search_config_json) differs from c's; `what` names where it came from. */
md_status md_ckpt_check_config(const md_search_config *c, const char *saved, const char *what);

#endif
