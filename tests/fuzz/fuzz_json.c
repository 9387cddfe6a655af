/* libFuzzer harness for the JSON reader (src/io/json_parse.c), which reads the
 * safetensors header of every checkpoint and the configuration files.
 *
 * Besides running it under ASan/UBSan, each input is checked two ways:
 *  - differentially against Jansson (Debian libjansson-dev), a strict RFC 8259
 *    parser, with the options that match our rules (any top-level value,
 *    duplicate keys refused, numbers as doubles, no \u0000): both must accept
 *    the same texts and read the same values. The one difference allowed is
 *    our nesting limit (200 levels, Jansson's is 2048), and a UTF-8 byte order
 *    mark, which we skip and Jansson does not (it is cut off for Jansson).
 *  - a round trip: what we accept, written back with md_json_value (json.c),
 *    reads back to the same value (unless deeper than the 31 levels the writer takes).
 * A mismatch aborts, which libFuzzer reports as a crash. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdenas/runlog.h"

static int same_num(double a, double b) {
    return a == b && signbit(a) == signbit(b);
}

static int same_value(const md_jvalue *a, const md_jvalue *b) {
    if (a->type != b->type || a->count != b->count) return 0;
    switch (a->type) {
    case MD_JNULL:
        return 1;
    case MD_JBOOL:
    case MD_JNUM:
        return same_num(a->num, b->num);
    case MD_JSTR:
        return strcmp(a->str, b->str) == 0;
    case MD_JARR:
    case MD_JOBJ:
        for (int i = 0; i < a->count; i++) {
            if (a->type == MD_JOBJ && strcmp(a->keys[i], b->keys[i]) != 0) return 0;
            if (!same_value(&a->items[i], &b->items[i])) return 0;
        }
        return 1;
    }
    return 0;
}

static int same_as_jansson(const md_jvalue *v, const json_t *j) {
    switch (v->type) {
    case MD_JNULL:
        return json_is_null(j);
    case MD_JBOOL:
        return v->num != 0.0 ? json_is_true(j) : json_is_false(j);
    case MD_JNUM:
        return json_is_real(j) && same_num(v->num, json_real_value(j));
    case MD_JSTR:
        return json_is_string(j) && json_string_length(j) == strlen(v->str) &&
               memcmp(json_string_value(j), v->str, strlen(v->str)) == 0;
    case MD_JARR:
        if (!json_is_array(j) || json_array_size(j) != (size_t)v->count) return 0;
        for (int i = 0; i < v->count; i++)
            if (!same_as_jansson(&v->items[i], json_array_get(j, (size_t)i))) return 0;
        return 1;
    case MD_JOBJ:
        if (!json_is_object(j) || json_object_size(j) != (size_t)v->count) return 0;
        for (int i = 0; i < v->count; i++) {
            const json_t *m = json_object_get(j, v->keys[i]);
            if (!m || !same_as_jansson(&v->items[i], m)) return 0;
        }
        return 1;
    }
    return 0;
}

static int depth_of(const md_jvalue *v) {
    int d = 0;
    if (v->type == MD_JARR || v->type == MD_JOBJ)
        for (int i = 0; i < v->count; i++) {
            int k = depth_of(&v->items[i]);
            if (k > d) d = k;
        }
    return v->type == MD_JARR || v->type == MD_JOBJ ? d + 1 : 0;
}

static void fail(const char *what, const char *text, const char *detail) {
    fprintf(stderr, "fuzz_json: %s\n  input: %.300s\n  %s\n", what, text, detail);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0'; /* the reader takes C strings: what follows a NUL is not seen */

    md_jvalue v;
    md_status s = md_json_parse(text, "fuzz.json", &v);
    if (s != MD_OK && s != MD_ERR_DATA)
        fail("status neither OK nor DATA", text, md_error_message());
    if (s != MD_OK && (v.type != MD_JNULL || v.items || v.keys || v.str || v.count))
        fail("failed parse left a value behind", text, md_error_message());
    int too_deep = s != MD_OK && strstr(md_error_message(), "nesting too deep") != NULL;

    const char  *jt = strncmp(text, "\xEF\xBB\xBF", 3) == 0 ? text + 3 : text;
    json_error_t je;
    json_t      *j =
        json_loads(jt, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &je);
    if (s == MD_OK && !j) fail("we accept, Jansson refuses", text, je.text);
    if (s != MD_OK && j && !too_deep) fail("Jansson accepts, we refuse", text, md_error_message());
    if (s == MD_OK && !same_as_jansson(&v, j))
        fail("we and Jansson read different values", text, "");
    json_decref(j);

    if (s == MD_OK) {
        md_json w;
        md_json_init(&w);
        md_json_value(&w, &v);
        if (w.failed && depth_of(&v) <= 31) fail("the writer failed", text, "");
        if (!w.failed) {
            md_jvalue back;
            if (md_json_parse(w.buf, "written", &back) != MD_OK)
                fail("our own output does not read back", w.buf, md_error_message());
            if (!same_value(&v, &back)) fail("the round trip changed the value", text, w.buf);
            md_json_value_free(&back);
        }
        md_json_free(&w);
        md_json_value_free(&v);
    }
    free(text);
    return 0;
}
