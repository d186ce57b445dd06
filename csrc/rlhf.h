/*
 * rlhf.h - the plain-C kernels of rlhf.
 *
 * Kernels see raw buffers only: inputs as const pointers, lengths as
 * ptrdiff_t, scalars, then outputs.  They never include Python.h, never
 * write into their inputs and return an int status: 0 on success, a
 * negative RLHF_E... code on failure, or a non-negative RLHF_... outcome
 * code where a solver has several ways of finishing.
 */
#ifndef RLHF_H
#define RLHF_H

#include <stddef.h>
#include <stdint.h>

/* Errors (negative). The wrapper maps each one to a Python exception. */
#define RLHF_ENOMEM     (-1)  /* a scratch allocation failed */
#define RLHF_EVALUE     (-2)  /* an argument is out of its domain */
#define RLHF_ENONFINITE (-3)  /* a NaN or infinity appeared where it must not */
#define RLHF_ECALLBACK  (-4)  /* a user objective reported failure */
#define RLHF_ENOTPD     (-5)  /* a Hessian was not positive definite */
#define RLHF_EINTR      (-6)  /* the host asked the kernel to stop */

/*
 * Hot loops built for AVX2 and AVX-512 as well where GCC can choose at load
 * time.  The arithmetic is the same IEEE operations in every version (no
 * fused multiply-add: -std=c99 keeps contraction off), so the results are
 * bitwise the same whichever is chosen.
 */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__)
#define RLHF_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RLHF_CLONES
#endif

/*
 * OpenMP: parallel regions keep to OpenMP 2.0, all that MSVC's /openmp
 * offers (_OPENMP 200203): signed loop indices, no collapse, scalar
 * reductions only, and a status set by a failing thread under
 * `critical(rlhf_status)` rather than 3.1's `atomic write` (it happens on
 * error paths only).  The `simd` hints (4.0) are used where the compiler
 * has them; each marks a loop whose result does not depend on the order
 * of its iterations (element-wise; a max, min, bitwise or or integer
 * reduction; a sum only tested for being finite), so builds with and
 * without them give the same bits.
 */
#if defined(_OPENMP) && _OPENMP >= 201307
#define RLHF_OMP_SIMD 1
/* clang cannot vectorise a floating-point max or min reduction without
 * -ffast-math's assumptions and warns that the hint failed; GCC can */
#if !defined(__clang__)
#define RLHF_OMP_SIMD_MINMAX 1
#endif
#endif

/* runtime.c ---------------------------------------------------------- */

/*
 * What a kernel asks of its host.  A long kernel calls rlhf_interrupted()
 * between units of work (solver iterations, blocks of a few million
 * entries), outside any parallel region, and returns RLHF_EINTR when it
 * says yes.  The call is cheap: the host's hook runs at most every
 * RLHF_INTERRUPT_PERIOD_MS milliseconds of wall time per thread.  With no
 * hook set nothing is ever interrupted.
 */
typedef int (*rlhf_interrupt_hook)(void);  /* non-zero: stop */
#define RLHF_INTERRUPT_PERIOD_MS 50
void rlhf_set_interrupt_hook(rlhf_interrupt_hook hook);
int rlhf_interrupted(void);

/*
 * Threads: rlhf_threads(requested) is the team size a parallel region
 * uses, requested when > 0, else the OpenMP default, and always 1 once
 * rlhf_set_serial() was called.  The host calls it in a child process
 * made by fork(): the OpenMP runtime's thread pool does not survive a
 * fork, and a parallel region in the child would wait for it forever.
 * Results never depend on the thread count, so the serial path gives the
 * same bits.
 */
int rlhf_threads(int requested);
void rlhf_set_serial(void);

