/*
 * gpt.c - a GPT-2 language model in float32 (rlhf.TinyLM): forward and
 * backward by hand, AdamW, and sampling with a key-value cache.
 *
 * The architecture is GPT-2's (Radford et al. 2019): token and position
 * embeddings; n_layer pre-LayerNorm blocks (LayerNorm eps 1e-5) of causal
 * multi-head self-attention (fused qkv projection, output projection, both
 * with biases, scores scaled by 1/sqrt(head size)) and an MLP of width 4C
 * with GELU (tanh approximation), each added to the residual stream; a
 * final LayerNorm; an LM head tied to the token embedding.  The NumPy twin
 * rlhf/_reference_gpt.py is the specification, in float64.
 *
 * Letters: L layers, H heads, C = n_embd channels, D = C / H per head,
 * V tokens, B sequences of T positions, N = B * T rows.
 *
 * Parameters: one float32 vector in Hugging Face GPT-2's order and shapes
 * (rlhf_gpt_n_params, layer_params below), Conv1D layout: a projection
 * computes x @ W + b with W of shape (in, out).  Gradients share the
 * layout.
 *
 * Activations: the forward pass writes everything the backward pass reads
 * into one float32 buffer of rlhf_gpt_n_acts floats laid out by acts_of():
 * the residual stream at each layer's input, then per layer the LayerNorm
 * outputs and statistics, qkv, the attention probabilities, the heads'
 * outputs, the residual after attention, the MLP's pre-activation and
 * activation; at the end the final LayerNorm's output (the last hidden
 * state), the log-normaliser of each row's logits and the logits.
 *
 * Determinism: every output element is computed by one thread, by a sum
 * in a fixed order: a matrix product's element is its bias (or zero) plus
 * the products in order of the inner index, whatever the tiling; a weight
 * gradient sums over rows in row order.  So results are the same bits for
 * any number of threads, and a row's forward pass does not depend on the
 * other rows of its batch: the key-value-cache sampler computes each
 * position exactly as the full forward pass does.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#define THREAD_NUM ((ptrdiff_t)omp_get_thread_num())
#else
#define THREAD_NUM ((ptrdiff_t)0)
#endif

#include "numerics.h"
#include "rlhf.h"

#define LN_EPS 1e-5
#define GELU_C 0.7978845608028654f /* sqrt(2 / pi) */
#define PAR_MIN_WORK 2097152       /* multiply-adds below which one thread */


/* -- layout ----------------------------------------------------------- */

static ptrdiff_t layer_size(ptrdiff_t C)
{
    return 12 * C * C + 13 * C;
}

ptrdiff_t rlhf_gpt_n_params(const rlhf_gpt_config *g)
{
    const ptrdiff_t C = g->n_embd;
    return g->vocab_size * C + g->block_size * C
        + g->n_layer * layer_size(C) + 2 * C;
}

typedef struct {
    float *ln1_w, *ln1_b, *attn_w, *attn_b, *proj_w, *proj_b;
    float *ln2_w, *ln2_b, *fc_w, *fc_b, *fcproj_w, *fcproj_b;
} layer_params;

typedef struct {
    float *wte, *wpe, *lnf_w, *lnf_b;
} model_params;

static model_params params_of(const rlhf_gpt_config *g, float *p)
{
    const ptrdiff_t C = g->n_embd;
    model_params m;
    m.wte = p;
    m.wpe = p + g->vocab_size * C;
    m.lnf_w = m.wpe + g->block_size * C + g->n_layer * layer_size(C);
    m.lnf_b = m.lnf_w + C;
    return m;
}

static layer_params layer_of(const rlhf_gpt_config *g, float *p, ptrdiff_t l)
{
    const ptrdiff_t C = g->n_embd;
    float *q = p + (g->vocab_size + g->block_size) * C + l * layer_size(C);
    layer_params lp;
    lp.ln1_w = q;
    lp.ln1_b = q + C;
    lp.attn_w = q + 2 * C;
    lp.attn_b = lp.attn_w + 3 * C * C;
    lp.proj_w = lp.attn_b + 3 * C;
    lp.proj_b = lp.proj_w + C * C;
    lp.ln2_w = lp.proj_b + C;
    lp.ln2_b = lp.ln2_w + C;
    lp.fc_w = lp.ln2_b + C;
    lp.fc_b = lp.fc_w + 4 * C * C;
    lp.fcproj_w = lp.fc_b + 4 * C;
    lp.fcproj_b = lp.fcproj_w + 4 * C * C;
    return lp;
}

typedef struct {
    float *ln1, *ln1_mean, *ln1_rstd, *qkv, *att, *y, *x1;
    float *ln2, *ln2_mean, *ln2_rstd, *pre, *act;
} layer_acts;

/* the floats of one layer's activations for B sequences of T positions */
static ptrdiff_t layer_acts_size(const rlhf_gpt_config *g, ptrdiff_t B,
                                 ptrdiff_t T)
{
    const ptrdiff_t N = B * T, C = g->n_embd;
    return N * (15 * C + 4) + B * g->n_head * T * T;
}

ptrdiff_t rlhf_gpt_n_acts(const rlhf_gpt_config *g, ptrdiff_t B, ptrdiff_t T)
{
    const ptrdiff_t N = B * T, C = g->n_embd;
    return (g->n_layer + 1) * N * C + g->n_layer * layer_acts_size(g, B, T)
        + N * (C + 3) + N * g->vocab_size;
}

void rlhf_gpt_tail_offsets(const rlhf_gpt_config *g, ptrdiff_t B, ptrdiff_t T,
                           ptrdiff_t *hidden, ptrdiff_t *lse,
                           ptrdiff_t *logits)
{
    const ptrdiff_t N = B * T, C = g->n_embd;
    *hidden = (g->n_layer + 1) * N * C + g->n_layer * layer_acts_size(g, B, T);
    *lse = *hidden + N * (C + 2);
    *logits = *lse + N;
}

/* the residual stream at layer l's input (l = L: the last block's output) */
static float *resid_of(const rlhf_gpt_config *g, float *a, ptrdiff_t N,
                       ptrdiff_t l)
{
    return a + l * N * g->n_embd;
}

