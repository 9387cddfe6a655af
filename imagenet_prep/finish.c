/* The end of a prep (rank 0): the shard records become sources.tsv, their
 * counts report.json, and manifest.json commits the folder. */
#include <stdlib.h>
#include <string.h>

#include "prep.h"

/* ---- counting by name ---- */

typedef struct {
    char      name[48];
    long long n;
} tally_item;

typedef struct {
    tally_item *v;
    int         n, cap, failed;
} tally;

static void tally_add(tally *t, const char *name, size_t len, long long k) {
    if (len >= sizeof t->v->name) len = sizeof t->v->name - 1;
    for (int i = 0; i < t->n; i++)
        if (strlen(t->v[i].name) == len && !strncmp(t->v[i].name, name, len)) {
            t->v[i].n += k;
            return;
        }
    if (t->n == t->cap) {
        int         cap = t->cap ? 2 * t->cap : 16;
        tally_item *v = realloc(t->v, (size_t)cap * sizeof *v);
        if (!v) {
            t->failed = 1;
            return;
        }
        t->v = v, t->cap = cap;
    }
    memcpy(t->v[t->n].name, name, len);
    t->v[t->n].name[len] = '\0';
    t->v[t->n++].n = k;
}

static long long tally_get(const tally *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (!strcmp(t->v[i].name, name)) return t->v[i].n;
    return 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const tally_item *)a)->name, ((const tally_item *)b)->name);
}

static void tally_json(md_json *j, tally *t) {
    if (t->n) qsort(t->v, (size_t)t->n, sizeof *t->v, by_name);
    md_json_begin_object(j);
    for (int i = 0; i < t->n; i++) {
        prep_json_int(j, t->v[i].name, t->v[i].n);
    }
    md_json_end_object(j);
}

/* The rejection reasons, in the order a reader meets them; all are listed in report.json. */
static const char *const reason_codes[] = {"missing",   "not_a_file",   "unreadable",  "empty",
                                           "too_large", "not_an_image", "unsupported", "truncated",
                                           "corrupt",   "too_small",    "bad_aspect",  "no_class",
                                           "no_label",  "unknown_class"};
static const char *const kind_names[] = {"cmyk", "ycck", "png", "gray", "warning"};
#define COUNT(a) (int)(sizeof(a) / sizeof *(a))

/* ---- the rows ---- */

enum {
    F_ID,
    F_SPLIT,
    F_PATH,
    F_FORMAT,
    F_COLOUR,
    F_W,
    F_H,
    F_STATUS,
    F_REASON,
    F_LABEL,
    F_STORED,
    F_SW,
    F_SH,
    NFIELDS
};

typedef struct {
    const char *f[NFIELDS];
    size_t      len[NFIELDS];
} fields;

static int split_row(const char *row, fields *out) {
    const char *p = row;
    if (!p) return -1;
    for (int i = 0; i < NFIELDS; i++) {
        const char *tab = strchr(p, '\t');
        size_t      n = tab ? (size_t)(tab - p) : strlen(p);
        out->f[i] = p, out->len[i] = n;
        if (!tab && i != NFIELDS - 1) return -1;
        p = tab ? tab + 1 : p + n;
    }
    return 0;
}

static int field_is(const fields *r, int i, const char *s) {
    return r->len[i] == strlen(s) && !strncmp(r->f[i], s, r->len[i]);
}

typedef struct {
    long long sources[NSPLITS], accepted[NSPLITS], shards[NSPLITS], resized;
    tally     formats, colours, kinds, reasons;
} stats;

