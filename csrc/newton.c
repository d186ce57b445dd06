/*
 * newton.c - Newton's method to the exact optimum of a smooth convex objective.
 *
 * Each iteration forms the (np x np) Hessian (logistic.c, bradley_terry.c), factors it by
 * Cholesky, solves H d = -g and backtracks along d until the Armijo
 * condition f(x + t d) <= f(x) + 1e-4 t g'd holds (Nocedal & Wright 2006,
 * "Numerical Optimization", algorithms 3.1 and 3.2).  A Hessian that is
 * not numerically positive definite (penalty=None on nearly separable
 * data) gets the smallest ridge tau I, tau = 1e-12 * max diag * 10^k,
 * that makes the factorisation succeed (Levenberg's safeguard).
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "rlhf.h"

#define ARMIJO 1e-4
#define MAX_HALVINGS 60

ptrdiff_t rlhf_newton_work_size(ptrdiff_t n)
{
    return n * n + 3 * n;
}

/* In-place lower Cholesky factor of the row-major n x n matrix A + tau I.
 * Returns 0, -1 when a pivot is not positive, or RLHF_EINTR. */
static int cholesky(double *A, ptrdiff_t n, double tau)
{
    for (ptrdiff_t j = 0; j < n; j++) {
        /* column j costs about (n - j) j operations */
        if ((j & 63) == 63 && rlhf_interrupted()) {
            return RLHF_EINTR;
        }
        double diag = A[j * n + j] + tau;
        for (ptrdiff_t k = 0; k < j; k++) {
            diag -= A[j * n + k] * A[j * n + k];
        }
        if (!(diag > 0.0)) {
            return -1;
        }
        diag = sqrt(diag);
        A[j * n + j] = diag;
        for (ptrdiff_t i = j + 1; i < n; i++) {
            double v = A[i * n + j];
            for (ptrdiff_t k = 0; k < j; k++) {
                v -= A[i * n + k] * A[j * n + k];
            }
            A[i * n + j] = v / diag;
        }
    }
    return 0;
}

/* d = -(L L^T)^-1 g with L from cholesky(). */
static void cholesky_solve(const double *L, ptrdiff_t n, const double *g,
                           double *d)
{
    for (ptrdiff_t i = 0; i < n; i++) { /* L u = -g */
        double v = -g[i];
        for (ptrdiff_t k = 0; k < i; k++) {
            v -= L[i * n + k] * d[k];
        }
        d[i] = v / L[i * n + i];
    }
    for (ptrdiff_t i = n - 1; i >= 0; i--) { /* L^T d = u */
        double v = d[i];
        for (ptrdiff_t k = i + 1; k < n; k++) {
            v -= L[k * n + i] * d[k];
        }
        d[i] = v / L[i * n + i];
    }
}

static double max_abs(const double *a, ptrdiff_t n)
{
    double m = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        double v = fabs(a[i]);
        if (v > m || v != v) {
            m = v;
        }
    }
    return m;
}

/*
 * Minimise fun from x (length np, overwritten by the solution); hess
 * writes the Hessian at x into the upper triangle of a row-major np x np
 * matrix (the lower triangle is scratch).
 *
 *   f, g      out: f(x) and its gradient (length np)
 *   gtol      stop when max |g_i| <= gtol * max(1, max |g_i at the start|)
 *   max_iter  iteration limit (>= 0)
 *   work      rlhf_newton_work_size(np) doubles of scratch
 *   n_iter    out: Newton steps taken; n_fev: out: objective evaluations
 *
 * Returns RLHF_CONVERGED_GTOL; RLHF_CONVERGED_FTOL when the predicted
 * decrease is below rounding (|g'd| <= 4 eps max(1, |f|)) and a full step
 * no longer shrinks the gradient: the optimum to machine precision;
 * RLHF_MAX_ITER; RLHF_LINESEARCH when backtracking fails above that level;
 * RLHF_ENONFINITE; RLHF_ECALLBACK when fun or hess fails; RLHF_EINTR
 * when fun, hess or rlhf_interrupted() (asked every iteration and during
 * the factorisation) said to stop.
 */
