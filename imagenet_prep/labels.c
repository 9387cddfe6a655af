/* Labels of a flat validation folder, in the three forms they come in:
 *   "FILE WNID" lines (FILE with or without its extension);
 *   Kaggle's LOC_val_solution.csv: "ImageId,PredictionString", the label being
 *     the first word of the prediction string (boxes follow it);
 *   the devkit's ILSVRC2012_validation_ground_truth.txt: line n holds the class
 *     id of ILSVRC2012_val_<n, 8 digits>; ids are the devkit's own order (meta.mat),
 *     not sorted wnids, so they need an "ID WNID" map (--val-id-map). */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "prep.h"

typedef struct {
    char *key, *wnid;
    int   used;
} entry;

struct prep_labels {
    entry *e;
    size_t n, cap;
    char  *text, *map_text; /* keys and wnids point into these (or are strdup'ed) */
    char **owned;           /* generated keys */
    size_t nowned, owned_cap;
};

/* Split text into lines in place; CR before LF dropped. Returns the next line or NULL. */
static char *next_line(char **cursor) {
    char *s = *cursor;
    if (!s || !*s) return NULL;
    char *nl = strchr(s, '\n');
    if (nl) {
        *nl = '\0';
        *cursor = nl + 1;
    } else {
        *cursor = s + strlen(s);
    }
    size_t len = strlen(s);
    if (len && s[len - 1] == '\r') s[len - 1] = '\0';
    return s;
}

/* Up to `max` whitespace-separated words of s, in place; returns how many (max + 1 if more). */
static int split_words(char *s, char **w, int max) {
    int n = 0;
    while (*s) {
        while (*s && isspace((unsigned char)*s))
            s++;
        if (!*s) break;
        if (n == max) return max + 1;
        w[n++] = s;
        while (*s && !isspace((unsigned char)*s))
            s++;
        if (*s) *s++ = '\0';
    }
    return n;
}

static md_status add(prep_labels *l, char *key, char *wnid) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        entry *e = realloc(l->e, cap * sizeof *e);
        if (!e) return md_fail(MD_ERR_NOMEM, "labels: %zu entries", cap);
        l->e = e, l->cap = cap;
    }
    l->e[l->n++] = (entry){key, wnid, 0};
    return MD_OK;
}

static int by_key(const void *a, const void *b) {
    return strcmp(((const entry *)a)->key, ((const entry *)b)->key);
}

static char *skip_bom(char *s) {
    return (unsigned char)s[0] == 0xEF && (unsigned char)s[1] == 0xBB && (unsigned char)s[2] == 0xBF
               ? s + 3
               : s;
}

static int is_number(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s)) return 0;
    return 1;
}

static md_status load_kaggle(prep_labels *l, char *cursor, const char *path) {
    char *line;
    int   lineno = 1;
    while ((line = next_line(&cursor))) {
        lineno++;
        if (!line[strspn(line, " \t")]) continue;
        char *comma = strchr(line, ',');
        char *w[1];
        if (!comma)
            return md_fail(MD_ERR_DATA, "%s:%d: no ',' (expected ImageId,PredictionString)", path,
                           lineno);
        *comma = '\0';
        if (!line[0] || split_words(comma + 1, w, 1) < 1)
            return md_fail(MD_ERR_DATA, "%s:%d: empty ImageId or PredictionString", path, lineno);
        MD_TRY(add(l, line, w[0]));
    }
    return MD_OK;
}

static md_status load_pairs(prep_labels *l, char *cursor, const char *path) {
    char *line;
    int   lineno = 0;
    while ((line = next_line(&cursor))) {
        lineno++;
        char *w[2];
        int   n = split_words(line, w, 2);
        if (n == 0) continue;
        if (n != 2)
            return md_fail(MD_ERR_DATA, "%s:%d: expected two words \"FILE WNID\", got %s", path,
                           lineno, n < 2 ? "one" : "more");
        MD_TRY(add(l, w[0], w[1]));
    }
    return MD_OK;
}

