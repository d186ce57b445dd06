/*
 * constrained.c - the KL-regularised policy under an expected-cost budget,
 * row by row.
 *
 *   maximise   E_pi[r] - beta KL(pi || pi_ref)
 *   subject to E_pi[c] <= budget
 *
 * is solved exactly through its Lagrange dual (Boyd & Vandenberghe 2004,
 * "Convex optimization", ch. 5; the same dual as Safe RLHF's Lagrangian,
 * Dai et al. 2023, and constrained MDPs, Altman 1999).  For a multiplier
 * lam >= 0 the inner maximiser is the Gibbs policy
 *
 *   pi_lam(y) ∝ pi_ref(y) exp((r(y) - lam c(y)) / beta),
 *
 * and the dual g(lam) = beta log sum_y pi_ref(y) exp((r - lam c) / beta)
 * + lam budget is convex with g'(lam) = budget - E_{pi_lam}[c] and
 * g''(lam) = Var_{pi_lam}[c] / beta.  So
 *
 *   - E_{pi_0}[c] <= budget: the free optimum is feasible, lam = 0 exactly;
 *   - budget == c_min (the least cost with pi_ref > 0): the limit
 *     lam -> inf, where only the cheapest responses are feasible and the
 *     optimum is pi_ref exp(r / beta) renormalised on them;
 *   - otherwise E_{pi_lam}[c] = budget at one lam > 0, found by Newton's
 *     method on g' safeguarded by bisection inside a bracket [lo, hi] of
 *     the root (Press et al., "Numerical recipes", rtsafe), the bracket
 *     grown by doubling while hi is unknown.
 *
 * The policy at lam is computed in log space with the largest exponent
 * subtracted: rewards are shifted by their maximum and costs by c_min
 * (neither moves the optimum), u = r - lam c, and
 *   log pi_lam(y) = log pi_ref(y) + (u(y) - max u) / beta - log Z,
 * where (u - max u) / beta <= 0 may overflow to -inf (a weight of 0) but
 * never to NaN.  So rewards near +-1e300, beta near 1e-300 and reference
 * probabilities near 1e-300 give finite results.
 *
 * That finds lam to working accuracy.  But when beta is small against
 * the rewards, r and lam c cancel in u, and each unit lost in the last
 * place of u is multiplied by |r| / beta in the logits.  So the last
 * digits are found again (refine) with exact logits: lam = lam0 + t,
 * (u(y) - u(m)) = D(y) - t C(y) with D and C held as double-double sums
 * from error-free transformations, and t solved for by the same
 * safeguarded Newton.  The policy is then right to rounding even where
 * r - lam c cancels to far below beta.
 *
 * When beta is so small that even t is pinned down to adjacent doubles
 * lo < hi (E_lo > budget > E_hi) before the budget is met -- the limit
 * beta -> 0, a linear programme, where both end policies sit on the
 * responses tied at lam* -- the mixture w pi_lo + (1 - w) pi_hi that
 * meets the budget is returned, with lam the nearer end.  Its objective is
 * within O(beta) of the optimum; with three or more responses exactly
 * collinear in (c, r) it is one of the linear programme's optima rather
 * than the tilted limit of the entropic one.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "rlhf.h"

/* Iteration cap: doubling and halving cross the whole double range in
 * about 2 * 2100 steps; Newton needs a few dozen. */
#define RLHF_CONSTRAINED_MAX_ITER 5000

/*
 * The policy at lam into out (length k) and its expected cost and cost
 * variance (costs already shifted so that the cheapest is 0).
 * r_shift, c_shift: shifted rewards and costs; logp: log pi_ref (-inf off
 * the support).
 */
