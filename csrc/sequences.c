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
 * Determinism: loops over sequences, rows or trie nodes write only their
 * own outputs.  The token kernels scatter into rows of a table: they group
 * the tokens by state with a stable counting sort, and one thread computes
 * each state's row, adding its tokens in token order; sums over states
 * (losses) go through per-state buffers added in state order.  So results
 * are bitwise the same for any number of threads.
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
 * W^min(t, depth).  context_advance moves it past the word of position t.
 */
typedef struct {
    ptrdiff_t offset, code, power;
} context;

static void context_advance(context *c, ptrdiff_t n_words, int64_t word,
                            ptrdiff_t t, int64_t depth)
{
    c->code = c->code * n_words + (ptrdiff_t)word;
    if (t + 1 <= depth) {
        /* one word more of context: offsets[t + 1] = offsets[t] + W^t */
        c->offset += c->power;
        c->power *= n_words;
    } else {
        c->code %= c->power; /* the oldest word falls out */
    }
}

/* -- sampling and scoring ---------------------------------------------- */

/*
 * Sequences drawn token by token from a table of probabilities:
 *   tokens[i, t] ~ probs[state(i, t)], by inverse CDF with output
 *   i * T + t of SplitMix64 seeded with seed (see splitmix_uniform): the
 *   first j with u * sum(row) < cumsum(row)[j], added left to right; the
 *   last token of positive probability when rounding leaves none.
 * A sequence stops at its first end token: lengths[i] is its position + 1,
 * or T when the end token is forced at T - 1; the tokens after the end are
 * the end token.
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
    const ptrdiff_t W = V - 1;
    const int team = rlhf_threads(0);
    /* total[s]: the row's sum, added left to right; last[s]: its last
     * token of positive probability */
    double *total = malloc((size_t)(n_states > 0 ? n_states : 1) *
                           sizeof(double));
    ptrdiff_t *last = malloc((size_t)(n_states > 0 ? n_states : 1) *
                             sizeof(ptrdiff_t));
    if (total == NULL || last == NULL) {
        free(total);
        free(last);
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
                if (p[j] > 0.0) {
                    pick = j;
                }
            }
            total[s] = sum;
            last[s] = pick;
            if (bad || pick < 0 || !isfinite(sum)) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
                status = RLHF_EVALUE;
            }
        }
    }
    /* a sequence costs up to T - 1 draws of about V / 2 additions each */
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
            int64_t *row = tokens + i * T;
            for (ptrdiff_t t = 0; t < T; t++) {
                row[t] = end_token;
            }
            lengths[i] = (int64_t)T;
            context c = {0, 0, 1};
            for (ptrdiff_t t = 0; t + 1 < T; t++) {
                const ptrdiff_t state = c.offset + c.code;
                const double *p = probs + state * V;
                const uint64_t counter = (uint64_t)i * (uint64_t)T +
                                         (uint64_t)t;
                const double target =
                    splitmix_uniform(seed, counter) * total[state];
                /* the inverse CDF: cum = cumsum(p), left to right */
                double cum = 0.0;
                ptrdiff_t pick = last[state];
                for (ptrdiff_t j = 0; j < V; j++) {
                    cum += p[j];
                    if (target < cum) {
                        pick = j;
                        break;
                    }
                }
                row[t] = (int64_t)pick;
                if (pick == end_token) {
                    lengths[i] = (int64_t)(t + 1);
                    break;
                }
                context_advance(&c, W, word_of(pick, end_token), t, depth);
            }
        }
    }
    free(total);
    free(last);
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
    const ptrdiff_t W = V - 1;
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
                context_advance(&c, W, word_of(row[t], end_token), t, depth);
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
#ifdef _OPENMP
#pragma omp simd
#endif
    for (ptrdiff_t j = 0; j < end_token; j++) {
        out[j] = ref[j] + children[j];
    }
    out[end_token] = ref[end_token] + reward;
#ifdef _OPENMP
#pragma omp simd
#endif
    for (ptrdiff_t j = end_token + 1; j < V; j++) {
        out[j] = ref[j] + children[j - 1];
    }
    double top = -INFINITY;
    int nan_seen = 0;
#ifdef _OPENMP
#pragma omp simd reduction(max : top) reduction(| : nan_seen)
#endif
    for (ptrdiff_t j = 0; j < V; j++) {
        top = out[j] > top ? out[j] : top; /* exact in any order */
        nan_seen |= out[j] != out[j];
    }
    top = nan_seen ? NAN : top;
    /* z - top <= 0, or NaN (top infinite or NaN), which exp_nonpositive
     * passes through */
