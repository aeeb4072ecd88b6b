/* Batch norm (training) -> k x k max-pool (stride k; k = 1: none) -> ReLU, forward and backward, in two passes over
 * the batch norm's input each way, for channels-last tensors on the CPU (float32 or bfloat16 data, float32
 * parameters). glamor_lightning/models/fused_bn.py builds this file with the system's C compiler, loads it with
 * ctypes and says why it exists; this file holds only the arithmetic.
 *
 * Layout: x is [N, H, W, C] in memory (channels-last); y and the window's argmax (0 .. k*k-1 in scan order, a byte)
 * are [N, H/k, W/k, C] (floor: rows and columns no window covers get no pooled gradient). The inner loops run over
 * the C channels of a row in float, each element converted where it is read or written, with the data type a
 * constant (each entry point has a copy of the loops per type), so that the compiler vectorises them; a loop that it
 * did not vectorise is split in two over a small float buffer. The loops over a row's channels get copies with the
 * encoders' channel counts and 2x2 windows as constants (`SPECIALISED`): 1.2-1.26x the kernel in bf16 at 32
 * channels, the same bits (and the backward's at 512 bits from 64 channels on). Sums accumulate in float over blocks of rows and in double across blocks and threads.
 * OpenMP runs on the runtime the process already loaded (torch's libgomp has the same soname), with the thread count
 * torch uses, passed in. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_C 2048
#define MAX_K 4
#define BLOCK 64 /* rows summed in float before they are added in double */

/* one element as a float; bf16 is the upper half of a float. Inlined in loops where `bf16` is invariant, so the
 * compiler makes a loop for each type and vectorises both */
static inline __attribute__((always_inline)) float ld(const void *restrict p, int64_t i, int bf16) {
    if (!bf16) return ((const float *)p)[i];
    uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* a float to bf16's bits, rounded to nearest even as torch's c10::BFloat16; a NaN stays a NaN */
static inline __attribute__((always_inline)) uint16_t bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? 0x7fc0u : r);
}

static inline __attribute__((always_inline)) void st(void *restrict p, int64_t i, float v, int bf16) {
    if (bf16)
        ((uint16_t *)p)[i] = bf16_bits(v);
    else
        ((float *)p)[i] = v;
}

/* the float as the data type stores it (the pooling compares what torch's batch norm would have stored); in 32-bit
 * operations only, which the compiler vectorises with the float arithmetic around them */
static inline __attribute__((always_inline)) float rounded(float v, const int bf16) {
    if (!bf16) return v;
    uint32_t u;
    memcpy(&u, &v, 4);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    r = (u & 0x7fffffffu) > 0x7f800000u ? 0x7fc00000u : r;
    float f;
    memcpy(&f, &r, 4);
    return f;
}

/* SPECIALISED(call, C, k): `call` with the channel count and the pool side as constants where they are the
 * encoders' (32-256 channels, 2x2 windows), so that the compiler unrolls each loop over a row's C channels into a few
 * whole vectors, without the checks and remainders of a loop of unknown length; otherwise as they are */
#define SPECIALISED(call, C, k)                                                                                        \
    do {                                                                                                               \
        if ((k) == 2 && (C) == 32) call(32, 2);                                                                        \
        else if ((k) == 2 && (C) == 64) call(64, 2);                                                                   \
        else if ((k) == 2 && (C) == 128) call(128, 2);                                                                 \
        else if ((k) == 2 && (C) == 256) call(256, 2);                                                                 \
        else call(C, k);                                                                                               \
    } while (0)

