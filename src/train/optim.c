#include "mdenas/optim.h"

#include <math.h>

md_status md_clip_grad_norm(md_backend *be, float *grads, const md_range *ranges, int nranges,
                            float max_norm, float *total_norm) {
    if (!(max_norm > 0.0f))
        return md_fail(MD_ERR_ARG, "clip_grad_norm: max_norm=%g must be > 0", max_norm);
    double sq = 0.0;
    for (int i = 0; i < nranges; i++) MD_TRY(md_sumsq(be, grads + ranges[i].offset, ranges[i].count, &sq));
    double norm = sqrt(sq);
    if (total_norm) *total_norm = (float)norm;
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0)
        for (int i = 0; i < nranges; i++)
            MD_TRY(md_scale(be, grads + ranges[i].offset, ranges[i].count, (float)coef));
    return MD_OK;
}

md_status md_clip_grad_norm_dev(md_backend *be, float *grads, const md_range *ranges, int nranges,
                                float max_norm, double *acc) {
    md_tensor a = md_tensor_1d((float *)acc, 2); /* the double's 8 bytes */
    MD_TRY(md_zero(be, &a));
    for (int i = 0; i < nranges; i++)
        MD_TRY(md_sumsq_dev(be, grads + ranges[i].offset, ranges[i].count, acc));
    for (int i = 0; i < nranges; i++)
        MD_TRY(md_clip_scale_dev(be, grads + ranges[i].offset, ranges[i].count, acc, max_norm));
    return MD_OK;
}

md_status md_sgd_step(md_backend *be, float *params, const float *grads, float *momentum_buf,
                      const md_range *ranges, int nranges, float lr, float momentum,
                      float weight_decay) {
    return md_sgd_step_nesterov(be, params, grads, momentum_buf, ranges, nranges, lr, momentum,
                                weight_decay, 0);
}

md_status md_sgd_step_nesterov(md_backend *be, float *params, const float *grads,
                               float *momentum_buf, const md_range *ranges, int nranges, float lr,
                               float momentum, float weight_decay, int nesterov) {
    return md_sgd_step_guarded(be, params, grads, momentum_buf, ranges, nranges, lr, momentum,
                               weight_decay, nesterov, NULL);
}

md_status md_sgd_step_guarded(md_backend *be, float *params, const float *grads,
                              float *momentum_buf, const md_range *ranges, int nranges, float lr,
                              float momentum, float weight_decay, int nesterov,
                              const double *guard) {
    for (int i = 0; i < nranges; i++) {
        size_t o = ranges[i].offset;
        MD_TRY(md_sgd_update_guarded(be, params + o, grads + o,
                                     momentum_buf ? momentum_buf + o : NULL, ranges[i].count, lr,
                                     momentum, weight_decay, nesterov, guard));
    }
    return MD_OK;
}

float md_lr_cosine(float lr0, float lr_min, long t, long T) {
    if (T <= 0 || t >= T) return T <= 0 ? lr0 : lr_min;
    if (t <= 0) return lr0;
    return (float)(lr_min + (lr0 - lr_min) * (1.0 + cos(3.14159265358979323846 * (double)t / (double)T)) / 2.0);
}
