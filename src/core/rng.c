#include "mdenas/rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static void mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo) {
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

void md_philox4x32(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, lo0, hi1, lo1;
        mulhilo(PHILOX_M0, c0, &hi0, &lo0);
        mulhilo(PHILOX_M1, c2, &hi1, &lo1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

/* SplitMix64 finaliser: spreads (seed, stream) into a well-mixed 64-bit key. */
static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void md_rng_seed(md_rng *r, uint64_t seed, uint64_t stream) {
    r->key = mix64(mix64(seed) ^ stream);
    r->counter = 0;
    r->avail = 0;
}

md_rng md_rng_split(const md_rng *r, uint64_t id) {
    md_rng c;
    c.key = mix64(r->key ^ mix64(id + 0x632BE59BD9B4E019ull));
    c.counter = 0;
    c.avail = 0;
    return c;
}

uint32_t md_rng_u32(md_rng *r) {
    if (r->avail == 0) {
        uint32_t ctr[4] = {(uint32_t)r->counter, (uint32_t)(r->counter >> 32), 0, 0};
        uint32_t key[2] = {(uint32_t)r->key, (uint32_t)(r->key >> 32)};
        md_philox4x32(ctr, key, r->buf);
        r->counter++;
        r->avail = 4;
    }
    return r->buf[4 - r->avail--];
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
