/*
 * lbfgs.c - limited-memory BFGS with the More-Thuente line search.
 *
 * The iteration is the unbounded path of L-BFGS-B (Byrd, Lu, Nocedal &
 * Zhu 1995, "A limited memory algorithm for bound constrained
 * optimization", SIAM J. Sci. Comput. 16(5)), the solver scikit-learn's
 * LogisticRegression(solver='lbfgs') runs through SciPy, so that the
 * iterates, the stopping point and the iteration count are the same:
 *
 *   - direction: the two-loop recursion (Nocedal 1980, "Updating
 *     quasi-Newton matrices with limited storage", Math. Comp. 35) over the
 *     last m pairs (s, y), initial matrix (s'y / y'y) I of the newest pair,
 *     -g when no pair is stored;
 *   - first trial step min(1 / ||d||_2, 1e10) on the first iteration, 1
 *     afterwards;
 *   - line search: More & Thuente 1994 ("Line search algorithms with
 *     guaranteed sufficient decrease", ACM TOMS 20(3)) with ftol = 1e-3,
 *     gtol = 0.9, xtol = 0.1, step in [0, 1e10], at most maxls evaluations;
 *   - a pair is skipped when s'y <= eps * (-s'g_old);
 *   - an iteration is counted after each successful line search; stop when
 *     the count reaches max_iter, or max |g_i| <= gtol, or
 *     f_old - f <= ftol * max(|f_old|, |f|, 1);
 *   - a failed line search restores the last iterate; with pairs stored
 *     the memory is dropped and the iteration restarts along -g, without
 *     pairs the solver gives up (RLHF_LINESEARCH).
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "rlhf.h"

#define LS_FTOL 1e-3
#define LS_GTOL 0.9
#define LS_XTOL 0.1
#define LS_STPMAX 1e10

enum { LS_FG, LS_CONVERGED, LS_WARNING };

/* The state the More-Thuente search keeps between evaluations. */
typedef struct {
    int bracketed;
    int stage;
    double finit, ginit, gtest;
    double stx, fx, gx;    /* best step so far */
    double sty, fy, gy;    /* other end of the interval */
    double stmin, stmax;   /* the current interval of trial steps */
    double width, width1;
} line_search;

static double max3(double a, double b, double c)
{
    double m = a > b ? a : b;
    return m > c ? m : c;
}

/*
 * One safeguarded step of More & Thuente (1994), section 4: a new trial
 * step stp from the best step (stx, fx, dx), the other end (sty, fy, dy)
 * and the current trial (stp, fp, dp), and the updated interval.
 * The four cases are those of the paper; the cubic minimiser is taken in
 * its scaled form (theta, s, gamma) to avoid overflow.
 */