static layer_acts acts_of(const rlhf_gpt_config *g, float *a, ptrdiff_t B,
                          ptrdiff_t T, ptrdiff_t l)
{
    const ptrdiff_t N = B * T, C = g->n_embd;
    float *q = a + (g->n_layer + 1) * N * C + l * layer_acts_size(g, B, T);
    layer_acts la;
    la.ln1 = q;
    la.ln1_mean = q + N * C;
    la.ln1_rstd = la.ln1_mean + N;
    la.qkv = la.ln1_rstd + N;
    la.att = la.qkv + 3 * N * C;
    la.y = la.att + B * g->n_head * T * T;
    la.x1 = la.y + N * C;
    la.ln2 = la.x1 + N * C;
    la.ln2_mean = la.ln2 + N * C;
    la.ln2_rstd = la.ln2_mean + N;
    la.pre = la.ln2_rstd + N;
    la.act = la.pre + 4 * N * C;
    return la;
}

/* -- building blocks -------------------------------------------------- */

/* a where mask is all ones, b where it is 0: a select through the bits,
 * both computed, so that loops of it vectorise (see fastexp.h's blend) */
static inline float blendf(uint32_t mask, float a, float b)
{
    uint32_t ua, ub;
    memcpy(&ua, &a, sizeof ua);
    memcpy(&ub, &b, sizeof ub);
    const uint32_t u = (ua & mask) | (ub & ~mask);
    float r;
    memcpy(&r, &u, sizeof r);
    return r;
}

/*
 * exp(x) for x <= 0 in float, to about 2 ulp, written so that loops
 * calling it vectorise: x = n ln2 + r with |r| <= ln2 / 2 (Cody & Waite's
 * split of ln2), exp(r) by its Taylor series to degree 7 (truncation
 * below 1.2e-7 relative at |r| = ln2 / 2), 2^n through the exponent
 * bits; 0 below -87.
 */
static inline float expf_nonpositive(float x)
{
    const float lowest = -87.0f;
    const uint32_t under = 0u - (uint32_t)(x < lowest);
    const float xc = blendf(under, lowest, x);
    const float shifter = 12582912.0f; /* 1.5 * 2^23 */
    const float t = xc * 1.44269504f + shifter;
    const float n = t - shifter; /* round(x / ln2), exactly */
    const float r = (xc - n * 0.693145752f) - n * 1.42860677e-6f;
    const float r2 = r * r, r4 = r2 * r2;
    const float p = ((1.0f + r) + r2 * (0.5f + r * (1.0f / 6.0f)))
        + r4 * ((1.0f / 24.0f + r * (1.0f / 120.0f))
                + r2 * (1.0f / 720.0f + r * (1.0f / 5040.0f)));
    int32_t t_bits, shifter_bits;
    memcpy(&t_bits, &t, sizeof t_bits);
    memcpy(&shifter_bits, &shifter, sizeof shifter_bits);
    const int32_t bits = (int32_t)((uint32_t)(t_bits - shifter_bits + 127)
                                   << 23);
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return blendf(under, 0.0f, p * scale);
}

static int team_for(ptrdiff_t work)
{
    return work >= PAR_MIN_WORK ? rlhf_threads(0) : 1;
}

/*
 * out[n, o] = init[n, o] + sum_i inp[n, i] w[i, o], with init the bias
 * (or zero without one) or, when accumulate, out itself.  Each element's
 * sum runs over i in order; tiles of 4 rows by 16 columns keep their sums
 * in registers, the edges take one element at a time, in the same order.
 */
#define MR 4
#define NR 16
#define KC 256 /* the inner index's chunk */

#if defined(__GNUC__)
/* eight floats, added and multiplied lane by lane: GCC's vector extension,
 * which needs no intrinsics and gives each lane the scalar operations */
typedef float vec8 __attribute__((vector_size(32)));

/* unaligned loads and stores (macros: a function returning a vector
 * would have a different ABI in the AVX2 copy) */
#define LOAD8(v, p) memcpy(&(v), (p), sizeof(vec8))
#define STORE8(p, v) memcpy((p), &(v), sizeof(vec8))

/* rows n0 .. n0 + 3, columns o0 .. o0 + 15 of the product */
__attribute__((always_inline)) static inline void
tile(float *out, const float *inp, const float *w,
                        const float *bias, ptrdiff_t n0, ptrdiff_t o0,
                        ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t O, int acc,
                        ptrdiff_t rs, ptrdiff_t ks)
{
    vec8 s[MR][2];
    for (int r = 0; r < MR; r++) {
        for (int h = 0; h < 2; h++) {
            const ptrdiff_t at = (n0 + r) * O + o0 + 8 * h;
            if (acc) {
                LOAD8(s[r][h], out + at);
            } else if (bias != NULL) {
                LOAD8(s[r][h], bias + o0 + 8 * h);
            } else {
                s[r][h] = (vec8){0};
            }
        }
    }
    const float *a = inp + n0 * rs;
    for (ptrdiff_t i = i0; i < i1; i++) {
        vec8 w0, w1;
        LOAD8(w0, w + i * O + o0);
        LOAD8(w1, w + i * O + o0 + 8);
        const float *ai = a + i * ks;
        const float x0 = ai[0], x1 = ai[rs], x2 = ai[2 * rs],
                    x3 = ai[3 * rs];
        s[0][0] += x0 * w0;
        s[0][1] += x0 * w1;
        s[1][0] += x1 * w0;
        s[1][1] += x1 * w1;
        s[2][0] += x2 * w0;
        s[2][1] += x2 * w1;
        s[3][0] += x3 * w0;
        s[3][1] += x3 * w1;
    }
    for (int r = 0; r < MR; r++) {
        for (int h = 0; h < 2; h++) {
            STORE8(out + (n0 + r) * O + o0 + 8 * h, s[r][h]);
        }
    }
}
#define HAVE_TILE 1
#endif

/*
 * The product with the left factor read as a(n, i) = inp[n * rs + i * ks]:
 * rs = I, ks = 1 is inp (N, I) itself, rs = 1, ks = N' its transpose when
 * inp is stored (I, N').
 */
