/* A whole sampled DARTS network against PyTorch (tests/gen_fixture_net.py):
 * loss, logits and the gradient of every weight after one step, the loss
 * after one SGD step over the plan's ranges; plus the supernet's layout. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "mdenas/supernet.h"
#include "testutil.h"

static double rel_err(const float *a, const float *b, size_t n) {
    return md_max_rel_err(a, b, n, 1e-6);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_supernet FIXTURE_DIR\n");
        return 2;
    }
    md_fixture fx;
    md_fixture_load_or_exit(&fx, argv[1], "darts_net.bin");
    const md_fx_tensor *cfg = md_fixture_need(&fx, "cfg");
    md_darts_config     c = {.in_c = md_fx_int(cfg, 0), .in_h = md_fx_int(cfg, 1),
                             .in_w = md_fx_int(cfg, 1), .classes = md_fx_int(cfg, 2),
                             .cells = md_fx_int(cfg, 3), .channels = md_fx_int(cfg, 4),
                             .nodes = md_fx_int(cfg, 5)};
    int                 rows = md_fx_int(cfg, 6);
    md_backend         *be = NULL;
    md_supernet        *net = NULL;
    if (md_backend_cpu_create(0, &be) != MD_OK || md_supernet_create(&c, 1, &net) != MD_OK) {
        fprintf(stderr, "setup: %s\n", md_error_message());
        return 2;
    }
    md_arena *params = md_supernet_params(net), *grads = md_supernet_grads(net);
    CHECK(md_supernet_edges(net) == 14, "edges %d", md_supernet_edges(net));

    /* Every candidate op of every edge has its weights: one sep_conv_5x5 in a reduction cell. */
    int i5 = md_arena_find(params, "cell1.edge0.sep_conv_5x5.dw2.w");
    CHECK(i5 >= 0 && params->table[i5].dim[0] == 8 && params->table[i5].dim[1] == 1 &&
              params->table[i5].dim[2] == 5,
          "cell1.edge0.sep_conv_5x5.dw2.w missing or misshapen");
    CHECK(md_arena_find(params, "cell2.edge13.dil_conv_3x3.pw.w") >= 0, "last edge weights");
    CHECK(md_arena_find(params, "cell0.edge5.none.w") < 0, "none has weights");

    /* Load the reference weights by name, checking shapes. */
    int nw = 0;
    for (int i = 0; i < fx.count; i++) {
        if (strncmp(fx.t[i].name, "w/", 2)) continue;
        int idx = md_arena_find(params, fx.t[i].name + 2);
        CHECK(idx >= 0, "reference weight %s not in the arena", fx.t[i].name + 2);
        if (idx < 0) continue;
        CHECK(params->table[idx].numel == fx.t[i].numel, "%s: %zu floats, reference %zu",
              fx.t[i].name + 2, params->table[idx].numel, fx.t[i].numel);
        if (params->table[idx].numel != fx.t[i].numel) continue;
        memcpy(params->data + params->table[idx].offset, fx.t[i].data, fx.t[i].numel * 4);
        nw++;
    }
    md_arch             arch;
    const md_fx_tensor *an = md_fixture_need(&fx, "arch/normal"),
                       *ar = md_fixture_need(&fx, "arch/reduce");
    for (int e = 0; e < 14; e++) arch.normal[e] = md_fx_int(an, e), arch.reduce[e] = md_fx_int(ar, e);
    md_plan *plan = NULL;
    CHECK_OK(md_plan_create(net, be, &arch, rows, &plan));
    if (!plan) return md_test_finish("test_supernet");

    /* The plan's ranges cover exactly the reference weights. */
    int             nr = 0;
    const md_range *r = md_plan_ranges(plan, &nr);
    size_t          covered = 0, want = 0;
    for (int i = 0; i < nr; i++) covered += r[i].count;
    for (int i = 0; i < fx.count; i++)
        if (!strncmp(fx.t[i].name, "w/", 2)) {
            want += fx.t[i].numel;
            int idx = md_arena_find(params, fx.t[i].name + 2), inside = 0;
            for (int k = 0; k < nr && idx >= 0; k++)
                inside |= params->table[idx].offset >= r[k].offset &&
                          params->table[idx].offset + params->table[idx].numel <=
                              r[k].offset + r[k].count;
            CHECK(inside, "%s is outside the plan's ranges", fx.t[i].name + 2);
        }
    CHECK(covered >= want && covered < want + 16 * (size_t)nw, "ranges hold %zu floats for %zu",
          covered, want);

    md_tensor x = md_fx_upload(be, md_fixture_need(&fx, "x"));
    int32_t  *labels = md_fx_upload_labels(be, md_fixture_need(&fx, "labels"));
    float     loss = 0;
    int       correct = -1;
    CHECK_OK(md_plan_zero_grads(plan));
    CHECK_OK(md_plan_forward(plan, x.data, MD_MODE_TRAIN));
    CHECK_OK(md_plan_loss(plan, labels, &loss, &correct));
    CHECK_OK(md_plan_backward(plan));
    double want_loss = md_fx_value(md_fixture_need(&fx, "loss"), 0);
    CHECK(fabs(loss - want_loss) < 1e-5 * fabs(want_loss), "loss %.8f, PyTorch %.8f", loss,
          want_loss);
    CHECK(correct >= 0 && correct <= rows, "correct %d", correct);

    double worst = 0;
    for (int i = 0; i < fx.count; i++) {
        if (strncmp(fx.t[i].name, "g/", 2)) continue;
        int idx = md_arena_find(grads, fx.t[i].name + 2);
        if (idx < 0) continue;
        double e = rel_err(grads->data + grads->table[idx].offset, fx.t[i].data, fx.t[i].numel);
        worst = fmax(worst, e);
        CHECK(e < 2e-4, "gradient of %s: relative error %.3g", fx.t[i].name + 2, e);
    }
    printf("%d weights, loss %.6f (PyTorch %.6f), worst gradient error %.3g\n", nw, loss,
           want_loss, worst);
    /* Inactive ops get no gradient. */
    int ip = md_arena_find(grads, "cell0.edge0.sep_conv_5x5.pw1.w");
    float s = 0;
    for (size_t j = 0; j < grads->table[ip].numel; j++) s += fabsf(grads->data[grads->table[ip].offset + j]);
    CHECK(s == 0.0f, "an unsampled op has gradient mass %g", s);

    /* One SGD step over the ranges, then the loss again. */
    md_arena *mom = md_supernet_momentum(net);
    CHECK_OK(md_sgd_step(be, params->data, grads->data, mom->data, r, nr, 0.1f, 0.9f, 3e-4f));
    CHECK_OK(md_plan_forward(plan, x.data, MD_MODE_TRAIN));
    CHECK_OK(md_plan_loss(plan, labels, &loss, NULL));
    double want2 = md_fx_value(md_fixture_need(&fx, "loss2"), 0);
    CHECK(fabs(loss - want2) < 1e-4 * fabs(want2), "loss after SGD %.8f, PyTorch %.8f", loss, want2);
    CHECK(md_plan_bytes(plan) > 0, "plan memory");

    /* Backward needs a training forward and loss first. */
    CHECK_OK(md_plan_backward(plan));
    CHECK(md_plan_backward(plan) == MD_ERR_ARG, "second backward without forward accepted");

    md_plan_destroy(plan);
    md_tbuf_free(be, &x);
    md_backend_free(be, labels);
    md_supernet_destroy(net);
    md_backend_destroy(be);
    md_fixture_free(&fx);
    return md_test_finish("test_supernet");
}
