/* Private to src/io: write a file so that readers see either the old contents
 * or the complete new ones, never a torn file, even after a crash. The text
 * goes to "<path>.tmp", which is flushed, fsynced, renamed over <path>, and
 * the directory is fsynced so the rename itself survives a power cut. */
#ifndef MDENAS_IO_ATOMIC_FILE_H
#define MDENAS_IO_ATOMIC_FILE_H

#include <stddef.h>
#include <stdio.h>

#include "mdenas/error.h"

typedef struct {
    FILE *f;    /* write here between open and commit */
    char *path; /* final name */
    char *tmp;  /* "<path>.tmp" */
} md_atomic_file;

md_status md_atomic_open(md_atomic_file *a, const char *path);
/* Flush, fsync, rename, fsync the directory; on failure the temp file is removed
 * and <path> is untouched. Always releases `a`. */
md_status md_atomic_commit(md_atomic_file *a);
/* Give up: close and remove the temp file. Safe on a zeroed or released `a`. */
void md_atomic_abort(md_atomic_file *a);
/* md_atomic_write (the whole of data[0, len) as the new contents of path) is
 * public, in mdenas/runlog.h. */
#include "mdenas/runlog.h"

#endif
