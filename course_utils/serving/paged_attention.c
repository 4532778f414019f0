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
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* the pool slot of a sequence's token t: its block from the table, then the offset within it */
static inline int64_t slot(const int64_t *table, int64_t t, int64_t block_size) {
    return table[t / block_size] * block_size + t % block_size;
}

int paged_decode_attention(const float *q, const float *k, const float *v, const int64_t *tables, int64_t width,
                           const int64_t *lens, int64_t n, int64_t heads, int64_t kv_heads, int64_t dim,
                           int64_t block_size, int64_t num_blocks, float scale, float *out, int threads) {
    const int64_t group = heads / kv_heads, row = kv_heads * dim;
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
        const float *qs = q + s * heads * dim;
        float *o = out + s * heads * dim;
        float *scores = malloc(sizeof(float) * heads * len); /* (heads, len) */
        if (scores == NULL) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        /* scores = q . k / sqrt(dim): each key row is read once, for every query head that uses it */
        for (int64_t t = 0; t < len; t++) {
            const float *kt = k + slot(table, t, block_size) * row;
            for (int64_t h = 0; h < heads; h++) {
                const float *qh = qs + h * dim, *kh = kt + (h / group) * dim;
                float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                for (int64_t i = 0; i < dim; i++) acc += qh[i] * kh[i];
                scores[h * len + t] = acc * scale;
            }
        }
        /* softmax over the context, per head (the largest score subtracted first) */
        for (int64_t h = 0; h < heads; h++) {
            float *sh = scores + h * len, top = -INFINITY, total = 0.0f;
            for (int64_t t = 0; t < len; t++) top = sh[t] > top ? sh[t] : top;
            for (int64_t t = 0; t < len; t++) {
                sh[t] = expf(sh[t] - top);
                total += sh[t];
            }
            for (int64_t t = 0; t < len; t++) sh[t] /= total;
            for (int64_t i = 0; i < dim; i++) o[h * dim + i] = 0.0f;
        }
        /* out = softmax . v: each value row is read once */
        for (int64_t t = 0; t < len; t++) {
            const float *vt = v + slot(table, t, block_size) * row;
            for (int64_t h = 0; h < heads; h++) {
                const float p = scores[h * len + t], *vh = vt + (h / group) * dim;
                float *oh = o + h * dim;
#pragma omp simd
                for (int64_t i = 0; i < dim; i++) oh[i] += p * vh[i];
            }
        }
        free(scores);
    }
    return failed;
}
