/* Image shards (docs/formats.md, "Image shards"): the writer imagenet_prep
 * uses and the mmapped reader the ImageNet source uses. */
#include "mdenas/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/atomic_file.h"
#include "mdenas/runlog.h"

/* ---- little-endian fields ---- */

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }

static void encode_record(uint8_t *p, const md_shard_record *r) {
    put64(p, r->offset);
    put32(p + 8, r->size);
    put32(p + 12, (uint32_t)r->label);
    put32(p + 16, r->width);
    put32(p + 20, r->height);
    put32(p + 24, r->crc);
    put32(p + 28, r->flags);
    put64(p + 32, r->source);
}

static void decode_record(const uint8_t *p, md_shard_record *r) {
    r->offset = get64(p);
    r->size = get32(p + 8);
    r->label = (int32_t)get32(p + 12);
    r->width = get32(p + 16);
    r->height = get32(p + 20);
    r->crc = get32(p + 24);
    r->flags = get32(p + 28);
    r->source = get64(p + 32);
}

/* ---- writing ---- */

struct md_shard_writer {
    md_atomic_file f;
    uint32_t       id, count, added;
    uint64_t       offset; /* where the next image goes */
    uint8_t       *index;  /* count records, encoded */
    int            failed;
};

md_status md_shard_writer_open(const char *path, uint32_t shard_id, uint32_t count,
                               md_shard_writer **out) {
    *out = NULL;
    if (count > (UINT32_MAX - MD_SHARD_HEADER_SIZE) / MD_SHARD_RECORD_SIZE)
        return md_fail(MD_ERR_ARG, "shard '%s': %u images is too many for one shard", path, count);
    md_shard_writer *w = calloc(1, sizeof *w);
    if (!w) return md_fail(MD_ERR_NOMEM, "shard '%s': writer", path);
    w->index = calloc(count ? count : 1, MD_SHARD_RECORD_SIZE);
    if (!w->index) {
        free(w);
        return md_fail(MD_ERR_NOMEM, "shard '%s': index of %u records", path, count);
    }
    w->id = shard_id, w->count = count;
    w->offset = MD_SHARD_HEADER_SIZE + (uint64_t)MD_SHARD_RECORD_SIZE * count;
    md_status s = md_atomic_open(&w->f, path);
    if (s != MD_OK) {
        free(w->index);
        free(w);
        return s;
    }
    /* Header and index are written at close; reserve their bytes now. */
    if (fseeko(w->f.f, (off_t)w->offset, SEEK_SET) != 0) {
        int err = errno;
        md_shard_writer_abort(w);
        return md_fail(MD_ERR_IO, "shard '%s.tmp': seek: %s", path, strerror(err));
    }
    *out = w;
    return MD_OK;
}

md_status md_shard_writer_add(md_shard_writer *w, const void *bytes, uint32_t size,
                              const md_shard_record *rec) {
    if (w->failed) return md_fail(MD_ERR_ARG, "shard '%s': add after a failure", w->f.path);
    if (w->added >= w->count)
        return md_fail(MD_ERR_ARG, "shard '%s': more than the %u images it was opened for",
                       w->f.path, w->count);
    if (size == 0 || rec->label < 0 || rec->width == 0 || rec->height == 0)
        return md_fail(MD_ERR_ARG, "shard '%s': image %u: empty, or negative label, or zero size",
                       w->f.path, w->added);
    md_shard_record r = *rec;
    r.offset = w->offset, r.size = size, r.crc = md_crc32c(bytes, size);
    if (fwrite(bytes, 1, size, w->f.f) != size) {
        w->failed = 1;
        return md_fail(MD_ERR_IO, "shard '%s.tmp': writing image %u: %s (disk full?)", w->f.path,
                       w->added, strerror(errno));
    }
    encode_record(w->index + (size_t)w->added * MD_SHARD_RECORD_SIZE, &r);
    w->offset += size;
    w->added++;
    return MD_OK;
}

static void encode_header(uint8_t *h, uint32_t id, uint32_t count, uint64_t file_size,
                          uint32_t index_crc) {
    memset(h, 0, MD_SHARD_HEADER_SIZE);
    memcpy(h, MD_SHARD_MAGIC, 8);
    put32(h + 8, MD_SHARD_VERSION);
    put32(h + 12, MD_SHARD_HEADER_SIZE);
    put32(h + 16, MD_SHARD_RECORD_SIZE);
    put32(h + 20, count);
    put64(h + 24, MD_SHARD_HEADER_SIZE);
    put64(h + 32, MD_SHARD_HEADER_SIZE + (uint64_t)MD_SHARD_RECORD_SIZE * count);
    put64(h + 40, file_size);
    put32(h + 48, index_crc);
    put32(h + 52, id);
    put32(h + 60, md_crc32c(h, 60));
}

