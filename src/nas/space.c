/* Dispatch to a space's implementation, and what every space shares. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mdenas/safetensors.h"
#include "mdenas/supernet.h"
#include "nas/space_impl.h"

const md_space_info *md_space_describe(const md_space *s) {
    return &s->info;
}

void md_space_destroy(md_space *s) {
    if (s) s->vt->destroy(s);
}

/* The space's network described once in a mode that makes no plan (declare or
 * count); *b keeps the counts. */
static md_status describe(const md_space *s, md_build_mode mode, md_model *m, const int *choice,
                          md_builder *b) {
    md_status st = md_builder_begin(b, mode, m, NULL, 1);
    if (st == MD_OK) st = s->vt->build(s, b, choice);
    if (b->plan) {
        md_status e = md_builder_end(b, NULL);
        if (st == MD_OK) st = e;
    }
    return st;
}

md_status md_space_model_create(const md_space *s, uint64_t seed, md_backend *be,
                                md_model **out) {
    md_model *m = NULL;
    *out = NULL;
    MD_TRY(md_model_create(be, &m));
    md_builder b;
    md_status  st = describe(s, MD_BUILD_DECLARE, m, NULL, &b);
    if (st == MD_OK) st = md_model_finalize(m);
    if (st != MD_OK) {
        md_model_destroy(m);
        return st;
    }
    s->vt->init_weights(s, m, seed);
    *out = m;
    return MD_OK;
}

static md_status check_choice(const md_space *s, const int *choice) {
    const md_space_info *in = &s->info;
    for (int d = 0; d < in->dists; d++)
        if (choice[d] < 0 || choice[d] >= in->k || !in->allowed[(size_t)d * in->k + choice[d]])
            return md_fail(MD_ERR_ARG, "plan: distribution %d has op %d (%s), not one of its "
                                       "candidates", d, choice[d],
                           choice[d] >= 0 && choice[d] < in->k ? in->op_names[choice[d]] : "?");
    return MD_OK;
}

md_status md_space_plan(const md_space *s, md_model *m, md_backend *be, const int *choice,
                        int rows, md_plan **out) {
    *out = NULL;
    if (rows < 1) return md_fail(MD_ERR_ARG, "plan: %d rows", rows);
    MD_TRY(check_choice(s, choice));
    md_builder b;
    md_status  st = md_builder_begin(&b, MD_BUILD_EMIT, m, be, rows);
    if (st == MD_OK) st = s->vt->build(s, &b, choice);
    if (!b.plan) return st;
    if (st != MD_OK) b.status = st;
    return md_builder_end(&b, out);
}

md_status md_space_count(const md_space *s, const int *choice, double *params, double *madds) {
    MD_TRY(check_choice(s, choice));
    md_builder b;
    md_status  st = describe(s, MD_BUILD_COUNT, NULL, choice, &b);
    *params = b.params, *madds = b.madds;
    return st;
}

md_status md_space_count_inference(const md_space *s, const int *choice, double *params,
                                   double *madds) {
    MD_TRY(check_choice(s, choice));
    md_builder b;
    md_status  st = describe(s, MD_BUILD_COUNT, NULL, choice, &b);
    *params = b.params - b.train_params, *madds = b.madds - b.train_madds;
    return st;
}

void md_space_argmax(const md_space *s, const double *p, int *choice) {
    const md_space_info *in = &s->info;
    for (int d = 0; d < in->dists; d++) {
        int best = -1;
        for (int k = 0; k < in->k; k++) {
            size_t i = (size_t)d * in->k + k;
            if (in->allowed[i] && (best < 0 || p[i] > p[(size_t)d * in->k + best])) best = k;
        }
        choice[d] = best < 0 ? 0 : best;
    }
}

md_status md_space_summary(const md_space *s, const double *p, char *buf, size_t len) {
    return s->vt->summary(s, p, buf, len);
}

md_status md_space_export(const md_space *s, const double *p, md_json *j) {
    return s->vt->export_json(s, p, j);
}

md_status md_space_write_files(const md_space *s, const double *p, const char *dir) {
    return s->vt->write_files ? s->vt->write_files(s, p, dir) : MD_OK;
}

void md_space_config_json(const md_space *s, md_json *j) {
    s->vt->config_json(s, j);
}

int md_name_ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

void md_init_bn_stats(md_model *m) {
    for (int i = 0; i < m->stats.count; i++) {
        md_param *p = &m->stats.table[i];
        float     v = md_name_ends_with(p->name, ".running_var") ? 1.0f : 0.0f;
        for (size_t j = 0; j < p->numel; j++) m->stats.data[p->offset + j] = v;
    }
}

void md_init_torch_default(md_model *m, uint64_t seed) {
    md_rng root;
    md_rng_seed(&root, seed, 0x5eed);
    for (int i = 0; i < m->params.count; i++) {
        md_param *p = &m->params.table[i];
        float    *d = m->params.data + p->offset;
        if (md_name_ends_with(p->name, ".gamma")) {
            for (size_t j = 0; j < p->numel; j++) d[j] = 1.0f;
            continue;
        }
        if (md_name_ends_with(p->name, ".beta")) continue;
        size_t fan_in = p->ndim > 1 ? p->numel / (size_t)p->dim[0] : 0;
        if (p->ndim == 1) { /* a linear layer's bias (name.b): fan_in of its weight name.w */
            char   wn[MD_NAME_MAX];
            size_t len = strlen(p->name);
            snprintf(wn, sizeof wn, "%.*sw", (int)(len > 0 ? len - 1 : 0), p->name);
            int w = md_name_ends_with(p->name, ".b") ? md_arena_find(&m->params, wn) : -1;
            fan_in = w >= 0 ? (size_t)m->params.table[w].dim[1] : 1;
        }
        float  bound = 1.0f / sqrtf((float)fan_in);
        md_rng r = md_rng_split(&root, (uint64_t)i);
        for (size_t j = 0; j < p->numel; j++) d[j] = bound * (2.0f * md_rng_uniform(&r) - 1.0f);
    }
    md_init_bn_stats(m);
}

