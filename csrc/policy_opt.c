/*
 * policy_opt.c - policy optimisation on a contextual bandit: n_rows prompts,
 * each with k candidate responses, a policy given by its logits.
 *
 * Kernels (each has a NumPy twin of the same name in rlhf/_reference.py):
 *
 *   rlhf_log_softmax        logp = logits - logsumexp(logits), p = exp(logp)
 *   rlhf_sample_categorical y ~ p, from a counter-based generator
 *   rlhf_shape_rewards      r - kl_coef * k(x, y) for sampled responses
 *   rlhf_advantages         group baselines: mean, leave-one-out, GRPO
 *   rlhf_ppo_loss_grad      PPO's clipped surrogate and its gradient
 *   rlhf_dpo_loss_grad      DPO-family losses and their gradient
 *   rlhf_policy_stats       E_pi[r], KL(pi || pi_ref), H(pi), row means
 *   rlhf_adam_step          one Adam step (Kingma & Ba 2015)
 *
 * Every loop over rows writes only its own rows; sums over rows go through
 * per-row buffers added in row order afterwards, so results are bitwise the
 * same for any number of threads.
 */
#include <math.h>
#include <stdlib.h>

#include "numerics.h"
#include "fastexp.h"
#include "rlhf.h"

#define RLHF_PARALLEL_MIN 32768 /* entries below which one thread is used */

/*
 * logsumexp of one row as top + log_total, top its maximum: logp is then
 * formed as (z - top) - log_total, exact in z - top, so the rounding of a
 * large logit does not enter.  Max subtracted first, so nothing
 * overflows; -inf entries (responses of probability 0) are allowed.
 * Returns -1 when the row holds a NaN or +inf, or is all -inf.
 */
static int row_logsumexp(const double *z, ptrdiff_t k, double *top_out,
                         double *log_total)
{
    double top = -INFINITY;
    for (ptrdiff_t j = 0; j < k; j++) {
        if (!(z[j] < INFINITY)) {
            return -1; /* NaN or +inf */
        }
        top = z[j] > top ? z[j] : top;
    }
    if (top == -INFINITY) {
        return -1;
    }
    double total = 0.0;
    for (ptrdiff_t j = 0; j < k; j++) {
        total += exp_nonpositive(z[j] - top);
    }
    *top_out = top;
    *log_total = log(total);
    return 0;
}

#define RLHF_LANES 8

/* Helpers of the row loops, inlined into each instruction-set version of
 * their callers (GCC does not inline across target_clones otherwise). */
#if defined(__GNUC__)
#define RLHF_INLINE static inline __attribute__((always_inline))
#else
#define RLHF_INLINE static inline
#endif

/* sum of x[0..k) in eight fixed partial sums, the same order for every
 * instruction set: (((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7))) */
RLHF_INLINE double sum_lanes(const double *x, ptrdiff_t k)
{
    double part[RLHF_LANES] = {0.0};
    ptrdiff_t j = 0;
    for (; j + RLHF_LANES <= k; j += RLHF_LANES) {
        for (int l = 0; l < RLHF_LANES; l++) {
            part[l] += x[j + l];
        }
    }
    for (; j < k; j++) {
        part[0] += x[j];
    }
    return ((part[0] + part[1]) + (part[2] + part[3])) +
           ((part[4] + part[5]) + (part[6] + part[7]));
}

/*
 * e = exp(z - top) with top = max(z), and total = sum(e): the softmax's
 * parts, one exponential per entry.  Returns -1 when z holds a NaN or
 * +inf, or is all -inf: a NaN makes total NaN, +inf makes top +inf (and
 * total NaN), so two tests after the passes see them all.
 */
RLHF_INLINE int row_exp(const double *z, ptrdiff_t k, double *e,
                        double *top_out, double *total_out)
{
    double top = -INFINITY;
#ifdef RLHF_OMP_SIMD_MINMAX
#pragma omp simd reduction(max : top)
#endif
    for (ptrdiff_t j = 0; j < k; j++) {
        top = z[j] > top ? z[j] : top; /* exact in any order */
    }
    if (!(top > -INFINITY && top < INFINITY)) {
        return -1;
    }
#ifdef RLHF_OMP_SIMD
#pragma omp simd
#endif
    for (ptrdiff_t j = 0; j < k; j++) {
        e[j] = exp_nonpositive(z[j] - top);
    }
    const double total = sum_lanes(e, k);
    if (isnan(total)) {
        return -1;
    }
    *top_out = top;
    *total_out = total;
    return 0;
}

