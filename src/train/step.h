/* Private to src/train: one training step of a sampled network, data
 * parallel over the ranks of a communicator, and on a backend with graphs
 * (one rank) recorded once per plan and learning rate and replayed. The
 * stepper owns the plans of the current architecture (one per row count),
 * the graph, the batch staging buffers of a device backend and the step's
 * scalars in backend memory. */
#ifndef MDENAS_TRAIN_STEP_H
#define MDENAS_TRAIN_STEP_H

#include "mdenas/comm.h"
#include "mdenas/space.h"

typedef struct {
    /* set by the caller before md_stepper_init */
    md_backend     *be;
    md_comm        *comm;
    int             world;
    const md_space *space;
    md_model       *model;
    float           momentum, weight_decay, clip, smoothing;
    int             nesterov, bn_no_decay, sync_bn, graphs;
    /* owned */
    float    *scalars; /* backend memory: loss, correct, the clip norm (a double) */
    md_plan  *plans[2];
    md_graph *graph; /* the recorded step of graph_plan at graph_lr */
    md_plan  *graph_plan;
    float     graph_lr;
    const void *graph_x, *graph_y; /* the batch buffers it recorded */
    void     *stage_x, *stage_y;
    size_t    stage_x_bytes, stage_y_bytes;
    float    *stats_before; /* backend memory: the BN running statistics before this step */
} md_stepper;

typedef struct {
    float  loss;    /* the global batch's mean loss */
    float  aux_loss; /* the auxiliary head's (unweighted), 0 without one */
    long   correct; /* over the global batch */
    double norm;    /* gradient norm before clipping (0 when no update was made) */
    int    stop;    /* some rank asked to stop (the flag rides on the allreduce) */
} md_step_result;

md_status md_stepper_init(md_stepper *st);
void      md_stepper_free(md_stepper *st);
/* The plan of architecture `choice` for `rows` rows, made once per row count
 * while the architecture stays (md_stepper_free_plans when it changes). */
md_status md_stepper_plan(md_stepper *st, const int *choice, int rows, md_plan **out);
void      md_stepper_free_plans(md_stepper *st);
/* A batch in host memory onto a device backend (a no-op on the CPU). */
md_status md_stepper_upload(md_stepper *st, const float **x, const int32_t **y, int rows,
                            size_t floats_per_row);
/* Forward, loss, backward, allreduce, clip and SGD on plan p: rows of this
 * rank, grows of the global batch. stop_here: this rank's stop request. A loss
 * or a gradient norm that is not finite leaves the weights and the momentum as
 * they were (the update is skipped on the backend, graphs included); the caller
 * stops the run, after md_stepper_undo_stats. */
md_status md_stepper_train(md_stepper *st, md_plan *p, const float *x, const int32_t *y,
                           int rows, int grows, float lr, int stop_here, md_step_result *res);
/* The BN running statistics back to what they were before the last
 * md_stepper_train (its forward updated them even when the step failed). */
md_status md_stepper_undo_stats(md_stepper *st);

#endif
