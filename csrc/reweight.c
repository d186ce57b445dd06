/*
 * reweight.c - the lecture's policy update, row by row.
 *
 *   out[i, :] = softmax(log(policy[i, :] + eps) + eta * (rewards[i, :] -
 *                                                        mean(rewards[i, :])))
 *
 * which is one mirror-descent step towards the KL-regularised optimum
 * pi* ∝ pi_ref exp(r / beta) with beta = 1 / eta.  The softmax subtracts
 * the row maximum before exponentiating, so no row overflows even where
 * the lecture's exp(...) / sum(exp(...)) would.
 */
#include <math.h>

#include "rlhf.h"

/*
 * policy, rewards  n_rows * n_actions, row-major, read only
 * out              n_rows * n_actions, written
 * Returns 0, or RLHF_ENONFINITE when a row's logits are not all finite
 * (which the wrapper's input checks make impossible for finite eta).
 */
int rlhf_reweight(const double *policy, const double *rewards,
                  ptrdiff_t n_rows, ptrdiff_t n_actions, double eta,
                  double eps, double *out)
{
    int status = 0;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n_rows * n_actions > 65536)
#endif
    for (ptrdiff_t i = 0; i < n_rows; i++) {
        const double *p = policy + i * n_actions;
        const double *r = rewards + i * n_actions;
        double *o = out + i * n_actions;

        double mean = 0.0;
        for (ptrdiff_t j = 0; j < n_actions; j++) {
            mean += r[j];
        }
        mean /= (double)n_actions;

        /* o = log(p + eps) + eta * (r - mean); max of o for the softmax */
        double top = -INFINITY;
        for (ptrdiff_t j = 0; j < n_actions; j++) {
            o[j] = log(p[j] + eps) + eta * (r[j] - mean);
            top = o[j] > top ? o[j] : top;
        }
        if (!isfinite(top)) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
            status = RLHF_ENONFINITE;
            continue;
        }
        double total = 0.0;
        for (ptrdiff_t j = 0; j < n_actions; j++) {
            o[j] = exp(o[j] - top);
            total += o[j];
        }
        for (ptrdiff_t j = 0; j < n_actions; j++) {
            o[j] /= total;
        }
    }
    return status;
}
