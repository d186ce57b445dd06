/*
 * bradley_terry.c - pairwise and listwise preference likelihoods in item
 * space.
 *
 * Rewards are linear in item features, r = F w (F is n_items x n_features,
 * dense or CSR; or the identity, one free strength per item).  The
 * objective is
 *
 *   f(w, u) = sum_p s_p * loss_p(r) + alpha/2 * ||w||^2
 *
 * over comparisons p (Bradley & Terry 1952), or over ranked groups for
 * Plackett-Luce (Plackett 1975; Luce 1959).  u is the tie parameter when a
 * tie model is on (not penalised).  One evaluation reads F twice (r = F w,
 * then grad = F^T g with g the gradient in item space) and each comparison
 * once; the (n_comparisons x n_features) matrix of differences is never
 * formed.
 *
 * Per comparison (a preferred to b, or tied), with d = r_a - r_b - margin:
 *   none         strict  log(1 + exp(-d))
 *                tie     half a win each way (margin not applied)
 *   Rao-Kupper   strict  log(1 + exp(kappa - d)),     kappa = exp(u)
 *   (1967)       tie     log(1 + exp(d - kappa)) + log(1 + exp(-d - kappa))
 *                        - log(1 - exp(-2 kappa))     (theta = exp(kappa))
 *   Davidson     strict  log(1 + exp(-d) + nu exp(-d/2)),  nu = exp(u)
 *   (1970)       tie     log(exp(d/2) + exp(-d/2) + nu) - log(nu)
 * Plackett-Luce, a group ranked s_0 > s_1 > ... > s_{K-1}:
 *   sum_{k < K-1} logsumexp(r_{s_k}, ..., r_{s_{K-1}}) - r_{s_k}
 *
 * Comparisons and groups are handled in fixed blocks whose partial sums
 * are added in block order, and item gradients are scattered serially, so
 * the result is bitwise the same for any number of threads.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rlhf.h"
#include "numerics.h"
#include "fastexp.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define BT_BLOCK 4096
/* sparse F^T g by columns: threads from this many non-zeros on */
#define BT_PARALLEL_TERMS ((int64_t)1 << 20)
/* comparisons per chunk of the common case: their differences, then their
 * terms in one vectorised loop (a divisor of BT_BLOCK, a multiple of 8) */
#define BT_CHUNK 256

/* Helpers of the vectorised loops, inlined into each instruction-set
 * version of their callers (GCC does not inline across target_clones
 * otherwise). */
#if defined(__GNUC__)
#define BT_INLINE static inline __attribute__((always_inline))
#else
#define BT_INLINE static inline
#endif

/*
 * log(1 + e) for e in [0, 1] without libm, so that loops over comparisons
 * vectorise: log(1 + e) = 2 atanh(s) with s = e / (2 + e) in [0, 1/3],
 * and 2 atanh(s) = 2 s + 2 s^3 R(s^2), R(z) = sum_k z^k / (2k + 3) (the
 * series of atanh), written as e - s (e - 2 s^2 R(s^2)) because 2 s =
 * e - e s: the correction is at most e / 3, so e's own relative accuracy
 * carries over, for tiny and subnormal e too (log1p(e) = e exactly when
 * e s underflows).  R by the polynomial of degree 10 that interpolates it
 * at the 11 Chebyshev nodes of [0, 1/9] (solved in 50-digit arithmetic,
 * coefficients rounded to double; all positive, so no cancellation):
 * its error, weighted by 2 s^3 / log1p(e) as it enters the result, is
 * below 0.02 ulp (the series cut at the same degree: about 600 ulp).
 * Error of the whole: below 1.5 ulp on [0, 1] (1.32 at most against
 * log1pl over 2e7 points and every binade down to the subnormals);
 * tests/test_bt_numerics.py bounds it through the loss.
 */
BT_INLINE double log1p_unit(double e)
{
    const double s = e / (2.0 + e);
    const double z = s * s, z2 = z * z, z4 = z2 * z2, z8 = z4 * z4;
    const double p0 = 0.3333333333333333 + z * 0.19999999999999762;
    const double p1 = 0.1428571428580005 + z * 0.11111111099118386;
    const double p2 = 0.09090909948981357 + z * 0.07692271982430275;
    const double p3 = 0.06667589315724629 + z * 0.05867139530651599;
    const double p4 = 0.05422589197440007 + z * 0.03746071897775383;
    const double R = ((p0 + z2 * p1) + z4 * (p2 + z2 * p3)) +
                     z8 * (p4 + z2 * 0.07815288900461426);
    return e - s * (e - 2.0 * z * R);
}

/*
 * The terms of n strict comparisons without a tie model at their
 * differences d (r_a - r_b - margin), weighted by weight (NULL: 1):
 *   loss[j] = s (max(-d, 0) + log(1 + e))     = -s log sigmoid(d)
 *   coef[j] = -s (d < 0 ? 1 : e) / (1 + e)    = -s sigmoid(-d)
 * with e = exp(-|d|) <= 1, so that nothing overflows.  Error bounds,
 * relative to the exact value (so also where the loss is about exp(-d)
 * for large d; one subnormal step where it underflows), tested against
 * libm in tests/test_bt_numerics.py: the loss below 2.5 ulp
 * (exp_nonpositive_gradual's 1 ulp carried by log1p's condition number
 * e / ((1 + e) log1p(e)) <= 1, log1p_unit's 1.5 ulp, the hinge's sum;
 * 1.9 measured), coef below 3 ulp (e's, 1 + e's and the division's; 2.3
 * measured).  Replaces libm's exp and log (and its 1 ulp): no branch, so
 * the loops vectorise, and every version gives the same bits.
 */
