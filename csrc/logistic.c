/*
 * logistic.c - the weighted, L2-penalised logistic objective.
 *
 *   f(w, b) = scale * sum_i s_i * l(z_i, y_i) + alpha/2 * ||w||^2
 *   l(z, y) = log(1 + exp(z)) - y * z,   z_i = x_i . w + b,   y_i in {0, 1}
 *
 *   df/dw = scale * X^T (s * (sigmoid(z) - y)) + alpha * w
 *   df/db = scale * sum_i s_i * (sigmoid(z_i) - y_i)
 *
 * This is scikit-learn's LogisticRegression objective as its lbfgs solver
 * minimises it (the intercept b is not penalised); scale = 1 reproduces
 * scikit-learn 1.2, scale = 1 / sum(s) with alpha = 1 / (C sum(s)) the
 * releases from 1.4 on.
 *
 * One pass over X per evaluation: each row is read once to form z_i, its
 * loss term and its gradient contribution.  Dense rows are processed in
 * fixed blocks of RLHF_BLOCK rows whose partial sums are added in block
 * order, so the result is bitwise the same for any number of threads.
 */
#include <math.h>
#include <string.h>

#include "rlhf.h"
#include "numerics.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#define RLHF_BLOCK 2048

/*
 * log1pexp(z) and sigmoid(z) (numerics.h) from one exponential,
 * e = exp(-|z|), bitwise the same values: the dense pass is bound by
 * these calls, not by reading X.
 */
static void log1pexp_sigmoid(double z, double *l, double *sig)
{
    if (z > 0.0) {
        const double e = exp(-z);
        *l = z + log1p(e);
        *sig = 1.0 / (1.0 + e);
    }
    else {
        const double e = exp(z);
        *l = log1p(e);
        *sig = e / (1.0 + e);
    }
}

static ptrdiff_t n_blocks(ptrdiff_t n_rows)
{
    return (n_rows + RLHF_BLOCK - 1) / RLHF_BLOCK;
}

static ptrdiff_t n_params(const rlhf_logistic *p)
{
    return p->X.n_cols + (p->fit_intercept ? 1 : 0);
}

/*
 * Scratch the caller must pass in problem->scratch: per-block partial
 * gradients and losses for dense X, nothing for CSR.
 */
ptrdiff_t rlhf_logistic_scratch_size(const rlhf_logistic *problem)
{
    if (problem->X.dense == NULL) {
        return 0;
    }
    return n_blocks(problem->X.n_rows) * (n_params(problem) + 1);
}

#define RLHF_CHUNK 32

/*
 * Loss and unscaled data gradient of rows [start, stop) into part.  Rows go
 * in chunks of RLHF_CHUNK: first every z of the chunk (streaming the rows
 * from memory), then the exponentials, then the gradient updates from rows
 * still in cache, so loads and libm calls are not interleaved row by row.
 * The additions happen in row order as in a plain loop.
 */
static double dense_block(const rlhf_logistic *p, const double *w,
                          double intercept, ptrdiff_t start, ptrdiff_t stop,
                          double *part)
{
    const ptrdiff_t d = p->X.n_cols;
    double loss = 0.0;
    double z[RLHF_CHUNK], r[RLHF_CHUNK];
    memset(part, 0, (size_t)n_params(p) * sizeof(double));
    for (ptrdiff_t c = start; c < stop; c += RLHF_CHUNK) {
        const ptrdiff_t m = stop - c < RLHF_CHUNK ? stop - c : RLHF_CHUNK;
        const double *rows = p->X.dense + c * d;
        /* z = X[c:c+m] @ w + b */
        for (ptrdiff_t k = 0; k < m; k++) {
            z[k] = dot4(rows + k * d, w, d) + intercept;
        }
        for (ptrdiff_t k = 0; k < m; k++) {
            const double s = p->sample_weight[c + k];
            const double y = p->y[c + k];
            double l, sig;
            log1pexp_sigmoid(z[k], &l, &sig);
            loss += s * (l - y * z[k]);
            r[k] = s * (sig - y);
        }
        /* part += X[c:c+m].T @ r */
        for (ptrdiff_t k = 0; k < m; k++) {
            const double *row = rows + k * d;
            for (ptrdiff_t j = 0; j < d; j++) {
                part[j] += r[k] * row[j];
            }
            if (p->fit_intercept) {
                part[d] += r[k];
            }
        }
    }
    return loss;
}