static void policy_at(const double *logp, const double *r_shift,
                      const double *c_shift, ptrdiff_t k, double beta,
                      double lam, double *out, double *mean, double *var)
{
    double u_max = -INFINITY;
    for (ptrdiff_t j = 0; j < k; j++) {
        if (logp[j] > -INFINITY) {
            /* u = r - lam c; lam c can overflow to inf, u then to -inf */
            double u = r_shift[j] - lam * c_shift[j];
            out[j] = u;
            u_max = u > u_max ? u : u_max;
        }
    }
    /* z = log pi_ref + (u - max u) / beta, z_max subtracted before exp */
    double z_max = -INFINITY;
    for (ptrdiff_t j = 0; j < k; j++) {
        if (logp[j] > -INFINITY) {
            double z = logp[j] + (out[j] - u_max) / beta;
            out[j] = z;
            z_max = z > z_max ? z : z_max;
        } else {
            out[j] = -INFINITY;
        }
    }
    double total = 0.0;
    for (ptrdiff_t j = 0; j < k; j++) {
        out[j] = exp(out[j] - z_max);
        total += out[j];
    }
    double m = 0.0;
    for (ptrdiff_t j = 0; j < k; j++) {
        out[j] /= total;
        m += out[j] * c_shift[j];
    }
    /* the centred form: E[c^2] - E[c]^2 cancels catastrophically */
    double v = 0.0;
    for (ptrdiff_t j = 0; j < k; j++) {
        double d = c_shift[j] - m;
        v += out[j] * d * d;
    }
    *mean = m;
    *var = v;
}

/* s + e = a + b exactly (Knuth's TwoSum, 1969) */
static inline void two_sum(double a, double b, double *s, double *e)
{
    double sum = a + b;
    double bb = sum - a;
    *s = sum;
    *e = (a - (sum - bb)) + (b - bb);
}

/* p + e = a * b exactly (Dekker 1971), the error by one fused
 * multiply-add */
static inline void two_prod(double a, double b, double *p, double *e)
{
    double prod = a * b;
    *p = prod;
    *e = fma(a, b, -prod);
}

/*
 * The last digits of the multiplier.  Near lam0 the logits are
 *   log pi_ref(y) + (D(y) - t C(y)) / beta,   lam = lam0 + t,
 * with D = r - r_m - lam0 (c - c_m) and C = c - c_m against an anchor m.
 * D and C are kept as unevaluated sums of two doubles (hi + lo) built by
 * error-free transformations, so D - t C is exact to a few units in its
 * own last place although r and lam0 c cancel in it: with a small beta
 * each unit lost there would be multiplied by |r| / beta in the logits.
 */
typedef struct {
    const double *logp, *c_shift;
    const double *d_hi, *d_lo, *c_hi, *c_lo;
    ptrdiff_t k;
    double beta;
} refinement;

static void policy_near(const refinement *q, double t, double *out,
                        double *mean, double *var)
{
    /* x = D - t C in double-double, then rounded; its maximum */
    double x_max = -INFINITY;
    for (ptrdiff_t j = 0; j < q->k; j++) {
        if (q->logp[j] > -INFINITY) {
            double p, ep, s, e;
            two_prod(t, q->c_hi[j], &p, &ep);
            two_sum(q->d_hi[j], -p, &s, &e);
            double x = s + (e + q->d_lo[j] - ep - t * q->c_lo[j]);
            out[j] = x;
            x_max = x > x_max ? x : x_max;
        }
    }
    /* z = log pi_ref + (x - max x) / beta <= log pi_ref, max z first */
    double z_max = -INFINITY;
    for (ptrdiff_t j = 0; j < q->k; j++) {
        if (q->logp[j] > -INFINITY) {
            double z = q->logp[j] + (out[j] - x_max) / q->beta;
            out[j] = z;
            z_max = z > z_max ? z : z_max;
        } else {
            out[j] = -INFINITY;
        }
    }
    double total = 0.0;
    for (ptrdiff_t j = 0; j < q->k; j++) {
        out[j] = exp(out[j] - z_max);
        total += out[j];
    }
    double m = 0.0;
    for (ptrdiff_t j = 0; j < q->k; j++) {
        out[j] /= total;
        m += out[j] * q->c_shift[j];
    }
    double v = 0.0;
    for (ptrdiff_t j = 0; j < q->k; j++) {
        double d = q->c_shift[j] - m;
        v += out[j] * d * d;
    }
    *mean = m;
    *var = v;
}