typedef struct {
    long  id;
    char *wnid;
} id_wnid;

static int by_id(const void *a, const void *b) {
    long x = ((const id_wnid *)a)->id, y = ((const id_wnid *)b)->id;
    return (x > y) - (x < y);
}

static md_status load_devkit(prep_labels *l, char *cursor, const char *path, const char *map_path) {
    size_t len;
    MD_TRY(prep_read_file(map_path, &l->map_text, &len));
    size_t   nmap = 0, cap = 1024;
    id_wnid *map = malloc(cap * sizeof *map);
    if (!map) return md_fail(MD_ERR_NOMEM, "labels: id map");
    char     *mc = skip_bom(l->map_text), *line;
    int       lineno = 0;
    md_status s = MD_OK;
    while (s == MD_OK && (line = next_line(&mc))) {
        lineno++;
        char *w[2];
        int   n = split_words(line, w, 2);
        if (n == 0) continue;
        if (n < 2 || !is_number(w[0]) || strlen(w[0]) > 9) {
            s = md_fail(MD_ERR_DATA, "%s:%d: expected \"ID WNID\" (a class id, then its wnid)",
                        map_path, lineno);
            break;
        }
        if (nmap == cap) {
            id_wnid *m = realloc(map, (cap *= 2) * sizeof *m);
            if (!m) {
                s = md_fail(MD_ERR_NOMEM, "labels: id map of %zu entries", cap);
                break;
            }
            map = m;
        }
        map[nmap++] = (id_wnid){strtol(w[0], NULL, 10), w[1]};
    }
    if (s == MD_OK) qsort(map, nmap, sizeof *map, by_id);
    for (size_t i = 1; s == MD_OK && i < nmap; i++)
        if (map[i].id == map[i - 1].id)
            s = md_fail(MD_ERR_DATA, "%s: class id %ld is given twice", map_path, map[i].id);
    lineno = 0;
    int blank = 0; /* line n is image n: only trailing blank lines are allowed */
    while (s == MD_OK && (line = next_line(&cursor))) {
        lineno++;
        char *w[2];
        int   n = split_words(line, w, 1);
        if (n == 0) {
            if (!blank) blank = lineno;
            continue;
        }
        if (blank) {
            s = md_fail(MD_ERR_DATA, "%s:%d: a blank line (line n holds the class of image n)",
                        path, blank);
            break;
        }
        if (n != 1 || !is_number(w[0]) || strlen(w[0]) > 9) {
            s = md_fail(MD_ERR_DATA,
                        "%s:%d: expected one class id per line (the devkit's "
                        "ground truth)",
                        path, lineno);
            break;
        }
        id_wnid  k = {strtol(w[0], NULL, 10), NULL};
        id_wnid *hit = bsearch(&k, map, nmap, sizeof *map, by_id);
        if (!hit) {
            s = md_fail(MD_ERR_DATA, "%s:%d: class id %ld is not in the id map %s", path, lineno,
                        k.id, map_path);
            break;
        }
        char key[32];
        snprintf(key, sizeof key, "ILSVRC2012_val_%08d", lineno);
        if (l->nowned == l->owned_cap) {
            size_t ncap = l->owned_cap ? 2 * l->owned_cap : 1024;
            char **owned = realloc(l->owned, ncap * sizeof *owned);
            if (!owned) {
                s = md_fail(MD_ERR_NOMEM, "labels: %zu keys", ncap);
                break;
            }
            l->owned = owned, l->owned_cap = ncap;
        }
        if (!(l->owned[l->nowned] = strdup(key))) {
            s = md_fail(MD_ERR_NOMEM, "labels: keys");
            break;
        }
        s = add(l, l->owned[l->nowned++], hit->wnid);
    }
    free(map);
    return s;
}

