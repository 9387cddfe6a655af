/* imagenet_prep's command line. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prep.h"

const char *const prep_split_names[NSPLITS] = {"train", "search_val", "val"};

void prep_usage(FILE *f) {
    fprintf(f,
            "usage: [mpirun -np N] imagenet_prep [options] IN OUT\n"
            "       [mpirun -np N] imagenet_prep [options] IN --out OUT\n"
            "\n"
            "Packs an ImageNet-style folder of images into checked shards for\n"
            "`mdenas_mpi search --dataset imagenet`. Every image is decoded, converted to\n"
            "RGB, resized and re-encoded as a baseline 4:2:0 JPEG without metadata.\n"
            "\n"
            "IN holds train/<wnid>/<images> and optionally the validation images: val/<wnid>/\n"
            "<images>, or a flat val/ folder with --val-labels. The classes are the folder\n"
            "names under train/, sorted; a label is a class's line in classes.txt (from 0).\n"
            "\n"
            "OUT (created; must be empty, or an unfinished prep of the same command) gets:\n"
            "  train-NNNNN.mds       search-train split: train minus the held-out images\n"
            "  search_val-NNNNN.mds  held-out images of train (what MdeNAS learns p from)\n"
            "  val-NNNNN.mds         the validation set (for evaluation only)\n"
            "  classes.txt           one wnid per line\n"
            "  sources.tsv           one row per source file: what it was, what became of it\n"
            "  report.json           counts: accepted, converted by kind, rejected by reason\n"
            "  manifest.json         written last: every shard with its count and CRC-32C\n"
            "(formats: docs/formats.md). A folder without manifest.json is unfinished: running\n"
            "the same command again keeps the finished shards and makes the rest; another\n"
            "command on that folder is refused.\n"
            "\n"
            "options:\n"
            "  --short-side S         train images: short side at most S, smaller ones kept\n"
            "                         as they are (default 256)\n"
            "  --val-short-side V     validation images: short side exactly V, for a centre\n"
            "                         crop (default 256)\n"
            "  --quality Q            JPEG quality 1..100 of the stored images (default 90)\n"
            "  --search-val-per-class K\n"
            "                         train images per class held out as search_val (default\n"
            "                         50; at most half of a class); 0: none\n"
            "  --seed N               chooses the held-out images and the shard order of\n"
            "                         train and search_val (default 0; 0..2^53-1)\n"
            "  --images-per-shard P   source files per shard (default 1024): shard k of a split\n"
            "                         holds its sources kP..kP+P-1, less the rejected ones\n"
            "  --val-dir DIR          the validation folder (default IN/val; absent: no val)\n"
            "  --val-labels FILE      labels of a flat validation folder: lines \"FILE WNID\",\n"
            "                         or Kaggle's LOC_val_solution.csv, or the devkit's\n"
            "                         ILSVRC2012_validation_ground_truth.txt (with --val-id-map)\n"
            "  --val-id-map FILE      lines \"ID WNID\" mapping the devkit's class ids (its\n"
            "                         meta.mat order, not sorted wnids) to wnids\n"
            "  --max-pixels N         refuse sources of more than N pixels (default 100000000)\n"
            "  --min-side N           refuse sources with a side under N pixels (default 8)\n"
            "  --max-aspect R         refuse sources whose long side is over R times the short\n"
            "                         one (default 20)\n"
            "  --accept-warnings      keep JPEGs that decode with warnings (corrupt data,\n"
            "                         premature end); by default they are rejected as damaged\n"
            "  --threads T            threads per rank (default: the cores this rank may use)\n"
            "  --quiet                no progress line\n"
            "  -h, --help             this help\n"
            "\n"
            "Bad files never stop the prep: CMYK/YCCK JPEGs and PNGs (whatever their name)\n"
            "are converted; unreadable, empty, truncated, corrupt, non-image, too large,\n"
            "too small and too elongated files are skipped; sources.tsv and report.json\n"
            "say which and why.\n"
            "\n"
            "Under mpirun the ranks share the shards; the output is byte-identical for any\n"
            "number of ranks and threads. Rank 0 prints progress to stderr and a summary.\n"
            "\n"
            "Exit status: 0 done (also with rejected files); 1 an I/O failure (disk full,\n"
            "out of memory); 2 bad arguments, a bad input tree or labels file, or an OUT\n"
            "this command may not use.\n");
}

static int parse_long(const char *s, long long lo, long long hi, long long *out) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!s[0] || *end || errno || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_int_opt(const char *name, const char *s, long long lo, long long hi, int *out,
                         int loud) {
    long long v;
    if (parse_long(s, lo, hi, &v)) {
        if (loud)
            fprintf(stderr, "imagenet_prep: %s '%s' is not a whole number in %lld..%lld\n", name, s,
                    lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int set_string(char **dst, const char *s) {
    free(*dst);
    *dst = strdup(s);
    return *dst ? 0 : -1;
}

void prep_options_free(prep_options *o) {
    free(o->in);
    free(o->out);
    free(o->val_dir);
    free(o->val_labels);
    free(o->val_id_map);
    memset(o, 0, sizeof *o);
}

/* One option with a value at argv[*i]; -1 on a bad value, -2 unknown. */
static int parse_one(const char *a, const char *v, prep_options *o, int loud) {
    long long n;
    if (!strcmp(a, "--short-side")) return parse_int_opt(a, v, 8, 4096, &o->short_side, loud);
    if (!strcmp(a, "--val-short-side"))
        return parse_int_opt(a, v, 8, 4096, &o->val_short_side, loud);
    if (!strcmp(a, "--quality")) return parse_int_opt(a, v, 1, 100, &o->quality, loud);
    if (!strcmp(a, "--search-val-per-class"))
        return parse_int_opt(a, v, 0, 1000000, &o->search_val_per_class, loud);
    if (!strcmp(a, "--images-per-shard"))
        return parse_int_opt(a, v, 1, 1000000, &o->images_per_shard, loud);
    if (!strcmp(a, "--min-side")) return parse_int_opt(a, v, 1, 65535, &o->min_side, loud);
    if (!strcmp(a, "--threads")) return parse_int_opt(a, v, 0, 1024, &o->threads, loud);
    if (!strcmp(a, "--seed") || !strcmp(a, "--max-pixels")) {
        long long hi = (1ll << 53) - 1, lo = !strcmp(a, "--seed") ? 0 : 1;
        if (parse_long(v, lo, hi, &n)) {
            if (loud)
                fprintf(stderr, "imagenet_prep: %s '%s' is not a whole number in %lld..%lld\n", a,
                        v, lo, hi);
            return -1;
        }
        if (!strcmp(a, "--seed"))
            o->seed = (uint64_t)n;
        else
            o->max_pixels = n;
        return 0;
    }
    if (!strcmp(a, "--max-aspect")) {
        char  *end = NULL;
        double r = strtod(v, &end);
        if (!v[0] || *end || !isfinite(r) || r < 1.0 || r > 65535.0) {
            if (loud)
                fprintf(stderr, "imagenet_prep: --max-aspect '%s' is not a number in 1..65535\n",
                        v);
            return -1;
        }
        o->max_aspect = r;
        return 0;
    }
    char **dst = !strcmp(a, "--val-dir")      ? &o->val_dir
                 : !strcmp(a, "--val-labels") ? &o->val_labels
                 : !strcmp(a, "--val-id-map") ? &o->val_id_map
                 : !strcmp(a, "--out")        ? &o->out
                                              : NULL;
    if (!dst) return -2;
    if (!v[0]) {
        if (loud) fprintf(stderr, "imagenet_prep: %s needs a path, got ''\n", a);
        return -1;
    }
    return set_string(dst, v);
}

