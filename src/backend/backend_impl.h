/* Private: the vtable every backend implements. backend.c validates shapes
 * and arguments before calling any entry, so implementations may assume
 * consistent shapes. All entries are required but those whose comment says NULL. */
#ifndef MDENAS_BACKEND_IMPL_H
#define MDENAS_BACKEND_IMPL_H

#include "mdenas/backend.h"

typedef struct md_backend_vtable {
    const char *name;
    void (*destroy)(md_backend *be);
    md_status (*alloc)(md_backend *be, size_t bytes, void **out);
    void (*free)(md_backend *be, void *p);
    md_status (*alloc_shared)(md_backend *be, size_t bytes, void **out);
    void (*free_shared)(md_backend *be, void *p);
    md_status (*alloc_host)(md_backend *be, size_t bytes, void **out);
    void (*free_host)(md_backend *be, void *p);
    int host; /* ops take host pointers */
    md_status (*upload)(md_backend *be, void *dst, const void *host, size_t bytes);
    md_status (*download)(md_backend *be, void *host, const void *src, size_t bytes);
    md_status (*sync)(md_backend *be);

    md_status (*conv_create)(md_backend *be, const md_conv_desc *d, void **impl);
    void (*conv_destroy)(md_backend *be, void *impl);
    md_status (*conv_forward)(md_backend *be, void *impl, const float *x, const float *w, float *y);
    md_status (*conv_backward)(md_backend *be, void *impl, const float *x, const float *w,
                               const float *dy, float *dx, float *dw);

    md_status (*bn_forward_train)(md_backend *be, const md_tensor *x, const md_tensor *y,
                                  const md_bn_state *s);
    md_status (*bn_forward_eval)(md_backend *be, const md_tensor *x, const md_tensor *y,
                                 const md_bn_state *s);
    md_status (*bn_backward_train)(md_backend *be, const md_tensor *x, const md_tensor *dy,
                                   const md_tensor *dx, const md_tensor *dgamma,
                                   const md_tensor *dbeta, const md_bn_state *s);
    md_status (*bn_backward_eval)(md_backend *be, const md_tensor *x, const md_tensor *dy,
                                  const md_tensor *dx, const md_tensor *dgamma,
                                  const md_tensor *dbeta, const md_bn_state *s);

    md_status (*act_forward)(md_backend *be, md_act act, const float *x, float *y, size_t n);
    md_status (*act_backward)(md_backend *be, md_act act, const float *y, const float *dy,
                              float *dx, size_t n);
    md_status (*add)(md_backend *be, const float *x, float *y, size_t n);
    md_status (*copy)(md_backend *be, const float *x, float *y, size_t n);
    md_status (*zero)(md_backend *be, float *y, size_t n);

    md_status (*pool_forward)(md_backend *be, const md_pool_desc *p, const md_tensor *x,
                              const md_tensor *y);
    md_status (*pool_backward)(md_backend *be, const md_pool_desc *p, const md_tensor *x,
                               const md_tensor *dy, const md_tensor *dx);
    md_status (*gap_forward)(md_backend *be, const md_tensor *x, const md_tensor *y);
    md_status (*gap_backward)(md_backend *be, const md_tensor *dy, const md_tensor *dx);

    md_status (*concat_forward)(md_backend *be, const md_tensor *const *xs, int k,
                                const md_tensor *y);
    md_status (*concat_backward)(md_backend *be, const md_tensor *dy, const md_tensor *const *dxs,
                                 int k);
    md_status (*slice_forward)(md_backend *be, const md_tensor *x, int oh, int ow,
                               const md_tensor *y);
    md_status (*slice_backward)(md_backend *be, const md_tensor *dy, int oh, int ow,
                                const md_tensor *dx);

    md_status (*linear_forward)(md_backend *be, const md_tensor *x, const md_tensor *w,
                                const md_tensor *b, const md_tensor *y);
    md_status (*linear_backward)(md_backend *be, const md_tensor *x, const md_tensor *w,
                                 const md_tensor *dy, const md_tensor *dx, const md_tensor *dw,
                                 const md_tensor *db);
    md_status (*dropout_forward)(md_backend *be, float p, md_rng *rng, const md_tensor *x,
                                 const md_tensor *mask, const md_tensor *y);
    md_status (*mul_add)(md_backend *be, const float *a, const float *b, float *y,
                         size_t n); /* y += a*b */
    /* y[r*inner + i] (+)= x[r*inner + i] * s[r] over rows r: drop-path, dropout */
    md_status (*row_scale)(md_backend *be, const float *x, const float *s, float *y, size_t rows,
                           size_t inner, int accumulate);
    md_status (*softmax_ce)(md_backend *be, const md_tensor *logits, const int32_t *labels,
                            float *loss, const md_tensor *dlogits);
    md_status (*top1_correct)(md_backend *be, const md_tensor *logits, const int32_t *labels,
                              int *correct);

    md_status (*sgd_update)(md_backend *be, float *w, const float *g, float *v, size_t n,
                            float lr, float momentum, float weight_decay, int nesterov,
                            const double *guard); /* NULL, or skip unless *guard is finite */
    md_status (*sumsq)(md_backend *be, const float *x, size_t n, double *out);
    md_status (*scale)(md_backend *be, float *x, size_t n, float factor);
    md_status (*loss_dev)(md_backend *be, const md_tensor *logits, const int32_t *labels,
                          float smoothing, float *out, const md_tensor *dlogits);
    md_status (*sumsq_dev)(md_backend *be, const float *x, size_t n, double *acc);
    md_status (*clip_scale_dev)(md_backend *be, float *x, size_t n, const double *acc,
                                float max_norm);
    /* NULL where the backend has none (md_backend_has_augment_u8) */
    md_status (*augment_u8)(md_backend *be, const md_u8_batch *b);
    /* NULL on backends without graphs */
    md_status (*graph_begin)(md_backend *be);
    md_status (*graph_end)(md_backend *be, void **impl);
    md_status (*graph_launch)(md_backend *be, void *impl);
    void (*graph_destroy)(md_backend *be, void *impl);
} md_backend_vtable;

struct md_graph {
    md_backend *be;
    void       *impl;
};

struct md_conv {
    md_backend    *be;
    md_conv_desc   desc;
    int            oh, ow;
    void          *impl;
    int            refs;
    struct md_conv *next;
};

/* Every backend struct starts with this. */
struct md_backend {
    const md_backend_vtable *vt;
    struct md_conv          *convs; /* cache of conv handles by desc */
    char                     describe[256];
};

#endif