int rlhf_newton_minimize(rlhf_objective fun, rlhf_hessian hess, void *ctx,
                         ptrdiff_t np, double *x, double *f, double *g,
                         double gtol, int max_iter, double *work,
                         int *n_iter, int *n_fev)
{
    double *H = work;
    double *d = H + np * np;
    double *x_trial = d + np;
    double *g_trial = x_trial + np;

    *n_iter = 0;
    *n_fev = 1;
    int status = fun(ctx, x, f, g);
    if (status != 0) {
        return RLHF_CALLBACK_STATUS(status);
    }
    if (!isfinite(*f) || !isfinite(max_abs(g, np))) {
        return RLHF_ENONFINITE;
    }
    const double threshold = gtol * fmax(1.0, max_abs(g, np));

    for (;;) {
        if (max_abs(g, np) <= threshold) {
            return RLHF_CONVERGED_GTOL;
        }
        if (*n_iter >= max_iter) {
            return RLHF_MAX_ITER;
        }
        if (rlhf_interrupted()) {
            return RLHF_EINTR;
        }
        status = hess(ctx, x, H);
        if (status != 0) {
            return status < 0 ? status : RLHF_ECALLBACK;
        }
        double max_diag = 0.0;
        for (ptrdiff_t i = 0; i < np; i++) {
            max_diag = fmax(max_diag, H[i * np + i]);
        }
        if (!isfinite(max_diag)) {
            return RLHF_ENONFINITE;
        }
        /* H is kept in the upper triangle: refactor from it on a retry */
        double tau = 0.0;
        for (int attempt = 0;; attempt++) {
            for (ptrdiff_t i = 0; i < np; i++) {
                for (ptrdiff_t k = 0; k < i; k++) {
                    H[i * np + k] = H[k * np + i];
                }
            }
            /* the factorisation overwrites the lower triangle and diagonal */
            double *diag = g_trial; /* free until the line search */
            for (ptrdiff_t i = 0; i < np; i++) {
                diag[i] = H[i * np + i];
            }
            status = cholesky(H, np, tau);
            if (status == 0) {
                break;
            }
            if (status == RLHF_EINTR) {
                return RLHF_EINTR;
            }
            for (ptrdiff_t i = 0; i < np; i++) {
                H[i * np + i] = diag[i];
            }
            if (attempt > 30) {
                return RLHF_ENOTPD;
            }
            tau = tau == 0.0 ? 1e-12 * fmax(max_diag, DBL_MIN) : tau * 10.0;
        }
        cholesky_solve(H, np, g, d);

        double gd = 0.0;
        for (ptrdiff_t i = 0; i < np; i++) {
            gd += g[i] * d[i];
        }
        if (!(gd < 0.0)) {
            return RLHF_LINESEARCH;
        }
        /* below this the change of f is lost in rounding: judge the full
         * step by the gradient instead, and stop at its rounding floor */
        const int unmeasurable = -gd <= 4.0 * DBL_EPSILON * fmax(1.0, fabs(*f));
        double t = 1.0, f_trial = 0.0;
        int accepted = 0;
        for (int h = 0; h < MAX_HALVINGS; h++, t *= 0.5) {
            for (ptrdiff_t i = 0; i < np; i++) {
                x_trial[i] = x[i] + t * d[i];
            }
            ++*n_fev;
            status = fun(ctx, x_trial, &f_trial, g_trial);
            if (status != 0) {
                return RLHF_CALLBACK_STATUS(status);
            }
            if (unmeasurable) {
                if (!(max_abs(g_trial, np) < max_abs(g, np))) {
                    return RLHF_CONVERGED_FTOL;
                }
                accepted = 1;
                break;
            }
            if (f_trial <= *f + ARMIJO * t * gd) {
                accepted = 1;
                break;
            }
        }
        if (!accepted) {
            return RLHF_LINESEARCH;
        }
        memcpy(x, x_trial, (size_t)np * sizeof(double));
        memcpy(g, g_trial, (size_t)np * sizeof(double));
        *f = f_trial;
        ++*n_iter;
    }
}

static int logistic_hessian(void *problem, const double *x, double *H)
{
    return rlhf_logistic_hessian(problem, x, H);
}

/* rlhf_newton_minimize on the logistic objective of problem. */
int rlhf_newton_logistic(rlhf_logistic *problem, double *x, double *f,
                         double *g, double gtol, int max_iter, double *work,
                         int *n_iter, int *n_fev)
{
    const ptrdiff_t np = problem->X.n_cols + (problem->fit_intercept ? 1 : 0);
    return rlhf_newton_minimize(rlhf_logistic_loss_grad, logistic_hessian,
                                problem, np, x, f, g, gtol, max_iter, work,
                                n_iter, n_fev);
}