static void ls_step(double *stx, double *fx, double *dx, double *sty,
                    double *fy, double *dy, double *stp, double fp,
                    double dp, int *bracketed, double stpmin, double stpmax)
{
    const double sgnd = dp * (*dx / fabs(*dx));
    double stpf, stpc, stpq, theta, s, gamma, p, q, r;

    if (fp > *fx) {
        /* 1: higher function value, the minimum is bracketed */
        theta = 3.0 * (*fx - fp) / (*stp - *stx) + *dx + dp;
        s = max3(fabs(theta), fabs(*dx), fabs(dp));
        gamma = s * sqrt((theta / s) * (theta / s) - (*dx / s) * (dp / s));
        if (*stp < *stx) {
            gamma = -gamma;
        }
        p = (gamma - *dx) + theta;
        q = ((gamma - *dx) + gamma) + dp;
        r = p / q;
        stpc = *stx + r * (*stp - *stx);
        stpq = *stx + ((*dx / ((*fx - fp) / (*stp - *stx) + *dx)) / 2.0) *
                          (*stp - *stx);
        if (fabs(stpc - *stx) < fabs(stpq - *stx)) {
            stpf = stpc;
        } else {
            stpf = stpc + (stpq - stpc) / 2.0;
        }
        *bracketed = 1;
    } else if (sgnd < 0.0) {
        /* 2: lower value, derivatives of opposite sign: bracketed */
        theta = 3.0 * (*fx - fp) / (*stp - *stx) + *dx + dp;
        s = max3(fabs(theta), fabs(*dx), fabs(dp));
        gamma = s * sqrt((theta / s) * (theta / s) - (*dx / s) * (dp / s));
        if (*stp > *stx) {
            gamma = -gamma;
        }
        p = (gamma - dp) + theta;
        q = ((gamma - dp) + gamma) + *dx;
        r = p / q;
        stpc = *stp + r * (*stx - *stp);
        stpq = *stp + (dp / (dp - *dx)) * (*stx - *stp);
        stpf = fabs(stpc - *stp) > fabs(stpq - *stp) ? stpc : stpq;
        *bracketed = 1;
    } else if (fabs(dp) < fabs(*dx)) {
        /* 3: lower value, same sign, the derivative shrinks */
        theta = 3.0 * (*fx - fp) / (*stp - *stx) + *dx + dp;
        s = max3(fabs(theta), fabs(*dx), fabs(dp));
        double disc = (theta / s) * (theta / s) - (*dx / s) * (dp / s);
        gamma = s * sqrt(disc > 0.0 ? disc : 0.0);
        if (*stp > *stx) {
            gamma = -gamma;
        }
        p = (gamma - dp) + theta;
        q = (gamma + (*dx - dp)) + gamma;
        r = p / q;
        if (r < 0.0 && gamma != 0.0) {
            stpc = *stp + r * (*stx - *stp);
        } else if (*stp > *stx) {
            stpc = stpmax;
        } else {
            stpc = stpmin;
        }
        stpq = *stp + (dp / (dp - *dx)) * (*stx - *stp);
        if (*bracketed) {
            stpf = fabs(stpc - *stp) < fabs(stpq - *stp) ? stpc : stpq;
            if (*stp > *stx) {
                double lim = *stp + 0.66 * (*sty - *stp);
                stpf = lim < stpf ? lim : stpf;
            } else {
                double lim = *stp + 0.66 * (*sty - *stp);
                stpf = lim > stpf ? lim : stpf;
            }
        } else {
            stpf = fabs(stpc - *stp) > fabs(stpq - *stp) ? stpc : stpq;
            stpf = stpmax < stpf ? stpmax : stpf;
            stpf = stpmin > stpf ? stpmin : stpf;
        }
    } else {
        /* 4: lower value, same sign, the derivative does not shrink */
        if (*bracketed) {
            theta = 3.0 * (fp - *fy) / (*sty - *stp) + *dy + dp;
            s = max3(fabs(theta), fabs(*dy), fabs(dp));
            gamma = s * sqrt((theta / s) * (theta / s) - (*dy / s) * (dp / s));
            if (*stp > *sty) {
                gamma = -gamma;
            }
            p = (gamma - dp) + theta;
            q = ((gamma - dp) + gamma) + *dy;
            r = p / q;
            stpc = *stp + r * (*sty - *stp);
            stpf = stpc;
        } else if (*stp > *stx) {
            stpf = stpmax;
        } else {
            stpf = stpmin;
        }
    }

    /* keep the interval containing a minimiser */
    if (fp > *fx) {
        *sty = *stp;
        *fy = fp;
        *dy = dp;
    } else {
        if (sgnd < 0.0) {
            *sty = *stx;
            *fy = *fx;
            *dy = *dx;
        }
        *stx = *stp;
        *fx = fp;
        *dx = dp;
    }
    *stp = stpf;
}

/* Start a search at phi(0) = f, phi'(0) = g < 0 with first trial *stp. */
static void ls_start(line_search *ls, double f, double g, double stp)
{
    ls->bracketed = 0;
    ls->stage = 1;
    ls->finit = f;
    ls->ginit = g;
    ls->gtest = LS_FTOL * g;
    ls->width = LS_STPMAX;
    ls->width1 = LS_STPMAX / 0.5;
    ls->stx = 0.0;
    ls->fx = f;
    ls->gx = g;
    ls->sty = 0.0;
    ls->fy = f;
    ls->gy = g;
    ls->stmin = 0.0;
    ls->stmax = stp + 4.0 * stp;
}

/*
 * Given phi(stp) = f and phi'(stp) = g at the current trial, decide:
 * converged (sufficient decrease and curvature), a warning (no further
 * progress possible; stp is kept), or a new trial step in *stp.
 */