RLHF_CLONES static void matmul_strided(float *out, const float *inp,
                                       const float *w, const float *bias,
                                       ptrdiff_t N, ptrdiff_t I, ptrdiff_t O,
                                       int acc, ptrdiff_t rs, ptrdiff_t ks)
{
    const ptrdiff_t blocks = (N + MR - 1) / MR;
    const int team = team_for(N * I * O);
    (void)team;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
    for (ptrdiff_t b = 0; b < blocks; b++) {
        const ptrdiff_t n0 = b * MR;
        ptrdiff_t o0 = 0;
#ifdef HAVE_TILE
        if (n0 + MR <= N && O >= NR) {
            /* the inner index in chunks, so that a chunk of w stays in
             * cache across the tiles; a tile's sums go through out between
             * chunks, which changes no bit */
            for (ptrdiff_t i0 = 0; i0 < I; i0 += KC) {
                const ptrdiff_t i1 = i0 + KC < I ? i0 + KC : I;
                for (o0 = 0; o0 + NR <= O; o0 += NR) {
                    tile(out, inp, w, bias, n0, o0, i0, i1, O,
                         acc || i0 > 0, rs, ks);
                }
            }
        }
#endif
        const ptrdiff_t n1 = n0 + MR < N ? n0 + MR : N;
        for (ptrdiff_t n = n0; n < n1; n++) {
            /* the columns no tile covered: all of them on a short block */
            for (ptrdiff_t o = o0; o < O; o++) {
                float s = acc ? out[n * O + o] : (bias != NULL ? bias[o]
                                                  : 0.0f);
                for (ptrdiff_t i = 0; i < I; i++) {
                    s += inp[n * rs + i * ks] * w[i * O + o];
                }
                out[n * O + o] = s;
            }
        }
    }
}

static void matmul(float *out, const float *inp, const float *w,
                   const float *bias, ptrdiff_t N, ptrdiff_t I, ptrdiff_t O,
                   int acc)
{
    matmul_strided(out, inp, w, bias, N, I, O, acc, I, 1);
}

/* dw (I, O) = x^T d for x (N, I), d (N, O): a weight's gradient, each
 * entry summed over the rows in order */
static void weight_grad(float *dw, const float *x, const float *d,
                        ptrdiff_t N, ptrdiff_t I, ptrdiff_t O)
{
    matmul_strided(dw, x, d, NULL, I, N, O, 0, 1, I);
}

/* dst (cols, rows) = src (rows, cols) transposed */
static void transpose(float *dst, const float *src, ptrdiff_t rows,
                      ptrdiff_t cols)
{
    const int team = team_for(8 * rows * cols);
    (void)team;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
    for (ptrdiff_t c0 = 0; c0 < cols; c0 += 16) {
        const ptrdiff_t c1 = c0 + 16 < cols ? c0 + 16 : cols;
        for (ptrdiff_t r = 0; r < rows; r++) {
            for (ptrdiff_t c = c0; c < c1; c++) {
                dst[c * rows + r] = src[r * cols + c];
            }
        }
    }
}

/* sums[o] = sum_n d[n, o], over n in order; threads take columns */
RLHF_CLONES static void column_sums(float *sums, const float *d, ptrdiff_t N,
                                    ptrdiff_t O)
{
    const int team = team_for(4 * N * O);
    (void)team;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
    for (ptrdiff_t o0 = 0; o0 < O; o0 += 64) {
        const ptrdiff_t o1 = o0 + 64 < O ? o0 + 64 : O;
        for (ptrdiff_t o = o0; o < o1; o++) {
            sums[o] = 0.0f;
        }
        for (ptrdiff_t n = 0; n < N; n++) {
            for (ptrdiff_t o = o0; o < o1; o++) {
                sums[o] += d[n * O + o];
            }
        }
    }
}

/* LayerNorm of each row of x (N, C): out = (x - mean) * rstd * w + b */
static void layer_norm(float *out, float *mean, float *rstd, const float *x,
                       const float *w, const float *b, ptrdiff_t N,
                       ptrdiff_t C)
{
    const int team = team_for(N * C);
    (void)team;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
    for (ptrdiff_t n = 0; n < N; n++) {
        const float *row = x + n * C;
        double s = 0.0;
        for (ptrdiff_t c = 0; c < C; c++) {
            s += row[c];
        }
        const float m = (float)(s / (double)C);
        double v = 0.0;
        for (ptrdiff_t c = 0; c < C; c++) {
            const double d = (double)(row[c] - m);
            v += d * d;
        }
        const float r = (float)(1.0 / sqrt(v / (double)C + LN_EPS));
        for (ptrdiff_t c = 0; c < C; c++) {
            out[n * C + c] = (row[c] - m) * r * w[c] + b[c];
        }
        mean[n] = m;
        rstd[n] = r;
    }
}

/*
 * Backward through the LayerNorm: dx (+)= rstd * (g - mean(g) - xhat *
 * mean(g xhat)), g = dout * w, xhat the normalised input; dw, db summed
 * over the rows in order.
 */
static void layer_norm_backward(float *dx, float *dw, float *db,
                                const float *dout, const float *x,
                                const float *mean, const float *rstd,
                                const float *w, ptrdiff_t N, ptrdiff_t C,
                                int acc)
{
    const int team = team_for(N * C);
    (void)team;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
    for (ptrdiff_t n = 0; n < N; n++) {
        const float *row = x + n * C, *d = dout + n * C;
        const float m = mean[n], r = rstd[n];
        double sg = 0.0, sgx = 0.0;
        for (ptrdiff_t c = 0; c < C; c++) {
            const float g = d[c] * w[c];
            sg += g;
            sgx += (double)g * (double)((row[c] - m) * r);
        }
        const float mg = (float)(sg / (double)C);
        const float mgx = (float)(sgx / (double)C);
        for (ptrdiff_t c = 0; c < C; c++) {
            const float xhat = (row[c] - m) * r;
            const float v = r * (d[c] * w[c] - mg - xhat * mgx);
            dx[n * C + c] = acc ? dx[n * C + c] + v : v;
        }
    }
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
    for (ptrdiff_t c0 = 0; c0 < C; c0 += 16) {
        const ptrdiff_t c1 = c0 + 16 < C ? c0 + 16 : C;
        for (ptrdiff_t c = c0; c < c1; c++) {
            dw[c] = 0.0f;
            db[c] = 0.0f;
        }
        for (ptrdiff_t n = 0; n < N; n++) {
            const float m = mean[n], r = rstd[n];
            for (ptrdiff_t c = c0; c < c1; c++) {
                dw[c] += dout[n * C + c] * ((x[n * C + c] - m) * r);
                db[c] += dout[n * C + c];
            }
        }
    }
}

/* GELU's tanh form through 0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u)), with
 * exp taken of -|2u| only, both arms computed so that loops vectorise */
static inline float gelu_sigmoid(float x)
{
    const float z = 2.0f * GELU_C * (x + 0.044715f * x * x * x);
    const float e = expf_nonpositive(-fabsf(z));
    const float q = 1.0f / (1.0f + e);
    return blendf(0u - (uint32_t)(z >= 0.0f), q, e * q);
}

