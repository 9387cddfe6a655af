/* A training step of a sampled search network, over the same sampled
 * architectures that a PyTorch script times:
 *  - DARTS (default): the CIFAR search network, one op per edge; zero grads,
 *    forward, loss, backward, clip 5, SGD (bench_step_torch.py);
 *  - --space mobile: the mobile supernet (ProxylessNAS skeleton) at --size
 *    pixels, one op per block; the ProxylessNAS recipe's step: label smoothing
 *    0.1, SGD with Nesterov momentum 0.9, weight decay 4e-5 except on BN, no
 *    clip (bench_mobile_torch.py; the architectures go to --archs-out as
 *    ProxylessNAS net configs).
 *
 *   bench_step [--space darts|mobile] [--batch N] [--threads N] [--archs N] [--steps N]
 *              [--warmup N] [--device cpu|cuda] [--tf32 1|0] [--graphs 1|0] [--seed N]
 *              [--cells N] [--channels N] [--size N] [--width-mult X] [--classes N]
 *              [--archs-out FILE]
 *
 * JSON lines: one per architecture, then a summary with the peak RSS.
 * MDENAS_PROFILE=1 prints where the time goes, per op kind (depthwise apart). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "mdenas/mdl.h"
#include "mdenas/space.h"
#include "mdenas/supernet.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "bench_step: %s: %s\n", what, md_error_message());
    exit(1);
}

static int arg_int(int argc, char **argv, const char *name, int def) {
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) {
            char *end;
            long  v = strtol(argv[i + 1], &end, 10);
            if (*end || v < 0) {
                fprintf(stderr, "bench_step: %s '%s' is not a count\n", name, argv[i + 1]);
                exit(2);
            }
            return (int)v;
        }
    return def;
}

static const char *arg_str(int argc, char **argv, const char *name) {
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name)) return argv[i + 1];
    return NULL;
}

/* The architecture as the PyTorch script reads it: DARTS op lists, or the
 * mobile net's ProxylessNAS net config. */
