/* Search options: defaults, presets, checks, and their JSON (config.json and
 * what a checkpoint must agree on). */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdenas/comm.h"
#include "mdenas/supernet.h"
#include "train/search_impl.h"

/* ---- configuration --------------------------------------------------------- */

/* ProxylessNAS's search recipe (MDENAS.md), what both mobile presets share: the
 * mobile space on ImageNet shards, SGD with Nesterov momentum 0.9, cosine to 0,
 * weight decay 4e-5 except on BN, label smoothing 0.1, no clipping. */
static void mobile_recipe(md_search_config *c) {
    snprintf(c->space, sizeof c->space, "mobile");
    snprintf(c->dataset, sizeof c->dataset, "imagenet");
    c->lr_min = 0.0, c->momentum = 0.9, c->nesterov = 1;
    c->weight_decay = 4e-5, c->bn_decay = 0, c->label_smoothing = 0.1;
    c->clip = 1e6;
}

md_status md_search_config_preset(md_search_config *c, const char *preset) {
    memset(c, 0, sizeof *c);
    snprintf(c->dataset, sizeof c->dataset, "fashion-mnist");
    snprintf(c->space, sizeof c->space, "darts");
    c->width_mult = 1.0;
    c->bn_decay = 1;
    c->val_fraction = 0.5; /* DARTS's split of the training set */
    c->epochs = 50;
    c->batch = 256;
    c->lr = 0.025, c->lr_min = 0.001, c->momentum = 0.9, c->weight_decay = 3e-4, c->clip = 5.0;
    c->cells = 8, c->channels = 16, c->nodes = 4;
    c->alpha = 0.01;
    c->rule = MD_UPDATE_PAPER;
    c->crop_pad = 2, c->flip = 1;
    c->image_size = 224;
    c->crop_scale[0] = 0.08, c->crop_scale[1] = 1.0;
    c->seed = 1;
    c->log_every = 20;
    c->ckpt_every = 200;
    c->keep = 3;
    snprintf(c->device, sizeof c->device, "cpu");
    c->tf32 = 1;
    c->cuda_graphs = 1;
    snprintf(c->device_data, sizeof c->device_data, "auto");
    snprintf(c->comm, sizeof c->comm, "auto");
    c->deterministic = 1;
    snprintf(c->out, sizeof c->out, "run");
    if (!preset || !preset[0]) return MD_OK;
    snprintf(c->preset, sizeof c->preset, "%s", preset);
    if (!strcmp(preset, "cifar10")) {
        snprintf(c->dataset, sizeof c->dataset, "cifar10");
        c->crop_pad = 4;
        return MD_OK;
    }
    if (!strcmp(preset, "tiny")) {
        c->subset = 10000;
        c->epochs = 10;
        c->batch = 64;
        c->cells = 5;
        c->channels = 8;
        c->lr = 0.05;
        c->alpha = 0.02;
        c->log_every = 10;
        /* 30 sampling periods of 26 steps (780 steps in all), each validated on 16
         * batches: with one period per epoch (10) every op of an edge was trained
         * about once, and p left 2 to 5 of the 28 edges tied (docs/results.md). */
        c->period_steps = 26;
        c->val_batches = 16;
        return MD_OK;
    }
    if (!strcmp(preset, "imagenet-mobile")) {
        /* Its 50 training images per class held out are imagenet_prep's
         * search_val split (its default --search-val-per-class 50), which the
         * search validates on. */
        mobile_recipe(c);
        c->image_size = 224;
        c->epochs = 120;
        c->batch = 256;
        c->lr = 0.025;
        c->log_every = 50;
        c->ckpt_every = 500;
        return MD_OK;
    }
    if (!strcmp(preset, "mobile-tiny")) {
        /* Minutes on two cores: the mobile skeleton at a quarter of its widths on
         * 64-pixel crops of a small ImageNet-style tree (--data). */
        mobile_recipe(c);
        c->image_size = 64;
        c->crop_scale[0] = 0.25;
        c->width_mult = 0.25;
        c->epochs = 10;
        c->batch = 16;
        c->lr = 0.05;
        c->clip = 5.0; /* this short run keeps the default clip */
        c->alpha = 0.05;
        c->log_every = 5;
        c->ckpt_every = 20;
        return MD_OK;
    }
    /* Final training (`mdenas_mpi train`). */
    c->aux_weight = 0.4, c->drop_path = 0.2, c->dropout = 0.2, c->cutout = 16;
    if (!strcmp(preset, "cifar10-final")) {
        /* DARTS's CIFAR-10 evaluation recipe (MDENAS.md): 20 cells, C=36, batch
         * 96, lr 0.025 cosine to 0, 600 epochs. */
        snprintf(c->dataset, sizeof c->dataset, "cifar10");
        c->cells = 20, c->channels = 36;
        c->epochs = 600, c->batch = 96, c->lr_min = 0.0;
        c->crop_pad = 4, c->log_every = 50, c->ckpt_every = 1000;
        return MD_OK;
    }
    if (!strcmp(preset, "fashion-final")) {
        /* Minutes on two CPU cores: a small network, short training, the DARTS
         * recipe otherwise (no auxiliary head: 28x28 images leave it a 7x7 map). */
        c->subset = 10000;
        c->cells = 5, c->channels = 8;
        c->epochs = 4, c->batch = 64, c->lr = 0.05, c->lr_min = 0.0;
        c->aux_weight = 0.0, c->cutout = 8;
        c->log_every = 25;
        return MD_OK;
    }
    if (!strcmp(preset, "imagenet-mobile-final")) {
        /* ProxylessNAS's ImageNet training of a mobile net: the search recipe's
         * optimiser, 300 epochs, dropout 0.1 before the classifier, no DARTS parts. */
        mobile_recipe(c);
        c->epochs = 300, c->batch = 1024, c->lr = 0.4;
        c->aux_weight = 0.0, c->drop_path = 0.0, c->dropout = 0.1, c->cutout = 0;
        c->crop_scale[0] = 0.08;
        c->log_every = 100, c->ckpt_every = 1000;
        return MD_OK;
    }
    return md_fail(MD_ERR_ARG,
                   "unknown preset '%s' (search: cifar10, tiny, imagenet-mobile, mobile-tiny; "
                   "train: cifar10-final, fashion-final, imagenet-mobile-final)",
                   preset);
}

