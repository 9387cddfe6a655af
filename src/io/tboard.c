/* TensorBoard event files without TensorFlow or protobuf: each record is
 *   uint64 length (little-endian), uint32 masked CRC-32C of those 8 bytes,
 *   the Event message, uint32 masked CRC-32C of the message,
 * and the Event is encoded by hand (tensorflow/core/util/event.proto):
 *   1 wall_time double, 2 step int64, 3 file_version string, 5 summary Summary;
 *   Summary: repeated 1 Value; Value: 1 tag string, 2 simple_value float. */
#include "mdenas/runlog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TB_MAX_TAG 256

struct md_tb {
    FILE *f;
    char *path;
};

/* Protobuf field keys: (field number << 3) | wire type. */
enum {
    KEY_WALL_TIME = (1 << 3) | 1,    /* 64-bit */
    KEY_STEP = (2 << 3) | 0,         /* varint */
    KEY_FILE_VERSION = (3 << 3) | 2, /* length-delimited */
    KEY_SUMMARY = (5 << 3) | 2,
    KEY_SUMMARY_VALUE = (1 << 3) | 2,
    KEY_VALUE_TAG = (1 << 3) | 2,
    KEY_VALUE_SIMPLE = (2 << 3) | 5, /* 32-bit */
};

static uint32_t masked_crc(const unsigned char *data, size_t len) {
    uint32_t c = md_crc32c(data, len);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

static unsigned char *put_le(unsigned char *o, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++)
        o[i] = (unsigned char)(v >> (8 * i));
    return o + bytes;
}

static unsigned char *put_varint(unsigned char *o, uint64_t v) {
    while (v >= 0x80) {
        *o++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *o++ = (unsigned char)v;
    return o;
}

static size_t varint_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static unsigned char *put_bytes(unsigned char *o, int key, const void *s, size_t n) {
    *o++ = (unsigned char)key;
    o = put_varint(o, n);
    memcpy(o, s, n);
    return o + n;
}

static unsigned char *put_wall_time(unsigned char *o) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double   t = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    uint64_t bits;
    memcpy(&bits, &t, sizeof bits);
    *o++ = KEY_WALL_TIME;
    return put_le(o, bits, 8);
}

static md_status write_record(md_tb *tb, const unsigned char *data, size_t len) {
    unsigned char head[12], tail[4];
    put_le(head, len, 8);
    put_le(head + 8, masked_crc(head, 8), 4);
    put_le(tail, masked_crc(data, len), 4);
    if (fwrite(head, 1, sizeof head, tb->f) != sizeof head || fwrite(data, 1, len, tb->f) != len ||
        fwrite(tail, 1, sizeof tail, tb->f) != sizeof tail)
        return md_fail(MD_ERR_IO, "tensorboard: writing to '%s' failed: %s", tb->path,
                       strerror(errno));
    return MD_OK;
}

/* The first free name among base, base.1, base.2, ...: two writers that start
 * in the same second on one host must not truncate each other's file. */
static md_status create_event_file(md_tb *tb, const char *dir) {
    char host[256] = "localhost";
    if (gethostname(host, sizeof host) != 0 || !host[0]) strcpy(host, "localhost");
    host[sizeof host - 1] = '\0';
    size_t cap = strlen(dir) + strlen(host) + 64;
    tb->path = malloc(cap);
    if (!tb->path) return md_fail(MD_ERR_NOMEM, "tensorboard: file name in '%s'", dir);
    long long now = (long long)time(NULL);
    for (int n = 0; n < 1000; n++) {
        int w = snprintf(tb->path, cap, "%s/events.out.tfevents.%lld.%s", dir, now, host);
        if (n > 0) snprintf(tb->path + w, cap - (size_t)w, ".%d", n);
        int fd = open(tb->path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0 && errno == EEXIST) continue;
        if (fd < 0)
            return md_fail(MD_ERR_IO, "tensorboard: cannot create '%s': %s", tb->path,
                           strerror(errno));
        tb->f = fdopen(fd, "wb");
        if (!tb->f) {
            close(fd);
            return md_fail(MD_ERR_IO, "tensorboard: fdopen '%s': %s", tb->path, strerror(errno));
        }
        return MD_OK;
    }
    return md_fail(MD_ERR_IO, "tensorboard: 1000 event files for second %lld already in '%s'", now,
                   dir);
}

md_status md_tb_open(const char *dir, md_tb **out) {
    *out = NULL;
    if (!dir || !*dir) return md_fail(MD_ERR_ARG, "tensorboard: empty directory name");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return md_fail(MD_ERR_IO, "tensorboard: cannot create directory '%s': %s", dir,
                       strerror(errno));
    md_tb *tb = calloc(1, sizeof *tb);
    if (!tb) return md_fail(MD_ERR_NOMEM, "tensorboard: writer");
    md_status s = create_event_file(tb, dir);
    if (s == MD_OK) {
        static const char version[] = "brain.Event:2";
        unsigned char     ev[64], *o = put_wall_time(ev);
        o = put_bytes(o, KEY_FILE_VERSION, version, sizeof version - 1);
        s = write_record(tb, ev, (size_t)(o - ev));
    }
    if (s == MD_OK) s = md_tb_flush(tb);
    if (s != MD_OK) {
        md_tb_close(tb);
        return s;
    }
    *out = tb;
    return MD_OK;
}

const char *md_tb_path(const md_tb *tb) {
    return tb->path;
}

md_status md_tb_scalar(md_tb *tb, const char *tag, long step, float value) {
    size_t tag_len = tag ? strlen(tag) : 0;
    if (tag_len == 0 || tag_len > TB_MAX_TAG)
        return md_fail(MD_ERR_ARG, "tensorboard: tag '%.40s' has %zu bytes (1..%d allowed)",
                       tag ? tag : "", tag_len, TB_MAX_TAG);
    size_t value_len = 1 + varint_size(tag_len) + tag_len + 1 + 4;
    size_t summary_len = 1 + varint_size(value_len) + value_len;
    /* wall time 9, step <= 11, summary key + length <= 3, the summary */
    unsigned char  ev[9 + 11 + 3 + 1 + 2 + 1 + 2 + TB_MAX_TAG + 5];
    unsigned char *o = put_wall_time(ev);
    *o++ = KEY_STEP;
    o = put_varint(o, (uint64_t)(int64_t)step); /* int64: negatives take ten bytes */
    *o++ = KEY_SUMMARY;
    o = put_varint(o, summary_len);
    *o++ = KEY_SUMMARY_VALUE;
    o = put_varint(o, value_len);
    o = put_bytes(o, KEY_VALUE_TAG, tag, tag_len);
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    *o++ = KEY_VALUE_SIMPLE;
    o = put_le(o, bits, 4);
    return write_record(tb, ev, (size_t)(o - ev));
}

md_status md_tb_flush(md_tb *tb) {
    if (fflush(tb->f) != 0)
        return md_fail(MD_ERR_IO, "tensorboard: flushing '%s' failed: %s", tb->path,
                       strerror(errno));
    return MD_OK;
}

md_status md_tb_close(md_tb *tb) {
    if (!tb) return MD_OK;
    md_status s = MD_OK;
    if (tb->f) {
        s = md_tb_flush(tb);
        if (fclose(tb->f) != 0 && s == MD_OK)
            s = md_fail(MD_ERR_IO, "tensorboard: closing '%s' failed: %s", tb->path,
                        strerror(errno));
    }
    free(tb->path);
    free(tb);
    return s;
}
