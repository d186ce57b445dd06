/*
 * sequences.c - token-level kernels for tabular sequence policies
 * (rlhf.sequences): a response is a sequence of tokens ending with an end
 * token, and a policy is a table with one row of V token probabilities per
 * state.
 *
 * Letters: n sequences, T positions (max_length), V tokens, W = V - 1
 * words (the tokens other than the end token, word c the c-th smallest of
 * them), S states (rows of a table, n_states in the code), P and N the
 * prefixes of up to T - 2 and T - 1 words (the soft backup's trie).
 *
 * States: the state at position t is the trie index of the last
 * k = min(t, depth) words of the prefix,
 *   state = offsets[k] + code,   offsets[j] = sum_{i<j} W^i,
 * with code the k words as a number in base W (the oldest word first):
 * code = code * W + word after each token, then code %= W^depth once
 * t + 1 > depth.  A table of context depth has offsets[depth + 1] rows.
 * The word of a token is the token below the end token, token - 1 above
 * it, and 0 for the end token itself (which never enters a context: the
 * sequence stops there).  A position is a choice when it lies before the
 * end and below T - 1 (the end token at T - 1 is forced); flat token
 * arrays mark the other positions with the state -1, which every kernel
 * here skips.
 *
 * Kernels (each has a NumPy twin of the same name in rlhf/_reference.py):
 *
 *   rlhf_sample_sequences      tokens ~ pi, from a counter-based generator
 *   rlhf_sequence_log_probs    the state and log pi(a_t | s_t) of each token
 *   rlhf_soft_backup           the soft Bellman optimum over a whole trie
 *   rlhf_gae                   generalised advantage estimation
 *   rlhf_token_grad            sum_i c_i (e_{a_i} - pi(. | s_i)) by state
 *   rlhf_token_ppo_adam_step   PPO's token-level surrogate, then Adam
 *   rlhf_value_adam_step       PPO's clipped value loss, then Adam
 *
 * and, for their callers, rlhf_copy_token_indices and rlhf_copy_indices:
 * the private copies of index arrays, checked as they are copied.
 *
 * Determinism: loops over sequences, rows or trie nodes write only their
 * own outputs.  The token kernels scatter into rows of a table, in one of
 * two ways chosen by the sizes alone: they stream the tokens in blocks of
 * a fixed size, each block adding its tokens in token order into a table
 * of its own, and add up the blocks' tables in block order; or (huge
 * tables, few tokens) they group the tokens by state with a stable
 * counting sort, and one thread computes each state's row, adding its
 * tokens in token order, sums over states (losses) going through
 * per-state buffers added in state order.  So results are bitwise the
 * same for any number of threads.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "numerics.h"
#include "fastexp.h"
#include "rlhf.h"

#define RLHF_PARALLEL_MIN 32768 /* entries below which one thread is used */

/* a * b, or PTRDIFF_MAX when that overflows (a, b >= 0): a measure of
 * work, where saturating is harmless. */
static ptrdiff_t work_of(ptrdiff_t a, ptrdiff_t b)
{
    return a > 0 && b > PTRDIFF_MAX / a ? PTRDIFF_MAX : a * b;
}

/* The word number of a token (see the top of the file). */
static int64_t word_of(int64_t token, int64_t end_token)
{
    return token > end_token ? token - 1 : (token == end_token ? 0 : token);
}

/*
 * offsets[n_levels] = sum_{i < n_levels} n_words^i: the rows of a table of
 * contexts of up to n_levels - 1 words.  Returns -1 when that exceeds
 * PTRDIFF_MAX (or n_words < 0 or n_levels < 0).
 */
ptrdiff_t rlhf_n_prefixes(ptrdiff_t n_words, int64_t n_levels)
{
    if (n_words < 0 || n_levels < 0) {
        return -1;
    }
    if (n_words <= 1) {
        /* 1 + 1 + ...; with no words only the empty context (0^0 = 1) */
        if (n_words == 0) {
            return n_levels > 0 ? 1 : 0;
        }
        return n_levels <= PTRDIFF_MAX ? (ptrdiff_t)n_levels : -1;
    }
    ptrdiff_t total = 0, power = 1;
    for (int64_t i = 0; i < n_levels; i++) {
        if (total > PTRDIFF_MAX - power) {
            return -1;
        }
        total += power;
        if (i + 1 < n_levels) {
            if (power > PTRDIFF_MAX / n_words) {
                return -1; /* the next term alone overflows */
            }
            power *= n_words;
        }
    }
    return total;
}

/*
 * Where a sequence's context stands: its state is offset + code, power =
 * W^min(t, depth).  context_advance moves it past the word of position t,
 * row[t], given lead = W^(depth - 1) (context_lead).
 */
typedef struct {
    ptrdiff_t offset, code, power;
} context;

static inline void context_advance(context *c, ptrdiff_t n_words,
                                   const int64_t *row, ptrdiff_t t,
                                   int64_t depth, int64_t end_token,
                                   ptrdiff_t lead)
{
    const ptrdiff_t word = (ptrdiff_t)word_of(row[t], end_token);
    if (t + 1 <= depth) {
        /* one word more of context: offsets[t + 1] = offsets[t] + W^t */
        c->code = c->code * n_words + word;
        c->offset += c->power;
        c->power *= n_words;
    } else if (depth > 0) {
        /* the oldest word, that of position t - depth, falls out: code =
         * (code W + word) % W^depth without the division */
        const ptrdiff_t oldest =
            (ptrdiff_t)word_of(row[t - (ptrdiff_t)depth], end_token);
        c->code = (c->code - oldest * lead) * n_words + word;
    }
}

/* W^(depth - 1), the weight of a full context's oldest word (a table of
 * context depth has more than W^depth rows, so this fits); 0 for depth 0,
 * and for depth > T, a context no sequence of T positions fills. */
static ptrdiff_t context_lead(ptrdiff_t n_words, int64_t depth, ptrdiff_t T)
{
    if (depth < 1 || depth > T) {
        return 0;
    }
    ptrdiff_t lead = 1;
    for (int64_t i = 1; i < depth; i++) {
        lead *= n_words;
    }
    return lead;
}

/* -- sampling and scoring ---------------------------------------------- */

/*
 * The first j with target < cdf[j], or V when there is none, for a
 * non-decreasing row cdf (a cumulative sum of non-negative numbers): the
 * number of entries <= target, counted in a loop that vectorises for a
 * short row, by binary search for a long one.
 */
static inline ptrdiff_t first_above(const double *cdf, ptrdiff_t V,
                                    double target)
{
    if (V <= 64) {
        ptrdiff_t count = 0;
#ifdef RLHF_OMP_SIMD
#pragma omp simd reduction(+ : count)
#endif
        for (ptrdiff_t j = 0; j < V; j++) {
            count += cdf[j] <= target;
        }
        return count;
    }
    ptrdiff_t low = 0, size = V; /* the answer lies in [low, low + size] */
    while (size > 0) {
        const ptrdiff_t half = size / 2;
        if (cdf[low + half] <= target) {
            low += half + 1;
            size -= half + 1;
        } else {
            size = half;
        }
    }
    return low;
}

/* What rlhf_sample_sequences's draws read: the table, or its rows'
 * cumulative sums, and the rows' totals and last tokens of positive
 * probability. */
typedef struct {
    const double *probs, *cdf; /* cdf NULL: the draws scan probs */
    const double *total;
    const ptrdiff_t *last;
    ptrdiff_t V, T, lead;
    uint64_t seed;
    int64_t end_token, depth;
} sampler;

/* Sequence i of rlhf_sample_sequences into row (T tokens) and *length. */
RLHF_CLONES
static void sample_sequence(const sampler *a, ptrdiff_t i, int64_t *row,
                            int64_t *length)
{
    const ptrdiff_t V = a->V, T = a->T;
    for (ptrdiff_t t = 0; t < T; t++) {
        row[t] = a->end_token;
    }
    *length = (int64_t)T;
    context c = {0, 0, 1};
    for (ptrdiff_t t = 0; t + 1 < T; t++) {
        const ptrdiff_t state = c.offset + c.code;
        const uint64_t counter = (uint64_t)i * (uint64_t)T + (uint64_t)t;
        const double target =
            splitmix_uniform(a->seed, counter) * a->total[state];
        /* the inverse CDF: the first j with target < cumsum(p)[j] */
        ptrdiff_t pick;
        if (a->cdf != NULL) {
            pick = first_above(a->cdf + state * V, V, target);
        } else {
            const double *p = a->probs + state * V;
            double cum = 0.0;
            for (pick = 0; pick < V; pick++) {
                cum += p[pick];
                if (target < cum) {
                    break;
                }
            }
        }
        if (pick == V) {
            pick = a->last[state]; /* rounding left no token */
        }
        row[t] = (int64_t)pick;
        if (pick == a->end_token) {
            *length = (int64_t)(t + 1);
            break;
        }
        context_advance(&c, V - 1, row, t, a->depth, a->end_token, a->lead);
    }
}

