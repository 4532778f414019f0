/* The elementwise work of a decoder layer, each piece in one pass over its rows (float32, rows
 * C-contiguous). Between two matrix multiplies PyTorch runs these as several operators, each a
 * full pass over memory with its own dispatch and thread start-up; here each is one loop.
 *
 *   add_rms_norm  x += delta (if delta is given); normed = x / sqrt(mean(x^2) + eps) * weight, per row
 *   silu_mul      out = silu(gate) * up, gate and up the two halves of each gate-up row
 *   rope          rotate the first `rotated` heads of each row in place by that row's cos and sin
 *
 * The same arithmetic as PyTorch's operators, in float32; only the order of a row's sum of squares
 * differs, so results agree to float32 rounding (tests/test_serving_fused_elementwise.py).
 */
#include <math.h>
#include <stdint.h>

#include "simd.h"

enum { PARALLEL_FLOATS = 1 << 15 }; /* below this much work a second thread costs more than it saves */

void add_rms_norm(float *x, const float *delta, const float *weight, int64_t n, int64_t d, float eps,
                  float *normed, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (n * d >= PARALLEL_FLOATS)
    for (int64_t r = 0; r < n; r++) {
        float *xr = x + r * d, *hr = normed + r * d;
        const float *dr = delta == NULL ? NULL : delta + r * d;
        v8 squares = splat(0.0f);
        int64_t i = 0;
        for (; i + 8 <= d; i += 8) {
            v8 v = load8(xr + i);
            if (dr != NULL) {
                v += load8(dr + i);
                store8(xr + i, v);
            }
            squares += v * v;
        }
        float total = sum8(squares);
        for (; i < d; i++) {
            if (dr != NULL) xr[i] += dr[i];
            total += xr[i] * xr[i];
        }
        const float scale = 1.0f / sqrtf(total / (float)d + eps);
        for (i = 0; i + 8 <= d; i += 8) store8(hr + i, load8(xr + i) * splat(scale) * load8(weight + i));
        for (; i < d; i++) hr[i] = xr[i] * scale * weight[i];
    }
}

/* silu(g) = g / (1 + e^-g), with e^-|g| <= 1 so that exp8 stays in its range:
 * g >= 0: g / (1 + e^-g);  g < 0: g e^g / (1 + e^g). */
static inline float silu1(float g) {
    const float e = expf(-fabsf(g));
    return g >= 0.0f ? g / (1.0f + e) : g * e / (1.0f + e);
}

void silu_mul(const float *gate_up, int64_t n, int64_t f, float *out, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (n * f >= PARALLEL_FLOATS)
    for (int64_t r = 0; r < n; r++) {
        const float *g = gate_up + r * 2 * f, *u = g + f;
        float *o = out + r * f;
        int64_t i = 0;
        for (; i + 8 <= f; i += 8) {
            const v8 gv = load8(g + i), e = exp8(-(select8(gv < splat(0.0f), -gv, gv)));
            const v8 s = select8(gv < splat(0.0f), gv * e, gv) / (splat(1.0f) + e);
            store8(o + i, s * load8(u + i));
        }
        for (; i < f; i++) o[i] = silu1(g[i]) * u[i];
    }
}

void rope(float *x, int64_t n, int64_t heads, int64_t rotated, int64_t dim, const float *cos, const float *sin,
          int threads) {
    const int64_t half = dim / 2;
#pragma omp parallel for num_threads(threads) schedule(static) if (n * rotated * dim >= PARALLEL_FLOATS)
    for (int64_t r = 0; r < n; r++) {
        const float *c = cos + r * dim, *s = sin + r * dim;
        for (int64_t h = 0; h < rotated; h++) {
            float *a = x + (r * heads + h) * dim, *b = a + half;
            for (int64_t i = 0; i < half; i++) {
                const float a0 = a[i], b0 = b[i];
                a[i] = a0 * c[i] - b0 * s[i];
                b[i] = b0 * c[half + i] + a0 * s[half + i];
            }
        }
    }
}
