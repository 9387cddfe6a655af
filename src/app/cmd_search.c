/* `mdenas_mpi search` and `mdenas_mpi derive`: option parsing only. */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/commands.h"
#include "mdenas/data.h"
#include "mdenas/search.h"

typedef enum { OPT_INT, OPT_DOUBLE, OPT_STR, OPT_U64, OPT_BOOL, OPT_RULE, OPT_FLAG, OPT_PAIR } opt_type;

typedef struct {
    const char *name;
    opt_type    type;
    size_t      offset, size;
    const char *help;
} option;

#define OPT(n, t, field, h) {n, t, offsetof(md_search_config, field), sizeof(((md_search_config *)0)->field), h}

static const option options[] = {
    OPT("--space", OPT_STR, space, "search space: darts | mobile (MBConv blocks, ProxylessNAS skeleton)"),
    OPT("--space-file", OPT_STR, space_file, "mobile: JSON space file (stages, widths, candidates; docs/usage.md)"),
    OPT("--width-mult", OPT_DOUBLE, width_mult, "mobile: width multiplier (widths rounded to multiples of 8)"),
    OPT("--candidates", OPT_STR, candidates, "mobile: candidate ops, e.g. 3x3_MBConv3,5x5_MBConv6,zero (empty: the space's)"),
    OPT("--dataset", OPT_STR, dataset, "fashion-mnist | cifar10 | synthetic | imagenet"),
    OPT("--data", OPT_STR, data_dir, "dataset folder (Fashion-MNIST: " MD_FASHION_MNIST_DIR "; required for cifar10 and imagenet, the folder imagenet_prep wrote)"),
    OPT("--subset", OPT_INT, subset, "use the first N training images (0: all)"),
    OPT("--val-fraction", OPT_DOUBLE, val_fraction, "part of the training set held out"),
    OPT("--epochs", OPT_INT, epochs, "training epochs"),
    OPT("--batch", OPT_INT, batch, "global batch size"),
    OPT("--lr", OPT_DOUBLE, lr, "initial learning rate (cosine schedule per epoch)"),
    OPT("--lr-min", OPT_DOUBLE, lr_min, "final learning rate"),
    OPT("--momentum", OPT_DOUBLE, momentum, "SGD momentum"),
    OPT("--weight-decay", OPT_DOUBLE, weight_decay, "SGD weight decay"),
    OPT("--clip", OPT_DOUBLE, clip, "global gradient-norm clip"),
    OPT("--label-smoothing", OPT_DOUBLE, label_smoothing, "label smoothing of the training loss, in [0, 1)"),
    OPT("--nesterov", OPT_BOOL, nesterov, "Nesterov momentum, 1 or 0"),
    OPT("--bn-decay", OPT_BOOL, bn_decay, "weight decay on BN gamma/beta too, 1 or 0"),
    OPT("--cells", OPT_INT, cells, "cells in the search network"),
    OPT("--channels", OPT_INT, channels, "initial channels C"),
    OPT("--nodes", OPT_INT, nodes, "intermediate nodes per cell"),
    OPT("--alpha", OPT_DOUBLE, alpha, "step of the multinomial update"),
    OPT("--update", OPT_RULE, rule, "paper | pairwise (the authors' lab code)"),
    OPT("--period-steps", OPT_INT, period_steps, "steps per sampling period (0: one epoch)"),
    OPT("--val-batches", OPT_INT, val_batches, "validation batches per period (0: all)"),
    OPT("--crop-pad", OPT_INT, crop_pad, "random-crop padding in pixels (0: off)"),
    OPT("--flip", OPT_BOOL, flip, "random horizontal flip: 1 or 0"),
    OPT("--image-size", OPT_INT, image_size, "imagenet: input side in pixels (crops resized to it)"),
    OPT("--crop-scale", OPT_PAIR, crop_scale, "imagenet: LO,HI area fraction of RandomResizedCrop"),
    OPT("--data-threads", OPT_INT, data_threads, "decode threads per rank (0: imagenet min(4, cores), else 1)"),
    OPT("--device-data", OPT_STR, device_data, "in-memory datasets held on the device, each batch made there by one op: auto (on with a GPU) | on | off (host loader)"),
    OPT("--seed", OPT_U64, seed, "seed of every random choice"),
    OPT("--device", OPT_STR, device, "cpu | cuda (GPU = local rank mod GPUs) | auto"),
    OPT("--tf32", OPT_BOOL, tf32, "CUDA: TF32 math for fp32 convolutions and GEMMs, 1 or 0"),
    OPT("--cuda-graphs", OPT_BOOL, cuda_graphs, "CUDA, one rank: replay each step as a graph, 1 or 0"),
    OPT("--comm", OPT_STR, comm, "gradients over auto (NCCL when each rank has its own GPU, else host MPI) | mpi | nccl"),
    OPT("--deterministic", OPT_BOOL, deterministic, "CUDA: deterministic cuDNN algorithms (bit-identical resume), 1 or 0 (fastest)"),
    OPT("--threads", OPT_INT, threads, "CPU threads per rank (0: OpenMP default)"),
    OPT("--log-every", OPT_INT, log_every, "steps between progress lines"),
    OPT("--sync-bn", OPT_FLAG, sync_bn, "BN statistics over all ranks (no value)"),
    OPT("--ckpt-every", OPT_INT, ckpt_every, "steps between checkpoints (0: period ends only)"),
    OPT("--keep", OPT_INT, keep, "checkpoints kept, at least 2"),
    OPT("--out", OPT_STR, out, "run directory; run the same command again to resume it"),
    OPT("--genotype", OPT_STR, genotype, "train: the network: a search's run directory, its genotype.json or net.config, a Genotype(...) string, or mdenas | darts_v2"),
    OPT("--aux-weight", OPT_DOUBLE, aux_weight, "train, DARTS: auxiliary head's loss weight (0: no head)"),
    OPT("--drop-path", OPT_DOUBLE, drop_path, "train, DARTS: drop-path probability, ramped linearly from 0"),
    OPT("--dropout", OPT_DOUBLE, dropout, "train: dropout before the classifier"),
    OPT("--cutout", OPT_INT, cutout, "train: cutout square side in pixels (0: off)"),
    OPT("--archs", OPT_INT, archs, "rankcheck: random architectures to train"),
};
enum { NOPT = sizeof options / sizeof *options };