RLHF_CLONES
static int log_softmax_row(const double *z, ptrdiff_t k, double *logp,
                           double *p)
{
    double top, total;
    if (row_exp(z, k, p, &top, &total) < 0) {
        return -1;
    }
    const double log_total = log(total), inverse = 1.0 / total;
#ifdef RLHF_OMP_SIMD
#pragma omp simd
#endif
    for (ptrdiff_t j = 0; j < k; j++) {
        logp[j] = (z[j] - top) - log_total;
        p[j] *= inverse;
    }
    return 0;
}

/*
 * logits      n_rows * k, read only
 * logp        n_rows * k, written: (logits - max) -
 *             log(sum(exp(logits - max)))
 * p           n_rows * k, written: exp(logits - max) / sum(...)
 * Returns 0, or RLHF_ENONFINITE for a row with a NaN or +inf, or all -inf.
 */
int rlhf_log_softmax(const double *logits, ptrdiff_t n_rows, ptrdiff_t k,
                     double *logp, double *p)
{
    int status = 0;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(rlhf_threads(0)) \
    if (n_rows * k > RLHF_PARALLEL_MIN)
#endif
    for (ptrdiff_t i = 0; i < n_rows; i++) {
        if (log_softmax_row(logits + i * k, k, logp + i * k, p + i * k) < 0) {
#ifdef _OPENMP
#pragma omp critical(rlhf_status)
#endif
            status = RLHF_ENONFINITE;
        }
    }
    return status;
}

/*
 * policy      n_rows * k probabilities (rows need not be normalised)
 * out         n_rows * n_samples, written: response indices
 * Sample s of row i uses output counter + i * n_samples + s of the
 * generator and inverts the cumulative sum of the row, added left to
 * right: the first j with u * sum(row) < cumsum(row)[j]; rounding that
 * leaves u * sum on or past the last step picks the last response of
 * positive probability.  Returns 0, or RLHF_EVALUE for a row without
 * positive mass (or holding a negative or non-finite entry).
 */
int rlhf_sample_categorical(const double *policy, ptrdiff_t n_rows,
                            ptrdiff_t k, ptrdiff_t n_samples, uint64_t seed,
                            uint64_t counter, int64_t *out)
{
    int status = 0;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(rlhf_threads(0)) \
    if (n_rows * (k + n_samples) > RLHF_PARALLEL_MIN)
#endif
    for (ptrdiff_t i = 0; i < n_rows; i++) {
        const double *p = policy + i * k;
        double total = 0.0;
        ptrdiff_t last = -1;
        int bad = 0;
        for (ptrdiff_t j = 0; j < k; j++) {
            if (!(p[j] >= 0.0) || !isfinite(p[j])) {
                bad = 1;
            }
            total += p[j];
            if (p[j] > 0.0) {
                last = j;
            }
        }
        if (bad || last < 0 || !isfinite(total)) {
#ifdef _OPENMP
#pragma omp critical(rlhf_status)
#endif
            status = RLHF_EVALUE;
            continue;
        }
        for (ptrdiff_t s = 0; s < n_samples; s++) {
            uint64_t c = counter + (uint64_t)(i * n_samples + s);
            double target = splitmix_uniform(seed, c) * total;
            double cum = 0.0;
            ptrdiff_t pick = last;
            for (ptrdiff_t j = 0; j < k; j++) {
                cum += p[j];
                if (target < cum) {
                    pick = j;
                    break;
                }
            }
            out[i * n_samples + s] = (int64_t)pick;
        }
    }
    return status;
}

/* The per-sample KL estimate between the sampling policy and the
 * reference from the log-ratio d = log pi(y) - log pi_ref(y):
 *   k1 = d,   k3 = exp(-d) - 1 + d   (Schulman 2020, "Approximating KL
 * divergence"; both unbiased for KL(pi || pi_ref) under y ~ pi). */
static double kl_sample(double d, int kl_kind)
{
    return kl_kind == RLHF_KL_K3 ? expm1(-d) + d : d;
}

/*
 * Shaped rewards of sampled responses (the KL penalty in the reward, as in
 * Ziegler et al. 2019 and Stiennon et al. 2020):
 *   shaped[i, s] = rewards[i, y] - kl_coef * k(logp[i, y] - ref_logp[i, y])
 *   sample_logp[i, s] = logp[i, y],   y = actions[i, s]
 * rewards, logp, ref_logp  n_rows * k;  actions  n_rows * n_samples
 * (indices in [0, k), checked by the caller);  shaped, sample_logp written.
 * A response of probability 0 under logp gets its plain reward (it carries
 * no weight anywhere).  Returns 0.
 */
