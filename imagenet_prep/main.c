/* imagenet_prep: pack an ImageNet-style tree of images into checked shards
 * (docs/formats.md, docs/usage.md). Rank 0 walks the tree and claims OUT, every
 * rank gets the plan, the shards not yet done are dealt out round-robin, rank 0
 * writes the tables and the manifest at the end. */
#include <mpi.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "prep.h"

static int exit_for(md_status s) {
    return s == MD_ERR_NOMEM || s == MD_ERR_IO ? PREP_EXIT_FAIL : PREP_EXIT_USAGE;
}

/* Rank 0: the plan, the identity, OUT claimed. */
static int setup(const prep_options *o, prep_plan *plan, char **identity, int *complete) {
    md_status s = prep_plan_build(o, plan);
    if (s != MD_OK) {
        fprintf(stderr, "imagenet_prep: %s\n", md_error_message());
        return exit_for(s);
    }
    for (int i = 0; i < plan->nnotes; i++)
        fprintf(stderr, "imagenet_prep: note: %s\n", plan->notes[i]);
    s = prep_identity(o, plan, identity);
    if (s != MD_OK) {
        fprintf(stderr, "imagenet_prep: %s\n", md_error_message());
        return exit_for(s);
    }
    int rc = prep_outdir_claim(o, *identity, complete);
    if (rc == PREP_EXIT_OK && *complete) {
        prep_outdir_cleanup(o);
        printf("imagenet_prep: '%s' is already a finished prep of this command (see its "
               "manifest.json and report.json); nothing to do\n",
               o->out);
    }
    return rc;
}

static void bcast_bytes(uint8_t *buf, uint64_t len) {
    for (uint64_t at = 0; at < len;) {
        uint64_t n = len - at < (1u << 30) ? len - at : (1u << 30);
        MPI_Bcast(buf + at, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD);
        at += n;
    }
}

/* The plan from rank 0 to every rank; on rank 0 it is already built. */
static void share_plan(prep_plan *plan, int rank) {
    uint8_t *blob = NULL;
    size_t   len = 0;
    if (rank == 0 && prep_plan_serialize(plan, &blob, &len) != MD_OK) {
        fprintf(stderr, "imagenet_prep: %s\n", md_error_message());
        MPI_Abort(MPI_COMM_WORLD, PREP_EXIT_FAIL);
    }
    uint64_t n = len;
    MPI_Bcast(&n, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    if (rank != 0 && !(blob = malloc(n ? n : 1))) {
        fprintf(stderr, "imagenet_prep: rank %d: no memory for the plan (%llu bytes)\n", rank,
                (unsigned long long)n);
        MPI_Abort(MPI_COMM_WORLD, PREP_EXIT_FAIL);
    }
    bcast_bytes(blob, n);
    if (rank != 0 && prep_plan_deserialize(blob, n, plan) != MD_OK) {
        fprintf(stderr, "imagenet_prep: rank %d: %s\n", rank, md_error_message());
        MPI_Abort(MPI_COMM_WORLD, PREP_EXIT_FAIL);
    }
    free(blob);
}

/* Convert this rank's share of the unfinished shards; MD_OK or the first failure. */
static md_status run_shards(const prep_plan *plan, const prep_options *o, uint32_t run_crc,
                            int rank, int world) {
    uint8_t *done = calloc(plan->nshards ? plan->nshards : 1, 1);
    if (!done) {
        fprintf(stderr, "imagenet_prep: rank %d: no memory\n", rank);
        MPI_Abort(MPI_COMM_WORLD, PREP_EXIT_FAIL);
        return MD_ERR_NOMEM;
    }
    /* Which shards a killed run finished: each rank checks some, all learn all. */
    for (uint32_t k = (uint32_t)rank; k < plan->nshards; k += (uint32_t)world)
        done[k] = (uint8_t)prep_shard_is_done(plan, o, k, run_crc);
    if (plan->nshards)
        MPI_Allreduce(MPI_IN_PLACE, done, (int)plan->nshards, MPI_UNSIGNED_CHAR, MPI_MAX,
                      MPI_COMM_WORLD);
    uint32_t ndone = 0, todo = 0;
    uint64_t mine = 0;
    for (uint32_t k = 0; k < plan->nshards; k++) {
        if (done[k]) {
            ndone++;
            continue;
        }
        if (todo++ % (uint32_t)world == (uint32_t)rank) mine += plan->shards[k].count;
    }
    if (rank == 0) {
        fprintf(stderr, "imagenet_prep: %u sources, %u to convert in %u shards", plan->nsrc,
                plan->norder, plan->nshards);
        if (ndone) fprintf(stderr, " (%u finished by an earlier run, kept)", ndone);
        fprintf(stderr, "; %d rank(s) x %d thread(s)\n", world, omp_get_max_threads());
    }
    prep_progress *prog = rank == 0 ? prep_progress_start(mine, world, !o->quiet) : NULL;
    md_status      s = MD_OK;
    todo = 0;
    for (uint32_t k = 0; k < plan->nshards && s == MD_OK; k++) {
        if (done[k] || todo++ % (uint32_t)world != (uint32_t)rank) continue;
        s = prep_make_shard(plan, o, k, run_crc, prog);
        if (s != MD_OK) fprintf(stderr, "imagenet_prep: rank %d: %s\n", rank, md_error_message());
    }
    prep_progress_end(prog);
    free(done);
    return s;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, world = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    prep_options o;
    int          help = 0;
    int          rc = prep_parse_args(argc, argv, &o, rank == 0, &help);
    if (rc != PREP_EXIT_OK || help) {
        prep_options_free(&o);
        MPI_Finalize();
        return rc;
    }
    if (o.threads > 0) omp_set_num_threads(o.threads);
    prep_plan plan;
    memset(&plan, 0, sizeof plan);
    char *identity = NULL;
    int   complete = 0;
    if (rank == 0) rc = setup(&o, &plan, &identity, &complete);
    /* What rank 0 found: go on or stop, and the run's CRC (ties records to it). */
    uint32_t head[3] = {(uint32_t)rc, (uint32_t)complete,
                        identity ? md_crc32c(identity, strlen(identity)) : 0};
    MPI_Bcast(head, 3, MPI_UINT32_T, 0, MPI_COMM_WORLD);
    rc = (int)head[0];
    if (rc == PREP_EXIT_OK && !head[1]) {
        share_plan(&plan, rank);
        md_status s = run_shards(&plan, &o, head[2], rank, world);
        int       failed = s != MD_OK;
        MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        rc = failed ? PREP_EXIT_FAIL : PREP_EXIT_OK;
        if (rank == 0 && !failed && prep_outdir_finish(&o, &plan, identity, head[2]) != MD_OK) {
            fprintf(stderr, "imagenet_prep: %s\n", md_error_message());
            rc = PREP_EXIT_FAIL;
        }
        if (rank == 0 && failed)
            fprintf(stderr, "imagenet_prep: stopped after a failure; the finished shards are "
                            "kept: run the same command again to make the rest\n");
        MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    }
    free(identity);
    prep_plan_free(&plan);
    prep_options_free(&o);
    MPI_Finalize();
    return rc;
}
