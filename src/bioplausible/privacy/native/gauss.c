/* Fast exact-distribution Gaussian noise for DP-SGD on CPUs (see bioplausible/privacy/noise.py).
 *
 * Bits: LANES independent xoshiro128++ generators (Blackman & Vigna), advanced in lock step so the
 * compiler vectorises them (16 lanes per AVX-512 register). Each lane is seeded from splitmix64 of the
 * user's seed, as the xoshiro authors recommend; the state is 4 x LANES uint32 words, saved and restored
 * by the caller, so a run resumes on the same stream.
 *
 * Normals: Box-Muller, two 32-bit words -> two normals.
 *   u1 = (a + 0.5) * 2^-32 in (0, 1)          (all 32 bits: the largest radius is sqrt(2*32*ln 2) = 6.66,
 *                                              where a 24-bit uniform such as torch's stops at 5.77)
 *   r  = sqrt(-2 ln u1),  theta = 2 pi * (b * 2^-32)
 *   z0 = r cos theta,  z1 = r sin theta
 * ln and sin/cos are evaluated with the polynomials below (float32, relative error ~1e-7, i.e. within a
 * few units in the last place; tested against float64 libm in tests/test_noise.py), written branch-free so
 * a whole block of lanes runs in SIMD registers.
 *
 * Layout: one block = 2*LANES normals; lane j of a block writes out[j] (cos) and out[LANES + j] (sin).
 * A call fills n values with ceil(n / (2*LANES)) blocks; the normals of a final partial block past n are
 * discarded, so the state after a call depends only on n (no hidden buffer to checkpoint).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define LANES 64
#define BLOCK (2 * LANES)

static inline uint32_t rotl32(uint32_t x, int k) { return (x << k) | (x >> (32 - k)); }

static inline uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

int bp_gauss_lanes(void) { return LANES; }

/* state: s[0][LANES], s[1][LANES], s[2][LANES], s[3][LANES] */
void bp_gauss_seed(uint32_t *state, uint64_t seed) {
    uint64_t x = seed;
    for (int j = 0; j < LANES; j++) {
        uint64_t a = splitmix64(&x), b = splitmix64(&x);
        state[j] = (uint32_t)a;
        state[LANES + j] = (uint32_t)(a >> 32);
        state[2 * LANES + j] = (uint32_t)b;
        state[3 * LANES + j] = (uint32_t)(b >> 32);
        if ((a | b) == 0) state[j] = 1; /* the all-zero state is the one fixed point */
    }
}

/* One xoshiro128++ output per lane into out[LANES]. */
static inline void next_block(uint32_t *restrict s0, uint32_t *restrict s1, uint32_t *restrict s2,
                              uint32_t *restrict s3, uint32_t *restrict out) {
#pragma GCC ivdep
    for (int j = 0; j < LANES; j++) {
        uint32_t a = s0[j], b = s1[j], c = s2[j], d = s3[j];
        out[j] = rotl32(a + d, 7) + a;
        uint32_t t = b << 9;
        c ^= a;
        d ^= b;
        b ^= c;
        a ^= d;
        c ^= t;
        d = rotl32(d, 11);
        s0[j] = a; s1[j] = b; s2[j] = c; s3[j] = d;
    }
}

/* Raw 32-bit words (for tests against a reference implementation): n words, lane-major per block. */
void bp_gauss_bits(uint32_t *out, int64_t n, uint32_t *state) {
    uint32_t buf[LANES];
    for (int64_t i = 0; i < n; i += LANES) {
        next_block(state, state + LANES, state + 2 * LANES, state + 3 * LANES, buf);
        int64_t m = n - i < LANES ? n - i : LANES;
        memcpy(out + i, buf, (size_t)m * sizeof(uint32_t));
    }
}

static inline float bits_to_float(uint32_t u) { union { uint32_t u; float f; } v = {.u = u}; return v.f; }
static inline uint32_t float_to_bits(float f) { union { float f; uint32_t u; } v = {.f = f}; return v.u; }

