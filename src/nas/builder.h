/* Private to src/nas: the declare/emit builder that every space builds its
 * network with. One function of a space describes the network; run with
 * MD_BUILD_DECLARE it adds every weight to the model's arenas (buffers only
 * carry shapes), with MD_BUILD_EMIT it looks the weights up and adds the steps
 * of a plan, with MD_BUILD_COUNT it only counts parameters and multiply-adds.
 * The declared supernet and the emitted plans can therefore never disagree.
 * Every call after a failure does nothing and returns MD_BUILD_NONE. */
#ifndef MDENAS_NAS_BUILDER_H
#define MDENAS_NAS_BUILDER_H

#include "nas/plan_impl.h"

typedef enum { MD_BUILD_DECLARE, MD_BUILD_EMIT, MD_BUILD_COUNT } md_build_mode;

enum { MD_BUILD_NONE = -1 }; /* no buffer */

typedef struct {
    md_model     *model;
    md_plan      *plan;
    md_build_mode mode;
    md_status     status; /* first failure */
    double        params, madds; /* MD_BUILD_COUNT: per image */
    int           train_only;    /* steps added now run in training only (auxiliary head) */
    double        train_params, train_madds; /* the part of params, madds added so */
} md_builder;

/* A builder over a fresh plan shell of `rows` images (be NULL unless emitting). */
md_status md_builder_begin(md_builder *b, md_build_mode mode, md_model *m, md_backend *be,
                           int rows);
/* Emit: plan memory; the plan is handed to *out. Others: the shell is freed. */
md_status md_builder_end(md_builder *b, md_plan **out);

int              md_build_ok(const md_builder *b);
const md_tensor *md_build_shape(const md_builder *b, int buf);
int              md_build_buf(md_builder *b, int c, int h, int w);
/* dst = a + b, cut at MD_NAME_MAX - 1 characters (names are far shorter). */
void             md_build_name(char *dst, const char *a, const char *b);

int md_build_conv(md_builder *b, const char *name, int in, int c_out, int k, int stride, int pad,
                  int dil, int groups);
/* BN: affine adds name.gamma / name.beta; running statistics name.running_mean/var. */
int md_build_bn(md_builder *b, const char *name, int in, int affine, float eps);
/* relu(x) is computed once per buffer and shared by every consumer. */
int md_build_relu(md_builder *b, int in);
int md_build_relu6(md_builder *b, int in);
int md_build_pool(md_builder *b, int in, md_pool_kind kind, int stride); /* 3x3, pad 1 */
int md_build_pool_k(md_builder *b, int in, md_pool_kind kind, int k, int stride, int pad);
/* Training-only noise on in: drop-path (one scale per image, its probability set
 * per step by md_plan_set_noise) or dropout of probability rate. */
int md_build_noise(md_builder *b, int in, md_noise_kind kind, float rate);
/* SUM or CONCAT of n buffers into one of c channels. */
int md_build_multi(md_builder *b, md_step_kind kind, const int *in, int n, int c);
int md_build_slice(md_builder *b, int in);
int md_build_zero(md_builder *b, int c, int h, int w);
/* Global average pool and the linear classifier (classifier.w, classifier.b);
 * the logits become the plan's output. */
int md_build_classifier(md_builder *b, int in, int classes);
/* The same with weights prefix.w / prefix.b, dropout of probability `dropout`
 * before the linear layer (0: none) and, aux = 1, as the plan's auxiliary
 * logits instead (its loss weighted by aux_weight). */
int md_build_head(md_builder *b, int in, int classes, const char *prefix, float dropout, int aux,
                  float aux_weight);

#endif