int rlhf_shape_rewards(const double *rewards, const double *logp,
                       const double *ref_logp, ptrdiff_t n_rows, ptrdiff_t k,
                       const int64_t *actions, ptrdiff_t n_samples,
                       double kl_coef, int kl_kind, double *shaped,
                       double *sample_logp)
{
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(rlhf_threads(0)) \
    if (n_rows * n_samples > RLHF_PARALLEL_MIN)
#endif
    for (ptrdiff_t i = 0; i < n_rows; i++) {
        for (ptrdiff_t s = 0; s < n_samples; s++) {
            ptrdiff_t y = (ptrdiff_t)actions[i * n_samples + s];
            double lp = logp[i * k + y];
            double r = rewards[i * k + y];
            if (lp > -INFINITY && kl_coef != 0.0) {
                r -= kl_coef * kl_sample(lp - ref_logp[i * k + y], kl_kind);
            }
            shaped[i * n_samples + s] = r;
            sample_logp[i * n_samples + s] = lp;
        }
    }
    return 0;
}

/*
 * Advantages within groups of responses to the same prompt:
 *   RLHF_BASELINE_MEAN   a = r - mean(r)
 *   RLHF_BASELINE_RLOO   a_s = r_s - mean_{t != s} r_t   (Kool et al. 2019,
 *                        "Buy 4 REINFORCE samples, get a baseline for free")
 *   RLHF_BASELINE_GRPO   a = (r - mean(r)) / (std(r) + eps), std with
 *                        n - 1 in the denominator (Shao et al. 2024,
 *                        "DeepSeekMath"); a group of equal rewards gets 0
 * rewards, out  n_groups * group_size.  Returns 0, or RLHF_EVALUE for
 * group_size < 2 with RLOO or GRPO.
 */
int rlhf_advantages(const double *rewards, ptrdiff_t n_groups,
                    ptrdiff_t group_size, int baseline, double eps,
                    double *out)
{
    if (baseline != RLHF_BASELINE_MEAN && group_size < 2) {
        return RLHF_EVALUE;
    }
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(rlhf_threads(0)) \
    if (n_groups * group_size > RLHF_PARALLEL_MIN)
#endif
    for (ptrdiff_t g = 0; g < n_groups; g++) {
        const double *r = rewards + g * group_size;
        double *a = out + g * group_size;
        double total = 0.0, lo = r[0], hi = r[0];
        for (ptrdiff_t s = 0; s < group_size; s++) {
            total += r[s];
            lo = r[s] < lo ? r[s] : lo;
            hi = r[s] > hi ? r[s] : hi;
        }
        const double mean = total / (double)group_size;
        if (baseline == RLHF_BASELINE_RLOO) {
            /* mean of the others: (total - r_s) / (n - 1) */
            for (ptrdiff_t s = 0; s < group_size; s++) {
                a[s] = r[s] - (total - r[s]) / (double)(group_size - 1);
            }
        } else if (baseline == RLHF_BASELINE_GRPO) {
            if (lo == hi) {
                /* r - mean may be a rounding error away from 0 here */
                for (ptrdiff_t s = 0; s < group_size; s++) {
                    a[s] = 0.0;
                }
                continue;
            }
            double squares = 0.0;
            for (ptrdiff_t s = 0; s < group_size; s++) {
                squares += (r[s] - mean) * (r[s] - mean);
            }
            const double scale =
                1.0 / (sqrt(squares / (double)(group_size - 1)) + eps);
            for (ptrdiff_t s = 0; s < group_size; s++) {
                a[s] = (r[s] - mean) * scale;
            }
        } else {
            for (ptrdiff_t s = 0; s < group_size; s++) {
                a[s] = r[s] - mean;
            }
        }
    }
    return 0;
}