/*
 * Solve E[c] = b for the offset t from lam0 with the exact logits above:
 * the same safeguarded Newton as for lam, on a bracket [lo, hi] of t
 * (either end infinite until found; the bracket grows by doubling).  When
 * lo and hi become adjacent doubles before the budget is met, the two end
 * policies are mixed to meet it (see the top of the file).
 */
static int refine(const refinement *q, double lam0, double b, double tol,
                  double *out, double *other, double *multiplier)
{
    double lo = -INFINITY, hi = INFINITY, t = 0.0, mean, var;
    double step_old = INFINITY, step = INFINITY;
    /* the first bracketing step: about one unit in the last place of lam0 */
    double grow = fmax(DBL_EPSILON * lam0, DBL_MIN);
    policy_near(q, t, out, &mean, &var);
    for (int it = 0; it < RLHF_CONSTRAINED_MAX_ITER; it++) {
        double f = mean - b;
        if (fabs(f) <= tol) {
            *multiplier = lam0 + t;
            return 0;
        }
        if (f > 0.0) {
            lo = t;
        } else {
            hi = t;
        }
        double next = t + q->beta * f / var;
        int newton_ok = var > 0.0 && next > lo && next < hi &&
                        fabs(next - t) <= 0.5 * fabs(step_old);
        step_old = step;
        if (!newton_ok) {
            if (hi == INFINITY) {
                next = lo + grow;
                grow *= 2.0;
            } else if (lo == -INFINITY) {
                next = hi - grow;
                grow *= 2.0;
            } else {
                next = lo + 0.5 * (hi - lo);
            }
            if (!isfinite(next)) {
                return RLHF_ENONFINITE;
            }
        }
        if (!(next > lo && next < hi)) {
            /* lo and hi adjacent: mix the end policies to meet the budget */
            double mean_lo, mean_hi;
            policy_near(q, lo, out, &mean_lo, &var);
            policy_near(q, hi, other, &mean_hi, &var);
            double w = (b - mean_hi) / (mean_lo - mean_hi);
            w = w < 0.0 ? 0.0 : (w > 1.0 ? 1.0 : w);
            for (ptrdiff_t j = 0; j < q->k; j++) {
                out[j] = w * out[j] + (1.0 - w) * other[j];
            }
            *multiplier = lam0 + (w >= 0.5 ? lo : hi);
            return 0;
        }
        step = next - t;
        t = next;
        policy_near(q, t, out, &mean, &var);
    }
    return RLHF_MAX_ITER;
}

/*
 * One prompt.  p, r, c: length k, read only; p a distribution (checked by
 * the caller).  work: 8 k doubles of scratch.  out: length k.
 */