static inline float gelu(float x)
{
    return x * gelu_sigmoid(x);
}

static inline float gelu_grad(float x)
{
    const float s = gelu_sigmoid(x), t = 2.0f * s - 1.0f;
    return s + 0.5f * x * (1.0f - t * t) * GELU_C * (1.0f + 0.134145f * x * x);
}

/* Elementwise loops run over spans of SPAN entries, a span a thread's
 * unit: the span's plain loop is what the compiler vectorises. */
#define SPAN 4096

static inline void gelu_span(float *out, const float *x, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        out[i] = gelu(x[i]);
    }
}

static inline void gelu_backward_span(float *d, const float *x, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        d[i] *= gelu_grad(x[i]);
    }
}

RLHF_CLONES static void gelu_rows(float *out, const float *x, ptrdiff_t n)
{
    const int team = team_for(8 * n);
    (void)team;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
    for (ptrdiff_t i0 = 0; i0 < n; i0 += SPAN) {
        gelu_span(out + i0, x + i0, n - i0 < SPAN ? n - i0 : SPAN);
    }
}

RLHF_CLONES static void gelu_backward_rows(float *d, const float *x,
                                           ptrdiff_t n)
{
    const int team = team_for(8 * n);
    (void)team;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
    for (ptrdiff_t i0 = 0; i0 < n; i0 += SPAN) {
        gelu_backward_span(d + i0, x + i0, n - i0 < SPAN ? n - i0 : SPAN);
    }
}

/*
 * One query's attention over n_ctx keys: att = softmax(q . k / sqrt(D)),
 * y = sum_t att[t] v[t].  The keys come transposed, key t's entry d at
 * keys_t[d * ldk + t], so that the scores are built a dimension at a time
 * across all keys (loops the compiler vectorises), each score still the
 * sum over d in order; the values are rows of stride floats.  The full
 * forward pass and the key-value cache both call this, so a row's output
 * is the same bits in both.
 */
RLHF_CLONES static void attend(float *att, float *y, const float *q,
                               const float *keys_t, ptrdiff_t ldk,
                               const float *vals, ptrdiff_t stride,
                               ptrdiff_t n_ctx, ptrdiff_t D, float scale)
{
    for (ptrdiff_t t = 0; t < n_ctx; t++) {
        att[t] = 0.0f;
    }
    for (ptrdiff_t d = 0; d < D; d++) {
        const float qd = q[d], *k = keys_t + d * ldk;
        for (ptrdiff_t t = 0; t < n_ctx; t++) {
            att[t] += qd * k[t];
        }
    }
    float top = -INFINITY;
    for (ptrdiff_t t = 0; t < n_ctx; t++) {
        att[t] *= scale;
        top = att[t] > top ? att[t] : top;
    }
    double total = 0.0;
    for (ptrdiff_t t = 0; t < n_ctx; t++) {
        att[t] = expf_nonpositive(att[t] - top);
        total += att[t];
    }
    const float inv = (float)(1.0 / total);
    for (ptrdiff_t d = 0; d < D; d++) {
        y[d] = 0.0f;
    }
    for (ptrdiff_t t = 0; t < n_ctx; t++) {
        att[t] *= inv;
        const float a = att[t], *v = vals + t * stride;
        for (ptrdiff_t d = 0; d < D; d++) {
            y[d] += a * v[d];
        }
    }
}

/* dst[d * T + t] = src[t * stride + d]: a head's keys (or values)
 * transposed */
static void gather_transposed(float *dst, const float *src, ptrdiff_t stride,
                              ptrdiff_t T, ptrdiff_t D)
{
    for (ptrdiff_t t = 0; t < T; t++) {
        for (ptrdiff_t d = 0; d < D; d++) {
            dst[d * T + t] = src[t * stride + d];
        }
    }
}

/* the log-normaliser of each row of logits (N, V) */
RLHF_CLONES static void log_normalisers(float *lse, const float *logits, ptrdiff_t N,
                            ptrdiff_t V)
{
    const int team = team_for(8 * N * V);
    (void)team;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
    for (ptrdiff_t n = 0; n < N; n++) {
        const float *row = logits + n * V;
        float top = row[0];
        for (ptrdiff_t v = 1; v < V; v++) {
            top = row[v] > top ? row[v] : top;
        }
        double total = 0.0;
        for (ptrdiff_t v = 0; v < V; v++) {
            total += expf_nonpositive(row[v] - top);
        }
        lse[n] = top + (float)log(total);
    }
}

/* -- forward ---------------------------------------------------------- */

/*
 * The rows' embeddings, then every block, then the final LayerNorm and the
 * logits.  tokens (B, T) must lie in [0, V) (RLHF_EVALUE otherwise) and
 * T <= block_size.  wte_t is scratch of V * C floats (the embedding
 * transposed, for the LM head), scratch of threads * T * C / H floats (a
 * head's keys transposed, per thread).
 */