/* the per-channel mean and biased variance of x ([rows, C]), shifted by the first row for a stable variance */
static inline __attribute__((always_inline)) void channel_stats(const void *restrict x, const int bf16, int64_t rows, int64_t C, int threads, double *mean,
                          double *var) {
    double *part = calloc((size_t)threads * 2 * C, sizeof(double));
    float shift[MAX_C];
    for (int64_t c = 0; c < C; c++) shift[c] = ld(x, c, bf16);
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int64_t lo = rows * t / nt, hi = rows * (t + 1) / nt;
        double *s1 = part + (size_t)t * 2 * C, *s2 = s1 + C;
        float a1[MAX_C], a2[MAX_C];
        for (int64_t r0 = lo; r0 < hi; r0 += BLOCK) {
            int64_t r1 = r0 + BLOCK < hi ? r0 + BLOCK : hi;
            for (int64_t c = 0; c < C; c++) a1[c] = a2[c] = 0.f;
            for (int64_t r = r0; r < r1; r++) {
                for (int64_t c = 0; c < C; c++) {
                    float d = ld(x, r * C + c, bf16) - shift[c];
                    a1[c] += d;
                    a2[c] += d * d;
                }
            }
            for (int64_t c = 0; c < C; c++) {
                s1[c] += a1[c];
                s2[c] += a2[c];
            }
        }
    }
    for (int64_t c = 0; c < C; c++) {
        double t1 = 0, t2 = 0;
        for (int t = 0; t < threads; t++) {
            t1 += part[(size_t)t * 2 * C + c];
            t2 += part[(size_t)t * 2 * C + C + c];
        }
        double m = t1 / rows, v = t2 / rows - m * m;
        mean[c] = shift[c] + m;
        var[c] = v > 0 ? v : 0;
    }
    free(part);
}

/* one row of pooled outputs, (n, oh) = divmod(nh, H / k): each window's normalised values rounded to the data type,
 * their maximum and where it was, its ReLU */
static inline __attribute__((always_inline)) void pool_row(const void *restrict x, void *restrict y,
                                                           uint8_t *restrict argmax, const int bf16, int64_t nh,
                                                           int64_t H, int64_t W, int64_t C, int k,
                                                           const float *restrict scale, const float *restrict offset) {
    int64_t Ho = H / k, Wo = W / k, n = nh / Ho, oh = nh % Ho;
    float best[MAX_C], arg[MAX_C], v[MAX_C];
    for (int64_t ow = 0; ow < Wo; ow++) {
        int64_t cell = (nh * Wo + ow) * C, in = ((n * H + oh * k) * W + ow * k) * C;
        for (int64_t c = 0; c < C; c++) {
            best[c] = rounded(ld(x, in + c, bf16) * scale[c] + offset[c], bf16);
            arg[c] = 0.f;
        }
        for (int p = 1; p < k * k; p++) {
            int64_t at = in + ((p / k) * W + p % k) * C;
            float fp = (float)p;
            /* two loops, each of which the compiler vectorises (in one it did not) */
            for (int64_t c = 0; c < C; c++) v[c] = rounded(ld(x, at + c, bf16) * scale[c] + offset[c], bf16);
            for (int64_t c = 0; c < C; c++) {
                int take = (v[c] > best[c]) | (v[c] != v[c]); /* as torch's pooling: a later NaN wins */
                best[c] = take ? v[c] : best[c];
                arg[c] = take ? fp : arg[c];
            }
        }
        for (int64_t c = 0; c < C; c++) {
            st(y, cell + c, best[c] > 0.f || best[c] != best[c] ? best[c] : 0.f, bf16);
            argmax[cell + c] = (uint8_t)arg[c];
        }
    }
}

