/* The one implementation of the counter-based RNG's arithmetic (Philox4x32-10,
 * the SplitMix64 key mixing, stream splitting, unbiased bounded draws), as
 * static inline functions that compile as host C and as CUDA device code
 * (MD_HD is __host__ __device__ under nvcc). src/core/rng.c's public functions
 * are thin wrappers of these; the loader's augmentation and the backends'
 * augment_u8 op draw through the same code, so a batch made on a GPU is the
 * host loader's bit for bit. */
#ifndef MDENAS_PHILOX_INLINE_H
#define MDENAS_PHILOX_INLINE_H

#include <stdint.h>

#include "mdenas/rng.h"

#ifdef __CUDACC__
#define MD_HD __host__ __device__
#else
#define MD_HD
#endif

#define MD_PHILOX_M0 0xD2511F53u
#define MD_PHILOX_M1 0xCD9E8D57u
#define MD_PHILOX_W0 0x9E3779B9u
#define MD_PHILOX_W1 0xBB67AE85u

/* One Philox4x32-10 block: out = philox(ctr, key). */
static inline MD_HD void md_philox_block(const uint32_t ctr[4], const uint32_t key[2],
                                         uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)MD_PHILOX_M0 * c0, p1 = (uint64_t)MD_PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += MD_PHILOX_W0;
        k1 += MD_PHILOX_W1;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

/* SplitMix64 finaliser: spreads (seed, stream) into a well-mixed 64-bit key. */
static inline MD_HD uint64_t md_rng_mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The key of stream (seed, stream): md_rng_seed's. */
static inline MD_HD uint64_t md_rng_key_seed(uint64_t seed, uint64_t stream) {
    return md_rng_mix64(md_rng_mix64(seed) ^ stream);
}

/* The key of child `id` of the stream with key `key`: md_rng_split's. */
static inline MD_HD uint64_t md_rng_key_split(uint64_t key, uint64_t id) {
    return md_rng_mix64(key ^ md_rng_mix64(id + 0x632BE59BD9B4E019ull));
}

/* A stream at its start. */
static inline MD_HD md_rng md_rng_at_key(uint64_t key) {
    md_rng r;
    r.key = key;
    r.counter = 0;
    r.buf[0] = r.buf[1] = r.buf[2] = r.buf[3] = 0;
    r.avail = 0;
    return r;
}

/* The next 32 random bits of r. */
static inline MD_HD uint32_t md_rng_next_u32(md_rng *r) {
    if (r->avail == 0) {
        uint32_t ctr[4] = {(uint32_t)r->counter, (uint32_t)(r->counter >> 32), 0, 0};
        uint32_t key[2] = {(uint32_t)r->key, (uint32_t)(r->key >> 32)};
        md_philox_block(ctr, key, r->buf);
        r->counter++;
        r->avail = 4;
    }
    return r->buf[4 - r->avail--];
}

/* Uniform in [0, bound) without modulo bias; bound >= 1. */
static inline MD_HD uint32_t md_rng_below(md_rng *r, uint32_t bound) {
    uint32_t reject_below = (uint32_t)(-bound) % bound; /* 2^32 mod bound */
    for (;;) {
        uint32_t u = md_rng_next_u32(r);
        if (u >= reject_below) return u % bound;
    }
}

#endif