BT_INLINE void strict_term(double d, double *loss, double *coef)
{
    const uint64_t negative = 0u - (uint64_t)(d < 0.0);
    const double e = exp_nonpositive_gradual(-fabs(d));
    const double hinge = blend(negative, -d, 0.0);
    const double num = blend(negative, 1.0, e);
    *loss = hinge + log1p_unit(e);
    *coef = -(num / (1.0 + e));
}

RLHF_CLONES static void strict_terms(const double *d, const double *weight,
                                     ptrdiff_t n, double *loss, double *coef)
{
    if (weight == NULL) {
        for (ptrdiff_t j = 0; j < n; j++) {
            strict_term(d[j], loss + j, coef + j);
        }
        return;
    }
    for (ptrdiff_t j = 0; j < n; j++) {
        double l, c;
        strict_term(d[j], &l, &c);
        /* s l and -s (num / (1 + e)): the bits of the unweighted loop
         * for s = 1 */
        loss[j] = weight[j] * l;
        coef[j] = weight[j] * c;
    }
}

/*
 * log(1 + x) for x >= 0 from one call of log, which is several times faster
 * than log1p: u = 1 + x is rounded, and log(u) * x / (u - 1) cancels that
 * rounding, to within a few ulps (Goldberg 1991, "What every computer
 * scientist should know about floating-point arithmetic", theorem 4).
 */
static double log1p_nonneg(double x)
{
    const double u = 1.0 + x;
    if (u == 1.0) {
        return x;
    }
    return log(u) * (x / (u - 1.0));
}

/* sigmoid(z) * sigmoid(-z), the derivative of sigmoid. */
static double dsigmoid(double z)
{
    const double s = sigmoid(z);
    return s * sigmoid(-z);
}

/* Softmax q of three numbers and their log-sum-exp (max subtracted). */
static double softmax3(double a, double b, double c, double *q)
{
    const double m = fmax(a, fmax(b, c));
    q[0] = exp(a - m);
    q[1] = exp(b - m);
    q[2] = exp(c - m);
    const double total = q[0] + q[1] + q[2];
    q[0] /= total;
    q[1] /= total;
    q[2] /= total;
    return m + log(total);
}

/* Loss of one comparison and its derivatives in d and u (unweighted). */
typedef struct {
    double l, ld, lu, ldd, ldu, luu;
} bt_term;

static void pair_term(int tie_model, int tied, double d, double u,
                      bt_term *t)
{
    memset(t, 0, sizeof(*t));
    if (tie_model == RLHF_TIES_RAO_KUPPER) {
        const double kappa = exp(u);
        double lk, ldk, lkk;
        if (!tied) {
            const double x = d - kappa;
            t->l = log1pexp(-x);
            t->ld = -sigmoid(-x);
            t->ldd = dsigmoid(x);
            lk = -t->ld;
            ldk = -t->ldd;
            lkk = t->ldd;
        }
        else {
            const double hi = dsigmoid(d - kappa), lo = dsigmoid(d + kappa);
            /* log(1 - exp(-2 kappa)) = log(-expm1(-2 kappa)) keeps digits
             * for small kappa */
            t->l = log1pexp(d - kappa) + log1pexp(-d - kappa) -
                   log(-expm1(-2.0 * kappa));
            t->ld = sigmoid(d - kappa) - sigmoid(-d - kappa);
            t->ldd = hi + lo;
            lk = -sigmoid(d - kappa) - sigmoid(-d - kappa) -
                 2.0 / expm1(2.0 * kappa);
            ldk = lo - hi;
            const double sh = sinh(kappa);
            lkk = hi + lo + 1.0 / (sh * sh);
        }
        /* chain rule to u = log(kappa) */
        t->lu = lk * kappa;
        t->ldu = ldk * kappa;
        t->luu = lkk * kappa * kappa + lk * kappa;
    }
    else if (tie_model == RLHF_TIES_DAVIDSON) {
        double q[3];
        if (!tied) {
            /* log(1 + e^-d + e^(u - d/2)): a softmax over (0, -d, u - d/2)
             * with slopes (0, 0), (-1, 0), (-1/2, 1) in (d, u) */
            t->l = softmax3(0.0, -d, u - 0.5 * d, q);
            t->ld = -q[1] - 0.5 * q[2];
            t->lu = q[2];
            t->ldd = q[1] + 0.25 * q[2] - t->ld * t->ld;
            t->ldu = -0.5 * q[2] - t->ld * t->lu;
        }
        else {
            /* slopes (1/2, 0), (-1/2, 0), (0, 1) */
            t->l = softmax3(0.5 * d, -0.5 * d, u, q) - u;
            const double md = 0.5 * (q[0] - q[1]);
            t->ld = md;
            t->lu = q[2] - 1.0;
            t->ldd = 0.25 * (q[0] + q[1]) - md * md;
            t->ldu = -md * q[2];
        }
        t->luu = q[2] - q[2] * q[2];
    }
    else if (!tied) {
        /* one exponential: e = exp(-|d|) gives the loss and both
         * sigmoids */
        const double e = exp(-fabs(d));
        const double small = e / (1.0 + e); /* sigmoid(-|d|) */
        t->l = (d < 0.0 ? -d : 0.0) + log1p_nonneg(e);
        t->ld = d < 0.0 ? -(1.0 / (1.0 + e)) : -small;
        t->ldd = small * (1.0 - small);
    }
    else {
        t->l = 0.5 * (log1pexp(-d) + log1pexp(d));
        t->ld = 0.5 * (sigmoid(d) - sigmoid(-d));
        t->ldd = dsigmoid(d);
    }
}