md_status md_search_config_check(const md_search_config *c) {
    if (strcmp(c->dataset, "fashion-mnist") && strcmp(c->dataset, "cifar10") &&
        strcmp(c->dataset, "synthetic") && strcmp(c->dataset, "imagenet"))
        return md_fail(MD_ERR_ARG,
                       "--dataset '%s': use fashion-mnist, cifar10, synthetic or imagenet",
                       c->dataset);
    if (!strcmp(c->dataset, "cifar10") && !c->data_dir[0])
        return md_fail(MD_ERR_ARG, "--dataset cifar10 needs --data DIR (the folder holding "
                                   "data_batch_1.bin ... test_batch.bin)");
    if (!strcmp(c->dataset, "imagenet") && !c->data_dir[0])
        return md_fail(MD_ERR_ARG, "--dataset imagenet needs --data DIR (a folder that "
                                   "imagenet_prep wrote)");
    if (c->image_size < 8 || c->image_size > 1024)
        return md_fail(MD_ERR_ARG, "--image-size %d must be in 8..1024", c->image_size);
    if (!(c->crop_scale[0] > 0 && c->crop_scale[0] <= c->crop_scale[1] && c->crop_scale[1] <= 1))
        return md_fail(MD_ERR_ARG, "--crop-scale %g,%g: need 0 < LO <= HI <= 1", c->crop_scale[0],
                       c->crop_scale[1]);
    if (c->data_threads < 0 || c->data_threads > 256)
        return md_fail(MD_ERR_ARG, "--data-threads %d must be in 0..256", c->data_threads);
    if (strcmp(c->device_data, "auto") && strcmp(c->device_data, "on") &&
        strcmp(c->device_data, "off"))
        return md_fail(MD_ERR_ARG, "--device-data '%s': use auto, on or off", c->device_data);
    if (!strcmp(c->device_data, "on") && !strcmp(c->dataset, "imagenet"))
        return md_fail(MD_ERR_ARG, "--device-data on holds an in-memory dataset (fashion-mnist, "
                                   "cifar10, synthetic) on the device; imagenet is decoded from "
                                   "its shards on the host (use auto or off)");
    if (c->archs && (!c->train || c->archs < 2 || c->archs > 1000 || c->genotype[0] ||
                     c->epochs < 2))
        return md_fail(MD_ERR_ARG, "rankcheck: --archs %d must be in 2..1000, with --epochs >= 2 "
                                   "and no --genotype (the architectures are drawn at random)",
                       c->archs);
    if (c->train && !c->archs && !c->genotype[0])
        return md_fail(MD_ERR_ARG, "train: --genotype is required (a search's run directory, its "
                                   "genotype.json or net.config, a Genotype(...) string, or a "
                                   "published cell: mdenas, darts_v2)");
    if (!(c->aux_weight >= 0 && c->aux_weight <= 100) || !(c->drop_path >= 0 && c->drop_path < 1) ||
        !(c->dropout >= 0 && c->dropout < 1) || c->cutout < 0 || c->cutout > 1024)
        return md_fail(MD_ERR_ARG, "--aux-weight %g must be in 0..100, --drop-path %g and "
                                   "--dropout %g in [0, 1), --cutout %d in 0..1024",
                       c->aux_weight, c->drop_path, c->dropout, c->cutout);
    if (!c->train && (c->aux_weight > 0 || c->drop_path > 0 || c->dropout > 0 || c->cutout > 0 ||
                      c->genotype[0]))
        return md_fail(MD_ERR_ARG, "--genotype, --aux-weight, --drop-path, --dropout and --cutout "
                                   "are options of `mdenas_mpi train`");
    if (!c->train && !(c->val_fraction > 0.0 && c->val_fraction < 1.0))
        return md_fail(MD_ERR_ARG, "--val-fraction %g must be in (0, 1)", c->val_fraction);
    if (c->epochs < 1) return md_fail(MD_ERR_ARG, "--epochs %d must be >= 1", c->epochs);
    if (c->batch < 2) return md_fail(MD_ERR_ARG, "--batch %d must be >= 2", c->batch);
    if (!(c->lr > 0) || !(c->lr_min >= 0) || c->lr_min > c->lr)
        return md_fail(MD_ERR_ARG, "--lr %g and --lr-min %g: need lr > 0 and 0 <= lr-min <= lr",
                       c->lr, c->lr_min);
    if (!(c->momentum >= 0 && c->momentum < 1) || !(c->weight_decay >= 0) || !(c->clip > 0))
        return md_fail(MD_ERR_ARG,
                       "--momentum %g in [0,1), --weight-decay %g >= 0, --clip %g > 0 required",
                       c->momentum, c->weight_decay, c->clip);
    if (c->subset < 0 || c->period_steps < 0 || c->val_batches < 0 || c->log_every < 1 ||
        c->crop_pad < 0 || c->crop_pad > 16 || c->threads < 0)
        return md_fail(MD_ERR_ARG, "--subset, --period-steps, --val-batches, --threads must be "
                                   ">= 0, --log-every >= 1, --crop-pad in 0..16");
    if (strcmp(c->device, "cpu") && strcmp(c->device, "cuda") && strcmp(c->device, "auto"))
        return md_fail(MD_ERR_ARG, "--device '%s': use cpu, cuda or auto", c->device);
    md_comm_want want;
    MD_TRY(md_comm_want_parse(c->comm, &want));
    if (c->ckpt_every < 0 || c->keep < 2)
        return md_fail(MD_ERR_ARG, "--ckpt-every %d must be >= 0 and --keep %d >= 2",
                       c->ckpt_every, c->keep);
    if (!(c->alpha > 0.0 && c->alpha <= 1.0))
        return md_fail(MD_ERR_ARG, "--alpha %g must be in (0, 1]", c->alpha);
    if (strcmp(c->space, "darts") && strcmp(c->space, "mobile"))
        return md_fail(MD_ERR_ARG, "--space '%s': use darts or mobile", c->space);
    if (strcmp(c->space, "mobile") && (c->space_file[0] || c->candidates[0] || c->width_mult != 1.0))
        return md_fail(MD_ERR_ARG, "--space-file, --candidates and --width-mult are options of "
                                   "--space mobile");
    if (!(c->width_mult >= 0.05 && c->width_mult <= 8.0))
        return md_fail(MD_ERR_ARG, "--width-mult %g must be in 0.05..8", c->width_mult);
    if (!(c->label_smoothing >= 0.0 && c->label_smoothing < 1.0 &&
          (float)c->label_smoothing < 1.0f &&
          (c->label_smoothing == 0.0 || (float)c->label_smoothing >= FLT_MIN)))
        return md_fail(MD_ERR_ARG, "--label-smoothing %g must be in [0, 1)", c->label_smoothing);
    if (c->nesterov && !(c->momentum > 0))
        return md_fail(MD_ERR_ARG, "--nesterov 1 needs --momentum > 0");
    if (c->cells < 1 || c->cells > 64)
        return md_fail(MD_ERR_ARG, "--cells %d must be in 1..64", c->cells);
    if (c->channels < 2 || c->channels % 2 || c->channels > 4096)
        return md_fail(MD_ERR_ARG, "--channels %d must be even, 2..4096", c->channels);
    if (c->nodes < 1 || c->nodes > MD_MAX_NODES)
        return md_fail(MD_ERR_ARG, "--nodes %d must be in 1..%d", c->nodes, MD_MAX_NODES);
    const double finite[] = {c->lr, c->lr_min, c->momentum, c->weight_decay, c->clip, c->alpha};
    for (size_t i = 0; i < sizeof finite / sizeof *finite; i++)
        if (!isfinite(finite[i]))
            return md_fail(MD_ERR_ARG, "--lr, --lr-min, --momentum, --weight-decay, --clip and "
                                       "--alpha must be finite numbers");
    /* The step computes in single precision: a value finite as a double may be
     * infinite, or zero, as a float. */
    static const char *const fname[] = {"--lr", "--lr-min", "--momentum", "--weight-decay",
                                        "--clip"};
    for (size_t i = 0; i < sizeof fname / sizeof *fname; i++) {
        double v = fabs(finite[i]);
        if (v > FLT_MAX || (v > 0 && (float)v < FLT_MIN))
            return md_fail(MD_ERR_ARG, "%s %g is outside single precision (%g .. %g), in which "
                                       "the step computes", fname[i], finite[i], (double)FLT_MIN,
                           (double)FLT_MAX);
    }
    if (c->threads > MD_MAX_THREADS)
        return md_fail(MD_ERR_ARG, "--threads %d: at most %d threads per rank", c->threads,
                       MD_MAX_THREADS);
    if (!c->out[0]) return md_fail(MD_ERR_ARG, "--out: the run directory must be named");
    return MD_OK;
}