/*
 * Sequences drawn token by token from a table of probabilities:
 *   tokens[i, t] ~ probs[state(i, t)], by inverse CDF with output
 *   i * T + t of SplitMix64 seeded with seed (see splitmix_uniform): the
 *   first j with u * sum(row) < cumsum(row)[j], added left to right; the
 *   last token of positive probability when rounding leaves none.
 * A sequence stops at its first end token: lengths[i] is its position + 1,
 * or T when the end token is forced at T - 1; the tokens after the end are
 * the end token.  When there are at least as many draws as rows, the
 * rows' cumulative sums are formed once (n_states * V doubles of scratch)
 * rather than at every draw: the same sums, so the same tokens.
 *
 * probs        n_states * V, probabilities (rows need not be normalised),
 *              n_states = offsets[depth + 1], V >= 2 (checked by the
 *              caller, as end_token in [0, V) and depth >= 0)
 * tokens       n * T, written
 * lengths      n, written
 * Returns 0, RLHF_ENOMEM, RLHF_EVALUE for a row of probs without positive
 * mass or with a negative or non-finite entry (every row is checked), or
 * RLHF_EINTR (asked about every RLHF_CHECK_ENTRIES entries); the outputs
 * are then incomplete.
 */
int rlhf_sample_sequences(const double *probs, ptrdiff_t n_states,
                          ptrdiff_t V, ptrdiff_t n, ptrdiff_t T,
                          uint64_t seed, int64_t end_token, int64_t depth,
                          int64_t *tokens, int64_t *lengths)
{
    const int team = rlhf_threads(0);
    const size_t rows_1 = (size_t)(n_states > 0 ? n_states : 1);
    const int cumulative = work_of(n, T - 1) >= n_states;
    /* total[s]: the row's sum, added left to right; last[s]: its last
     * token of positive probability; cdf: the rows' cumulative sums */
    double *total = malloc(rows_1 * sizeof(double));
    ptrdiff_t *last = malloc(rows_1 * sizeof(ptrdiff_t));
    double *cdf = cumulative ? malloc(rows_1 * (size_t)V * sizeof(double))
                             : NULL;
    if (total == NULL || last == NULL || (cumulative && cdf == NULL)) {
        free(total);
        free(last);
        free(cdf);
        return RLHF_ENOMEM;
    }
    int status = 0;
    const ptrdiff_t rows = rlhf_check_group(V, team);
    for (ptrdiff_t s0 = 0; s0 < n_states && status == 0; s0 += rows) {
        if (s0 > 0 && rlhf_interrupted()) {
            status = RLHF_EINTR;
            break;
        }
        const ptrdiff_t s1 = s0 + rows < n_states ? s0 + rows : n_states;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) \
    if (work_of(s1 - s0, V) > RLHF_PARALLEL_MIN)
#endif
        for (ptrdiff_t s = s0; s < s1; s++) {
            const double *p = probs + s * V;
            double sum = 0.0;
            ptrdiff_t pick = -1;
            int bad = 0;
            for (ptrdiff_t j = 0; j < V; j++) {
                if (!(p[j] >= 0.0) || !isfinite(p[j])) {
                    bad = 1;
                }
                sum += p[j];
                if (cdf != NULL) {
                    cdf[s * V + j] = sum;
                }
                if (p[j] > 0.0) {
                    pick = j;
                }
            }
            total[s] = sum;
            last[s] = pick;
            if (bad || pick < 0 || !isfinite(sum)) {
#ifdef _OPENMP
#pragma omp critical(rlhf_status)
#endif
                status = RLHF_EVALUE;
            }
        }
    }
    const sampler a = {probs, cdf, total, last, V, T,
                       context_lead(V - 1, depth, T), seed, end_token, depth};
    /* a sequence costs up to T - 1 draws of up to V entries each */
    const ptrdiff_t group = rlhf_check_group(work_of(T, V), team);
    for (ptrdiff_t i0 = 0; i0 < n && status == 0; i0 += group) {
        if (i0 > 0 && rlhf_interrupted()) {
            status = RLHF_EINTR;
            break;
        }
        const ptrdiff_t i1 = i0 + group < n ? i0 + group : n;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) \
    if (work_of(work_of(i1 - i0, T), V) > RLHF_PARALLEL_MIN)
#endif
        for (ptrdiff_t i = i0; i < i1; i++) {
            sample_sequence(&a, i, tokens + i * T, lengths + i);
        }
    }
    free(total);
    free(last);
    free(cdf);
    return status;
}

/*
 * The state of every position and its token's log-probability:
 *   states[i, t] = state(i, t), logp[i, t] = log_probs[states[i, t],
 *   tokens[i, t]]  for t < min(lengths[i], T - 1);
 *   states[i, t] = -1, logp[i, t] = 0  elsewhere.
 *
 * log_probs    n_states * V, n_states = offsets[depth + 1]
 * tokens       n * T, each in [0, V);  lengths  n, each in [1, T] (the
 *              caller checks both, and end_token, depth and n_states)
 * states, logp n * T, written
 * Returns 0 or RLHF_EINTR (the outputs are then incomplete).
 */
int rlhf_sequence_log_probs(const double *log_probs, ptrdiff_t n_states,
                            ptrdiff_t V, const int64_t *tokens,
                            const int64_t *lengths, ptrdiff_t n, ptrdiff_t T,
                            int64_t end_token, int64_t depth,
                            int64_t *states, double *logp)
{
    (void)n_states;
    const ptrdiff_t W = V - 1, lead = context_lead(W, depth, T);
    const int team = rlhf_threads(0);
    const ptrdiff_t group = rlhf_check_group(T, team);
    for (ptrdiff_t i0 = 0; i0 < n; i0 += group) {
        if (i0 > 0 && rlhf_interrupted()) {
            return RLHF_EINTR;
        }
        const ptrdiff_t i1 = i0 + group < n ? i0 + group : n;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) \
    if (work_of(i1 - i0, T) > RLHF_PARALLEL_MIN)
#endif
        for (ptrdiff_t i = i0; i < i1; i++) {
            const int64_t *row = tokens + i * T;
            const ptrdiff_t choices =
                lengths[i] < T - 1 ? (ptrdiff_t)lengths[i] : T - 1;
            context c = {0, 0, 1};
            for (ptrdiff_t t = 0; t < choices; t++) {
                const ptrdiff_t state = c.offset + c.code;
                states[i * T + t] = (int64_t)state;
                logp[i * T + t] = log_probs[state * V + row[t]];
                context_advance(&c, W, row, t, depth, end_token, lead);
            }
            for (ptrdiff_t t = choices > 0 ? choices : 0; t < T; t++) {
                states[i * T + t] = -1;
                logp[i * T + t] = 0.0;
            }
        }
    }
    return 0;
}

/* -- the soft Bellman optimum ------------------------------------------ */

/*
 * One node of the backup: z = ref + q, v = logsumexp(z) with the maximum
 * subtracted (so nothing overflows, and rows with -inf entries, tokens of
 * probability 0, are fine), out = z - v.  NaN propagates as in NumPy: a
 * NaN in z, or a row without an entry below +inf or above -inf, gives a
 * NaN value.  q is rewards at the end token and the children's values at
 * the words, in token order; e is V doubles of scratch.
 */
RLHF_CLONES
static double backup_node(const double *ref, double reward,
                          const double *children, ptrdiff_t V,
                          ptrdiff_t end_token, double *out, double *e)
{
#ifdef RLHF_OMP_SIMD
#pragma omp simd
#endif
    for (ptrdiff_t j = 0; j < end_token; j++) {
        out[j] = ref[j] + children[j];
    }
    out[end_token] = ref[end_token] + reward;
#ifdef RLHF_OMP_SIMD
#pragma omp simd
#endif
    for (ptrdiff_t j = end_token + 1; j < V; j++) {
        out[j] = ref[j] + children[j - 1];
    }
    double top = -INFINITY;
    int nan_seen = 0;
#ifdef RLHF_OMP_SIMD_MINMAX
#pragma omp simd reduction(max : top) reduction(| : nan_seen)
#endif
    for (ptrdiff_t j = 0; j < V; j++) {
        top = out[j] > top ? out[j] : top; /* exact in any order */
        nan_seen |= out[j] != out[j];
    }
    top = nan_seen ? NAN : top;
    /* z - top <= 0, or NaN (top infinite or NaN), which exp_nonpositive
     * passes through */
#ifdef RLHF_OMP_SIMD
#pragma omp simd
#endif
    for (ptrdiff_t j = 0; j < V; j++) {
        e[j] = exp_nonpositive(out[j] - top);
    }
    double total = 0.0;
    for (ptrdiff_t j = 0; j < V; j++) {
        total += e[j];
    }
    const double value = top + log(total);
#ifdef RLHF_OMP_SIMD
#pragma omp simd
#endif
    for (ptrdiff_t j = 0; j < V; j++) {
        out[j] -= value;
    }
    return value;
}

/*
 * The soft Bellman backup over the whole-prefix trie of sequences of at
 * most T tokens, in units of beta (see DESIGN.md, "Token level"):
 *   v(s) = log sum_a pi_ref(a|s) exp(q(s, a)),
 *   q(s, end) = r(s + end) / beta,  q(s, a) = v(s + a) for a word,
 *   v(s) = r(s) / beta for the prefixes of T - 1 words,
 *   log pi*(a|s) = log pi_ref(a|s) + q(s, a) - v(s).
 * Node s + word c of node offsets[t] + k is offsets[t + 1] + k W + c.
 *
 * ref_log_probs   P * V, P = offsets[T - 1]: log pi_ref of the prefixes
 *                 of 0 .. T - 2 words; -inf entries allowed
 * scaled_rewards  N = offsets[T]: r / beta of the sequence that ends after
 *                 each prefix
 * optimum         P * V, written: log pi*
 * values          N, written: v
 * V >= 2, T >= 1, end_token in [0, V) (checked by the caller).
 * Returns 0, RLHF_ENOMEM or RLHF_EINTR (asked between blocks of about
 * RLHF_CHECK_ENTRIES entries; the outputs are then incomplete).
 */
