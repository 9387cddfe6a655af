/* Image shards (src/io/shard.c): round trip, the bytes on disk against the
 * layout docs/formats.md gives (decoded here independently), and every kind
 * of damage caught with a message naming the shard (and the record). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mdenas/runlog.h"
#include "mdenas/shard.h"
#include "testutil.h"

static char dir[64];


static void spit(const char *path, const uint8_t *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(b, 1, n, f);
        fclose(f);
    }
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

enum { N = 5 };
static uint8_t  img[N][300];
static uint32_t sizes[N] = {1, 17, 300, 64, 129};

static void write_sample(const char *path, uint32_t *file_crc) {
    md_shard_writer *w = NULL;
    CHECK_OK(md_shard_writer_open(path, 7, N, &w));
    if (!w) return;
    for (int i = 0; i < N; i++) {
        md_shard_record r = {.label = i * 3, .width = 10u + (uint32_t)i, .height = 20u + (uint32_t)i,
                             .flags = (uint32_t)i, .source = 1000u + (uint64_t)i};
        CHECK_OK(md_shard_writer_add(w, img[i], sizes[i], &r));
    }
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(tmp, F_OK) == 0 && access(path, F_OK) != 0, "before close: only the .tmp file");
    CHECK_OK(md_shard_writer_close(w, file_crc));
    CHECK(access(tmp, F_OK) != 0, "the .tmp file is left after close");
}

static void test_round_trip(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/train-00007.mds", dir);
    uint32_t file_crc = 0;
    write_sample(path, &file_crc);

    /* The bytes, decoded from the documented layout without the reader. */
    size_t   n = 0;
    uint8_t *b = md_test_read_file(path, &n);
    CHECK(b != NULL, "read back");
    if (!b) return;
    size_t data = 64 + 40 * N, total = data;
    for (int i = 0; i < N; i++) total += sizes[i];
    CHECK(n == total, "file size %zu, expected %zu", n, total);
    CHECK(memcmp(b, "MDSHARD\0", 8) == 0, "magic");
    CHECK(le32(b + 8) == 1 && le32(b + 12) == 64 && le32(b + 16) == 40, "version and sizes");
    CHECK(le32(b + 20) == N && le64(b + 24) == 64 && le64(b + 32) == data && le64(b + 40) == n,
          "count and offsets");
    CHECK(le32(b + 48) == md_crc32c(b + 64, 40 * N), "index crc");
    CHECK(le32(b + 52) == 7 && le32(b + 56) == 0, "shard id, reserved");
    CHECK(le32(b + 60) == md_crc32c(b, 60), "header crc");
    CHECK(file_crc == md_crc32c(b, n), "file crc %08x vs %08x", file_crc, md_crc32c(b, n));
    size_t off = data;
    for (int i = 0; i < N; i++) {
        const uint8_t *r = b + 64 + 40 * i;
        CHECK(le64(r) == off && le32(r + 8) == sizes[i], "record %d placement", i);
        CHECK((int32_t)le32(r + 12) == i * 3 && le32(r + 16) == 10u + (uint32_t)i &&
                  le32(r + 20) == 20u + (uint32_t)i,
              "record %d label/size", i);
        CHECK(le32(r + 24) == md_crc32c(img[i], sizes[i]), "record %d crc", i);
        CHECK(le32(r + 28) == (uint32_t)i && le64(r + 32) == 1000u + (uint64_t)i, "record %d flags/source", i);
        CHECK(memcmp(b + off, img[i], sizes[i]) == 0, "record %d bytes", i);
        off += sizes[i];
    }
    free(b);

    /* The reader. */
    md_shard *s = NULL;
    CHECK_OK(md_shard_open(path, &s));
    if (!s) return;
    CHECK(md_shard_count(s) == N && md_shard_id(s) == 7, "count %u id %u", md_shard_count(s),
          md_shard_id(s));
    CHECK(md_shard_record_at(s, N) == NULL, "record past the end");
    for (uint32_t i = 0; i < N; i++) {
        const md_shard_record *r = md_shard_record_at(s, i);
        CHECK(r && r->label == (int32_t)i * 3 && r->source == 1000u + i, "record %u", i);
        const uint8_t *p = NULL;
        uint32_t       sz = 0;
        CHECK_OK(md_shard_image(s, i, &p, &sz));
        CHECK(p && sz == sizes[i] && memcmp(p, img[i], sz) == 0, "image %u", i);
    }
    uint32_t c = 0;
    CHECK_OK(md_shard_file_crc(s, &c));
    CHECK(c == file_crc, "md_shard_file_crc");
    md_shard_close(s);
}

/* Damage `path` (a copy of the good shard) and expect open or image read to
 * fail with MD_ERR_DATA and a message holding each of the `want` strings. */
