/* Run-directory writers: JSON text (exact bytes), the JSON reader (round trip,
 * Unicode, errors that name the place), CRC-32C check values, TFRecord framing
 * and Event encoding read back byte by byte, the SVG heatmap.
 *   test_runlog                 run the checks (files go to a fresh ./runlog_test.XXXXXX)
 *   test_runlog --sample DIR    write DIR/tb/ events and DIR/heatmap.svg for
 *                               tests/check_tb_events.py to read with the real readers */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mdenas/runlog.h"
#include "testutil.h"

static char tmpdir[64];

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char  *buf = malloc(cap);
    for (;;) {
        if (!buf) break;
        if (n + 1 >= cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (!bigger) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        if (r == 0) break;
        n += r;
    }
    fclose(f);
    if (!buf) return NULL;
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

static void path_in(char *out, size_t cap, const char *dir, const char *name) {
    snprintf(out, cap, "%s/%s", dir, name);
}

/* ---- JSON writer ----------------------------------------------------------- */

static void build_nested(md_json *j) {
    md_json_begin_object(j);
    md_json_key(j, "name");
    md_json_string(j, "say \"hi\"\\ \n\t\x01\x1f caf\xc3\xa9 \xe7\xb2\xbe");
    md_json_key(j, "n");
    md_json_int(j, -9223372036854775807LL - 1);
    md_json_key(j, "x");
    md_json_begin_array(j);
    md_json_double(j, 0.1);
    md_json_double(j, 1.0 / 3.0);
    md_json_double(j, -2.5e-300);
    md_json_double(j, NAN);
    md_json_double(j, -INFINITY);
    md_json_double(j, 100.0);
    md_json_end_array(j);
    md_json_key(j, "empty");
    md_json_begin_object(j);
    md_json_end_object(j);
    md_json_key(j, "flags");
    md_json_begin_array(j);
    md_json_bool(j, 1);
    md_json_bool(j, 0);
    md_json_null(j);
    md_json_string(j, NULL);
    md_json_begin_array(j);
    md_json_end_array(j);
    md_json_end_array(j);
    md_json_key(j, "k\"ey");
    md_json_begin_object(j);
    md_json_key(j, "deep");
    md_json_begin_array(j);
    md_json_int(j, 1);
    md_json_begin_object(j);
    md_json_key(j, "z");
    md_json_int(j, 0);
    md_json_end_object(j);
    md_json_end_array(j);
    md_json_end_object(j);
    md_json_end_object(j);
}

static const char nested_compact[] =
    "{\"name\":\"say \\\"hi\\\"\\\\ \\n\\t\\u0001\\u001f caf\xc3\xa9 \xe7\xb2\xbe\","
    "\"n\":-9223372036854775808,"
    "\"x\":[0.1,0.3333333333333333,-2.5e-300,null,null,100],"
    "\"empty\":{},\"flags\":[true,false,null,null,[]],"
    "\"k\\\"ey\":{\"deep\":[1,{\"z\":0}]}}";

static void test_json_writer(void) {
    md_json j;
    md_json_init(&j);
    build_nested(&j);
    CHECK(!j.failed && j.depth == 0, "writer state failed=%d depth=%d", j.failed, j.depth);
    CHECK(j.buf && strcmp(j.buf, nested_compact) == 0, "compact text\n got: %s\nwant: %s",
          j.buf ? j.buf : "(null)", nested_compact);
    CHECK(j.len == strlen(nested_compact), "len %zu", j.len);

    /* Indented, and JSON Lines: a second top-level value starts a new line. */
    md_json_reset(&j);
    j.indent = 2;
    md_json_begin_object(&j);
    md_json_key(&j, "a");
    md_json_begin_array(&j);
    md_json_int(&j, 1);
    md_json_int(&j, 2);
    md_json_end_array(&j);
    md_json_key(&j, "b");
    md_json_begin_object(&j);
    md_json_end_object(&j);
    md_json_end_object(&j);
    md_json_int(&j, 7);
    const char *pretty = "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": {}\n}\n7";
    CHECK(strcmp(j.buf, pretty) == 0, "indented text\n got: %s\nwant: %s", j.buf, pretty);

    md_json_reset(&j);
    j.indent = 0;
    md_json_double(&j, -0.0);
    md_json_double(&j, 5e-324);
    md_json_double(&j, 1e21);
    md_json_double(&j, 123456789012345678.0);
    CHECK(strcmp(j.buf, "-0\n4.94065645841247e-324\n1e+21\n1.2345678901234568e+17") == 0,
          "doubles: %s", j.buf);
    md_json_free(&j);
}

