#include "io/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

md_status md_atomic_open(md_atomic_file *a, const char *path) {
    memset(a, 0, sizeof *a);
    if (!path || !*path) return md_fail(MD_ERR_ARG, "atomic write: empty path");
    size_t n = strlen(path);
    a->path = malloc(n + 1);
    a->tmp = malloc(n + 5);
    if (!a->path || !a->tmp) {
        md_atomic_abort(a);
        return md_fail(MD_ERR_NOMEM, "atomic write: names for '%s'", path);
    }
    memcpy(a->path, path, n + 1);
    memcpy(a->tmp, path, n);
    memcpy(a->tmp + n, ".tmp", 5);
    a->f = fopen(a->tmp, "wb");
    if (!a->f) {
        int err = errno;
        md_atomic_abort(a);
        return md_fail(MD_ERR_IO, "cannot create '%s.tmp': %s (does the directory exist?)", path,
                       strerror(err));
    }
    return MD_OK;
}

void md_atomic_abort(md_atomic_file *a) {
    if (a->f) {
        fclose(a->f);
        remove(a->tmp);
    }
    free(a->path);
    free(a->tmp);
    memset(a, 0, sizeof *a);
}

/* Some file systems (and /proc-like ones) refuse fsync on a directory with
 * EINVAL; the rename has still happened, so that is not an error. */
static md_status fsync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char       *dir;
    if (!slash) {
        dir = malloc(2);
        if (dir) strcpy(dir, ".");
    } else {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        dir = malloc(n + 1);
        if (dir) {
            memcpy(dir, path, n);
            dir[n] = '\0';
        }
    }
    if (!dir) return md_fail(MD_ERR_NOMEM, "atomic write: directory name of '%s'", path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
        int       err = errno;
        md_status s =
            md_fail(MD_ERR_IO, "cannot open directory '%s' to fsync it: %s", dir, strerror(err));
        free(dir);
        return s;
    }
    md_status s = MD_OK;
    if (fsync(fd) != 0 && errno != EINVAL && errno != EROFS)
        s = md_fail(MD_ERR_IO, "fsync of directory '%s' failed: %s", dir, strerror(errno));
    close(fd);
    free(dir);
    return s;
}

md_status md_atomic_commit(md_atomic_file *a) {
    if (!a->f) return md_fail(MD_ERR_ARG, "atomic write: commit without an open file");
    int bad = 0, err = 0;
    if (ferror(a->f)) {
        bad = 1;
        err = EIO;
    } else if (fflush(a->f) != 0 || fsync(fileno(a->f)) != 0) {
        bad = 1;
        err = errno;
    }
    if (fclose(a->f) != 0 && !bad) {
        bad = 1;
        err = errno;
    }
    a->f = NULL;
    if (bad) {
        md_status s =
            md_fail(MD_ERR_IO, "writing '%s' failed: %s (disk full?)", a->tmp, strerror(err));
        remove(a->tmp);
        md_atomic_abort(a);
        return s;
    }
    if (rename(a->tmp, a->path) != 0) {
        err = errno;
        md_status s =
            md_fail(MD_ERR_IO, "cannot rename '%s' to '%s': %s", a->tmp, a->path, strerror(err));
        remove(a->tmp);
        md_atomic_abort(a);
        return s;
    }
    md_status s = fsync_parent_dir(a->path);
    md_atomic_abort(a);
    return s;
}

md_status md_atomic_write(const char *path, const void *data, size_t len) {
    md_atomic_file a;
    MD_TRY(md_atomic_open(&a, path));
    if (len && fwrite(data, 1, len, a.f) != len) {
        int       err = errno;
        md_status s =
            md_fail(MD_ERR_IO, "writing %zu bytes to '%s' failed: %s", len, a.tmp, strerror(err));
        md_atomic_abort(&a);
        return s;
    }
    return md_atomic_commit(&a);
}