/* One batch row of rlhf_ppo_loss_grad; coefs: n_samples scratch. */
RLHF_CLONES
static int ppo_row(const double *z, const double *ref, ptrdiff_t k,
                   const int64_t *actions, const double *weights,
                   const double *old_logp, const double *advantages,
                   ptrdiff_t n_samples, double clip, double kl_coef,
                   int kl_kind, double scale, double *g, double *coefs,
                   double *row_loss, double *row_clipped)
{
    double top, total;
    /* g = exp(z - top) for now, the softmax's numerators */
    if (row_exp(z, k, g, &top, &total) < 0) {
        return -1;
    }
    /* the logarithm of the normaliser only for the KL term */
    const double log_total = kl_coef != 0.0 ? log(total) : 0.0;
    const double inverse_total = 1.0 / total;
    double loss = 0.0, clipped_weight = 0.0, coef_total = 0.0;
    for (ptrdiff_t s = 0; s < n_samples; s++) {
        const double w = weights[s];
        coefs[s] = 0.0;
        if (w == 0.0) {
            continue;
        }
        const ptrdiff_t y = (ptrdiff_t)actions[s];
        /* rho = pi(y) / pi_old(y) with pi(y) = g[y] / total, without a
         * libm exp; the quotient of exp(lp - old) when pi_old(y) is below
         * the smallest normal number */
        const double old_p = exp_nonpositive(old_logp[s]);
        const double rho =
            old_p > 0.0 ? (g[y] * inverse_total) / old_p
                        : exp(((z[y] - top) - log(total)) - old_logp[s]);
        const double lp = (z[y] - top) - log_total;
        const double adv = advantages[s];
        const double rho_clipped =
            rho < 1.0 - clip ? 1.0 - clip
                             : (rho > 1.0 + clip ? 1.0 + clip : rho);
        const double plain = rho * adv, clipped = rho_clipped * adv;
        /* the gradient flows through the unclipped term when it is the
         * minimum */
        double coef = plain <= clipped ? -adv * rho : 0.0;
        double term = -(plain < clipped ? plain : clipped);
        if (kl_coef != 0.0) {
            const double d = lp - ref[y];
            const double dk = kl_kind == RLHF_KL_K3 ? -expm1(-d) : 1.0;
            term += kl_coef * rho * kl_sample(d, kl_kind);
            coef += kl_coef * rho * (kl_sample(d, kl_kind) + dk);
        }
        loss += w * term;
        clipped_weight += fabs(rho - 1.0) > clip ? w : 0.0;
        coefs[s] = coef * w * scale;
        coef_total += coefs[s];
    }
    /* g = -coef_total * softmax(z), then + coef_s at each sampled y */
    const double factor = -coef_total / total;
#ifdef RLHF_OMP_SIMD
#pragma omp simd
#endif
    for (ptrdiff_t j = 0; j < k; j++) {
        g[j] *= factor;
    }
    for (ptrdiff_t s = 0; s < n_samples; s++) {
        g[actions[s]] += coefs[s];
    }
    *row_loss = loss;
    *row_clipped = clipped_weight;
    return 0;
}

/*
 * PPO's clipped surrogate (Schulman et al. 2017, "Proximal policy
 * optimization algorithms", eq. 7) on a bandit, as a loss to minimise,
 * with an optional KL term in the loss:
 *
 *   rho = pi(y) / pi_old(y),  l = -w min(rho A, clip(rho, 1 - c, 1 + c) A)
 *                                 + kl_coef w rho k(log pi(y) - ref(y))
 *   loss = sum over the batch rows i, their samples s of l / n_batch
 *
 * The KL term is weighted by rho so that its expectation under pi_old is
 * KL(pi || pi_ref) itself for k1 and k3, and its gradient that of the
 * divergence (the unweighted k3 term's gradient is that of KL(pi_ref ||
 * pi) instead).  With logp = log softmax(logits[i]) the gradient of a
 * sample's term with respect to logits[i] is coef * (e_y - softmax), where
 *
 *   coef = w rho (-A [the unclipped term is the minimum]
 *                 + kl_coef (k + dk/dlog pi)),  dk1 = 1, dk3 = 1 - exp(-d).
 *
 * logits, ref_logp   n_rows * k
 * rows               n_batch distinct row indices in [0, n_rows)
 * actions, weights, old_logp, advantages   n_rows * n_samples (only the
 *                    batch rows are read); a sample of weight 0 is skipped
 * grad               n_rows * k, zero on entry; the batch rows are written
 * loss, clip_fraction  written: the batch means (the latter: weighted share
 *                    of samples with |rho - 1| > c)
 * Returns 0, RLHF_ENOMEM, or RLHF_ENONFINITE for a batch row of logits
 * holding a NaN or +inf or all -inf.
 */