static void test_json_misuse(void) {
    char path[160];
    path_in(path, sizeof path, tmpdir, "bad.json");
    md_json j;
    md_json_init(&j);
    md_json_begin_object(&j);
    md_json_end_array(&j);
    CHECK(j.failed && md_json_write_file(&j, path) == MD_ERR_ARG, "'{' closed by ']' accepted");
    CHECK(strstr(md_error_message(), "bad.json"), "message: %s", md_error_message());
    md_json_free(&j);

    md_json_init(&j);
    md_json_begin_object(&j);
    md_json_int(&j, 1);
    CHECK(j.failed, "a value without a key in an object accepted");
    md_json_free(&j);

    md_json_init(&j);
    md_json_begin_array(&j);
    md_json_key(&j, "k");
    CHECK(j.failed, "a key in an array accepted");
    md_json_free(&j);

    md_json_init(&j);
    md_json_end_object(&j);
    CHECK(j.failed, "a close without an open accepted");
    md_json_free(&j);

    md_json_init(&j);
    md_json_begin_array(&j);
    CHECK(md_json_write_file(&j, path) == MD_ERR_ARG, "unclosed array accepted");
    md_json_free(&j);

    md_json_init(&j);
    for (int i = 0; i < 40; i++)
        md_json_begin_array(&j);
    CHECK(j.failed, "nesting of 40 not flagged");
    md_json_free(&j);
    CHECK(access(path, F_OK) != 0, "a refused text was written");
}

static void test_json_files(void) {
    char path[160], tmp[170];
    path_in(path, sizeof path, tmpdir, "out.json");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    md_json j;
    md_json_init(&j);
    build_nested(&j);
    CHECK_OK(md_json_write_file(&j, path));
    size_t len = 0;
    char  *text = read_all(path, &len);
    CHECK(text && len == j.len && memcmp(text, j.buf, len) == 0, "file contents differ");
    CHECK(access(tmp, F_OK) != 0, "%s left behind", tmp);
    free(text);

    /* Rewriting replaces the whole file. */
    md_json_reset(&j);
    md_json_int(&j, 5);
    CHECK_OK(md_json_write_file(&j, path));
    text = read_all(path, NULL);
    CHECK(text && strcmp(text, "5") == 0, "rewritten file: %s", text ? text : "(none)");
    free(text);

    char missing[200];
    snprintf(missing, sizeof missing, "%s/no/such/dir/x.json", tmpdir);
    CHECK(md_json_write_file(&j, missing) == MD_ERR_IO, "write into a missing directory");
    CHECK(strstr(md_error_message(), "no/such/dir/x.json.tmp"), "message: %s", md_error_message());

    /* metrics.jsonl: one line per call, appended. */
    char lines[160];
    path_in(lines, sizeof lines, tmpdir, "metrics.jsonl");
    for (int step = 1; step <= 2; step++) {
        md_json_reset(&j);
        md_json_begin_object(&j);
        md_json_key(&j, "step");
        md_json_int(&j, step);
        md_json_key(&j, "loss");
        md_json_double(&j, 0.5 * step);
        md_json_end_object(&j);
        CHECK_OK(md_json_append_file(&j, lines));
    }
    text = read_all(lines, NULL);
    CHECK(text && strcmp(text, "{\"step\":1,\"loss\":0.5}\n{\"step\":2,\"loss\":1}\n") == 0,
          "jsonl: %s", text ? text : "(none)");
    free(text);
    md_json_free(&j);
}

/* ---- JSON reader ----------------------------------------------------------- */

