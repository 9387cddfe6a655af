#include "mdenas/rng.h"

#include "core/philox_inline.h"

#include <math.h>

void md_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    md_philox_block(ctr, key, out);
}

void md_rng_seed(md_rng *r, uint64_t seed, uint64_t stream) {
    *r = md_rng_at_key(md_rng_key_seed(seed, stream));
}

md_rng md_rng_split(const md_rng *r, uint64_t id) {
    return md_rng_at_key(md_rng_key_split(r->key, id));
}

uint32_t md_rng_u32(md_rng *r) {
    return md_rng_next_u32(r);
}

float md_rng_uniform(md_rng *r) {
    return (float)(md_rng_u32(r) >> 8) * (1.0f / 16777216.0f);
}

double md_rng_uniform_double(md_rng *r) {
    uint64_t hi = md_rng_u32(r) >> 5, lo = md_rng_u32(r) >> 6;
    return (double)(hi * 67108864ull + lo) * (1.0 / 9007199254740992.0);
}

float md_rng_normal(md_rng *r) {
    double u1 = 1.0 - md_rng_uniform_double(r); /* (0, 1] so log is finite */
    double u2 = md_rng_uniform_double(r);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
