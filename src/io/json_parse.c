/* A strict recursive-descent JSON reader (RFC 8259) for configuration files
 * and the headers of safetensors files. Errors point at the line and column.
 * Beyond the grammar it refuses: invalid UTF-8 in strings, \u0000 and lone
 * surrogates, duplicate keys, numbers beyond the range of a double, and
 * nesting deeper than 200. tests/fuzz/fuzz_json checks it against Jansson. */
#include "mdenas/runlog.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define JSON_PARSE_MAX_DEPTH 200

typedef struct {
    const char *text; /* start, for line/column */
    const char *p;
    const char *source;
    int         depth;
} parser;

static md_status parse_value(parser *ps, md_jvalue *out);

static md_status syntax_error(const parser *ps, const char *at, const char *what) {
    int line = 1, col = 1;
    for (const char *c = ps->text; c < at; c++) {
        if (*c == '\n') {
            line++;
            col = 1;
        } else if (((unsigned char)*c & 0xC0) != 0x80) {
            col++; /* columns count characters, not UTF-8 continuation bytes */
        }
    }
    return md_fail(MD_ERR_DATA, "%s:%d:%d: %s", ps->source, line, col, what);
}

static void skip_space(parser *ps) {
    while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')
        ps->p++;
}

static md_status expect_word(parser *ps, const char *word) {
    size_t n = strlen(word);
    if (strncmp(ps->p, word, n) != 0)
        return syntax_error(ps, ps->p, "unknown word (expected a value)");
    ps->p += n;
    return MD_OK;
}

static int is_digit(char c) {
    return c >= '0' && c <= '9';
}

static md_status parse_number(parser *ps, md_jvalue *out) {
    const char *s = ps->p, *c = s;
    if (*c == '-') c++;
    if (*c == '0') {
        c++;
        if (is_digit(*c)) return syntax_error(ps, s, "number with a leading zero");
    } else if (is_digit(*c)) {
        while (is_digit(*c))
            c++;
    } else {
        return syntax_error(ps, s, "'-' without digits");
    }
    if (*c == '.') {
        c++;
        if (!is_digit(*c)) return syntax_error(ps, c, "expected a digit after '.'");
        while (is_digit(*c))
            c++;
    }
    if (*c == 'e' || *c == 'E') {
        c++;
        if (*c == '+' || *c == '-') c++;
        if (!is_digit(*c)) return syntax_error(ps, c, "expected a digit in the exponent");
        while (is_digit(*c))
            c++;
    }
    out->type = MD_JNUM;
    out->num = strtod(s, NULL); /* the grammar above is a subset of what strtod reads */
    /* Refused rather than read as an infinity, which the writer cannot put back
     * (it writes null) and no count or rate should be. Underflow reads as 0 or a
     * subnormal, like other readers. */
    if (isinf(out->num)) return syntax_error(ps, s, "number out of the range of a double");
    ps->p = c;
    return MD_OK;
}

static int hex4(const char *s, unsigned *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char     c = s[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (unsigned)(c - 'A' + 10);
        else
            return 0;
        *v = *v * 16 + d;
    }
    return 1;
}

static size_t utf8_encode(unsigned cp, char *o) {
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* \uXXXX at s (pointing at the backslash), a surrogate pair taking two. */
static md_status parse_u_escape(parser *ps, const char **s, char **o) {
    const char *at = *s;
    unsigned    cp, lo;
    if (!hex4(at + 2, &cp)) return syntax_error(ps, at, "\\u needs four hex digits");
    *s = at + 6;
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return syntax_error(ps, at, "lone low surrogate in \\u escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if ((*s)[0] != '\\' || (*s)[1] != 'u' || !hex4(*s + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF)
            return syntax_error(ps, at, "high surrogate not followed by a low one");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        *s += 6;
    }
    if (cp == 0) return syntax_error(ps, at, "\\u0000 is not allowed in a string");
    *o += utf8_encode(cp, *o);
    return MD_OK;
}

/* Length of the UTF-8 sequence at s (s < end, *s >= 0x80), 0 if it is not well
 * formed (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF). */
static int utf8_length(const unsigned char *s, const unsigned char *end) {
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    int           n;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4)
        n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else
        return 0;
    if (end - s < n || s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return n;
}

/* ps->p at the opening quote. The decoded text is never longer than the source. */
static md_status parse_string(parser *ps, char **out) {
    const char *start = ps->p + 1, *end = start;
    while (*end && *end != '"')
        end += (*end == '\\' && end[1]) ? 2 : 1;
    if (!*end) return syntax_error(ps, ps->p, "string not closed");
    char *buf = malloc((size_t)(end - start) + 1), *o = buf;
    if (!buf)
        return md_fail(MD_ERR_NOMEM, "%s: string of %zu bytes", ps->source, (size_t)(end - start));
    const char *s = start;
    md_status   st = MD_OK;
    while (s < end && st == MD_OK) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20) {
            st = syntax_error(ps, s,
                              "control character in a string (write it as \\n, \\t or \\u00XX)");
        } else if (c >= 0x80) {
            int n = utf8_length((const unsigned char *)s, (const unsigned char *)end);
            if (!n) {
                st = syntax_error(ps, s, "invalid UTF-8 in a string");
                continue;
            }
            memcpy(o, s, (size_t)n);
            o += n, s += n;
        } else if (c != '\\') {
            *o++ = (char)c;
            s++;
        } else {
            char e = s[1], r = 0;
            switch (e) {
            case '"':
                r = '"';
                break;
            case '\\':
                r = '\\';
                break;
            case '/':
                r = '/';
                break;
            case 'b':
                r = '\b';
                break;
            case 'f':
                r = '\f';
                break;
            case 'n':
                r = '\n';
                break;
            case 'r':
                r = '\r';
                break;
            case 't':
                r = '\t';
                break;
            case 'u':
                st = parse_u_escape(ps, &s, &o);
                continue;
            default:
                st = syntax_error(ps, s, "unknown escape in a string");
                continue;
            }
            *o++ = r;
            s += 2;
        }
    }
    if (st != MD_OK) {
        free(buf);
        return st;
    }
    *o = '\0';
    *out = buf;
    ps->p = end + 1;
    return MD_OK;
}