static int forward(const rlhf_gpt_config *g, float *params,
                   const int64_t *tokens, ptrdiff_t B, ptrdiff_t T,
                   float *acts, float *wte_t, float *scratch)
{
    const ptrdiff_t N = B * T, C = g->n_embd, V = g->vocab_size,
                    H = g->n_head, D = C / H;
    const model_params mp = params_of(g, params);
    for (ptrdiff_t n = 0; n < N; n++) {
        if (tokens[n] < 0 || tokens[n] >= V) {
            return RLHF_EVALUE;
        }
    }
    float *x = resid_of(g, acts, N, 0);
    for (ptrdiff_t n = 0; n < N; n++) {
        const float *e = mp.wte + tokens[n] * C, *p = mp.wpe + (n % T) * C;
        for (ptrdiff_t c = 0; c < C; c++) {
            x[n * C + c] = e[c] + p[c];
        }
    }
    const float scale = (float)(1.0 / sqrt((double)D));
    for (ptrdiff_t l = 0; l < g->n_layer; l++) {
        if (rlhf_interrupted()) {
            return RLHF_EINTR;
        }
        const layer_params lp = layer_of(g, params, l);
        const layer_acts la = acts_of(g, acts, B, T, l);
        x = resid_of(g, acts, N, l);
        float *out = resid_of(g, acts, N, l + 1);
        layer_norm(la.ln1, la.ln1_mean, la.ln1_rstd, x, lp.ln1_w, lp.ln1_b,
                   N, C);
        matmul(la.qkv, la.ln1, lp.attn_w, lp.attn_b, N, C, 3 * C, 0);
        const int team = team_for(B * H * T * T * D);
        (void)team;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
        for (ptrdiff_t bh = 0; bh < B * H; bh++) {
            const ptrdiff_t b = bh / H, h = bh % H;
            const float *base = la.qkv + b * T * 3 * C + h * D;
            float *keys_t = scratch + THREAD_NUM * D * T;
            gather_transposed(keys_t, base + C, 3 * C, T, D);
            for (ptrdiff_t t = 0; t < T; t++) {
                float *att = la.att + (bh * T + t) * T;
                attend(att, la.y + (b * T + t) * C + h * D,
                       base + t * 3 * C, keys_t, T, base + 2 * C, 3 * C,
                       t + 1, D, scale);
                for (ptrdiff_t u = t + 1; u < T; u++) {
                    att[u] = 0.0f;
                }
            }
        }
        memcpy(la.x1, x, (size_t)(N * C) * sizeof(float));
        matmul(la.x1, la.y, lp.proj_w, NULL, N, C, C, 1);
        for (ptrdiff_t n = 0; n < N; n++) {
            for (ptrdiff_t c = 0; c < C; c++) {
                la.x1[n * C + c] += lp.proj_b[c];
            }
        }
        layer_norm(la.ln2, la.ln2_mean, la.ln2_rstd, la.x1, lp.ln2_w,
                   lp.ln2_b, N, C);
        matmul(la.pre, la.ln2, lp.fc_w, lp.fc_b, N, C, 4 * C, 0);
        gelu_rows(la.act, la.pre, N * 4 * C);
        memcpy(out, la.x1, (size_t)(N * C) * sizeof(float));
        matmul(out, la.act, lp.fcproj_w, NULL, N, 4 * C, C, 1);
        for (ptrdiff_t n = 0; n < N; n++) {
            for (ptrdiff_t c = 0; c < C; c++) {
                out[n * C + c] += lp.fcproj_b[c];
            }
        }
    }
    ptrdiff_t o_hidden, o_lse, o_logits;
    rlhf_gpt_tail_offsets(g, B, T, &o_hidden, &o_lse, &o_logits);
    float *hidden = acts + o_hidden;
    layer_norm(hidden, hidden + N * C, hidden + N * C + N,
               resid_of(g, acts, N, g->n_layer), mp.lnf_w, mp.lnf_b, N, C);
    transpose(wte_t, mp.wte, V, C);
    matmul(acts + o_logits, hidden, wte_t, NULL, N, C, V, 0);
    log_normalisers(acts + o_lse, acts + o_logits, N, V);
    return 0;
}

int rlhf_gpt_forward(const rlhf_gpt_config *g, float *params,
                     const int64_t *tokens, ptrdiff_t B, ptrdiff_t T,
                     float *acts)
{
    float *wte_t = malloc((size_t)(g->vocab_size * g->n_embd) *
                          sizeof(float));
    float *scratch = malloc((size_t)(rlhf_threads(0) * T * g->n_embd
                                     / g->n_head) * sizeof(float));
    int status = RLHF_ENOMEM;
    if (wte_t != NULL && scratch != NULL) {
        status = forward(g, params, tokens, B, T, acts, wte_t, scratch);
    }
    free(wte_t);
    free(scratch);
    return status;
}

/*
 * logp[n] = log softmax(logits[n])[targets[n]] and, when entropy is not
 * NULL, entropy[n] = -sum_v p log p of row n, after a forward pass.
 */
int rlhf_gpt_token_stats(const rlhf_gpt_config *g, const float *acts,
                         ptrdiff_t B, ptrdiff_t T, const int64_t *targets,
                         float *logp, float *entropy)
{
    const ptrdiff_t N = B * T, V = g->vocab_size;
    ptrdiff_t o_hidden, o_lse, o_logits;
    rlhf_gpt_tail_offsets(g, B, T, &o_hidden, &o_lse, &o_logits);
    const float *lse = acts + o_lse, *logits = acts + o_logits;
    for (ptrdiff_t n = 0; n < N; n++) {
        if (targets[n] < 0 || targets[n] >= V) {
            return RLHF_EVALUE;
        }
    }
    const int team = team_for(entropy != NULL ? 8 * N * V : 0);
    (void)team;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
    for (ptrdiff_t n = 0; n < N; n++) {
        const float *row = logits + n * V;
        logp[n] = row[targets[n]] - lse[n];
        if (entropy != NULL) {
            double h = 0.0;
            for (ptrdiff_t v = 0; v < V; v++) {
                const double lp = (double)(row[v] - lse[n]);
                h -= exp(lp) * lp;
            }
            entropy[n] = (float)h;
        }
    }
    return 0;
}

/* -- backward --------------------------------------------------------- */

/* d[n] = coef[n] (softmax(logits[n]) - e_{targets[n]}) */
RLHF_CLONES static void dlogits_rows(float *dlogits, const float *logits,
                                     const float *lse, const int64_t *targets,
                                     const float *coef, ptrdiff_t N,
                                     ptrdiff_t V)
{
    const int team = team_for(8 * N * V);
    (void)team;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
    for (ptrdiff_t n = 0; n < N; n++) {
        float *d = dlogits + n * V;
        const float *row = logits + n * V;
        const float k = coef[n], z = lse[n];
        if (k == 0.0f) {
            memset(d, 0, (size_t)V * sizeof(float));
            continue;
        }
        for (ptrdiff_t v = 0; v < V; v++) {
            d[v] = k * expf_nonpositive(row[v] - z);
        }
        d[targets[n]] -= k;
    }
}

/*
 * The gradient of -sum_n coef[n] log p(targets[n] | row n) in every
 * parameter, written into grads, after rlhf_gpt_forward on the same
 * tokens (acts).  Cross-entropy is coef = mask / sum(mask); a policy
 * gradient's coef is the advantage (or any dLoss/dlogp, negated).
 */
