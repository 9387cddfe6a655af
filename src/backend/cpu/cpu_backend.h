/* Private to the CPU backend: its state and the entries split across files. */
#ifndef MDENAS_CPU_BACKEND_H
#define MDENAS_CPU_BACKEND_H

#include <oneapi/dnnl/dnnl.h>

#include "backend/backend_impl.h"

typedef struct {
    md_backend    base; /* first: a md_backend* is a md_cpu_backend* */
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    int           threads;
    float        *scratch; /* shared by ops that need a temporary; ops run one at a time */
    size_t        scratch_floats;
} md_cpu_backend;

static inline md_cpu_backend *md_cpu(md_backend *be) {
    return (md_cpu_backend *)be;
}

/* Turn a failing oneDNN status into an md error naming the call. */
md_status md_dnnl_check(dnnl_status_t st, const char *what, const char *file, int line);
#define DNNL_TRY(call) MD_TRY(md_dnnl_check((call), #call, __FILE__, __LINE__))

/* A scratch buffer of at least `floats` floats, valid until the next call. */
md_status md_cpu_scratch(md_backend *be, size_t floats, float **out);

/* cpu_conv.c */
md_status md_cpu_conv_create(md_backend *be, const md_conv_desc *d, void **impl);
void      md_cpu_conv_destroy(md_backend *be, void *impl);
md_status md_cpu_conv_forward(md_backend *be, void *impl, const float *x, const float *w, float *y);
md_status md_cpu_conv_backward(md_backend *be, void *impl, const float *x, const float *w,
                               const float *dy, float *dx, float *dw);


#endif