static void show_value(const option *o, const md_search_config *c, char *buf, size_t len) {
    const char *p = (const char *)c + o->offset;
    switch (o->type) {
    case OPT_INT:
    case OPT_BOOL: snprintf(buf, len, "%d", *(const int *)p); break;
    case OPT_FLAG: snprintf(buf, len, "%s", *(const int *)p ? "on" : "off"); break;
    case OPT_DOUBLE: snprintf(buf, len, "%g", *(const double *)p); break;
    case OPT_STR: snprintf(buf, len, "%s", p[0] ? p : "(none)"); break;
    case OPT_U64: snprintf(buf, len, "%llu", (unsigned long long)*(const uint64_t *)p); break;
    case OPT_RULE: snprintf(buf, len, "%s", md_mdl_rule_name(*(const md_mdl_rule *)p)); break;
    case OPT_PAIR:
        snprintf(buf, len, "%g,%g", ((const double *)p)[0], ((const double *)p)[1]);
        break;
    }
}

void md_train_usage(FILE *f) {
    md_search_config d;
    md_search_config_preset(&d, "");
    d.train = 1;
    fprintf(f, "usage: mdenas_mpi train --genotype G [--preset NAME] [options]\n\n"
               "Trains the network of a genotype from scratch on the whole training set and\n"
               "reports test top-1/top-5 every epoch. G: a search's run directory (its\n"
               "genotype.json; a mobile search's net.config), either file, a DARTS\n"
               "Genotype(...) string, or a published cell: mdenas (the MdeNAS authors'\n"
               "CIFAR-10 cell), darts_v2.\n"
               "  --preset NAME          cifar10-final: DARTS's evaluation network and recipe:\n"
               "                         20 cells, C=36, batch 96, SGD 0.025 cosine to 0,\n"
               "                         momentum 0.9, wd 3e-4, clip 5, auxiliary head 0.4,\n"
               "                         cutout 16, drop-path 0.2, dropout 0.2, 600 epochs on\n"
               "                         CIFAR-10 (--data DIR);\n"
               "                         fashion-final: minutes on 2 CPU cores: 5 cells, C=8,\n"
               "                         4 epochs on 10000 Fashion-MNIST images, cutout 8;\n"
               "                         imagenet-mobile-final: a mobile net (--genotype of a\n"
               "                         mobile search) on ImageNet shards, ProxylessNAS's\n"
               "                         recipe (Nesterov, lr 0.4 cosine, batch 1024, wd 4e-5,\n"
               "                         label smoothing 0.1, dropout 0.1, 300 epochs).\n"
               "                         Options after it override it.\n"
               "Writes weights.safetensors (DARTS NetworkCIFAR or ProxylessNAS names,\n"
               "docs/formats.md), net.json and result.json into --out; mdenas_mpi eval RUNDIR\n"
               "evaluates it again. Checkpoints, signals (exit 75) and resuming by running the\n"
               "same command again work as for search. Search-only options are ignored.\n");
    for (int i = 0; i < NOPT; i++) {
        char v[64];
        show_value(&options[i], &d, v, sizeof v);
        fprintf(f, "  %-22s %s (default %s)\n", options[i].name, options[i].help, v);
    }
}