static ptrdiff_t n_coef(const rlhf_bt *p)
{
    return p->F_identity ? p->n_items : p->F.n_cols;
}

ptrdiff_t rlhf_bt_n_params(const rlhf_bt *p)
{
    return n_coef(p) + (p->tie_model != RLHF_TIES_NONE ? 1 : 0);
}

static ptrdiff_t n_units(const rlhf_bt *p)
{
    return p->likelihood == RLHF_PLACKETT_LUCE ? p->n_groups
                                               : p->n_comparisons;
}

static ptrdiff_t n_blocks(ptrdiff_t n)
{
    return (n + BT_BLOCK - 1) / BT_BLOCK;
}

static ptrdiff_t unit_width(const rlhf_bt *p)
{
    return p->likelihood == RLHF_PLACKETT_LUCE ? p->group_size : 1;
}

/*
 * Scratch the caller passes in problem->scratch:
 *   r, g            n_items each (scores, gradient in item space)
 *   coef            n_units * width: each unit's gradient by position
 *   lse             n_units * width (Plackett-Luce only)
 *   block sums      2 per unit block (loss, d/du)
 *   block flags     1 per unit block (its coefficients are written)
 *   feature parts   n_item_blocks * n_features (dense F^T g)
 */
ptrdiff_t rlhf_bt_scratch_size(const rlhf_bt *p)
{
    const ptrdiff_t units = n_units(p) * unit_width(p);
    ptrdiff_t size = 2 * p->n_items + units + 3 * n_blocks(n_units(p));
    if (p->likelihood == RLHF_PLACKETT_LUCE) {
        size += units;
    }
    if (!p->F_identity && p->F.dense != NULL) {
        size += n_blocks(p->n_items) * p->F.n_cols;
    }
    return size;
}

static int n_threads_for(const rlhf_bt *p, ptrdiff_t n_block)
{
    return n_block < 2 ? 1 : rlhf_threads(p->n_threads);
}

/* r = F @ w: rows are independent, so any split over threads is exact. */
static void scores(const rlhf_bt *p, const double *w, double *r)
{
    const rlhf_matrix *F = &p->F;
    if (p->F_identity) {
        memcpy(r, w, (size_t)p->n_items * sizeof(double));
        return;
    }
    const ptrdiff_t d = F->n_cols;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) \
    num_threads(n_threads_for(p, n_blocks(p->n_items)))
#endif
    for (ptrdiff_t i = 0; i < p->n_items; i++) {
        if (F->dense != NULL) {
            r[i] = dot4(F->dense + i * d, w, d);
        }
        else {
            double z = 0.0;
            for (int64_t k = F->indptr[i]; k < F->indptr[i + 1]; k++) {
                z += F->data[k] * w[F->indices[k]];
            }
            r[i] = z;
        }
    }
}

/* grad = F^T @ g (n_coef values), in block order for dense F. */
static void features_t(const rlhf_bt *p, const double *g, double *grad,
                       double *parts)
{
    const rlhf_matrix *F = &p->F;
    if (p->F_identity) {
        memcpy(grad, g, (size_t)p->n_items * sizeof(double));
        return;
    }
    const ptrdiff_t d = F->n_cols;
    if (F->dense == NULL && p->FT_indptr != NULL) {
        /* by columns, in parallel: each column's terms in row order, as
         * the serial loop below adds them (the same bits).  Threads only
         * for a million terms or more: below that a team costs more than
         * it saves, and far more when a core is busy elsewhere. */
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 256) \
    num_threads(F->indptr[F->n_rows] >= BT_PARALLEL_TERMS && d > 1 \
                    ? rlhf_threads(p->n_threads) : 1)
#endif
        for (ptrdiff_t j = 0; j < d; j++) {
            double z = 0.0;
            for (int64_t k = p->FT_indptr[j]; k < p->FT_indptr[j + 1]; k++) {
                z += g[p->FT_rows[k]] * p->FT_data[k];
            }
            grad[j] = z;
        }
        return;
    }
    memset(grad, 0, (size_t)d * sizeof(double));
    if (F->dense == NULL) {
        for (ptrdiff_t i = 0; i < p->n_items; i++) {
            for (int64_t k = F->indptr[i]; k < F->indptr[i + 1]; k++) {
                grad[F->indices[k]] += g[i] * F->data[k];
            }
        }
        return;
    }
    const ptrdiff_t nb = n_blocks(p->n_items);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(n_threads_for(p, nb))
#endif
    for (ptrdiff_t b = 0; b < nb; b++) {
        double *part = parts + b * d;
        const ptrdiff_t stop = (b + 1) * BT_BLOCK < p->n_items
                                   ? (b + 1) * BT_BLOCK : p->n_items;
        memset(part, 0, (size_t)d * sizeof(double));
        for (ptrdiff_t i = b * BT_BLOCK; i < stop; i++) {
            const double *row = F->dense + i * d;
            for (ptrdiff_t j = 0; j < d; j++) {
                part[j] += g[i] * row[j];
            }
        }
    }
    for (ptrdiff_t b = 0; b < nb; b++) {
        for (ptrdiff_t j = 0; j < d; j++) {
            grad[j] += parts[b * d + j];
        }
    }
}

static double weight_of(const rlhf_bt *p, ptrdiff_t unit)
{
    return p->sample_weight != NULL ? p->sample_weight[unit] : 1.0;
}

/* Number of ranked items in group g (the ranking stops at the first -1). */
static ptrdiff_t group_length(const rlhf_bt *p, ptrdiff_t g)
{
    const int64_t *rank = p->rankings + g * p->group_size;
    ptrdiff_t k = 0;
    while (k < p->group_size && rank[k] >= 0) {
        k++;
    }
    return k;
}