/* CRC-32C of the first `size` bytes of the open file, read back. */
static md_status crc_of_file(FILE *f, const char *name, uint64_t size, uint32_t *crc) {
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = malloc(CHUNK);
    if (!buf) return md_fail(MD_ERR_NOMEM, "shard '%s': read-back buffer", name);
    uint32_t  c = 0;
    md_status s = MD_OK;
    int       fd = -1;
    if (fflush(f) != 0)
        s = md_fail(MD_ERR_IO, "shard '%s': flush: %s", name, strerror(errno));
    else if ((fd = open(name, O_RDONLY | O_CLOEXEC)) < 0)
        s = md_fail(MD_ERR_IO, "shard '%s': cannot read it back: %s", name, strerror(errno));
    for (uint64_t at = 0; s == MD_OK && at < size;) {
        size_t  want = size - at < CHUNK ? (size_t)(size - at) : CHUNK;
        ssize_t got = pread(fd, buf, want, (off_t)at);
        if (got <= 0) {
            s = md_fail(MD_ERR_IO, "shard '%s': reading back at byte %llu: %s", name,
                        (unsigned long long)at, got < 0 ? strerror(errno) : "end of file");
            break;
        }
        c = md_crc32c_extend(c, buf, (size_t)got);
        at += (uint64_t)got;
    }
    if (fd >= 0) close(fd);
    free(buf);
    *crc = c;
    return s;
}

md_status md_shard_writer_close(md_shard_writer *w, uint32_t *file_crc) {
    md_status s = MD_OK;
    if (w->failed || w->added != w->count) {
        s = w->failed ? md_fail(MD_ERR_IO, "shard '%s': not written after an earlier failure",
                                w->f.path)
                      : md_fail(MD_ERR_ARG, "shard '%s': %u images added, opened for %u",
                                w->f.path, w->added, w->count);
        md_shard_writer_abort(w);
        return s;
    }
    uint8_t header[MD_SHARD_HEADER_SIZE];
    size_t  index_bytes = (size_t)MD_SHARD_RECORD_SIZE * w->count;
    encode_header(header, w->id, w->count, w->offset, md_crc32c(w->index, index_bytes));
    if (fseeko(w->f.f, 0, SEEK_SET) != 0 || fwrite(header, 1, sizeof header, w->f.f) != sizeof header ||
        fwrite(w->index, 1, index_bytes, w->f.f) != index_bytes)
        s = md_fail(MD_ERR_IO, "shard '%s.tmp': writing header and index: %s (disk full?)",
                    w->f.path, strerror(errno));
    uint32_t crc = 0;
    if (s == MD_OK) s = crc_of_file(w->f.f, w->f.tmp, w->offset, &crc);
    if (s != MD_OK) {
        md_shard_writer_abort(w);
        return s;
    }
    s = md_atomic_commit(&w->f);
    free(w->index);
    free(w);
    if (s == MD_OK && file_crc) *file_crc = crc;
    return s;
}

void md_shard_writer_abort(md_shard_writer *w) {
    if (!w) return;
    md_atomic_abort(&w->f);
    free(w->index);
    free(w);
}

/* ---- reading ---- */

struct md_shard {
    char            *path;
    const uint8_t   *map;
    size_t           size;
    uint32_t         id, count;
    md_shard_record *rec;
};

/* Record the message (naming the shard), free s, return MD_ERR_DATA. */
#define BAD(fmt, ...)                                                                              \
    do {                                                                                           \
        md_fail(MD_ERR_DATA, "shard '%s': " fmt, s->path, __VA_ARGS__);                           \
        md_shard_close(s);                                                                         \
        return MD_ERR_DATA;                                                                        \
    } while (0)

