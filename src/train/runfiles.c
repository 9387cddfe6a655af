/* The files of a run directory that say what a search found, whatever the
 * space: state.json (rewritten after every period), history.jsonl lines,
 * p_heatmap.svg, genotype.json/.txt and the space's own files; the repair of
 * logs a crash cut short; `derive`. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "train/search_impl.h"

void md_path_in(char *buf, size_t len, const char *dir, const char *name) {
    snprintf(buf, len, "%s/%s", dir, name);
}

int md_file_exists(const char *dir, const char *name) {
    char        p[700];
    struct stat st;
    md_path_in(p, sizeof p, dir, name);
    return stat(p, &st) == 0;
}

md_status md_read_file(const char *path, char **out) {
    struct stat st;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) /* before open: a FIFO would block */
        return md_fail(MD_ERR_DATA, "%s is not a regular file", path);
    FILE *f = fopen(path, "rb");
    if (!f) return md_fail(MD_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return md_fail(MD_ERR_DATA, "%s is not a regular file", path);
    }
    long  n = (long)st.st_size;
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(buf);
        return md_fail(MD_ERR_IO, "cannot read %s", path);
    }
    fclose(f);
    buf[n] = '\0';
    *out = buf;
    return MD_OK;
}

md_status md_read_json(const char *path, md_jvalue *out) {
    char *text = NULL;
    MD_TRY(md_read_file(path, &text));
    md_status s = md_json_parse(text, path, out);
    free(text);
    return s;
}

md_status md_json_line(FILE *f, md_json *j) {
    if (j->failed) return md_fail(MD_ERR_NOMEM, "metrics line");
    if (fprintf(f, "%s\n", j->buf) < 0 || fflush(f))
        return md_fail(MD_ERR_IO, "cannot write a metrics line: %s", strerror(errno));
    return MD_OK;
}

/* {"<group key>": [op name of each distribution], ...} */
void md_arch_json(md_json *j, const md_space *s, const int *choice) {
    const md_space_info *in = md_space_describe(s);
    md_json_begin_object(j);
    for (int g = 0; g < in->ngroups; g++) {
        md_json_key(j, in->groups[g].key);
        md_json_begin_array(j);
        for (int d = in->groups[g].first; d < in->groups[g].first + in->groups[g].count; d++)
            md_json_string(j, in->op_names[choice[d]]);
        md_json_end_array(j);
    }
    md_json_end_object(j);
}

static void matrix_json(md_json *j, const double *m, int rows, int cols) {
    md_json_begin_array(j);
    for (int i = 0; i < rows; i++) {
        md_json_begin_array(j);
        for (int k = 0; k < cols; k++) md_json_double(j, m[(size_t)i * cols + k]);
        md_json_end_array(j);
    }
    md_json_end_array(j);
}

double md_group_entropy(const md_mdl *m, const md_space_group *g) {
    double h = 0;
    for (int e = g->first; e < g->first + g->count; e++) h += md_mdl_entropy(m, e);
    return h / g->count;
}

md_status md_runfiles_state(const char *out, const md_space *s, const md_mdl *m, char *summary,
                            size_t len) {
    const md_space_info *in = md_space_describe(s);
    MD_TRY(md_space_summary(s, m->p, summary, len));
    md_json j;
    md_json_init(&j);
    md_json_begin_object(&j);
    md_json_key(&j, "format"), md_json_string(&j, "mdenas-state-1");
    md_space_config_json(s, &j);
    md_json_key(&j, "ops");
    md_json_begin_array(&j);
    for (int k = 0; k < in->k; k++) md_json_string(&j, in->op_names[k]);
    md_json_end_array(&j);
    md_json_key(&j, "periods"), md_json_int(&j, m->periods);
    for (int g = 0; g < in->ngroups; g++) {
        char key[64];
        snprintf(key, sizeof key, "p_%s", in->groups[g].key);
        md_json_key(&j, key);
        matrix_json(&j, m->p + (size_t)in->groups[g].first * in->k, in->groups[g].count, in->k);
    }
    for (int g = 0; g < in->ngroups; g++) { /* H^e: the periods behind each op, for derive */
        char key[64];
        snprintf(key, sizeof key, "he_%s", in->groups[g].key);
        md_json_key(&j, key);
        matrix_json(&j, m->he + (size_t)in->groups[g].first * in->k, in->groups[g].count, in->k);
    }
    md_json_key(&j, "genotype"), md_json_string(&j, summary);
    md_json_end_object(&j);
    char p[700];
    md_path_in(p, sizeof p, out, "state.json");
    md_status st = md_json_write_file(&j, p);
    md_json_free(&j);
    return st;
}