/*
 * One Plackett-Luce group at scores r: returns its loss, writes the
 * gradient by position into coef and the suffix log-sum-exps into lse.
 */
static double group_term(const rlhf_bt *p, ptrdiff_t g, const double *r,
                         double *coef, double *lse)
{
    const int64_t *rank = p->rankings + g * p->group_size;
    const ptrdiff_t K = group_length(p, g);
    double loss = 0.0;
    if (K < 2) {
        for (ptrdiff_t k = 0; k < K; k++) {
            coef[k] = 0.0;
        }
        return 0.0;
    }
    /* lse[k] = logsumexp(r[rank[k:]]), built from the end */
    lse[K - 1] = r[rank[K - 1]];
    for (ptrdiff_t k = K - 2; k >= 0; k--) {
        const double a = r[rank[k]], b = lse[k + 1];
        const double m = fmax(a, b);
        lse[k] = m + log1p(exp(-fabs(a - b)));
    }
    for (ptrdiff_t k = 0; k + 1 < K; k++) {
        loss += lse[k] - r[rank[k]];
    }
    /* d/dr[rank[j]] = -[j < K-1] + sum_{k <= min(j, K-2)} exp(r - lse[k]) */
    for (ptrdiff_t j = 0; j < K; j++) {
        double c = j + 1 < K ? -1.0 : 0.0;
        const double rj = r[rank[j]];
        for (ptrdiff_t k = 0; k <= j && k + 1 < K; k++) {
            c += exp(rj - lse[k]);
        }
        coef[j] = c;
    }
    return loss;
}

/*
 * The comparisons [start, stop) of a Bradley-Terry problem without a tie
 * model, at scores r: coef[q] = s_q dloss_q/dd, and into sums[0] their
 * weighted loss, in eight partial sums added in a fixed order (the same
 * for every instruction set and thread count).  Chunks of BT_CHUNK: the
 * differences are gathered first, so that strict_terms's loop vectorises;
 * tied comparisons (half a win each way) are redone by pair_term.
 */
static void strict_block(const rlhf_bt *p, const double *r, ptrdiff_t start,
                         ptrdiff_t stop, double *coef, double *sums)
{
    double acc[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    double d[BT_CHUNK], loss[BT_CHUNK];
    for (ptrdiff_t c0 = start; c0 < stop; c0 += BT_CHUNK) {
        const ptrdiff_t len = stop - c0 < BT_CHUNK ? stop - c0 : BT_CHUNK;
        const int64_t *pair = p->comparisons + 2 * c0;
        /* d = r[a] - r[b] - margin (no margin for a tie) */
        for (ptrdiff_t j = 0; j < len; j++) {
            d[j] = r[pair[2 * j]] - r[pair[2 * j + 1]];
        }
        if (p->margin != NULL) {
            for (ptrdiff_t j = 0; j < len; j++) {
                if (p->tie == NULL || !p->tie[c0 + j]) {
                    d[j] -= p->margin[c0 + j];
                }
            }
        }
        strict_terms(d, p->sample_weight != NULL ? p->sample_weight + c0
                                                 : NULL,
                     len, loss, coef + c0);
        if (p->tie != NULL) {
            for (ptrdiff_t j = 0; j < len; j++) {
                if (p->tie[c0 + j]) {
                    const double s = weight_of(p, c0 + j);
                    bt_term t;
                    pair_term(RLHF_TIES_NONE, 1, d[j], 0.0, &t);
                    loss[j] = s * t.l;
                    coef[c0 + j] = s * t.ld;
                }
            }
        }
        /* loss.sum(), lane k of the eight taking entries k, k + 8, ... */
        ptrdiff_t j = 0;
        for (; j + 8 <= len; j += 8) {
            for (int k = 0; k < 8; k++) {
                acc[k] += loss[j + k];
            }
        }
        for (int k = 0; j + k < len; k++) {
            acc[k] += loss[j + k];
        }
    }
    sums[0] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) +
              ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    sums[1] = 0.0;
}

/*
 * g += the units of block b in item space, in their order: g[a] += coef[q],
 * g[b] -= coef[q] for a comparison, g[rank[k]] += coef[q, k] for a group.
 */
static void scatter_block(const rlhf_bt *p, ptrdiff_t b, const double *coef,
                          double *g)
{
    const ptrdiff_t n = n_units(p), width = unit_width(p);
    const ptrdiff_t stop = (b + 1) * BT_BLOCK < n ? (b + 1) * BT_BLOCK : n;
    if (p->likelihood == RLHF_PLACKETT_LUCE) {
        for (ptrdiff_t q = b * BT_BLOCK; q < stop; q++) {
            const int64_t *rank = p->rankings + q * width;
            for (ptrdiff_t k = 0; k < width && rank[k] >= 0; k++) {
                g[rank[k]] += coef[q * width + k];
            }
        }
        return;
    }
    for (ptrdiff_t q = b * BT_BLOCK; q < stop; q++) {
        g[p->comparisons[2 * q]] += coef[q];
        g[p->comparisons[2 * q + 1]] -= coef[q];
    }
}

/*
 * Block b of the units at scores r: coef (and lse for Plackett-Luce) for
 * its units, and into sums[0], sums[1] its weighted loss and d/du.
 */
