/* A training step of the CIFAR search network (DARTS space, one sampled op
 * per edge): zero grads, forward, loss, backward, clip, SGD, over the same
 * sampled architectures that bench_step_torch.py times in PyTorch.
 *
 *   bench_step [--batch N] [--threads N] [--archs N] [--steps N] [--warmup N]
 *              [--device cpu|cuda] [--tf32 1|0] [--graphs 1|0]
 *              [--seed N] [--cells N] [--channels N] [--archs-out FILE]
 *
 * JSON lines: one per architecture, then a summary with the peak RSS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "mdenas/mdl.h"
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

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: bench_step [--device cpu|cuda] [--graphs 1] [--tf32 1] [--batch 64] [--threads 0] [--archs 3] [--steps 10] "
                   "[--warmup 2] [--seed 1] [--cells 8] [--channels 16] [--archs-out FILE]\n");
            return 0;
        }
    int batch = arg_int(argc, argv, "--batch", 64), threads = arg_int(argc, argv, "--threads", 0);
    int narch = arg_int(argc, argv, "--archs", 3), steps = arg_int(argc, argv, "--steps", 10);
    int warmup = arg_int(argc, argv, "--warmup", 2), seed = arg_int(argc, argv, "--seed", 1);
    md_darts_config cfg = {.in_c = 3, .in_h = 32, .in_w = 32, .classes = 10,
                           .cells = arg_int(argc, argv, "--cells", 8),
                           .channels = arg_int(argc, argv, "--channels", 16), .nodes = 4};
    const char *archs_out = arg_str(argc, argv, "--archs-out");
    if (batch < 2 || narch < 1 || steps < 1) {
        fprintf(stderr, "bench_step: need --batch >= 2, --archs >= 1, --steps >= 1\n");
        return 2;
    }
    const char  *device = arg_str(argc, argv, "--device");
    int          use_graphs = arg_int(argc, argv, "--graphs", 1);
    int          gpu = device && !strcmp(device, "cuda");
    md_backend  *be;
    md_supernet *net;
    if (device && !gpu && strcmp(device, "cpu")) {
        fprintf(stderr, "bench_step: --device '%s': use cpu or cuda\n", device);
        return 2;
    }
    if (gpu ? md_backend_cuda_create(0, arg_int(argc, argv, "--tf32", 1), &be)
            : md_backend_cpu_create(threads, &be))
        die("backend");
    if (md_supernet_create_on(&cfg, (uint64_t)seed, gpu ? be : NULL, &net) != MD_OK) die("supernet");
    int    E = md_supernet_edges(net);
    md_mdl mdl;
    if (md_mdl_init(&mdl, 2 * E, MD_DARTS_OPS, 0.01, MD_UPDATE_PAPER) != MD_OK) die("mdl");
    md_rng rng;
    md_rng_seed(&rng, (uint64_t)seed, 0xbe7c);

    size_t   n = (size_t)batch * 3 * 32 * 32;
    float   *x = malloc(n * sizeof *x);
    int32_t *y = malloc((size_t)batch * sizeof *y);
    for (size_t i = 0; i < n; i++) x[i] = 2.0f * md_rng_uniform(&rng) - 1.0f;
    for (int i = 0; i < batch; i++) y[i] = (int32_t)(md_rng_u32(&rng) % 10);
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
    md_arena *pa = md_supernet_params(net), *ga = md_supernet_grads(net),
             *ma = md_supernet_momentum(net);
    float    *scal = NULL; /* loss, correct, the clip norm (a double), in backend memory */
    if (md_backend_alloc(be, 64, (void **)&scal)) die("scalars");
    double total_ms = 0;
    for (int a = 0; a < narch; a++) {
        int choice[64];
        md_mdl_sample(&mdl, &rng, choice);
        md_arch arch;
        for (int e = 0; e < E; e++) arch.normal[e] = choice[e], arch.reduce[e] = choice[E + e];
        if (af) {
            fprintf(af, "%s{\"normal\": [", a ? ", " : "");
            for (int e = 0; e < E; e++) fprintf(af, "%s\"%s\"", e ? ", " : "", md_darts_op_names[arch.normal[e]]);
            fprintf(af, "], \"reduce\": [");
            for (int e = 0; e < E; e++) fprintf(af, "%s\"%s\"", e ? ", " : "", md_darts_op_names[arch.reduce[e]]);
            fprintf(af, "]}");
        }
        md_plan *p;
        double   tc = now_s();
        if (md_plan_create(net, be, &arch, batch, &p) != MD_OK) die("plan");
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
            if (md_plan_zero_grads(p) || md_plan_forward(p, x, MD_MODE_TRAIN) ||
                md_plan_loss_dev(p, y, scal) || md_plan_backward(p) ||
                md_clip_grad_norm_dev(be, ga->data, r, nr, 5.0f, (double *)(scal + 2)) ||
                md_sgd_step(be, pa->data, ga->data, ma->data, r, nr, 0.025f, 0.9f, 3e-4f))
                die("step");
            if (record && (md_graph_capture_end(be, &graph) || md_graph_launch(graph)))
                die("capture end");
        }
        if (md_backend_sync(be)) die("sync");
        double ms = 1e3 * (now_s() - t0) / steps;
        total_ms += ms;
        printf("{\"bench\":\"step\",\"impl\":\"mdenas\",\"arch\":%d,\"batch\":%d,\"threads\":%d,"
               "\"ms_per_step\":%.3f,\"img_per_s\":%.1f,\"plan_mb\":%.1f,\"compile_ms\":%.1f}\n",
               a, batch, threads, ms, 1e3 * batch / ms, md_plan_bytes(p) / 1048576.0, compile_ms);
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
    printf("{\"bench\":\"step_summary\",\"impl\":\"mdenas\",\"graphs\":%d,\"device\":\"%s\",\"batch\":%d,"
           "\"threads\":%d,\"archs\":%d,\"ms_per_step\":%.3f,\"img_per_s\":%.1f,"
           "\"peak_rss_mb\":%.1f,\"supernet_params\":%zu,\"backend\":\"%s\"}\n",
           use_graphs && md_backend_has_graphs(be), gpu ? "cuda" : "cpu", batch, threads, narch,
           total_ms / narch,
           1e3 * batch * narch / total_ms, ru.ru_maxrss / 1024.0, pa->numel,
           md_backend_describe(be));
    md_mdl_free(&mdl);
    md_supernet_destroy(net);
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
