/*
 * reweight.c - the lecture's policy update, row by row.
 *
 *   out[i, :] = softmax(log(policy[i, :] + eps) + eta * (rewards[i, :] -
 *                                                        mean(rewards[i, :])))
 *
 * which, from a reference policy, is the KL-regularised optimum
 * pi* ∝ pi_ref exp(r / beta) with beta = 1 / eta (up to eps).
 *
 * Fast path, no logarithm: with a_j = eta * (r_j - mean) and M = max_j a_j,
 *   w_j = (policy_j + eps) * exp(a_j - M),   out_j = w_j / sum_k w_k,
 * the same softmax, since exp(log(p + eps) + a - M) = (p + eps) exp(a - M).
 * exp(a_j - M) <= 1, so nothing overflows unless the policy entries are
 * near DBL_MAX.  The path is exact to a few ulps while every w_j is a
 * normal number; a row where some w_j underflows (probabilities near
 * 1e-300, or reward gaps of hundreds of nats) or the sum overflows is
 * recomputed in log space, with the maximum of the full logits subtracted
 * before exponentiating.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fastexp.h"
#include "rlhf.h"

#define RLHF_LANES 8

/* (((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7))) */
static inline double sum_lanes(const double *part)
{
    return ((part[0] + part[1]) + (part[2] + part[3])) +
           ((part[4] + part[5]) + (part[6] + part[7]));
}

/*
 * The log-space version for a row the fast path cannot do exactly:
 *   o_j = log((p_j + eps) / 2^s) + eta * (r_j - r*),  r* = the reward of a
 * response of largest eta * r,
 * then softmax(o) with its maximum subtracted.  The reward term is taken
 * relative to the best response rather than to the mean: it is then
 * exactly 0 for the best responses however large eta and the rewards (a
 * term of 1e300 would swallow log(p_j) and the policy's split of their
 * mass), and at worst -inf, never an overflow to +inf or NaN.
 */
static int row_log_space(const double *p, const double *r, ptrdiff_t k,
                         double eta, double eps, double *o)
{
    ptrdiff_t best = 0;
    for (ptrdiff_t j = 1; j < k; j++) {
        if (eta > 0.0 ? r[j] > r[best] : eta < 0.0 && r[j] < r[best]) {
            best = j;
        }
    }
    /* p + eps divided by a power of two (exactly) to bring its largest
     * entry near 1: log(1e-300) = -690.8 would carry 690 ulps of rounding
     * into every weight, the log of the scaled value does not */
    double p_top = 0.0;
    for (ptrdiff_t j = 0; j < k; j++) {
        p_top = p[j] + eps > p_top ? p[j] + eps : p_top;
    }
    int shift = 0;
    if (p_top > 0.0 && isfinite(p_top)) {
        (void)frexp(p_top, &shift);
    }
    double top = -INFINITY;
    for (ptrdiff_t j = 0; j < k; j++) {
        const double gap = r[j] - r[best];
        o[j] = log(ldexp(p[j] + eps, -shift)) +
               (eta == 0.0 || gap == 0.0 ? 0.0 : eta * gap);
        top = o[j] > top ? o[j] : top;
    }
    if (!isfinite(top)) {
        return RLHF_ENONFINITE;
    }
    double total = 0.0;
    for (ptrdiff_t j = 0; j < k; j++) {
        o[j] = exp(o[j] - top);
        total += o[j];
    }
    for (ptrdiff_t j = 0; j < k; j++) {
        o[j] /= total;
    }
    return 0;
}