static int row(const double *p, const double *r, const double *c,
               ptrdiff_t k, double beta, double budget, double *out,
               double *multiplier, double *work)
{
    double *logp = work, *r_shift = work + k, *c_shift = work + 2 * k;
    double *other = work + 3 * k;
    double *d_hi = work + 4 * k, *d_lo = work + 5 * k;
    double *c_hi = work + 6 * k, *c_lo = work + 7 * k;
    double c_min = INFINITY, c_max = -INFINITY, r_max = -INFINITY;
    for (ptrdiff_t j = 0; j < k; j++) {
        if (!(p[j] >= 0.0) || !isfinite(p[j]) || !isfinite(r[j]) ||
            !isfinite(c[j])) {
            return RLHF_ENONFINITE;
        }
        if (p[j] > 0.0) {
            c_min = c[j] < c_min ? c[j] : c_min;
            c_max = c[j] > c_max ? c[j] : c_max;
            r_max = r[j] > r_max ? r[j] : r_max;
        }
    }
    if (!(c_min <= c_max)) {
        return RLHF_EVALUE; /* no reference mass at all */
    }
    if (!isfinite(budget)) {
        return RLHF_ENONFINITE;
    }
    if (budget < c_min) {
        return RLHF_EVALUE; /* infeasible: the caller names the numbers */
    }
    for (ptrdiff_t j = 0; j < k; j++) {
        logp[j] = p[j] > 0.0 ? log(p[j]) : -INFINITY;
        r_shift[j] = r[j] - r_max;
        c_shift[j] = c[j] - c_min;
    }
    const double b = budget - c_min;
    double mean, var;
    policy_at(logp, r_shift, c_shift, k, beta, 0.0, out, &mean, &var);
    if (mean <= b) {
        *multiplier = 0.0;
        return 0;
    }
    if (b == 0.0) {
        /* the limit lam -> inf: the KL-regularised optimum on the cheapest
         * responses, pi ∝ pi_ref exp(r / beta) on argmin c (the only
         * feasible support), max subtracted before exp */
        double z_max = -INFINITY, total = 0.0;
        for (ptrdiff_t j = 0; j < k; j++) {
            out[j] = (p[j] > 0.0 && c_shift[j] == 0.0)
                         ? logp[j] + r_shift[j] / beta
                         : -INFINITY;
            z_max = out[j] > z_max ? out[j] : z_max;
        }
        for (ptrdiff_t j = 0; j < k; j++) {
            out[j] = exp(out[j] - z_max);
            total += out[j];
        }
        for (ptrdiff_t j = 0; j < k; j++) {
            out[j] /= total;
        }
        *multiplier = INFINITY;
        return 0;
    }
    /* |E[c] - b| below this is the rounding of the sums */
    const double tol = 8.0 * DBL_EPSILON * (c_max - c_min) *
                       (1.0 + log((double)k));
    /* 1. lam to working accuracy: safeguarded Newton from 0 */
    double lo = 0.0, hi = INFINITY;
    double lam = 0.0, step_old = INFINITY, step = INFINITY;
    int it = 0;
    for (; it < RLHF_CONSTRAINED_MAX_ITER; it++) {
        /* f = E_lam[c] - b > 0 at lam: lam is a lower end of the bracket */
        double f = mean - b;
        if (fabs(f) <= tol) {
            break;
        }
        if (f > 0.0) {
            lo = lam;
        } else {
            hi = lam;
        }
        /* Newton on g'(lam) = b - E[c]: lam + beta (E - b) / Var */
        double next = lam + beta * f / var;
        int newton_ok = var > 0.0 && next > lo && next < hi &&
                        fabs(next - lam) <= 0.5 * fabs(step_old);
        step_old = step;
        if (!newton_ok) {
            if (hi == INFINITY) {
                next = lo > 0.0 ? 2.0 * lo
                                : (var > 0.0 && isfinite(beta * f / var) &&
                                   beta * f / var > 0.0
                                       ? beta * f / var
                                       : 1.0);
                if (!isfinite(next)) {
                    return RLHF_ENONFINITE; /* lam* beyond DBL_MAX */
                }
            } else if (lo > 0.0 && hi > 4.0 * lo) {
                next = sqrt(lo) * sqrt(hi); /* bisect the exponent */
            } else if (lo == 0.0 && hi > 4.0 * DBL_MIN) {
                next = 0.25 * hi;
            } else {
                next = lo + 0.5 * (hi - lo);
            }
        }
        if (!(next > lo && next < hi)) {
            lam = lo; /* lo and hi adjacent doubles */
            break;
        }
        step = next - lam;
        lam = next;
        policy_at(logp, r_shift, c_shift, k, beta, lam, out, &mean, &var);
    }
    if (it == RLHF_CONSTRAINED_MAX_ITER) {
        return RLHF_MAX_ITER;
    }
    /* 2. the last digits, with exact logits around lam; the anchor m is the
     * response of largest r - lam c */
    ptrdiff_t m = -1;
    double u_max = -INFINITY;
    for (ptrdiff_t j = 0; j < k; j++) {
        double u = r[j] - lam * c[j];
        if (p[j] > 0.0 && (m < 0 || u > u_max)) {
            m = j;
            u_max = u;
        }
    }
    for (ptrdiff_t j = 0; j < k; j++) {
        /* D = (r - r_m) - lam (c - c_m), C = c - c_m, each as hi + lo */
        double sr, er, pc, epc, s, e;
        two_sum(r[j], -r[m], &sr, &er);
        two_sum(c[j], -c[m], &c_hi[j], &c_lo[j]);
        two_prod(lam, c_hi[j], &pc, &epc);
        two_sum(sr, -pc, &s, &e);
        double tail = e + er - epc - lam * c_lo[j];
        d_hi[j] = s + tail;
        d_lo[j] = tail - (d_hi[j] - s);
    }
    refinement q = {logp, c_shift, d_hi, d_lo, c_hi, c_lo, k, beta};
    return refine(&q, lam, b, tol, out, other, multiplier);
}