#ifdef _OPENMP
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
#ifdef _OPENMP
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
#pragma omp atomic write
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

/* -- the token-level gradient kernels ---------------------------------- */

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

/* Scratch of the token kernels: the grouping of the tokens, and a buffer
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
 * The gradient in logits of sum_i coefs_i log pi(a_i | s_i), pi =
 * exp(log_probs), added up by state:
 *   grad[s] = sum_{i: s_i = s} coefs_i e_{a_i} - (sum_{i: s_i = s}
 *             coefs_i) exp(log_probs[s]),
 * each sum in token order; tokens with a negative state are skipped.
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
    token_groups g;
    int status = token_groups_alloc(&g, states, n_tokens, n_states, 0);
    const int team = rlhf_threads(0);
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

/* One Adam step (rlhf_adam_step's arithmetic) on n entries. */
RLHF_CLONES
static void adam_entries(double *theta, const double *grad, double *m,
                         double *v, ptrdiff_t n, double lr, double beta1,
                         double beta2, double eps, double c1, double c2)
{
#ifdef _OPENMP
#pragma omp simd
#endif
    for (ptrdiff_t q = 0; q < n; q++) {
        m[q] = beta1 * m[q] + (1.0 - beta1) * grad[q];
        v[q] = beta2 * v[q] + (1.0 - beta2) * grad[q] * grad[q];
        theta[q] -= lr * (m[q] / c1) / (sqrt(v[q] / c2) + eps);
    }
}

/* The arguments of rlhf_token_ppo_adam_step that one state's row needs. */
typedef struct {
    const int64_t *actions;
    const double *weights, *old_logp, *advantages;
    double clip, kl_coef, scale;
    int kl_kind;
} ppo_tokens;

/*
 * One state of rlhf_token_ppo_adam_step: z = ref + theta, the row's
 * log-softmax once, then its tokens (order[0 .. count)) in token order
 * into g (the row's gradient) and part (its loss and clipped weight).
 * Returns -1 when z holds a NaN or +inf or is all -inf.
 */
