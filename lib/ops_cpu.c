/*
 * ops_cpu: the reference operators. Clear loops first; the matmul alone is a
 * blocked GEMM (packed panels, a register-tiled AVX2 micro-kernel with a
 * plain C twin) because every later CPU stage spends its time there. Outputs
 * are written by exactly one thread in a fixed order, so results do not
 * depend on the thread count.
 */
#include "ops_cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#ifdef _OPENMP
#include <omp.h>
#endif

// ----------------------------------------------------------------------------
// matmul: a blocked GEMM. Both directions compute C (n, N) = A (n, K) B (K, N)
// (+ bias): the forward with A = x, K = IC, N = OC, B = w^T; the backward with
// A = dout, K = OC, N = IC, B = w. A panel of B (MM_KC x at most MM_NC) is
// dequantised and packed once per call, then serves every row of A; a
// micro-kernel keeps an MM_MR x MM_NR tile of C in registers. Each element of
// C is the one chain c = c + a_k b_k over k = 0, 1, ..., K-1 in order, then
// + bias: fused multiply-adds where the CPU has AVX2 and FMA, a multiply and
// an add elsewhere (or with DASH_MATMUL_PORTABLE=1 in the environment). So
// the bits do not depend on n, on the tiling or on the thread count.

#define MM_MR 6    /* rows of a register tile of C */
#define MM_NR 16   /* columns of a register tile of C: two AVX vectors */
#define MM_KC 256  /* k block; a multiple of every quantisation block */
#define MM_MC 96   /* rows of A packed together; a multiple of MM_MR */
#define MM_NC 256  /* most columns of B per packed panel; a multiple of 256 */
/* (n + 8) K N below which a matmul stays on one thread (dequantising a weight
 * costs about what 8 rows' multiply-adds with it do): a parallel region
 * costs up to a millisecond on a loaded machine */
#define MM_PAR_WORK (1 << 22)

/* mm_tile_fn: c (mr, MM_NR), row stride ldc, = (first ? 0 : c) + a b, then
 * + bias (MM_NR) unless bias is NULL; a packed (kc, MM_MR), b (kc, MM_NR) */
typedef void (*mm_tile_fn)(int mr, int kc, const float *a, const float *b, float *c, size_t ldc, int first,
                           const float *bias);