/* the forward's row in a function of its own per type, compiled for 512-bit vectors where the processor has them
 * (GCC otherwise prefers 256): 1.15-1.32x the forward (A/B of the two builds, alternated, 2026-12-08); the backward
 * ran slower that way with its general loops, and at 32 channels still does (its copies below). An attribute on the
 * caller does not reach OpenMP's outlined loop. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
#define WIDE __attribute__((noinline, target("prefer-vector-width=512")))
#else
#define WIDE __attribute__((noinline))
#endif
static WIDE void pool_row_bf16(const void *x, void *y, uint8_t *argmax, int64_t nh, int64_t H, int64_t W, int64_t C,
                               int k, const float *scale, const float *offset) {
#define ROW(c_, k_) pool_row(x, y, argmax, 1, nh, H, W, c_, k_, scale, offset)
    SPECIALISED(ROW, C, k);
#undef ROW
}
static WIDE void pool_row_f32(const void *x, void *y, uint8_t *argmax, int64_t nh, int64_t H, int64_t W, int64_t C,
                              int k, const float *scale, const float *offset) {
#define ROW(c_, k_) pool_row(x, y, argmax, 0, nh, H, W, c_, k_, scale, offset)
    SPECIALISED(ROW, C, k);
#undef ROW
}

static inline __attribute__((always_inline)) int forward(
    const void *restrict x, void *restrict y, uint8_t *restrict argmax, const int bf16, int64_t N, int64_t H,
    int64_t W, int64_t C, int k, const float *weight, const float *bias, float *running_mean, float *running_var,
    double momentum, double eps, float *save_mean, float *save_invstd, int threads) {
    if (C > MAX_C || k < 1 || k > MAX_K || N * H * W < 2 || H < k || W < k) return 1;
    int64_t rows = N * H * W, Ho = H / k;
    double mean[MAX_C], var[MAX_C];
    float scale[MAX_C], offset[MAX_C];
    channel_stats(x, bf16, rows, C, threads, mean, var);
    for (int64_t c = 0; c < C; c++) {
        double invstd = 1.0 / sqrt(var[c] + eps);
        save_mean[c] = (float)mean[c];
        save_invstd[c] = (float)invstd;
        running_mean[c] = (float)(momentum * mean[c] + (1 - momentum) * running_mean[c]);
        running_var[c] = (float)(momentum * var[c] * rows / (rows - 1) + (1 - momentum) * running_var[c]);
        scale[c] = (float)(weight[c] * invstd);
        offset[c] = (float)(bias[c] - mean[c] * weight[c] * invstd);
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t nh = 0; nh < N * Ho; nh++) {
        if (bf16)
            pool_row_bf16(x, y, argmax, nh, H, W, C, k, scale, offset);
        else
            pool_row_f32(x, y, argmax, nh, H, W, C, k, scale, offset);
    }
    return 0;
}

/* backward pass 1 over the pooled cells [lo, hi): the batch norm's two sums, of the gradient and of it times the
 * centred input, over the windows' maxima alone (the gradient is zero everywhere else), added to s1[0..C) and
 * s1[C..2C); the ReLU's backward as torch's: zero where y <= 0 */
static inline __attribute__((always_inline)) void grad_sums(const void *restrict x, const void *restrict y,
                                                            const uint8_t *restrict argmax, const void *restrict gy,
                                                            const int bf16, int64_t lo, int64_t hi, int64_t H,
                                                            int64_t W, int64_t C, int k,
                                                            const float *restrict save_mean, double *restrict s1) {
    int64_t Ho = H / k, Wo = W / k;
    double *s2 = s1 + C;
    float a1[MAX_C], a2[MAX_C], at[MAX_C];
    for (int64_t i0 = lo; i0 < hi; i0 += BLOCK) {
        int64_t i1 = i0 + BLOCK < hi ? i0 + BLOCK : hi;
        for (int64_t c = 0; c < C; c++) a1[c] = a2[c] = 0.f;
        for (int64_t i = i0; i < i1; i++) {
            int64_t n = i / (Ho * Wo), oh = (i / Wo) % Ho, ow = i % Wo, cell = i * C;
            int64_t in = ((n * H + oh * k) * W + ow * k) * C;
            for (int64_t c = 0; c < C; c++) at[c] = ld(x, in + c, bf16);
            for (int q = 1; q < k * k; q++) { /* the input at each channel's maximum, by selection */
                int64_t from = in + ((q / k) * W + q % k) * C;
                for (int64_t c = 0; c < C; c++) at[c] = argmax[cell + c] == q ? ld(x, from + c, bf16) : at[c];
            }
            for (int64_t c = 0; c < C; c++) {
                float g = ld(y, cell + c, bf16) <= 0.f ? 0.f : ld(gy, cell + c, bf16);
                a1[c] += g;
                a2[c] += g * (at[c] - save_mean[c]);
            }
        }
        for (int64_t c = 0; c < C; c++) {
            s1[c] += a1[c];
            s2[c] += a2[c];
        }
    }
}

/* backward pass 2, one row of windows, (n, oh) = divmod(nh, H / k): every input's gradient, A * dy + B * x + D,
 * with the pooled gradient only where the window's maximum was */