/* Options that depend on others: the dataset's folder. */
md_status md_search_config_resolve(md_search_config *c) {
    if (!c->data_dir[0] && !strcmp(c->dataset, "fashion-mnist"))
        snprintf(c->data_dir, sizeof c->data_dir, "%s", MD_FASHION_MNIST_DIR);
    return md_search_config_check(c);
}

static void image_options_json(md_json *j, const md_search_config *c) {
    char scale[64]; /* as --crop-scale takes it */
    snprintf(scale, sizeof scale, "%g,%g", c->crop_scale[0], c->crop_scale[1]);
    md_json_key(j, "image_size"), md_json_int(j, c->image_size);
    md_json_key(j, "crop_scale"), md_json_string(j, scale);
}

void md_search_config_json(md_json *j, const md_search_config *c, int world, int full) {
    md_json_begin_object(j);
    md_json_key(j, "preset"), md_json_string(j, c->preset);
    md_json_key(j, "dataset"), md_json_string(j, c->dataset);
    if (full) md_json_key(j, "data_dir"), md_json_string(j, c->data_dir);
    md_json_key(j, "subset"), md_json_int(j, c->subset);
    md_json_key(j, "val_fraction"), md_json_double(j, c->val_fraction);
    md_json_key(j, "epochs"), md_json_int(j, c->epochs);
    md_json_key(j, "batch"), md_json_int(j, c->batch);
    md_json_key(j, "lr"), md_json_double(j, c->lr);
    md_json_key(j, "lr_min"), md_json_double(j, c->lr_min);
    md_json_key(j, "momentum"), md_json_double(j, c->momentum);
    md_json_key(j, "weight_decay"), md_json_double(j, c->weight_decay);
    md_json_key(j, "clip"), md_json_double(j, c->clip);
    /* Options added with the mobile space: listed only when they differ from
     * what runs before them did, so those runs' saved options stay as they were. */
    if (full || c->label_smoothing != 0.0)
        md_json_key(j, "label_smoothing"), md_json_double(j, c->label_smoothing);
    if (full || c->nesterov) md_json_key(j, "nesterov"), md_json_bool(j, c->nesterov);
    if (full || !c->bn_decay) md_json_key(j, "bn_decay"), md_json_bool(j, c->bn_decay);
    if (full || strcmp(c->space, "darts")) {
        md_json_key(j, "space"), md_json_string(j, c->space);
        md_json_key(j, "space_file"), md_json_string(j, c->space_file);
        md_json_key(j, "width_mult"), md_json_double(j, c->width_mult);
        md_json_key(j, "candidates"), md_json_string(j, c->candidates);
    }
    /* `mdenas_mpi train`'s options (listed for a training run only). */
    if (full || c->train) {
        md_json_key(j, "train"), md_json_bool(j, c->train);
        md_json_key(j, "genotype"), md_json_string(j, c->genotype);
        md_json_key(j, "aux_weight"), md_json_double(j, c->aux_weight);
        md_json_key(j, "drop_path"), md_json_double(j, c->drop_path);
        md_json_key(j, "dropout"), md_json_double(j, c->dropout);
        md_json_key(j, "cutout"), md_json_int(j, c->cutout);
        md_json_key(j, "archs"), md_json_int(j, c->archs);
    }
    /* The DARTS space's options define a DARTS run only (listed in full). */
    if (full || !strcmp(c->space, "darts")) {
        md_json_key(j, "cells"), md_json_int(j, c->cells);
        md_json_key(j, "channels"), md_json_int(j, c->channels);
        md_json_key(j, "nodes"), md_json_int(j, c->nodes);
    }
    md_json_key(j, "alpha"), md_json_double(j, c->alpha);
    md_json_key(j, "update"), md_json_string(j, md_mdl_rule_name(c->rule));
    md_json_key(j, "period_steps"), md_json_int(j, c->period_steps);
    md_json_key(j, "val_batches"), md_json_int(j, c->val_batches);
    md_json_key(j, "crop_pad"), md_json_int(j, c->crop_pad);
    md_json_key(j, "flip"), md_json_bool(j, c->flip);
    /* The ImageNet options define an ImageNet run's result; for the other datasets
     * they are only listed (below), so their runs' saved options stay as they were. */
    int imagenet = !strcmp(c->dataset, "imagenet");
    if (imagenet) image_options_json(j, c);
    md_json_key(j, "seed"), md_json_int(j, (long long)c->seed);
    md_json_key(j, "sync_bn"), md_json_bool(j, c->sync_bn);
    if (!full) {
        md_json_end_object(j);
        return;
    }
    if (!imagenet) image_options_json(j, c);
    /* Options free to change when a run resumes. */
    md_json_key(j, "device"), md_json_string(j, c->device);
    md_json_key(j, "tf32"), md_json_bool(j, c->tf32);
    md_json_key(j, "cuda_graphs"), md_json_bool(j, c->cuda_graphs);
    md_json_key(j, "comm"), md_json_string(j, c->comm);
    md_json_key(j, "deterministic"), md_json_bool(j, c->deterministic);
    md_json_key(j, "threads"), md_json_int(j, c->threads);
    md_json_key(j, "data_threads"), md_json_int(j, c->data_threads);
    md_json_key(j, "device_data"), md_json_string(j, c->device_data);
    md_json_key(j, "log_every"), md_json_int(j, c->log_every);
    md_json_key(j, "ckpt_every"), md_json_int(j, c->ckpt_every);
    md_json_key(j, "keep"), md_json_int(j, c->keep);
    md_json_key(j, "out"), md_json_string(j, c->out);
    md_json_key(j, "world_size"), md_json_int(j, world);
    md_json_end_object(j);
}