md_status prep_labels_load(const char *path, const char *id_map, prep_labels **out) {
    *out = NULL;
    prep_labels *l = calloc(1, sizeof *l);
    if (!l) return md_fail(MD_ERR_NOMEM, "labels");
    size_t    len;
    md_status s = prep_read_file(path, &l->text, &len);
    if (s != MD_OK) {
        prep_labels_free(l);
        return s;
    }
    if (memchr(l->text, '\0', len)) {
        prep_labels_free(l);
        return md_fail(MD_ERR_DATA, "labels file %s holds NUL bytes: not a text file", path);
    }
    char *cursor = skip_bom(l->text);
    /* The first non-blank line says which form this is. */
    char  *peek = cursor + strspn(cursor, " \t\r\n");
    size_t first_len = strcspn(peek, "\r\n");
    char   first[64], *fw[1];
    snprintf(first, sizeof first, "%.*s", (int)(first_len < 63 ? first_len : 63), peek);
    int devkit = split_words(first, fw, 1) == 1 && is_number(fw[0]);
    if (!strncmp(peek, "ImageId", 7)) {
        next_line(&cursor); /* the header */
        if (id_map)
            s = md_fail(MD_ERR_ARG,
                        "--val-id-map is for the devkit's ground truth, but "
                        "%s is Kaggle's LOC_val_solution.csv",
                        path);
        else
            s = load_kaggle(l, cursor, path);
    } else if (devkit) {
        if (!id_map)
            s = md_fail(MD_ERR_ARG,
                        "%s holds class ids (the devkit's ILSVRC2012_validation_ground_truth.txt):"
                        " its ids follow the devkit's meta.mat, not sorted wnids, so give their "
                        "wnids with --val-id-map FILE (lines \"ID WNID\")",
                        path);
        else
            s = load_devkit(l, cursor, path, id_map);
    } else if (id_map) {
        s = md_fail(MD_ERR_ARG,
                    "--val-id-map is for the devkit's ground truth, but %s holds "
                    "\"FILE WNID\" lines",
                    path);
    } else {
        s = load_pairs(l, cursor, path);
    }
    if (s == MD_OK && l->n == 0) s = md_fail(MD_ERR_DATA, "labels file %s holds no labels", path);
    if (s == MD_OK) {
        qsort(l->e, l->n, sizeof *l->e, by_key);
        size_t k = 0;
        for (size_t i = 0; i < l->n && s == MD_OK; i++) {
            if (k && !strcmp(l->e[k - 1].key, l->e[i].key)) {
                if (strcmp(l->e[k - 1].wnid, l->e[i].wnid))
                    s = md_fail(MD_ERR_DATA, "%s: '%s' is labelled both %s and %s", path,
                                l->e[i].key, l->e[k - 1].wnid, l->e[i].wnid);
                continue;
            }
            l->e[k++] = l->e[i];
        }
        l->n = k;
    }
    if (s != MD_OK) {
        prep_labels_free(l);
        return s;
    }
    *out = l;
    return MD_OK;
}

static entry *lookup(prep_labels *l, const char *key) {
    entry k = {(char *)key, NULL, 0};
    return bsearch(&k, l->e, l->n, sizeof *l->e, by_key);
}

const char *prep_labels_find(prep_labels *l, const char *name) {
    entry *e = lookup(l, name);
    if (!e) {
        const char *dot = strrchr(name, '.');
        if (dot && dot != name) {
            size_t n = (size_t)(dot - name);
            char  *stem = malloc(n + 1);
            if (!stem) return NULL;
            memcpy(stem, name, n);
            stem[n] = '\0';
            e = lookup(l, stem);
            free(stem);
        }
    }
    if (!e) return NULL;
    e->used = 1;
    return e->wnid;
}

size_t prep_labels_unused(const prep_labels *l) {
    size_t n = 0;
    for (size_t i = 0; i < l->n; i++)
        n += !l->e[i].used;
    return n;
}

void prep_labels_free(prep_labels *l) {
    if (!l) return;
    for (size_t i = 0; i < l->nowned; i++)
        free(l->owned[i]);
    free(l->owned);
    free(l->e);
    free(l->text);
    free(l->map_text);
    free(l);
}