static void test_json_roundtrip(void) {
    md_json j;
    md_json_init(&j);
    build_nested(&j);
    md_jvalue v;
    CHECK_OK(md_json_parse(j.buf, "nested", &v));
    CHECK(v.type == MD_JOBJ && v.count == 6, "top: %s with %d items", md_json_type_name(v.type),
          v.count);
    const md_jvalue *name = md_json_get(&v, "name"), *n = md_json_get(&v, "n"),
                    *x = md_json_get(&v, "x"), *flags = md_json_get(&v, "flags");
    CHECK(name && name->type == MD_JSTR &&
              strcmp(name->str, "say \"hi\"\\ \n\t\x01\x1f caf\xc3\xa9 \xe7\xb2\xbe") == 0,
          "name");
    CHECK(n && n->type == MD_JNUM && n->num == -9223372036854775808.0, "n");
    CHECK(x && x->type == MD_JARR && x->count == 6 && x->items[0].num == 0.1 &&
              x->items[1].num == 1.0 / 3.0 && x->items[2].num == -2.5e-300 &&
              x->items[3].type == MD_JNULL && x->items[5].num == 100.0,
          "x");
    CHECK(flags && flags->count == 5 && flags->items[0].type == MD_JBOOL &&
              flags->items[0].num == 1.0 && flags->items[1].num == 0.0 &&
              flags->items[4].type == MD_JARR && flags->items[4].count == 0,
          "flags");
    const md_jvalue *deep = md_json_get(md_json_get(&v, "k\"ey"), "deep");
    CHECK(deep && deep->count == 2 && md_json_get(&deep->items[1], "z")->num == 0.0, "deep");
    CHECK(md_json_get(&v, "absent") == NULL && md_json_get(x, "name") == NULL, "absent keys");

    /* Written back out, the text is the same bytes. */
    md_json again;
    md_json_init(&again);
    md_json_value(&again, &v);
    CHECK(strcmp(again.buf, nested_compact) == 0, "re-serialised\n got: %s\nwant: %s", again.buf,
          nested_compact);
    md_json_free(&again);
    md_json_value_free(&v);
    CHECK(v.items == NULL && v.count == 0, "value_free leaves a zeroed value");
    md_json_free(&j);
}

static void test_json_parse_text(void) {
    md_jvalue v;
    CHECK_OK(md_json_parse("\xEF\xBB\xBF [ \"\\u00e9\\u4e2D\\ud83d\\ude00\\/\\b\\f\\r\", -0.5e+2, "
                           "0, 1E3, true, null ]\r\n",
                           "u", &v));
    CHECK(v.type == MD_JARR && v.count == 6, "array of %d", v.count);
    if (v.count == 6) {
        CHECK(strcmp(v.items[0].str, "\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80/\b\f\r") == 0,
              "\\u escapes decode to UTF-8");
        CHECK(v.items[1].num == -50.0 && v.items[2].num == 0.0 && v.items[3].num == 1000.0,
              "numbers %g %g %g", v.items[1].num, v.items[2].num, v.items[3].num);
        CHECK(v.items[4].type == MD_JBOOL && v.items[4].num == 1.0 && v.items[5].type == MD_JNULL,
              "literals");
    }
    md_json_value_free(&v);
}