static int json_int(const md_jvalue *o, const char *key, int fallback) {
    const md_jvalue *v = md_json_get(o, key);
    return v && v->type == MD_JNUM && v->num == floor(v->num) && fabs(v->num) < 1e6 ? (int)v->num
                                                                                     : fallback;
}

md_status md_space_from_json(const md_jvalue *o, const char *what, md_space **out) {
    *out = NULL;
    const md_jvalue *name = md_json_get(o, "space");
    if (name && (name->type != MD_JSTR || (strcmp(name->str, "darts") && strcmp(name->str, "mobile"))))
        return md_fail(MD_ERR_DATA, "%s: 'space' must be \"darts\" or \"mobile\"", what);
    if (name && !strcmp(name->str, "mobile")) {
        md_mobile_config c;
        md_mobile_config_default(&c);
        MD_TRY(md_mobile_config_parse(o, what, 0, &c));
        md_status s = md_space_mobile_create(&c, out);
        return s == MD_ERR_ARG ? md_fail(MD_ERR_DATA, "%s: %s", what, md_error_message()) : s;
    }
    /* DARTS; a state.json from before spaces had names holds only "nodes". */
    int nodes = json_int(o, "nodes", 0);
    if (nodes < 1 || nodes > MD_MAX_NODES)
        return md_fail(MD_ERR_DATA, "%s: 'nodes' missing or outside 1..%d", what, MD_MAX_NODES);
    md_darts_config c = {.in_c = 3, .in_h = 32, .in_w = 32, .classes = 10,
                         .cells = json_int(o, "cells", 8), .channels = json_int(o, "channels", 16),
                         .nodes = nodes};
    if (c.cells < 1 || c.cells > 64) c.cells = 8;
    if (c.channels < 2 || c.channels % 2) c.channels = 16;
    return md_space_darts_create(&c, out);
}

md_status md_space_export_weights(const md_space *s, const md_model *m, const int *choice,
                                  const char *path) {
    if (!s->vt->reference_name)
        return md_fail(MD_ERR_ARG, "the %s space has no weight export yet", s->info.name);
    MD_TRY(check_choice(s, choice));
    int          cap = m->params.count + m->stats.count, n = 0;
    md_st_entry *t = calloc((size_t)cap + 1, sizeof *t);
    char        *names = malloc((size_t)(cap + 1) * 160);
    if (!t || !names) {
        free(t), free(names);
        return md_fail(MD_ERR_NOMEM, "weight export");
    }
    const md_arena *ar[2] = {&m->params, &m->stats};
    for (int a = 0; a < 2; a++)
        for (int i = 0; i < ar[a]->count; i++) {
            const md_param *p = &ar[a]->table[i];
            char           *nm = names + (size_t)n * 160;
            if (!s->vt->reference_name(s, choice, p->name, nm, 160)) continue;
            t[n] = (md_st_entry){.name = nm, .dtype = MD_ST_F32, .ndim = p->ndim,
                                 .data = ar[a]->data + p->offset};
            for (int k = 0; k < p->ndim; k++) t[n].dim[k] = p->dim[k];
            n++;
        }
    md_st_meta meta[1] = {{"format", "pt"}};
    md_status  st = md_st_write(path, t, n, meta, 1, NULL);
    free(t), free(names);
    return st;
}

md_status md_space_import_weights(const md_space *s, md_model *m, const int *choice,
                                  const char *path) {
    if (!s->vt->reference_name)
        return md_fail(MD_ERR_ARG, "the %s space has no weight names to load", s->info.name);
    MD_TRY(check_choice(s, choice));
    md_st_file f;
    MD_TRY(md_st_read(path, &f));
    md_arena *ar[2] = {&m->params, &m->stats};
    md_status st = MD_OK;
    int       used = 0;
    for (int a = 0; a < 2 && st == MD_OK; a++)
        for (int i = 0; i < ar[a]->count && st == MD_OK; i++) {
            const md_param *p = &ar[a]->table[i];
            char            nm[160];
            if (!s->vt->reference_name(s, choice, p->name, nm, sizeof nm)) continue;
            const md_st_tensor *t = md_st_find(&f, nm);
            if (!t) {
                st = md_fail(MD_ERR_DATA, "%s: no tensor '%s' (this network's %s)", path, nm,
                             p->name);
                break;
            }
            int same = t->dtype == MD_ST_F32 && t->ndim == p->ndim;
            for (int k = 0; same && k < p->ndim; k++) same = t->dim[k] == p->dim[k];
            if (!same) {
                st = md_fail(MD_ERR_DATA, "%s: tensor '%s' is %s with %d dims, this network's is "
                                          "F32 with %d (shape differs)",
                             path, nm, md_st_dtype_name(t->dtype), t->ndim, p->ndim);
                break;
            }
            memcpy(ar[a]->data + p->offset, md_st_data(&f, t), p->numel * sizeof(float));
            used++;
        }
    if (st == MD_OK && used < f.n)
        st = md_fail(MD_ERR_DATA, "%s holds %d tensors, this network has %d: it is another "
                                  "network's weights", path, f.n, used);
    md_st_free(&f);
    return st;
}