/* Grow v->items (and v->keys for objects) to hold one more. */
static md_status push_item(parser *ps, md_jvalue *v, int *cap) {
    if (v->count < *cap) return MD_OK;
    if (*cap > INT_MAX / 2) return md_fail(MD_ERR_DATA, "%s: more than %d items", ps->source, *cap);
    int        n = *cap ? 2 * *cap : 4;
    md_jvalue *items = realloc(v->items, (size_t)n * sizeof *items);
    if (!items) return md_fail(MD_ERR_NOMEM, "%s: %d items", ps->source, n);
    v->items = items;
    if (v->type == MD_JOBJ) {
        char **keys = realloc(v->keys, (size_t)n * sizeof *keys);
        if (!keys) return md_fail(MD_ERR_NOMEM, "%s: %d keys", ps->source, n);
        v->keys = keys;
    }
    *cap = n;
    return MD_OK;
}

/* The keys of one object seen so far: a linear search while there are few, then
 * an open-addressing hash table of their indices (+1; 0 is empty), so that a
 * header of many keys costs linear time, not quadratic (100 000 keys took 26 s). */
typedef struct {
    int   *slot;
    size_t mask;
} key_set;

#define KEY_SET_LINEAR 16

static size_t key_hash(const char *k) {
    uint64_t h = 0xcbf29ce484222325u; /* FNV-1a */
    for (; *k; k++)
        h = (h ^ (unsigned char)*k) * 0x100000001b3u;
    return (size_t)(h ^ h >> 32);
}

/* Is key one of keys[0..n)? If not, it is added as index n. */
static md_status key_seen(parser *ps, key_set *set, char *const *keys, int n, const char *key,
                          int *seen) {
    *seen = 0;
    if (n < KEY_SET_LINEAR) {
        for (int i = 0; i < n && !*seen; i++)
            *seen = strcmp(keys[i], key) == 0;
        return MD_OK;
    }
    if (!set->slot || (size_t)n + 1 > (set->mask + 1) / 2) {
        size_t cap = 64;
        while (cap < 4 * ((size_t)n + 1))
            cap *= 2;
        int *slot = calloc(cap, sizeof *slot);
        if (!slot) return md_fail(MD_ERR_NOMEM, "%s: an object of %d keys", ps->source, n);
        free(set->slot);
        set->slot = slot, set->mask = cap - 1;
        for (int i = 0; i < n; i++) { /* distinct: each was checked when it came */
            size_t at = key_hash(keys[i]) & set->mask;
            while (set->slot[at])
                at = (at + 1) & set->mask;
            set->slot[at] = i + 1;
        }
    }
    size_t at = key_hash(key) & set->mask;
    for (; set->slot[at]; at = (at + 1) & set->mask)
        if (strcmp(keys[set->slot[at] - 1], key) == 0) {
            *seen = 1;
            return MD_OK;
        }
    set->slot[at] = n + 1;
    return MD_OK;
}

/* ps->p at '[' or '{'. Items already parsed are freed by the caller on error. */
static md_status parse_items(parser *ps, md_jvalue *v, key_set *set);

static md_status parse_container(parser *ps, md_jvalue *v) {
    key_set   set = {NULL, 0};
    md_status s = parse_items(ps, v, &set);
    free(set.slot);
    return s;
}

