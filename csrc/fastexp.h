/*
 * fastexp.h - exp(x) for x <= 0, shared by the kernels that exponentiate
 * logits with their maximum subtracted (reweight.c, policy_opt.c,
 * sequences.c), exp(x) for any x for probability ratios (sequences.c),
 * exp(x) for x <= 0 with gradual underflow (bradley_terry.c),
 * and the instruction sets their row loops are built for.
 */
#ifndef RLHF_FASTEXP_H
#define RLHF_FASTEXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "rlhf.h"

/*
 * The pairs of terms of exp's Taylor series past 1 + r, for Estrin's
 * scheme: q[k] = 1/(2k+2)! + r/(2k+3)!, the terms of degree 2k+2 and
 * 2k+3 over r^(2k+2), k = 0..5 (up to r^13).
 */
static inline void exp_series_pairs(double r, double q[6])
{
    q[0] = 1.0 / 2.0 + r * (1.0 / 6.0);
    q[1] = 1.0 / 24.0 + r * (1.0 / 120.0);
    q[2] = 1.0 / 720.0 + r * (1.0 / 5040.0);
    q[3] = 1.0 / 40320.0 + r * (1.0 / 362880.0);
    q[4] = 1.0 / 3628800.0 + r * (1.0 / 39916800.0);
    q[5] = 1.0 / 479001600.0 + r * (1.0 / 6227020800.0);
}

/*
 * exp(r) for |r| <= ln2 / 2: sum_{i<=13} r^i / i! (truncation below 5e-18
 * on that interval) by Estrin's scheme, a short dependency chain, so that
 * vectorised loops are not bound by its latency.
 */
static inline double exp_series(double r)
{
    const double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    double q[6];
    exp_series_pairs(r, q);
    const double s0 = (1.0 + r) + r2 * q[0], s1 = q[1] + r2 * q[2],
                 s2 = q[3] + r2 * q[4];
    return (s0 + r4 * s1) + r8 * (s2 + r4 * q[5]);
}

/*
 * exp(x) for x <= 0, to about 1 ulp, written so that compilers vectorise
 * the loops that call it: x = n ln2 + r with |r| <= ln2 / 2 (Cody & Waite
 * 1980, "Software manual for the elementary functions"), exp(r) by its
 * Taylor series to degree 13 (truncation below 5e-18 on that interval),
 * then 2^n through the exponent bits.  Results below DBL_MIN are flushed to
 * 0; the callers treat a 0 as underflow and take the log-space path.
 */
static inline double exp_nonpositive(double x)
{
    const double log2e = 1.4426950408889634;
    const double ln2_hi = 6.93147180369123816490e-01;
    const double ln2_lo = 1.90821492927058770002e-10;
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52 */
    const double lowest = -708.3964185322641;  /* log(DBL_MIN) */
    const double xc = x < lowest ? lowest : x;
    const double t = xc * log2e + shifter;
    const double n = t - shifter; /* round(x / ln2), exactly */
    const double r = (xc - n * ln2_hi) - n * ln2_lo;
    const double p = exp_series(r);
    /* 2^n for n in [-1022, 0]: n sits in the low bits of t's mantissa */
    int64_t t_bits, shifter_bits;
    memcpy(&t_bits, &t, sizeof t_bits);
    memcpy(&shifter_bits, &shifter, sizeof shifter_bits);
    int64_t bits = (int64_t)((uint64_t)(t_bits - shifter_bits + 1023) << 52);
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < lowest ? 0.0 : p * scale;
}

/* The bits of a double as an integer, and back. */
static inline uint64_t bits_of(double x)
{
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}