int rlhf_gpt_backward(const rlhf_gpt_config *g, float *params,
                      const int64_t *tokens, ptrdiff_t B, ptrdiff_t T,
                      float *acts, const int64_t *targets, const float *coef,
                      float *grads)
{
    const ptrdiff_t N = B * T, C = g->n_embd, V = g->vocab_size,
                    H = g->n_head, D = C / H;
    const model_params mp = params_of(g, params);
    const model_params mg = params_of(g, grads);
    for (ptrdiff_t n = 0; n < N; n++) {
        if (targets[n] < 0 || targets[n] >= V || tokens[n] < 0 ||
            tokens[n] >= V) {
            return RLHF_EVALUE;
        }
    }
    float *dlogits = malloc((size_t)(N * V) * sizeof(float));
    float *wbuf = malloc((size_t)(4 * C * C > V * C ? 4 * C * C : V * C) *
                         sizeof(float));
    float *dres = malloc((size_t)(N * C) * sizeof(float));
    float *dx1 = malloc((size_t)(N * C) * sizeof(float));
    float *dmid = malloc((size_t)(N * C) * sizeof(float));
    float *dbig = malloc((size_t)(N * 4 * C) * sizeof(float));
    float *dqkv = malloc((size_t)(N * 3 * C) * sizeof(float));
    const int n_threads = rlhf_threads(0);
    float *datt = malloc((size_t)(n_threads * T) * sizeof(float));
    int status = 0;
    if (dlogits == NULL || wbuf == NULL || dres == NULL ||
        dx1 == NULL || dmid == NULL || dbig == NULL || dqkv == NULL ||
        datt == NULL) {
        status = RLHF_ENOMEM;
        goto done;
    }
    memset(grads, 0, (size_t)rlhf_gpt_n_params(g) * sizeof(float));
    ptrdiff_t o_hidden, o_lse, o_logits;
    rlhf_gpt_tail_offsets(g, B, T, &o_hidden, &o_lse, &o_logits);
    const float *hidden = acts + o_hidden, *lse = acts + o_lse,
                *logits = acts + o_logits;
    dlogits_rows(dlogits, logits, lse, targets, coef, N, V);
    /* LM head: logits = hidden wte^T */
    weight_grad(mg.wte, dlogits, hidden, N, V, C);
    matmul(dmid, dlogits, mp.wte, NULL, N, V, C, 0);
    layer_norm_backward(dres, mg.lnf_w, mg.lnf_b, dmid,
                        resid_of(g, acts, N, g->n_layer), hidden + N * C,
                        hidden + N * C + N, mp.lnf_w, N, C, 0);
    const float scale = (float)(1.0 / sqrt((double)D));
    for (ptrdiff_t l = g->n_layer - 1; l >= 0; l--) {
        if (rlhf_interrupted()) {
            status = RLHF_EINTR;
            goto done;
        }
        const layer_params lp = layer_of(g, params, l);
        const layer_params lg = layer_of(g, grads, l);
        const layer_acts la = acts_of(g, acts, B, T, l);
        /* out = x1 + act fcproj_w + fcproj_b;  dres is d out */
        column_sums(lg.fcproj_b, dres, N, C);
        weight_grad(lg.fcproj_w, la.act, dres, N, 4 * C, C);
        transpose(wbuf, lp.fcproj_w, 4 * C, C);
        matmul(dbig, dres, wbuf, NULL, N, C, 4 * C, 0);
        gelu_backward_rows(dbig, la.pre, N * 4 * C);
        /* pre = ln2 fc_w + fc_b */
        column_sums(lg.fc_b, dbig, N, 4 * C);
        weight_grad(lg.fc_w, la.ln2, dbig, N, C, 4 * C);
        transpose(wbuf, lp.fc_w, C, 4 * C);
        matmul(dmid, dbig, wbuf, NULL, N, 4 * C, C, 0);
        memcpy(dx1, dres, (size_t)(N * C) * sizeof(float));
        layer_norm_backward(dx1, lg.ln2_w, lg.ln2_b, dmid, la.x1,
                            la.ln2_mean, la.ln2_rstd, lp.ln2_w, N, C, 1);
        /* x1 = x + y proj_w + proj_b */
        column_sums(lg.proj_b, dx1, N, C);
        weight_grad(lg.proj_w, la.y, dx1, N, C, C);
        transpose(wbuf, lp.proj_w, C, C);
        matmul(dmid, dx1, wbuf, NULL, N, C, C, 0); /* dy */
        memset(dqkv, 0, (size_t)(N * 3 * C) * sizeof(float));
        {
            const int team = team_for(B * H * T * T * D);
            (void)team;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
            for (ptrdiff_t bh = 0; bh < B * H; bh++) {
                float *da = datt + THREAD_NUM * T;
                const ptrdiff_t b = bh / H, h = bh % H;
                const float *base = la.qkv + b * T * 3 * C + h * D;
                float *dbase = dqkv + b * T * 3 * C + h * D;
                for (ptrdiff_t t = 0; t < T; t++) {
                    const float *att = la.att + (bh * T + t) * T;
                    const float *dy = dmid + (b * T + t) * C + h * D;
                    const float *q = base + t * 3 * C;
                    float *dq = dbase + t * 3 * C;
                    float dot = 0.0f;
                    for (ptrdiff_t u = 0; u <= t; u++) {
                        const float *v = base + u * 3 * C + 2 * C;
                        float *dv = dbase + u * 3 * C + 2 * C;
                        float s = 0.0f;
                        for (ptrdiff_t d = 0; d < D; d++) {
                            s += dy[d] * v[d];
                            dv[d] += att[u] * dy[d];
                        }
                        da[u] = s;
                        dot += s * att[u];
                    }
                    for (ptrdiff_t u = 0; u <= t; u++) {
                        const float ds = att[u] * (da[u] - dot) * scale;
                        const float *k = base + u * 3 * C + C;
                        float *dk = dbase + u * 3 * C + C;
                        for (ptrdiff_t d = 0; d < D; d++) {
                            dq[d] += ds * k[d];
                            dk[d] += ds * q[d];
                        }
                    }
                }
            }
        }
        /* qkv = ln1 attn_w + attn_b */
        column_sums(lg.attn_b, dqkv, N, 3 * C);
        weight_grad(lg.attn_w, la.ln1, dqkv, N, C, 3 * C);
        transpose(wbuf, lp.attn_w, C, 3 * C);
        matmul(dmid, dqkv, wbuf, NULL, N, 3 * C, C, 0);
        memcpy(dres, dx1, (size_t)(N * C) * sizeof(float));
        layer_norm_backward(dres, lg.ln1_w, lg.ln1_b, dmid,
                            resid_of(g, acts, N, l), la.ln1_mean,
                            la.ln1_rstd, lp.ln1_w, N, C, 1);
    }
    /* the embeddings: rows in order */
    {
        const int team = team_for(4 * N * C);
        (void)team;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
        for (ptrdiff_t c0 = 0; c0 < C; c0 += 16) {
            const ptrdiff_t c1 = c0 + 16 < C ? c0 + 16 : C;
            for (ptrdiff_t n = 0; n < N; n++) {
                float *e = mg.wte + tokens[n] * C, *p = mg.wpe + (n % T) * C;
                for (ptrdiff_t c = c0; c < c1; c++) {
                    e[c] += dres[n * C + c];
                    p[c] += dres[n * C + c];
                }
            }
        }
    }
done:
    free(dlogits);
    free(wbuf);
    free(dres);
    free(dx1);
    free(dmid);
    free(dbig);
    free(dqkv);
    free(datt);
    return status;
}

