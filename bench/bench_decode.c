/* ImageNet training-sample preparation on one thread: JPEG region decode +
 * RandomResizedCrop(224) + horizontal flip + ToTensor/Normalize to float CHW,
 * the work of the ImageNet source per sample (src/data/jpeg.c).
 *
 *   bench_decode [--seconds S] [--size N] [--full] FILE.jpg...
 *
 * The files are read into memory first (the source reads mmapped shards) and
 * their sizes taken from the headers (a shard's index holds them). With --full
 * each image is only decoded whole at full resolution (the tjbench comparison).
 * Prints one JSON line. bench/decode_bench.sh runs it beside torchvision and tjbench. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data/jpeg.h"

typedef struct {
    uint8_t *bytes;
    size_t   n;
    int      w, h;
    char     name[256];
} image;

static double clock_s(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static double now(void) {
    return clock_s(CLOCK_MONOTONIC);
}
/* CPU time of this process: on a shared machine the rate per CPU second is the
 * steadier number (time slices lost to other work are not counted). */
static double cpu_now(void) {
    return clock_s(CLOCK_PROCESS_CPUTIME_ID);
}

static int load(const char *path, image *im) {
    FILE *f = fopen(path, "rb");
    if (!f) return fprintf(stderr, "bench_decode: cannot open %s\n", path), 1;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    im->bytes = malloc(size > 0 ? (size_t)size : 1);
    im->n = fread(im->bytes, 1, (size_t)(size > 0 ? size : 0), f);
    fclose(f);
    snprintf(im->name, sizeof im->name, "%s", path);
    if (md_jpeg_info(im->bytes, im->n, &im->w, &im->h, path) != MD_OK)
        return fprintf(stderr, "bench_decode: %s\n", md_error_message()), 1;
    return 0;
}

int main(int argc, char **argv) {
    double seconds = 3.0;
    int    size = 224, full = 0, first = 1;
    for (; first < argc && argv[first][0] == '-'; first++) {
        if (!strcmp(argv[first], "--seconds") && first + 1 < argc)
            seconds = atof(argv[++first]);
        else if (!strcmp(argv[first], "--size") && first + 1 < argc)
            size = atoi(argv[++first]);
        else if (!strcmp(argv[first], "--full"))
            full = 1;
        else
            return fprintf(stderr,
                           "usage: bench_decode [--seconds S] [--size N] [--full] FILE.jpg...\n"),
                   2;
    }
    int n = argc - first;
    if (n <= 0 || size <= 0)
        return fprintf(stderr,
                       "usage: bench_decode [--seconds S] [--size N] [--full] FILE.jpg...\n"),
               2;
    image *ims = calloc((size_t)n, sizeof *ims);
    double pixels = 0;
    for (int i = 0; i < n; i++) {
        if (load(argv[first + i], &ims[i])) return 1;
        pixels += (double)ims[i].w * ims[i].h;
    }
    md_jpeg_decoder *d;
    if (md_jpeg_decoder_create(&d) != MD_OK) return fprintf(stderr, "%s\n", md_error_message()), 1;
    const float   mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    uint8_t      *rgb = malloc((size_t)size * size * 3);
    float        *chw = malloc((size_t)size * size * 3 * sizeof(float));
    md_rrc_params p = MD_RRC_DEFAULT;
    md_rng        r;
    md_rng_seed(&r, 1, 0);
    long   done = 0;
    double checksum = 0, t0 = now(), t = t0, c0 = cpu_now();
    /* Whole passes over the set, so every image weighs the same. */
    while (t - t0 < seconds) {
        for (int i = 0; i < n; i++) {
            image    *im = &ims[i];
            md_status s;
            if (full) {
                uint8_t *out;
                int      w, h;
                s = md_jpeg_decode_full(d, im->bytes, im->n, &out, &w, &h, im->name);
                if (s == MD_OK) checksum += out[(size_t)w * h * 3 / 2], free(out);
            } else {
                md_crop c = md_rrc_crop(im->w, im->h, &p, &r);
                int     mirror = (int)(md_rng_u32(&r) & 1);
                s = md_jpeg_decode_crop(d, im->bytes, im->n, c, size, size, mirror, rgb, im->name);
                if (s == MD_OK) {
                    md_rgb_to_chw_normalized(rgb, size, size, mean, std, chw);
                    checksum += chw[size * size + size / 2];
                }
            }
            if (s != MD_OK) return fprintf(stderr, "bench_decode: %s\n", md_error_message()), 1;
            done++;
        }
        t = now();
    }
    double el = t - t0, cpu = cpu_now() - c0;
    printf("{\"bench\":\"decode\",\"impl\":\"mdenas\",\"mode\":\"%s\",\"threads\":1,\"files\":%d,"
           "\"mean_pixels\":%.0f,\"size\":%d,\"images\":%ld,\"seconds\":%.3f,\"images_per_s\":%.1f,"
           "\"cpu_seconds\":%.3f,\"images_per_cpu_s\":%.1f,\"checksum\":%.3f}\n",
           full ? "full_decode" : "rrc_flip_normalize", n, pixels / n, size, done, el, done / el,
           cpu, done / cpu, checksum);
    md_jpeg_decoder_destroy(d);
    for (int i = 0; i < n; i++)
        free(ims[i].bytes);
    free(ims), free(rgb), free(chw);
    return 0;
}