void md_rankcheck_usage(FILE *f) {
    fprintf(f, "usage: mdenas_mpi rankcheck --archs K --epochs E [--preset NAME] [options]\n\n"
               "MdeNAS's performance-ranking hypothesis (its Fig. 1): trains K DARTS genotypes\n"
               "drawn uniformly from the space (from --seed) for E epochs each, as `train` does\n"
               "(its presets and options; fashion-final is the small CPU one), in\n"
               "<out>/arch-NNN, evaluating each on the test split every epoch; then writes\n"
               "Kendall's tau-b between each epoch's ranking and the last epoch's to\n"
               "<out>/rankcheck.json and a plot to <out>/rankcheck.svg. Rerunning the same\n"
               "command resumes it (finished architectures are kept). Options: those of\n"
               "`mdenas_mpi train --help` (no --genotype) and --archs K.\n");
}

void md_search_usage(FILE *f) {
    md_search_config d;
    md_search_config_preset(&d, "");
    fprintf(f, "usage: mdenas_mpi search [--preset NAME] [options]\n\n"
               "Runs the MdeNAS search on the DARTS space (cells) or, with --space mobile, on\n"
               "the MobileNet/ProxylessNAS space (MBConv blocks), and writes a run directory.\n"
               "  --preset NAME          cifar10: 8 cells, C=16, batch 256, lr 0.025 cosine,\n"
               "                         momentum 0.9, wd 3e-4, clip 5 on CIFAR-10 (--data DIR);\n"
               "                         tiny: a few-minute CPU run on a Fashion-MNIST subset;\n"
               "                         imagenet-mobile: --space mobile on ImageNet shards\n"
               "                         (--data DIR from imagenet_prep), ProxylessNAS's recipe:\n"
               "                         224 px, batch 256, Nesterov SGD lr 0.025 cosine, wd 4e-5\n"
               "                         (none on BN), label smoothing 0.1, 120 epochs;\n"
               "                         mobile-tiny: the mobile space at width 0.25, 64 px, a\n"
               "                         few minutes on 2 cores on a small prepared folder.\n"
               "                         Options after it override it.\n"
               "Under mpirun/srun, --batch is the global batch, split over the ranks.\n"
               "Running the same command again resumes the run in --out from its newest\n"
               "valid checkpoint. SIGUSR1/SIGTERM/SIGINT: checkpoint and exit with status 75.\n"
               "One run per directory: a run directory in use by another run is refused.\n");
    for (int i = 0; i < NOPT; i++) {
        char v[64];
        show_value(&options[i], &d, v, sizeof v);
        fprintf(f, "  %-22s %s (default %s)\n", options[i].name, options[i].help, v);
    }
}

static int parse_value(const option *o, const char *s, md_search_config *c) {
    char *p = (char *)c + o->offset, *end = NULL;
    errno = 0;
    switch (o->type) {
    case OPT_INT:
    case OPT_BOOL: {
        long v = strtol(s, &end, 10);
        if (!*s || *end || errno || v < INT_MIN || v > INT_MAX) return -1;
        if (o->type == OPT_BOOL && v != 0 && v != 1) return -1;
        *(int *)p = (int)v;
        return 0;
    }
    case OPT_DOUBLE: {
        double v = strtod(s, &end);
        if (!*s || *end || errno) return -1;
        *(double *)p = v;
        return 0;
    }
    case OPT_U64: {
        if (*s == '-') return -1;
        unsigned long long v = strtoull(s, &end, 10);
        if (!*s || *end || errno) return -1;
        *(uint64_t *)p = v;
        return 0;
    }
    case OPT_STR:
        if (strlen(s) >= o->size) return -1;
        memcpy(p, s, strlen(s) + 1);
        return 0;
    case OPT_RULE: return md_mdl_rule_parse(s, (md_mdl_rule *)p) == MD_OK ? 0 : -1;
    case OPT_PAIR: { /* "LO,HI" */
        double lo = strtod(s, &end);
        if (end == s || *end != ',' || errno) return -1;
        const char *q = end + 1;
        double      hi = strtod(q, &end);
        if (end == q || *end || errno) return -1;
        ((double *)p)[0] = lo, ((double *)p)[1] = hi;
        return 0;
    }
    case OPT_FLAG: return -1;
    }
    return -1;
}