static void write_arch(FILE *f, const md_space *sp, const int *choice, int first) {
    const md_space_info *in = md_space_describe(sp);
    md_json              j;
    md_json_init(&j);
    if (!strcmp(in->name, "mobile")) {
        double *p = calloc((size_t)in->dists * in->k, sizeof *p);
        for (int d = 0; p && d < in->dists; d++) p[(size_t)d * in->k + choice[d]] = 1.0;
        if (!p || md_space_export(sp, p, &j) != MD_OK) die("export");
        free(p);
    } else {
        md_json_begin_object(&j);
        for (int g = 0; g < in->ngroups; g++) {
            md_json_key(&j, in->groups[g].key);
            md_json_begin_array(&j);
            for (int d = in->groups[g].first; d < in->groups[g].first + in->groups[g].count; d++)
                md_json_string(&j, in->op_names[choice[d]]);
            md_json_end_array(&j);
        }
        md_json_end_object(&j);
    }
    fprintf(f, "%s%s", first ? "" : ",\n", j.buf);
    md_json_free(&j);
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: bench_step [--space darts|mobile] [--device cpu|cuda] [--graphs 1] [--tf32 1] [--batch 64] [--threads 0] [--archs 3] [--steps 10] "
                   "[--warmup 2] [--seed 1] [--cells 8] [--channels 16] [--size 128] [--width-mult 1] [--classes 1000] [--archs-out FILE]\n");
            return 0;
        }
    int batch = arg_int(argc, argv, "--batch", 64), threads = arg_int(argc, argv, "--threads", 0);
    int narch = arg_int(argc, argv, "--archs", 3), steps = arg_int(argc, argv, "--steps", 10);
    int warmup = arg_int(argc, argv, "--warmup", 2), seed = arg_int(argc, argv, "--seed", 1);
    const char *space = arg_str(argc, argv, "--space");
    int         mobile = space && !strcmp(space, "mobile");
    int         side = mobile ? arg_int(argc, argv, "--size", 128) : 32;
    int         classes = mobile ? arg_int(argc, argv, "--classes", 1000) : 10;
    if (space && !mobile && strcmp(space, "darts")) {
        fprintf(stderr, "bench_step: --space '%s': use darts or mobile\n", space);
        return 2;
    }
    md_darts_config cfg = {.in_c = 3, .in_h = 32, .in_w = 32, .classes = 10,
                           .cells = arg_int(argc, argv, "--cells", 8),
                           .channels = arg_int(argc, argv, "--channels", 16), .nodes = 4};
    md_mobile_config mcfg;
    md_mobile_config_default(&mcfg);
    mcfg.in_c = 3, mcfg.in_h = mcfg.in_w = side, mcfg.classes = classes;
    const char *wm = arg_str(argc, argv, "--width-mult");
    if (wm) mcfg.width_mult = atof(wm);
    const char *archs_out = arg_str(argc, argv, "--archs-out");
    if (batch < 2 || narch < 1 || steps < 1) {
        fprintf(stderr, "bench_step: need --batch >= 2, --archs >= 1, --steps >= 1\n");
        return 2;
    }
    const char  *device = arg_str(argc, argv, "--device");
    int          use_graphs = arg_int(argc, argv, "--graphs", 1);
    int          gpu = device && !strcmp(device, "cuda");
    md_backend  *be;
    md_space    *sp = NULL;
    md_model    *model = NULL;
    if (device && !gpu && strcmp(device, "cpu")) {
        fprintf(stderr, "bench_step: --device '%s': use cpu or cuda\n", device);
        return 2;
    }
    if (gpu ? md_backend_cuda_create(0, arg_int(argc, argv, "--tf32", 1),
                                        !arg_int(argc, argv, "--deterministic", 1), &be)
            : md_backend_cpu_create(threads, &be))
        die("backend");
    /* GPU memory: the rise above what the context and handles hold now. Plans
     * and the supernet are allocated up front and not freed while steps run, so
     * the largest rise seen after an architecture's steps is mdenas's peak. */
    size_t gpu_base = md_backend_cuda_used_bytes(be), gpu_peak = 0;
    if ((mobile ? md_space_mobile_create(&mcfg, &sp) : md_space_darts_create(&cfg, &sp)) != MD_OK)
        die("space");
    if (md_space_model_create(sp, (uint64_t)seed, gpu ? be : NULL, &model) != MD_OK) die("supernet");
    const md_space_info *si = md_space_describe(sp);
    md_mdl               mdl;
    if (md_mdl_init(&mdl, si->dists, si->k, 0.01, MD_UPDATE_PAPER) != MD_OK ||
        md_mdl_set_mask(&mdl, si->allowed) != MD_OK)
        die("mdl");
    md_rng rng;
    md_rng_seed(&rng, (uint64_t)seed, 0xbe7c);

    size_t   n = (size_t)batch * 3 * side * side;
    float   *x = malloc(n * sizeof *x);
    int32_t *y = malloc((size_t)batch * sizeof *y);
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * md_rng_uniform(&rng) - 1.0f;
    for (int i = 0; i < batch; i++) y[i] = (int32_t)(md_rng_u32(&rng) % (uint32_t)classes);
    if (gpu) { /* the batch lives on the device, as a resident dataset would */
        void *xd, *yd;
        if (md_backend_alloc(be, n * sizeof *x, &xd) || md_backend_alloc(be, (size_t)batch * 4, &yd) ||
            md_backend_upload(be, xd, x, n * sizeof *x) ||
            md_backend_upload(be, yd, y, (size_t)batch * sizeof *y))
            die("device batch");
        free(x), free(y);
        x = xd, y = yd;
    }

    FILE *af = archs_out ? fopen(archs_out, "w") : NULL;
    if (archs_out && !af) {
        fprintf(stderr, "bench_step: cannot write %s\n", archs_out);
        return 1;
    }
    if (af) fprintf(af, "[");
    md_arena *pa = &model->params, *ga = &model->grads, *ma = &model->momentum;
    float    *scal = NULL; /* loss, correct, the clip norm (a double), in backend memory */
    if (md_backend_alloc(be, 64, (void **)&scal)) die("scalars");
    double total_ms = 0;
    for (int a = 0; a < narch; a++) {
        int choice[MD_MOBILE_MAX_BLOCKS + 2 * MD_MAX_EDGES];
        md_mdl_sample(&mdl, &rng, choice);
        if (af) write_arch(af, sp, choice, a == 0);
        md_plan *p;
        double   tc = now_s();
        if (md_space_plan(sp, model, be, choice, batch, &p) != MD_OK) die("plan");
        double compile_ms = 1e3 * (now_s() - tc), t0 = 0;
        int             nr;
        const md_range *r = md_plan_ranges(p, &nr);
        md_graph *graph = NULL;
        for (int s = 0; s < warmup + steps; s++) {
            if (s == warmup) t0 = now_s();
            if (graph) {
                if (md_graph_launch(graph)) die("graph launch");
                continue;
            }
            /* The search's step: no host round trip, so a backend with graphs
             * records it once (after one plain step has made every buffer). */
            int record = s > 0 && use_graphs && md_backend_has_graphs(be);
            if (record && md_graph_capture_begin(be)) die("capture");
            if (md_plan_zero_grads(p) || md_plan_forward(p, x, MD_MODE_TRAIN)) die("step");
            if (mobile) { /* ProxylessNAS: smoothing, Nesterov, no decay on BN, no clip */
                int             nb, no;
                const md_range *rb = md_plan_ranges_split(p, 1, &nb), *ro = md_plan_ranges_split(p, 0, &no);
                if (md_plan_loss_dev_smoothed(p, y, 0.1f, scal) || md_plan_backward(p) ||
                    md_sgd_step_nesterov(be, pa->data, ga->data, ma->data, ro, no, 0.025f, 0.9f, 4e-5f, 1) ||
                    md_sgd_step_nesterov(be, pa->data, ga->data, ma->data, rb, nb, 0.025f, 0.9f, 0.0f, 1))
                    die("step");
            } else if (md_plan_loss_dev(p, y, scal) || md_plan_backward(p) ||
                       md_clip_grad_norm_dev(be, ga->data, r, nr, 5.0f, (double *)(scal + 2)) ||
                       md_sgd_step(be, pa->data, ga->data, ma->data, r, nr, 0.025f, 0.9f, 3e-4f))
                die("step");
            if (record && (md_graph_capture_end(be, &graph) || md_graph_launch(graph)))
                die("capture end");
        }
        if (md_backend_sync(be)) die("sync");
        double ms = 1e3 * (now_s() - t0) / steps;
        size_t used = md_backend_cuda_used_bytes(be);
        if (used > gpu_base && used - gpu_base > gpu_peak) gpu_peak = used - gpu_base;
        total_ms += ms;
        printf("{\"bench\":\"step\",\"impl\":\"mdenas\",\"space\":\"%s\",\"arch\":%d,\"batch\":%d,"
               "\"size\":%d,\"threads\":%d,\"ms_per_step\":%.3f,\"img_per_s\":%.1f,\"plan_mb\":%.1f,"
               "\"compile_ms\":%.1f}\n",
               si->name, a, batch, side, threads, ms, 1e3 * batch / ms, md_plan_bytes(p) / 1048576.0,
               compile_ms);
        fflush(stdout);
        md_graph_destroy(graph);
        md_plan_destroy(p);
    }
    if (af) {
        fprintf(af, "]\n");
        fclose(af);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("{\"bench\":\"step_summary\",\"impl\":\"mdenas\",\"space\":\"%s\",\"size\":%d,\"graphs\":%d,\"device\":\"%s\",\"batch\":%d,"
           "\"threads\":%d,\"archs\":%d,\"ms_per_step\":%.3f,\"img_per_s\":%.1f,"
           "\"peak_rss_mb\":%.1f,\"peak_gpu_mb\":%.1f,\"supernet_params\":%zu,\"backend\":\"%s\"}\n",
           si->name, side, use_graphs && md_backend_has_graphs(be), gpu ? "cuda" : "cpu", batch,
           threads, narch,
           total_ms / narch,
           1e3 * batch * narch / total_ms, ru.ru_maxrss / 1024.0, gpu_peak / 1048576.0, pa->numel,
           md_backend_describe(be));
    md_mdl_free(&mdl);
    md_model_destroy(model);
    md_space_destroy(sp);
    md_backend_free(be, scal);
    if (gpu) {
        md_backend_free(be, x);
        md_backend_free(be, y);
    } else {
        free(x);
        free(y);
    }
    md_backend_destroy(be);
    return 0;
}