static void unit_block(const rlhf_bt *p, const double *r, double u,
                       ptrdiff_t b, double *coef, double *lse, double *sums,
                       int strict)
{
    const ptrdiff_t n = n_units(p), width = unit_width(p);
    const ptrdiff_t stop = (b + 1) * BT_BLOCK < n ? (b + 1) * BT_BLOCK : n;
    if (strict) {
        strict_block(p, r, b * BT_BLOCK, stop, coef, sums);
        return;
    }
    double loss = 0.0, dsum = 0.0;
    for (ptrdiff_t q = b * BT_BLOCK; q < stop; q++) {
        const double s = weight_of(p, q);
        if (p->likelihood == RLHF_PLACKETT_LUCE) {
            double *c = coef + q * width;
            loss += s * group_term(p, q, r, c, lse + q * width);
            for (ptrdiff_t k = 0; k < width; k++) {
                c[k] *= s;
            }
            continue;
        }
        const int64_t a = p->comparisons[2 * q];
        const int64_t o = p->comparisons[2 * q + 1];
        const int tied = p->tie != NULL && p->tie[q];
        double d = r[a] - r[o];
        if (p->margin != NULL && !tied) {
            d -= p->margin[q];
        }
        bt_term t;
        pair_term(p->tie_model, tied, d, u, &t);
        loss += s * t.l;
        dsum += s * t.lu;
        coef[q] = s * t.ld;
    }
    sums[0] = loss;
    sums[1] = dsum;
}

/*
 * Loss (into *loss_out) and the gradient in item space g (and d/du) at
 * scores r.  Blocks go a group at a time (about RLHF_CHECK_ENTRIES
 * comparisons or ranking entries), with an interrupt check between
 * groups.  The scatter into g is serial, in the units' order, but
 * overlaps the blocks still being computed: whichever thread finishes a
 * block becomes the scatterer when there is none, and scatters every
 * finished block from the frontier on until it meets one not yet
 * finished (the flags and the frontier change in one critical section, so
 * no finished block is left behind).  Returns 0 or RLHF_EINTR.
 */
static int item_loss_grad(const rlhf_bt *p, const double *r, double u,
                          double *g, double *du, double *loss_out)
{
    const ptrdiff_t n = n_units(p), width = unit_width(p);
    const ptrdiff_t nb = n_blocks(n);
    double *coef = p->scratch + 2 * p->n_items;
    double *lse = coef + n * width;
    double *sums = p->likelihood == RLHF_PLACKETT_LUCE ? lse + n * width
                                                       : lse;
    double *finished = sums + 2 * nb; /* 1 once block b's coef is written */
    ptrdiff_t frontier = 0;           /* blocks [0, frontier) are in g */
    int scattering = 0;               /* a thread is scattering */
    const ptrdiff_t group = rlhf_check_group(BT_BLOCK * width,
                                             n_threads_for(p, nb));
    /* the common case: Bradley-Terry without a tie model */
    const int strict = p->likelihood != RLHF_PLACKETT_LUCE &&
                       p->tie_model == RLHF_TIES_NONE;

    memset(g, 0, (size_t)p->n_items * sizeof(double));
    memset(finished, 0, (size_t)nb * sizeof(double));
    for (ptrdiff_t b0 = 0; b0 < nb; b0 += group) {
        if (b0 > 0 && rlhf_interrupted()) {
            return RLHF_EINTR;
        }
        const ptrdiff_t b1 = b0 + group < nb ? b0 + group : nb;
        /* dynamic: the scatterer takes fewer blocks */
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) \
    num_threads(n_threads_for(p, nb))
#endif
        for (ptrdiff_t b = b0; b < b1; b++) {
            unit_block(p, r, u, b, coef, lse, sums + 2 * b, strict);
            int mine = 0;
#ifdef _OPENMP
#pragma omp critical(rlhf_bt_scatter)
#endif
            {
                finished[b] = 1.0;
                if (!scattering) {
                    scattering = 1;
                    mine = 1;
                }
            }
            ptrdiff_t next = -1;
            while (mine) {
#ifdef _OPENMP
#pragma omp critical(rlhf_bt_scatter)
#endif
                {
                    if (next >= 0) {
                        frontier = next + 1;
                    }
                    if (frontier < nb && finished[frontier] != 0.0) {
                        next = frontier;
                    }
                    else {
                        scattering = 0;
                        mine = 0;
                    }
                }
                if (mine) {
                    scatter_block(p, next, coef, g);
                }
            }
        }
    }

    double loss = 0.0;
    *du = 0.0;
    for (ptrdiff_t b = 0; b < nb; b++) {
        loss += sums[2 * b];
        *du += sums[2 * b + 1];
    }
    *loss_out = loss;
    return 0;
}


/*
 * The objective as an rlhf_objective: problem is an rlhf_bt*, x holds the
 * n_coef coefficients then u when a tie model is on.  Returns 0, or
 * RLHF_EINTR.
 */
int rlhf_bt_loss_grad(void *problem, const double *x, double *loss,
                      double *grad)
{
    const rlhf_bt *p = problem;
    const ptrdiff_t nc = n_coef(p);
    double *r = p->scratch;
    double *g = r + p->n_items;
    double *parts = p->scratch + rlhf_bt_scratch_size(p) -
                    (!p->F_identity && p->F.dense != NULL
                         ? n_blocks(p->n_items) * p->F.n_cols : 0);
    const double u = p->tie_model != RLHF_TIES_NONE ? x[nc] : 0.0;
    double du = 0.0;

    scores(p, x, r);
    double data_loss = 0.0;
    const int status = item_loss_grad(p, r, u, g, &du, &data_loss);
    if (status != 0) {
        return status;
    }
    features_t(p, g, grad, parts);
    double norm2 = 0.0;
    for (ptrdiff_t j = 0; j < nc; j++) {
        norm2 += x[j] * x[j];
        grad[j] += p->alpha * x[j];
    }
    if (p->tie_model != RLHF_TIES_NONE) {
        grad[nc] = du;
    }
    /* alpha = 0: no penalty, even where ||x||^2 overflows (0 * inf) */
    *loss = data_loss + (p->alpha != 0.0 ? 0.5 * p->alpha * norm2 : 0.0);
    return 0;
}