RLHF_CLONES
static int ppo_state(const double *theta, const double *ref, ptrdiff_t V,
                     const ppo_tokens *a, const ptrdiff_t *order,
                     ptrdiff_t count, double *z, double *g, double *part)
{
    double top = -INFINITY;
    int bad = 0;
#ifdef _OPENMP
#pragma omp simd reduction(max : top) reduction(| : bad)
#endif
    for (ptrdiff_t j = 0; j < V; j++) {
        z[j] = ref[j] + theta[j];
        bad |= !(z[j] < INFINITY); /* NaN or +inf */
        top = z[j] > top ? z[j] : top; /* exact in any order */
    }
    if (bad || top == -INFINITY) {
        return -1;
    }
    part[0] = part[1] = 0.0;
    /* log softmax(z) = (z - top) - log sum exp(z - top): the maximum
     * subtracted, so nothing overflows; g holds exp(z - top) for now */
    double total = 0.0;
    if (count > 0) {
#ifdef _OPENMP
#pragma omp simd
#endif
        for (ptrdiff_t j = 0; j < V; j++) {
            g[j] = exp_nonpositive(z[j] - top);
        }
        for (ptrdiff_t j = 0; j < V; j++) {
            total += g[j];
        }
    }
#ifdef _OPENMP
#pragma omp simd
#endif
    for (ptrdiff_t j = 0; j < V; j++) {
        g[j] = 0.0;
    }
    if (count == 0) {
        return 0;
    }
    const double log_total = log(total);
    double loss = 0.0, clipped_weight = 0.0, coef_total = 0.0;
    for (ptrdiff_t r = 0; r < count; r++) {
        const ptrdiff_t q = order[r];
        const double w = a->weights[q];
        if (w == 0.0) {
            continue;
        }
        const ptrdiff_t y = (ptrdiff_t)a->actions[q];
        const double lp = (z[y] - top) - log_total;
        const double rho = exp(lp - a->old_logp[q]);
        const double adv = a->advantages[q];
        const double rho_clipped =
            rho < 1.0 - a->clip ? 1.0 - a->clip
                                : (rho > 1.0 + a->clip ? 1.0 + a->clip : rho);
        const double plain = rho * adv, clipped = rho_clipped * adv;
        /* the gradient flows through the unclipped term when it is the
         * minimum */
        double coef = plain <= clipped ? -adv * rho : 0.0;
        double term = -(plain < clipped ? plain : clipped);
        if (a->kl_coef != 0.0) {
            /* the KL estimate of d = log pi - log pi_ref and its
             * derivative in log pi (Schulman 2020, "Approximating KL
             * divergence"): k1 = d, 1; k3 = exp(-d) - 1 + d, 1 - exp(-d),
             * one expm1 for both */
            const double d = lp - ref[y];
            const double e = a->kl_kind == RLHF_KL_K3 ? expm1(-d) : 0.0;
            const double k = a->kl_kind == RLHF_KL_K3 ? e + d : d;
            const double dk = a->kl_kind == RLHF_KL_K3 ? -e : 1.0;
            term += a->kl_coef * rho * k;
            coef += a->kl_coef * rho * (k + dk);
        }
        loss += w * term;
        clipped_weight += fabs(rho - 1.0) > a->clip ? w : 0.0;
        coef = coef * w * a->scale;
        g[y] += coef;
        coef_total += coef;
    }
    /* grad_row = sum_i c_i e_{a_i} - (sum_i c_i) softmax(z) */
#ifdef _OPENMP
#pragma omp simd
#endif
    for (ptrdiff_t j = 0; j < V; j++) {
        g[j] -= coef_total * exp_nonpositive((z[j] - top) - log_total);
    }
    part[0] = loss;
    part[1] = clipped_weight;
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
 * a zero weight are skipped.  Each state's row is computed and stepped by
 * one thread, its log-softmax formed once.
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
    const double c1 = 1.0 - pow(beta1, (double)t);
    const double c2 = 1.0 - pow(beta2, (double)t);
    const ppo_tokens a = {actions, weights, old_logp, advantages,
                          clip, kl_coef, scale, kl_kind};
    token_groups g;
    int status = token_groups_alloc(&g, states, n_tokens, n_states, 2);
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
            if (!logits_ok(theta + s * V, ref_log_probs + s * V, V)) {
#ifdef _OPENMP
#pragma omp atomic write
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
            /* per thread: the logits and the gradient of a row */
            double *buffer = malloc((size_t)(2 * V) * sizeof(double));
            if (buffer == NULL) {
#ifdef _OPENMP
#pragma omp atomic write
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
                double *z = buffer, *grad = buffer + V;
                g.partial[2 * s] = g.partial[2 * s + 1] = 0.0;
                if (ppo_state(theta + s * V, ref_log_probs + s * V, V, &a,
                              g.order + g.start[s],
                              g.start[s + 1] - g.start[s], z, grad,
                              g.partial + 2 * s) < 0) {
#ifdef _OPENMP
#pragma omp atomic write
#endif
                    status = RLHF_ENONFINITE;
                    continue;
                }
                adam_entries(theta + s * V, grad, m + s * V, v + s * V, V,
                             lr, beta1, beta2, eps, c1, c2);
            }
            free(buffer);
        }
    }
    double total = 0.0, clipped = 0.0;
    if (status == 0) {
        for (ptrdiff_t s = 0; s < n_states; s++) {
            total += g.partial[2 * s];
            clipped += g.partial[2 * s + 1];
        }
    }
    token_groups_free(&g);
    *loss = scale * total;
    *clip_fraction = scale * clipped;
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
 * each sum in token order; tokens with a negative state are skipped.
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
    const double c1 = 1.0 - pow(beta1, (double)t);
    const double c2 = 1.0 - pow(beta2, (double)t);
    token_groups g;
    int status = token_groups_alloc(&g, states, n_tokens, n_states, 1);
    const int team = rlhf_threads(0);
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
                const double w = weights[q] * scale;
                const double ret = returns[q], old = old_values[q];
                const double change = value - old;
                const double moved =
                    change < -value_clip
                        ? -value_clip
                        : (change > value_clip ? value_clip : change);
                const double plain = (value - ret) * (value - ret);
                const double clipped =
                    (old + moved - ret) * (old + moved - ret);
                double dvalue;
                if (plain >= clipped) {
                    dvalue = value - ret;
                } else {
                    /* the clipped branch moves with V only inside the
                     * clip range */
                    dvalue = fabs(change) < value_clip ? old + moved - ret
                                                       : 0.0;
                }
                grad += w * dvalue;
                part += w * (plain >= clipped ? plain : clipped);
            }
            g.partial[s] = part;
            adam_entries(values + s, &grad, m + s, v + s, 1, lr, beta1,
                         beta2, eps, c1, c2);
        }
    }
    double total = 0.0;
    if (status == 0) {
        for (ptrdiff_t s = 0; s < n_states; s++) {
            total += g.partial[s];
        }
    }
    token_groups_free(&g);
    *loss = 0.5 * total;
    return status;
}