int rlhf_soft_backup(const double *ref_log_probs, const double *scaled_rewards,
                     ptrdiff_t V, ptrdiff_t T, int64_t end_token,
                     double *optimum, double *values)
{
    const ptrdiff_t W = V - 1;
    ptrdiff_t *offsets = malloc((size_t)(T + 1) * sizeof(ptrdiff_t));
    if (offsets == NULL) {
        return RLHF_ENOMEM;
    }
    /* offsets[j + 1] = offsets[j] + W^j; the caller checked offsets[T] */
    offsets[0] = 0;
    for (ptrdiff_t j = 0, power = 1; j < T; j++) {
        offsets[j + 1] = offsets[j] + power;
        if (j + 1 < T) {
            power *= W;
        }
    }
    const ptrdiff_t N = offsets[T];
    for (ptrdiff_t q = 0; q < N; q++) {
        values[q] = scaled_rewards[q];
    }
    const int team = rlhf_threads(0);
    const ptrdiff_t group = rlhf_check_group(V, team);
    int status = 0;
    for (ptrdiff_t t = T - 2; t >= 0 && status == 0; t--) {
        for (ptrdiff_t o0 = offsets[t]; o0 < offsets[t + 1]; o0 += group) {
            if (rlhf_interrupted()) {
                status = RLHF_EINTR;
                break;
            }
            const ptrdiff_t o1 =
                o0 + group < offsets[t + 1] ? o0 + group : offsets[t + 1];
            /* the nodes of one level read only the level below */
#ifdef _OPENMP
#pragma omp parallel num_threads(team) \
    if (work_of(o1 - o0, V) > RLHF_PARALLEL_MIN)
#endif
            {
                double *e = malloc((size_t)V * sizeof(double));
                if (e == NULL) {
#ifdef _OPENMP
#pragma omp critical(rlhf_status)
#endif
                    status = RLHF_ENOMEM;
                }
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
                for (ptrdiff_t o = o0; o < o1; o++) {
                    if (e == NULL) {
                        continue;
                    }
                    const double *children =
                        values + offsets[t + 1] + (o - offsets[t]) * W;
                    values[o] = backup_node(
                        ref_log_probs + o * V, scaled_rewards[o], children,
                        V, (ptrdiff_t)end_token, optimum + o * V, e);
                }
                free(e);
            }
            if (status < 0) {
                break;
            }
        }
    }
    free(offsets);
    return status;
}

/* -- advantages ---------------------------------------------------------- */

/*
 * Generalised advantage estimation (Schulman et al. 2016, "High-
 * dimensional continuous control using generalized advantage
 * estimation") over the first n_steps[i] positions of each row, with the
 * value after the last step 0:
 *   delta_t = r_t + gamma V_{t+1} - V_t,  A_t = delta_t + gamma lam A_{t+1},
 *   returns_t = A_t + V_t;  both 0 from n_steps[i] on.
 * rewards, values        n * T (read only up to n_steps[i] in row i)
 * n_steps                n, each in [0, T] (checked by the caller)
 * advantages, returns    n * T, written
 * Returns 0 or RLHF_EINTR (the outputs are then incomplete).
 */
int rlhf_gae(const double *rewards, const double *values,
             const int64_t *n_steps, ptrdiff_t n, ptrdiff_t T, double gamma,
             double lam, double *advantages, double *returns)
{
    const double decay = gamma * lam;
    const int team = rlhf_threads(0);
    const ptrdiff_t group = rlhf_check_group(T, team);
    for (ptrdiff_t i0 = 0; i0 < n; i0 += group) {
        if (i0 > 0 && rlhf_interrupted()) {
            return RLHF_EINTR;
        }
        const ptrdiff_t i1 = i0 + group < n ? i0 + group : n;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) \
    if (work_of(i1 - i0, T) > RLHF_PARALLEL_MIN)
#endif
        for (ptrdiff_t i = i0; i < i1; i++) {
            const double *r = rewards + i * T, *value = values + i * T;
            double *adv = advantages + i * T, *ret = returns + i * T;
            const ptrdiff_t steps = (ptrdiff_t)n_steps[i];
            for (ptrdiff_t t = steps; t < T; t++) {
                adv[t] = 0.0;
                ret[t] = 0.0;
            }
            double following = 0.0, next_value = 0.0;
            for (ptrdiff_t t = steps - 1; t >= 0; t--) {
                const double delta = r[t] + gamma * next_value - value[t];
                following = delta + decay * following;
                adv[t] = following;
                ret[t] = following + value[t];
                next_value = value[t];
            }
        }
    }
    return 0;
}

/* -- checked copies of indices ---------------------------------------- */

/*
 * The private copies that the token kernels' callers make of their index
 * arrays (so that the indices checked are the ones read, whatever another
 * thread writes into the caller's arrays), checked as they are copied:
 *   states_out = states, actions_out = actions,
 *   every state < n_states, every action in [0, V) where its state >= 0.
 * Each value is read once and the check is on what was written; one pass
 * that vectorises (no early exit).  actions and actions_out may be NULL.
 * Returns 0, or RLHF_EVALUE when some value is out of range (the copies
 * are complete either way, for the caller to find it in).
 */
RLHF_CLONES
int rlhf_copy_token_indices(const int64_t *states, const int64_t *actions,
                            ptrdiff_t n, ptrdiff_t n_states, ptrdiff_t V,
                            int64_t *states_out, int64_t *actions_out)
{
    int64_t bad = 0;
    if (actions == NULL) {
#ifdef RLHF_OMP_SIMD
#pragma omp simd reduction(| : bad)
#endif
        for (ptrdiff_t q = 0; q < n; q++) {
            const int64_t s = states[q];
            states_out[q] = s;
            bad |= s >= n_states;
        }
    } else {
#ifdef RLHF_OMP_SIMD
#pragma omp simd reduction(| : bad)
#endif
        for (ptrdiff_t q = 0; q < n; q++) {
            const int64_t s = states[q], a = actions[q];
            states_out[q] = s;
            actions_out[q] = a;
            /* a < 0 or a >= V in one unsigned comparison */
            bad |= (s >= n_states) | ((s >= 0) & ((uint64_t)a >= (uint64_t)V));
        }
    }
    return bad ? RLHF_EVALUE : 0;
}

/*
 * out = indices, every one checked to lie in [0, upper) as it is copied
 * (see rlhf_copy_token_indices).  Returns 0, or RLHF_EVALUE when one does
 * not (the copy is complete either way).
 */
RLHF_CLONES
int rlhf_copy_indices(const int64_t *indices, ptrdiff_t n, ptrdiff_t upper,
                      int64_t *out)
{
    int64_t bad = 0;
#ifdef RLHF_OMP_SIMD
#pragma omp simd reduction(| : bad)
#endif
    for (ptrdiff_t q = 0; q < n; q++) {
        const int64_t index = indices[q];
        out[q] = index;
        bad |= (uint64_t)index >= (uint64_t)upper; /* < 0 or >= upper */
    }
    return bad ? RLHF_EVALUE : 0;
}

/* -- the token-level gradient kernels ---------------------------------- */

/*
 * The token kernels add their tokens up by state in one of two ways,
 * chosen by the sizes alone (never by the thread count), each giving the
 * same bits for any number of threads:
 *
 * streaming: the tokens, in token order, fall into blocks of TOKEN_BLOCK,
 *   so that their number depends on n_tokens only.  Each block adds its
 *   tokens in order into a table of its own (a row of V per state, the
 *   rows' coefficient totals, the block's loss sums); the blocks run in
 *   parallel, then every entry adds up the blocks' values in block order.
 *   The token arrays are read once, front to back.
 * grouping: a stable counting sort groups the tokens by state, and one
 *   thread computes each state's row from its tokens in token order.  It
 *   touches each table entry once, where streaming clears and adds
 *   n_blocks of them: the way for huge tables and few tokens.
 */
#define TOKEN_BLOCK ((ptrdiff_t)8192)

/* The streaming path's blocks: ceil(n_tokens / TOKEN_BLOCK), at least 1. */
static ptrdiff_t token_blocks(ptrdiff_t n_tokens)
{
    return n_tokens > TOKEN_BLOCK ? (n_tokens - 1) / TOKEN_BLOCK + 1 : 1;
}

