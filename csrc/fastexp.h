/*
 * fastexp.h - exp(x) for x <= 0, shared by the kernels that exponentiate
 * logits with their maximum subtracted (reweight.c, policy_opt.c), and the
 * instruction sets their row loops are built for.
 */
#ifndef RLHF_FASTEXP_H
#define RLHF_FASTEXP_H

#include <stdint.h>
#include <string.h>

#include "rlhf.h"

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
    /* sum_{i<=13} r^i / i! by Estrin's scheme: a short dependency chain,
     * so the vectorised loop is not bound by its latency */
    const double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    const double q0 = 1.0 + r;
    const double q1 = 1.0 / 2.0 + r * (1.0 / 6.0);
    const double q2 = 1.0 / 24.0 + r * (1.0 / 120.0);
    const double q3 = 1.0 / 720.0 + r * (1.0 / 5040.0);
    const double q4 = 1.0 / 40320.0 + r * (1.0 / 362880.0);
    const double q5 = 1.0 / 3628800.0 + r * (1.0 / 39916800.0);
    const double q6 = 1.0 / 479001600.0 + r * (1.0 / 6227020800.0);
    const double s0 = q0 + r2 * q1, s1 = q2 + r2 * q3, s2 = q4 + r2 * q5;
    const double p = (s0 + r4 * s1) + r8 * (s2 + r4 * q6);
    /* 2^n for n in [-1022, 0]: n sits in the low bits of t's mantissa */
    int64_t t_bits, shifter_bits;
    memcpy(&t_bits, &t, sizeof t_bits);
    memcpy(&shifter_bits, &shifter, sizeof shifter_bits);
    int64_t bits = (int64_t)((uint64_t)(t_bits - shifter_bits + 1023) << 52);
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < lowest ? 0.0 : p * scale;
}

#endif /* RLHF_FASTEXP_H */