int rlhf_ppo_loss_grad(const double *logits, const double *ref_logp,
                       ptrdiff_t n_rows, ptrdiff_t k, const int64_t *rows,
                       ptrdiff_t n_batch, const int64_t *actions,
                       const double *weights, const double *old_logp,
                       const double *advantages, ptrdiff_t n_samples,
                       double clip, double kl_coef, int kl_kind,
                       double *loss, double *grad, double *clip_fraction)
{
    (void)n_rows;
    const ptrdiff_t m = n_batch > 0 ? n_batch : 1;
    /* per batch row: its loss, its clipped weight, then its n_samples
     * gradient coefficients */
    double *scratch =
        malloc((size_t)(m * (2 + n_samples)) * sizeof(double));
    if (scratch == NULL) {
        return RLHF_ENOMEM;
    }
    int status = 0;
    const double scale = 1.0 / (double)m;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(rlhf_threads(0)) \
    if (n_batch * (k + n_samples) > RLHF_PARALLEL_MIN)
#endif
    for (ptrdiff_t b = 0; b < n_batch; b++) {
        const ptrdiff_t i = (ptrdiff_t)rows[b];
        double *row = scratch + b * (2 + n_samples);
        row[0] = row[1] = 0.0;
        if (ppo_row(logits + i * k, ref_logp + i * k, k,
                    actions + i * n_samples, weights + i * n_samples,
                    old_logp + i * n_samples, advantages + i * n_samples,
                    n_samples, clip, kl_coef, kl_kind, scale, grad + i * k,
                    row + 2, row, row + 1) < 0) {
#ifdef _OPENMP
#pragma omp critical(rlhf_status)
#endif
            status = RLHF_ENONFINITE;
        }
    }
    double total = 0.0, clipped = 0.0;
    for (ptrdiff_t b = 0; b < n_batch; b++) {
        total += scratch[b * (2 + n_samples)];
        clipped += scratch[b * (2 + n_samples) + 1];
    }
    free(scratch);
    *loss = total * scale;
    *clip_fraction = clipped * scale;
    return status;
}

/*
 * DPO-family losses on comparisons (x, chosen, rejected), with
 *   d = (log pi(chosen|x) - ref(chosen|x)) - (log pi(rejected|x) -
 *       ref(rejected|x)),   h = beta d:
 *   RLHF_DPO_SIGMOID  -(1 - e) log sigmoid(h) - e log sigmoid(-h)
 *                     (Rafailov et al. 2023; e: label smoothing, the
 *                     "conservative DPO" of Mitchell 2023)
 *   RLHF_DPO_ROBUST   (-(1 - e) log sigmoid(h) + e log sigmoid(-h)) /
 *                     (1 - 2e)  (Chowdhury et al. 2024, "Provably robust
 *                     DPO"), unbiased under label flips of rate e
 *   RLHF_DPO_HINGE    max(0, 1 - h)  (Zhao et al. 2023, SLiC-HF)
 *   RLHF_DPO_IPO      (d - 1 / (2 beta))^2  (Azar et al. 2023, IPO)
 * loss = sum_c w_c l_c / sum_c w_c.  The log-normaliser of row x cancels
 * in d, so the gradient with respect to logits[x] is dl/dd (e_chosen -
 * e_rejected) w_c / sum w.
 *
 * logits, ref_logp  n_rows * k;  comparisons  n_comparisons * 3 (indices
 * checked by the caller; ref_logp finite at every compared response)
 * weights  n_comparisons, non-negative with a positive sum
 * grad     n_rows * k, zero on entry, written
 * stats    3 doubles, written: weighted means of the chosen and rejected
 *          log-ratios log pi - log pi_ref, and of [d > 0] (accuracy)
 * Returns 0, RLHF_ENOMEM, RLHF_ENONFINITE for a row of logits with a NaN,
 * +inf or all -inf, RLHF_EVALUE for an unknown loss.
 */