static void mm_tile_c(int mr, int kc, const float *a, const float *b, float *c, size_t ldc, int first,
                      const float *bias)
{
	float acc[MM_MR][MM_NR];
	for (int i = 0; i < mr; i++)
		for (int j = 0; j < MM_NR; j++)
			acc[i][j] = first ? 0 : c[i * ldc + j];
	for (int k = 0; k < kc; k++)
		for (int i = 0; i < mr; i++)
			for (int j = 0; j < MM_NR; j++)
				acc[i][j] += a[k * MM_MR + i] * b[k * MM_NR + j];
	for (int i = 0; i < mr; i++)
		for (int j = 0; j < MM_NR; j++)
			c[i * ldc + j] = bias ? acc[i][j] + bias[j] : acc[i][j];
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* the same with AVX2 and FMA, mr a constant once inlined */
__attribute__((target("avx2,fma"), always_inline))
static inline void mm_tile_avx2_mr(const int mr, int kc, const float *a, const float *b, float *c, size_t ldc,
                                   int first, const float *bias)
{
	__m256 c0[MM_MR], c1[MM_MR];
	#pragma GCC unroll 6
	for (int i = 0; i < mr; i++) {
		c0[i] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(c + i * ldc);
		c1[i] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(c + i * ldc + 8);
	}
	for (int k = 0; k < kc; k++, a += MM_MR, b += MM_NR) {
		__m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
		#pragma GCC unroll 6
		for (int i = 0; i < mr; i++) {
			__m256 ai = _mm256_broadcast_ss(a + i);
			c0[i] = _mm256_fmadd_ps(ai, b0, c0[i]);
			c1[i] = _mm256_fmadd_ps(ai, b1, c1[i]);
		}
	}
	if (bias) {
		__m256 bb0 = _mm256_loadu_ps(bias), bb1 = _mm256_loadu_ps(bias + 8);
		#pragma GCC unroll 6
		for (int i = 0; i < mr; i++)
			c0[i] = _mm256_add_ps(c0[i], bb0), c1[i] = _mm256_add_ps(c1[i], bb1);
	}
	#pragma GCC unroll 6
	for (int i = 0; i < mr; i++) {
		_mm256_storeu_ps(c + i * ldc, c0[i]);
		_mm256_storeu_ps(c + i * ldc + 8, c1[i]);
	}
}

__attribute__((target("avx2,fma")))
static void mm_tile_avx2(int mr, int kc, const float *a, const float *b, float *c, size_t ldc, int first,
                         const float *bias)
{
	switch (mr) {
	case 1: mm_tile_avx2_mr(1, kc, a, b, c, ldc, first, bias); break;
	case 2: mm_tile_avx2_mr(2, kc, a, b, c, ldc, first, bias); break;
	case 3: mm_tile_avx2_mr(3, kc, a, b, c, ldc, first, bias); break;
	case 4: mm_tile_avx2_mr(4, kc, a, b, c, ldc, first, bias); break;
	case 5: mm_tile_avx2_mr(5, kc, a, b, c, ldc, first, bias); break;
	default: mm_tile_avx2_mr(MM_MR, kc, a, b, c, ldc, first, bias); break;
	}
}
#endif

/* mm_transpose_fn: bp (kc, MM_NR) = the rows (MM_NR, kc) transposed */
typedef void (*mm_transpose_fn)(float *bp, const float *const *rows, int kc);

static void mm_transpose_c(float *bp, const float *const *rows, int kc)
{
	for (int k = 0; k < kc; k++)
		for (int j = 0; j < MM_NR; j++)
			bp[k * MM_NR + j] = rows[j][k];
}

#if defined(__x86_64__) && defined(__GNUC__)
/* the same by 8 x 8 blocks in registers */
__attribute__((target("avx2")))
static void mm_transpose_avx2(float *bp, const float *const *rows, int kc)
{
	int k = 0;
	for (; k + 8 <= kc; k += 8)
		for (int h = 0; h < MM_NR; h += 8) {
			const float *const *r = rows + h;
			__m256 t0 = _mm256_unpacklo_ps(_mm256_loadu_ps(r[0] + k), _mm256_loadu_ps(r[1] + k));
			__m256 t1 = _mm256_unpackhi_ps(_mm256_loadu_ps(r[0] + k), _mm256_loadu_ps(r[1] + k));
			__m256 t2 = _mm256_unpacklo_ps(_mm256_loadu_ps(r[2] + k), _mm256_loadu_ps(r[3] + k));
			__m256 t3 = _mm256_unpackhi_ps(_mm256_loadu_ps(r[2] + k), _mm256_loadu_ps(r[3] + k));
			__m256 t4 = _mm256_unpacklo_ps(_mm256_loadu_ps(r[4] + k), _mm256_loadu_ps(r[5] + k));
			__m256 t5 = _mm256_unpackhi_ps(_mm256_loadu_ps(r[4] + k), _mm256_loadu_ps(r[5] + k));
			__m256 t6 = _mm256_unpacklo_ps(_mm256_loadu_ps(r[6] + k), _mm256_loadu_ps(r[7] + k));
			__m256 t7 = _mm256_unpackhi_ps(_mm256_loadu_ps(r[6] + k), _mm256_loadu_ps(r[7] + k));
			__m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xee);
			__m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xee);
			__m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xee);
			__m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xee);
			float *d = bp + (size_t)k * MM_NR + h;
			_mm256_store_ps(d + 0 * MM_NR, _mm256_permute2f128_ps(s0, s4, 0x20));
			_mm256_store_ps(d + 1 * MM_NR, _mm256_permute2f128_ps(s1, s5, 0x20));
			_mm256_store_ps(d + 2 * MM_NR, _mm256_permute2f128_ps(s2, s6, 0x20));
			_mm256_store_ps(d + 3 * MM_NR, _mm256_permute2f128_ps(s3, s7, 0x20));
			_mm256_store_ps(d + 4 * MM_NR, _mm256_permute2f128_ps(s0, s4, 0x31));
			_mm256_store_ps(d + 5 * MM_NR, _mm256_permute2f128_ps(s1, s5, 0x31));
			_mm256_store_ps(d + 6 * MM_NR, _mm256_permute2f128_ps(s2, s6, 0x31));
			_mm256_store_ps(d + 7 * MM_NR, _mm256_permute2f128_ps(s3, s7, 0x31));
		}
	for (; k < kc; k++)
		for (int j = 0; j < MM_NR; j++)
			bp[k * MM_NR + j] = rows[j][k];
}
#endif

#if defined(__x86_64__) && defined(__GNUC__)
/* mm_convert_avx2 is convert_to_f32 with the teacher's q5_0, and q8_0 and
 * bf16, in vector registers: the same float operations on each value (d q,
 * then + 0 as convert_to_f32 adds the q5_0 minimum), so the same bits */
