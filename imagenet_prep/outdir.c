/* The output folder: claiming it at the start (new, the same prep resumed, or
 * refused), and at the end classes.txt, sources.tsv, report.json and, last,
 * manifest.json, the commit marker. A prep is identified by its options and
 * its input (folders, source count, a CRC of the plan): a rerun with the same
 * identity resumes, another is refused. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "prep.h"

/* ---- identity ---- */

static void json_path(md_json *j, const char *key, const char *path) {
    md_json_key(j, key);
    if (!path) {
        md_json_null(j);
        return;
    }
    prep_json_text(j, path);
}

static void input_json(const prep_plan *p, md_json *j) {
    md_json_begin_object(j);
    json_path(j, "train_dir", p->train_dir);
    json_path(j, "val_dir", p->val_dir);
    json_path(j, "val_labels", p->val_labels);
    json_path(j, "val_id_map", p->val_id_map);
    prep_json_int(j, "sources", p->nsrc);
    prep_json_int(j, "tree_crc32c", p->tree_crc);
    md_json_end_object(j);
}

/* {"options": root.options, "input": root.input} on one line, as md_json writes
 * parsed values back (so texts written differently compare equal). */
static md_status identity_of(const md_jvalue *root, const char *what, char **out) {
    const md_jvalue *opt = md_json_get(root, "options"), *in = md_json_get(root, "input");
    if (!opt || !in || opt->type != MD_JOBJ || in->type != MD_JOBJ)
        return md_fail(MD_ERR_DATA, "%s has no \"options\" and \"input\" objects", what);
    md_json j;
    md_json_init(&j);
    md_json_begin_object(&j);
    md_json_key(&j, "options");
    md_json_value(&j, opt);
    md_json_key(&j, "input");
    md_json_value(&j, in);
    md_json_end_object(&j);
    *out = j.failed || !j.buf ? NULL : strdup(j.buf);
    md_json_free(&j);
    return *out ? MD_OK : md_fail(MD_ERR_NOMEM, "identity of %s", what);
}

md_status prep_identity(const prep_options *o, const prep_plan *p, char **text) {
    md_json j;
    md_json_init(&j);
    md_json_begin_object(&j);
    md_json_key(&j, "options");
    prep_options_json(o, &j);
    md_json_key(&j, "input");
    input_json(p, &j);
    md_json_end_object(&j);
    md_jvalue root;
    md_status s =
        j.failed ? md_fail(MD_ERR_NOMEM, "identity") : md_json_parse(j.buf, "identity", &root);
    md_json_free(&j);
    MD_TRY(s);
    s = identity_of(&root, "identity", text);
    md_json_value_free(&root);
    return s;
}

/* "quality: 85 there, 90 here; ..." for the keys of `section` that differ. */
static void describe_diff(const md_jvalue *there, const md_jvalue *here, prep_buf *b) {
    static const char *const sections[2] = {"options", "input"};
    int                      shown = 0;
    for (int k = 0; k < 2; k++) {
        const md_jvalue *a = md_json_get(there, sections[k]), *c = md_json_get(here, sections[k]);
        if (!a || !c) continue;
        for (int i = 0; i < c->count; i++) {
            const md_jvalue *va = md_json_get(a, c->keys[i]);
            md_json          ja, jc;
            md_json_init(&ja);
            md_json_init(&jc);
            if (va) md_json_value(&ja, va);
            md_json_value(&jc, &c->items[i]);
            if (!va || !ja.buf || !jc.buf || strcmp(ja.buf, jc.buf)) {
                prep_buf_add(b, "%s%s %s there, %s here", shown++ ? "; " : "", c->keys[i],
                             va && ja.buf ? ja.buf : "(absent)", jc.buf ? jc.buf : "?");
            }
            md_json_free(&ja);
            md_json_free(&jc);
        }
    }
    if (!shown) prep_buf_add(b, "a different format version");
}

/* 0: the file's identity is ours; 1: another (message printed); -1: unreadable. */
static int compare_identity(const char *path, const char *identity, const char *out) {
    char     *text = NULL, *theirs = NULL;
    size_t    len;
    md_jvalue root, here;
    if (prep_read_file(path, &text, &len) != MD_OK || md_json_parse(text, path, &root) != MD_OK) {
        fprintf(stderr, "imagenet_prep: %s\n", md_error_message());
        free(text);
        return -1;
    }
    free(text);
    int rc = -1;
    if (identity_of(&root, path, &theirs) != MD_OK) {
        fprintf(stderr, "imagenet_prep: %s\n", md_error_message());
    } else if (!strcmp(theirs, identity)) {
        rc = 0;
    } else if (md_json_parse(identity, "identity", &here) == MD_OK) {
        prep_buf b = {0};
        describe_diff(&root, &here, &b);
        fprintf(stderr,
                "imagenet_prep: refusing to use '%s': it belongs to a prep with other options or "
                "input (%s). Run that command again to finish it, or give another OUT.\n",
                out, b.s ? b.s : "?");
        prep_buf_free(&b);
        md_json_value_free(&here);
        rc = 1;
    }
    free(theirs);
    md_json_value_free(&root);
    return rc;
}

/* ---- claiming OUT ---- */

static int mkdir_p(const char *path) {
    char *p = strdup(path);
    if (!p) return ENOMEM;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            int e = errno;
            free(p);
            return e;
        }
        *s = '/';
    }
    int e = mkdir(p, 0777) != 0 && errno != EEXIST ? errno : 0;
    free(p);
    return e;
}