static void count_row(stats *st, const fields *r, int split) {
    st->sources[split]++;
    tally_add(&st->formats, r->f[F_FORMAT], r->len[F_FORMAT], 1);
    tally_add(&st->colours, r->f[F_COLOUR], r->len[F_COLOUR], 1);
    const char *colon = memchr(r->f[F_REASON], ':', r->len[F_REASON]);
    size_t      head = colon ? (size_t)(colon - r->f[F_REASON]) : r->len[F_REASON];
    if (!field_is(r, F_STATUS, "accepted")) {
        tally_add(&st->reasons, r->f[F_REASON], head, 1);
        return;
    }
    st->accepted[split]++;
    if (r->len[F_W] != r->len[F_SW] || strncmp(r->f[F_W], r->f[F_SW], r->len[F_W]) ||
        r->len[F_H] != r->len[F_SH] || strncmp(r->f[F_H], r->f[F_SH], r->len[F_H]))
        st->resized++;
    if (head == 1 && r->f[F_REASON][0] == '-') return;
    for (size_t a = 0; a < head;) { /* kinds joined by '+' */
        const char *plus = memchr(r->f[F_REASON] + a, '+', head - a);
        size_t      b = plus ? (size_t)(plus - r->f[F_REASON]) : head;
        tally_add(&st->kinds, r->f[F_REASON] + a, b - a, 1);
        a = b + 1;
    }
}

