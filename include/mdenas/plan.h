/* Plans: one sampled network compiled into a flat list of op invocations over
 * planned buffers. Forward walks it, backward walks it in reverse. Only the
 * sampled ops run and only their weights get gradients; the memory of a step
 * is that of one ordinary network. A search space emits plans
 * (md_space_plan); the executor knows ops and arenas, not spaces. */
#ifndef MDENAS_PLAN_H
#define MDENAS_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "mdenas/backend.h"
#include "mdenas/model.h"
#include "mdenas/optim.h"

typedef struct md_plan md_plan;

void      md_plan_destroy(md_plan *p);
int       md_plan_rows(const md_plan *p);
/* x: rows images, NCHW floats (backend memory). train: BN uses batch statistics
 * and updates running statistics; eval_batch_stats: BN uses batch statistics
 * without touching running statistics (MdeNAS validation); otherwise running. */
typedef enum { MD_MODE_TRAIN, MD_MODE_EVAL_BATCH_STATS, MD_MODE_EVAL } md_mode;
md_status md_plan_forward(md_plan *p, const float *x, md_mode mode);
/* Cross-replica BN for every BN step of the plan (NULL: per-replica statistics). */
void      md_plan_set_bn_sync(md_plan *p, const md_bn_sync *sync);
/* A replica with no rows in this batch takes part in the BN reductions of a
 * forward pass that the other replicas run (a no-op without BN sync). */
md_status md_plan_forward_absent(md_plan *p, md_mode mode);
/* After forward: mean loss and top-1 correct count over the rows; with
 * `backward`, also the gradients of the active weights (accumulated into the
 * grads arena: zero them first with md_plan_zero_grads). */
md_status md_plan_loss(md_plan *p, const int32_t *labels, float *loss, int *correct);
/* Multiply the loss gradient (after md_plan_loss) by factor: a data-parallel
 * replica passes its rows / the global rows, so that its gradients are its part
 * of the global batch's mean-loss gradient and the allreduce is a plain sum. */
md_status md_plan_scale_loss_grad(md_plan *p, float factor);
/* md_plan_loss with the mean loss and the correct count left in backend memory
 * (out[0], out[1]): no host round trip, so a step can be captured in a graph. */
md_status md_plan_loss_dev(md_plan *p, const int32_t *labels, float *out);
/* The same with label smoothing (md_loss_dev_smoothed). */
md_status md_plan_loss_dev_smoothed(md_plan *p, const int32_t *labels, float smoothing,
                                    float *out);
md_status md_plan_backward(md_plan *p);
/* Plans with training-only noise (drop-path, dropout) or an auxiliary head: */
int       md_plan_has_noise(const md_plan *p);
int       md_plan_has_aux(const md_plan *p);
/* Draw the masks of the next training forwards: every drop-path step keeps an
 * image with probability 1 - drop_path (and scales it by 1 / (1 - drop_path)),
 * every dropout step an element with 1 - its rate. The draws of global row
 * row0 + i come from a stream keyed by (seed, counter, step, row0 + i), so a
 * data-parallel replica holding rows [row0, row0 + rows) draws what one replica
 * holding the whole batch would. drop_path = 0 and no dropout: none (NOISE
 * steps pass their input through, as they always do outside training). */
md_status md_plan_set_noise(md_plan *p, float drop_path, uint64_t seed, uint64_t counter,
                            long row0);
/* After md_plan_set_noise: the masks (host floats, md_plan_noise_floats of
 * them in step order), for tests that replay them elsewhere. */
const float *md_plan_noise_masks(const md_plan *p, size_t *n);
/* With an auxiliary head, after a training forward: its loss (mean, weighted by
 * the plan's auxiliary weight in the gradient) into backend memory out[0], its
 * correct rows out[1]. Call after md_plan_loss_dev_smoothed. */
md_status md_plan_aux_loss_dev(md_plan *p, const int32_t *labels, float smoothing, float *out);
/* After forward: the auxiliary head's rows * classes logits into host memory. */
md_status md_plan_aux_logits(const md_plan *p, float *out, size_t n);
/* After forward: the n = rows * classes logits into host memory. */
md_status md_plan_logits(const md_plan *p, float *out, size_t n);
md_status md_plan_zero_grads(md_plan *p);
/* Arena ranges of the weights this plan uses (stem, preprocessing, sampled
 * ops, classifier), merged where adjacent. */
const md_range *md_plan_ranges(const md_plan *p, int *count);
/* Those ranges split in two: bn = 1, the BN gamma/beta ones (what
 * --no-bn-decay exempts from weight decay); bn = 0, all others. */
const md_range *md_plan_ranges_split(const md_plan *p, int bn, int *count);
/* Bytes of activation and gradient memory the plan holds. */
size_t    md_plan_bytes(const md_plan *p);
int       md_plan_steps(const md_plan *p);

#endif