static int ours(const char *name) {
    static const char *const prefixes[] = {"train-",       "search_val-", "val-",
                                           "classes.txt",  "sources.tsv", "report.json",
                                           "manifest.json"};
    for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++)
        if (!strncmp(name, prefixes[i], strlen(prefixes[i]))) return 1;
    return 0;
}

static int ends_with(const char *s, const char *tail) {
    size_t n = strlen(s), m = strlen(tail);
    return n >= m && !strcmp(s + n - m, tail);
}

/* Remove the .tmp files a killed run left (ours only), in dir. */
static void remove_stale_tmp(const char *dir, int only_ours) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!ends_with(e->d_name, ".tmp") || (only_ours && !ours(e->d_name))) continue;
        char *p = prep_join(dir, e->d_name);
        if (p) unlink(p);
        free(p);
    }
    closedir(d);
}

/* The first entry of dir other than the work folder, or NULL (into buf). */
static const char *first_entry(const char *dir, char *buf, size_t n) {
    DIR *d = opendir(dir);
    if (!d) return NULL;
    struct dirent *e;
    const char    *found = NULL;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(buf, n, "%s", e->d_name);
            found = buf;
            break;
        }
    closedir(d);
    return found;
}

static int take_lock(const char *work);

/* A new prep: the work folder, its lock, then run.json (the identity). */
static int start_work(const char *work, const char *run, const char *identity) {
    if (mkdir(work, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "imagenet_prep: cannot create '%s': %s\n", work, strerror(errno));
        return PREP_EXIT_FAIL;
    }
    int rc = take_lock(work);
    if (rc != PREP_EXIT_OK) return rc;
    size_t n = strlen(identity);
    char  *text = malloc(n + 2);
    if (!text) return PREP_EXIT_FAIL;
    memcpy(text, identity, n);
    text[n] = '\n';
    md_status s = prep_write_file(run, text, n + 1);
    free(text);
    if (s != MD_OK) {
        fprintf(stderr, "imagenet_prep: %s\n", md_error_message());
        return PREP_EXIT_FAIL;
    }
    return PREP_EXIT_OK;
}

/* Hold OUT/.imagenet_prep/lock (flock) until the process ends, so that two preps
 * never write one folder at once; it names its holder. */
static int take_lock(const char *work) {
    char *path = prep_join(work, "lock");
    if (!path) return PREP_EXIT_FAIL;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        fprintf(stderr, "imagenet_prep: cannot open the lock '%s': %s\n", path, strerror(errno));
        free(path);
        return PREP_EXIT_FAIL;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char    holder[128] = "";
        ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        fprintf(stderr,
                "imagenet_prep: '%s' is in use by another imagenet_prep (%s); wait for it "
                "to finish, or stop it and run the same command again\n",
                path, holder[0] ? holder : "holder unknown");
        close(fd);
        free(path);
        return PREP_EXIT_USAGE;
    }
    char host[64] = "?", text[160];
    gethostname(host, sizeof host - 1);
    int n = snprintf(text, sizeof text, "pid %ld on %s\n", (long)getpid(), host);
    if (ftruncate(fd, 0) == 0) { /* who holds it, for another prep's message: not essential */
        ssize_t w = pwrite(fd, text, (size_t)n, 0);
        (void)w;
    }
    free(path);
    return PREP_EXIT_OK; /* fd stays open: the lock lasts as long as the process */
}

int prep_outdir_claim(const prep_options *o, const char *identity, int *complete) {
    *complete = 0;
    struct stat st;
    if (stat(o->out, &st) == 0 && !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "imagenet_prep: OUT '%s' exists and is not a folder\n", o->out);
        return PREP_EXIT_USAGE;
    }
    int e = mkdir_p(o->out);
    if (e) {
        fprintf(stderr, "imagenet_prep: cannot create OUT '%s': %s\n", o->out, strerror(e));
        return e == ENOTDIR || e == ENOENT ? PREP_EXIT_USAGE : PREP_EXIT_FAIL;
    }
    if (access(o->out, W_OK) != 0) {
        fprintf(stderr, "imagenet_prep: cannot write to OUT '%s': %s\n", o->out, strerror(errno));
        return PREP_EXIT_USAGE;
    }
    char *manifest = prep_join(o->out, "manifest.json"), *work = prep_join(o->out, PREP_WORK_DIR);
    char *run = work ? prep_join(work, "run.json") : NULL;
    int   rc = PREP_EXIT_OK;
    char  entry[256];
    if (!manifest || !work || !run) {
        rc = PREP_EXIT_FAIL;
    } else if (access(manifest, F_OK) == 0) {
        int c = compare_identity(manifest, identity, o->out);
        if (c == 0)
            *complete = 1;
        else
            rc = PREP_EXIT_USAGE; /* another prep's, or not readable as one */
    } else if (access(run, F_OK) == 0) {
        rc = compare_identity(run, identity, o->out) == 0 ? take_lock(work) : PREP_EXIT_USAGE;
        if (rc == PREP_EXIT_OK) {
            remove_stale_tmp(o->out, 1);
            remove_stale_tmp(work, 0);
        }
    } else if (first_entry(o->out, entry, sizeof entry)) {
        fprintf(stderr,
                "imagenet_prep: OUT '%s' is not empty (it holds '%s') and holds no unfinished "
                "prep: give an empty or new folder\n",
                o->out, entry);
        rc = PREP_EXIT_USAGE;
    } else {
        rc = start_work(work, run, identity);
    }
    free(manifest);
    free(run);
    free(work);
    return rc;
}

void prep_outdir_cleanup(const prep_options *o) {
    char *work = prep_join(o->out, PREP_WORK_DIR);
    if (!work) return;
    DIR *d = opendir(work);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char *p = prep_join(work, e->d_name);
            if (p) unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(work);
    free(work);
}