/* TSV field back to text (for report.json). */
static char *tsv_unescape(const char *s, size_t n) {
    char *out = malloc(n + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            char c = s[++i];
            *o++ = c == 't' ? '\t' : c == 'n' ? '\n' : c == 'r' ? '\r' : c;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

typedef struct {
    char    **rows;  /* per source id: its row (no newline) */
    char    **texts; /* per shard: its record's text */
    uint32_t *images, *crc;
    uint64_t *bytes;
    prep_buf  early; /* rows of the sources rejected before reading */
} gathered;

static void gathered_free(gathered *g, uint32_t nshards) {
    for (uint32_t i = 0; g->texts && i < nshards; i++)
        free(g->texts[i]);
    free(g->rows);
    free(g->texts);
    free(g->images);
    free(g->crc);
    free(g->bytes);
    prep_buf_free(&g->early);
}

/* Every shard's record, and rows for the sources rejected before reading. */
static md_status gather(const prep_options *o, const prep_plan *p, uint32_t run_crc, gathered *g) {
    memset(g, 0, sizeof *g);
    uint32_t ns = p->nshards ? p->nshards : 1;
    g->rows = calloc((size_t)p->nsrc + 1, sizeof *g->rows);
    g->texts = calloc(ns, sizeof *g->texts);
    g->images = calloc(ns, sizeof *g->images);
    g->crc = calloc(ns, sizeof *g->crc);
    g->bytes = calloc(ns, sizeof *g->bytes);
    if (!g->rows || !g->texts || !g->images || !g->crc || !g->bytes)
        return md_fail(MD_ERR_NOMEM, "sources.tsv: %u rows", p->nsrc);
    for (uint32_t k = 0; k < p->nshards; k++) {
        MD_TRY(prep_record_load(o, &p->shards[k], run_crc, &g->texts[k], &g->images[k],
                                &g->bytes[k], &g->crc[k]));
        char *line = strchr(g->texts[k], '\n');
        while (line && line[1]) {
            char *row = line + 1;
            line = strchr(row, '\n');
            if (line) *line = '\0';
            char         *end;
            unsigned long id = strtoul(row, &end, 10);
            if (*end != '\t' || id >= p->nsrc || g->rows[id])
                return md_fail(MD_ERR_DATA, "the record of shard %u has a bad row '%.60s'", k, row);
            g->rows[id] = row;
        }
    }
    size_t *at = calloc((size_t)p->nsrc + 1, sizeof *at);
    if (!at) return md_fail(MD_ERR_NOMEM, "sources.tsv");
    for (uint32_t i = 0; i < p->nsrc; i++) {
        const prep_source *s = &p->src[i];
        if (!s->reject) continue;
        at[i] = g->early.len + 1; /* 0: none */
        prep_buf_add(&g->early, "%u\t%s\t", i, prep_split_names[s->split]);
        prep_buf_tsv(&g->early, s->path);
        prep_buf_add(&g->early, "\t-\t-\t0\t0\trejected\t");
        prep_buf_tsv(&g->early, s->reject);
        prep_buf_add(&g->early, "\t%d\t-\t0\t0", s->label);
        prep_buf_put(&g->early, "", 1); /* each row NUL-terminated */
    }
    md_status st = g->early.failed ? md_fail(MD_ERR_NOMEM, "sources.tsv") : MD_OK;
    for (uint32_t i = 0; st == MD_OK && i < p->nsrc; i++) {
        if (at[i]) g->rows[i] = g->early.s + at[i] - 1;
        if (!g->rows[i])
            st = md_fail(MD_ERR_DATA, "source %u (%s) is in no shard record", i, p->src[i].path);
    }
    free(at);
    return st;
}

/* JSON text plus a newline, written atomically; its size and CRC for the manifest. */
static md_status write_json(const md_json *j, const char *dir, const char *name, uint64_t *bytes,
                            uint32_t *crc) {
    if (j->failed || !j->buf) return md_fail(MD_ERR_NOMEM, "%s", name);
    prep_buf b = {0};
    prep_buf_put(&b, j->buf, j->len);
    prep_buf_put(&b, "\n", 1);
    char     *path = prep_join(dir, name);
    md_status s =
        b.failed || !path ? md_fail(MD_ERR_NOMEM, "%s", name) : prep_write_file(path, b.s, b.len);
    if (bytes) *bytes = b.len;
    if (crc) *crc = md_crc32c(b.s, b.len);
    prep_buf_free(&b);
    free(path);
    return s;
}

static md_status write_text(const prep_buf *b, const char *dir, const char *name, uint64_t *bytes,
                            uint32_t *crc) {
    char *path = prep_join(dir, name);
    if (b->failed || !path) {
        free(path);
        return md_fail(MD_ERR_NOMEM, "%s", name);
    }
    md_status s = prep_write_file(path, b->s ? b->s : "", b->len);
    *bytes = b->len, *crc = md_crc32c(b->s ? b->s : "", b->len);
    free(path);
    return s;
}

static void json_strings(md_json *j, char *const *s, uint32_t n) {
    md_json_begin_array(j);
    for (uint32_t i = 0; i < n; i++)
        prep_json_text(j, s[i]);
    md_json_end_array(j);
}

static void report_json(md_json *j, const prep_plan *p, const gathered *g, stats *st,
                        const md_jvalue *options) {
    long long total = 0, accepted = 0;
    for (int s = 0; s < NSPLITS; s++)
        total += st->sources[s], accepted += st->accepted[s];
    md_json_begin_object(j);
    prep_json_int(j, "sources", total);
    prep_json_int(j, "accepted", accepted);
    prep_json_int(j, "rejected", total - accepted);
    prep_json_int(j, "resized", st->resized);
    md_json_key(j, "splits");
    md_json_begin_object(j);
    for (int s = 0; s < NSPLITS; s++) {
        md_json_key(j, prep_split_names[s]);
        md_json_begin_object(j);
        prep_json_int(j, "sources", st->sources[s]);
        prep_json_int(j, "accepted", st->accepted[s]);
        prep_json_int(j, "rejected", st->sources[s] - st->accepted[s]);
        prep_json_int(j, "shards", st->shards[s]);
        md_json_end_object(j);
    }
    md_json_end_object(j);
    md_json_key(j, "converted");
    md_json_begin_object(j);
    for (int i = 0; i < COUNT(kind_names); i++) {
        prep_json_int(j, kind_names[i], tally_get(&st->kinds, kind_names[i]));
    }
    md_json_end_object(j);
    md_json_key(j, "rejected_by_reason");
    md_json_begin_object(j);
    for (int i = 0; i < COUNT(reason_codes); i++) {
        prep_json_int(j, reason_codes[i], tally_get(&st->reasons, reason_codes[i]));
    }
    md_json_end_object(j);
    md_json_key(j, "formats");
    tally_json(j, &st->formats);
    md_json_key(j, "colours");
    tally_json(j, &st->colours);
    md_json_key(j, "rejected_files");
    md_json_begin_array(j);
    for (uint32_t i = 0; i < p->nsrc; i++) {
        fields r;
        if (split_row(g->rows[i], &r) || field_is(&r, F_STATUS, "accepted")) continue;
        char *why = tsv_unescape(r.f[F_REASON], r.len[F_REASON]);
        md_json_begin_object(j);
        prep_json_int(j, "id", i);
        md_json_key(j, "path");
        prep_json_text(j, p->src[i].path);
        md_json_key(j, "reason");
        prep_json_text(j, why ? why : "?");
        md_json_end_object(j);
        free(why);
    }
    md_json_end_array(j);
    md_json_key(j, "notes");
    json_strings(j, p->notes, (uint32_t)p->nnotes);
    md_json_key(j, "options");
    md_json_value(j, options);
    md_json_end_object(j);
}

static void file_json(md_json *j, const char *name, uint64_t bytes, uint32_t crc) {
    md_json_key(j, name);
    md_json_begin_object(j);
    prep_json_int(j, "bytes", (long long)bytes);
    prep_json_int(j, "crc32c", crc);
    md_json_end_object(j);
}

static void manifest_json(md_json *j, const prep_plan *p, const gathered *g, const stats *st,
                          const md_jvalue *identity, const uint64_t bytes[3],
                          const uint32_t crc[3]) {
    md_json_begin_object(j);
    md_json_key(j, "format");
    md_json_string(j, "mdenas imagenet shards");
    prep_json_int(j, "version", 1);
    md_json_key(j, "classes");
    json_strings(j, p->classes, p->nclasses);
    for (int i = 0; i < identity->count; i++) { /* "options", "input" */
        md_json_key(j, identity->keys[i]);
        md_json_value(j, &identity->items[i]);
    }
    md_json_key(j, "splits");
    md_json_begin_object(j);
    for (int s = 0; s < NSPLITS; s++) {
        md_json_key(j, prep_split_names[s]);
        md_json_begin_object(j);
        prep_json_int(j, "sources", st->sources[s]);
        prep_json_int(j, "images", st->accepted[s]);
        md_json_key(j, "shards");
        md_json_begin_array(j);
        for (uint32_t k = 0; k < p->nshards; k++) {
            if (p->shards[k].split != s) continue;
            char name[64];
            prep_shard_name(&p->shards[k], name, sizeof name);
            md_json_begin_object(j);
            md_json_key(j, "file");
            md_json_string(j, name);
            prep_json_int(j, "count", g->images[k]);
            prep_json_int(j, "bytes", (long long)g->bytes[k]);
            prep_json_int(j, "crc32c", g->crc[k]);
            md_json_end_object(j);
        }
        md_json_end_array(j);
        md_json_end_object(j);
    }
    md_json_end_object(j);
    md_json_key(j, "files");
    md_json_begin_object(j);
    file_json(j, "classes.txt", bytes[0], crc[0]);
    file_json(j, "sources.tsv", bytes[1], crc[1]);
    file_json(j, "report.json", bytes[2], crc[2]);
    md_json_end_object(j);
    md_json_end_object(j);
}

static void print_summary(const prep_options *o, const stats *st) {
    long long total = 0, accepted = 0;
    for (int s = 0; s < NSPLITS; s++)
        total += st->sources[s], accepted += st->accepted[s];
    printf("imagenet_prep: %lld sources, %lld accepted", total, accepted);
    const char *sep = " (converted:";
    for (int i = 0; i < COUNT(kind_names); i++) {
        long long n = tally_get(&st->kinds, kind_names[i]);
        if (n) printf("%s %s %lld", sep, kind_names[i], n), sep = ",";
    }
    printf("%s, %lld rejected", *sep == ',' ? ")" : "", total - accepted);
    sep = " (";
    for (int i = 0; i < COUNT(reason_codes); i++) {
        long long n = tally_get(&st->reasons, reason_codes[i]);
        if (n) printf("%s%s %lld", sep, reason_codes[i], n), sep = ", ";
    }
    printf("%s\n", *sep == ',' ? ")" : "");
    printf("imagenet_prep: %lld train, %lld search_val, %lld val images in %lld + %lld + %lld "
           "shards in %s (sources.tsv says what became of each file)\n",
           st->accepted[SPLIT_TRAIN], st->accepted[SPLIT_SEARCH_VAL], st->accepted[SPLIT_VAL],
           st->shards[SPLIT_TRAIN], st->shards[SPLIT_SEARCH_VAL], st->shards[SPLIT_VAL], o->out);
    fflush(stdout);
}

static md_status write_outputs(const prep_options *o, const prep_plan *p, const gathered *g,
                               stats *st, const md_jvalue *identity) {
    uint64_t bytes[3] = {0};
    uint32_t crc[3] = {0};
    prep_buf classes = {0}, sources = {0};
    for (uint32_t c = 0; c < p->nclasses; c++)
        prep_buf_add(&classes, "%s\n", p->classes[c]);
    md_status s = write_text(&classes, o->out, "classes.txt", &bytes[0], &crc[0]);
    prep_buf_add(&sources, "id\tsplit\tpath\tformat\tcolour\twidth\theight\tstatus\treason\t"
                           "label\tstored\tstored_width\tstored_height\n");
    for (uint32_t i = 0; i < p->nsrc; i++)
        prep_buf_add(&sources, "%s\n", g->rows[i]);
    if (s == MD_OK) s = write_text(&sources, o->out, "sources.tsv", &bytes[1], &crc[1]);
    prep_buf_free(&classes);
    prep_buf_free(&sources);
    md_json j;
    md_json_init(&j);
    j.indent = 2;
    report_json(&j, p, g, st, md_json_get(identity, "options"));
    if (s == MD_OK) s = write_json(&j, o->out, "report.json", &bytes[2], &crc[2]);
    md_json_reset(&j);
    manifest_json(&j, p, g, st, identity, bytes, crc);
    if (s == MD_OK) s = write_json(&j, o->out, "manifest.json", NULL, NULL);
    md_json_free(&j);
    return s;
}

md_status prep_outdir_finish(const prep_options *o, const prep_plan *p, const char *identity,
                             uint32_t run_crc) {
    gathered  g;
    stats     st;
    md_jvalue id;
    memset(&st, 0, sizeof st);
    md_status s = gather(o, p, run_crc, &g);
    for (uint32_t i = 0; s == MD_OK && i < p->nsrc; i++) {
        fields r;
        if (split_row(g.rows[i], &r))
            s = md_fail(MD_ERR_DATA, "row %u is malformed", i);
        else
            count_row(&st, &r, p->src[i].split);
    }
    for (uint32_t k = 0; k < p->nshards; k++)
        st.shards[p->shards[k].split]++;
    if (s == MD_OK &&
        (st.formats.failed || st.colours.failed || st.kinds.failed || st.reasons.failed))
        s = md_fail(MD_ERR_NOMEM, "report counts");
    if (s == MD_OK) s = md_json_parse(identity, "identity", &id);
    if (s == MD_OK) {
        s = write_outputs(o, p, &g, &st, &id);
        md_json_value_free(&id);
    }
    if (s == MD_OK) {
        prep_outdir_cleanup(o);
        print_summary(o, &st);
    }
    gathered_free(&g, p->nshards);
    free(st.formats.v);
    free(st.colours.v);
    free(st.kinds.v);
    free(st.reasons.v);
    return s;
}