/*
 * reference_policy, rewards, costs   n_rows * n_actions, row-major, read
 *                                    only; each reference row a
 *                                    distribution (entries >= 0, sum 1)
 * budget                             n_rows, read only
 * policy                             n_rows * n_actions, written
 * multiplier                         n_rows, written (0, a positive
 *                                    number, or +inf for budget == c_min)
 * Returns 0; RLHF_ENOMEM when the scratch (8 n_actions doubles) cannot
 * be allocated; RLHF_ENONFINITE for a NaN or infinity in the inputs, a
 * negative reference entry, or a multiplier beyond DBL_MAX;
 * RLHF_EVALUE when a row's budget is below its least achievable cost or
 * a reference row is all zeros; RLHF_MAX_ITER if the iteration cap was
 * reached (not seen in practice).  The first failing row is reported in
 * *bad_row (-1 when none failed).  Rows are independent: with OpenMP they
 * are shared among threads, each with its own scratch, and every row's
 * arithmetic is the same whatever the thread count.
 */
int rlhf_constrained_policy(const double *reference_policy,
                            const double *rewards, const double *costs,
                            const double *budget, ptrdiff_t n_rows,
                            ptrdiff_t n_actions, double beta, double *policy,
                            double *multiplier, ptrdiff_t *bad_row)
{
    *bad_row = -1;
    if (!(beta > 0.0) || !(beta <= DBL_MAX)) {
        return RLHF_EVALUE;
    }
    if (n_rows == 0 || n_actions == 0) {
        return 0;
    }
    int status = 0;
    ptrdiff_t first_bad = n_rows;
    /* a row costs several passes over its actions (the multiplier's
     * Newton steps, then the exact logits): check about as often as a
     * one-pass kernel does */
    const ptrdiff_t chunk = rlhf_check_rows(8 * n_actions);
    for (ptrdiff_t i0 = 0; i0 < n_rows && status == 0; i0 += chunk) {
        if (i0 > 0 && rlhf_interrupted()) {
            return RLHF_EINTR;
        }
        const ptrdiff_t i1 = i0 + chunk < n_rows ? i0 + chunk : n_rows;
#ifdef _OPENMP
#pragma omp parallel num_threads(rlhf_threads(0)) \
    if ((i1 - i0) * n_actions > 16384)
#endif
        {
            double *work = malloc((size_t)n_actions * 8 * sizeof(double));
            int mine = work == NULL ? RLHF_ENOMEM : 0;
            ptrdiff_t my_bad = work == NULL ? i0 : n_rows;
            if (work != NULL) {
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
                for (ptrdiff_t i = i0; i < i1; i++) {
                    ptrdiff_t at = i * n_actions;
                    int s = row(reference_policy + at, rewards + at,
                                costs + at, n_actions, beta, budget[i],
                                policy + at, multiplier + i, work);
                    if (s != 0 && i < my_bad) {
                        my_bad = i;
                        mine = s;
                    }
                }
            }
            free(work);
#ifdef _OPENMP
#pragma omp critical(rlhf_constrained_status)
#endif
            {
                /* the error of the first failing row (a failed
                 * allocation counts as the chunk's first row) */
                if (my_bad < first_bad) {
                    first_bad = my_bad;
                    status = mine;
                }
            }
        }
    }
    if (status != 0) {
        *bad_row = first_bad < n_rows ? first_bad : -1;
    }
    return status;
}
