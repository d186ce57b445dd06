/*
 * numerics.h - stable scalar building blocks shared by the kernels.
 *
 * Plain C99, static inline: each kernel file gets its own copy, so the
 * compiler can inline them into hot loops.
 */
#ifndef RLHF_NUMERICS_H
#define RLHF_NUMERICS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* log(1 + exp(z)) without overflow for large z or lost digits for small. */
static inline double log1pexp(double z)
{
    if (z > 0.0) {
        return z + log1p(exp(-z));
    }
    return log1p(exp(z));
}

/* 1 / (1 + exp(-z)), with exp never taken of a large positive number. */
static inline double sigmoid(double z)
{
    if (z >= 0.0) {
        return 1.0 / (1.0 + exp(-z));
    }
    const double e = exp(z);
    return e / (1.0 + e);
}

/*
 * x . w in four interleaved partial sums added as (s0 + s1) + (s2 + s3):
 * independent chains the processor can overlap and the compiler can
 * vectorise, in an order fixed for every build.
 */
static inline double dot4(const double *x, const double *w, ptrdiff_t d)
{
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    ptrdiff_t j = 0;
    for (; j + 4 <= d; j += 4) {
        s[0] += x[j] * w[j];
        s[1] += x[j + 1] * w[j + 1];
        s[2] += x[j + 2] * w[j + 2];
        s[3] += x[j + 3] * w[j + 3];
    }
    for (; j < d; j++) {
        s[0] += x[j] * w[j];
    }
    return (s[0] + s[1]) + (s[2] + s[3]);
}

/*
 * The c-th output of SplitMix64 started at seed, as a double in [0, 1):
 * the state after c + 1 steps is seed + (c + 1) * gamma, so any output is
 * reached directly, which makes the generator counter-based (Steele, Lea
 * & Flood 2014, "Fast splittable pseudorandom number generators").  The
 * top 53 bits give the double.
 */
static inline double splitmix_uniform(uint64_t seed, uint64_t c)
{
    uint64_t z = seed + (c + 1u) * UINT64_C(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

#endif /* RLHF_NUMERICS_H */