static int ls_next(line_search *ls, double f, double g, double *stp)
{
    const double stpmin = 0.0, stpmax = LS_STPMAX;
    const double ftest = ls->finit + *stp * ls->gtest;
    int task = LS_FG;

    if (ls->stage == 1 && f <= ftest && g >= 0.0) {
        ls->stage = 2;
    }
    if (ls->bracketed && (*stp <= ls->stmin || *stp >= ls->stmax)) {
        task = LS_WARNING; /* rounding errors prevent progress */
    }
    if (ls->bracketed && ls->stmax - ls->stmin <= LS_XTOL * ls->stmax) {
        task = LS_WARNING; /* the interval is below xtol */
    }
    if (*stp == stpmax && f <= ftest && g <= ls->gtest) {
        task = LS_WARNING;
    }
    if (*stp == stpmin && (f > ftest || g >= ls->gtest)) {
        task = LS_WARNING;
    }
    if (f <= ftest && fabs(g) <= LS_GTOL * (-ls->ginit)) {
        task = LS_CONVERGED;
    }
    if (task != LS_FG) {
        return task;
    }

    if (ls->stage == 1 && f <= ls->fx && f > ftest) {
        /* the modified function psi(t) = phi(t) - t * gtest of stage 1 */
        double fm = f - *stp * ls->gtest;
        double fxm = ls->fx - ls->stx * ls->gtest;
        double fym = ls->fy - ls->sty * ls->gtest;
        double gm = g - ls->gtest;
        double gxm = ls->gx - ls->gtest;
        double gym = ls->gy - ls->gtest;
        ls_step(&ls->stx, &fxm, &gxm, &ls->sty, &fym, &gym, stp, fm, gm,
                &ls->bracketed, ls->stmin, ls->stmax);
        ls->fx = fxm + ls->stx * ls->gtest;
        ls->fy = fym + ls->sty * ls->gtest;
        ls->gx = gxm + ls->gtest;
        ls->gy = gym + ls->gtest;
    } else {
        ls_step(&ls->stx, &ls->fx, &ls->gx, &ls->sty, &ls->fy, &ls->gy, stp,
                f, g, &ls->bracketed, ls->stmin, ls->stmax);
    }

    if (ls->bracketed) {
        /* bisect when the interval did not shrink enough */
        if (fabs(ls->sty - ls->stx) >= 0.66 * ls->width1) {
            *stp = ls->stx + 0.5 * (ls->sty - ls->stx);
        }
        ls->width1 = ls->width;
        ls->width = fabs(ls->sty - ls->stx);
        ls->stmin = ls->stx < ls->sty ? ls->stx : ls->sty;
        ls->stmax = ls->stx > ls->sty ? ls->stx : ls->sty;
    } else {
        ls->stmin = *stp + 1.1 * (*stp - ls->stx);
        ls->stmax = *stp + 4.0 * (*stp - ls->stx);
    }
    *stp = *stp > stpmin ? *stp : stpmin;
    *stp = *stp < stpmax ? *stp : stpmax;
    if ((ls->bracketed && (*stp <= ls->stmin || *stp >= ls->stmax)) ||
        (ls->bracketed && ls->stmax - ls->stmin <= LS_XTOL * ls->stmax)) {
        *stp = ls->stx; /* no progress possible: fall back on the best */
    }
    return LS_FG;
}

static double dot(const double *a, const double *b, ptrdiff_t n)
{
    double s = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        s += a[i] * b[i];
    }
    return s;
}

static double max_abs(const double *a, ptrdiff_t n)
{
    double m = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        double v = fabs(a[i]);
        /* NaN propagates so that it can never pass a <= test */
        if (v > m || v != v) {
            m = v;
        }
    }
    return m;
}

/* Doubles of scratch rlhf_lbfgs_minimize needs for n variables, m pairs. */
ptrdiff_t rlhf_lbfgs_work_size(ptrdiff_t n, int m)
{
    return 2 * (ptrdiff_t)m * n + 2 * (ptrdiff_t)m + 3 * n;
}

/*
 * d = -H g by the two-loop recursion over the stored pairs, oldest first
 * in the ring starting at head.
 */
static void two_loop(ptrdiff_t n, int n_pairs, int head, int m,
                     const double *S, const double *Y, const double *rho,
                     double *alpha, double gamma, const double *g, double *d)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        d[i] = -g[i];
    }
    for (int k = n_pairs - 1; k >= 0; k--) {
        const int slot = (head + k) % m;
        alpha[slot] = rho[slot] * dot(S + slot * n, d, n);
        const double *y = Y + slot * n;
        for (ptrdiff_t i = 0; i < n; i++) {
            d[i] -= alpha[slot] * y[i];
        }
    }
    for (ptrdiff_t i = 0; i < n; i++) {
        d[i] *= gamma;
    }
    for (int k = 0; k < n_pairs; k++) {
        const int slot = (head + k) % m;
        const double beta = rho[slot] * dot(Y + slot * n, d, n);
        const double *s = S + slot * n;
        for (ptrdiff_t i = 0; i < n; i++) {
            d[i] += (alpha[slot] - beta) * s[i];
        }
    }
}

/*
 * Minimise fun from x (length n, overwritten by the solution).
 *
 *   fun, ctx   the objective (rlhf_objective)
 *   x          in: the start; out: the last accepted iterate
 *   f, g       out: f(x) and its gradient (g of length n)
 *   m          number of stored pairs (>= 1)
 *   gtol       stop when max |g_i| <= gtol; a negative gtol is relative:
 *              stop when max |g_i| <= -gtol * max(1, max |g_i| at x0)
 *   ftol       stop when f_old - f <= ftol * max(|f_old|, |f|, 1)
 *   max_iter   iteration limit; as in SciPy, the test follows the first
 *              iteration, so max_iter = 0 still takes one step
 *   maxls      evaluations allowed per line search (>= 1)
 *   work       rlhf_lbfgs_work_size(n, m) doubles of scratch
 *   n_iter     out: iterations counted; n_fev: out: evaluations
 *
 * Returns RLHF_CONVERGED_GTOL, RLHF_CONVERGED_FTOL, RLHF_MAX_ITER,
 * RLHF_LINESEARCH, RLHF_ECALLBACK when fun failed, RLHF_EINTR when fun or
 * rlhf_interrupted() (asked every iteration) said to stop, or
 * RLHF_ENONFINITE when the starting point has a non-finite value or
 * gradient.  After RLHF_EINTR, x holds the last point evaluated.
 */