static void expect_bad(const char *what, const uint8_t *good, size_t n, size_t at, int delta,
                       size_t cut, int at_read, const char *want1, const char *want2) {
    char path[128];
    snprintf(path, sizeof path, "%s/bad.mds", dir);
    uint8_t *b = malloc(n);
    if (!b) return;
    memcpy(b, good, n);
    if (delta) b[at] = (uint8_t)(b[at] + delta);
    spit(path, b, cut ? cut : n);
    free(b);
    md_shard *s = NULL;
    md_status st = md_shard_open(path, &s);
    if (at_read) {
        CHECK(st == MD_OK, "%s: open should pass: %s", what, md_error_message());
        if (st != MD_OK) return;
        const uint8_t *p;
        uint32_t       sz;
        int            failed = 0;
        for (uint32_t i = 0; i < md_shard_count(s) && !failed; i++)
            if (md_shard_image(s, i, &p, &sz) != MD_OK) failed = 1;
        CHECK(failed, "%s: no image read failed", what);
        st = failed ? MD_ERR_DATA : MD_OK;
        md_shard_close(s);
    } else {
        CHECK(st != MD_OK && s == NULL, "%s: open accepted it", what);
    }
    const char *m = md_error_message();
    CHECK(st == MD_ERR_DATA, "%s: status %d (%s)", what, st, m);
    CHECK(strstr(m, path) != NULL, "%s: the message does not name the shard: %s", what, m);
    CHECK(!want1 || strstr(m, want1), "%s: no '%s' in: %s", what, want1, m);
    CHECK(!want2 || strstr(m, want2), "%s: no '%s' in: %s", what, want2, m);
}

static void test_damage(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/train-00007.mds", dir);
    size_t   n = 0;
    uint8_t *g = md_test_read_file(path, &n);
    if (!g) return;
    size_t data = 64 + 40 * N;
    expect_bad("magic", g, n, 0, 1, 0, 0, "not an mdenas image shard", NULL);
    expect_bad("header byte", g, n, 21, 1, 0, 0, "header checksum", NULL);
    expect_bad("index byte", g, n, 64 + 40 + 12, 1, 0, 0, "index checksum", NULL);
    expect_bad("image byte", g, n, data + 1 + 17 + 5, 1, 0, 1, "record 2", "checksum mismatch");
    expect_bad("last byte", g, n, n - 1, 0x55, 0, 1, "record 4", "source 1004");
    expect_bad("cut in data", g, n, 0, 0, n - 10, 0, "truncated", NULL);
    expect_bad("cut in index", g, n, 0, 0, 100, 0, "truncated", NULL);
    expect_bad("cut in header", g, n, 0, 0, 30, 0, "truncated", NULL);
    char zero[128];
    snprintf(zero, sizeof zero, "%s/zero.mds", dir);
    spit(zero, g, 0);
    md_shard *z = NULL;
    CHECK(md_shard_open(zero, &z) == MD_ERR_DATA && strstr(md_error_message(), "truncated") &&
              strstr(md_error_message(), zero),
          "zero bytes: %s", md_error_message());

    /* A newer version, with a consistent header checksum: named as such. */
    uint8_t *v = malloc(n);
    if (v) {
        memcpy(v, g, n);
        v[8] = 2;
        uint32_t c = md_crc32c(v, 60);
        for (int i = 0; i < 4; i++) v[60 + i] = (uint8_t)(c >> (8 * i));
        snprintf(path, sizeof path, "%s/v2.mds", dir);
        spit(path, v, n);
        md_shard *s = NULL;
        CHECK(md_shard_open(path, &s) == MD_ERR_DATA && strstr(md_error_message(), "version 2"),
              "version 2: %s", md_error_message());
        free(v);
    }
    free(g);

    md_shard *s = NULL;
    snprintf(path, sizeof path, "%s/missing.mds", dir);
    CHECK(md_shard_open(path, &s) == MD_ERR_IO && strstr(md_error_message(), path), "missing: %s",
          md_error_message());
}

static void test_writer_misuse(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/short.mds", dir);
    md_shard_writer *w = NULL;
    CHECK_OK(md_shard_writer_open(path, 0, 3, &w));
    if (!w) return;
    md_shard_record r = {.label = 1, .width = 1, .height = 1};
    CHECK_OK(md_shard_writer_add(w, img[0], 10, &r));
    md_shard_record neg = {.label = -1, .width = 1, .height = 1};
    CHECK(md_shard_writer_add(w, img[0], 10, &neg) == MD_ERR_ARG, "a negative label accepted");
    CHECK(md_shard_writer_close(w, NULL) == MD_ERR_ARG && strstr(md_error_message(), "1 images"),
          "close with 1 of 3: %s", md_error_message());
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(access(path, F_OK) != 0 && access(tmp, F_OK) != 0, "a short shard left a file behind");

    snprintf(path, sizeof path, "%s/no/such/dir/x.mds", dir);
    CHECK(md_shard_writer_open(path, 0, 1, &w) == MD_ERR_IO && strstr(md_error_message(), path),
          "missing directory: %s", md_error_message());

    /* An empty shard is valid. */
    snprintf(path, sizeof path, "%s/empty-00000.mds", dir);
    CHECK_OK(md_shard_writer_open(path, 0, 0, &w));
    if (w) CHECK_OK(md_shard_writer_close(w, NULL));
    md_shard *s = NULL;
    CHECK_OK(md_shard_open(path, &s));
    CHECK(s && md_shard_count(s) == 0, "empty shard");
    md_shard_close(s);
}

int main(void) {
    snprintf(dir, sizeof dir, "shard_test.XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    for (int i = 0; i < N; i++)
        for (int j = 0; j < 300; j++) img[i][j] = (uint8_t)(i * 37 + j * 11 + (j >> 3));
    test_round_trip();
    test_damage();
    test_writer_misuse();
    int rc = md_test_finish("test_shard");
    if (rc == 0) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    }
    return rc;
}