int rlhf_dpo_loss_grad(const double *logits, const double *ref_logp,
                       ptrdiff_t n_rows, ptrdiff_t k,
                       const int64_t *comparisons, const double *weights,
                       ptrdiff_t n_comparisons, double beta, int loss_kind,
                       double label_smoothing, double *loss, double *grad,
                       double *stats)
{
    if (loss_kind < RLHF_DPO_SIGMOID || loss_kind > RLHF_DPO_IPO) {
        return RLHF_EVALUE;
    }
    /* lse[2 i], lse[2 i + 1]: top and log_total of row i; NaN if bad */
    double *lse =
        malloc((size_t)(2 * (n_rows > 0 ? n_rows : 1)) * sizeof(double));
    if (lse == NULL) {
        return RLHF_ENOMEM;
    }
    int status = 0;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(rlhf_threads(0)) \
    if (n_rows * k > RLHF_PARALLEL_MIN)
#endif
    for (ptrdiff_t i = 0; i < n_rows; i++) {
        if (row_logsumexp(logits + i * k, k, &lse[2 * i], &lse[2 * i + 1]) <
            0) {
            lse[2 * i] = NAN;
        }
    }
    double weight_total = 0.0;
    for (ptrdiff_t c = 0; c < n_comparisons; c++) {
        weight_total += weights[c];
    }
    const double e = label_smoothing;
    double total = 0.0, chosen_sum = 0.0, rejected_sum = 0.0, right = 0.0;
    /* one pass in comparison order: comparisons of one prompt share a row
     * of grad, so this loop stays serial */
    for (ptrdiff_t c = 0; c < n_comparisons; c++) {
        const ptrdiff_t x = (ptrdiff_t)comparisons[3 * c];
        const ptrdiff_t yw = (ptrdiff_t)comparisons[3 * c + 1];
        const ptrdiff_t yl = (ptrdiff_t)comparisons[3 * c + 2];
        const double w = weights[c] / weight_total;
        if (isnan(lse[2 * x])) {
            status = RLHF_ENONFINITE;
            break;
        }
        const double top = lse[2 * x], log_total = lse[2 * x + 1];
        const double chosen =
            ((logits[x * k + yw] - top) - log_total) - ref_logp[x * k + yw];
        const double rejected =
            ((logits[x * k + yl] - top) - log_total) - ref_logp[x * k + yl];
        /* the difference of logits, without the normaliser's rounding */
        const double d = (logits[x * k + yw] - ref_logp[x * k + yw]) -
                         (logits[x * k + yl] - ref_logp[x * k + yl]);
        const double h = beta * d;
        double l, dl_dd;
        switch (loss_kind) {
        case RLHF_DPO_SIGMOID:
            /* -log sigmoid(h) = log(1 + exp(-h)) */
            l = (1.0 - e) * log1pexp(-h) + e * log1pexp(h);
            dl_dd = beta * (-(1.0 - e) * sigmoid(-h) + e * sigmoid(h));
            break;
        case RLHF_DPO_ROBUST:
            l = ((1.0 - e) * log1pexp(-h) - e * log1pexp(h)) / (1.0 - 2.0 * e);
            dl_dd = beta * (-(1.0 - e) * sigmoid(-h) - e * sigmoid(h)) /
                    (1.0 - 2.0 * e);
            break;
        case RLHF_DPO_HINGE:
            l = h < 1.0 ? 1.0 - h : 0.0;
            dl_dd = h < 1.0 ? -beta : 0.0;
            break;
        default: /* RLHF_DPO_IPO */
            l = (d - 0.5 / beta) * (d - 0.5 / beta);
            dl_dd = 2.0 * (d - 0.5 / beta);
            break;
        }
        total += w * l;
        chosen_sum += w * chosen;
        rejected_sum += w * rejected;
        right += d > 0.0 ? w : 0.0;
        grad[x * k + yw] += w * dl_dd;
        grad[x * k + yl] -= w * dl_dd;
    }
    free(lse);
    *loss = total;
    stats[0] = chosen_sum;
    stats[1] = rejected_sum;
    stats[2] = right;
    return status;
}

/* One row of rlhf_policy_stats: (E_pi[r], KL, entropy) into out. */
RLHF_CLONES
static void stats_row(const double *logp, const double *ref_logp,
                      const double *rewards, ptrdiff_t k, double *out)
{
    double reward = 0.0, kl = 0.0, entropy = 0.0;
    for (ptrdiff_t j = 0; j < k; j++) {
        /* logp <= 0 up to rounding; exp_nonpositive is exact to ~1 ulp
         * there and flushes to 0 below DBL_MIN, where the terms vanish */
        const double p = exp_nonpositive(logp[j]);
        if (p > 0.0) {
            reward += p * rewards[j];
            kl += p * (logp[j] - ref_logp[j]);
            entropy -= p * logp[j];
        }
    }
    out[0] = reward;
    out[1] = kl;
    out[2] = entropy;
}

/*
 * Row means of E_pi[r], KL(pi || pi_ref) and the entropy H(pi), with
 * pi = exp(logp):
 *   out[0] = mean_i sum_j pi_ij r_ij
 *   out[1] = mean_i sum_{j: pi_ij > 0} pi_ij (logp_ij - ref_logp_ij)
 *   out[2] = mean_i -sum_{j: pi_ij > 0} pi_ij logp_ij
 * logp, ref_logp, rewards  n_rows * k;  out  3 doubles.
 * Returns 0 or RLHF_ENOMEM.
 */