md_status md_shard_open(const char *path, md_shard **out) {
    *out = NULL;
    md_shard *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        return md_fail(MD_ERR_NOMEM, "shard '%s'", path);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        md_shard_close(s);
        return md_fail(MD_ERR_IO, "cannot open shard '%s': %s", path, strerror(err));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        md_shard_close(s);
        return md_fail(MD_ERR_IO, "shard '%s' is not a regular file", path);
    }
    s->size = (size_t)st.st_size;
    if (s->size < MD_SHARD_HEADER_SIZE) {
        close(fd);
        BAD("truncated: %zu bytes, shorter than the %d-byte header", s->size, MD_SHARD_HEADER_SIZE);
    }
    void *m = mmap(NULL, s->size, PROT_READ, MAP_PRIVATE, fd, 0);
    int   err = errno;
    close(fd);
    if (m == MAP_FAILED) {
        md_shard_close(s);
        return md_fail(MD_ERR_IO, "cannot map shard '%s': %s", path, strerror(err));
    }
    s->map = m;
    const uint8_t *h = s->map;
    if (memcmp(h, MD_SHARD_MAGIC, 8) != 0)
        BAD("%s", "not an mdenas image shard (no MDSHARD magic)");
    if (get32(h + 60) != md_crc32c(h, 60))
        BAD("header checksum mismatch (stored %08x, computed %08x)", get32(h + 60),
            md_crc32c(h, 60));
    uint32_t version = get32(h + 8);
    if (version != MD_SHARD_VERSION)
        BAD("format version %u; this program reads version %d (a newer imagenet_prep?)", version,
            MD_SHARD_VERSION);
    if (get32(h + 12) != MD_SHARD_HEADER_SIZE || get32(h + 16) != MD_SHARD_RECORD_SIZE)
        BAD("unexpected header / record sizes %u / %u", get32(h + 12), get32(h + 16));
    s->count = get32(h + 20), s->id = get32(h + 52);
    uint64_t data_off = MD_SHARD_HEADER_SIZE + (uint64_t)MD_SHARD_RECORD_SIZE * s->count;
    if (get64(h + 24) != MD_SHARD_HEADER_SIZE || get64(h + 32) != data_off)
        BAD("inconsistent offsets: index at %llu, data at %llu for %u records",
            (unsigned long long)get64(h + 24), (unsigned long long)get64(h + 32), s->count);
    if (get64(h + 40) != s->size)
        BAD("truncated or extended: the header says %llu bytes, the file has %zu",
            (unsigned long long)get64(h + 40), s->size);
    if (data_off > s->size)
        BAD("truncated: %u records do not fit in %zu bytes", s->count, s->size);
    if (get32(h + 48) != md_crc32c(h + MD_SHARD_HEADER_SIZE, (size_t)(data_off - MD_SHARD_HEADER_SIZE)))
        BAD("index checksum mismatch (stored %08x, computed %08x)", get32(h + 48),
            md_crc32c(h + MD_SHARD_HEADER_SIZE, (size_t)(data_off - MD_SHARD_HEADER_SIZE)));
    s->rec = calloc(s->count ? s->count : 1, sizeof *s->rec);
    if (!s->rec) {
        md_shard_close(s);
        return md_fail(MD_ERR_NOMEM, "shard '%s': %u records", path, s->count);
    }
    uint64_t next = data_off;
    for (uint32_t i = 0; i < s->count; i++) {
        md_shard_record *r = &s->rec[i];
        decode_record(h + MD_SHARD_HEADER_SIZE + (size_t)i * MD_SHARD_RECORD_SIZE, r);
        if (r->offset != next || r->size == 0 || r->size > s->size - next)
            BAD("record %u: %u bytes at %llu, outside the data section or out of order", i,
                r->size, (unsigned long long)r->offset);
        if (r->label < 0 || r->width == 0 || r->height == 0)
            BAD("record %u: label %d, size %ux%u", i, r->label, r->width, r->height);
        next += r->size;
    }
    if (next != s->size)
        BAD("%llu trailing bytes after the last image", (unsigned long long)(s->size - next));
    *out = s;
    return MD_OK;
}

void md_shard_close(md_shard *s) {
    if (!s) return;
    if (s->map) munmap((void *)s->map, s->size);
    free(s->rec);
    free(s->path);
    free(s);
}

uint32_t    md_shard_count(const md_shard *s) { return s->count; }
uint32_t    md_shard_id(const md_shard *s) { return s->id; }
const char *md_shard_path(const md_shard *s) { return s->path; }

const md_shard_record *md_shard_record_at(const md_shard *s, uint32_t i) {
    return i < s->count ? &s->rec[i] : NULL;
}

md_status md_shard_image(const md_shard *s, uint32_t i, const uint8_t **bytes, uint32_t *size) {
    if (i >= s->count)
        return md_fail(MD_ERR_ARG, "shard '%s': record %u of %u", s->path, i, s->count);
    const md_shard_record *r = &s->rec[i];
    const uint8_t         *p = s->map + r->offset;
    uint32_t               crc = md_crc32c(p, r->size);
    if (crc != r->crc)
        return md_fail(MD_ERR_DATA,
                       "shard '%s': record %u (source %llu): image checksum mismatch (stored "
                       "%08x, computed %08x): the file is damaged; run imagenet_prep again",
                       s->path, i, (unsigned long long)r->source, r->crc, crc);
    *bytes = p, *size = r->size;
    return MD_OK;
}

md_status md_shard_file_crc(const md_shard *s, uint32_t *crc) {
    *crc = md_crc32c(s->map, s->size);
    return MD_OK;
}
