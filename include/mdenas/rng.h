/* Counter-based RNG: Philox4x32-10 (Salmon et al., SC'11). A stream is a key;
 * the n-th draw is a pure function of (key, counter), so any stream can be
 * split, skipped ahead or saved in two integers. */
#ifndef MDENAS_RNG_H
#define MDENAS_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t key;     /* the stream */
    uint64_t counter; /* blocks of 4 words consumed */
    uint32_t buf[4];
    int      avail; /* words left in buf */
} md_rng;

/* One Philox4x32-10 block: out = philox(ctr, key). */
void     md_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
void     md_rng_seed(md_rng *r, uint64_t seed, uint64_t stream);
/* A child stream derived from (r's key, id), independent of r's position. */
md_rng   md_rng_split(const md_rng *r, uint64_t id);
uint32_t md_rng_u32(md_rng *r);
float    md_rng_uniform(md_rng *r); /* [0, 1) with 24 random bits */
double   md_rng_uniform_double(md_rng *r); /* [0, 1) with 53 random bits */
float    md_rng_normal(md_rng *r);  /* standard normal, Box-Muller */

#endif