/*
 * Whether to stream n_tokens tokens into block tables of width entries
 * each: when n_blocks * width <= max(per_token * n_tokens, at_least), that
 * is when clearing and adding up the blocks' tables costs no more than
 * the grouping's sort and scattered reads of the tokens.  The constants are
 * the measured break-even points (one thread, S from 32 to 2^20 states,
 * 100 to 65,536 tokens), rounded down to a power of 2:
 *   token_grad           4 entries a token, at least 2^14;
 *   token_ppo_adam_step  8 (a token costs an exp and a few dozen
 *                        operations), at least 2^14 (streaming forms every
 *                        row's softmax, grouping only those with tokens);
 *   value_adam_step      16, at least 2^18 (grouping costs a scheduled
 *                        task per state, streaming an entry per block).
 * At 65,536 tokens (8 blocks) on 32 x 32 states streaming is 2.4 to 5
 * times faster; near the limits the two are within 10-20%.
 */
static int use_streaming(ptrdiff_t n_tokens, ptrdiff_t width,
                         ptrdiff_t per_token, ptrdiff_t at_least)
{
    const ptrdiff_t tokens_worth = work_of(per_token, n_tokens);
    const ptrdiff_t budget =
        tokens_worth > at_least ? tokens_worth : at_least;
    return work_of(token_blocks(n_tokens), width) <= budget;
}

/* tables[k] += tables[b * stride + k] for b = 1 .. n_blocks - 1 and k in
 * [k0, k1): every entry its blocks' values, added in block order. */
RLHF_CLONES
static void add_blocks(double *tables, ptrdiff_t stride, ptrdiff_t n_blocks,
                       ptrdiff_t k0, ptrdiff_t k1)
{
    for (ptrdiff_t b = 1; b < n_blocks; b++) {
        const double *other = tables + b * stride;
#ifdef RLHF_OMP_SIMD
#pragma omp simd
#endif
        for (ptrdiff_t k = k0; k < k1; k++) {
            tables[k] += other[k];
        }
    }
}

/*
 * The live tokens (state >= 0) grouped by state, in token order within a
 * state: the tokens of state s are order[start[s] .. start[s + 1]).  A
 * stable counting sort; start holds n_states + 1 entries, order n_tokens.
 * Returns 0 or RLHF_EINTR.
 */
static int group_by_state(const int64_t *states, ptrdiff_t n_tokens,
                          ptrdiff_t n_states, ptrdiff_t *start,
                          ptrdiff_t *order)
{
    for (ptrdiff_t s = 0; s <= n_states; s++) {
        start[s] = 0;
    }
    /* start[s + 1] = the number of tokens of state s */
    for (ptrdiff_t q0 = 0; q0 < n_tokens; q0 += RLHF_CHECK_ENTRIES) {
        if (q0 > 0 && rlhf_interrupted()) {
            return RLHF_EINTR;
        }
        const ptrdiff_t q1 = q0 + RLHF_CHECK_ENTRIES < n_tokens
                                 ? q0 + RLHF_CHECK_ENTRIES
                                 : n_tokens;
        for (ptrdiff_t q = q0; q < q1; q++) {
            if (states[q] >= 0) {
                start[states[q] + 1]++;
            }
        }
    }
    /* start = cumsum: the first place of each state's run */
    for (ptrdiff_t s = 0; s < n_states; s++) {
        start[s + 1] += start[s];
    }
    /* fill in token order, start[s] moving to the end of the run; then
     * the runs' starts are one state along, so shift them back */
    for (ptrdiff_t q0 = 0; q0 < n_tokens; q0 += RLHF_CHECK_ENTRIES) {
        if (rlhf_interrupted()) {
            return RLHF_EINTR;
        }
        const ptrdiff_t q1 = q0 + RLHF_CHECK_ENTRIES < n_tokens
                                 ? q0 + RLHF_CHECK_ENTRIES
                                 : n_tokens;
        for (ptrdiff_t q = q0; q < q1; q++) {
            if (states[q] >= 0) {
                order[start[states[q]]++] = q;
            }
        }
    }
    for (ptrdiff_t s = n_states; s > 0; s--) {
        start[s] = start[s - 1];
    }
    start[0] = 0;
    return 0;
}

/*
 * The states [s0, end) of one block between two interrupt checks: about
 * RLHF_CHECK_ENTRIES of work, a state costing its width plus its tokens
 * (at least one state).
 */
static ptrdiff_t block_end(const ptrdiff_t *start, ptrdiff_t n_states,
                           ptrdiff_t s0, ptrdiff_t width)
{
    ptrdiff_t s = s0, work = 0;
    while (s < n_states && (s == s0 || work < RLHF_CHECK_ENTRIES)) {
        work += width + (start[s + 1] - start[s]);
        s++;
    }
    return s;
}

/* Scratch of the grouping path: the grouping of the tokens, and a buffer
 * per state for its sums; NULL members when an allocation failed. */
typedef struct {
    ptrdiff_t *start, *order;
    double *partial;
} token_groups;

static int token_groups_alloc(token_groups *g, const int64_t *states,
                              ptrdiff_t n_tokens, ptrdiff_t n_states,
                              ptrdiff_t partials)
{
    g->start = malloc((size_t)(n_states + 1) * sizeof(ptrdiff_t));
    g->order = malloc((size_t)(n_tokens > 0 ? n_tokens : 1) *
                      sizeof(ptrdiff_t));
    g->partial = malloc((size_t)(n_states * partials > 0
                                     ? n_states * partials
                                     : 1) *
                        sizeof(double));
    if (g->start == NULL || g->order == NULL || g->partial == NULL) {
        return RLHF_ENOMEM;
    }
    return group_by_state(states, n_tokens, n_states, g->start, g->order);
}

static void token_groups_free(token_groups *g)
{
    free(g->start);
    free(g->order);
    free(g->partial);
}

/*
 * The block tables of the streaming path, one allocation for a call:
 * n_blocks tables of stride doubles, after `before` doubles of other
 * scratch.  NULL when it cannot be had.
 */
static double *block_scratch(ptrdiff_t before, ptrdiff_t n_blocks,
                             ptrdiff_t stride)
{
    const ptrdiff_t n = work_of(n_blocks, stride);
    if (n > PTRDIFF_MAX / (ptrdiff_t)sizeof(double) - before) {
        return NULL;
    }
    const ptrdiff_t total = before + n > 0 ? before + n : 1;
    return malloc((size_t)total * sizeof(double));
}

/*
 * One block of rlhf_token_grad's streaming path, tokens [q0, q1) in token
 * order: table[s * V + a] = sum coefs (np.add.at), then table[S * V + s]
 * = the coefficients of the state's tokens (np.bincount).
 */
static void grad_block(ptrdiff_t n_states, ptrdiff_t V, const int64_t *states,
                       const int64_t *actions, const double *coefs,
                       ptrdiff_t q0, ptrdiff_t q1, double *table)
{
    const ptrdiff_t width = n_states * V;
    double *totals = table + width;
    for (ptrdiff_t k = 0; k < width + n_states; k++) {
        table[k] = 0.0;
    }
    for (ptrdiff_t q = q0; q < q1; q++) {
        const int64_t s = states[q];
        if (s < 0) {
            continue;
        }
        table[(ptrdiff_t)s * V + (ptrdiff_t)actions[q]] += coefs[q];
        totals[s] += coefs[q];
    }
}

/* rlhf_token_grad by streaming (see above the token kernels). */
static int token_grad_streaming(const double *log_probs, ptrdiff_t n_states,
                                ptrdiff_t V, const int64_t *states,
                                const int64_t *actions, const double *coefs,
                                ptrdiff_t n_tokens, double *grad)
{
    const int team = rlhf_threads(0);
    const ptrdiff_t n_blocks = token_blocks(n_tokens);
    const ptrdiff_t width = n_states * V, stride = width + n_states;
    double *tables = block_scratch(0, n_blocks, stride);
    if (tables == NULL) {
        return RLHF_ENOMEM;
    }
    int status = 0;
    const ptrdiff_t blocks = rlhf_check_group(TOKEN_BLOCK + stride, team);
    for (ptrdiff_t b0 = 0; b0 < n_blocks; b0 += blocks) {
        if (b0 > 0 && rlhf_interrupted()) {
            status = RLHF_EINTR;
            break;
        }
        const ptrdiff_t b1 = b0 + blocks < n_blocks ? b0 + blocks : n_blocks;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) \
    if (b1 - b0 > 1 &&                                       \
        work_of(b1 - b0, TOKEN_BLOCK + stride) > RLHF_PARALLEL_MIN)
#endif
        for (ptrdiff_t b = b0; b < b1; b++) {
            const ptrdiff_t q0 = b * TOKEN_BLOCK;
            const ptrdiff_t q1 =
                n_tokens - q0 > TOKEN_BLOCK ? q0 + TOKEN_BLOCK : n_tokens;
            grad_block(n_states, V, states, actions, coefs, q0, q1,
                       tables + b * stride);
        }
    }
    /* a row costs its entries in every block and its exp */
    const ptrdiff_t rows = rlhf_check_group(work_of(n_blocks + 1, V), team);
    for (ptrdiff_t s0 = 0; s0 < n_states && status == 0; s0 += rows) {
        if (rlhf_interrupted()) {
            status = RLHF_EINTR;
            break;
        }
        const ptrdiff_t s1 = s0 + rows < n_states ? s0 + rows : n_states;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) \
    if (work_of(s1 - s0, work_of(n_blocks + 1, V)) > RLHF_PARALLEL_MIN)