md_status md_runfiles_heatmap(const char *out, const md_space *s, const md_mdl *m) {
    const md_space_info *in = md_space_describe(s);
    const char          *labels[8];
    int                  per = in->groups[0].count;
    for (int g = 0; g < in->ngroups && g < 8; g++) labels[g] = in->groups[g].label;
    md_heatmap h = {.title = "MdeNAS: p of every op of every distribution (colour: last period; "
                             "line: history)",
                    .op_names = in->op_names, .k = in->k, .groups = in->ngroups,
                    .group_names = labels, .edges_per_group = per,
                    .periods = m->periods, .hist = m->hist_p};
    if (!strcmp(in->name, "darts"))
        h.title = "MdeNAS: p of every op on every edge (colour: last period; line: history)";
    char p[700];
    md_path_in(p, sizeof p, out, "p_heatmap.svg");
    return md_heatmap_write_svg(&h, p);
}

md_status md_runfiles_genotype(const char *out, const md_space *s, const md_mdl *m,
                               char *summary, size_t len) {
    MD_TRY(md_space_summary(s, m->p, summary, len));
    md_json j;
    md_json_init(&j);
    md_status st = md_space_export(s, m->p, &j);
    char      p[700];
    md_path_in(p, sizeof p, out, "genotype.json");
    if (st == MD_OK) st = md_json_write_file(&j, p);
    md_json_free(&j);
    MD_TRY(st);
    MD_TRY(md_space_write_files(s, m->p, out));
    /* genotype.txt last: its presence says the run has finished. */
    md_path_in(p, sizeof p, out, "genotype.txt");
    FILE *f = fopen(p, "w");
    if (!f) return md_fail(MD_ERR_IO, "cannot write %s: %s", p, strerror(errno));
    int bad = fprintf(f, "%s\n", summary) < 0;
    if (fclose(f) || bad) return md_fail(MD_ERR_IO, "cannot write %s: %s", p, strerror(errno));
    return MD_OK;
}

md_status md_history_line(FILE *f, const md_space *s, long period, double val_acc,
                          const int *choice, const md_mdl *m, const double *p, const double *he,
                          const double *ha) {
    md_json j;
    md_json_init(&j);
    md_json_begin_object(&j);
    md_json_key(&j, "period"), md_json_int(&j, period + 1);
    md_json_key(&j, "val_acc"), md_json_double(&j, val_acc);
    md_json_key(&j, "arch"), md_arch_json(&j, s, choice);
    md_json_key(&j, "p"), matrix_json(&j, p, m->edges, m->k);
    md_json_key(&j, "he"), matrix_json(&j, he, m->edges, m->k);
    md_json_key(&j, "ha"), matrix_json(&j, ha, m->edges, m->k);
    md_json_end_object(&j);
    md_status st = md_json_line(f, &j);
    md_json_free(&j);
    return st;
}

/* history.jsonl again from the distribution's history in a checkpoint: period
 * t's architecture is where H^e grew, its accuracy the H^a recorded there. */