__attribute__((target("avx2")))
static void mm_convert_avx2(float *dst, const void *src, DType t, size_t n)
{
	const uint8_t *s = src;
	if (t == DT_Q5_0) {
		/* byte j of the fifth bits: bit j % 8 of qh byte j / 8, j < 16 */
		const __m128i pick = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
		const __m128i bit = _mm_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
		const __m128i nib = _mm_set1_epi8(15), sixteen = _mm_set1_epi8(16);
		for (size_t b = 0; b < n / 32; b++, s += 22, dst += 32) {
			__m256 d = _mm256_set1_ps(f16_to_f32((uint16_t)(s[0] | s[1] << 8)));
			uint32_t qh = (uint32_t)s[2] | (uint32_t)s[3] << 8 | (uint32_t)s[4] << 16 | (uint32_t)s[5] << 24;
			__m128i qs = _mm_loadu_si128((const __m128i *)(const void *)(s + 6));
			__m128i h0 = _mm_shuffle_epi8(_mm_cvtsi32_si128((int)(qh & 0xffff)), pick);
			__m128i h1 = _mm_shuffle_epi8(_mm_cvtsi32_si128((int)(qh >> 16)), pick);
			h0 = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(h0, bit), bit), sixteen);
			h1 = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(h1, bit), bit), sixteen);
			/* q - 16, values 0..15 then 16..31 */
			__m128i lo = _mm_sub_epi8(_mm_or_si128(_mm_and_si128(qs, nib), h0), sixteen);
			__m128i hi = _mm_sub_epi8(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(qs, 4), nib), h1), sixteen);
			__m128i q[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
			for (int i = 0; i < 4; i++) {
				__m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q[i]));
				_mm256_storeu_ps(dst + 8 * i, _mm256_add_ps(_mm256_mul_ps(d, v), _mm256_setzero_ps()));
			}
		}
	} else if (t == DT_Q8_0) {
		for (size_t b = 0; b < n / 32; b++, s += 34, dst += 32) {
			__m256 d = _mm256_set1_ps(f16_to_f32((uint16_t)(s[0] | s[1] << 8)));
			for (int i = 0; i < 4; i++) {
				__m128i q = _mm_loadl_epi64((const __m128i *)(const void *)(s + 2 + 8 * i));
				_mm256_storeu_ps(dst + 8 * i, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
			}
		}
	} else if (t == DT_BF16) {
		size_t i = 0;
		for (; i + 8 <= n; i += 8) {
			__m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(s + 2 * i)));
			_mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
		}
		convert_to_f32(dst + i, s + 2 * i, t, n - i);
	} else
		convert_to_f32(dst, src, t, n);
}
#endif

/* MmOps: the micro-kernel, transpose and dequantiser that a matmul runs,
 * the AVX2 twins or the plain C ones */
typedef struct {
	mm_tile_fn tile;
	mm_transpose_fn transpose;
	void (*convert)(float *dst, const void *src, DType t, size_t n); /* as convert_to_f32 */
} MmOps;

/* mm_use_avx2: whether the AVX2 + FMA twins run */
static int mm_use_avx2(void)
{
	const char *e = getenv("DASH_MATMUL_PORTABLE");
	if (e && *e && strcmp(e, "0"))
		return 0;
#if defined(__x86_64__) && defined(__GNUC__)
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
	return 0;
#endif
}

/* mm_pack_a packs m rows of a (row stride lda), kc columns, as panels of
 * MM_MR rows, ap[p][k][i] = a[p MM_MR + i][k]; rows past m are zero */
static void mm_pack_a(float *ap, const float *a, size_t lda, int m, int kc)
{
	for (int p = 0; p < m; p += MM_MR, ap += (size_t)MM_MR * kc)
		for (int i = 0; i < MM_MR; i++) {
			const float *s = a + (size_t)(p + i) * lda;
			if (p + i < m)
				for (int k = 0; k < kc; k++)
					ap[k * MM_MR + i] = s[k];
			else
				for (int k = 0; k < kc; k++)
					ap[k * MM_MR + i] = 0;
		}
}

/* mm_pack_fn packs the columns j0 .. j0+nc-1 and rows k0 .. k0+kc-1 of B,
 * taken from w (rowb bytes a row), as panels of MM_NR columns, bp[p][k][j] =
 * B[k0 + k][j0 + p MM_NR + j], zero past nc; tmp is scratch of MM_NR MM_KC
 * + MM_NC + MM_NR floats */