/* -- AdamW ------------------------------------------------------------ */

/*
 * One AdamW step (Loshchilov & Hutter 2019) on the n parameters, after
 * scaling the gradient down to norm max_norm when it is longer (max_norm
 * <= 0: no clipping); decay[i] != 0 marks the parameters whose weight
 * decays.  step counts from 1.  Returns the gradient's norm before
 * clipping in *norm.
 */
int rlhf_gpt_adamw(float *params, const float *grads, float *m, float *v,
                   const uint8_t *decay, ptrdiff_t n, double lr, double beta1,
                   double beta2, double eps, double weight_decay,
                   int64_t step, double max_norm, double *norm)
{
    double ss = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        ss += (double)grads[i] * (double)grads[i];
    }
    const double gn = sqrt(ss);
    *norm = gn;
    if (!isfinite(gn)) {
        return RLHF_ENONFINITE;
    }
    const float clip = (float)(max_norm > 0.0 && gn > max_norm
                               ? max_norm / gn : 1.0);
    const float b1 = (float)beta1, b2 = (float)beta2;
    const float c1 = (float)(1.0 / (1.0 - pow(beta1, (double)step)));
    const float c2 = (float)(1.0 / (1.0 - pow(beta2, (double)step)));
    const float a = (float)lr, e = (float)eps,
                shrink = (float)(1.0 - lr * weight_decay);
    for (ptrdiff_t i = 0; i < n; i++) {
        const float gr = grads[i] * clip;
        m[i] = b1 * m[i] + (1.0f - b1) * gr;
        v[i] = b2 * v[i] + (1.0f - b2) * gr * gr;
        const float upd = (m[i] * c1) / (sqrtf(v[i] * c2) + e);
        params[i] = (decay[i] ? params[i] * shrink : params[i]) - a * upd;
    }
    return 0;
}

/* -- sampling with a key-value cache ---------------------------------- */

/* the index of the draw u * total in the cumulative weights w[0..V) */
static ptrdiff_t draw(const double *w, ptrdiff_t V, double u)
{
    double total = 0.0;
    for (ptrdiff_t v = 0; v < V; v++) {
        total += w[v];
    }
    const double target = u * total;
    double run = 0.0;
    ptrdiff_t last = 0;
    for (ptrdiff_t v = 0; v < V; v++) {
        if (w[v] > 0.0) {
            run += w[v];
            last = v;
            if (target < run) {
                return v;
            }
        }
    }
    return last;
}