/*
 * A cap on the default team size (requested <= 0) of the kernels called
 * from the calling thread afterwards: 0 removes it.  Returns the previous
 * cap.  Per thread where the compiler has thread-local storage, so that a
 * loop choosing its threads (PPO on a busy machine) does not change them
 * for kernels run by other threads.  rlhf_default_threads() is the team a
 * region without a request gets now, the cap included.
 */
int rlhf_set_thread_cap(int cap);
int rlhf_default_threads(void);

/*
 * Rows of an (n_rows, k) array a one-call kernel handles between two
 * interrupt checks: about RLHF_CHECK_ENTRIES entries, at least one row.
 */
#define RLHF_CHECK_ENTRIES ((ptrdiff_t)1 << 21)
ptrdiff_t rlhf_check_rows(ptrdiff_t k);
/* The same, rounded up to a multiple of a team of n_threads, so that a
 * parallel region over a group of wide blocks keeps every thread busy. */
ptrdiff_t rlhf_check_group(ptrdiff_t k, int n_threads);

/* Ways a solver finishes (non-negative). */
#define RLHF_CONVERGED_GTOL 0  /* largest |gradient component| <= gtol */
#define RLHF_CONVERGED_FTOL 1  /* relative decrease of f <= ftol */
#define RLHF_MAX_ITER       2  /* the iteration limit was reached */
#define RLHF_LINESEARCH     3  /* the line search found no acceptable step */

/*
 * An objective for the minimisers: writes f(x) into *f and its gradient
 * into g (length n).  Returns 0, or non-zero to stop the solver, which then
 * returns RLHF_CALLBACK_STATUS of it.
 */
typedef int (*rlhf_objective)(void *ctx, const double *x, double *f,
                              double *g);

/* A solver's status when an objective or Hessian callback returned s != 0:
 * an interrupt stays an interrupt, anything else is the callback's
 * failure. */
#define RLHF_CALLBACK_STATUS(s) \
    ((s) == RLHF_EINTR ? (s) : RLHF_ECALLBACK)

/* An objective's Hessian at x, into the upper triangle of the row-major
 * n x n matrix H.  Returns 0, or non-zero on failure. */
typedef int (*rlhf_hessian)(void *ctx, const double *x, double *H);

/* logistic.c --------------------------------------------------------- */

/* A design matrix: dense C-contiguous rows, or CSR. */
typedef struct {
    ptrdiff_t n_rows;
    ptrdiff_t n_cols;
    const double *dense;     /* n_rows * n_cols, row-major, or NULL */
    const double *data;      /* CSR values, or NULL */
    const int64_t *indices;  /* CSR column indices */
    const int64_t *indptr;   /* CSR row pointers, n_rows + 1 */
} rlhf_matrix;

/* The weighted, penalised logistic objective (see logistic.c). */
typedef struct {
    rlhf_matrix X;
    const double *y;              /* n_rows labels in {0, 1} */
    const double *sample_weight;  /* n_rows weights >= 0 */
    int fit_intercept;            /* 1: x holds n_cols + 1 values, b last */
    double scale;                 /* multiplies the data term */
    double alpha;                 /* L2 strength: + alpha/2 ||w||^2 */
    int n_threads;                /* <= 0: the OpenMP default */
    double *scratch;              /* rlhf_logistic_scratch_size doubles */
} rlhf_logistic;

ptrdiff_t rlhf_logistic_scratch_size(const rlhf_logistic *problem);
int rlhf_logistic_loss_grad(void *problem, const double *w, double *loss,
                            double *grad);
int rlhf_logistic_hessian(const rlhf_logistic *problem, const double *w,
                          double *hessian);

/* lbfgs.c ------------------------------------------------------------ */

ptrdiff_t rlhf_lbfgs_work_size(ptrdiff_t n, int m);
int rlhf_lbfgs_minimize(rlhf_objective fun, void *ctx, ptrdiff_t n,
                        double *x, double *f, double *g, int m, double gtol,
                        double ftol, int max_iter, int maxls, double *work,
                        int *n_iter, int *n_fev);