typedef void (*mm_pack_fn)(float *bp, const Tensor *w, size_t rowb, int k0, int kc, int j0, int nc,
                           float *tmp, const MmOps *ops);

/* the forward's B = w^T: rows j of w, dequantised from column k0 (a multiple
 * of MM_KC, so block-aligned; aligned float32 rows are read in place), then
 * transposed by ops->transpose */
static void mm_pack_wt(float *bp, const Tensor *w, size_t rowb, int k0, int kc, int j0, int nc, float *tmp,
                       const MmOps *ops)
{
	size_t off = dtype_row_bytes(w->dtype, k0);
	float *zero = tmp + MM_NR * MM_KC;
	const float *rows[MM_NR];
	memset(zero, 0, (size_t)kc * sizeof(float));
	for (int p = 0; p < nc; p += MM_NR, bp += (size_t)MM_NR * kc) {
		for (int j = 0; j < MM_NR; j++) {
			const uint8_t *src = (const uint8_t *)w->data + (size_t)(j0 + p + j) * rowb + off;
			if (p + j >= nc)
				rows[j] = zero;
			else if (w->dtype == DT_F32 && (uintptr_t)src % sizeof(float) == 0)
				rows[j] = (const float *)(const void *)src;
			else {
				ops->convert(tmp + (size_t)j * MM_KC, src, w->dtype, (size_t)kc);
				rows[j] = tmp + (size_t)j * MM_KC;
			}
		}
		ops->transpose(bp, rows, kc);
	}
}

/* the backward's B = w: rows k of w, dequantised from column j0 (a multiple
 * of the quantisation block) */
static void mm_pack_w(float *bp, const Tensor *w, size_t rowb, int k0, int kc, int j0, int nc, float *tmp,
                      const MmOps *ops)
{
	size_t off = dtype_row_bytes(w->dtype, j0);
	int ncp = (nc + MM_NR - 1) / MM_NR * MM_NR;
	for (int k = 0; k < kc; k++) {
		ops->convert(tmp, (const uint8_t *)w->data + (size_t)(k0 + k) * rowb + off, w->dtype, (size_t)nc);
		for (int j = nc; j < ncp; j++)
			tmp[j] = 0;
		for (int p = 0; p < nc; p += MM_NR)
			memcpy(bp + (size_t)p * kc + (size_t)k * MM_NR, tmp + p, MM_NR * sizeof(float));
	}
}

/* mm_gemm: c (n, N) = a (n, K) B (K, N) + bias (N, padded with MM_NR zeros;
 * NULL: none), B packed from w by pack with rowb bytes a row of w. Threads
 * take blocks of columns (multiples of align); each packs its own panels. */