#endif
        for (ptrdiff_t s = s0; s < s1; s++) {
            add_blocks(tables, stride, n_blocks, s * V, (s + 1) * V);
            add_blocks(tables, stride, n_blocks, width + s, width + s + 1);
            const double total = tables[width + s];
            const double *counts = tables + s * V, *lp = log_probs + s * V;
            double *row = grad + s * V;
            /* grad = counts - totals * pi */
            for (ptrdiff_t j = 0; j < V; j++) {
                row[j] = counts[j] - total * exp(lp[j]);
            }
        }
    }
    free(tables);
    return status;
}

/* rlhf_token_grad by grouping (see above the token kernels). */
static int token_grad_grouping(const double *log_probs, ptrdiff_t n_states,
                               ptrdiff_t V, const int64_t *states,
                               const int64_t *actions, const double *coefs,
                               ptrdiff_t n_tokens, double *grad)
{
    token_groups g;
    int status = token_groups_alloc(&g, states, n_tokens, n_states, 0);
    const int team = rlhf_threads(0);
    (void)team; /* read only by OpenMP's num_threads */
    for (ptrdiff_t s0 = 0, s1; s0 < n_states && status == 0; s0 = s1) {
        if (s0 > 0 && rlhf_interrupted()) {
            status = RLHF_EINTR;
            break;
        }
        s1 = block_end(g.start, n_states, s0, V);
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 16) num_threads(team) \
    if (work_of(s1 - s0, V) + g.start[s1] - g.start[s0] > RLHF_PARALLEL_MIN)
#endif
        for (ptrdiff_t s = s0; s < s1; s++) {
            double *row = grad + s * V;
            const double *lp = log_probs + s * V;
            for (ptrdiff_t j = 0; j < V; j++) {
                row[j] = 0.0;
            }
            double total = 0.0;
            for (ptrdiff_t r = g.start[s]; r < g.start[s + 1]; r++) {
                const ptrdiff_t q = g.order[r];
                row[actions[q]] += coefs[q];
                total += coefs[q];
            }
            /* grad = counts - totals * pi */
            for (ptrdiff_t j = 0; j < V; j++) {
                row[j] -= total * exp(lp[j]);
            }
        }
    }
    token_groups_free(&g);
    return status;
}

/*
 * The gradient in logits of sum_i coefs_i log pi(a_i | s_i), pi =
 * exp(log_probs), added up by state:
 *   grad[s] = sum_{i: s_i = s} coefs_i e_{a_i} - (sum_{i: s_i = s}
 *             coefs_i) exp(log_probs[s]),
 * each sum in token order, or by blocks of tokens in token order added in
 * block order (see above); tokens with a negative state are skipped.
 *
 * log_probs             n_states * V
 * states, actions, coefs  n_tokens; where states >= 0, states <
 *                       n_states and actions in [0, V) (checked by the
 *                       caller)
 * grad                  n_states * V, written
 * Returns 0, RLHF_ENOMEM or RLHF_EINTR (grad is then incomplete).
 */
int rlhf_token_grad(const double *log_probs, ptrdiff_t n_states, ptrdiff_t V,
                    const int64_t *states, const int64_t *actions,
                    const double *coefs, ptrdiff_t n_tokens, double *grad)
{
    if (use_streaming(n_tokens, work_of(n_states, V), 4,
                      (ptrdiff_t)1 << 14)) {
        return token_grad_streaming(log_probs, n_states, V, states, actions,
                                    coefs, n_tokens, grad);
    }
    return token_grad_grouping(log_probs, n_states, V, states, actions, coefs,
                               n_tokens, grad);
}

/* One Adam step (rlhf_adam_step's arithmetic) on n entries. */
RLHF_CLONES
static void adam_entries(double *theta, const double *grad, double *m,
                         double *v, ptrdiff_t n, double lr, double beta1,
                         double beta2, double eps, double c1, double c2)
{
#ifdef RLHF_OMP_SIMD
#pragma omp simd
#endif
    for (ptrdiff_t q = 0; q < n; q++) {
        m[q] = beta1 * m[q] + (1.0 - beta1) * grad[q];
        v[q] = beta2 * v[q] + (1.0 - beta2) * grad[q] * grad[q];
        theta[q] -= lr * (m[q] / c1) / (sqrt(v[q] / c2) + eps);
    }
}

/* Adam's settings, with its bias corrections c1 = 1 - beta1^t and
 * c2 = 1 - beta2^t. */
typedef struct {
    double lr, beta1, beta2, eps, c1, c2;
} adam_settings;

static adam_settings adam_at(double lr, double beta1, double beta2,
                             double eps, int64_t t)
{
    const adam_settings adam = {lr, beta1, beta2, eps,
                                1.0 - pow(beta1, (double)t),
                                1.0 - pow(beta2, (double)t)};
    return adam;
}

static void adam_rows(double *theta, const double *grad, double *m,
                      double *v, ptrdiff_t n, const adam_settings *adam)
{
    adam_entries(theta, grad, m, v, n, adam->lr, adam->beta1, adam->beta2,
                 adam->eps, adam->c1, adam->c2);
}

/* The arguments of rlhf_token_ppo_adam_step that its tokens need (the
 * arrays from a chunk's first token on, see ppo_chunk_terms). */
typedef struct {
    const int64_t *states, *actions;
    const double *weights, *old_logp, *advantages;
    double clip, kl_coef, scale;
    int kl_kind;
} ppo_tokens;

/*
 * The tokens of rlhf_token_ppo_adam_step go a chunk at a time: their
 * terms computed entry by entry in loops that vectorise (ppo_chunk_terms),
 * then added up in token order (ppo_chunk_sums).  Both paths take every
 * token through these, so they differ only in how the sums are added up.
 */
#define PPO_CHUNK 128

typedef struct {
    ptrdiff_t cell[PPO_CHUNK]; /* s * V + a, -1 for a skipped token */
    double d[PPO_CHUNK];       /* log pi(a|s) - log pi_ref(a|s) */
    double rho[PPO_CHUNK];     /* pi(a|s) / pi_old(a|s) */
    double term[PPO_CHUNK];    /* w times the token's term of the loss */
    double coef[PPO_CHUNK];    /* its gradient coefficient c_i */
    double clipped[PPO_CHUNK]; /* w where |rho - 1| > clip, else 0 */
} ppo_chunk;

/*
 * The terms of the first n tokens of t (those of rlhf_ppo_loss_grad), the
 * skipped ones (state < 0 or weight 0) marked by cell = -1:
 *   lp = logp[s * V + a], d = lp - ref[s * V + a], rho = exp(lp - old_logp),
 *   term = w (-min(rho A, clip(rho, 1 - c, 1 + c) A) + kl_coef rho k(d)),
 *   coef = scale w (-A rho [the unclipped term is the minimum]
 *                   + kl_coef rho (k(d) + k'(d))).
 * The look-ups first, then every token's terms (a skipped one's are
 * garbage, never used) in loops that vectorise: exp_any for rho, blend for
 * the one select whose arm computes (k3's expm1 from libm does not).
 */
RLHF_CLONES
static void ppo_chunk_terms(const ppo_tokens *t, ptrdiff_t n,
                            const double *logp, const double *ref,
                            ptrdiff_t V, ppo_chunk *c)
{
    const int64_t *states = t->states, *actions = t->actions;
    const double *weights = t->weights, *old_logp = t->old_logp;
    const double *advantages = t->advantages;
    const double clip = t->clip, kl_coef = t->kl_coef, scale = t->scale;
    const double low = 1.0 - clip, high = 1.0 + clip;
    for (ptrdiff_t i = 0; i < n; i++) {
        const int64_t s = states[i];
        const int live = s >= 0 && weights[i] != 0.0;
        /* a skipped token looks up cell 0, whatever its action */
        const ptrdiff_t k = live ? (ptrdiff_t)s * V + (ptrdiff_t)actions[i]
                                 : 0;
        const double lp = logp[k];
        c->rho[i] = lp - old_logp[i];
        c->d[i] = lp - ref[k];
        c->cell[i] = live ? k : -1;
    }
#ifdef RLHF_OMP_SIMD
#pragma omp simd
#endif
    for (ptrdiff_t i = 0; i < n; i++) {
        const double rho = exp_any(c->rho[i]);
        const double adv = advantages[i];
        const double rho_clipped = rho < low ? low : (rho > high ? high : rho);
        const double plain = rho * adv, clipped = rho_clipped * adv;
        /* the gradient flows through the unclipped term when it is the
         * minimum */
        c->coef[i] = blend(0u - (uint64_t)(plain <= clipped), -adv * rho, 0.0);
        c->term[i] = -(plain < clipped ? plain : clipped);
        c->rho[i] = rho;
    }
    /* the KL estimate of d = log pi - log pi_ref and its derivative in
     * log pi (Schulman 2020, "Approximating KL divergence"): k1 = d, 1;
     * k3 = exp(-d) - 1 + d, 1 - exp(-d), one expm1 for both */
    if (kl_coef != 0.0 && t->kl_kind == RLHF_KL_K3) {
        for (ptrdiff_t i = 0; i < n; i++) {
            const double d = c->d[i];
            const double e = expm1(-d);
            const double k = e + d, dk = -e;
            c->term[i] += kl_coef * c->rho[i] * k;
            c->coef[i] += kl_coef * c->rho[i] * (k + dk);
        }
    } else if (kl_coef != 0.0) {
#ifdef RLHF_OMP_SIMD
#pragma omp simd
#endif
        for (ptrdiff_t i = 0; i < n; i++) {
            const double d = c->d[i];
            c->term[i] += kl_coef * c->rho[i] * d;
            c->coef[i] += kl_coef * c->rho[i] * (d + 1.0);
        }
    }
#ifdef RLHF_OMP_SIMD
#pragma omp simd
#endif
    for (ptrdiff_t i = 0; i < n; i++) {
        const double w = weights[i];
        c->term[i] = w * c->term[i];
        c->clipped[i] = fabs(c->rho[i] - 1.0) > clip ? w : 0.0;
        c->coef[i] = c->coef[i] * w * scale;
    }
}