int rlhf_lbfgs_minimize(rlhf_objective fun, void *ctx, ptrdiff_t n,
                        double *x, double *f, double *g, int m, double gtol,
                        double ftol, int max_iter, int maxls, double *work,
                        int *n_iter, int *n_fev)
{
    double *S = work;
    double *Y = S + (ptrdiff_t)m * n;
    double *rho = Y + (ptrdiff_t)m * n;
    double *alpha = rho + m;
    double *d = alpha + m;
    double *x_old = d + n;
    double *g_old = x_old + n;
    int n_pairs = 0, head = 0;
    double gamma = 1.0;

    *n_iter = 0;
    *n_fev = 1;
    int status = fun(ctx, x, f, g);
    if (status != 0) {
        return RLHF_CALLBACK_STATUS(status);
    }
    if (!isfinite(*f) || !isfinite(max_abs(g, n))) {
        return RLHF_ENONFINITE;
    }
    if (gtol < 0.0) {
        gtol = -gtol * fmax(1.0, max_abs(g, n));
    }
    if (max_abs(g, n) <= gtol) {
        return RLHF_CONVERGED_GTOL;
    }

    for (;;) {
        if (rlhf_interrupted()) {
            return RLHF_EINTR;
        }
        if (n_pairs == 0) {
            for (ptrdiff_t i = 0; i < n; i++) {
                d[i] = -g[i];
            }
        } else {
            two_loop(n, n_pairs, head, m, S, Y, rho, alpha, gamma, g, d);
        }

        const double dnorm = sqrt(dot(d, d, n));
        double stp = 1.0;
        if (*n_iter == 0) {
            stp = 1.0 / dnorm < LS_STPMAX ? 1.0 / dnorm : LS_STPMAX;
        }
        const double f_old = *f;
        memcpy(x_old, x, (size_t)n * sizeof(double));
        memcpy(g_old, g, (size_t)n * sizeof(double));
        const double gd_old = dot(g, d, n);
        double gd = gd_old;

        int ok = 0;
        if (gd_old < 0.0) {
            line_search ls;
            ls_start(&ls, *f, gd_old, stp);
            for (int n_eval = 0;; n_eval++) {
                if (n_eval >= maxls) {
                    break;
                }
                /* x = x_old + stp * d */
                for (ptrdiff_t i = 0; i < n; i++) {
                    x[i] = x_old[i] + stp * d[i];
                }
                ++*n_fev;
                status = fun(ctx, x, f, g);
                if (status != 0) {
                    return RLHF_CALLBACK_STATUS(status);
                }
                gd = dot(g, d, n);
                int task = ls_next(&ls, *f, gd, &stp);
                if (task != LS_FG) {
                    ok = 1;
                    break;
                }
            }
        }
        if (!ok) {
            /* restore the last iterate */
            memcpy(x, x_old, (size_t)n * sizeof(double));
            memcpy(g, g_old, (size_t)n * sizeof(double));
            *f = f_old;
            if (n_pairs == 0) {
                return RLHF_LINESEARCH;
            }
            n_pairs = 0;
            head = 0;
            gamma = 1.0;
            continue;
        }

        ++*n_iter;
        if (*n_iter >= max_iter) {
            return RLHF_MAX_ITER;
        }
        if (max_abs(g, n) <= gtol) {
            return RLHF_CONVERGED_GTOL;
        }
        if (f_old - *f <= ftol * max3(fabs(f_old), fabs(*f), 1.0)) {
            return RLHF_CONVERGED_FTOL;
        }

        /* s'y from the directional derivatives, as L-BFGS-B forms it */
        const double sy = (gd - gd_old) * stp;
        if (sy <= DBL_EPSILON * (-gd_old * stp)) {
            continue; /* not enough curvature: skip the pair */
        }
        int slot;
        if (n_pairs < m) {
            slot = (head + n_pairs) % m;
            n_pairs++;
        } else {
            slot = head;
            head = (head + 1) % m;
        }
        double *s = S + (ptrdiff_t)slot * n;
        double *y = Y + (ptrdiff_t)slot * n;
        for (ptrdiff_t i = 0; i < n; i++) {
            s[i] = stp * d[i];
            y[i] = g[i] - g_old[i];
        }
        rho[slot] = 1.0 / sy;
        gamma = sy / dot(y, y, n);
    }
}