static void mm_gemm(float *c, const float *a, const Tensor *w, size_t rowb, const float *bias, int n, int K,
                    int N, int align, mm_pack_fn pack)
{
	if (n <= 0 || N <= 0)
		return;
	if (K <= 0) { /* an empty sum */
		for (int i = 0; i < n; i++)
			for (int j = 0; j < N; j++)
				c[(size_t)i * N + j] = bias ? bias[j] : 0;
		return;
	}
	MmOps ops = {mm_tile_c, mm_transpose_c, convert_to_f32};
#if defined(__x86_64__) && defined(__GNUC__)
	if (mm_use_avx2())
		ops = (MmOps){mm_tile_avx2, mm_transpose_avx2, mm_convert_avx2};
#endif
	mm_tile_fn tile = ops.tile;
	int nth = 1;
#ifdef _OPENMP
	if (((double)n + 8) * K * N >= MM_PAR_WORK)
		nth = omp_get_max_threads();
#endif
	/* column blocks: at most MM_NC wide, a multiple of the thread count */
	int nb = (N + MM_NC - 1) / MM_NC;
	nb = (nb + nth - 1) / nth * nth;
	int nc = ((N + nb - 1) / nb + align - 1) / align * align;
	nb = (N + nc - 1) / nc;
	#pragma omp parallel num_threads(nth) if (nth > 1)
	{
		/* 64-byte aligned scratch: the panel of B, the block of A, tmp */
		int kcm = K < MM_KC ? K : MM_KC, mcm = n < MM_MC ? (n + MM_MR - 1) / MM_MR * MM_MR : MM_MC;
		size_t nbp = (size_t)kcm * (nc + MM_NR), nap = (size_t)mcm * kcm;
		size_t ntmp = (size_t)MM_NR * MM_KC + MM_NC + MM_NR;
		float *raw = mallocCheck((nbp + nap + ntmp) * sizeof(float) + 64);
		float *bp = (float *)(((uintptr_t)raw + 63) & ~(uintptr_t)63), *ap = bp + nbp, *tmp = ap + nap;
		float ct[MM_MR * MM_NR];
		#pragma omp for schedule(static)
		for (int jb = 0; jb < nb; jb++) {
			int j0 = jb * nc, ncb = N - j0 < nc ? N - j0 : nc;
			for (int k0 = 0; k0 < K; k0 += MM_KC) {
				int kc = K - k0 < MM_KC ? K - k0 : MM_KC, first = k0 == 0;
				const float *bias_k = k0 + kc == K ? bias : NULL;
				pack(bp, w, rowb, k0, kc, j0, ncb, tmp, &ops);
				for (int i0 = 0; i0 < n; i0 += MM_MC) {
					int mc = n - i0 < MM_MC ? n - i0 : MM_MC;
					mm_pack_a(ap, a + (size_t)i0 * K + k0, (size_t)K, mc, kc);
					for (int jp = 0; jp < ncb; jp += MM_NR) {
						int nr = ncb - jp < MM_NR ? ncb - jp : MM_NR;
						const float *bj = bp + (size_t)jp * kc, *bb = bias_k ? bias_k + j0 + jp : NULL;
						for (int ip = 0; ip < mc; ip += MM_MR) {
							int mr = mc - ip < MM_MR ? mc - ip : MM_MR;
							const float *ai = ap + (size_t)ip * kc;
							float *cc = c + (size_t)(i0 + ip) * N + j0 + jp;
							if (nr == MM_NR) {
								tile(mr, kc, ai, bj, cc, (size_t)N, first, bb);
								continue;
							}
							/* a ragged right edge goes through ct */
							for (int i = 0; i < mr; i++)
								for (int j = 0; j < nr; j++)
									ct[i * MM_NR + j] = first ? 0 : cc[(size_t)i * N + j];
							tile(mr, kc, ai, bj, ct, MM_NR, first, bb);
							for (int i = 0; i < mr; i++)
								for (int j = 0; j < nr; j++)
									cc[(size_t)i * N + j] = ct[i * MM_NR + j];
						}
					}
				}
			}
		}
		free(raw);
	}
}

void matmul_forward_cpu(float *out, const float *x, const Tensor *w, const Tensor *b,
                        int n, int IC, int OC)
{
	float *bias = NULL;
	if (b && b->data) {
		bias = callocCheck((size_t)OC + MM_NR, sizeof(float));
		convert_to_f32(bias, b->data, b->dtype, (size_t)OC);
	}
	mm_gemm(out, x, w, dtype_row_bytes(w->dtype, IC), bias, n, IC, OC, MM_NR, mm_pack_wt);
	free(bias);
}

void rmsnorm_forward_cpu(float *out, const float *x, const Tensor *w, int n, int C, float eps)
{
	float *wf = mallocCheck((size_t)C * sizeof(float));
	convert_to_f32(wf, w->data, w->dtype, (size_t)C);
	#pragma omp parallel for
	for (int t = 0; t < n; t++) {
		const float *xt = x + (size_t)t * C;
		float *ot = out + (size_t)t * C;
		double ss = 0;
		for (int i = 0; i < C; i++)
			ss += (double)xt[i] * xt[i];
		float rs = (float)(1.0 / sqrt(ss / C + eps));
		for (int i = 0; i < C; i++)
			ot[i] = xt[i] * rs * wf[i];
	}
	free(wf);
}

void embedding_forward_cpu(float *out, const int32_t *ids, const Tensor *w, int n, int C)
{
	size_t rowb = dtype_row_bytes(w->dtype, C);
	for (int t = 0; t < n; t++) {
		ASSERT(ids[t] >= 0 && ids[t] < w->shape[0]);
		convert_to_f32(out + (size_t)t * C, (const uint8_t *)w->data + (size_t)ids[t] * rowb,
		               w->dtype, (size_t)C);
	}
}

/* rope_rotate turns each pair (x[i], x[i + D/2]) of every head by
 * sign * pos * inv_freq[i]: +1 is RoPE, -1 its transpose (the backward) */