/* ln(x) for normal positive finite float x. x = m 2^e with m in [sqrt(1/2), sqrt(2)),
 * ln m = 2 atanh(t), t = (m - 1)/(m + 1), |t| <= 0.1716: odd series to t^9 (next term < 4e-10). */
static inline float ln_pos(float x) {
    uint32_t ix = float_to_bits(x);
    ix += 0x3f800000u - 0x3f3504f3u; /* shift so that m >= sqrt(1/2) maps to exponent 0 */
    int32_t e = (int32_t)(ix >> 23) - 0x7f;
    ix = (ix & 0x007fffffu) + 0x3f3504f3u;
    float m = bits_to_float(ix);
    float t = (m - 1.0f) / (m + 1.0f);
    float t2 = t * t;
    float p = 2.0f + t2 * (0.66666667f + t2 * (0.4f + t2 * (0.28571429f + t2 * 0.22222222f)));
    return (float)e * 0.69314718f + t * p;
}

/* sin and cos on [-pi/4, pi/4] (Taylor to the th^9 / th^10 terms; the next are < 2e-9); normal_block
 * reduces 2 pi v to that range with the quadrant k = round(4v) in integer arithmetic. */
static inline float sin_poly(float th) {
    float t2 = th * th;
    return th * (1.0f + t2 * (-0.16666667f + t2 * (8.3333333e-3f + t2 * (-1.9841270e-4f + t2 * 2.7557319e-6f))));
}
static inline float cos_poly(float th) {
    float t2 = th * th;
    return 1.0f + t2 * (-0.5f + t2 * (4.1666667e-2f + t2 * (-1.3888889e-3f + t2 * (2.4801587e-5f - t2 * 2.7557319e-7f))));
}

static inline void normal_block(uint32_t *state, float scale, float *restrict out) {
    uint32_t a[LANES], b[LANES];
    next_block(state, state + LANES, state + 2 * LANES, state + 3 * LANES, a);
    next_block(state, state + LANES, state + 2 * LANES, state + 3 * LANES, b);
#pragma GCC ivdep
    for (int j = 0; j < LANES; j++) {
        float u1 = ((float)a[j] + 0.5f) * 2.3283064e-10f; /* (a + 1/2) 2^-32; rounds to at most 1 */
        float r = sqrtf(-2.0f * ln_pos(u1)) * scale;
        /* v = m 2^-24 with m = top 24 bits of b; 4v = m 2^-22: quadrant k = round(4v), in integers */
        int32_t m = (int32_t)(b[j] >> 8);
        int32_t k = (m + (1 << 21)) >> 22;
        int32_t q = k & 3;
        float th = (float)(m - (k << 22)) * 3.7450703e-7f; /* (4v - k) pi/2, |th| <= pi/4 */
        float s = sin_poly(th), c = cos_poly(th);
        float cq = (q == 0) ? c : (q == 1) ? -s : (q == 2) ? -c : s;
        float sq = (q == 0) ? s : (q == 1) ? c : (q == 2) ? -s : -c;
        out[j] = r * cq;
        out[LANES + j] = r * sq;
    }
}

/* out[0:n] = scale * N(0, 1) draws. */
void bp_gauss_fill(float *out, int64_t n, float scale, uint32_t *state) {
    int64_t i = 0;
    for (; i + BLOCK <= n; i += BLOCK) normal_block(state, scale, out + i);
    if (i < n) {
        float buf[BLOCK];
        normal_block(state, scale, buf);
        memcpy(out + i, buf, (size_t)(n - i) * sizeof(float));
    }
}

/* out[0:n] += scale * N(0, 1) draws (the same draws bp_gauss_fill would write). */
void bp_gauss_add(float *out, int64_t n, float scale, uint32_t *state) {
    float buf[BLOCK];
    for (int64_t i = 0; i < n; i += BLOCK) {
        normal_block(state, scale, buf);
        int64_t m = n - i < BLOCK ? n - i : BLOCK;
        for (int64_t j = 0; j < m; j++) out[i + j] += buf[j];
    }
}