/*
 * The data term and its gradient for dense X into *loss and grad.  Blocks
 * are handled a group at a time, about RLHF_CHECK_ENTRIES values of X per
 * group, with an interrupt check between groups; the grouping does not
 * change which block sums what.  Returns 0 or RLHF_EINTR.
 */
static int dense_loss_grad(const rlhf_logistic *p, const double *w,
                           double intercept, double *loss, double *grad)
{
    const ptrdiff_t nb = n_blocks(p->X.n_rows);
    const ptrdiff_t np = n_params(p);
    double *parts = p->scratch;          /* nb * np partial gradients */
    double *losses = p->scratch + nb * np; /* nb partial losses */
    const int n_threads = nb < 2 ? 1 : rlhf_threads(p->n_threads);
    const ptrdiff_t group = rlhf_check_group(RLHF_BLOCK * (np > 0 ? np : 1),
                                             n_threads);

    for (ptrdiff_t b0 = 0; b0 < nb; b0 += group) {
        if (b0 > 0 && rlhf_interrupted()) {
            return RLHF_EINTR;
        }
        const ptrdiff_t b1 = b0 + group < nb ? b0 + group : nb;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(n_threads)
#endif
        for (ptrdiff_t b = b0; b < b1; b++) {
            const ptrdiff_t start = b * RLHF_BLOCK;
            const ptrdiff_t stop = start + RLHF_BLOCK < p->X.n_rows
                                       ? start + RLHF_BLOCK : p->X.n_rows;
            losses[b] = dense_block(p, w, intercept, start, stop,
                                    parts + b * np);
        }
    }
    (void)n_threads;

    /* the blocks are added in order whatever the thread count */
    *loss = 0.0;
    memset(grad, 0, (size_t)np * sizeof(double));
    for (ptrdiff_t b = 0; b < nb; b++) {
        *loss += losses[b];
        for (ptrdiff_t j = 0; j < np; j++) {
            grad[j] += parts[b * np + j];
        }
    }
    return 0;
}

/* The same for CSR X, one row after another.  Returns 0 or RLHF_EINTR. */
static int csr_loss_grad(const rlhf_logistic *p, const double *w,
                         double intercept, double *loss_out, double *grad)
{
    const rlhf_matrix *X = &p->X;
    double loss = 0.0;
    memset(grad, 0, (size_t)n_params(p) * sizeof(double));
    for (ptrdiff_t i = 0; i < X->n_rows; i++) {
        if ((i & 8191) == 8191 && rlhf_interrupted()) {
            return RLHF_EINTR;
        }
        double z = intercept;
        for (int64_t k = X->indptr[i]; k < X->indptr[i + 1]; k++) {
            z += X->data[k] * w[X->indices[k]];
        }
        const double s = p->sample_weight[i];
        loss += s * (log1pexp(z) - p->y[i] * z);
        const double r = s * (sigmoid(z) - p->y[i]);
        for (int64_t k = X->indptr[i]; k < X->indptr[i + 1]; k++) {
            grad[X->indices[k]] += r * X->data[k];
        }
        if (p->fit_intercept) {
            grad[X->n_cols] += r;
        }
    }
    *loss_out = loss;
    return 0;
}

/*
 * The objective as an rlhf_objective: problem is an rlhf_logistic*, w holds
 * n_cols coefficients then the intercept when fit_intercept; writes f into
 * *loss and df into grad (same length as w).  Returns 0, or RLHF_EINTR.
 */
