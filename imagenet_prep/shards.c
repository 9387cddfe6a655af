/* One shard: its sources converted by the rank's threads, then written in
 * source order, then its record: OUT/.imagenet_prep/<shard>.tsv, a header line
 * (count, bytes, CRC-32C of the shard file, the run it belongs to) and the
 * sources.tsv rows of its sources. A rerun keeps a shard whose file matches its
 * record; the rows become sources.tsv at the end. */
#include <omp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mdenas/shard.h"
#include "prep.h"

#define RECORD_MAGIC "# imagenet_prep shard"

/* ---- progress (rank 0) ---- */

struct prep_progress {
    uint64_t         total;
    _Atomic uint64_t done;
    double           t0, last;
    int              world, enabled, tty;
};

prep_progress *prep_progress_start(uint64_t files, int world, int enabled) {
    prep_progress *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->total = files, p->world = world, p->enabled = enabled;
    p->t0 = p->last = prep_now();
    p->tty = isatty(2);
    return p;
}

void prep_progress_add(prep_progress *p, uint64_t files) {
    if (p) atomic_fetch_add(&p->done, files);
}

static void print_progress(prep_progress *p, double now, int final) {
    uint64_t done = atomic_load(&p->done);
    double   dt = now - p->t0, rate = dt > 0 ? done / dt : 0;
    double   eta = rate > 0 ? (p->total - done) / rate : 0;
    char     others[96] = "";
    if (p->world > 1)
        snprintf(others, sizeof others, " (about %.0f/s over %d ranks)", rate * p->world, p->world);
    char when[48];
    if (final)
        snprintf(when, sizeof when, "took %.1f s", dt);
    else
        snprintf(when, sizeof when, "ETA %dm%02ds", (int)(eta / 60), (int)eta % 60);
    fprintf(stderr, "%simagenet_prep: %s%llu/%llu files (%.0f%%), %.1f files/s%s, %s%s",
            p->tty && !final ? "\r" : "", p->world > 1 ? "rank 0: " : "", (unsigned long long)done,
            (unsigned long long)p->total, p->total ? 100.0 * done / p->total : 100.0, rate, others,
            when, p->tty && !final ? "   " : "\n");
    fflush(stderr);
}

void prep_progress_tick(prep_progress *p) {
    if (!p || !p->enabled) return;
    double now = prep_now();
    /* Four a second on a terminal; a log file gets a line every ten seconds. */
    if (now - p->last < (p->tty ? 0.25 : 10.0)) return;
    p->last = now;
    print_progress(p, now, 0);
}

void prep_progress_end(prep_progress *p) {
    if (!p) return;
    if (p->enabled) {
        if (p->tty) fputc('\n', stderr);
        print_progress(p, prep_now(), 1);
    }
    free(p);
}

/* ---- rows ---- */

static void add_row(prep_buf *b, uint32_t id, const prep_source *src, const prep_result *r,
                    const char *stored, uint32_t index) {
    prep_buf_add(b, "%u\t%s\t", id, prep_split_names[src->split]);
    prep_buf_tsv(b, src->path);
    prep_buf_add(b, "\t%s\t%s\t%u\t%u\t%s\t", r->format, r->colour, r->width, r->height,
                 r->accepted ? "accepted" : "rejected");
    prep_buf_tsv(b, r->reason);
    if (r->accepted)
        prep_buf_add(b, "\t%d\t%s:%u\t%u\t%u\n", src->label, stored, index, r->out_w, r->out_h);
    else
        prep_buf_add(b, "\t%d\t-\t0\t0\n", src->label);
}

static char *record_path(const prep_options *o, const char *shard_name) {
    char name[96];
    snprintf(name, sizeof name, "%s/%s.tsv", PREP_WORK_DIR, shard_name);
    return prep_join(o->out, name);
}

/* Write the shard file from the accepted results; *bytes and *crc of the file. */
static md_status write_shard(const char *path, const prep_shard *sh, const prep_plan *p,
                             const prep_result *res, uint32_t *images, uint64_t *bytes,
                             uint32_t *crc) {
    uint32_t n = 0;
    uint64_t size = MD_SHARD_HEADER_SIZE;
    for (uint32_t i = 0; i < sh->count; i++)
        if (res[i].accepted) n++, size += MD_SHARD_RECORD_SIZE + res[i].jpeg_size;
    md_shard_writer *w;
    MD_TRY(md_shard_writer_open(path, sh->number, n, &w));
    for (uint32_t i = 0; i < sh->count; i++) {
        if (!res[i].accepted) continue;
        uint32_t        id = p->order[sh->first + i];
        md_shard_record rec = {.label = p->src[id].label,
                               .width = res[i].out_w,
                               .height = res[i].out_h,
                               .flags = res[i].flags,
                               .source = id};
        md_status       s = md_shard_writer_add(w, res[i].jpeg, (uint32_t)res[i].jpeg_size, &rec);
        if (s != MD_OK) {
            md_shard_writer_abort(w);
            return s;
        }
    }
    *images = n, *bytes = size;
    return md_shard_writer_close(w, crc);
}

