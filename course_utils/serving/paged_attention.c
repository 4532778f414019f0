/* Decode attention read in place from a paged KV pool: one call for every decoding sequence.
 *
 * Each decoding sequence has one new query per head and attends over its whole context, whose
 * keys and values sit in fixed-size blocks scattered over the pool; its block table says which.
 * Gathering the blocks into a contiguous tensor first (what the pure-PyTorch path does) copies
 * the whole context once per layer and step; here each key and value row is read where it lies.
 *
 * Layouts (all float32, C-contiguous):
 *   q       (n, heads, dim)          the decoding sequences' rotated queries
 *   k, v    (slots, kv_heads, dim)   one layer of the pool; slot = block * block_size + offset
 *   tables  (n, width)               each sequence's blocks (entries past its length unused)
 *   lens    (n,)                     each sequence's context length, its new token included
 *   out     (n, heads, dim)
 * Query head h reads key-value head h / (heads / kv_heads) (grouped-query attention).
 * Nothing outside the pool is ever read: a sequence whose length exceeds its table or whose table
 * names a block outside the pool is skipped. Returns 0; 1 when scratch memory could not be
 * allocated, 2 when a sequence was skipped (out is then incomplete).
 *
 * Speed (all arithmetic stays float32): eight floats at a time through the compiler's vector types
 * (simd.h), one head at a time with its query and a chunk of its output held in registers, four
 * independent sums per dot product, the head size made a compile-time constant for the common 64
 * and 128, a vectorised exp in the softmax, and each key or value row fetched a few tokens before
 * it is used, since the rows of a scattered block table defeat the hardware prefetcher at every
 * block boundary.
 */
#include <stdint.h>
#include <stdlib.h>

#include "simd.h"

enum { AHEAD = 4 }; /* how many tokens ahead a row is prefetched */

static inline void prefetch_row(const float *row, int64_t floats) {
    for (int64_t b = 0; b < floats * (int64_t)sizeof(float); b += 64) __builtin_prefetch((const char *)row + b);
}

/* One sequence, one head at a time: scores (len) = q . k * scale, softmax, out = scores . v.
 * at[t] is the offset of token t's row in k and v. The head's query stays in registers while its
 * keys stream past, and its output is summed in registers a chunk of 32 channels at a time while
 * the values stream past, so each key and value is read once per head and nothing else is
 * written per token (the heads of a group re-read their shared rows from the cache). Always
 * inlined, so that a constant dim unrolls. */
static inline __attribute__((always_inline)) void attend_one(
    const float *restrict q, const float *restrict k, const float *restrict v, const int64_t *restrict at,
    int64_t len, int64_t heads, int64_t kv_heads, const int64_t dim, float scale, float *restrict scores,
    float *restrict out) {
    const int64_t group = heads / kv_heads;
    for (int64_t h = 0; h < heads; h++) {
        const float *qh = q + h * dim, *kh = k + (h / group) * dim, *vh = v + (h / group) * dim;
        float *oh = out + h * dim, top = -INFINITY;
        for (int64_t t = 0; t < len; t++) {
            prefetch_row(kh + at[t + AHEAD < len ? t + AHEAD : len - 1], dim);
            const float *kt = kh + at[t];
            v8 a0 = splat(0.0f), a1 = splat(0.0f), a2 = splat(0.0f), a3 = splat(0.0f);
            int64_t i = 0;
            for (; i + 32 <= dim; i += 32) {
                a0 += load8(qh + i) * load8(kt + i);
                a1 += load8(qh + i + 8) * load8(kt + i + 8);
                a2 += load8(qh + i + 16) * load8(kt + i + 16);
                a3 += load8(qh + i + 24) * load8(kt + i + 24);
            }
            for (; i + 8 <= dim; i += 8) a0 += load8(qh + i) * load8(kt + i);
            float acc = sum8((a0 + a1) + (a2 + a3));
            for (; i < dim; i++) acc += qh[i] * kt[i];
            scores[t] = acc * scale;
            top = scores[t] > top ? scores[t] : top;
        }
        v8 totals = splat(0.0f); /* softmax over the context (the largest score subtracted first) */
        int64_t t = 0;
        for (; t + 8 <= len; t += 8) {
            const v8 e = exp8(load8(scores + t) - splat(top));
            store8(scores + t, e);
            totals += e;
        }
        float total = sum8(totals);
        for (; t < len; t++) {
            scores[t] = expf(scores[t] - top);
            total += scores[t];
        }
        const float inverse = 1.0f / total;
        int64_t i = 0;
        for (; i + 32 <= dim; i += 32) { /* 32 output channels summed in four registers over the context */
            v8 o0 = splat(0.0f), o1 = splat(0.0f), o2 = splat(0.0f), o3 = splat(0.0f);
            for (t = 0; t < len; t++) {
                if (i == 0) prefetch_row(vh + at[t + AHEAD < len ? t + AHEAD : len - 1], dim);
                const v8 p = splat(scores[t]);
                const float *vt = vh + at[t] + i;
                o0 += p * load8(vt);
                o1 += p * load8(vt + 8);
                o2 += p * load8(vt + 16);
                o3 += p * load8(vt + 24);
            }
            store8(oh + i, o0 * splat(inverse));
            store8(oh + i + 8, o1 * splat(inverse));
            store8(oh + i + 16, o2 * splat(inverse));
            store8(oh + i + 24, o3 * splat(inverse));
        }
        for (; i < dim; i++) { /* channels past the last multiple of 32 (head sizes like 24 or 80) */
            float o = 0.0f;
            for (t = 0; t < len; t++) o += scores[t] * vh[at[t] + i];
            oh[i] = o * inverse;
        }
    }
}

int paged_decode_attention(const float *q, const float *k, const float *v, const int64_t *tables, int64_t width,
                           const int64_t *lens, int64_t n, int64_t heads, int64_t kv_heads, int64_t dim,
                           int64_t block_size, int64_t num_blocks, float scale, float *out, int threads) {
    const int64_t row = kv_heads * dim;
    int failed = 0;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t s = 0; s < n; s++) {
        const int64_t len = lens[s];
        const int64_t *table = tables + s * width;
        int valid = len >= 1 && len <= width * block_size;
        for (int64_t b = 0; valid && b < (len + block_size - 1) / block_size; b++)
            valid = table[b] >= 0 && table[b] < num_blocks;
        if (!valid) {
#pragma omp atomic write
            failed = 2;
            continue;
        }
        /* scratch: one head's scores (len), then each token's row offset in the pool */
        float *scores = malloc(sizeof(float) * len + sizeof(int64_t) * (len + 1));
        if (scores == NULL) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        int64_t *at = (int64_t *)(scores + len + len % 2); /* 8-byte aligned */
        for (int64_t t = 0; t < len; t++) at[t] = (table[t / block_size] * block_size + t % block_size) * row;
        const float *qs = q + s * heads * dim;
        float *os = out + s * heads * dim;
        if (dim == 64)
            attend_one(qs, k, v, at, len, heads, kv_heads, 64, scale, scores, os);
        else if (dim == 128)
            attend_one(qs, k, v, at, len, heads, kv_heads, 128, scale, scores, os);
        else
            attend_one(qs, k, v, at, len, heads, kv_heads, dim, scale, scores, os);
        free(scores);
    }
    return failed;
}
