#include "train/step.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

md_status md_stepper_init(md_stepper *st) {
    MD_TRY(md_backend_alloc(st->be, 64, (void **)&st->scalars));
    size_t n = st->model ? st->model->stats.numel : 0;
    return n ? md_backend_alloc(st->be, n * sizeof(float), (void **)&st->stats_before) : MD_OK;
}

/* stats_before = stats (to = 0) or back (to = 1): a copy on the backend, which
 * a graph records with the step. */
static md_status copy_stats(md_stepper *st, int back) {
    md_arena *a = &st->model->stats;
    if (!st->stats_before || !a->data) return MD_OK;
    md_tensor s = md_tensor_1d(a->data, (int)a->numel), b = md_tensor_1d(st->stats_before, (int)a->numel);
    return back ? md_copy(st->be, &b, &s) : md_copy(st->be, &s, &b);
}

md_status md_stepper_undo_stats(md_stepper *st) {
    MD_TRY(copy_stats(st, 1));
    return md_backend_sync(st->be);
}

void md_stepper_free_plans(md_stepper *st) {
    md_graph_destroy(st->graph); /* it refers to a plan's buffers */
    st->graph = NULL, st->graph_plan = NULL;
    for (int i = 0; i < 2; i++) {
        md_plan_destroy(st->plans[i]);
        st->plans[i] = NULL;
    }
}

void md_stepper_free(md_stepper *st) {
    md_stepper_free_plans(st);
    if (st->be) {
        md_backend_free(st->be, st->stage_x);
        md_backend_free(st->be, st->stage_y);
        md_backend_free(st->be, st->scalars);
        md_backend_free(st->be, st->stats_before);
    }
    st->stage_x = st->stage_y = NULL, st->scalars = NULL, st->stats_before = NULL;
    st->stage_x_bytes = st->stage_y_bytes = 0;
}

md_status md_stepper_plan(md_stepper *st, const int *choice, int rows, md_plan **out) {
    for (int i = 0; i < 2; i++)
        if (st->plans[i] && md_plan_rows(st->plans[i]) == rows) {
            *out = st->plans[i];
            return MD_OK;
        }
    int slot = st->plans[0] ? 1 : 0;
    if (st->plans[slot] && st->graph_plan == st->plans[slot]) {
        md_graph_destroy(st->graph);
        st->graph = NULL, st->graph_plan = NULL;
    }
    if (st->plans[slot]) md_plan_destroy(st->plans[slot]);
    st->plans[slot] = NULL;
    MD_TRY(md_space_plan(st->space, st->model, st->be, choice, rows, &st->plans[slot]));
    if (st->sync_bn && st->world > 1) md_plan_set_bn_sync(st->plans[slot], md_comm_bn_sync(st->comm));
    *out = st->plans[slot];
    return MD_OK;
}

static md_status stage(md_stepper *st, void **buf, size_t *have, size_t bytes) {
    if (bytes <= *have) return MD_OK;
    md_backend_free(st->be, *buf);
    *buf = NULL, *have = 0;
    MD_TRY(md_backend_alloc(st->be, bytes, buf));
    *have = bytes;
    return MD_OK;
}

md_status md_stepper_upload(md_stepper *st, const float **x, const int32_t **y, int rows,
                            size_t floats_per_row) {
    if (md_backend_is_host(st->be) || rows == 0) return MD_OK;
    size_t xb = (size_t)rows * floats_per_row * sizeof(float), yb = (size_t)rows * sizeof(int32_t);
    MD_TRY(stage(st, &st->stage_x, &st->stage_x_bytes, xb));
    MD_TRY(stage(st, &st->stage_y, &st->stage_y_bytes, yb));
    MD_TRY(md_backend_upload(st->be, st->stage_x, *x, xb));
    MD_TRY(md_backend_upload(st->be, st->stage_y, *y, yb));
    *x = st->stage_x, *y = st->stage_y;
    return MD_OK;
}

/* The step's work once the batch is on the backend, in two parts around the
 * gradient allreduce; neither needs the host, so a graph can record them. */
static md_status forward_backward(md_stepper *st, md_plan *p, const float *x, const int32_t *y,
                                  int rows, int grows) {
    MD_TRY(md_plan_zero_grads(p));
    MD_TRY(copy_stats(st, 0)); /* the forward updates them, even on a step that fails */
    MD_TRY(md_plan_forward(p, x, MD_MODE_TRAIN));
    MD_TRY(md_plan_loss_dev_smoothed(p, y, st->smoothing, st->scalars));
    if (md_plan_has_aux(p)) MD_TRY(md_plan_aux_loss_dev(p, y, st->smoothing, st->scalars + 4));
    if (st->world > 1) MD_TRY(md_plan_scale_loss_grad(p, (float)rows / (float)grows));
    return md_plan_backward(p);
}

/* Clip, then SGD guarded by the clip's sum of squares: a gradient with a NaN
 * or an infinity (which a non-finite loss always leaves) changes nothing. */