md_status prep_make_shard(const prep_plan *p, const prep_options *o, uint32_t k, uint32_t run_crc,
                          prep_progress *prog) {
    const prep_shard *sh = &p->shards[k];
    prep_result      *res = calloc(sh->count ? sh->count : 1, sizeof *res);
    if (!res) return md_fail(MD_ERR_NOMEM, "shard %u: %u results", k, sh->count);
    char       fatal[1280] = "";
    atomic_int failed = 0, fatal_status = MD_OK;
#pragma omp parallel for schedule(dynamic, 1)
    for (uint32_t i = 0; i < sh->count; i++) {
        if (atomic_load(&failed)) continue;
        uint32_t  id = p->order[sh->first + i];
        char     *path = NULL;
        md_status s = prep_source_disk_path(p, id, &path);
        if (s == MD_OK) s = prep_convert_file(path, p->src[id].split, o, &res[i]);
        /* Bad files are rejects, not errors: this is the machine failing (memory,
         * I/O) on one file; the message names it. */
        if (s != MD_OK && !atomic_exchange(&failed, 1)) {
            snprintf(fatal, sizeof fatal, "'%s': %s", path ? path : "?", md_error_message());
            atomic_store(&fatal_status, (int)s);
        }
        free(path);
        prep_progress_add(prog, 1);
        if (omp_get_thread_num() == 0) prep_progress_tick(prog);
    }
    char name[64];
    prep_shard_name(sh, name, sizeof name);
    char     *shard_path = prep_join(o->out, name), *rec_path = record_path(o, name);
    md_status s = MD_OK;
    uint32_t  images = 0, crc = 0;
    uint64_t  bytes = 0;
    if (atomic_load(&failed)) {
        md_error_restore(fatal);
        s = (md_status)atomic_load(&fatal_status);
    } else if (!shard_path || !rec_path) {
        s = md_fail(MD_ERR_NOMEM, "shard %s: paths", name);
    } else {
        s = write_shard(shard_path, sh, p, res, &images, &bytes, &crc);
    }
    prep_buf rec = {0};
    if (s == MD_OK) {
        prep_buf_add(&rec, "%s %s images %u bytes %llu crc32c %u run %u rows %u\n", RECORD_MAGIC,
                     name, images, (unsigned long long)bytes, crc, run_crc, sh->count);
        for (uint32_t i = 0, index = 0; i < sh->count; i++) {
            uint32_t id = p->order[sh->first + i];
            add_row(&rec, id, &p->src[id], &res[i], name, index);
            index += res[i].accepted;
        }
        s = rec.failed ? md_fail(MD_ERR_NOMEM, "shard %s: its record", name)
                       : prep_write_file(rec_path, rec.s, rec.len);
    }
    prep_buf_free(&rec);
    for (uint32_t i = 0; i < sh->count; i++)
        prep_result_free(&res[i]);
    free(res);
    free(shard_path);
    free(rec_path);
    return s;
}

/* ---- records ---- */

typedef struct {
    char     name[64];
    uint32_t images, crc, run, rows;
    uint64_t bytes;
} record_header;

static int parse_header(const char *text, record_header *h) {
    unsigned long long bytes;
    int                used = 0;
    if (strncmp(text, RECORD_MAGIC " ", sizeof RECORD_MAGIC)) return -1;
    if (sscanf(text + sizeof RECORD_MAGIC, "%63s images %u bytes %llu crc32c %u run %u rows %u%n",
               h->name, &h->images, &bytes, &h->crc, &h->run, &h->rows, &used) != 6 ||
        text[sizeof RECORD_MAGIC + used] != '\n')
        return -1;
    h->bytes = bytes;
    return 0;
}

int prep_shard_is_done(const prep_plan *p, const prep_options *o, uint32_t k, uint32_t run_crc) {
    const prep_shard *sh = &p->shards[k];
    char              name[64];
    prep_shard_name(sh, name, sizeof name);
    char         *rec_path = record_path(o, name), *shard_path = prep_join(o->out, name);
    char         *text = NULL;
    size_t        len;
    record_header h;
    int           done = 0;
    struct stat   st;
    md_shard     *shard = NULL;
    if (rec_path && shard_path && prep_read_file(rec_path, &text, &len) == MD_OK &&
        parse_header(text, &h) == 0 && !strcmp(h.name, name) && h.run == run_crc &&
        h.rows == sh->count && stat(shard_path, &st) == 0 && (uint64_t)st.st_size == h.bytes &&
        md_shard_open(shard_path, &shard) == MD_OK) {
        uint32_t crc = 0;
        done = md_shard_count(shard) == h.images && md_shard_id(shard) == sh->number &&
               md_shard_file_crc(shard, &crc) == MD_OK && crc == h.crc;
    }
    md_shard_close(shard);
    md_error_clear();
    free(text);
    free(rec_path);
    free(shard_path);
    return done;
}

md_status prep_record_load(const prep_options *o, const prep_shard *sh, uint32_t run_crc,
                           char **text, uint32_t *images, uint64_t *bytes, uint32_t *crc) {
    char name[64];
    prep_shard_name(sh, name, sizeof name);
    char *path = record_path(o, name);
    if (!path) return md_fail(MD_ERR_NOMEM, "record path");
    size_t        len;
    md_status     s = prep_read_file(path, text, &len);
    record_header h = {0};
    if (s == MD_OK && (parse_header(*text, &h) || strcmp(h.name, name) || h.run != run_crc ||
                       h.rows != sh->count))
        s = md_fail(MD_ERR_DATA, "'%s' is not the record of shard %s of this prep", path, name);
    free(path);
    if (s != MD_OK) {
        free(*text);
        *text = NULL;
        return s;
    }
    *images = h.images, *bytes = h.bytes, *crc = h.crc;
    return MD_OK;
}
