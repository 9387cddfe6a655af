/* Private: the CPU backend's loop ops (cpu_ops.c), wired into the vtable by cpu_backend.c. */
#ifndef MDENAS_CPU_OPS_H
#define MDENAS_CPU_OPS_H

#include "backend/cpu/cpu_backend.h"

md_status md_cpu_bn_forward_train(md_backend *be, const md_tensor *x, const md_tensor *y,
                                  const md_bn_state *s);
md_status md_cpu_bn_forward_eval(md_backend *be, const md_tensor *x, const md_tensor *y,
                                 const md_bn_state *s);
md_status md_cpu_bn_backward_train(md_backend *be, const md_tensor *x, const md_tensor *dy,
                                   const md_tensor *dx, const md_tensor *dgamma,
                                   const md_tensor *dbeta, const md_bn_state *s);
md_status md_cpu_bn_backward_eval(md_backend *be, const md_tensor *x, const md_tensor *dy,
                                  const md_tensor *dx, const md_tensor *dgamma,
                                  const md_tensor *dbeta, const md_bn_state *s);
md_status md_cpu_act_forward(md_backend *be, md_act act, const float *x, float *y, size_t n);
md_status md_cpu_act_backward(md_backend *be, md_act act, const float *y, const float *dy,
                              float *dx, size_t n);
md_status md_cpu_add(md_backend *be, const float *x, float *y, size_t n);
md_status md_cpu_row_scale(md_backend *be, const float *x, const float *s, float *y, size_t rows,
                           size_t inner, int accumulate);
md_status md_cpu_mul_add(md_backend *be, const float *a, const float *b, float *y, size_t n);
md_status md_cpu_copy(md_backend *be, const float *x, float *y, size_t n);
md_status md_cpu_zero(md_backend *be, float *y, size_t n);
md_status md_cpu_pool_forward(md_backend *be, const md_pool_desc *p, const md_tensor *x,
                              const md_tensor *y);
md_status md_cpu_pool_backward(md_backend *be, const md_pool_desc *p, const md_tensor *x,
                               const md_tensor *dy, const md_tensor *dx);
md_status md_cpu_gap_forward(md_backend *be, const md_tensor *x, const md_tensor *y);
md_status md_cpu_gap_backward(md_backend *be, const md_tensor *dy, const md_tensor *dx);
md_status md_cpu_concat_forward(md_backend *be, const md_tensor *const *xs, int k,
                                const md_tensor *y);
md_status md_cpu_concat_backward(md_backend *be, const md_tensor *dy, const md_tensor *const *dxs,
                                 int k);
md_status md_cpu_slice_forward(md_backend *be, const md_tensor *x, int oh, int ow,
                               const md_tensor *y);
md_status md_cpu_slice_backward(md_backend *be, const md_tensor *dy, int oh, int ow,
                                const md_tensor *dx);
md_status md_cpu_linear_forward(md_backend *be, const md_tensor *x, const md_tensor *w,
                                const md_tensor *b, const md_tensor *y);
md_status md_cpu_linear_backward(md_backend *be, const md_tensor *x, const md_tensor *w,
                                 const md_tensor *dy, const md_tensor *dx, const md_tensor *dw,
                                 const md_tensor *db);
md_status md_cpu_dropout_forward(md_backend *be, float p, md_rng *rng, const md_tensor *x,
                                 const md_tensor *mask, const md_tensor *y);
md_status md_cpu_softmax_ce(md_backend *be, const md_tensor *logits, const int32_t *labels,
                            float *loss, const md_tensor *dlogits);
md_status md_cpu_top1_correct(md_backend *be, const md_tensor *logits, const int32_t *labels,
                              int *correct);
md_status md_cpu_sgd_update(md_backend *be, float *w, const float *g, float *v, size_t n, float lr,
                            float momentum, float weight_decay, int nesterov, const double *guard);
md_status md_cpu_sumsq(md_backend *be, const float *x, size_t n, double *out);
md_status md_cpu_scale(md_backend *be, float *x, size_t n, float factor);
md_status md_cpu_loss_dev(md_backend *be, const md_tensor *logits, const int32_t *labels,
                          float smoothing, float *out, const md_tensor *dlogits);
md_status md_cpu_sumsq_dev(md_backend *be, const float *x, size_t n, double *acc);
md_status md_cpu_clip_scale_dev(md_backend *be, float *x, size_t n, const double *acc,
                                float max_norm);

#endif