static md_status parse_items(parser *ps, md_jvalue *v, key_set *set) {
    int  is_obj = *ps->p == '{';
    char close = is_obj ? '}' : ']';
    int  cap = 0;
    v->type = is_obj ? MD_JOBJ : MD_JARR;
    if (++ps->depth > JSON_PARSE_MAX_DEPTH) return syntax_error(ps, ps->p, "nesting too deep");
    ps->p++;
    skip_space(ps);
    if (*ps->p == close) {
        ps->p++;
        ps->depth--;
        return MD_OK;
    }
    for (;;) {
        MD_TRY(push_item(ps, v, &cap));
        md_jvalue *item = &v->items[v->count];
        memset(item, 0, sizeof *item);
        if (is_obj) {
            if (*ps->p != '"') return syntax_error(ps, ps->p, "expected a \"key\" in the object");
            const char *key_at = ps->p;
            char       *key;
            MD_TRY(parse_string(ps, &key));
            int       seen;
            md_status ks = key_seen(ps, set, v->keys, v->count, key, &seen);
            if (ks != MD_OK || seen) {
                free(key);
                return ks != MD_OK ? ks : syntax_error(ps, key_at, "duplicate key in the object");
            }
            v->keys[v->count] = key;
            skip_space(ps);
            if (*ps->p != ':') {
                v->count++; /* so the key is freed */
                return syntax_error(ps, ps->p, "expected ':' after the key");
            }
            ps->p++;
            skip_space(ps);
        }
        md_status s = parse_value(ps, item);
        v->count++; /* a partly built item is freed with the rest */
        if (s != MD_OK) return s;
        skip_space(ps);
        if (*ps->p == ',') {
            ps->p++;
            skip_space(ps);
            if (*ps->p == close) return syntax_error(ps, ps->p, "trailing comma");
            continue;
        }
        if (*ps->p == close) {
            ps->p++;
            ps->depth--;
            return MD_OK;
        }
        return syntax_error(ps, ps->p,
                            is_obj ? "expected ',' or '}' in the object"
                                   : "expected ',' or ']' in the array");
    }
}

static md_status parse_value(parser *ps, md_jvalue *out) {
    memset(out, 0, sizeof *out);
    switch (*ps->p) {
    case '{':
    case '[':
        return parse_container(ps, out);
    case '"':
        out->type = MD_JSTR;
        return parse_string(ps, &out->str);
    case 't':
        out->type = MD_JBOOL;
        out->num = 1.0;
        return expect_word(ps, "true");
    case 'f':
        out->type = MD_JBOOL;
        return expect_word(ps, "false");
    case 'n':
        out->type = MD_JNULL;
        return expect_word(ps, "null");
    case '\0':
        return syntax_error(ps, ps->p, "unexpected end of text (expected a value)");
    default:
        if (*ps->p == '-' || is_digit(*ps->p)) return parse_number(ps, out);
        return syntax_error(ps, ps->p, "unexpected character (expected a value)");
    }
}

md_status md_json_parse(const char *text, const char *source, md_jvalue *out) {
    memset(out, 0, sizeof *out);
    if (!text) return md_fail(MD_ERR_ARG, "json: no text to parse");
    parser ps = {text, text, source ? source : "<json>", 0};
    if (strncmp(ps.p, "\xEF\xBB\xBF", 3) == 0) ps.p += 3;
    skip_space(&ps);
    md_status s = parse_value(&ps, out);
    if (s == MD_OK) {
        skip_space(&ps);
        if (*ps.p) s = syntax_error(&ps, ps.p, "text after the end of the value");
    }
    if (s != MD_OK) md_json_value_free(out);
    return s;
}

void md_json_value_free(md_jvalue *v) {
    if (!v) return;
    for (int i = 0; i < v->count; i++) {
        md_json_value_free(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    memset(v, 0, sizeof *v);
}

const md_jvalue *md_json_get(const md_jvalue *obj, const char *key) {
    if (!obj || obj->type != MD_JOBJ) return NULL;
    for (int i = 0; i < obj->count; i++)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

const char *md_json_type_name(md_jtype t) {
    switch (t) {
    case MD_JNULL:
        return "null";
    case MD_JBOOL:
        return "boolean";
    case MD_JNUM:
        return "number";
    case MD_JSTR:
        return "string";
    case MD_JARR:
        return "array";
    case MD_JOBJ:
        return "object";
    }
    return "unknown";
}

int md_json_equal(const md_jvalue *a, const md_jvalue *b) {
    if (!a || !b || a->type != b->type) return 0;
    switch (a->type) {
    case MD_JNULL: return 1;
    case MD_JBOOL:
    case MD_JNUM: return a->num == b->num;
    case MD_JSTR: return !strcmp(a->str, b->str);
    case MD_JARR:
    case MD_JOBJ:
        if (a->count != b->count) return 0;
        for (int i = 0; i < a->count; i++) {
            if (a->type == MD_JOBJ && strcmp(a->keys[i], b->keys[i])) return 0;
            if (!md_json_equal(&a->items[i], &b->items[i])) return 0;
        }
        return 1;
    }
    return 0;
}
