/* Eight float32 lanes at a time through GCC's and Clang's vector extensions, which lower them to
 * whatever SIMD the machine has (two SSE registers, one AVX register, half an AVX-512 one), and a
 * vectorised exp: shared by the course's compiled CPU kernels. */
#ifndef COURSE_SIMD_H
#define COURSE_SIMD_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

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

#endif