int rlhf_policy_stats(const double *logp, const double *ref_logp,
                      const double *rewards, ptrdiff_t n_rows, ptrdiff_t k,
                      double *out)
{
    double *partial =
        malloc((size_t)(3 * (n_rows > 0 ? n_rows : 1)) * sizeof(double));
    if (partial == NULL) {
        return RLHF_ENOMEM;
    }
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(rlhf_threads(0)) \
    if (n_rows * k > RLHF_PARALLEL_MIN)
#endif
    for (ptrdiff_t i = 0; i < n_rows; i++) {
        stats_row(logp + i * k, ref_logp + i * k, rewards + i * k, k,
                  partial + 3 * i);
    }
    out[0] = out[1] = out[2] = 0.0;
    for (ptrdiff_t i = 0; i < n_rows; i++) {
        out[0] += partial[3 * i];
        out[1] += partial[3 * i + 1];
        out[2] += partial[3 * i + 2];
    }
    for (int q = 0; q < 3; q++) {
        out[q] /= (double)(n_rows > 0 ? n_rows : 1);
    }
    free(partial);
    return 0;
}

RLHF_CLONES
static void adam_range(double *theta, const double *grad, double *m,
                       double *v, ptrdiff_t lo, ptrdiff_t hi, double lr,
                       double beta1, double beta2, double eps, double c1,
                       double c2)
{
#ifdef RLHF_OMP_SIMD
#pragma omp simd
#endif
    for (ptrdiff_t q = lo; q < hi; q++) {
        m[q] = beta1 * m[q] + (1.0 - beta1) * grad[q];
        v[q] = beta2 * v[q] + (1.0 - beta2) * grad[q] * grad[q];
        theta[q] -= lr * (m[q] / c1) / (sqrt(v[q] / c2) + eps);
    }
}

#define RLHF_ADAM_CHUNK 8192

/*
 * One Adam step on a loss with gradient grad (Kingma & Ba 2015, "Adam: a
 * method for stochastic optimization", algorithm 1), step number t >= 1:
 *   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
 *   theta -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * theta, m, v  n values, updated in place (the caller's own state);
 * grad  n values, read only.  Returns 0, or RLHF_EVALUE for t < 1.
 */
int rlhf_adam_step(double *theta, const double *grad, double *m, double *v,
                   ptrdiff_t n, double lr, double beta1, double beta2,
                   double eps, int64_t t)
{
    if (t < 1) {
        return RLHF_EVALUE;
    }
    const double c1 = 1.0 - pow(beta1, (double)t);
    const double c2 = 1.0 - pow(beta2, (double)t);
    const ptrdiff_t n_chunks = (n + RLHF_ADAM_CHUNK - 1) / RLHF_ADAM_CHUNK;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(rlhf_threads(0)) \
    if (n > RLHF_PARALLEL_MIN)
#endif
    for (ptrdiff_t c = 0; c < n_chunks; c++) {
        const ptrdiff_t lo = c * RLHF_ADAM_CHUNK;
        const ptrdiff_t hi = lo + RLHF_ADAM_CHUNK < n ? lo + RLHF_ADAM_CHUNK
                                                      : n;
        adam_range(theta, grad, m, v, lo, hi, lr, beta1, beta2, eps, c1, c2);
    }
    return 0;
}

/* ppo_row at logits z = ref_logp + theta, formed here with the same
 * vector width as ppo_row reads it. */
RLHF_CLONES
static int fused_row(const double *theta, const double *ref, ptrdiff_t k,
                     const int64_t *actions, const double *weights,
                     const double *old_logp, const double *advantages,
                     ptrdiff_t n_samples, double clip, double kl_coef,
                     int kl_kind, double scale, double *z, double *g,
                     double *coefs, double *row_loss, double *row_clipped)
{
#ifdef RLHF_OMP_SIMD
#pragma omp simd
#endif
    for (ptrdiff_t j = 0; j < k; j++) {
        z[j] = ref[j] + theta[j];
    }
    return ppo_row(z, ref, k, actions, weights, old_logp, advantages,
                   n_samples, clip, kl_coef, kl_kind, scale, g, coefs,
                   row_loss, row_clipped);
}

