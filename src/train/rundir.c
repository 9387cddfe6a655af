/* The run directory (--out) before a run uses it: is it usable, is it empty,
 * and the lock that keeps a second run out of it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "train/search_impl.h"

/* Files a run of ours writes at the top of its directory, whose "<name>.tmp"
 * is a write cut short (a kill during the first config.json write must not
 * turn the directory into someone else's). */
static const char *const run_files[] = {"config.json", "state.json", "genotype.json",
                                        "genotype.txt", "p_heatmap.svg"};

/* A lock file of ours: empty (made, not yet written) or "host ...". */
static int is_our_lock(const char *dir) {
    char        p[700], head[6] = "";
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, MD_RUNDIR_LOCK);
    if (lstat(p, &st) || !S_ISREG(st.st_mode)) return 0; /* (opening a FIFO would block) */
    FILE *f = fopen(p, "rb");
    if (!f) return 0;
    size_t n = fread(head, 1, 5, f);
    fclose(f);
    return n == 0 || (n == 5 && !memcmp(head, "host ", 5));
}

static int is_own_leftover(const char *dir, const char *name) {
    if (!strcmp(name, MD_RUNDIR_LOCK)) return is_our_lock(dir);
    for (size_t i = 0; i < sizeof run_files / sizeof *run_files; i++) {
        size_t n = strlen(run_files[i]);
        if (!strncmp(name, run_files[i], n) && !strcmp(name + n, ".tmp")) return 1;
    }
    return 0;
}

md_status md_rundir_check_empty(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return MD_OK;
        return md_fail(MD_ERR_ARG, "--out %s cannot be read: %s", dir, strerror(errno));
    }
    struct dirent *e;
    char           found[256] = "";
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && !is_own_leftover(dir, e->d_name)) {
            snprintf(found, sizeof found, "%s", e->d_name);
            break;
        }
    closedir(d);
    if (found[0])
        return md_fail(MD_ERR_ARG,
                       "run directory %s is not empty (it holds %s, and perhaps another run); "
                       "nothing was changed. Choose another --out, or empty that directory",
                       dir, found);
    return MD_OK;
}

md_status md_rundir_check_out(const char *dir) {
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            return md_fail(MD_ERR_ARG, "--out %s is not a directory; nothing was changed", dir);
        if (access(dir, W_OK | X_OK))
            return md_fail(MD_ERR_ARG, "--out %s: %s (this run cannot write into it); nothing "
                                       "was changed", dir, strerror(errno));
        return MD_OK;
    }
    if (errno == ENOTDIR)
        return md_fail(MD_ERR_ARG, "--out %s cannot be created: a part of that path is not a "
                                   "directory", dir);
    if (errno != ENOENT) return md_fail(MD_ERR_ARG, "--out %s: %s", dir, strerror(errno));
    /* It will be made: the nearest existing ancestor must take a new entry. */
    char parent[700];
    snprintf(parent, sizeof parent, "%s", dir);
    for (;;) {
        char *slash = strrchr(parent, '/');
        while (slash && slash > parent && slash[1] == '\0') { /* trailing '/' */
            *slash = '\0';
            slash = strrchr(parent, '/');
        }
        if (!slash) snprintf(parent, sizeof parent, ".");
        else if (slash == parent) parent[1] = '\0';
        else *slash = '\0';
        if (stat(parent, &st) == 0) break;
        if (errno != ENOENT || !strcmp(parent, ".") || !strcmp(parent, "/"))
            return md_fail(MD_ERR_ARG, "--out %s cannot be created: %s: %s", dir, parent,
                           strerror(errno));
    }
    if (!S_ISDIR(st.st_mode))
        return md_fail(MD_ERR_ARG, "--out %s cannot be created: %s is not a directory", dir,
                       parent);
    if (access(parent, W_OK | X_OK))
        return md_fail(MD_ERR_ARG, "--out %s cannot be created: %s: %s", dir, parent,
                       strerror(errno));
    return MD_OK;
}

/* flock(2): the kernel drops the lock when the holder dies, however it dies,
 * so a killed job's lock never blocks its requeue. On NFS, Linux maps flock to
 * POSIX locks held by the server (a dead client's lock goes when its lease
 * expires, about 90 s on NFSv4); Lustre needs the `flock` mount option and
 * GPFS supports it. Where the file system has no locks, the run warns and goes
 * on unguarded. The file stays: removing it would let two runs lock two files. */
md_status md_rundir_lock(const char *dir, int *out_fd) {
    char p[700];
    snprintf(p, sizeof p, "%s/%s", dir, MD_RUNDIR_LOCK);
    *out_fd = -1;
    /* O_NONBLOCK: a FIFO put there must not hang the open (it is refused below). */
    int         fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0666);
    struct stat st;
    if (fd < 0) return md_fail(MD_ERR_ARG, "--out %s: cannot create %s: %s", dir, p, strerror(errno));
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return md_fail(MD_ERR_ARG, "--out %s: %s is not a regular file", dir, p);
    }
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        int err = errno;
        if (err == EWOULDBLOCK) {
            char    holder[256] = "";
            ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
            close(fd);
            holder[n > 0 ? n : 0] = '\0';
            char *nl = strchr(holder, '\n');
            if (nl) *nl = '\0';
            return md_fail(MD_ERR_ARG,
                           "run directory %s is in use by another run (%s); nothing was changed. "
                           "Wait for it to end or stop it, or choose another --out",
                           dir, holder[0] ? holder : "holder unknown");
        }
        if (err == ENOLCK || err == EOPNOTSUPP || err == ENOSYS || err == EINVAL) {
            fprintf(stderr, "mdenas: warning: %s cannot be locked (%s): this file system does "
                            "not support locks, so nothing stops a second run on %s\n",
                    p, strerror(err), dir);
            *out_fd = fd;
            return MD_OK;
        }
        close(fd);
        return md_fail(MD_ERR_IO, "cannot lock %s: %s", p, strerror(err));
    }
    char host[128] = "?";
    gethostname(host, sizeof host - 1);
    char      when[32];
    time_t    now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    const char *job = getenv("SLURM_JOB_ID");
    char        text[300];
    int         len = snprintf(text, sizeof text, "host %s, pid %ld%s%.40s, since %s\n", host,
                               (long)getpid(), job ? ", Slurm job " : "", job ? job : "", when);
    if (len < 0 || len >= (int)sizeof text) len = (int)strlen(text);
    if (ftruncate(fd, 0) || pwrite(fd, text, (size_t)len, 0) != len) {
        int err = errno;
        close(fd);
        return md_fail(MD_ERR_IO, "cannot write %s: %s", p, strerror(err));
    }
    *out_fd = fd;
    return MD_OK;
}

void md_rundir_unlock(int fd) {
    if (fd >= 0) close(fd); /* also releases the lock */
}
