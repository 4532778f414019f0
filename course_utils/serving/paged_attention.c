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
 * (GCC and Clang lower them to whatever SIMD the machine has), four independent sums per dot
 * product, the head size made a compile-time constant for the common 64 and 128, a vectorised exp
 * in the softmax, and each key or value row fetched a few tokens before it is used, since the rows
 * of a scattered block table defeat the hardware prefetcher at every block boundary.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
enum { AHEAD = 4 }; /* how many tokens ahead a row is prefetched */

static inline v8 load8(const float *p) { v8 x; memcpy(&x, p, sizeof x); return x; }
static inline void store8(float *p, v8 x) { memcpy(p, &x, sizeof x); }
static inline v8 splat(float x) { return (v8){x, x, x, x, x, x, x, x}; }
static inline float sum8(v8 a) { return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])); }
static inline v8 select8(v8i mask, v8 yes, v8 no) { return (v8)(((v8i)yes & mask) | ((v8i)no & ~mask)); }

/* e^x for x <= 0, eight at a time: x = n ln2 + r with |r| <= ln2 / 2, e^r by Cephes' degree-7
 * polynomial, 2^n put into the exponent bits. Below -87 (where e^x leaves float32's normal range,
 * negligible beside the largest term, e^0 = 1) x is clamped to -87. */
static inline v8 exp8(v8 x) {
    x = select8(x < splat(-87.0f), splat(-87.0f), x);
    const v8 fx = x * splat(1.44269504f) + splat(0.5f); /* n = floor(x / ln2 + 1/2) */
    v8 n = __builtin_convertvector(__builtin_convertvector(fx, v8i), v8);
    n = select8(n > fx, n - splat(1.0f), n); /* the conversion truncated a negative value upwards */
    const v8 r = x - n * splat(0.693359375f) - n * splat(-2.12194440e-4f);
    v8 y = splat(1.9875691500e-4f);
    y = y * r + splat(1.3981999507e-3f);
    y = y * r + splat(8.3334519073e-3f);
    y = y * r + splat(4.1665795894e-2f);
    y = y * r + splat(1.6666665459e-1f);
    y = y * r + splat(5.0000001201e-1f);
    y = y * r * r + r + splat(1.0f);
    return y * (v8)((__builtin_convertvector(n, v8i) + 127) << 23);
}

static inline void prefetch_row(const float *row, int64_t floats) {
    for (int64_t b = 0; b < floats * (int64_t)sizeof(float); b += 64) __builtin_prefetch((const char *)row + b);
}

/* One sequence: scores (heads, len) = q . k * scale, softmax per head, out = scores . v.
 * at[t] is the offset of token t's row in k and v. Always inlined, so that a constant dim unrolls. */
static inline __attribute__((always_inline)) void attend_one(
    const float *restrict q, const float *restrict k, const float *restrict v, const int64_t *restrict at,
    int64_t len, int64_t heads, int64_t kv_heads, const int64_t dim, float scale, float *restrict scores,
    float *restrict out) {
    const int64_t group = heads / kv_heads;
    for (int64_t t = 0; t < len; t++) {
        prefetch_row(k + at[t + AHEAD < len ? t + AHEAD : len - 1], kv_heads * dim);
        for (int64_t h = 0; h < heads; h++) {
            const float *qh = q + h * dim, *kh = k + at[t] + (h / group) * dim;
            v8 a0 = splat(0.0f), a1 = splat(0.0f), a2 = splat(0.0f), a3 = splat(0.0f);
            int64_t i = 0;
            for (; i + 32 <= dim; i += 32) {
                a0 += load8(qh + i) * load8(kh + i);
                a1 += load8(qh + i + 8) * load8(kh + i + 8);
                a2 += load8(qh + i + 16) * load8(kh + i + 16);
                a3 += load8(qh + i + 24) * load8(kh + i + 24);
            }
            for (; i + 8 <= dim; i += 8) a0 += load8(qh + i) * load8(kh + i);
            float acc = sum8((a0 + a1) + (a2 + a3));
            for (; i < dim; i++) acc += qh[i] * kh[i];
            scores[h * len + t] = acc * scale;
        }
    }
    for (int64_t h = 0; h < heads; h++) { /* softmax over the context (the largest score subtracted first) */
        float *sh = scores + h * len, top = -INFINITY;
        for (int64_t t = 0; t < len; t++) top = sh[t] > top ? sh[t] : top;
        v8 totals = splat(0.0f);
        int64_t t = 0;
        for (; t + 8 <= len; t += 8) {
            const v8 e = exp8(load8(sh + t) - splat(top));
            store8(sh + t, e);
            totals += e;
        }
        float total = sum8(totals);
        for (; t < len; t++) {
            sh[t] = expf(sh[t] - top);
            total += sh[t];
        }
        const float inverse = 1.0f / total;
        for (t = 0; t < len; t++) sh[t] *= inverse;
        for (int64_t i = 0; i < dim; i++) out[h * dim + i] = 0.0f;
    }
    for (int64_t t = 0; t < len; t++) {
        prefetch_row(v + at[t + AHEAD < len ? t + AHEAD : len - 1], kv_heads * dim);
        for (int64_t h = 0; h < heads; h++) {
            const float p = scores[h * len + t], *vh = v + at[t] + (h / group) * dim;
            float *oh = out + h * dim;
            int64_t i = 0;
            for (; i + 8 <= dim; i += 8) store8(oh + i, load8(oh + i) + splat(p) * load8(vh + i));
            for (; i < dim; i++) oh[i] += p * vh[i];
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
        /* scratch: the scores (heads, len), then each token's row offset in the pool */
        float *scores = malloc(sizeof(float) * heads * len + sizeof(int64_t) * (len + 1));
        if (scores == NULL) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        int64_t *at = (int64_t *)(scores + heads * len + (heads * len) % 2); /* 8-byte aligned */
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