int prep_parse_args(int argc, char **argv, prep_options *o, int loud, int *done) {
    memset(o, 0, sizeof *o);
    *done = 0;
    o->short_side = 256, o->val_short_side = 256, o->quality = 90;
    o->search_val_per_class = 50, o->images_per_shard = 1024;
    o->max_pixels = 100000000, o->min_side = 8, o->max_aspect = 20.0;
    const char *pos[2] = {NULL, NULL};
    int         npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            if (loud) prep_usage(stdout);
            *done = 1;
            return PREP_EXIT_OK;
        }
        if (!strcmp(a, "--accept-warnings")) {
            o->accept_warnings = 1;
            continue;
        }
        if (!strcmp(a, "--quiet")) {
            o->quiet = 1;
            continue;
        }
        if (a[0] == '-' && a[1]) {
            if (i + 1 >= argc) {
                if (loud)
                    fprintf(stderr, "imagenet_prep: %s needs a value (see imagenet_prep --help)\n",
                            a);
                return PREP_EXIT_USAGE;
            }
            int rc = parse_one(a, argv[i + 1], o, loud);
            if (rc == -2) {
                if (loud)
                    fprintf(stderr,
                            "imagenet_prep: unknown option '%s' (see imagenet_prep --help)\n", a);
                return PREP_EXIT_USAGE;
            }
            if (rc) return PREP_EXIT_USAGE;
            i++;
            continue;
        }
        if (npos == 2) {
            if (loud)
                fprintf(stderr, "imagenet_prep: unexpected argument '%s': give IN and OUT once\n",
                        a);
            return PREP_EXIT_USAGE;
        }
        pos[npos++] = a;
    }
    if (o->out && npos == 2) {
        if (loud)
            fprintf(stderr, "imagenet_prep: OUT given twice ('%s' and --out '%s')\n", pos[1],
                    o->out);
        return PREP_EXIT_USAGE;
    }
    if (o->out && npos == 1) pos[npos++] = o->out;
    if (npos != 2) {
        if (loud)
            fprintf(stderr, "imagenet_prep: give the input folder IN and the output folder OUT "
                            "(see imagenet_prep --help)\n");
        return PREP_EXIT_USAGE;
    }
    if (!pos[0][0] || !pos[1][0]) {
        if (loud) fprintf(stderr, "imagenet_prep: IN and OUT must not be empty\n");
        return PREP_EXIT_USAGE;
    }
    if (o->val_id_map && !o->val_labels) {
        if (loud)
            fprintf(stderr, "imagenet_prep: --val-id-map goes with --val-labels (the devkit's "
                            "ILSVRC2012_validation_ground_truth.txt)\n");
        return PREP_EXIT_USAGE;
    }
    char *out = strdup(pos[1]); /* pos[1] may be o->out itself */
    free(o->out);
    o->out = out;
    if (!o->out || set_string(&o->in, pos[0])) {
        if (loud) fprintf(stderr, "imagenet_prep: out of memory\n");
        return PREP_EXIT_FAIL;
    }
    return PREP_EXIT_OK;
}

void prep_options_json(const prep_options *o, md_json *j) {
    md_json_begin_object(j);
    prep_json_int(j, "short_side", o->short_side);
    prep_json_int(j, "val_short_side", o->val_short_side);
    prep_json_int(j, "quality", o->quality);
    prep_json_int(j, "search_val_per_class", o->search_val_per_class);
    prep_json_int(j, "seed", (long long)o->seed);
    prep_json_int(j, "images_per_shard", o->images_per_shard);
    prep_json_int(j, "max_pixels", o->max_pixels);
    prep_json_int(j, "min_side", o->min_side);
    md_json_key(j, "max_aspect");
    md_json_double(j, o->max_aspect);
    md_json_key(j, "accept_warnings");
    md_json_bool(j, o->accept_warnings);
    md_json_key(j, "encoding");
    md_json_string(j, "baseline JPEG, 4:2:0, optimised Huffman, no metadata");
    md_json_key(j, "encoder");
    md_json_string(j, prep_encoder_name());
    md_json_end_object(j);
}