static void test_json_parse_errors(void) {
    static const struct {
        const char *text, *where, *what;
    } cases[] = {
        {"{\n  \"a\": 1,\n  \"b\": tru\n}", "cfg.json:3:8:", "unknown word"},
        {"{\"a\": 1,}", "cfg.json:1:9:", "trailing comma"},
        {"[1 2]", "cfg.json:1:4:", "expected ',' or ']'"},
        {"{\"a\" 1}", "cfg.json:1:6:", "expected ':'"},
        {"{\"a\": 1, \"a\": 2}", "cfg.json:1:10:", "duplicate key"},
        {"{1: 2}", "cfg.json:1:2:", "expected a \"key\""},
        {"\n\n  \"abc", "cfg.json:3:3:", "string not closed"},
        {"\"a\\qb\"", "cfg.json:1:3:", "unknown escape"},
        {"\"tab\there\"", "cfg.json:1:5:", "control character"},
        {"\"\\ud800x\"", "cfg.json:1:2:", "high surrogate"},
        {"\"\\udc00\"", "cfg.json:1:2:", "lone low surrogate"},
        {"\"\\u00g0\"", "cfg.json:1:2:", "four hex digits"},
        {"\"\\u0000\"", "cfg.json:1:2:", "\\u0000"},
        {"012", "cfg.json:1:1:", "leading zero"},
        {"1.", "cfg.json:1:3:", "digit after '.'"},
        {"-", "cfg.json:1:1:", "without digits"},
        {"1e+", "cfg.json:1:4:", "exponent"},
        {"", "cfg.json:1:1:", "unexpected end"},
        {"{} x", "cfg.json:1:4:", "text after the end"},
        {"[\"\xc3\xa9\", @]", "cfg.json:1:7:", "unexpected character"},
        {"{\"a\": [1, {\"b\": ", "cfg.json:1:17:", "unexpected end"},
        /* Found by tests/fuzz/fuzz_json (differential against Jansson). */
        {"\"caf\xc3\"", "cfg.json:1:5:", "invalid UTF-8"},
        {"[\"\xed\xa0\x80\"]", "cfg.json:1:3:", "invalid UTF-8"}, /* an encoded surrogate */
        {"\"\xc0\xaf\"", "cfg.json:1:2:", "invalid UTF-8"},         /* overlong '/' */
        {"[1, 1e999]", "cfg.json:1:5:", "out of the range of a double"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        md_jvalue v;
        md_error_clear();
        md_status   s = md_json_parse(cases[i].text, "cfg.json", &v);
        const char *msg = md_error_message();
        CHECK(s == MD_ERR_DATA, "case %zu accepted: %s", i, cases[i].text);
        CHECK(strstr(msg, cases[i].where) && strstr(msg, cases[i].what),
              "case %zu: message '%s' lacks '%s' / '%s'", i, msg, cases[i].where, cases[i].what);
        CHECK(v.type == MD_JNULL && v.items == NULL && v.str == NULL, "case %zu: out not zeroed",
              i);
    }

    /* Nesting deeper than the reader allows is an error, not a stack overflow. */
    char deep[1002];
    memset(deep, '[', 1001);
    deep[1001] = '\0';
    md_jvalue v;
    CHECK(md_json_parse(deep, "deep.json", &v) == MD_ERR_DATA &&
              strstr(md_error_message(), "nesting too deep"),
          "deep nesting: %s", md_error_message());
}

/* An object of many keys reads in linear time (the duplicate check was quadratic:
 * 100 000 keys took 26 s), and a duplicate among them is still found. */
static void test_json_many_keys(void) {
    enum { N = 100000 };
    size_t cap = (size_t)N * 24 + 64, len = 1;
    char  *t = malloc(cap);
    if (!t) return;
    t[0] = '{';
    for (int i = 0; i < N; i++)
        len += (size_t)snprintf(t + len, cap - len, "%s\"k%d\": %d", i ? ", " : "", i, i);
    snprintf(t + len, cap - len, "}");
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    md_jvalue v;
    CHECK_OK(md_json_parse(t, "many.json", &v));
    clock_gettime(CLOCK_MONOTONIC, &b);
    double sec = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    CHECK(v.type == MD_JOBJ && v.count == N && md_json_get(&v, "k99999")->num == 99999.0,
          "%d keys read", v.count);
    CHECK(sec < 5.0, "%d keys took %.1f s", N, sec);
    md_json_value_free(&v);
    snprintf(t + len, cap - len, ", \"k54321\": 0}");
    CHECK(md_json_parse(t, "many.json", &v) == MD_ERR_DATA &&
              strstr(md_error_message(), "duplicate key"),
          "duplicate among %d keys: %s", N, md_error_message());
    free(t);
}

/* ---- CRC-32C --------------------------------------------------------------- */

static uint32_t crc32c_bitwise(const unsigned char *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int b = 0; b < 8; b++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

static void test_crc32c(void) {
    CHECK(md_crc32c("123456789", 9) == 0xE3069283u, "check value %08x", md_crc32c("123456789", 9));
    /* RFC 3720 (iSCSI) appendix B.4 vectors. */
    unsigned char b[256];
    memset(b, 0, 32);
    CHECK(md_crc32c(b, 32) == 0x8A9136AAu, "32 zeros: %08x", md_crc32c(b, 32));
    memset(b, 0xFF, 32);
    CHECK(md_crc32c(b, 32) == 0x62A8AB43u, "32 ones: %08x", md_crc32c(b, 32));
    for (int i = 0; i < 32; i++)
        b[i] = (unsigned char)i;
    CHECK(md_crc32c(b, 32) == 0x46DD794Eu, "ascending: %08x", md_crc32c(b, 32));
    for (int i = 0; i < 32; i++)
        b[i] = (unsigned char)(31 - i);
    CHECK(md_crc32c(b, 32) == 0x113FDB5Cu, "descending: %08x", md_crc32c(b, 32));
    CHECK(md_crc32c(b, 0) == 0, "empty");
    for (int i = 0; i < 256; i++)
        b[i] = (unsigned char)(i * 131 + 7);
    CHECK(md_crc32c(b, 256) == crc32c_bitwise(b, 256), "table vs bitwise");
    /* Every length and alignment the 8-byte hardware loop can meet, and a value
     * continued over split buffers (CTest runs this with the table forced too). */
    for (int off = 0; off < 8; off++)
        for (int n = 0; n + off <= 256; n += 1 + n / 16) {
            CHECK(md_crc32c(b + off, (size_t)n) == crc32c_bitwise(b + off, (size_t)n),
                  "offset %d length %d", off, n);
            int half = n / 3;
            CHECK(md_crc32c_extend(md_crc32c(b + off, (size_t)half), b + off + half,
                                   (size_t)(n - half)) == crc32c_bitwise(b + off, (size_t)n),
                  "offset %d length %d continued at %d", off, n, half);
        }
}

/* ---- TensorBoard events ------------------------------------------------------ */

static uint64_t get_le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t masked(uint32_t c) {
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

static int get_varint(const unsigned char **p, const unsigned char *end, uint64_t *v) {
    *v = 0;
    for (int shift = 0; *p < end && shift < 64; shift += 7) {
        unsigned char b = *(*p)++;
        *v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) return 1;
    }
    return 0;
}

typedef struct {
    double wall_time;
    long   step;
    char   version[32];
    char   tag[300];
    float  value;
    int    has_value;
} event;

/* A protobuf reader just big enough for Event, Summary and Summary.Value. */
static int decode_message(const unsigned char *p, const unsigned char *end, int level, event *ev) {
    while (p < end) {
        uint64_t key, v = 0;
        if (!get_varint(&p, end, &key)) return 0;
        int                  field = (int)(key >> 3), wire = (int)(key & 7);
        const unsigned char *data = p;
        if (wire == 0) {
            if (!get_varint(&p, end, &v)) return 0;
        } else if (wire == 1 || wire == 5) {
            int n = wire == 1 ? 8 : 4;
            if (end - p < n) return 0;
            v = get_le(p, n);
            p += n;
        } else if (wire == 2) {
            if (!get_varint(&p, end, &v) || (uint64_t)(end - p) < v) return 0;
            data = p;
            p += v;
        } else {
            return 0;
        }
        if (level == 0 && field == 1 && wire == 1)
            memcpy(&ev->wall_time, &v, 8);
        else if (level == 0 && field == 2 && wire == 0)
            ev->step = (long)(int64_t)v;
        else if (level == 0 && field == 3 && wire == 2 && v < sizeof ev->version)
            memcpy(ev->version, data, v);
        else if ((level == 0 && field == 5) || (level == 1 && field == 1)) {
            if (wire != 2 || !decode_message(data, data + v, level + 1, ev)) return 0;
        } else if (level == 2 && field == 1 && wire == 2 && v < sizeof ev->tag)
            memcpy(ev->tag, data, v);
        else if (level == 2 && field == 2 && wire == 5) {
            uint32_t bits = (uint32_t)v;
            memcpy(&ev->value, &bits, 4);
            ev->has_value = 1;
        } else
            return 0; /* nothing else should be there */
    }
    return p == end;
}

/* Reads every record of the file, checking the framing; returns the count. */
static int read_events(const char *path, event *evs, int max, unsigned char **raw,
                       size_t *raw_len) {
    size_t         len = 0;
    unsigned char *buf = (unsigned char *)read_all(path, &len);
    if (!buf) return -1;
    size_t off = 0;
    int    n = 0;
    while (off < len && n < max) {
        CHECK(len - off >= 16, "record %d: %zu bytes left, need 16", n, len - off);
        if (len - off < 16) break;
        uint64_t dlen = get_le(buf + off, 8);
        CHECK(get_le(buf + off + 8, 4) == masked(md_crc32c(buf + off, 8)), "record %d: length CRC",
              n);
        CHECK(dlen <= len - off - 16, "record %d: length %llu past the end", n,
              (unsigned long long)dlen);
        if (dlen > len - off - 16) break;
        const unsigned char *data = buf + off + 12;
        CHECK(get_le(data + dlen, 4) == masked(md_crc32c(data, dlen)), "record %d: data CRC", n);
        memset(&evs[n], 0, sizeof evs[n]);
        CHECK(decode_message(data, data + dlen, 0, &evs[n]), "record %d: bad protobuf", n);
        if (raw && n == 1) {
            *raw = malloc(dlen);
            memcpy(*raw, data, dlen);
            *raw_len = dlen;
        }
        off += 16 + dlen;
        n++;
    }
    CHECK(off == len, "%zu trailing bytes", len - off);
    free(buf);
    return n;
}

static void test_tboard(void) {
    char dir[160];
    path_in(dir, sizeof dir, tmpdir, "tb");
    md_tb *tb = NULL, *tb2 = NULL;
    CHECK_OK(md_tb_open(dir, &tb)); /* creates the directory */
    if (!tb) return;
    CHECK_OK(md_tb_scalar(tb, "a", 3, 1.0f));
    CHECK_OK(md_tb_scalar(tb, "loss/train", 1L << 40, 0.1f));
    CHECK_OK(md_tb_scalar(tb, "neg", -5, -2.75f));
    char long_tag[300];
    memset(long_tag, 'x', 256);
    long_tag[256] = '\0';
    CHECK_OK(md_tb_scalar(tb, long_tag, 0, 3.0f));
    long_tag[256] = 'x';
    long_tag[257] = '\0';
    CHECK(md_tb_scalar(tb, long_tag, 0, 3.0f) == MD_ERR_ARG, "257-byte tag accepted");
    CHECK(md_tb_scalar(tb, "", 0, 3.0f) == MD_ERR_ARG, "empty tag accepted");

    /* Name: events.out.tfevents.<seconds>.<host>; a second writer gets its own file. */
    char host[256] = "";
    gethostname(host, sizeof host);
    host[255] = '\0';
    const char *base = strrchr(md_tb_path(tb), '/') + 1;
    char       *end = NULL;
    long long   secs = strtoll(base + strlen("events.out.tfevents."), &end, 10);
    CHECK(strncmp(base, "events.out.tfevents.", 20) == 0 && llabs(secs - time(NULL)) < 600 &&
              *end == '.' && strcmp(end + 1, host) == 0,
          "file name %s (host %s)", base, host);
    CHECK_OK(md_tb_open(dir, &tb2));
    if (tb2) CHECK(strcmp(md_tb_path(tb), md_tb_path(tb2)) != 0, "two writers share a file");
    CHECK_OK(md_tb_close(tb2));

    char path[400];
    snprintf(path, sizeof path, "%s", md_tb_path(tb));
    CHECK_OK(md_tb_close(tb));

    event          evs[8];
    unsigned char *raw = NULL;
    size_t         raw_len = 0;
    int            n = read_events(path, evs, 8, &raw, &raw_len);
    CHECK(n == 5, "%d records, expected 5", n);
    if (n != 5) {
        free(raw);
        return;
    }
    double now = (double)time(NULL);
    for (int i = 0; i < n; i++)
        CHECK(fabs(evs[i].wall_time - now) < 600, "record %d wall_time %f", i, evs[i].wall_time);
    CHECK(strcmp(evs[0].version, "brain.Event:2") == 0 && !evs[0].has_value, "file_version '%s'",
          evs[0].version);
    CHECK(evs[1].step == 3 && strcmp(evs[1].tag, "a") == 0 && evs[1].value == 1.0f, "event 1");
    CHECK(evs[2].step == 1L << 40 && strcmp(evs[2].tag, "loss/train") == 0 && evs[2].value == 0.1f,
          "event 2: step %ld tag %s value %.9g", evs[2].step, evs[2].tag, evs[2].value);
    CHECK(evs[3].step == -5 && evs[3].value == -2.75f, "event 3: step %ld", evs[3].step);
    CHECK(strlen(evs[4].tag) == 256 && evs[4].step == 0, "event 4: tag of %zu", strlen(evs[4].tag));

    /* The exact bytes of one Event after its wall_time: step 3, Summary{Value{"a", 1.0f}}:
     * Value is 8 bytes (tag 0a 01 'a', simple_value 15 + float), Summary 10 (0a 08 + Value). */
    static const unsigned char want[] = {0x10, 0x03, 0x2a, 0x0a, 0x0a, 0x08, 0x0a,
                                         0x01, 0x61, 0x15, 0x00, 0x00, 0x80, 0x3f};
    CHECK(raw_len == 9 + sizeof want && raw[0] == 0x09 && memcmp(raw + 9, want, sizeof want) == 0,
          "Event bytes (%zu)", raw_len);
    free(raw);

    char blocked[200];
    snprintf(blocked, sizeof blocked, "%s/a.json/tb", tmpdir);
    md_tb *none = NULL;
    CHECK(md_tb_open(blocked, &none) == MD_ERR_IO && none == NULL, "open under a missing parent");
}

/* ---- heatmap ---------------------------------------------------------------- */

static const char *const darts_ops[8] = {"none",         "max_pool_3x3", "avg_pool_3x3",
                                         "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                                         "dil_conv_3x3", "dil_conv_5x5"};

/* p drifting from uniform towards one op per edge, as a search would. */
static double *synthetic_history(int periods, int edges, int k) {
    double *hist = malloc((size_t)periods * edges * k * sizeof(double));
    if (!hist) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    for (int t = 0; t < periods; t++)
        for (int e = 0; e < edges; e++) {
            double *p = hist + ((size_t)t * edges + e) * k, sum = 0;
            for (int i = 0; i < k; i++) {
                double pull = (i == (e * 5 + 3) % k ? 3.0
                               : i == (e + 1) % k   ? 1.5
                                                    : 0.0) +
                              0.3 * sin(0.7 * t + i + e);
                p[i] = exp(pull * (periods > 1 ? t / (periods - 1.0) : 1.0));
                sum += p[i];
            }
            for (int i = 0; i < k; i++)
                p[i] /= sum;
        }
    return hist;
}

static void darts_edge_names(char names[28][32], const char *ptrs[28]) {
    for (int g = 0, i = 0; g < 2; g++)
        for (int node = 0; node < 4; node++)
            for (int in = 0; in < node + 2; in++, i++) {
                if (in < 2)
                    snprintf(names[i], 32, "node %d <- input %d", node, in);
                else
                    snprintf(names[i], 32, "node %d <- node %d", node, in - 2);
                ptrs[i] = names[i];
            }
}

static md_status write_sample_heatmap(const char *path, int periods) {
    static const char *const groups[2] = {"normal", "reduce"};
    char                     names[28][32];
    const char              *ptrs[28];
    darts_edge_names(names, ptrs);
    double    *hist = synthetic_history(periods, 28, 8);
    md_heatmap h = {.title = "MdeNAS search: p per edge & op <darts>",
                    .op_names = darts_ops,
                    .k = 8,
                    .groups = 2,
                    .group_names = groups,
                    .edges_per_group = 14,
                    .periods = periods,
                    .hist = hist,
                    .edge_names = ptrs};
    md_status  s = md_heatmap_write_svg(&h, path);
    free(hist);
    return s;
}

static int count(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static void test_heatmap(void) {
    char path[160];
    path_in(path, sizeof path, tmpdir, "p.svg");
    CHECK_OK(write_sample_heatmap(path, 30));
    char *svg = read_all(path, NULL);
    CHECK(svg != NULL, "no %s", path);
    if (!svg) return;
    CHECK(count(svg, "<rect class=\"cell\"") == 2 * 14 * 8, "%d cells",
          count(svg, "<rect class=\"cell\""));
    CHECK(count(svg, "<polyline") == 2 * 14 * 8, "%d sparklines", count(svg, "<polyline"));
    for (int i = 0; i < 8; i++)
        CHECK(count(svg, darts_ops[i]) >= 2, "op %s not named in both panels", darts_ops[i]);
    CHECK(strstr(svg, "p per edge &amp; op &lt;darts&gt;") != NULL, "title not escaped");
    CHECK(strstr(svg, "node 3 &lt;- node 2") != NULL, "edge label");
    CHECK(strstr(svg, ">normal<") && strstr(svg, ">reduce<"), "group names");
    CHECK(!strstr(svg, "<script") && !strstr(svg, "href") && !strstr(svg, "<image"),
          "not self-contained");
    CHECK(strncmp(svg, "<?xml", 5) == 0 && strstr(svg, "</svg>\n") != NULL, "document ends");
    free(svg);

    /* One period: a flat line, no division by zero. */
    CHECK_OK(write_sample_heatmap(path, 1));
    svg = read_all(path, NULL);
    CHECK(svg && count(svg, "<polyline") == 2 * 14 * 8 && !strstr(svg, "nan") &&
              !strstr(svg, "inf"),
          "one-period heatmap");
    free(svg);

    /* Colour ends: p = 0 is white, the largest p is the darkest blue and outlined. */
    static const char *const two[2] = {"op_a", "op_b"};
    md_heatmap               tiny = {.op_names = two,
                                     .k = 2,
                                     .groups = 1,
                                     .edges_per_group = 1,
                                     .periods = 1,
                                     .hist = (double[2]){0.0, 1.0}};
    CHECK_OK(md_heatmap_write_svg(&tiny, path));
    svg = read_all(path, NULL);
    const char *a = svg ? strstr(svg, "<rect class=\"cell\"") : NULL;
    const char *b = a ? strstr(a + 1, "<rect class=\"cell\"") : NULL;
    const char *white = a ? strstr(a, "fill=\"#ffffff\"") : NULL;
    CHECK(a && b && white && white < b && strstr(b, "fill=\"#08306b\"") &&
              count(svg, "stroke=\"#e6550d\"") == 1 && strstr(b, "stroke=\"#e6550d\"") &&
              strstr(svg, ">edge 0<"),
          "tiny heatmap colours/outline");
    free(svg);

    md_heatmap bad = {.op_names = darts_ops,
                      .k = 8,
                      .groups = 1,
                      .edges_per_group = 0,
                      .periods = 1,
                      .hist = (double[8]){0}};
    CHECK(md_heatmap_write_svg(&bad, path) == MD_ERR_ARG, "0 edges accepted");
}

/* ---- sample for the Python readers ---------------------------------------- */

/* Keep in step with tests/check_tb_events.py. */
static int write_sample(const char *dir) {
    char sub[512];
    if (mkdir(dir, 0755) != 0 && access(dir, W_OK) != 0) {
        fprintf(stderr, "cannot create %s\n", dir);
        return 1;
    }
    snprintf(sub, sizeof sub, "%s/tb", dir);
    md_tb *tb = NULL;
    int    ok = md_tb_open(sub, &tb) == MD_OK;
    for (int s = 0; ok && s < 10; s++) {
        ok = md_tb_scalar(tb, "loss/train", s, (float)(2.5 / (s + 1))) == MD_OK;
        if (ok && s % 5 == 0) ok = md_tb_scalar(tb, "accuracy/val", s, (float)(0.1 * s)) == MD_OK;
    }
    if (ok) ok = md_tb_scalar(tb, "big/step", 1L << 40, 65504.0f) == MD_OK;
    if (ok) ok = md_tb_scalar(tb, "\xe7\xb2\xbe\xe5\xba\xa6 caf\xc3\xa9", 7, -3.25f) == MD_OK;
    if (ok) ok = md_tb_scalar(tb, "special/nan", 1, NAN) == MD_OK;
    if (ok) ok = md_tb_scalar(tb, "special/tiny", 2, 1e-45f) == MD_OK;
    if (ok) ok = md_tb_close(tb) == MD_OK;
    snprintf(sub, sizeof sub, "%s/heatmap.svg", dir);
    if (ok) ok = write_sample_heatmap(sub, 30) == MD_OK;
    if (!ok) {
        fprintf(stderr, "sample: %s\n", md_error_message());
        return 1;
    }
    return 0;
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *ent;
    while ((ent = readdir(d))) {
        if (!strcmp(ent->d_name, ".") || !strcmp(ent->d_name, "..")) continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, ent->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            remove_tree(p);
        else
            remove(p);
    }
    closedir(d);
    rmdir(dir);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--sample") == 0) return write_sample(argv[2]);
    strcpy(tmpdir, "runlog_test.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    test_json_writer();
    test_json_misuse();
    test_json_files();
    test_json_roundtrip();
    test_json_parse_text();
    test_json_parse_errors();
    test_json_many_keys();
    test_crc32c();
    test_tboard();
    test_heatmap();
    if (md_test_failures == 0)
        remove_tree(tmpdir);
    else
        fprintf(stderr, "files kept in %s\n", tmpdir);
    return md_test_finish("test_runlog");
}