/* newton.c ----------------------------------------------------------- */

int rlhf_newton_logistic(rlhf_logistic *problem, double *x, double *f,
                         double *g, double gtol, int max_iter, double *work,
                         int *n_iter, int *n_fev);
ptrdiff_t rlhf_newton_work_size(ptrdiff_t n);
int rlhf_newton_minimize(rlhf_objective fun, rlhf_hessian hess, void *ctx,
                         ptrdiff_t np, double *x, double *f, double *g,
                         double gtol, int max_iter, double *work,
                         int *n_iter, int *n_fev);

/* bradley_terry.c ---------------------------------------------------- */

#define RLHF_BRADLEY_TERRY   0
#define RLHF_PLACKETT_LUCE   1
#define RLHF_TIES_NONE       0
#define RLHF_TIES_RAO_KUPPER 1
#define RLHF_TIES_DAVIDSON   2

/* A preference likelihood over items (see bradley_terry.c). */
typedef struct {
    rlhf_matrix F;               /* item features, n_items rows */
    int F_identity;              /* 1: one free strength per item, F unused */
    ptrdiff_t n_items;
    int likelihood;              /* RLHF_BRADLEY_TERRY or RLHF_PLACKETT_LUCE */
    ptrdiff_t n_comparisons;
    const int64_t *comparisons;  /* (n_comparisons, 2): preferred, other */
    const double *margin;        /* n_comparisons, or NULL */
    const uint8_t *tie;          /* n_comparisons (1 = tied), or NULL */
    int tie_model;               /* RLHF_TIES_... */
    ptrdiff_t n_groups;
    ptrdiff_t group_size;        /* K; 1 for Bradley-Terry */
    const int64_t *rankings;     /* (n_groups, K) best first, -1 pads */
    const double *sample_weight; /* per comparison or group, or NULL */
    double alpha;                /* + alpha/2 ||w||^2 */
    int n_threads;               /* <= 0: the OpenMP default */
    double *scratch;             /* rlhf_bt_scratch_size doubles */
    /* optional (rlhf_bt_transpose): sparse F by columns, for F^T g */
    const int64_t *FT_indptr;    /* n_cols + 1, or NULL */
    const int32_t *FT_rows;      /* each column's rows, ascending */
    const double *FT_data;
} rlhf_bt;

ptrdiff_t rlhf_bt_n_params(const rlhf_bt *problem);
ptrdiff_t rlhf_bt_scratch_size(const rlhf_bt *problem);
ptrdiff_t rlhf_bt_work_size(const rlhf_bt *problem, int newton);
int rlhf_bt_has_transpose(const rlhf_bt *problem);
int rlhf_bt_transpose(const rlhf_bt *problem, int64_t *indptr,
                      int32_t *rows, double *data);
int rlhf_bt_loss_grad(void *problem, const double *x, double *loss,
                      double *grad);
int rlhf_bt_hessian(void *problem, const double *x, double *H);
int rlhf_pair_counts(const double *r, ptrdiff_t n_items, const int64_t *pairs,
                     ptrdiff_t n_pairs, const uint8_t *tie, int n_threads,
                     int64_t *counts);
int rlhf_bt_fit(rlhf_bt *problem, int newton, double *x, double *f,
                double *g, double tol, int max_iter, double *work,
                int *n_iter, int *n_fev);

/* reweight.c --------------------------------------------------------- */

int rlhf_reweight(const double *policy, const double *rewards,
                  ptrdiff_t n_rows, ptrdiff_t n_actions, double eta,
                  double eps, double *out);

/* constrained.c ------------------------------------------------------ */

int rlhf_constrained_policy(const double *reference_policy,
                            const double *rewards, const double *costs,
                            const double *budget, ptrdiff_t n_rows,
                            ptrdiff_t n_actions, double beta, double *policy,
                            double *multiplier, ptrdiff_t *bad_row);
/* policy_opt.c ------------------------------------------------------- */