/*
 * The Hessian in item space as a list of local blocks: calls back for
 * every pair of positions of every unit.  Builds, for identity features,
 * the item Hessian directly; otherwise G = H_items @ F (n_items x d, in
 * the caller's buffer) and the cross terms v (n_items) with u, and the
 * (u, u) entry.
 */
static int item_hessian(const rlhf_bt *p, const double *r, double u,
                        double *H, ptrdiff_t np, double *G, double *v,
                        double *Bpl, double *huu_out)
{
    const ptrdiff_t d = p->F_identity ? 0 : p->F.n_cols;
    const int dense = !p->F_identity && p->F.dense != NULL;
    const ptrdiff_t width = unit_width(p);
    double huu = 0.0;

    /* local item indices and Hessian block of one unit */
    for (ptrdiff_t q = 0; q < n_units(p); q++) {
        if ((q & 4095) == 4095 && rlhf_interrupted()) {
            return RLHF_EINTR;
        }
        const double s = weight_of(p, q);
        int64_t idx[2];
        const int64_t *items;
        ptrdiff_t K;
        double B2[4], cross[2];
        const double *B;
        if (p->likelihood == RLHF_PLACKETT_LUCE) {
            items = p->rankings + q * width;
            K = group_length(p, q);
            if (K < 2) {
                continue;
            }
            /* sum over positions k < K-1 of diag(pk) - pk pk^T on the
             * suffix, pk = softmax(r[items[k:]]) */
            double *lse = Bpl + K * K;
            lse[K - 1] = r[items[K - 1]];
            for (ptrdiff_t k = K - 2; k >= 0; k--) {
                const double a = r[items[k]], b = lse[k + 1];
                lse[k] = fmax(a, b) + log1p(exp(-fabs(a - b)));
            }
            memset(Bpl, 0, (size_t)(K * K) * sizeof(double));
            for (ptrdiff_t k = 0; k + 1 < K; k++) {
                for (ptrdiff_t i = k; i < K; i++) {
                    const double pi = exp(r[items[i]] - lse[k]);
                    Bpl[i * K + i] += s * pi;
                    for (ptrdiff_t j = k; j < K; j++) {
                        Bpl[i * K + j] -= s * pi * exp(r[items[j]] - lse[k]);
                    }
                }
            }
            B = Bpl;
            cross[0] = cross[1] = 0.0;
        }
        else {
            idx[0] = p->comparisons[2 * q];
            idx[1] = p->comparisons[2 * q + 1];
            items = idx;
            K = 2;
            const int tied = p->tie != NULL && p->tie[q];
            double dd = r[idx[0]] - r[idx[1]];
            if (p->margin != NULL && !tied) {
                dd -= p->margin[q];
            }
            bt_term t;
            pair_term(p->tie_model, tied, dd, u, &t);
            const double h = s * t.ldd;
            B2[0] = h;
            B2[1] = -h;
            B2[2] = -h;
            B2[3] = h;
            B = B2;
            cross[0] = s * t.ldu;
            cross[1] = -s * t.ldu;
            huu += s * t.luu;
            if (dense) {
                /* G[a] += h (F[a] - F[b]), G[b] -= h (F[a] - F[b]) */
                const double *fa = p->F.dense + idx[0] * d;
                const double *fb = p->F.dense + idx[1] * d;
                double *ga = G + idx[0] * d, *gb = G + idx[1] * d;
                for (ptrdiff_t k = 0; k < d; k++) {
                    const double diff = h * (fa[k] - fb[k]);
                    ga[k] += diff;
                    gb[k] -= diff;
                }
                if (p->tie_model != RLHF_TIES_NONE) {
                    v[idx[0]] += cross[0];
                    v[idx[1]] += cross[1];
                }
                continue;
            }
        }
        for (ptrdiff_t i = 0; i < K; i++) {
            const int64_t a = items[i];
            if (p->tie_model != RLHF_TIES_NONE) {
                v[a] += cross[i];
            }
            for (ptrdiff_t j = 0; j < K; j++) {
                const double bij = B[i * K + j];
                if (bij == 0.0) {
                    continue;
                }
                const int64_t c = items[j];
                if (p->F_identity) {
                    if (a <= c) {
                        H[a * np + c] += bij;
                    }
                }
                else if (dense) {
                    /* G[a] += bij * F[c] */
                    const double *fc = p->F.dense + c * d;
                    double *ga = G + a * d;
                    for (ptrdiff_t k = 0; k < d; k++) {
                        ga[k] += bij * fc[k];
                    }
                }
                else {
                    double *ga = G + a * d;
                    for (int64_t k = p->F.indptr[c]; k < p->F.indptr[c + 1];
                         k++) {
                        ga[p->F.indices[k]] += bij * p->F.data[k];
                    }
                }
            }
        }
    }
    *huu_out = huu;
    return 0;
}

/*
 * H[:d, :d] += F^T G and H[:d, d] += F^T v (upper triangle) for dense F,
 * in blocks of items whose partial sums are added in block order.
 */