static int cmp_desc(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/*
 * Continue n prompts (prompts (n, P), prompt i its first lengths[i] >= 1
 * tokens) by sampling up to max_new tokens each, stopping after the end
 * token eot or at block_size tokens in all.  Token s of sequence i is
 * drawn with output i * block_size + s of SplitMix64 seeded with seed,
 * from softmax(logits / temperature) over the top_k largest logits
 * (top_k <= 0: all; temperature 0: the first largest logit), among the
 * tokens below n_allowed only (a model may have more tokens than its
 * tokenizer knows; the others are never drawn).  Writes
 * out_tokens (n, block_size) (the prompt, then the sample, then eot up to
 * the end), out_logp (n, block_size) (log p of each sampled token under
 * the model at temperature 1, zero elsewhere) and out_lengths (n).
 */
int rlhf_gpt_generate(const rlhf_gpt_config *g, float *params,
                      const int64_t *prompts, ptrdiff_t n, ptrdiff_t P,
                      const int64_t *lengths, ptrdiff_t max_new,
                      double temperature, ptrdiff_t top_k,
                      ptrdiff_t n_allowed, uint64_t seed, int64_t eot,
                      int64_t *out_tokens, float *out_logp,
                      int64_t *out_lengths)
{
    const ptrdiff_t C = g->n_embd, V = g->vocab_size, H = g->n_head,
                    D = C / H, Tb = g->block_size, L = g->n_layer;
    const model_params mp = params_of(g, params);
    const ptrdiff_t chunk = n < 256 ? (n > 0 ? n : 1) : 256;
    const ptrdiff_t A = n_allowed < 1 || n_allowed > V ? V : n_allowed;
    if (eot >= A) {
        return RLHF_EVALUE;
    }
    for (ptrdiff_t i = 0; i < n; i++) {
        if (lengths[i] < 1 || lengths[i] > P || lengths[i] > Tb) {
            return RLHF_EVALUE;
        }
        for (ptrdiff_t t = 0; t < lengths[i]; t++) {
            if (prompts[i * P + t] < 0 || prompts[i * P + t] >= V) {
                return RLHF_EVALUE;
            }
        }
    }
    float *cache = malloc((size_t)(chunk * L * 2 * Tb * C) * sizeof(float));
    float *x = malloc((size_t)(chunk * C) * sizeof(float));
    float *a = malloc((size_t)(chunk * 4 * C) * sizeof(float));
    float *b = malloc((size_t)(chunk * 4 * C) * sizeof(float));
    float *qkv = malloc((size_t)(chunk * 3 * C) * sizeof(float));
    float *y = malloc((size_t)(chunk * C) * sizeof(float));
    float *stat = malloc((size_t)(2 * chunk) * sizeof(float));
    float *logits = malloc((size_t)(chunk * V) * sizeof(float));
    float *wte_t = malloc((size_t)(V * C) * sizeof(float));
    const int n_threads = rlhf_threads(0);
    float *att = malloc((size_t)(n_threads * Tb) * sizeof(float));
    double *w = malloc((size_t)(n_threads * V) * sizeof(double));
    float *sorted = malloc((size_t)(n_threads * V) * sizeof(float));
    ptrdiff_t *rows = malloc((size_t)chunk * sizeof(ptrdiff_t));
    ptrdiff_t *limit = malloc((size_t)chunk * sizeof(ptrdiff_t));
    int status = 0;
    if (cache == NULL || x == NULL || a == NULL || b == NULL || qkv == NULL
        || y == NULL || stat == NULL || logits == NULL || wte_t == NULL ||
        att == NULL || w == NULL || sorted == NULL || rows == NULL ||
        limit == NULL) {
        status = RLHF_ENOMEM;
        goto done;
    }
    transpose(wte_t, mp.wte, V, C);
    const float scale = (float)(1.0 / sqrt((double)D));
    for (ptrdiff_t i0 = 0; i0 < n; i0 += chunk) {
        const ptrdiff_t m = n - i0 < chunk ? n - i0 : chunk;
        for (ptrdiff_t r = 0; r < m; r++) {
            const ptrdiff_t i = i0 + r;
            int64_t *tok = out_tokens + i * Tb;
            float *lp = out_logp + i * Tb;
            for (ptrdiff_t t = 0; t < Tb; t++) {
                tok[t] = t < lengths[i] ? prompts[i * P + t] : eot;
                lp[t] = 0.0f;
            }
            out_lengths[i] = lengths[i];
            /* the length a sequence may reach; an end token cuts it */
            limit[r] = max_new < Tb - lengths[i] ? lengths[i] + max_new
                                                 : Tb;
        }
        for (ptrdiff_t s = 0; s + 1 < Tb; s++) {
            if (rlhf_interrupted()) {
                status = RLHF_EINTR;
                goto done;
            }
            /* the rows still running: position s is in them and they may
             * grow past s + 1 */
            ptrdiff_t k = 0;
            for (ptrdiff_t r = 0; r < m; r++) {
                const ptrdiff_t i = i0 + r;
                if (s < out_lengths[i] && s + 1 < limit[r]) {
                    rows[k++] = r;
                }
            }
            if (k == 0) {
                break;
            }
            for (ptrdiff_t j = 0; j < k; j++) {
                const ptrdiff_t i = i0 + rows[j];
                const float *e = mp.wte + out_tokens[i * Tb + s] * C,
                            *p = mp.wpe + s * C;
                for (ptrdiff_t c = 0; c < C; c++) {
                    x[j * C + c] = e[c] + p[c];
                }
            }
            for (ptrdiff_t l = 0; l < L; l++) {
                const layer_params lp = layer_of(g, params, l);
                layer_norm(a, stat, stat + chunk, x, lp.ln1_w,
                           lp.ln1_b, k, C);
                matmul(qkv, a, lp.attn_w, lp.attn_b, k, C, 3 * C, 0);
                const int team = team_for(k * H * (s + 1) * D * 4);
                (void)team;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
                for (ptrdiff_t j = 0; j < k; j++) {
                    float *at = att + THREAD_NUM * Tb;
                    /* keys transposed (channel c of position t at
                     * c * Tb + t), values by position */
                    float *kc = cache + ((rows[j] * L + l) * 2) * Tb * C;
                    float *vc = kc + Tb * C;
                    for (ptrdiff_t c = 0; c < C; c++) {
                        kc[c * Tb + s] = qkv[j * 3 * C + C + c];
                    }
                    memcpy(vc + s * C, qkv + j * 3 * C + 2 * C,
                           (size_t)C * sizeof(float));
                    for (ptrdiff_t h = 0; h < H; h++) {
                        attend(at, y + j * C + h * D, qkv + j * 3 * C + h * D,
                               kc + h * D * Tb, Tb, vc + h * D, C, s + 1, D,
                               scale);
                    }
                }
                matmul(x, y, lp.proj_w, NULL, k, C, C, 1);
                for (ptrdiff_t j = 0; j < k; j++) {
                    for (ptrdiff_t c = 0; c < C; c++) {
                        x[j * C + c] += lp.proj_b[c];
                    }
                }
                layer_norm(a, stat, stat + chunk, x, lp.ln2_w,
                           lp.ln2_b, k, C);
                matmul(b, a, lp.fc_w, lp.fc_b, k, C, 4 * C, 0);
                gelu_rows(a, b, k * 4 * C);
                matmul(x, a, lp.fcproj_w, NULL, k, 4 * C, C, 1);
                for (ptrdiff_t j = 0; j < k; j++) {
                    for (ptrdiff_t c = 0; c < C; c++) {
                        x[j * C + c] += lp.fcproj_b[c];
                    }
                }
            }
            layer_norm(a, stat, stat + chunk, x, mp.lnf_w, mp.lnf_b,
                       k, C);
            matmul(logits, a, wte_t, NULL, k, C, V, 0);
            const int team = team_for(k * V * 16);
            (void)team;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
#endif
            for (ptrdiff_t j = 0; j < k; j++) {
                const ptrdiff_t th = THREAD_NUM;
                const ptrdiff_t r = rows[j], i = i0 + r;
                if (s + 1 < lengths[i]) {
                    continue; /* the prompt goes on */
                }
                const float *row = logits + j * V;
                float lse;
                log_normalisers(&lse, row, 1, V);
                float top = row[0];
                ptrdiff_t best = 0;
                for (ptrdiff_t v = 1; v < A; v++) {
                    if (row[v] > top) {
                        top = row[v];
                        best = v;
                    }
                }
                ptrdiff_t pick = best;
                if (temperature > 0.0) {
                    float cut = -INFINITY;
                    if (top_k > 0 && top_k < A) {
                        float *srt = sorted + th * V;
                        memcpy(srt, row, (size_t)A * sizeof(float));
                        qsort(srt, (size_t)A, sizeof(float), cmp_desc);
                        cut = srt[top_k - 1];
                    }
                    double *wt = w + th * V;
                    for (ptrdiff_t v = 0; v < A; v++) {
                        wt[v] = row[v] >= cut
                            ? exp((double)(row[v] - top) / temperature)
                            : 0.0;
                    }
                    pick = draw(wt, A,
                                splitmix_uniform(seed, (uint64_t)(i * Tb + s
                                                                  + 1)));
                }
                out_tokens[i * Tb + s + 1] = pick;
                out_logp[i * Tb + s + 1] = row[pick] - lse;
                out_lengths[i] = s + 2;
                if (pick == eot) {
                    limit[r] = s + 2; /* stop here */
                }
            }
        }
    }
done:
    free(cache);
    free(x);
    free(a);
    free(b);
    free(qkv);
    free(y);
    free(stat);
    free(logits);
    free(wte_t);
    free(att);
    free(w);
    free(sorted);
    free(rows);
    free(limit);
    return status;
}