static md_status update(md_stepper *st, md_plan *p, float lr) {
    md_model       *m = st->model;
    int             nr;
    const md_range *ranges = md_plan_ranges(p, &nr);
    const double   *guard = (const double *)(st->scalars + 2);
    MD_TRY(md_clip_grad_norm_dev(st->be, m->grads.data, ranges, nr, st->clip,
                                 (double *)(st->scalars + 2)));
    if (!st->bn_no_decay)
        return md_sgd_step_guarded(st->be, m->params.data, m->grads.data, m->momentum.data,
                                   ranges, nr, lr, st->momentum, st->weight_decay, st->nesterov,
                                   guard);
    for (int bn = 0; bn < 2; bn++) {
        ranges = md_plan_ranges_split(p, bn, &nr);
        MD_TRY(md_sgd_step_guarded(st->be, m->params.data, m->grads.data, m->momentum.data,
                                   ranges, nr, lr, st->momentum, bn ? 0.0f : st->weight_decay,
                                   st->nesterov, guard));
    }
    return MD_OK;
}

/* One rank on a backend with graphs: the first step of a plan (at a learning
 * rate, on the batch buffers x and y) runs as usual and is then recorded; the
 * following ones replay it, one launch instead of hundreds. A capture that
 * fails (an op this CUDA cannot record) leaves the step made eagerly and turns
 * graphs off for the run, with a note: slower, not wrong. */
static md_status graphed(md_stepper *st, md_plan *p, const float *x, const int32_t *y, int rows,
                         float lr) {
    if (st->graph && st->graph_plan == p && st->graph_lr == lr && st->graph_x == x &&
        st->graph_y == y)
        return md_graph_launch(st->graph);
    md_graph_destroy(st->graph);
    st->graph = NULL, st->graph_plan = NULL;
    MD_TRY(forward_backward(st, p, x, y, rows, rows)); /* also makes every buffer */
    MD_TRY(update(st, p, lr));
    MD_TRY(md_graph_capture_begin(st->be));
    md_status s = forward_backward(st, p, x, y, rows, rows);
    if (s == MD_OK) s = update(st, p, lr);
    md_graph *g = NULL;
    md_status e = md_graph_capture_end(st->be, &g);
    if (s != MD_OK || e != MD_OK) {
        md_graph_destroy(g);
        st->graphs = 0;
        fprintf(stderr, "mdenas: note: recording the step as a CUDA graph failed (%s); the run "
                        "goes on without graphs (--cuda-graphs 0)\n", md_error_message());
        return MD_OK;
    }
    st->graph = g, st->graph_plan = p, st->graph_lr = lr, st->graph_x = x, st->graph_y = y;
    return MD_OK;
}

md_status md_stepper_train(md_stepper *st, md_plan *p, const float *x, const int32_t *y,
                           int rows, int grows, float lr, int stop_here, md_step_result *res) {
    float  out[2], extra[4] = {0, 0, 0, 0}, aux[2] = {0, 0};
    double norm = 0;
    int    has_aux = md_plan_has_aux(p);
    /* Drop-path and dropout draw new masks every step: no graph replays them.
     * NCCL (forced with one rank too) reduces outside any graph. */
    if (st->world == 1 && st->graphs && md_backend_has_graphs(st->be) && !md_plan_has_noise(p) &&
        md_comm_get_path(st->comm) != MD_COMM_NCCL) {
        MD_TRY(graphed(st, p, x, y, rows, lr));
        MD_TRY(md_backend_download(st->be, out, st->scalars, sizeof out));
        MD_TRY(md_backend_download(st->be, &norm, st->scalars + 2, sizeof norm));
        if (has_aux) MD_TRY(md_backend_download(st->be, aux, st->scalars + 4, sizeof aux));
        extra[0] = out[0] * (float)rows, extra[1] = out[1], extra[2] = (float)stop_here;
        extra[3] = aux[0] * (float)rows;
    } else {
        MD_TRY(forward_backward(st, p, x, y, rows, grows));
        MD_TRY(md_backend_download(st->be, out, st->scalars, sizeof out)); /* also syncs */
        if (has_aux) MD_TRY(md_backend_download(st->be, aux, st->scalars + 4, sizeof aux));
        /* Sum of the replicas' parts of the global batch's gradient; loss,
         * accuracy and the stop flag ride in the same call. */
        extra[0] = out[0] * (float)rows, extra[1] = out[1], extra[2] = (float)stop_here;
        extra[3] = aux[0] * (float)rows;
        int             nr;
        const md_range *ranges = md_plan_ranges(p, &nr);
        MD_TRY(md_comm_allreduce_grads_on(st->comm, st->be, st->model->grads.data, ranges, nr,
                                          extra, has_aux ? 4 : 3));
        float l = st->world > 1 ? extra[0] / (float)grows : out[0];
        if (isfinite(l)) { /* else no update: the caller stops the run */
            MD_TRY(update(st, p, lr));
            MD_TRY(md_backend_download(st->be, &norm, st->scalars + 2, sizeof norm));
        }
    }
    res->loss = st->world > 1 ? extra[0] / (float)grows : out[0];
    res->aux_loss = st->world > 1 ? extra[3] / (float)grows : aux[0];
    res->correct = lroundf(extra[1]);
    res->norm = sqrt(norm); /* the clip left the sum of squares; NaN and inf stay */
    res->stop = extra[2] > 0.0f;
    return MD_OK;
}