/*
 * The chunk's live tokens in token order: table[cell] += coef (np.add.at),
 * totals[states[i]] += coef (np.bincount), sums[0] += term, sums[1] +=
 * clipped.
 */
static void ppo_chunk_sums(const ppo_chunk *c, ptrdiff_t n,
                           const int64_t *states, double *table,
                           double *totals, double *sums)
{
    double loss = sums[0], clipped_weight = sums[1];
    for (ptrdiff_t i = 0; i < n; i++) {
        const ptrdiff_t k = c->cell[i];
        if (k < 0) {
            continue;
        }
        loss += c->term[i];
        clipped_weight += c->clipped[i];
        table[k] += c->coef[i];
        totals[states[i]] += c->coef[i];
    }
    sums[0] = loss;
    sums[1] = clipped_weight;
}

/*
 * The log-softmax of one row of logits z = ref + theta, into logp:
 *   logp = (z - top) - log sum exp(z - top),  top = max(z),
 * the maximum subtracted so that nothing overflows; the exps go a piece
 * at a time through a buffer so that they vectorise, and are added left
 * to right.  (exp_any gives exp_nonpositive's bits for x <= 0, and its
 * loops vectorise with AVX2 too.)  Returns -1 (logp not written) when z
 * holds a NaN or +inf or is all -inf.
 */
RLHF_CLONES
static int row_log_softmax(const double *theta, const double *ref,
                           ptrdiff_t V, double *logp)
{
    double top = -INFINITY;
    int bad = 0;
#ifdef RLHF_OMP_SIMD_MINMAX
#pragma omp simd reduction(max : top) reduction(| : bad)
#endif
    for (ptrdiff_t j = 0; j < V; j++) {
        const double z = ref[j] + theta[j];
        bad |= !(z < INFINITY); /* NaN or +inf */
        top = z > top ? z : top; /* exact in any order */
    }
    if (bad || top == -INFINITY) {
        return -1;
    }
    double e[64], total = 0.0;
    for (ptrdiff_t j0 = 0; j0 < V; j0 += 64) {
        const ptrdiff_t n = V - j0 < 64 ? V - j0 : 64;
#ifdef RLHF_OMP_SIMD
#pragma omp simd
#endif
        for (ptrdiff_t j = 0; j < n; j++) {
            e[j] = exp_any((ref[j0 + j] + theta[j0 + j]) - top);
        }
        for (ptrdiff_t j = 0; j < n; j++) {
            total += e[j];
        }
    }
    const double log_total = log(total);
#ifdef RLHF_OMP_SIMD
#pragma omp simd
#endif
    for (ptrdiff_t j = 0; j < V; j++) {
        logp[j] = ((ref[j] + theta[j]) - top) - log_total;
    }
    return 0;
}

/*
 * grad_row = sum_i c_i e_{a_i} - (sum_i c_i) softmax(z) in place of
 * counts = sum_i c_i e_{a_i}, softmax(z) = exp(logp), then the row's Adam
 * step.  A row whose coefficients add up to 0 (a row without tokens) keeps
 * its counts: counts - 0 softmax(z) = counts, exactly (the sums start at
 * +0, so they are never -0).
 */
RLHF_CLONES
static void ppo_row_step(double *theta, double *m, double *v,
                         const double *logp, ptrdiff_t V, double coef_total,
                         double *counts, const adam_settings *adam)
{
    if (coef_total != 0.0) {
#ifdef RLHF_OMP_SIMD
#pragma omp simd
#endif
        for (ptrdiff_t j = 0; j < V; j++) {
            counts[j] -= coef_total * exp_any(logp[j]); /* logp <= 0 */
        }
    }
    adam_rows(theta, counts, m, v, V, adam);
}

/*
 * One state of the grouping path, its rows of the tables theta, m, v and
 * ref (V entries each): the row's log-softmax into logp (V doubles of
 * scratch), then its tokens (order[0 .. count)) in token order, a chunk
 * at a time copied out (as state 0 of a one-row table), into g (the row's
 * gradient, V doubles) and part (its loss and clipped weight), then its
 * step.  Returns -1 when the logits hold a NaN or +inf or are all -inf.
 */
static int ppo_state(double *theta, double *m, double *v, const double *ref,
                     ptrdiff_t V, const ppo_tokens *a, const ptrdiff_t *order,
                     ptrdiff_t count, double *logp, double *g, double *part,
                     const adam_settings *adam)
{
    part[0] = part[1] = 0.0;
    for (ptrdiff_t j = 0; j < V; j++) {
        g[j] = 0.0;
    }
    if (count == 0) {
        /* a zero gradient: no softmax needed */
        adam_rows(theta, g, m, v, V, adam);
        return 0;
    }
    if (row_log_softmax(theta, ref, V, logp) < 0) {
        return -1;
    }
    int64_t states[PPO_CHUNK], actions[PPO_CHUNK];
    double weights[PPO_CHUNK], old_logp[PPO_CHUNK], advantages[PPO_CHUNK];
    ppo_tokens chunk = {states, actions, weights, old_logp, advantages,
                        a->clip, a->kl_coef, a->scale, a->kl_kind};
    ppo_chunk c;
    double coef_total = 0.0;
    for (ptrdiff_t r0 = 0; r0 < count; r0 += PPO_CHUNK) {
        const ptrdiff_t n = count - r0 < PPO_CHUNK ? count - r0 : PPO_CHUNK;
        for (ptrdiff_t i = 0; i < n; i++) {
            const ptrdiff_t q = order[r0 + i];
            states[i] = 0;
            actions[i] = a->actions[q];
            weights[i] = a->weights[q];
            old_logp[i] = a->old_logp[q];
            advantages[i] = a->advantages[q];
        }
        ppo_chunk_terms(&chunk, n, logp, ref, V, &c);
        ppo_chunk_sums(&c, n, states, g, &coef_total, part);
    }
    ppo_row_step(theta, m, v, logp, V, coef_total, g, adam);
    return 0;
}

/* Whether a row of logits ref + theta is one log_softmax takes: no NaN,
 * no +inf, not all -inf. */
static int logits_ok(const double *theta, const double *ref, ptrdiff_t V)
{
    int ok = 1, some = 0;
    for (ptrdiff_t j = 0; j < V; j++) {
        const double z = ref[j] + theta[j];
        ok &= z < INFINITY; /* false for NaN too */
        some |= z > -INFINITY;
    }
    return ok && some;
}

/*
 * One block of the streaming path, tokens [q0, q1) in token order, at the
 * log-softmax logp of the whole table: into table[s * V + a] the gradient
 * coefficients (np.add.at), into table[S * V + s] their totals by state
 * (np.bincount), then the block's loss and clipped weight.
 */
static void ppo_block(const double *logp, const double *ref,
                      ptrdiff_t n_states, ptrdiff_t V, const ppo_tokens *a,
                      ptrdiff_t q0, ptrdiff_t q1, double *table)
{
    const ptrdiff_t width = n_states * V;
    double *totals = table + width, *sums = totals + n_states;
    for (ptrdiff_t k = 0; k < width + n_states + 2; k++) {
        table[k] = 0.0;
    }
    ppo_chunk c;
    for (ptrdiff_t r0 = q0; r0 < q1; r0 += PPO_CHUNK) {
        const ptrdiff_t n = q1 - r0 < PPO_CHUNK ? q1 - r0 : PPO_CHUNK;
        const ppo_tokens chunk = {
            a->states + r0,     a->actions + r0, a->weights + r0,
            a->old_logp + r0,   a->advantages + r0, a->clip,
            a->kl_coef,         a->scale,        a->kl_kind};
        ppo_chunk_terms(&chunk, n, logp, ref, V, &c);
        ppo_chunk_sums(&c, n, chunk.states, table, totals, sums);
    }
}

/*
 * rlhf_token_ppo_adam_step by streaming (see above the token kernels);
 * sums[0 .. 2) gets the loss and the clipped weight before the scale.
 * The log-softmax of the whole table is formed first (S * V doubles, no
 * more than the blocks' tables), so that a token's log pi(a|s) is one
 * look-up: the same operations as the grouping path's, per row.
 */