md_status md_search_mobile_config(const md_search_config *c, md_mobile_config *out) {
    md_mobile_config_default(out);
    if (c->space_file[0]) {
        /* A space file that cannot be read or parsed is bad input (exit 2). */
        char     *text = NULL;
        md_jvalue v;
        md_status s = md_read_file(c->space_file, &text);
        if (s == MD_OK) {
            s = md_json_parse(text, c->space_file, &v);
            free(text);
        }
        if (s == MD_OK) {
            s = md_mobile_config_parse(&v, c->space_file, 1, out);
            md_json_value_free(&v);
        }
        if (s != MD_OK && s != MD_ERR_NOMEM) {
            char why[600];
            snprintf(why, sizeof why, "%s", md_error_message());
            return md_fail(MD_ERR_ARG, "--space-file: %s", why);
        }
        MD_TRY(s);
    }
    out->width_mult = c->width_mult;
    if (!c->candidates[0]) return MD_OK;
    char list[sizeof c->candidates];
    snprintf(list, sizeof list, "%s", c->candidates);
    out->ncand = 0;
    size_t len = strlen(list);
    if (list[0] == ',' || list[len - 1] == ',' || strstr(list, ",,"))
        return md_fail(MD_ERR_ARG, "--candidates '%s': an empty op name", c->candidates);
    for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (out->ncand == MD_MOBILE_MAX_CANDIDATES)
            return md_fail(MD_ERR_ARG, "--candidates: at most %d ops", MD_MOBILE_MAX_CANDIDATES);
        if (md_mbconv_parse(t, &out->cand[out->ncand]) != MD_OK)
            return md_fail(MD_ERR_ARG, "--candidates: '%s' is not an op (use KxK_MBConvE, e.g. "
                                       "3x3_MBConv6, or zero)", t);
        out->ncand++;
    }
    return MD_OK;
}