#define RLHF_KL_K1 1  /* KL estimate log(pi / pi_ref) */
#define RLHF_KL_K3 3  /* KL estimate pi_ref / pi - 1 - log(pi_ref / pi) */

#define RLHF_BASELINE_MEAN 0  /* r - group mean */
#define RLHF_BASELINE_RLOO 1  /* r - mean of the rest of the group */
#define RLHF_BASELINE_GRPO 2  /* (r - group mean) / (group std + eps) */

#define RLHF_DPO_SIGMOID 0
#define RLHF_DPO_ROBUST  1
#define RLHF_DPO_HINGE   2
#define RLHF_DPO_IPO     3

int rlhf_log_softmax(const double *logits, ptrdiff_t n_rows, ptrdiff_t k,
                     double *logp, double *p);
int rlhf_sample_categorical(const double *policy, ptrdiff_t n_rows,
                            ptrdiff_t k, ptrdiff_t n_samples, uint64_t seed,
                            uint64_t counter, int64_t *out);
int rlhf_shape_rewards(const double *rewards, const double *logp,
                       const double *ref_logp, ptrdiff_t n_rows, ptrdiff_t k,
                       const int64_t *actions, ptrdiff_t n_samples,
                       double kl_coef, int kl_kind, double *shaped,
                       double *sample_logp);
int rlhf_advantages(const double *rewards, ptrdiff_t n_groups,
                    ptrdiff_t group_size, int baseline, double eps,
                    double *out);
int rlhf_ppo_loss_grad(const double *logits, const double *ref_logp,
                       ptrdiff_t n_rows, ptrdiff_t k, const int64_t *rows,
                       ptrdiff_t n_batch, const int64_t *actions,
                       const double *weights, const double *old_logp,
                       const double *advantages, ptrdiff_t n_samples,
                       double clip, double kl_coef, int kl_kind,
                       double *loss, double *grad, double *clip_fraction);
int rlhf_dpo_loss_grad(const double *logits, const double *ref_logp,
                       ptrdiff_t n_rows, ptrdiff_t k,
                       const int64_t *comparisons, const double *weights,
                       ptrdiff_t n_comparisons, double beta, int loss_kind,
                       double label_smoothing, double *loss, double *grad,
                       double *stats);
int rlhf_policy_stats(const double *logp, const double *ref_logp,
                      const double *rewards, ptrdiff_t n_rows, ptrdiff_t k,
                      double *out);
int rlhf_ppo_adam_step(double *theta, double *m, double *v,
                       const double *ref_logp, ptrdiff_t n_rows, ptrdiff_t k,
                       const int64_t *rows, ptrdiff_t n_batch,
                       const int64_t *actions, const double *weights,
                       const double *old_logp, const double *advantages,
                       ptrdiff_t n_samples, double clip, double kl_coef,
                       int kl_kind, double lr, double beta1, double beta2,
                       double eps, int64_t t, double *loss,
                       double *clip_fraction);
int rlhf_adam_step(double *theta, const double *grad, double *m, double *v,
                   ptrdiff_t n, double lr, double beta1, double beta2,
                   double eps, int64_t t);

/* sequences.c -------------------------------------------------------- */

ptrdiff_t rlhf_n_prefixes(ptrdiff_t n_words, int64_t n_levels);
int rlhf_sample_sequences(const double *probs, ptrdiff_t n_states,
                          ptrdiff_t V, ptrdiff_t n, ptrdiff_t T,
                          uint64_t seed, int64_t end_token, int64_t depth,
                          int64_t *tokens, int64_t *lengths);
int rlhf_sequence_log_probs(const double *log_probs, ptrdiff_t n_states,
                            ptrdiff_t V, const int64_t *tokens,
                            const int64_t *lengths, ptrdiff_t n, ptrdiff_t T,
                            int64_t end_token, int64_t depth,
                            int64_t *states, double *logp);