static void rope_rotate(float *x, const float *inv_freq, int B, int T, int pos0, int NH, int D, float sign)
{
	int half = D / 2;
	#pragma omp parallel for
	for (int bt = 0; bt < B * T; bt++) {
		float pos = (float)(pos0 + bt % T);
		for (int i = 0; i < half; i++) {
			/* the angle in float32, as transformers computes it */
			float ang = pos * inv_freq[i];
			float c = (float)cos((double)ang), s = sign * (float)sin((double)ang);
			for (int h = 0; h < NH; h++) {
				float *xh = x + ((size_t)bt * NH + h) * D;
				float x1 = xh[i], x2 = xh[i + half];
				xh[i] = x1 * c - x2 * s;
				xh[i + half] = x2 * c + x1 * s;
			}
		}
	}
}

void rope_forward_cpu(float *x, const float *inv_freq, int B, int T, int pos0, int NH, int D)
{
	rope_rotate(x, inv_freq, B, T, pos0, NH, D, 1.0f);
}

/* softmax_scores: the attention scores of query q (D) against the keys of
 * rows s0..s1-1 (row r at k + r*ld), exponentiated after subtracting their
 * max, into p[s0..s1-1]; returns their sum */
static double softmax_scores(float *p, const float *q, const float *k, int s0, int s1, size_t ld, int D,
                             float scale)
{
	float mx = -INFINITY;
	for (int s = s0; s < s1; s++) {
		const float *ks = k + (size_t)s * ld;
		float dot = 0;
		for (int i = 0; i < D; i++)
			dot += q[i] * ks[i];
		p[s] = dot * scale;
		mx = p[s] > mx ? p[s] : mx;
	}
	double sum = 0;
	for (int s = s0; s < s1; s++) {
		p[s] = expf(p[s] - mx);
		sum += p[s];
	}
	return sum;
}

/* attend_one: out (D) = the softmax-weighted sum of the values of rows
 * s0..s1-1 for query q; p is scratch of s1 floats */
static void attend_one(float *out, const float *q, const float *k, const float *v, int s0, int s1,
                       size_t ld, int D, float scale, float *p)
{
	double sum = softmax_scores(p, q, k, s0, s1, ld, D, scale);
	for (int i = 0; i < D; i++)
		out[i] = 0;
	for (int s = s0; s < s1; s++) {
		const float *vs = v + (size_t)s * ld;
		float w = (float)(p[s] / sum);
		for (int i = 0; i < D; i++)
			out[i] += w * vs[i];
	}
}

void attention_forward_cpu(float *out, const float *q, const float *k, const float *v,
                           int B, int T, int H, int G, int D, int window)
{
	float scale = 1.0f / sqrtf((float)D);
	int rep = H / G;
	size_t ld = (size_t)G * D;
	ASSERT(H % G == 0);
	#pragma omp parallel
	{
		float *p = mallocCheck((size_t)T * sizeof(float));
		#pragma omp for collapse(2) schedule(dynamic)
		for (int b = 0; b < B; b++)
			for (int h = 0; h < H; h++) {
				size_t kv0 = (size_t)b * T * ld + (size_t)(h / rep) * D; /* kv head h/rep, position 0 */
				for (int t = 0; t < T; t++) {
					int s0 = window > 0 && t - window + 1 > 0 ? t - window + 1 : 0;
					size_t qo = (((size_t)b * T + t) * H + h) * D;
					attend_one(out + qo, q + qo, k + kv0, v + kv0, s0, t + 1, ld, D, scale, p);
				}
			}
		free(p);
	}
}

void attention_step_cpu(float *out, const float *q, const float *kc, const float *vc, int n,
                        int H, int G, int D, int window)
{
	float scale = 1.0f / sqrtf((float)D);
	int rep = H / G, s0 = window > 0 && n - window > 0 ? n - window : 0;
	size_t ld = (size_t)G * D;
	#pragma omp parallel
	{
		float *p = mallocCheck((size_t)n * sizeof(float));
		#pragma omp for
		for (int h = 0; h < H; h++) {
			size_t kv0 = (size_t)(h / rep) * D;
			attend_one(out + (size_t)h * D, q + (size_t)h * D, kc + kv0, vc + kv0, s0, n, ld, D, scale, p);
		}
		free(p);
	}
}