static inline double double_of(uint64_t bits)
{
    double x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/*
 * a where mask is all ones, b where it is 0 (mask from a comparison,
 * 0 - (uint64_t)(a < b)): a select through the bits, so that both a and b
 * are computed whatever the mask.  Loops of ternaries whose arms compute
 * something vectorise only with AVX-512's masks, because GCC will not
 * compute a floating-point operation the C code would not have
 * (-ftrapping-math); with both arms computed, they vectorise with AVX2
 * too, and give the same results.
 */
static inline double blend(uint64_t mask, double a, double b)
{
    return double_of((bits_of(a) & mask) | (bits_of(b) & ~mask));
}

/*
 * exp(x) for any x, to about 1 ulp: exp_nonpositive's arithmetic, the
 * same bits for x in [log(DBL_MIN), 0] (0 below), then 2^(n - 1) * 2 for
 * x >= +0 so that n = 1024 keeps the scale's exponent in range, and +inf
 * above log(DBL_MAX); NaN gives NaN.  A stand-in for libm's exp where x
 * has no known sign, such as the log of a probability ratio, that
 * vectorises with AVX2: no clamp or branch, every case computed and the
 * results for out-of-range x (garbage, never a trap) blended away at the
 * end, the halving taken from the sign bit.  Integer arithmetic on the
 * bits is unsigned, so garbage cannot overflow.
 */
static inline double exp_any(double x)
{
    const double log2e = 1.4426950408889634;
    const double ln2_hi = 6.93147180369123816490e-01;
    const double ln2_lo = 1.90821492927058770002e-10;
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52 */
    const double lowest = -708.3964185322641;  /* log(DBL_MIN) */
    const double highest = 709.782712893384;   /* log(DBL_MAX) */
    /* half = 1.0 for x >= +0, else 0.0 */
    const uint64_t positive = (bits_of(x) >> 63) - 1u;
    const double half = double_of(bits_of(1.0) & positive);
    const double t = x * log2e + shifter;
    const double n = t - shifter; /* round(x / ln2), exactly */
    const double r = (x - n * ln2_hi) - n * ln2_lo;
    const double p = exp_series(r);
    /* 2^(n - half): n - half sits in the low bits of t - half's mantissa
     * (whose ulp is 1, so the subtraction is exact) */
    const uint64_t biased = bits_of(t - half) - bits_of(shifter) + 1023u;
    const double e = (p * double_of(biased << 52)) * (1.0 + half);
    return blend(0u - (uint64_t)(x < lowest), 0.0,
                 blend(0u - (uint64_t)(x > highest), INFINITY, e));
}

/*
 * exp(x) for x <= 0 with gradual underflow, for results that must keep
 * their relative accuracy down to DBL_MIN and libm's rounding below it
 * (the Bradley-Terry loss exp(-d) for large d): exp_nonpositive's
 * reduction, exp_series's terms with the leading 1 added last, and 2^n
 * applied as two normal factors 2^n1 2^n2 (n1 = round(n / 2), n2 = n - n1,
 * both >= -539), so that p 2^n1 is exact and only the last product
 * rounds.  Error: at most 1 ulp where the result is normal (1.0 measured
 * against expl over 2e7 points of [-746, 0]; with exp_series as it is,
 * 2.2), at most one subnormal step (2^-1074) under DBL_MIN; 0 below -746
 * (exp(-746) < 2^-1075 rounds to 0) and for -inf, NaN for NaN; tested
 * through the Bradley-Terry loss (tests/test_bt_numerics.py).  No branch:
 * vectorises with AVX2.  Integer arithmetic on the bits is unsigned, so
 * garbage cannot overflow.
 */
static inline double exp_nonpositive_gradual(double x)
{
    const double log2e = 1.4426950408889634;
    const double ln2_hi = 6.93147180369123816490e-01;
    const double ln2_lo = 1.90821492927058770002e-10;
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52 */
    const double lowest = -746.0;
    /* below lowest (-inf too) the arithmetic gives garbage, never a
     * trap, that the blend at the end replaces by 0 (a clamp on the same
     * comparison would make GCC branch) */
    const double t = x * log2e + shifter;
    const double n = t - shifter; /* round(x / ln2), exactly: >= -1077 */
    const double r = (x - n * ln2_hi) - n * ln2_lo;
    /* exp_series's terms with the leading 1 added last, so that only
     * that sum rounds at full weight */
    const double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    double q[6];
    exp_series_pairs(r, q);
    const double tail = (r2 * q[0] + r4 * (q[1] + r2 * q[2])) +
                        r8 * ((q[3] + r2 * q[4]) + r4 * q[5]);
    const double p = 1.0 + (r + tail);
    /* n1 = round(n / 2) (n / 2 is exact), n2 = n - n1 (exact) */
    const double n1 = (n * 0.5 + shifter) - shifter;
    const double n2 = n - n1;
    /* 2^k for an integer k in [-1022, 0] through the exponent bits: k
     * sits in the low bits of the mantissa of k + shifter */
    const uint64_t bias = 1023u;
    const double s1 = double_of((bits_of(n1 + shifter) - bits_of(shifter) +
                                 bias) << 52);
    const double s2 = double_of((bits_of(n2 + shifter) - bits_of(shifter) +
                                 bias) << 52);
    return blend(0u - (uint64_t)(x < lowest), 0.0, (p * s1) * s2);
}

#endif /* RLHF_FASTEXP_H */