int rlhf_soft_backup(const double *ref_log_probs, const double *scaled_rewards,
                     ptrdiff_t V, ptrdiff_t T, int64_t end_token,
                     double *optimum, double *values);
int rlhf_gae(const double *rewards, const double *values,
             const int64_t *n_steps, ptrdiff_t n, ptrdiff_t T, double gamma,
             double lam, double *advantages, double *returns);
int rlhf_copy_token_indices(const int64_t *states, const int64_t *actions,
                            ptrdiff_t n, ptrdiff_t n_states, ptrdiff_t V,
                            int64_t *states_out, int64_t *actions_out);
int rlhf_copy_indices(const int64_t *indices, ptrdiff_t n, ptrdiff_t upper,
                      int64_t *out);
int rlhf_token_grad(const double *log_probs, ptrdiff_t n_states, ptrdiff_t V,
                    const int64_t *states, const int64_t *actions,
                    const double *coefs, ptrdiff_t n_tokens, double *grad);
int rlhf_token_ppo_adam_step(double *theta, double *m, double *v,
                             const double *ref_log_probs, ptrdiff_t n_states,
                             ptrdiff_t V, const int64_t *states,
                             const int64_t *actions, const double *weights,
                             const double *old_logp,
                             const double *advantages, ptrdiff_t n_tokens,
                             double clip, double kl_coef, int kl_kind,
                             double scale, double lr, double beta1,
                             double beta2, double eps, int64_t t,
                             double *loss, double *clip_fraction);
int rlhf_value_adam_step(double *values, double *m, double *v,
                         ptrdiff_t n_states, const int64_t *states,
                         const double *weights, const double *returns,
                         const double *old_values, ptrdiff_t n_tokens,
                         double value_clip, double scale, double lr,
                         double beta1, double beta2, double eps, int64_t t,
                         double *loss);

/* gpt.c -------------------------------------------------------------- */

typedef struct {
    ptrdiff_t n_layer, n_head, n_embd, vocab_size, block_size;
} rlhf_gpt_config;

ptrdiff_t rlhf_gpt_n_params(const rlhf_gpt_config *g);
ptrdiff_t rlhf_gpt_n_acts(const rlhf_gpt_config *g, ptrdiff_t B, ptrdiff_t T);
void rlhf_gpt_tail_offsets(const rlhf_gpt_config *g, ptrdiff_t B, ptrdiff_t T,
                           ptrdiff_t *hidden, ptrdiff_t *lse,
                           ptrdiff_t *logits);
int rlhf_gpt_forward(const rlhf_gpt_config *g, float *params,
                     const int64_t *tokens, ptrdiff_t B, ptrdiff_t T,
                     float *acts);
int rlhf_gpt_token_stats(const rlhf_gpt_config *g, const float *acts,
                         ptrdiff_t B, ptrdiff_t T, const int64_t *targets,
                         float *logp, float *entropy);
int rlhf_gpt_backward(const rlhf_gpt_config *g, float *params,
                      const int64_t *tokens, ptrdiff_t B, ptrdiff_t T,
                      float *acts, const int64_t *targets, const float *coef,
                      float *grads);
int rlhf_gpt_adamw(float *params, const float *grads, float *m, float *v,
                   const uint8_t *decay, ptrdiff_t n, double lr, double beta1,
                   double beta2, double eps, double weight_decay,
                   int64_t step, double max_norm, double *norm);
int rlhf_gpt_generate(const rlhf_gpt_config *g, float *params,
                      const int64_t *prompts, ptrdiff_t n, ptrdiff_t P,
                      const int64_t *lengths, ptrdiff_t max_new,
                      double temperature, ptrdiff_t top_k,
                      ptrdiff_t n_allowed, uint64_t seed, int64_t eot,
                      int64_t *out_tokens, float *out_logp,
                      int64_t *out_lengths);

#endif /* RLHF_H */