static inline __attribute__((always_inline)) void grad_row(const void *restrict x, const void *restrict y,
                                                           const uint8_t *restrict argmax, const void *restrict gy,
                                                           void *restrict gx, const int bf16, int64_t nh, int64_t H,
                                                           int64_t W, int64_t C, int k, const float *restrict A,
                                                           const float *restrict B, const float *restrict D) {
    int64_t Ho = H / k, Wo = W / k, n = nh / Ho, oh = nh % Ho;
    float g[MAX_C];
    for (int64_t ow = 0; ow < Wo; ow++) {
        int64_t cell = (nh * Wo + ow) * C, in = ((n * H + oh * k) * W + ow * k) * C;
        for (int64_t c = 0; c < C; c++) g[c] = ld(y, cell + c, bf16) <= 0.f ? 0.f : A[c] * ld(gy, cell + c, bf16);
        for (int q = 0; q < k * k; q++) {
            int64_t at = in + ((q / k) * W + q % k) * C;
            for (int64_t c = 0; c < C; c++) {
                float dy = argmax[cell + c] == q ? g[c] : 0.f;
                st(gx, at + c, dy + B[c] * ld(x, at + c, bf16) + D[c], bf16);
            }
        }
    }
}

/* the backward's loops per type, specialised, each at the compiler's default vector width and at 512 bits: with 64
 * channels or more the 512-bit copies ran 1.4-1.7x faster, at 32 channels 0.97-0.99x (C level, both alternated,
 * 2026-12-08) */
#define SUMS_BF16(c_, k_) grad_sums(x, y, argmax, gy, 1, lo, hi, H, W, c_, k_, save_mean, s1)
#define SUMS_F32(c_, k_) grad_sums(x, y, argmax, gy, 0, lo, hi, H, W, c_, k_, save_mean, s1)
#define ROW_BF16(c_, k_) grad_row(x, y, argmax, gy, gx, 1, nh, H, W, c_, k_, A, B, D)
#define ROW_F32(c_, k_) grad_row(x, y, argmax, gy, gx, 0, nh, H, W, c_, k_, A, B, D)
#define BACKWARD_LOOPS(attr, suffix)                                                                                   \
    static attr void grad_sums_bf16##suffix(const void *x, const void *y, const uint8_t *argmax, const void *gy,      \
                                            int64_t lo, int64_t hi, int64_t H, int64_t W, int64_t C, int k,          \
                                            const float *save_mean, double *s1) {                                    \
        SPECIALISED(SUMS_BF16, C, k);                                                                                 \
    }                                                                                                                  \
    static attr void grad_sums_f32##suffix(const void *x, const void *y, const uint8_t *argmax, const void *gy,       \
                                           int64_t lo, int64_t hi, int64_t H, int64_t W, int64_t C, int k,           \
                                           const float *save_mean, double *s1) {                                     \
        SPECIALISED(SUMS_F32, C, k);                                                                                  \
    }                                                                                                                  \
    static attr void grad_row_bf16##suffix(const void *x, const void *y, const uint8_t *argmax, const void *gy,       \
                                           void *gx, int64_t nh, int64_t H, int64_t W, int64_t C, int k,             \
                                           const float *A, const float *B, const float *D) {                         \
        SPECIALISED(ROW_BF16, C, k);                                                                                  \
    }                                                                                                                  \
    static attr void grad_row_f32##suffix(const void *x, const void *y, const uint8_t *argmax, const void *gy,        \
                                          void *gx, int64_t nh, int64_t H, int64_t W, int64_t C, int k,              \
                                          const float *A, const float *B, const float *D) {                          \
        SPECIALISED(ROW_F32, C, k);                                                                                   \
    }
BACKWARD_LOOPS(__attribute__((noinline)), )
BACKWARD_LOOPS(WIDE, _wide)
#undef BACKWARD_LOOPS