static int hessian_dense_ftg(const rlhf_bt *p, const double *G,
                             const double *v, double *H, ptrdiff_t np,
                             int ties)
{
    const ptrdiff_t d = p->F.n_cols, w = d + 1;
    const ptrdiff_t nb = n_blocks(p->n_items);
    double *parts = calloc((size_t)(nb * d * w), sizeof(double));
    if (parts == NULL) {
        return RLHF_ENOMEM;
    }
    const ptrdiff_t group = rlhf_check_group(BT_BLOCK * d * w / 2 + 1,
                                             n_threads_for(p, nb));
    for (ptrdiff_t b0 = 0; b0 < nb; b0 += group) {
        if (b0 > 0 && rlhf_interrupted()) {
            free(parts);
            return RLHF_EINTR;
        }
        const ptrdiff_t b1 = b0 + group < nb ? b0 + group : nb;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(n_threads_for(p, nb))
#endif
        for (ptrdiff_t blk = b0; blk < b1; blk++) {
            double *part = parts + blk * d * w;
            const ptrdiff_t stop = (blk + 1) * BT_BLOCK < p->n_items
                                       ? (blk + 1) * BT_BLOCK : p->n_items;
            for (ptrdiff_t i = blk * BT_BLOCK; i < stop; i++) {
                const double *fi = p->F.dense + i * d, *gi = G + i * d;
                for (ptrdiff_t a = 0; a < d; a++) {
                    double *row = part + a * w;
                    const double fa = fi[a];
                    for (ptrdiff_t b = a; b < d; b++) {
                        row[b] += fa * gi[b];
                    }
                    row[d] += fa * v[i];
                }
            }
        }
    }
    for (ptrdiff_t blk = 0; blk < nb; blk++) {
        const double *part = parts + blk * d * w;
        for (ptrdiff_t a = 0; a < d; a++) {
            for (ptrdiff_t b = a; b < d; b++) {
                H[a * np + b] += part[a * w + b];
            }
            if (ties) {
                H[a * np + d] += part[a * w + d];
            }
        }
    }
    free(parts);
    return 0;
}

/* Doubles of scratch rlhf_bt_hessian allocates itself. */
static ptrdiff_t hessian_buffer_size(const rlhf_bt *p)
{
    /* v, a Plackett-Luce block and its lse, G */
    ptrdiff_t size = p->n_items + p->group_size * (p->group_size + 1);
    if (!p->F_identity) {
        size += p->n_items * p->F.n_cols;
    }
    return size;
}

/*
 * The Hessian of f at x, row-major into H (np x np, np =
 * rlhf_bt_n_params): F^T H_items F + alpha I on the coefficients, the
 * cross terms F^T v with u, and the (u, u) entry.  With identity features
 * and no penalty, f does not change along the all-ones direction of the
 * strengths; the returned matrix then adds mean(diag) * 1 1^T / n_items,
 * which fixes the mean strength without changing the Newton step within
 * the mean-zero subspace the gradient lives in.
 * Returns 0, RLHF_ENOMEM, or RLHF_EINTR (H is then incomplete).
 */
int rlhf_bt_hessian(void *problem, const double *x, double *H)
{
    const rlhf_bt *p = problem;
    const ptrdiff_t nc = n_coef(p), np = rlhf_bt_n_params(p);
    const int ties = p->tie_model != RLHF_TIES_NONE;
    const double u = ties ? x[nc] : 0.0;
    double *r = p->scratch;
    double *buf = calloc((size_t)hessian_buffer_size(p), sizeof(double));
    if (buf == NULL) {
        return RLHF_ENOMEM;
    }
    double *v = buf;
    double *Bpl = v + p->n_items;
    double *G = p->F_identity ? NULL
                              : Bpl + p->group_size * (p->group_size + 1);

    memset(H, 0, (size_t)(np * np) * sizeof(double));
    scores(p, x, r);
    double huu = 0.0;
    int status = item_hessian(p, r, u, H, np, G, v, Bpl, &huu);
    if (status != 0) {
        free(buf);
        return status;
    }
    if (!p->F_identity && p->F.dense != NULL) {
        status = hessian_dense_ftg(p, G, v, H, np, ties);
        if (status != 0) {
            free(buf);
            return status;
        }
    }
    else if (!p->F_identity) {
        /* H_ww = F^T G, H_wu = F^T v (upper triangle) */
        const ptrdiff_t d = nc;
        for (ptrdiff_t i = 0; i < p->n_items; i++) {
            if ((i & 1023) == 1023 && rlhf_interrupted()) {
                free(buf);
                return RLHF_EINTR;
            }
            const double *gi = G + i * d;
            for (int64_t k = p->F.indptr[i]; k < p->F.indptr[i + 1]; k++) {
                const ptrdiff_t a = p->F.indices[k];
                const double fa = p->F.data[k];
                double *row = H + a * np;
                for (ptrdiff_t b = a; b < d; b++) {
                    row[b] += fa * gi[b];
                }
                if (ties) {
                    row[nc] += fa * v[i];
                }
            }
        }
    }
    else if (ties) {
        for (ptrdiff_t i = 0; i < nc; i++) {
            H[i * np + nc] += v[i];
        }
    }
    for (ptrdiff_t j = 0; j < nc; j++) {
        H[j * np + j] += p->alpha;
    }
    if (ties) {
        H[nc * np + nc] += huu;
    }
    if (p->F_identity && p->alpha == 0.0 && nc > 0) {
        double mean_diag = 0.0;
        for (ptrdiff_t j = 0; j < nc; j++) {
            mean_diag += H[j * np + j];
        }
        mean_diag /= (double)nc;
        const double c = (mean_diag > 0.0 ? mean_diag : 1.0) / (double)nc;
        for (ptrdiff_t i = 0; i < nc; i++) {
            for (ptrdiff_t j = i; j < nc; j++) {
                H[i * np + j] += c;
            }
        }
    }
    free(buf);
    return 0;
}

/*
 * Minimise the objective of problem from x (length rlhf_bt_n_params,
 * overwritten by the solution) with Newton's method (newton != 0) or
 * L-BFGS (m = 10, maxls = 50).  Both stop when the largest gradient
 * component is at most tol * max(1, its value at the start); L-BFGS also
 * when f decreases by less than 64 eps relative.  work holds
 * rlhf_bt_work_size(problem, newton) doubles.  Returns a solver outcome
 * (RLHF_CONVERGED_GTOL, ...) or a negative RLHF_E... status.
 */