static int ppo_streaming(double *theta, double *m, double *v,
                         const double *ref, ptrdiff_t n_states, ptrdiff_t V,
                         const ppo_tokens *a, ptrdiff_t n_tokens,
                         const adam_settings *adam, double *sums)
{
    const int team = rlhf_threads(0);
    const ptrdiff_t n_blocks = token_blocks(n_tokens);
    const ptrdiff_t width = n_states * V, stride = width + n_states + 2;
    /* the log-softmax table, then the blocks' tables */
    double *logp = block_scratch(width, n_blocks, stride);
    if (logp == NULL) {
        return RLHF_ENOMEM;
    }
    double *tables = logp + width;
    int status = 0;
    /* every row's log-softmax first: a bad row leaves the state as it was,
     * as the twin's log_softmax does by raising before the step */
    const ptrdiff_t rows = rlhf_check_group(V, team);
    for (ptrdiff_t s0 = 0; s0 < n_states && status == 0; s0 += rows) {
        if (s0 > 0 && rlhf_interrupted()) {
            status = RLHF_EINTR;
            break;
        }
        const ptrdiff_t s1 = s0 + rows < n_states ? s0 + rows : n_states;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) \
    if (work_of(s1 - s0, V) > RLHF_PARALLEL_MIN)
#endif
        for (ptrdiff_t s = s0; s < s1; s++) {
            if (row_log_softmax(theta + s * V, ref + s * V, V,
                                logp + s * V) < 0) {
#ifdef _OPENMP
#pragma omp critical(rlhf_status)
#endif
                status = RLHF_ENONFINITE;
            }
        }
    }
    /* a token costs about 8 entries' work (use_streaming), a block's
     * table one each */
    const ptrdiff_t block_work = 8 * TOKEN_BLOCK + stride;
    const ptrdiff_t blocks = rlhf_check_group(block_work, team);
    for (ptrdiff_t b0 = 0; b0 < n_blocks && status == 0; b0 += blocks) {
        if (rlhf_interrupted()) {
            status = RLHF_EINTR;
            break;
        }
        const ptrdiff_t b1 = b0 + blocks < n_blocks ? b0 + blocks : n_blocks;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) \
    if (b1 - b0 > 1 && work_of(b1 - b0, block_work) > RLHF_PARALLEL_MIN)
#endif
        for (ptrdiff_t b = b0; b < b1; b++) {
            const ptrdiff_t q0 = b * TOKEN_BLOCK;
            const ptrdiff_t q1 =
                n_tokens - q0 > TOKEN_BLOCK ? q0 + TOKEN_BLOCK : n_tokens;
            ppo_block(logp, ref, n_states, V, a, q0, q1, tables + b * stride);
        }
    }
    /* each row: its entries in every block, added in block order into
     * block 0's table, then its softmax term and its step */
    const ptrdiff_t row_work = work_of(n_blocks + 2, V);
    const ptrdiff_t steps = rlhf_check_group(row_work, team);
    for (ptrdiff_t s0 = 0; s0 < n_states && status == 0; s0 += steps) {
        if (rlhf_interrupted()) {
            status = RLHF_EINTR;
            break;
        }
        const ptrdiff_t s1 = s0 + steps < n_states ? s0 + steps : n_states;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) \
    if (work_of(s1 - s0, row_work) > RLHF_PARALLEL_MIN)
#endif
        for (ptrdiff_t s = s0; s < s1; s++) {
            add_blocks(tables, stride, n_blocks, s * V, (s + 1) * V);
            add_blocks(tables, stride, n_blocks, width + s, width + s + 1);
            ppo_row_step(theta + s * V, m + s * V, v + s * V, logp + s * V,
                         V, tables[width + s], tables + s * V, adam);
        }
    }
    if (status == 0) {
        add_blocks(tables, stride, n_blocks, width + n_states,
                   width + n_states + 2);
        sums[0] = tables[width + n_states];
        sums[1] = tables[width + n_states + 1];
    }
    free(logp);
    return status;
}

/* rlhf_token_ppo_adam_step by grouping (see above the token kernels);
 * sums[0 .. 2) gets the loss and the clipped weight before the scale. */
static int ppo_grouping(double *theta, double *m, double *v,
                        const double *ref, ptrdiff_t n_states, ptrdiff_t V,
                        const ppo_tokens *a, ptrdiff_t n_tokens,
                        const adam_settings *adam, double *sums)
{
    token_groups g;
    int status = token_groups_alloc(&g, a->states, n_tokens, n_states, 2);
    const int team = rlhf_threads(0);
    /* the logits are checked first: a bad row leaves the state as it was,
     * as the twin's log_softmax does by raising before the step */
    const ptrdiff_t rows = rlhf_check_group(V, team);
    for (ptrdiff_t s0 = 0; s0 < n_states && status == 0; s0 += rows) {
        if (s0 > 0 && rlhf_interrupted()) {
            status = RLHF_EINTR;
            break;
        }
        const ptrdiff_t s1 = s0 + rows < n_states ? s0 + rows : n_states;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) \
    if (work_of(s1 - s0, V) > RLHF_PARALLEL_MIN)
#endif
        for (ptrdiff_t s = s0; s < s1; s++) {
            if (!logits_ok(theta + s * V, ref + s * V, V)) {
#ifdef _OPENMP
#pragma omp critical(rlhf_status)
#endif
                status = RLHF_ENONFINITE;
            }
        }
    }
    for (ptrdiff_t s0 = 0, s1; s0 < n_states && status == 0; s0 = s1) {
        if (rlhf_interrupted()) {
            status = RLHF_EINTR;
            break;
        }
        s1 = block_end(g.start, n_states, s0, V);
#ifdef _OPENMP
#pragma omp parallel num_threads(team) \
    if (work_of(s1 - s0, V) + g.start[s1] - g.start[s0] > RLHF_PARALLEL_MIN)
#endif
        {
            /* per thread: the log-softmax and the gradient of a row */
            double *buffer = malloc((size_t)(2 * V) * sizeof(double));
            if (buffer == NULL) {
#ifdef _OPENMP
#pragma omp critical(rlhf_status)
#endif
                status = RLHF_ENOMEM;
            }
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 16)
#endif
            for (ptrdiff_t s = s0; s < s1; s++) {
                if (buffer == NULL) {
                    continue;
                }
                double *logp = buffer, *grad = buffer + V;
                const ptrdiff_t count = g.start[s + 1] - g.start[s];
                if (ppo_state(theta + s * V, m + s * V, v + s * V,
                              ref + s * V, V, a, g.order + g.start[s], count,
                              logp, grad, g.partial + 2 * s, adam) < 0) {
#ifdef _OPENMP
#pragma omp critical(rlhf_status)
#endif
                    status = RLHF_ENONFINITE;
                }
            }
            free(buffer);
        }
    }
    if (status == 0) {
        for (ptrdiff_t s = 0; s < n_states; s++) {
            sums[0] += g.partial[2 * s];
            sums[1] += g.partial[2 * s + 1];
        }
    }
    token_groups_free(&g);
    return status;
}

/*
 * PPO's clipped surrogate (Schulman et al. 2017, eq. 7) summed over the
 * tokens of sampled sequences, a tabular policy with logits
 * ref_log_probs + theta, then one Adam step (Kingma & Ba 2015) on the
 * whole table:
 *   rho_i = pi(a_i|s_i) / pi_old(a_i|s_i),
 *   loss = scale sum_i w_i (-min(rho_i A_i, clip(rho_i, 1 - c, 1 + c) A_i)
 *                           + kl_coef rho_i k(log pi(a_i|s_i) -
 *                                             ref(a_i|s_i))),
 * the terms of rlhf_ppo_loss_grad (see policy_opt.c for the gradient
 * coefficient c_i and why the KL term is weighted by rho), and
 *   grad[s] = sum_{i: s_i = s} c_i (e_{a_i} - softmax(logits[s])),
 * then m, v and theta updated as rlhf_adam_step does, every entry (rows
 * without tokens have a zero gradient).  Tokens with a negative state or
 * a zero weight are skipped.  Each row's log-softmax is formed once, and
 * every token's terms from it with the same operations on either path
 * (see above the token kernels), rho by exp_any (within about 1 ulp of
 * libm's exp), so the paths differ only in how the sums are added up.
 *
 * theta, m, v      n_states * V, updated in place (the optimiser's state)
 * ref_log_probs    n_states * V; -inf entries allowed
 * states, actions, weights, old_logp, advantages   n_tokens; where
 *                  states >= 0, states < n_states and actions in [0, V)
 *                  (checked by the caller)
 * loss, clip_fraction  written (the latter: scale times the weight of
 *                  tokens with |rho - 1| > clip), at the logits before the
 *                  step
 * Returns 0, RLHF_ENOMEM, RLHF_EVALUE for t < 1, RLHF_ENONFINITE for a
 * row of logits holding a NaN or +inf or all -inf (every row is checked
 * before any is stepped, so theta, m and v are then unchanged), or
 * RLHF_EINTR (asked between blocks of about RLHF_CHECK_ENTRIES entries;
 * theta, m and v are then partly updated).
 */