/* 0: parsed; 2: usage error (message printed). */
int md_search_parse(int argc, char **argv, int train, md_search_config *c) {
    const char *preset = "", *cmd = train == 2 ? "rankcheck" : train ? "train" : "search";
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--preset")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "mdenas_mpi %s: --preset needs a value\n", cmd);
                return 2;
            }
            preset = argv[++i];
        }
    if (md_search_config_preset(c, preset) != MD_OK) {
        fprintf(stderr, "mdenas_mpi %s: %s\n", cmd, md_error_message());
        return 2;
    }
    c->train = train != 0;
    if (!train) /* the training presets' DARTS parts mean nothing to a search */
        c->aux_weight = c->drop_path = c->dropout = 0, c->cutout = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--preset")) {
            i++;
            continue;
        }
        const option *o = NULL;
        for (int k = 0; k < NOPT && !o; k++)
            if (!strcmp(argv[i], options[k].name)) o = &options[k];
        if (!o) {
            fprintf(stderr, "mdenas_mpi %s: unknown option '%s'\n\n", cmd, argv[i]);
            if (train) md_train_usage(stderr);
            else md_search_usage(stderr);
            return 2;
        }
        if (o->type == OPT_FLAG) {
            *(int *)((char *)c + o->offset) = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "mdenas_mpi %s: %s needs a value (%s)\n", cmd, o->name, o->help);
            return 2;
        }
        if (parse_value(o, argv[++i], c)) {
            fprintf(stderr, "mdenas_mpi %s: %s '%s' is not a valid value (%s)\n", cmd, o->name,
                    argv[i], o->help);
            return 2;
        }
    }
    if (train == 2 && c->archs <= 0) {
        fprintf(stderr, "mdenas_mpi rankcheck: --archs K (the random architectures to train) "
                        "is required\n");
        return 2;
    }
    if (md_search_config_resolve(c) != MD_OK) {
        fprintf(stderr, "mdenas_mpi %s: %s\n", cmd, md_error_message());
        return 2;
    }
    return 0;
}

/* One word of a command line as a POSIX shell reads it back. */
static void put_word(FILE *f, const char *w) {
    int plain = *w != '\0';
    for (const char *q = w; *q && plain; q++)
        plain = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%",
                       *q) != NULL;
    if (plain) {
        fputs(w, f);
        return;
    }
    fputc('\'', f);
    for (const char *q = w; *q; q++)
        if (*q == '\'') fputs("'\\''", f);
        else fputc(*q, f);
    fputc('\'', f);
}

void md_search_print_resume(FILE *f, const char *prog, int argc, char **argv,
                            const md_search_config *c, int world) {
    char cwd[4096] = "", out[8192];
    int  have_cwd = getcwd(cwd, sizeof cwd) != NULL;
    if (c->out[0] == '/' || !have_cwd) snprintf(out, sizeof out, "%s", c->out);
    else snprintf(out, sizeof out, "%s/%s", cwd, c->out);
    if (world > 1) /* the launcher's own options are not known here */
        fprintf(f, "to resume, run this under the same launcher (mpirun or srun with its "
                   "options; any number of ranks):\n  ");
    else
        fprintf(f, "to resume, run:\n  ");
    if (have_cwd) { /* relative paths (program, --data) resolve from here */
        fputs("cd ", f);
        put_word(f, cwd);
        fputs(" && ", f);
    }
    put_word(f, prog);
    fputs(c->archs ? " rankcheck" : c->train ? " train" : " search", f);
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            i++;
            continue;
        }
        fputc(' ', f);
        put_word(f, argv[i]);
    }
    fputs(" --out ", f);
    put_word(f, out);
    fputc('\n', f);
    fflush(f);
}