ptrdiff_t rlhf_bt_work_size(const rlhf_bt *p, int newton)
{
    const ptrdiff_t np = rlhf_bt_n_params(p);
    return newton ? rlhf_newton_work_size(np) : rlhf_lbfgs_work_size(np, 10);
}

int rlhf_bt_fit(rlhf_bt *p, int newton, double *x, double *f, double *g,
                double tol, int max_iter, double *work, int *n_iter,
                int *n_fev)
{
    const ptrdiff_t np = rlhf_bt_n_params(p);
    if (newton) {
        return rlhf_newton_minimize(rlhf_bt_loss_grad, rlhf_bt_hessian, p, np,
                                    x, f, g, tol, max_iter, work, n_iter,
                                    n_fev);
    }
    return rlhf_lbfgs_minimize(rlhf_bt_loss_grad, p, np, x, f, g, 10, -tol,
                               64.0 * DBL_EPSILON, max_iter, 50, work,
                               n_iter, n_fev);
}

/*
 * Pairwise accuracy's counts at rewards r (n_items): over the comparisons
 * not tied (tie NULL: every one), counts[0] those whose first item has
 * the higher reward, counts[1] those with equal rewards, counts[2] all of
 * them.  An index outside [0, n_items) is clamped into it as it is read,
 * so that pairs may be a buffer another thread writes into meanwhile
 * (callers check indices first; this keeps a stray one from reading out
 * of bounds): each index is loaded once, through a volatile pointer, so
 * that the clamped value is the one used.  Integer sums: the same for any thread count.  Returns 0 or
 * RLHF_EINTR.
 */
int rlhf_pair_counts(const double *r, ptrdiff_t n_items, const int64_t *pairs,
                     ptrdiff_t n_pairs, const uint8_t *tie, int n_threads,
                     int64_t *counts)
{
    int64_t wins = 0, equal = 0, total = 0;
    const ptrdiff_t step = RLHF_CHECK_ENTRIES;
#ifndef _OPENMP
    (void)n_threads;
#endif
    for (ptrdiff_t q0 = 0; q0 < n_pairs; q0 += step) {
        if (q0 > 0 && rlhf_interrupted()) {
            return RLHF_EINTR;
        }
        const ptrdiff_t q1 = q0 + step < n_pairs ? q0 + step : n_pairs;
        int64_t w = 0, e = 0, t = 0;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) reduction(+ : w, e, t) \
    num_threads(q1 - q0 >= 65536 ? rlhf_threads(n_threads) : 1)
#endif
        for (ptrdiff_t q = q0; q < q1; q++) {
            const volatile int64_t *pair = pairs + 2 * q;
            int64_t a = pair[0], b = pair[1];
            a = a < 0 ? 0 : (a >= n_items ? n_items - 1 : a);
            b = b < 0 ? 0 : (b >= n_items ? n_items - 1 : b);
            const int strict = tie == NULL || !tie[q];
            const double d = r[a] - r[b];
            w += strict & (d > 0.0);
            e += strict & (d == 0.0);
            t += strict;
        }
        wins += w;
        equal += e;
        total += t;
    }
    counts[0] = wins;
    counts[1] = equal;
    counts[2] = total;
    return 0;
}

/*
 * Whether rlhf_bt_transpose applies: sparse features whose row indices
 * fit an int32_t.
 */
int rlhf_bt_has_transpose(const rlhf_bt *p)
{
    return !p->F_identity && p->F.dense == NULL &&
           p->n_items <= (ptrdiff_t)INT32_MAX;
}

/*
 * Sparse F by columns (CSC): indptr (n_cols + 1), rows and data (nnz
 * each), each column's entries in ascending row order.  A counting sort,
 * once per problem; with it F^T g is summed over columns in parallel, in
 * the serial scatter's order.  Returns 0 or RLHF_EINTR.
 */
int rlhf_bt_transpose(const rlhf_bt *p, int64_t *indptr, int32_t *rows,
                      double *data)
{
    const rlhf_matrix *F = &p->F;
    const ptrdiff_t d = F->n_cols, n = F->n_rows;
    const ptrdiff_t rows_per_check = rlhf_check_rows(
        n > 0 ? (F->indptr[n] + n - 1) / n : 1);
    memset(indptr, 0, (size_t)(d + 1) * sizeof(int64_t));
    for (ptrdiff_t i = 0; i < n; i++) {
        if (i > 0 && i % rows_per_check == 0 && rlhf_interrupted()) {
            return RLHF_EINTR;
        }
        for (int64_t k = F->indptr[i]; k < F->indptr[i + 1]; k++) {
            indptr[F->indices[k] + 1]++;
        }
    }
    for (ptrdiff_t j = 0; j < d; j++) {
        indptr[j + 1] += indptr[j];
    }
    /* indptr[j] as column j's cursor: it ends at column j + 1's start */
    for (ptrdiff_t i = 0; i < n; i++) {
        if (i > 0 && i % rows_per_check == 0 && rlhf_interrupted()) {
            return RLHF_EINTR;
        }
        for (int64_t k = F->indptr[i]; k < F->indptr[i + 1]; k++) {
            const int64_t at = indptr[F->indices[k]]++;
            rows[at] = (int32_t)i;
            data[at] = F->data[k];
        }
    }
    for (ptrdiff_t j = d; j > 0; j--) {
        indptr[j] = indptr[j - 1];
    }
    indptr[0] = 0;
    return 0;
}