void swiglu_forward_cpu(float *out, const float *gate, const float *up, int64_t n)
{
	#pragma omp parallel for
	for (int64_t i = 0; i < n; i++)
		out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

void residual_forward_cpu(float *out, const float *x, int64_t n)
{
	#pragma omp parallel for
	for (int64_t i = 0; i < n; i++)
		out[i] += x[i];
}

// ----------------------------------------------------------------------------
// fused operators, as compositions of the ones above

void qkv_rope_forward_cpu(float *q, float *k, float *v, const float *qkv, const Tensor *b,
                          const float *inv_freq, int B, int T, int pos0, int H, int G, int D)
{
	int n = B * T, HD = H * D, GD = G * D, W = HD + 2 * GD;
	float *bias = callocCheck((size_t)W, sizeof(float));
	if (b && b->data)
		convert_to_f32(bias, b->data, b->dtype, (size_t)W);
	/* split the columns: q | k | v, plus the bias */
	for (int t = 0; t < n; t++) {
		const float *r = qkv + (size_t)t * W;
		for (int i = 0; i < HD; i++)
			q[(size_t)t * HD + i] = r[i] + bias[i];
		for (int i = 0; i < GD; i++) {
			k[(size_t)t * GD + i] = r[HD + i] + bias[HD + i];
			v[(size_t)t * GD + i] = r[HD + GD + i] + bias[HD + GD + i];
		}
	}
	/* then RoPE on q and k */
	rope_forward_cpu(q, inv_freq, B, T, pos0, H, D);
	rope_forward_cpu(k, inv_freq, B, T, pos0, G, D);
	free(bias);
}

void swiglu_packed_forward_cpu(float *out, const float *gu, int n, int F)
{
	#pragma omp parallel for
	for (int t = 0; t < n; t++)
		for (int j = 0; j < F; j++) {
			float g = gu[(size_t)t * 2 * F + j], u = gu[(size_t)t * 2 * F + F + j];
			out[(size_t)t * F + j] = g / (1.0f + expf(-g)) * u;
		}
}

void residual_rmsnorm_forward_cpu(float *h, float *out, const float *x, const float *a, const Tensor *w,
                                  int n, int C, float eps)
{
	if (h != x)
		memcpy(h, x, (size_t)n * C * sizeof(float));
	residual_forward_cpu(h, a, (int64_t)n * C);
	rmsnorm_forward_cpu(out, h, w, n, C, eps);
}

// ----------------------------------------------------------------------------
// backward

void matmul_backward_cpu(float *dx, const float *dout, const Tensor *w, int n, int IC, int OC)
{
	/* dx = dout w: the GEMM above with B = w, whose column blocks start on
	 * quantisation blocks */
	int align = dtype_block(w->dtype) > MM_NR ? dtype_block(w->dtype) : MM_NR;
	mm_gemm(dx, dout, w, dtype_row_bytes(w->dtype, IC), NULL, n, OC, IC, align, mm_pack_w);
}

void rmsnorm_backward_cpu(float *dx, const float *dout, const float *x, const Tensor *w, int n, int C,
                          float eps)
{
	float *wf = mallocCheck((size_t)C * sizeof(float));
	convert_to_f32(wf, w->data, w->dtype, (size_t)C);
	#pragma omp parallel for
	for (int t = 0; t < n; t++) {
		const float *xt = x + (size_t)t * C, *dt = dout + (size_t)t * C;
		double ss = 0, dot = 0;
		for (int i = 0; i < C; i++) {
			ss += (double)xt[i] * xt[i];
			dot += (double)dt[i] * wf[i] * xt[i];
		}
		/* y_i = x_i r w_i with r = (mean x^2 + eps)^-1/2:
		 * dx_i = r w_i dy_i - x_i r^3 / C * sum_j dy_j w_j x_j */
		double r = 1.0 / sqrt(ss / C + eps);
		double c = r * r * r * dot / C;
		for (int i = 0; i < C; i++)
			dx[(size_t)t * C + i] = (float)(r * wf[i] * dt[i] - c * xt[i]);
	}
	free(wf);
}

void rope_backward_cpu(float *d, const float *inv_freq, int B, int T, int pos0, int NH, int D)
{
	rope_rotate(d, inv_freq, B, T, pos0, NH, D, -1.0f);
}

void attention_backward_cpu(float *dq, float *dk, float *dv, const float *dout, const float *q,
                            const float *k, const float *v, int B, int T, int H, int G, int D,
                            int window)
{
	float scale = 1.0f / sqrtf((float)D);
	int rep = H / G;
	size_t ld = (size_t)G * D;
	memset(dk, 0, (size_t)B * T * ld * sizeof(float));
	memset(dv, 0, (size_t)B * T * ld * sizeof(float));
	/* one thread per (sequence, kv head): the heads that share a kv head
	 * add into the same dk, dv rows */
	#pragma omp parallel
	{
		float *p = mallocCheck((size_t)T * sizeof(float)), *dp = mallocCheck((size_t)T * sizeof(float));
		#pragma omp for collapse(2) schedule(dynamic)
		for (int b = 0; b < B; b++)
			for (int g = 0; g < G; g++) {
				size_t kv0 = (size_t)b * T * ld + (size_t)g * D;
				const float *kb = k + kv0, *vb = v + kv0;
				float *dkb = dk + kv0, *dvb = dv + kv0;
				for (int h = g * rep; h < (g + 1) * rep; h++)
					for (int t = 0; t < T; t++) {
						int s0 = window > 0 && t - window + 1 > 0 ? t - window + 1 : 0;
						size_t qo = (((size_t)b * T + t) * H + h) * D;
						const float *qt = q + qo, *dot = dout + qo;
						float *dqt = dq + qo;
						/* recompute the probabilities */
						double sum = softmax_scores(p, qt, kb, s0, t + 1, ld, D, scale);
						/* dv += p dout; dp = dout . v; ds = p (dp - sum p dp) */
						double pdp = 0;
						for (int s = s0; s <= t; s++) {
							p[s] = (float)(p[s] / sum);
							float a = 0;
							for (int i = 0; i < D; i++) {
								dvb[(size_t)s * ld + i] += p[s] * dot[i];
								a += dot[i] * vb[(size_t)s * ld + i];
							}
							dp[s] = a;
							pdp += (double)p[s] * a;
						}
						for (int i = 0; i < D; i++)
							dqt[i] = 0;
						for (int s = s0; s <= t; s++) {
							float ds = p[s] * (dp[s] - (float)pdp) * scale;
							for (int i = 0; i < D; i++) {
								dqt[i] += ds * kb[(size_t)s * ld + i];
								dkb[(size_t)s * ld + i] += ds * qt[i];
							}
						}
					}
			}
		free(p), free(dp);
	}
}

void swiglu_backward_cpu(float *dgate, float *dup, const float *dout, const float *gate, const float *up,
                         int64_t n)
{
	#pragma omp parallel for
	for (int64_t i = 0; i < n; i++) {
		float sg = 1.0f / (1.0f + expf(-gate[i])), silu = gate[i] * sg;
		dup[i] = dout[i] * silu;
		dgate[i] = dout[i] * up[i] * sg * (1.0f + gate[i] * (1.0f - sg));
	}
}

void qkv_rope_backward_cpu(float *dqkv, const float *dq, const float *dk, const float *dv,
                           const float *inv_freq, int B, int T, int pos0, int H, int G, int D)
{
	int n = B * T, HD = H * D, GD = G * D, W = HD + 2 * GD;
	/* RoPE back on copies of dq and dk, then pack q | k | v */
	float *tq = mallocCheck((size_t)n * HD * sizeof(float)), *tk = mallocCheck((size_t)n * GD * sizeof(float));
	memcpy(tq, dq, (size_t)n * HD * sizeof(float));
	memcpy(tk, dk, (size_t)n * GD * sizeof(float));
	rope_backward_cpu(tq, inv_freq, B, T, pos0, H, D);
	rope_backward_cpu(tk, inv_freq, B, T, pos0, G, D);
	for (int t = 0; t < n; t++) {
		float *r = dqkv + (size_t)t * W;
		for (int i = 0; i < HD; i++)
			r[i] = tq[(size_t)t * HD + i];
		for (int i = 0; i < GD; i++) {
			r[HD + i] = tk[(size_t)t * GD + i];
			r[HD + GD + i] = dv[(size_t)t * GD + i];
		}
	}
	free(tq), free(tk);
}

void swiglu_packed_backward_cpu(float *dgu, const float *dout, const float *gu, int n, int F)
{
	#pragma omp parallel for
	for (int t = 0; t < n; t++)
		for (int j = 0; j < F; j++) {
			float g = gu[(size_t)t * 2 * F + j], u = gu[(size_t)t * 2 * F + F + j], d = dout[(size_t)t * F + j];
			float sg = 1.0f / (1.0f + expf(-g));
			dgu[(size_t)t * 2 * F + j] = d * u * sg * (1.0f + g * (1.0f - sg)); /* dgate */
			dgu[(size_t)t * 2 * F + F + j] = d * g * sg;                        /* dup */
		}
}

void residual_rmsnorm_backward_cpu(float *dh, const float *dout, const float *dres, const float *h,
                                   const Tensor *w, int n, int C, float eps)
{
	size_t nC = (size_t)n * C;
	float *t = mallocCheck(nC * sizeof(float));
	rmsnorm_backward_cpu(t, dout, h, w, n, C, eps);
	for (size_t i = 0; i < nC; i++)
		dh[i] = dres[i] + t[i];
	free(t);
}
