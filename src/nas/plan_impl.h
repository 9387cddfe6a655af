/* Private to src/nas: the plan's steps and buffers, shared by the builder
 * (builder.c), which emits steps, and the executor (plan.c). */
#ifndef MDENAS_PLAN_IMPL_H
#define MDENAS_PLAN_IMPL_H

#include "mdenas/plan.h"

enum { MD_STEP_MAX_IN = 8 };

typedef enum {
    MD_STEP_CONV,
    MD_STEP_BN,
    MD_STEP_RELU,
    MD_STEP_POOL,
    MD_STEP_SUM, /* out = sum of inputs */
    MD_STEP_CONCAT,
    MD_STEP_SLICE, /* out = in[:, :, 1:, 1:] cropped to out's size */
    MD_STEP_ZERO,
    MD_STEP_GAP,
    MD_STEP_LINEAR,
    MD_STEP_RELU6,
    MD_STEP_NOISE /* training only: out = in * mask (drop-path per image, dropout per element) */
} md_step_kind;

typedef enum { MD_NOISE_DROP_PATH, MD_NOISE_DROPOUT } md_noise_kind;

typedef struct {
    md_step_kind kind;
    int          in[MD_STEP_MAX_IN];
    int          nin;
    int          out;
    md_conv     *conv;
    md_pool_desc pool;
    int          w, b;          /* params: conv/linear weight, linear bias (-1: none) */
    int          gamma, beta;   /* BN affine params, -1 when affine = false */
    int          rmean, rvar;   /* BN running statistics (stats arena) */
    float        eps;           /* BN */
    int          save;          /* BN: offset of its saved mean/invstd in save_mem (md_plan_finish) */
    int          zero[MD_STEP_MAX_IN + 1]; /* gradient buffers to zero before this backward */
    int          nzero;
    int          train_only;    /* skipped outside training (the auxiliary head) */
    md_noise_kind noise;        /* NOISE: what it is */
    float        rate;          /* NOISE, dropout: its probability (drop-path: md_plan_set_noise) */
    size_t       mask;          /* NOISE: offset of its scales in noise_mem (md_plan_finish) */
} md_step;

typedef struct {
    md_tensor act;  /* activation */
    md_tensor grad; /* gradient, data NULL when no gradient flows into it */
    size_t    act_off, grad_off; /* planned offsets (floats) */
    int       producer;          /* step index, -1 for the input image */
    int       relu;              /* buffer holding relu(this), shared by all consumers; -1 */
    int       needs_grad;
} md_pbuf;

struct md_plan {
    md_model    *model;
    md_backend  *be;
    int          rows;
    md_step     *steps;
    int          nsteps, cap_steps;
    md_pbuf     *bufs;
    int          nbufs, cap_bufs;
    int          input, logits; /* buffer ids */
    int          aux;           /* the auxiliary head's logits (-1: none) */
    float        aux_weight;    /* of the auxiliary loss in the training loss */
    float       *noise_mem;     /* backend memory: the scales of every NOISE step */
    float       *noise_host;    /* host staging for a device backend (NULL on the CPU) */
    size_t       noise_floats;
    int          noise_on;      /* masks drawn (md_plan_set_noise): NOISE steps apply them */
    int          noise_used;    /* the last forward applied them (its backward must too) */
    float       *act_mem, *grad_mem, *save_mem;
    size_t       act_floats, grad_floats;
    md_range    *ranges, *ranges_bn, *ranges_other; /* all weights used; BN affine; the rest */
    int          nranges, nranges_bn, nranges_other;
    int          grads_ready; /* loss gradient written, backward may run */
    const md_bn_sync *bn_sync; /* cross-replica BN, or NULL */
};

/* Builder services, implemented in plan.c. A shell is an empty plan: with be = NULL
 * it only records buffer shapes (how a space declares its weights). */
md_status md_plan_shell(md_model *m, md_backend *be, int rows, md_plan **out);
void      md_plan_free_shell(md_plan *p);
int md_plan_add_buf(md_plan *p, int n, int c, int h, int w); /* returns id or -1 */
md_status md_plan_add_step(md_plan *p, const md_step *st);
md_status md_plan_finish(md_plan *p); /* memory planning and allocation */

#endif