int rlhf_token_ppo_adam_step(double *theta, double *m, double *v,
                             const double *ref_log_probs, ptrdiff_t n_states,
                             ptrdiff_t V, const int64_t *states,
                             const int64_t *actions, const double *weights,
                             const double *old_logp,
                             const double *advantages, ptrdiff_t n_tokens,
                             double clip, double kl_coef, int kl_kind,
                             double scale, double lr, double beta1,
                             double beta2, double eps, int64_t t,
                             double *loss, double *clip_fraction)
{
    if (t < 1) {
        return RLHF_EVALUE;
    }
    const adam_settings adam = adam_at(lr, beta1, beta2, eps, t);
    const ppo_tokens a = {states, actions, weights, old_logp, advantages,
                          clip, kl_coef, scale, kl_kind};
    double sums[2] = {0.0, 0.0};
    const int status =
        use_streaming(n_tokens, work_of(n_states, V), 8, (ptrdiff_t)1 << 14)
            ? ppo_streaming(theta, m, v, ref_log_probs, n_states, V, &a,
                            n_tokens, &adam, sums)
            : ppo_grouping(theta, m, v, ref_log_probs, n_states, V, &a,
                           n_tokens, &adam, sums);
    *loss = scale * sums[0];
    *clip_fraction = scale * sums[1];
    return status;
}

/*
 * One token of the clipped value loss at value = V(s), weight w (the
 * scale included): w dV into *grad and w max(...) into *part.
 */
static inline void value_token(double value, double w, double ret,
                               double old, double value_clip, double *grad,
                               double *part)
{
    const double change = value - old;
    const double moved = change < -value_clip
                             ? -value_clip
                             : (change > value_clip ? value_clip : change);
    const double plain = (value - ret) * (value - ret);
    const double clipped = (old + moved - ret) * (old + moved - ret);
    double dvalue;
    if (plain >= clipped) {
        dvalue = value - ret;
    } else {
        /* the clipped branch moves with V only inside the clip range */
        dvalue = fabs(change) < value_clip ? old + moved - ret : 0.0;
    }
    *grad += w * dvalue;
    *part += w * (plain >= clipped ? plain : clipped);
}

/* The arguments of rlhf_value_adam_step that its tokens need. */
typedef struct {
    const int64_t *states;
    const double *weights, *returns, *old_values;
    double value_clip, scale;
} value_tokens;

/* One block of the streaming path, tokens [q0, q1) in token order:
 * table[s] = scale sum_i w_i dV_i by state (np.bincount), then the
 * block's sum of w_i max(...). */
static void value_block(const double *values, ptrdiff_t n_states,
                        const value_tokens *a, ptrdiff_t q0, ptrdiff_t q1,
                        double *table)
{
    for (ptrdiff_t s = 0; s < n_states; s++) {
        table[s] = 0.0;
    }
    double part = 0.0;
    for (ptrdiff_t q = q0; q < q1; q++) {
        const int64_t s = a->states[q];
        if (s < 0) {
            continue;
        }
        value_token(values[s], a->weights[q] * a->scale, a->returns[q],
                    a->old_values[q], a->value_clip, table + s, &part);
    }
    table[n_states] = part;
}

/* rlhf_value_adam_step by streaming (see above the token kernels);
 * *sum gets sum_i w_i max(...). */
static int value_streaming(double *values, double *m, double *v,
                           ptrdiff_t n_states, const value_tokens *a,
                           ptrdiff_t n_tokens, const adam_settings *adam,
                           double *sum)
{
    const int team = rlhf_threads(0);
    const ptrdiff_t n_blocks = token_blocks(n_tokens);
    const ptrdiff_t stride = n_states + 1;
    double *tables = block_scratch(0, n_blocks, stride);
    if (tables == NULL) {
        return RLHF_ENOMEM;
    }
    int status = 0;
    const ptrdiff_t blocks = rlhf_check_group(TOKEN_BLOCK + stride, team);
    for (ptrdiff_t b0 = 0; b0 < n_blocks; b0 += blocks) {
        if (b0 > 0 && rlhf_interrupted()) {
            status = RLHF_EINTR;
            break;
        }
        const ptrdiff_t b1 = b0 + blocks < n_blocks ? b0 + blocks : n_blocks;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) \
    if (b1 - b0 > 1 &&                                       \
        work_of(b1 - b0, TOKEN_BLOCK + stride) > RLHF_PARALLEL_MIN)
#endif
        for (ptrdiff_t b = b0; b < b1; b++) {
            const ptrdiff_t q0 = b * TOKEN_BLOCK;
            const ptrdiff_t q1 =
                n_tokens - q0 > TOKEN_BLOCK ? q0 + TOKEN_BLOCK : n_tokens;
            value_block(values, n_states, a, q0, q1, tables + b * stride);
        }
    }
    /* the states a chunk at a time: the blocks added in block order into
     * block 0's table, then the chunk's step */
    const ptrdiff_t chunk = 256;
    const ptrdiff_t n_chunks = (n_states + chunk - 1) / chunk;
    const ptrdiff_t chunk_work = work_of(chunk, n_blocks + 1);
    const ptrdiff_t chunks = rlhf_check_group(chunk_work, team);
    for (ptrdiff_t c0 = 0; c0 < n_chunks && status == 0; c0 += chunks) {
        if (rlhf_interrupted()) {
            status = RLHF_EINTR;
            break;
        }
        const ptrdiff_t c1 = c0 + chunks < n_chunks ? c0 + chunks : n_chunks;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) \
    if (work_of(c1 - c0, chunk_work) > RLHF_PARALLEL_MIN)
#endif
        for (ptrdiff_t c = c0; c < c1; c++) {
            const ptrdiff_t s0 = c * chunk;
            const ptrdiff_t s1 = s0 + chunk < n_states ? s0 + chunk : n_states;
            add_blocks(tables, stride, n_blocks, s0, s1);
            adam_rows(values + s0, tables + s0, m + s0, v + s0, s1 - s0,
                      adam);
        }
    }
    if (status == 0) {
        add_blocks(tables, stride, n_blocks, n_states, n_states + 1);
        *sum = tables[n_states];
    }
    free(tables);
    return status;
}

/* rlhf_value_adam_step by grouping (see above the token kernels);
 * *sum gets sum_i w_i max(...). */
static int value_grouping(double *values, double *m, double *v,
                          ptrdiff_t n_states, const value_tokens *a,
                          ptrdiff_t n_tokens, const adam_settings *adam,
                          double *sum)
{
    token_groups g;
    int status = token_groups_alloc(&g, a->states, n_tokens, n_states, 1);
    const int team = rlhf_threads(0);
    (void)team; /* read only by OpenMP's num_threads */
    for (ptrdiff_t s0 = 0, s1; s0 < n_states && status == 0; s0 = s1) {
        if (s0 > 0 && rlhf_interrupted()) {
            status = RLHF_EINTR;
            break;
        }
        s1 = block_end(g.start, n_states, s0, 1);
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 64) num_threads(team) \
    if (s1 - s0 + g.start[s1] - g.start[s0] > RLHF_PARALLEL_MIN)
#endif
        for (ptrdiff_t s = s0; s < s1; s++) {
            const double value = values[s];
            double grad = 0.0, part = 0.0;
            for (ptrdiff_t r = g.start[s]; r < g.start[s + 1]; r++) {
                const ptrdiff_t q = g.order[r];
                value_token(value, a->weights[q] * a->scale, a->returns[q],
                            a->old_values[q], a->value_clip, &grad, &part);
            }
            g.partial[s] = part;
            adam_rows(values + s, &grad, m + s, v + s, 1, adam);
        }
    }
    if (status == 0) {
        for (ptrdiff_t s = 0; s < n_states; s++) {
            *sum += g.partial[s];
        }
    }
    token_groups_free(&g);
    return status;
}

/*
 * PPO's clipped value loss (as in the PPO2 baselines and trl) on a table
 * of state values, then one Adam step on the whole table:
 *   V_clip = old_i + clip(V(s_i) - old_i, -value_clip, value_clip),
 *   loss = scale sum_i w_i max((V(s_i) - R_i)^2, (V_clip - R_i)^2) / 2,
 *   grad[s] = scale sum_{i: s_i = s} w_i dV_i,  dV_i = V(s_i) - R_i when
 *   the plain term is the larger, else V_clip - R_i inside the clip range
 *   (|V(s_i) - old_i| < value_clip) and 0 outside it,
 * each sum in token order, or by blocks of tokens in token order added in
 * block order (see above the token kernels); tokens with a negative state
 * are skipped.
 *
 * values, m, v     n_states, updated in place (the optimiser's state)
 * states, weights, returns, old_values  n_tokens; where states >= 0,
 *                  states < n_states (checked by the caller)
 * loss             written, at the values before the step
 * Returns 0, RLHF_ENOMEM, RLHF_EVALUE for t < 1, or RLHF_EINTR (values,
 * m and v are then partly updated).
 */
int rlhf_value_adam_step(double *values, double *m, double *v,
                         ptrdiff_t n_states, const int64_t *states,
                         const double *weights, const double *returns,
                         const double *old_values, ptrdiff_t n_tokens,
                         double value_clip, double scale, double lr,
                         double beta1, double beta2, double eps, int64_t t,
                         double *loss)
{
    if (t < 1) {
        return RLHF_EVALUE;
    }
    const adam_settings adam = adam_at(lr, beta1, beta2, eps, t);
    const value_tokens a = {states, weights, returns, old_values, value_clip,
                            scale};
    double sum = 0.0;
    const int status =
        use_streaming(n_tokens, n_states, 16, (ptrdiff_t)1 << 18)
            ? value_streaming(values, m, v, n_states, &a, n_tokens, &adam,
                              &sum)
            : value_grouping(values, m, v, n_states, &a, n_tokens, &adam,
                             &sum);
    *loss = 0.5 * sum;
    return status;
}
