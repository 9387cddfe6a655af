/* Training-loop arithmetic on top of the backend's primitives: global
 * gradient-norm clipping over arena ranges, learning-rate schedules. */
#ifndef MDENAS_OPTIM_H
#define MDENAS_OPTIM_H

#include <stddef.h>

#include "mdenas/backend.h"

typedef struct {
    size_t offset; /* floats from the arena base */
    size_t count;
} md_range;

/* torch.nn.utils.clip_grad_norm_: total = ||g||_2 over all ranges; when
 * total > max_norm every gradient is scaled by max_norm / (total + 1e-6).
 * *total_norm (may be NULL) receives the norm before clipping. */
md_status md_clip_grad_norm(md_backend *be, float *grads, const md_range *ranges, int nranges,
                            float max_norm, float *total_norm);

/* The same clip computed on the backend, with no host round trip (so it can
 * be captured in a graph): acc is one double of backend memory for the norm. */
md_status md_clip_grad_norm_dev(md_backend *be, float *grads, const md_range *ranges, int nranges,
                                float max_norm, double *acc);

/* SGD step over the ranges of parameter, gradient and momentum arenas. */
md_status md_sgd_step(md_backend *be, float *params, const float *grads, float *momentum_buf,
                      const md_range *ranges, int nranges, float lr, float momentum,
                      float weight_decay);
/* The same, Nesterov momentum when nesterov = 1 (md_sgd_update_nesterov). */
md_status md_sgd_step_nesterov(md_backend *be, float *params, const float *grads,
                               float *momentum_buf, const md_range *ranges, int nranges, float lr,
                               float momentum, float weight_decay, int nesterov);
/* The same, made only when *guard (backend memory) is finite: md_sgd_update_guarded. */
md_status md_sgd_step_guarded(md_backend *be, float *params, const float *grads,
                              float *momentum_buf, const md_range *ranges, int nranges, float lr,
                              float momentum, float weight_decay, int nesterov,
                              const double *guard);

/* torch.optim.lr_scheduler.CosineAnnealingLR at step t of T:
 * lr_min + (lr0 - lr_min) * (1 + cos(pi * t / T)) / 2; t >= T gives lr_min. */
float md_lr_cosine(float lr0, float lr_min, long t, long T);

#endif