int rlhf_logistic_loss_grad(void *problem, const double *w, double *loss,
                            double *grad)
{
    const rlhf_logistic *p = problem;
    const ptrdiff_t d = p->X.n_cols;
    const double intercept = p->fit_intercept ? w[d] : 0.0;
    double data_loss = 0.0;
    const int status = p->X.dense != NULL
                           ? dense_loss_grad(p, w, intercept, &data_loss, grad)
                           : csr_loss_grad(p, w, intercept, &data_loss, grad);
    if (status != 0) {
        return status;
    }

    double norm2 = 0.0;
    for (ptrdiff_t j = 0; j < d; j++) {
        norm2 += w[j] * w[j];
    }
    for (ptrdiff_t j = 0; j < n_params(p); j++) {
        grad[j] *= p->scale;
    }
    for (ptrdiff_t j = 0; j < d; j++) {
        grad[j] += p->alpha * w[j];
    }
    /* alpha = 0: no penalty, even where ||w||^2 overflows (0 * inf) */
    *loss = p->scale * data_loss +
            (p->alpha != 0.0 ? 0.5 * p->alpha * norm2 : 0.0);
    return 0;
}

/*
 * The Hessian of f at w, written row-major into hessian (np * np with
 * np = n_cols + fit_intercept):
 *   scale * [X 1]^T diag(s * sigma * (1 - sigma)) [X 1] + alpha * I_w.
 * Returns 0, or RLHF_EINTR (the matrix is then incomplete).
 */
int rlhf_logistic_hessian(const rlhf_logistic *p, const double *w,
                          double *hessian)
{
    const rlhf_matrix *X = &p->X;
    const ptrdiff_t d = X->n_cols;
    const ptrdiff_t np = n_params(p);
    const double intercept = p->fit_intercept ? w[d] : 0.0;

    const ptrdiff_t every = rlhf_check_rows(np * np / 2 + 1);
    memset(hessian, 0, (size_t)(np * np) * sizeof(double));
    for (ptrdiff_t i = 0; i < X->n_rows; i++) {
        /* a row costs about np^2 / 2 operations */
        if (i % every == every - 1 && rlhf_interrupted()) {
            return RLHF_EINTR;
        }
        double z = intercept;
        if (X->dense != NULL) {
            z += dot4(X->dense + i * d, w, d);
        } else {
            for (int64_t k = X->indptr[i]; k < X->indptr[i + 1]; k++) {
                z += X->data[k] * w[X->indices[k]];
            }
        }
        const double sig = sigmoid(z);
        const double h = p->sample_weight[i] * sig * (1.0 - sig);
        if (h == 0.0) {
            continue;
        }
        /* upper triangle of H += h * x x^T (x with a trailing 1) */
        if (X->dense != NULL) {
            const double *row = X->dense + i * d;
            for (ptrdiff_t a = 0; a < d; a++) {
                const double ha = h * row[a];
                double *hrow = hessian + a * np;
                for (ptrdiff_t c = a; c < d; c++) {
                    hrow[c] += ha * row[c];
                }
                if (p->fit_intercept) {
                    hrow[d] += ha;
                }
            }
        } else {
            for (int64_t k = X->indptr[i]; k < X->indptr[i + 1]; k++) {
                const ptrdiff_t a = X->indices[k];
                const double ha = h * X->data[k];
                for (int64_t l = X->indptr[i]; l < X->indptr[i + 1]; l++) {
                    const ptrdiff_t c = X->indices[l];
                    if (c >= a) {
                        hessian[a * np + c] += ha * X->data[l];
                    }
                }
                if (p->fit_intercept) {
                    hessian[a * np + d] += ha;
                }
            }
        }
        if (p->fit_intercept) {
            hessian[d * np + d] += h;
        }
    }
    for (ptrdiff_t a = 0; a < np; a++) {
        for (ptrdiff_t c = a; c < np; c++) {
            hessian[a * np + c] *= p->scale;
        }
    }
    for (ptrdiff_t a = 0; a < d; a++) {
        hessian[a * np + a] += p->alpha;
    }
    /* mirror the upper triangle */
    for (ptrdiff_t a = 0; a < np; a++) {
        for (ptrdiff_t c = 0; c < a; c++) {
            hessian[a * np + c] = hessian[c * np + a];
        }
    }
    return 0;
}