static inline __attribute__((always_inline)) int backward(
    const void *restrict x, const void *restrict y, const uint8_t *restrict argmax, const void *restrict gy,
    void *restrict gx, const int bf16, int64_t N, int64_t H, int64_t W, int64_t C, int k, const float *weight,
    const float *save_mean, const float *save_invstd, float *grad_weight, float *grad_bias, int threads) {
    if (C > MAX_C || k < 1 || k > MAX_K) return 1;
    int64_t rows = N * H * W, Ho = H / k, Wo = W / k, cells = N * Ho * Wo;
    double *part = calloc((size_t)threads * 2 * C, sizeof(double));
    /* pass 1: the batch norm's two sums, of the gradient and of it times the centred input, over the windows'
     * maxima alone (the gradient is zero everywhere else); the ReLU's backward as torch's: zero where y <= 0 */
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        double *s1 = part + (size_t)t * 2 * C;
        int64_t lo = cells * t / nt, hi = cells * (t + 1) / nt;
        if (bf16)
            (C >= 64 ? grad_sums_bf16_wide : grad_sums_bf16)(x, y, argmax, gy, lo, hi, H, W, C, k, save_mean, s1);
        else
            (C >= 64 ? grad_sums_f32_wide : grad_sums_f32)(x, y, argmax, gy, lo, hi, H, W, C, k, save_mean, s1);
    }
    /* dx = w * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)) = A * dy + B * x + D, per channel */
    float A[MAX_C], B[MAX_C], D[MAX_C];
    for (int64_t c = 0; c < C; c++) {
        double sg = 0, sgx = 0;
        for (int t = 0; t < threads; t++) {
            sg += part[(size_t)t * 2 * C + c];
            sgx += part[(size_t)t * 2 * C + C + c];
        }
        double invstd = save_invstd[c], a = weight[c] * invstd, b = -a * invstd * invstd * sgx / rows;
        grad_bias[c] = (float)sg;
        grad_weight[c] = (float)(sgx * invstd);
        A[c] = (float)a;
        B[c] = (float)b;
        D[c] = (float)(-a * sg / rows - b * save_mean[c]);
    }
    free(part);
    /* pass 2: every input's gradient, window by window; the pooled gradient only where the window's maximum was */
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t nh = 0; nh < N * Ho; nh++) {
        if (bf16)
            (C >= 64 ? grad_row_bf16_wide : grad_row_bf16)(x, y, argmax, gy, gx, nh, H, W, C, k, A, B, D);
        else
            (C >= 64 ? grad_row_f32_wide : grad_row_f32)(x, y, argmax, gy, gx, nh, H, W, C, k, A, B, D);
    }
    /* the rows and columns no window covers (floor pooling of an odd size): no pooled gradient */
    if (Ho * k < H || Wo * k < W) {
#pragma omp parallel for num_threads(threads) schedule(static)
        for (int64_t nh = 0; nh < N * H; nh++) {
            for (int64_t w = (nh % H) < Ho * k ? Wo * k : 0; w < W; w++) {
                int64_t at = (nh * W + w) * C;
                for (int64_t c = 0; c < C; c++) st(gx, at + c, B[c] * ld(x, at + c, bf16) + D[c], bf16);
            }
        }
    }
    return 0;
}

/* inputs with more channels than this are refused (the entry points return 1) and the Python side does not call
 * them */
int bn_pool_relu_max_channels(void) { return MAX_C; }

/* the exported entry points: each type gets its own copy of the loops (`bf16` a constant in each) */
int bn_pool_relu_forward(const void *x, void *y, uint8_t *argmax, int bf16, int64_t N, int64_t H, int64_t W,
                         int64_t C, int k, const float *weight, const float *bias, float *running_mean,
                         float *running_var, double momentum, double eps, float *save_mean, float *save_invstd,
                         int threads) {
    if (bf16)
        return forward(x, y, argmax, 1, N, H, W, C, k, weight, bias, running_mean, running_var, momentum, eps,
                       save_mean, save_invstd, threads);
    return forward(x, y, argmax, 0, N, H, W, C, k, weight, bias, running_mean, running_var, momentum, eps, save_mean,
                   save_invstd, threads);
}

int bn_pool_relu_backward(const void *x, const void *y, const uint8_t *argmax, const void *gy, void *gx, int bf16,
                          int64_t N, int64_t H, int64_t W, int64_t C, int k, const float *weight,
                          const float *save_mean, const float *save_invstd, float *grad_weight, float *grad_bias,
                          int threads) {
    if (bf16)
        return backward(x, y, argmax, gy, gx, 1, N, H, W, C, k, weight, save_mean, save_invstd, grad_weight, grad_bias,
                        threads);
    return backward(x, y, argmax, gy, gx, 0, N, H, W, C, k, weight, save_mean, save_invstd, grad_weight, grad_bias,
                    threads);
}