/*
 * One fused PPO step for a tabular policy, logits = ref_logp + theta: the
 * gradient of rlhf_ppo_loss_grad row by row, each row followed at once by
 * its Adam update (rlhf_adam_step), so that theta, m and v are read and
 * written once per step and no gradient array is formed.  Rows outside
 * the batch get a zero gradient and still take their Adam step, as in the
 * unfused pair.  Same numbers as rlhf_ppo_loss_grad then rlhf_adam_step on
 * logits = ref_logp + theta.
 *
 * theta, m, v        n_rows * k, updated in place (the optimiser's state)
 * ref_logp           n_rows * k
 * rows ... kl_kind   as for rlhf_ppo_loss_grad
 * lr, beta1, beta2, eps, t   as for rlhf_adam_step
 * loss, clip_fraction  written, as for rlhf_ppo_loss_grad (at the logits
 *                    before the step)
 * Returns 0, RLHF_ENOMEM, RLHF_EVALUE for t < 1, or RLHF_ENONFINITE (then
 * theta, m and v may be partly updated).
 */
int rlhf_ppo_adam_step(double *theta, double *m, double *v,
                       const double *ref_logp, ptrdiff_t n_rows, ptrdiff_t k,
                       const int64_t *rows, ptrdiff_t n_batch,
                       const int64_t *actions, const double *weights,
                       const double *old_logp, const double *advantages,
                       ptrdiff_t n_samples, double clip, double kl_coef,
                       int kl_kind, double lr, double beta1, double beta2,
                       double eps, int64_t t, double *loss,
                       double *clip_fraction)
{
    if (t < 1) {
        return RLHF_EVALUE;
    }
    const double c1 = 1.0 - pow(beta1, (double)t);
    const double c2 = 1.0 - pow(beta2, (double)t);
    const ptrdiff_t mb = n_batch > 0 ? n_batch : 1;
    const double scale = 1.0 / (double)mb;
    /* position[i]: the place of row i in the batch, or -1; partial: per
     * batch row, its loss and clipped weight */
    ptrdiff_t *position =
        malloc((size_t)(n_rows > 0 ? n_rows : 1) * sizeof(ptrdiff_t));
    double *partial = malloc((size_t)(2 * mb) * sizeof(double));
    if (position == NULL || partial == NULL) {
        free(position);
        free(partial);
        return RLHF_ENOMEM;
    }
    for (ptrdiff_t i = 0; i < n_rows; i++) {
        position[i] = -1;
    }
    for (ptrdiff_t b = 0; b < n_batch; b++) {
        position[rows[b]] = b;
        partial[2 * b] = partial[2 * b + 1] = 0.0;
    }
    int status = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(rlhf_threads(0)) \
    if (n_rows * k > RLHF_PARALLEL_MIN)
#endif
    {
        /* per thread: logits, gradient and sample coefficients of a row */
        double *buffer =
            malloc((size_t)(2 * k + (n_samples > 0 ? n_samples : 1)) *
                   sizeof(double));
        if (buffer == NULL) {
#ifdef _OPENMP
#pragma omp critical(rlhf_status)
#endif
            status = RLHF_ENOMEM;
        }
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
        for (ptrdiff_t i = 0; i < n_rows; i++) {
            if (buffer == NULL) {
                continue;
            }
            double *z = buffer, *g = buffer + k, *coefs = buffer + 2 * k;
            const ptrdiff_t b = position[i];
            if (b >= 0) {
                if (fused_row(theta + i * k, ref_logp + i * k, k,
                              actions + i * n_samples, weights + i * n_samples,
                              old_logp + i * n_samples,
                              advantages + i * n_samples, n_samples, clip,
                              kl_coef, kl_kind, scale, z, g, coefs,
                              &partial[2 * b], &partial[2 * b + 1]) < 0) {
#ifdef _OPENMP
#pragma omp critical(rlhf_status)
#endif
                    status = RLHF_ENONFINITE;
                    continue;
                }
            } else {
                for (ptrdiff_t j = 0; j < k; j++) {
                    g[j] = 0.0;
                }
            }
            adam_range(theta + i * k, g, m + i * k, v + i * k, 0, k,
                       lr, beta1, beta2, eps, c1, c2);
        }
        free(buffer);
    }
    double total = 0.0, clipped = 0.0;
    for (ptrdiff_t b = 0; b < n_batch; b++) {
        total += partial[2 * b];
        clipped += partial[2 * b + 1];
    }
    free(position);
    free(partial);
    *loss = total * scale;
    *clip_fraction = clipped * scale;
    return status;
}