static md_status rebuild_history(const md_space *s, const md_mdl *m, const char *path) {
    size_t n = (size_t)m->edges * m->k;
    int   *choice = calloc((size_t)m->edges, sizeof *choice);
    FILE  *f = choice ? fopen(path, "w") : NULL;
    if (!choice) return md_fail(MD_ERR_NOMEM, "history");
    if (!f) {
        free(choice);
        return md_fail(MD_ERR_IO, "cannot rewrite %s: %s", path, strerror(errno));
    }
    md_status st = MD_OK;
    for (int t = 0; t < m->periods && st == MD_OK; t++) {
        const double *he = m->hist_he + t * n, *ha = m->hist_ha + t * n;
        double        acc = 0;
        for (int e = 0; e < m->edges; e++) {
            int op = -1;
            for (int k = 0; k < m->k; k++)
                if (he[e * m->k + k] - (t ? he[e * m->k + k - (long)n] : 0) > 0.5) op = k;
            choice[e] = op < 0 ? 0 : op; /* < 0: H^e did not grow, not in a checkpoint of ours */
            if (e == 0) acc = ha[choice[0]];
        }
        st = md_history_line(f, s, t, acc, choice, m, m->hist_p + t * n, he, ha);
    }
    if (st == MD_OK && (fflush(f) || fsync(fileno(f))))
        st = md_fail(MD_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    if (fclose(f) && st == MD_OK) st = md_fail(MD_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    free(choice);
    return st;
}

static int ends_with_newline(const char *path) {
    FILE *f = fopen(path, "rb");
    int   ok = f && fseek(f, -1, SEEK_END) == 0 && fgetc(f) == '\n';
    if (f) fclose(f);
    return ok;
}

/* metrics.jsonl cut after its last whole line (absent: nothing to cut). */
static md_status cut_after_last_line(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f && errno == ENOENT) return MD_OK;
    if (!f) return md_fail(MD_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    long size = 0, keep = 0, at = 0;
    int  ch;
    while ((ch = fgetc(f)) != EOF)
        if (at++, ch == '\n') keep = at;
    fclose(f);
    size = at;
    if (keep < size && truncate(path, (off_t)keep))
        return md_fail(MD_ERR_IO, "cannot truncate %s: %s", path, strerror(errno));
    return MD_OK;
}

md_status md_runfiles_trim_log(const char *path, int is_history, long keep, const md_space *s,
                               const md_mdl *m) {
    struct stat st;
    long        size = stat(path, &st) == 0 ? (long)st.st_size : 0;
    if (size > keep && truncate(path, (off_t)keep))
        return md_fail(MD_ERR_IO, "cannot truncate %s: %s", path, strerror(errno));
    if (size < keep) {
        /* A crash before its lines reached the disk: history.jsonl is rebuilt from
         * the checkpoint, metrics.jsonl keeps what it has, with a warning. */
        fprintf(stderr, "mdenas: warning: %s is %ld bytes, shorter than the %ld bytes its "
                        "checkpoint recorded (lines were lost in a crash)%s\n", path, size, keep,
                is_history ? "; rebuilding it from the checkpoint"
                           : "; the lost lines stay lost, the run goes on");
        return is_history ? rebuild_history(s, m, path) : cut_after_last_line(path);
    }
    /* Cut mid-line: the log was repaired (made shorter) after the checkpoint
     * that recorded its size, then grew again. */
    if (keep > 0 && size > keep && !ends_with_newline(path))
        return is_history ? rebuild_history(s, m, path) : cut_after_last_line(path);
    return MD_OK;
}

/* ---- how sure the derived architecture is ---------------------------------------- */

/* Per distribution: the op derive takes (the most probable allowed op other
 * than `none`, ties to the lower index) and its runner-up; tied when their p
 * are equal, i.e. the tie-break chose, not the distribution. he may be NULL. */
int md_margins_report(FILE *f, const md_space *s, const double *p, const double *he) {
    const md_space_info *in = md_space_describe(s);
    int                  tied = 0, K = in->k;
    if (f) fprintf(f, "how sure the derived architecture is (per %s: chosen op and p, runner-up "
                      "and p, the margin, the periods the chosen op was trained):\n",
                   strcmp(in->name, "darts") ? "block" : "edge");
    for (int g = 0; g < in->ngroups; g++)
        for (int d = in->groups[g].first; d < in->groups[g].first + in->groups[g].count; d++) {
            const double *q = p + (size_t)d * K;
            int           best = -1, second = -1;
            for (int k = 0; k < K; k++) {
                if (!in->allowed[(size_t)d * K + k] || !strcmp(in->op_names[k], "none")) continue;
                if (best < 0 || q[k] > q[best]) second = best, best = k;
                else if (second < 0 || q[k] > q[second]) second = k;
            }
            if (best < 0) continue;
            double margin = second >= 0 ? q[best] - q[second] : 1.0;
            tied += second >= 0 && margin <= 0.0;
            if (!f) continue;
            char periods[32] = "?";
            if (he) snprintf(periods, sizeof periods, "%.0f", he[(size_t)d * K + best]);
            fprintf(f, "  %-15s %2d: %-12s %.4f  over %-12s %.4f  margin %+.4f  %s period(s)%s\n",
                    in->groups[g].label, d - in->groups[g].first, in->op_names[best], q[best],
                    second >= 0 ? in->op_names[second] : "-", second >= 0 ? q[second] : 0.0,
                    margin, periods, second >= 0 && margin <= 0.0 ? "  TIED" : "");
        }
    if (f && tied)
        fprintf(f, "warning: %d of %d %s are tied: p never separated their chosen op from the "
                   "runner-up, so the op is the lower-index tie-break, not the distribution's "
                   "choice. Search for more periods, or raise --alpha\n",
                tied, in->dists, strcmp(in->name, "darts") ? "blocks" : "edges");
    return tied;
}

/* ---- derive ---------------------------------------------------------------------------- */

static md_status read_matrix(const md_jvalue *v, const char *name, const char *path, int rows,
                             int cols, double *out) {
    if (!v || v->type != MD_JARR || v->count != rows)
        return md_fail(MD_ERR_DATA, "%s: '%s' must be an array of %d rows", path, name, rows);
    for (int i = 0; i < rows; i++) {
        const md_jvalue *row = &v->items[i];
        if (row->type != MD_JARR || row->count != cols)
            return md_fail(MD_ERR_DATA, "%s: '%s' row %d must hold %d numbers", path, name, i, cols);
        for (int k = 0; k < cols; k++) {
            if (row->items[k].type != MD_JNUM)
                return md_fail(MD_ERR_DATA, "%s: '%s'[%d][%d] is not a number", path, name, i, k);
            out[(size_t)i * cols + k] = row->items[k].num;
        }
    }
    return MD_OK;
}

md_status md_search_derive(const char *dir) {
    char path[700];
    md_path_in(path, sizeof path, dir, "state.json");
    if (!md_file_exists(dir, "state.json"))
        return md_fail(MD_ERR_IO, "%s not found: %s is not a run directory, or its first sampling "
                                  "period has not finished yet", path, dir);
    md_jvalue v;
    MD_TRY(md_read_json(path, &v));
    md_status s;
    md_space *sp = NULL;
    s = v.type == MD_JOBJ ? md_space_from_json(&v, path, &sp)
                          : md_fail(MD_ERR_DATA, "%s is not a JSON object", path);
    const md_space_info *in = sp ? md_space_describe(sp) : NULL;
    double              *p = in ? calloc((size_t)in->dists * in->k, sizeof *p) : NULL;
    if (s == MD_OK && !p) s = md_fail(MD_ERR_NOMEM, "derive");
    for (int g = 0; s == MD_OK && g < in->ngroups; g++) {
        char key[64];
        snprintf(key, sizeof key, "p_%s", in->groups[g].key);
        s = read_matrix(md_json_get(&v, key), key, path, in->groups[g].count, in->k,
                        p + (size_t)in->groups[g].first * in->k);
    }
    for (size_t i = 0; s == MD_OK && i < (size_t)in->dists * in->k; i++)
        if (!in->allowed[i] && p[i] != 0)
            s = md_fail(MD_ERR_DATA, "%s: p of the masked op %s of distribution %zu is %g, not 0",
                        path, in->op_names[i % (size_t)in->k], i / (size_t)in->k, p[i]);
    /* H^e: written since derive reports margins; an older state.json has none */
    double *he = s == MD_OK ? calloc((size_t)in->dists * in->k, sizeof *he) : NULL;
    for (int g = 0; he && g < in->ngroups; g++) {
        char key[64];
        snprintf(key, sizeof key, "he_%s", in->groups[g].key);
        const md_jvalue *hv = md_json_get(&v, key);
        if (!hv || read_matrix(hv, key, path, in->groups[g].count, in->k,
                               he + (size_t)in->groups[g].first * in->k) != MD_OK) {
            free(he);
            he = NULL;
        }
    }
    char g[4096];
    if (s == MD_OK) s = md_space_summary(sp, p, g, sizeof g);
    if (s == MD_OK) {
        const md_jvalue *per = md_json_get(&v, "periods");
        printf("%s\n", g);
        fflush(stdout);
        fprintf(stderr, "(%s after %d sampling period(s))\n", dir,
                per && per->type == MD_JNUM ? (int)per->num : -1);
        md_margins_report(stderr, sp, p, he);
    }
    free(he);
    free(p);
    md_space_destroy(sp);
    md_json_value_free(&v);
    return s;
}