RLHF_CLONES
static int row(const double *p, const double *r, ptrdiff_t k, double eta,
               double eps, double *o)
{
    /* sums use RLHF_LANES fixed partial sums, so that every instruction
     * set (and the scalar build) adds in the same order and gives the same
     * bits */
    double part[RLHF_LANES] = {0.0};
    ptrdiff_t j = 0;
    for (; j + RLHF_LANES <= k; j += RLHF_LANES) {
        for (int l = 0; l < RLHF_LANES; l++) {
            part[l] += r[j + l];
        }
    }
    for (; j < k; j++) {
        part[0] += r[j];
    }
    double mean = sum_lanes(part) / (double)k;
    if (!isfinite(mean)) {
        /* a NaN or infinity in rewards, or finite values whose sum
         * overflows: tell the two apart, and average the latter scaled */
        mean = 0.0;
        for (ptrdiff_t i = 0; i < k; i++) {
            if (!isfinite(r[i])) {
                return RLHF_ENONFINITE;
            }
            mean += r[i] / (double)k;
        }
    }

    /* M = max_j eta * (r_j - mean); max is exact in any order */
    double top = -INFINITY;
#ifdef RLHF_OMP_SIMD_MINMAX
#pragma omp simd reduction(max : top)
#endif
    for (ptrdiff_t i = 0; i < k; i++) {
        double a = eta * (r[i] - mean);
        top = a > top ? a : top;
    }

    /* o = (p + eps) * exp(eta * (r - mean) - M); its minimum */
    /* the policy is checked in the pass that reads it: its minimum for the
     * sign, its sum (only a test: NaN and infinity propagate) for the rest */
    double smallest = INFINITY, p_min = INFINITY, p_sum = 0.0;
#ifdef RLHF_OMP_SIMD_MINMAX
#pragma omp simd reduction(min : smallest, p_min) reduction(+ : p_sum)
#endif
    for (ptrdiff_t i = 0; i < k; i++) {
        double w = (p[i] + eps) * exp_nonpositive(eta * (r[i] - mean) - top);
        o[i] = w;
        smallest = w < smallest ? w : smallest;
        p_min = p[i] < p_min ? p[i] : p_min;
        p_sum += p[i];
    }
    if (!(p_min >= 0.0)) {
        return RLHF_EVALUE;
    }
    if (!isfinite(p_sum)) {
        for (ptrdiff_t i = 0; i < k; i++) {
            if (!isfinite(p[i])) {
                return RLHF_EVALUE;
            }
        }
    }
    double tpart[RLHF_LANES] = {0.0};
    for (j = 0; j + RLHF_LANES <= k; j += RLHF_LANES) {
        for (int l = 0; l < RLHF_LANES; l++) {
            tpart[l] += o[j + l];
        }
    }
    for (; j < k; j++) {
        tpart[0] += o[j];
    }
    const double total = sum_lanes(tpart);
    if (!(smallest >= DBL_MIN) || !(total <= DBL_MAX)) {
        return row_log_space(p, r, k, eta, eps, o);
    }
    const double inverse = 1.0 / total;
    for (ptrdiff_t i = 0; i < k; i++) {
        o[i] *= inverse;
    }
    return 0;
}

/*
 * policy, rewards  n_rows * n_actions, row-major, read only
 * out              n_rows * n_actions, written
 * Returns 0; RLHF_ENONFINITE when rewards hold a NaN or infinity, or a
 * row's logits are all -inf (every policy entry 0 with eps = 0);
 * RLHF_EVALUE when policy holds a negative, NaN or infinite entry.  The
 * inputs are checked in the passes that read them, not beforehand.
 * RLHF_EINTR when rlhf_interrupted() said to stop (asked every
 * RLHF_CHECK_ENTRIES entries); out is then incomplete.
 */
int rlhf_reweight(const double *policy, const double *rewards,
                  ptrdiff_t n_rows, ptrdiff_t n_actions, double eta,
                  double eps, double *out)
{
    int status = 0;
    const ptrdiff_t chunk = rlhf_check_rows(n_actions);
    for (ptrdiff_t i0 = 0; i0 < n_rows && status == 0; i0 += chunk) {
        if (i0 > 0 && rlhf_interrupted()) {
            return RLHF_EINTR;
        }
        const ptrdiff_t i1 = i0 + chunk < n_rows ? i0 + chunk : n_rows;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(rlhf_threads(0)) \
    if ((i1 - i0) * n_actions > 65536)
#endif
        for (ptrdiff_t i = i0; i < i1; i++) {
            int s = row(policy + i * n_actions, rewards + i * n_actions,
                        n_actions, eta, eps, out + i * n_actions);
            if (s != 0) {
#ifdef _OPENMP
#pragma omp critical(rlhf_status)
#endif
                status = s;
            }
        }
    }
    return status;
}
