/*
 * linear_op (GPU): the gdn and gla candidate operators, forward and
 * backward to every parameter and to the input, on the device: the twin of
 * lib/linear_op.c (whose header states the math; kernels/gpu_lop.h states
 * this file's contract). Around the chunked recurrences of
 * kernels/gdn_chunked.cu and kernels/gla_chunked.cu, float32 throughout:
 * the projections are cuBLAS GEMMs (TF32 tensor cores, float32 sums; gla's
 * q and k in float32), the bias, onorm and A_log gradients cuBLAS column
 * sums (float32), and the feature maps, gates and the gated RMSNorm small
 * kernels, one warp a row of D <= 128 values where they norm over D.
 *
 * Forward (n = B*T tokens; k, v repeated from G to H heads as they are
 * made):
 *   pq, pk, pv = u Wq^T, u Wk^T, u Wv^T                     3 GEMMs
 *   q, k, v = the feature maps of p + b                     feature_forward x3
 *   gdn: za, zb = u Wa^T, u Wb^T; g, beta                   2 GEMMs, gdn_gates
 *   gla: h1 = u Wgk1^T; zgk = h1 Wgk2^T; gk                 2 GEMMs, gla_gates
 *   o = the recurrence                                      chunked forward
 *   zg = u Wg^T; y = rmsnorm(o) onorm silu(zg)              GEMM, onorm_forward
 *   a = y Wo^T + bo                                         GEMM, add_bias
 * and backward, from what the forward kept (y recomputed, one launch):
 *   dy = da Wo, dWo, dbo; dO, dzg, donorm; dWg, du          3 GEMMs, 2 sums
 *   dq, dk, dv, dg, dbeta (dgk) = the chunked backward
 *   gates and feature maps backwards, the group's heads summed
 *   dW, db and du of every projection
 *
 * gdn's six input projections (q, k, v, a, b, g) land side by side in one
 * buffer pj (n, HD + 2 GD + 2 H + HD), tokens a row: on the bf16 path one
 * GEMM makes them all, and the kernels that read them take rows hp a token,
 * ld apart (tok_row); gla's have buffers of their own.
 *
 * What it keeps per token (float32): pq (gdn), q, k, v, o, zg (H*D each),
 * pk, pv (G*D each), rstd (H), 1/norms of q and k (H + G, gdn), za, g,
 * beta (3 H, gdn), h1 (16), zgk, gk (2 H*D, gla); the backward's scratch is
 * 4 H*D (gdn) or 5 H*D (gla), 2 G*D and a few H more. In all 10 H*D + 4 G*D
 * + 9 H + G floats a token for gdn, 12 H*D + 4 G*D + 2 H + 32 for gla: at
 * C 2048, H 16, G 2, D 128, 85 and 100 KB, 0.35 and 0.42 GB at 4096 tokens,
 * plus the recurrences' work.
 *
 * version 1: one GEMM per projection, unfused bias and activation kernels.
 * H100, C 2048, H 16, G 2, D 128, 1 x 4096 tokens (tests/test_linear_op.cu
 * with DASH_BENCH=1): gdn forward 1.30 ms, forward + backward 5.24 ms (782K
 * tokens/s); gla 2.03 and 5.60 ms (731K tokens/s). Napkin math: the
 * projections are 112 GFLOP forward (gdn; gla about the same) and twice
 * that backward, 0.8 ms in all at 400 TFLOP/s of TF32; gla's float32 q and
 * k (39 GFLOP at about 55 TFLOP/s) add 0.7 ms. The other 4 ms or so are
 * the recurrences and the elementwise passes (not yet profiled apart).
 * gpu_lop_forward_state (for kernels/decode.cu): the same forward from given
 * states; a decoding step (T 1) takes the recurrent kernel, one launch for
 * its B sequences, where the chunked ones would pad each token to a chunk.
 * gdn's backward does not recompute the recurrence's forward states when
 * gpu_lop_forward ran its B sequences in one call of the chunked forward
 * (their chunks fit the work, sized for one sequence of max_tokens: always
 * when B*T = max_tokens with T a multiple of 64; see seq_group): that
 * forward keeps them in the work (kernels/gdn_chunked.cu version 3) and the
 * backward reads them, the same bits. DASH_GDN_RECOMPUTE=1 (read at each
 * forward) forces the recomputation. Measured (H100, DASH_BENCH=1
 * tests/bin/gpu_test_linear_op, C 2048, H 16, G 2, D 128, 1 x 4096 tokens):
 * gdn forward + backward 3.872 ms against 4.320 recomputing.
 * gdn's bf16 path (gpu_lop_forward_bf16, gpu_lop_backward_bf16, the
 * search's: frozen operators, no parameter gradients): bf16 copies of the
 * projection weights (w16: wq wk wv wa wb wg as one (OC, C) block, then wo
 * and bo), bf16 u in, bf16 a out (matmul_forward_cuda), y in bf16 for the
 * output GEMM; the backward's dzg, dza, dzb, dpq, dpk, dpv written in bf16
 * side by side into dp16 (n, OC) by the kernels that make them, so du is one
 * GEMM over K = OC (4640 at the 3B shape) accumulated into the caller's
 * float32 sum, w taken in by the norm's backward; the state passes in TF32
 * (kernels/gdn_chunked.cu version 4). H200 (DASH_BENCH=1
 * tests/bin/gpu_test_linear_op, C 2048, H 16, G 2, D 128, 1 x 4096): forward
 * 0.919 ms, forward + backward to du 2.426 ms against 1.156 and 3.029 on
 * the float32 path.
 * Then the six input projections of the bf16 path in one GEMM (N 4640 at
 * the 3B shape, instead of 2048, 256, 256, 16, 16 and 2048: the narrow ones
 * ran far from the card's rate).
 * gpu_lop_grad_fp8 (search-logits --grad fp8): that path's two backward
 * products, dy = da Wo and du = dp16 [wq; ...; wg], in float8 e4m3
 * (kernels/fp8.cu): da and dp16 quantised by their rows into the caller's
 * scratch, wo and the stacked projections by their columns once (with w16,
 * and again whenever w16 is made again); dp16's rows padded with zeros to
 * a multiple of 16 (ldd), which e4m3 products want of their K. H200
 * (DASH_BENCH=1 tests/bin/gpu_test_linear_op, the shape above, hot):
 * forward + backward to du 1.492 -> 1.475 ms; in the power-bound search
 * step it is energy more than time (bench/RESULTS.md, version 12).
 * gpu_lop_forward_fp8 (search-logits --forward fp8): that path's two
 * forward products in e4m3 as well, u's and y's codes by rows in the same
 * scratch, the weights' by rows (made with w16); pj's token stride (ldp)
 * is the projections' width rounded up to 16 on every path, the product's
 * padding rows of codes zero. Part of version 14 of the search step
 * (bench/RESULTS.md): 178 -> 171 ms with the fused codes of that version.
 * Then u's and da's codes taken from the caller where it has them (the
 * GpuModel's norms made them), y's written by the output norm itself
 * (onorm_forward_fp8_kernel), and the three feature maps in one launch
 * (Maps): version 16 of the search step, 169.8 -> 168.1 ms with the
 * GpuModel's share.
 */
#include <string.h>

#include <initializer_list>

#include "cuda_common.cuh"
#include "fp8.cuh"
#include "gpu.h"
#include "gpu_lop.h"

extern "C" {
#include "util.h"
}

#define L2_EPS 1e-6f   /* fla's l2norm, as lib/linear_op.c */
#define NORM_EPS 1e-5f /* the gated RMSNorm on the output */
#define ROW_WARPS 8    /* rows (warps) a block of the row kernels */
#define ROW_VALS 4     /* values a lane: D <= 4 * 32 */
#define EW_THREADS 256 /* elementwise kernels */

// ----------------------------------------------------------------------------
// elementwise math, as lib/linear_op.c

__device__ __forceinline__ float sigmoidf_(float x) { return 1 / (1 + expf(-x)); }
__device__ __forceinline__ float siluf_(float x) { return x * sigmoidf_(x); }
__device__ __forceinline__ float silu_grad(float x)
{
	float s = sigmoidf_(x);
	return s * (1 + x * (1 - s));
}
__device__ __forceinline__ float softplusf_(float x) { return x > 20 ? x : log1pf(expf(x)); }
__device__ __forceinline__ float logsigmoidf_(float x) { return x < 0 ? x - log1pf(expf(x)) : -log1pf(expf(-x)); }

// ----------------------------------------------------------------------------
// kernels

/* The row kernels below take a row of D <= 32 ROW_VALS values a warp; lane
 * l holds x[k] = row[row_idx<V>(k, l)]: V 4 takes float4s (D % 4 == 0,
 * rows 16-byte aligned), V 1 single values with the lanes along the row.
 * Values past D are read as zeros and not written. */
template <int V>
__device__ __forceinline__ int row_idx(int k, int lane)
{
	return (k / V * WARP_SIZE + lane) * V + k % V;
}

/* row r of a buffer that holds hp rows of D a token, the tokens ld apart
 * (hp D when packed; gdn's projections side by side: proj_off's width) */
__device__ __forceinline__ size_t tok_row(int r, int hp, int ld, int D)
{
	return (size_t)(r / hp) * ld + (size_t)(r % hp) * D;
}

template <int V>
__device__ __forceinline__ void row_load(float (&x)[ROW_VALS], const float *row, int lane, int D)
{
#pragma unroll
	for (int k = 0; k < ROW_VALS; k += V) {
		int i = row_idx<V>(k, lane);
		if constexpr (V == 4) {
			float4 a = i < D ? *(const float4 *)(row + i) : make_float4(0.f, 0.f, 0.f, 0.f);
			x[k] = a.x, x[k + 1] = a.y, x[k + 2] = a.z, x[k + 3] = a.w;
		} else {
			x[k] = i < D ? row[i] : 0.f;
		}
	}
}

/* put(k, i) for each of this lane's values x[k] within the row (i < D):
 * the stores below */
template <int V, typename Put>
__device__ __forceinline__ void row_each(int lane, int D, Put put)
{
#pragma unroll
	for (int k = 0; k < ROW_VALS; k += V) {
		int i = row_idx<V>(k, lane);
		if (i < D)
			put(k, i);
	}
}

template <int V>
__device__ __forceinline__ void row_store(float *row, const float (&x)[ROW_VALS], int lane, int D)
{
	row_each<V>(lane, D, [&](int k, int i) {
		if constexpr (V == 4)
			*(float4 *)(row + i) = make_float4(x[k], x[k + 1], x[k + 2], x[k + 3]);
		else
			row[i] = x[k];
	});
}

/* the same in bf16 (V 4: 8-byte stores) */
template <int V>
__device__ __forceinline__ void row_store16(bf16 *row, const float (&x)[ROW_VALS], int lane, int D)
{
	row_each<V>(lane, D, [&](int k, int i) {
		if constexpr (V == 4) {
			__nv_bfloat162 lo = __floats2bfloat162_rn(x[k], x[k + 1]);
			__nv_bfloat162 hi = __floats2bfloat162_rn(x[k + 2], x[k + 3]);
			*(uint2 *)(row + i) = make_uint2(*(uint32_t *)&lo, *(uint32_t *)&hi);
		} else {
			row[i] = __float2bfloat16(x[k]);
		}
	});
}

/* the same as e4m3 codes of x times inv (V 4: 4-byte stores) */
template <int V>
__device__ __forceinline__ void row_store8(uint8_t *row, const float (&x)[ROW_VALS], float inv, int lane, int D)
{
	row_each<V>(lane, D, [&](int k, int i) {
		if constexpr (V == 4)
			*(uint32_t *)(row + i) = e4m3(x[k] * inv) | (uint32_t)e4m3(x[k + 1] * inv) << 8 |
			                         (uint32_t)e4m3(x[k + 2] * inv) << 16 | (uint32_t)e4m3(x[k + 3] * inv) << 24;
		else
			row[i] = e4m3(x[k] * inv);
	});
}

/* Up to three maps of the row kernels below in one launch (gdn's q, k and
 * v): blocks first[j] .. first[j + 1] - 1 take map j's rows, each map's
 * arguments as one J. */
template <typename J>
struct Maps {
	J m[3];
	unsigned first[4]; /* the fourth: past the last */
};

/* the map of this block, and its first row */
template <typename J>
__device__ __forceinline__ J map_of(const Maps<J> &ms, int *r0)
{
	unsigned b = blockIdx.x;
	int i = b >= ms.first[2] ? 2 : b >= ms.first[1] ? 1 : 0;
	*r0 = (int)(b - ms.first[i]) * ROW_WARPS;
	return i == 0 ? ms.m[0] : i == 1 ? ms.m[1] : ms.m[2];
}

/* the feature maps, one warp a row of D: p (rows of D, hp a token, ld
 * apart) += b (bias of width values, rows cycling through width / D of
 * them), x = silu(p) or p, l2-normed (inv (rows) keeps 1/norm) when l2; out
 * gets x repeated: row r goes to rows r * rep .. r * rep + rep - 1 (the heads
 * of kv group r). out may be p when rep is 1 and p is packed. */
struct FeatFwd {
	float *out, *inv, *p;
	const float *b;
	int hp, ld, rows, D, width, rep, silu, l2;
};

template <int V>
__global__ void feature_forward_kernel(Maps<FeatFwd> ms)
{
	int r0, lane = threadIdx.x % WARP_SIZE;
	const FeatFwd f = map_of(ms, &r0);
	float *out = f.out, *inv = f.inv, *p = f.p;
	const float *b = f.b;
	int hp = f.hp, ld = f.ld, D = f.D, width = f.width, rep = f.rep, r = r0 + threadIdx.x / WARP_SIZE;
	if (r >= f.rows)
		return;
	float z[ROW_VALS], x[ROW_VALS], s = 0;
	float *pr = p + tok_row(r, hp, ld, D);
	row_load<V>(z, pr, lane, D);
	if (b) {
		row_load<V>(x, b + (size_t)r * D % width, lane, D);
#pragma unroll
		for (int k = 0; k < ROW_VALS; k++)
			z[k] += x[k];
		row_store<V>(pr, z, lane, D);
	}
#pragma unroll
	for (int k = 0; k < ROW_VALS; k++) {
		x[k] = f.silu ? siluf_(z[k]) : z[k];
		s += x[k] * x[k];
	}
	if (f.l2) {
		float iv = 1 / sqrtf(warp_sum(s) + L2_EPS);
		if (lane == 0)
			inv[r] = iv;
#pragma unroll
		for (int k = 0; k < ROW_VALS; k++)
			x[k] *= iv;
	}
	for (int h = 0; h < rep; h++)
		row_store<V>(out + ((size_t)r * rep + h) * D, x, lane, D);
}

/* the backward of feature_forward_kernel, one warp a row of D: d = the sum
 * of dout over the rep heads of row r, through the l2 norm (y: the forward's
 * out, inv its 1/norms) and silu (p: the pre-activation, hp rows a token,
 * ld apart) when asked, into dp (rows, D), or in bf16 into dp16 when given:
 * row r at dp16 + tok_row(r, hp, ld16, D). dp may be dout when rep is 1. */
struct FeatBwd {
	float *dp;
	bf16 *dp16;
	const float *dout, *y, *inv, *p;
	int hp, ld16, ld, rows, D, rep, silu, l2;
};

template <int V>
__global__ void feature_backward_kernel(Maps<FeatBwd> ms)
{
	int r0, lane = threadIdx.x % WARP_SIZE;
	const FeatBwd f = map_of(ms, &r0);
	float *dp = f.dp;
	bf16 *dp16 = f.dp16;
	const float *dout = f.dout, *y = f.y, *inv = f.inv, *p = f.p;
	int hp = f.hp, ld16 = f.ld16, ld = f.ld, D = f.D, rep = f.rep, r = r0 + threadIdx.x / WARP_SIZE;
	if (r >= f.rows)
		return;
	float d[ROW_VALS] = {}, t[ROW_VALS];
	for (int h = 0; h < rep; h++) {
		row_load<V>(t, dout + ((size_t)r * rep + h) * D, lane, D);
#pragma unroll
		for (int k = 0; k < ROW_VALS; k++)
			d[k] += t[k];
	}
	if (f.l2) {
		float s = 0;
		row_load<V>(t, y + (size_t)r * rep * D, lane, D);
#pragma unroll
		for (int k = 0; k < ROW_VALS; k++)
			s += d[k] * t[k];
		s = warp_sum(s);
		float iv = inv[r];
#pragma unroll
		for (int k = 0; k < ROW_VALS; k++)
			d[k] = iv * (d[k] - t[k] * s);
	}
	if (f.silu) {
		row_load<V>(t, p + tok_row(r, hp, ld, D), lane, D);
#pragma unroll
		for (int k = 0; k < ROW_VALS; k++)
			d[k] *= silu_grad(t[k]);
	}
	if (dp16)
		row_store16<V>(dp16 + tok_row(r, hp, ld16, D), d, lane, D);
	else
		row_store<V>(dp + (size_t)r * D, d, lane, D);
}

/* gdn's gates, per (token, head): za += dt_bias, g = -exp(A_log)
 * softplus(za), beta = sigmoid(zb); za and zb H a token, ld apart */
__global__ void gdn_gates_kernel(float *g, float *beta, float *za, const float *zb, int ld, const float *dt_bias,
                                 const float *A_log, int n, int H)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (int64_t)n * H)
		return;
	int h = (int)(i % H);
	size_t j = (size_t)(i / H) * ld + h;
	float z = za[j] + dt_bias[h];
	za[j] = z;
	g[i] = -expf(A_log[h]) * softplusf_(z);
	beta[i] = sigmoidf_(zb[j]);
}

/* their backward: dbeta becomes dzb, dg becomes dza, dAg (per token and
 * head) the A_log gradient's terms dg g; dza and dzb also in bf16 into
 * dz16 + t ld16 + (oa or ob) + h when dz16 is given; za H a token, ld apart */
__global__ void gdn_gates_backward_kernel(float *dg, float *dbeta, float *dAg, bf16 *dz16, int ld16, int oa, int ob,
                                          const float *g, const float *beta, const float *za, int ld,
                                          const float *A_log, int n, int H)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (int64_t)n * H)
		return;
	int h = (int)(i % H);
	float db = dbeta[i] * beta[i] * (1 - beta[i]), dgi = dg[i];
	dbeta[i] = db;
	dAg[i] = dgi * g[i];
	dgi *= -expf(A_log[h]) * sigmoidf_(za[(size_t)(i / H) * ld + h]);
	dg[i] = dgi;
	if (dz16) {
		bf16 *z = dz16 + (size_t)(i / H) * ld16 + h;
		z[oa] = __float2bfloat16(dgi), z[ob] = __float2bfloat16(db);
	}
}

/* gla's decay: zgk += bgk, gk = logsigmoid(zgk) / 16 */
__global__ void gla_gates_kernel(float *gk, float *zgk, const float *bgk, int n, int HD)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (int64_t)n * HD)
		return;
	float z = zgk[i] + bgk[i % HD];
	zgk[i] = z;
	gk[i] = logsigmoidf_(z) / 16;
}

/* its backward: dgk becomes dzgk */
__global__ void gla_gates_backward_kernel(float *dgk, const float *zgk, int64_t n)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		dgk[i] *= (1 - sigmoidf_(zgk[i])) / 16;
}

/* out (n, C) += b (C) on every row */
__global__ void add_bias_kernel(float *out, const float *b, int n, int C)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < (int64_t)n * C)
		out[i] += b[i % C];
}

/* the gated RMSNorm, one warp a row (token, head) of D: y = o rstd onorm
 * silu(zg) (in bf16 into y16 when given), rstd (rows) = 1/rms(o); zg hp
 * rows a token, ld apart */
template <int V>
__global__ void onorm_forward_kernel(float *y, bf16 *y16, float *rstd, const float *o, const float *zg, int hp, int ld,
                                     const float *on, int rows, int D)
{
	int r = blockIdx.x * ROW_WARPS + threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
	if (r >= rows)
		return;
	float x[ROW_VALS], z[ROW_VALS], w[ROW_VALS], s = 0;
	row_load<V>(x, o + (size_t)r * D, lane, D);
#pragma unroll
	for (int k = 0; k < ROW_VALS; k++)
		s += x[k] * x[k];
	float rs = 1 / sqrtf(warp_sum(s) / D + NORM_EPS);
	if (lane == 0)
		rstd[r] = rs;
	row_load<V>(z, zg + tok_row(r, hp, ld, D), lane, D);
	row_load<V>(w, on, lane, D);
#pragma unroll
	for (int k = 0; k < ROW_VALS; k++)
		x[k] = x[k] * rs * w[k] * siluf_(z[k]);
	if (y16)
		row_store16<V>(y16 + (size_t)r * D, x, lane, D);
	else
		row_store<V>(y + (size_t)r * D, x, lane, D);
}

/* the same for an output product in e4m3: y's rows (a token's hp heads,
 * hp D values) straight into their codes q and scales, a block of
 * ROW_WARPS warps a token, heads h, h + ROW_WARPS, ... a warp (hp at most
 * OF8_HPW of them), each value rounded to bf16 first: the codes of the
 * kernel above's y16 followed by fp8_rows_cuda, byte for byte */
#define OF8_HPW 4 /* heads a warp at most */
template <int V>
__global__ void __launch_bounds__(ROW_WARPS * WARP_SIZE)
	onorm_forward_fp8_kernel(uint8_t *q, float *scale, float *rstd, const float *o, const float *zg, int hp, int ld,
	                         const float *on, int D)
{
	int t = blockIdx.x, warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
	float x[OF8_HPW][ROW_VALS], z[OF8_HPW][ROW_VALS], w[ROW_VALS], m = 0;
	row_load<V>(w, on, lane, D);
#pragma unroll
	for (int j = 0; j < OF8_HPW; j++) {
		int h = warp + j * ROW_WARPS;
		if (h < hp) {
			row_load<V>(x[j], o + ((size_t)t * hp + h) * D, lane, D);
			row_load<V>(z[j], zg + tok_row(t * hp + h, hp, ld, D), lane, D);
		}
	}
#pragma unroll
	for (int j = 0; j < OF8_HPW; j++) {
		int h = warp + j * ROW_WARPS;
		if (h >= hp)
			break;
		float s = 0;
#pragma unroll
		for (int k = 0; k < ROW_VALS; k++)
			s += x[j][k] * x[j][k];
		float rs = 1 / sqrtf(warp_sum(s) / D + NORM_EPS);
		if (lane == 0)
			rstd[(size_t)t * hp + h] = rs;
#pragma unroll
		for (int k = 0; k < ROW_VALS; k++) {
			x[j][k] = __bfloat162float(__float2bfloat16(x[j][k] * rs * w[k] * siluf_(z[j][k])));
			m = fmaxf(m, fabsf(x[j][k]));
		}
	}
	float inv = block_row_inv<ROW_WARPS * WARP_SIZE>(scale, t, m);
#pragma unroll
	for (int j = 0; j < OF8_HPW; j++) {
		int h = warp + j * ROW_WARPS;
		if (h >= hp)
			break;
		row_store8<V>(q + ((size_t)t * hp + h) * D, x[j], inv, lane, D);
	}
}

/* y again from the kept o, rstd, zg (the backward's dWo needs it; zg HD
 * a token, ld apart) */
__global__ void onorm_y_kernel(float *y, const float *rstd, const float *o, const float *zg, int HD, int ld,
                               const float *on, int64_t n, int D)
{
	int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (j < n)
		y[j] = o[j] * rstd[j / D] * on[j % D] * siluf_(zg[(size_t)(j / HD) * ld + j % HD]);
}

/* its backward, one warp a row: from scale dy, dO and dzg (in bf16 into
 * dzg16 + (r / hp) ld16 + (r % hp) D when given; zg hp rows a token, ld
 * apart), and into gon (may be dy;
 * NULL: not written) the row's terms of the onorm weight's gradient (summed
 * over rows afterwards) */
template <int V>
__global__ void onorm_backward_kernel(float *dO, float *dzg, bf16 *dzg16, int hp, int ld16, const float *dy,
                                      float *gon, float scale, const float *o, const float *rstd, const float *zg,
                                      int ld, const float *on, int rows, int D)
{
	int r = blockIdx.x * ROW_WARPS + threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
	if (r >= rows)
		return;
	float rs = rstd[r], sm = 0, xh[ROW_VALS], z[ROW_VALS], d[ROW_VALS], w[ROW_VALS];
	size_t j = (size_t)r * D;
	row_load<V>(xh, o + j, lane, D);
	row_load<V>(z, zg + tok_row(r, hp, ld, D), lane, D);
	row_load<V>(d, dy + j, lane, D);
	row_load<V>(w, on, lane, D);
#pragma unroll
	for (int k = 0; k < ROW_VALS; k++) {
		float gt = siluf_(z[k]);
		xh[k] *= rs, d[k] *= scale;
		z[k] = d[k] * xh[k] * w[k] * silu_grad(z[k]); /* dL/dzg */
		w[k] = d[k] * w[k] * gt;                      /* dL/dxhat */
		d[k] = d[k] * xh[k] * gt;                     /* the onorm weight's term */
		sm += w[k] * xh[k];
	}
	if (dzg16)
		row_store16<V>(dzg16 + tok_row(r, hp, ld16, D), z, lane, D);
	else
		row_store<V>(dzg + j, z, lane, D);
	if (gon)
		row_store<V>(gon + j, d, lane, D);
	sm = warp_sum(sm);
#pragma unroll
	for (int k = 0; k < ROW_VALS; k++)
		w[k] = rs * (w[k] - xh[k] * sm / D);
	row_store<V>(dO + j, w, lane, D);
}

// ----------------------------------------------------------------------------
// launchers

static unsigned ew_blocks(int64_t n) { return (unsigned)CEIL_DIV(n, EW_THREADS); }
static unsigned row_blocks(int rows) { return (unsigned)CEIL_DIV(rows, ROW_WARPS); }

/* whether the row kernels can take rows of D a float4 (or, bf16, 4 values)
 * at a time: D % 4 == 0 and these row pointers 16-byte (bf16: 8-byte)
 * aligned; the strided rows ld (float32) and ld16 (bf16) apart */
static bool row_v4(int D, std::initializer_list<const void *> f32, const void *b16 = NULL, int ld16 = 0, int ld = 0)
{
	bool ok = D % 4 == 0 && ld16 % 4 == 0 && ld % 4 == 0 && ((uintptr_t)b16 & 7) == 0;
	for (const void *q : f32)
		ok = ok && ((uintptr_t)q & 15) == 0;
	return ok;
}

/* The row kernels' launchers. p and zg hold hp rows a token, ld apart; so
 * do dp16 and dzg16 (ld16 apart) where given instead of dp and dzg. */

/* up to three maps in a launch (Maps), by kernel k4 (float4s) where v4_ok
 * says each of them allows it, else by k1 */
template <typename J, typename V4>
static void maps_launch(std::initializer_list<J> maps, V4 v4_ok, void (*k4)(Maps<J>), void (*k1)(Maps<J>))
{
	Maps<J> ms = {};
	unsigned nb = 0, i = 0;
	bool v4 = true;
	for (const J &f : maps) {
		ms.m[i] = f, ms.first[i++] = nb, nb += row_blocks(f.rows);
		v4 = v4 && v4_ok(f);
	}
	for (; i < 4; i++)
		ms.first[i] = nb;
	if (!nb)
		return;
	(v4 ? k4 : k1)<<<nb, ROW_WARPS * WARP_SIZE>>>(ms);
	cudaCheck(cudaGetLastError());
}

static void feature_forward(std::initializer_list<FeatFwd> maps)
{
	maps_launch(
		maps,
		[](const FeatFwd &f) { return row_v4(f.D, {f.out, f.p, f.b}, NULL, 0, f.ld) && f.width % 4 == 0; },
		feature_forward_kernel<4>, feature_forward_kernel<1>);
}

static void feature_backward(std::initializer_list<FeatBwd> maps)
{
	maps_launch(
		maps, [](const FeatBwd &f) { return row_v4(f.D, {f.dp, f.dout, f.y, f.p}, f.dp16, f.ld16, f.ld); },
		feature_backward_kernel<4>, feature_backward_kernel<1>);
}

/* the gated output norm and its backward (one of dzg, dzg16) */
static void onorm_forward(float *y, bf16_t *y16, float *rstd, const float *o, const float *zg, int hp, int ld,
                          const float *on, int rows, int D)
{
	auto f = row_v4(D, {y, o, zg, on}, y16, 0, ld) ? onorm_forward_kernel<4> : onorm_forward_kernel<1>;
	f<<<row_blocks(rows), ROW_WARPS * WARP_SIZE>>>(y, (bf16 *)y16, rstd, o, zg, hp, ld, on, rows, D);
	cudaCheck(cudaGetLastError());
}

/* y's codes for the output product instead of y (n tokens of hp rows);
 * 0 where hp > ROW_WARPS OF8_HPW */
static int onorm_forward_fp8(uint8_t *q, float *scale, float *rstd, const float *o, const float *zg, int hp, int ld,
                             const float *on, int n, int D)
{
	if (fp8_unfused() || hp > ROW_WARPS * OF8_HPW)
		return 0;
	if (n == 0)
		return 1;
	auto f = row_v4(D, {o, zg, on}, NULL, 0, ld) && ((uintptr_t)q & 3) == 0 ? onorm_forward_fp8_kernel<4>
	                                                                        : onorm_forward_fp8_kernel<1>;
	f<<<n, ROW_WARPS * WARP_SIZE>>>(q, scale, rstd, o, zg, hp, ld, on, D);
	cudaCheck(cudaGetLastError());
	return 1;
}

static void onorm_backward(float *dO, float *dzg, bf16_t *dzg16, int hp, int ld16, const float *dy, float *gon,
                           float scale, const float *o, const float *rstd, const float *zg, int ld, const float *on,
                           int rows, int D)
{
	auto f = row_v4(D, {dO, dzg, dy, gon, o, zg, on}, dzg16, ld16, ld) ? onorm_backward_kernel<4>
	                                                                   : onorm_backward_kernel<1>;
	f<<<row_blocks(rows), ROW_WARPS * WARP_SIZE>>>(dO, dzg, (bf16 *)dzg16, hp, ld16, dy, gon, scale, o, rstd, zg, ld,
	                                               on, rows, D);
	cudaCheck(cudaGetLastError());
}

/* out (n, OC) = x (n, IC) W^T, W (OC, IC); row-major, so in cuBLAS's
 * column-major terms out^T = W x^T (as kernels/matmul.cu). TF32 unless
 * f32 (float32 products, no tensor cores). */
static void lin_(float *out, const float *x, const float *W, int n, int IC, int OC, int f32, int ldo)
{
	const float one = 1, zero = 0;
	cublasCheck(cublasGemmEx(cublas_handle(), CUBLAS_OP_T, CUBLAS_OP_N, OC, n, IC, &one, W, CUDA_R_32F, IC, x,
	                         CUDA_R_32F, IC, &zero, out, CUDA_R_32F, ldo,
	                         f32 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
}
static void lin(float *out, const float *x, const float *W, int n, int IC, int OC)
{
	lin_(out, x, W, n, IC, OC, 0, OC);
}

/* dx (n, IC) = dout (n, OC) W, or += when add */
static void lin_dx(float *dx, const float *dout, const float *W, int n, int IC, int OC, int add)
{
	const float one = 1, beta = add ? 1.0f : 0.0f;
	cublasCheck(cublasGemmEx(cublas_handle(), CUBLAS_OP_N, CUBLAS_OP_N, IC, n, OC, &one, W, CUDA_R_32F, IC, dout,
	                         CUDA_R_32F, OC, &beta, dx, CUDA_R_32F, IC, CUBLAS_COMPUTE_32F_FAST_TF32,
	                         CUBLAS_GEMM_DEFAULT));
}

/* dW (OC, IC) += dout^T x: dW^T = x^T dout in column-major terms */
static void lin_dw(float *dW, const float *dout, const float *x, int n, int IC, int OC)
{
	const float one = 1;
	cublasCheck(cublasGemmEx(cublas_handle(), CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, n, &one, x, CUDA_R_32F, IC, dout,
	                         CUDA_R_32F, OC, &one, dW, CUDA_R_32F, IC, CUBLAS_COMPUTE_32F_FAST_TF32,
	                         CUBLAS_GEMM_DEFAULT));
}

/* db (cols) += the sum of the rows of x (rows, cols), float32: x^T ones */
static void colsum(float *db, const float *x, const float *ones, int rows, int cols)
{
	const float one = 1;
	cublasCheck(cublasSgemv(cublas_handle(), CUBLAS_OP_N, cols, rows, &one, x, cols, ones, 1, &one, db, 1));
}

// ----------------------------------------------------------------------------
// the operator

struct GpuLopArena {
	void *d;
	size_t bytes;
	const GpuLop *user; /* whose forward it holds */
};

struct GpuLop {
	LinearOp op; /* the layout, w NULL */
	int max_tokens;
	float *w;    /* (op.n) the parameters */
	GpuLopArena *arena, *own; /* everything else; own when not shared */
	size_t work_bytes;
	/* kept by the forward, (n, ...) */
	float *pj;                  /* (n, ldp) gdn: its input projections side by side (proj_off) */
	int ldp;                    /* gdn: the token stride of pq ... zg there, their width rounded up to 16 */
	float *pq, *pk, *pv;        /* projections + bias: HD (gdn; gla: q), GD, GD */
	float *q, *k, *v;           /* the recurrence's inputs, HD each */
	float *qinv, *kinv;         /* H, G (gdn) */
	float *za, *zb, *g, *beta;  /* H each (gdn) */
	float *h1, *zgk, *gk;       /* R, HD, HD (gla) */
	float *o, *rstd, *zg;       /* HD, H, HD */
	/* scratch: the forward's y; the backward's dy, dO, dzg, dq, dk, dv, dgk */
	float *s[5];                /* HD each (s[4] gla only) */
	float *dpk, *dpv;           /* GD each */
	float *dg, *dbeta, *dAg;    /* H each (gdn) */
	float *dh1;                 /* R (gla) */
	float *ones;                /* (n H) ones for the column sums, outside the arena */
	void *work;                 /* the chunked recurrences' */
	const void *last_u;         /* the last forward's input and shape */
	int last_B, last_T;
	int kept;                   /* gdn: work holds the last forward's chunk states (one recurrence call) */
	/* gdn's bf16 path (gpu_lop_forward_bf16) */
	int half;                   /* the last forward took it */
	bf16_t *w16;                /* bf16 weights, rows wq wk wv wa wb wg (OCcat, C), then wo (C, HD), bo (C) */
	int w16_ok;                 /* w16 holds w (0 again once gpu_lop_params hands w out) */
	bf16_t *dp16;               /* (n, ldd) in the arena: the backward's dpq dpk dpv dza dzb dzg */
	int ldd;                    /* OCcat rounded up to 16; the columns past OCcat zero for e4m3 */
	/* gdn's bf16 path's backward products in e4m3 (gpu_lop_grad_fp8) */
	int fp8;
	uint8_t *w8, *wo8;          /* [wq; ...; wg]^T (C, ldd) and wo^T (HD, C), made with w16 */
	float *w8s, *wo8s;          /* their scales, (C) and (HD) */
	uint8_t *sq;                /* the caller's scratch: (n, max(C, ldd)) codes, (n) scales */
	float *ss;
	/* its forward's two products in e4m3 (gpu_lop_forward_fp8) */
	int fwd8;
	uint8_t *wf8, *wof8;        /* [wq; ...; wg] by rows (ldp, C; rows past OCcat zero), wo (C, HD) */
	float *wf8s, *wof8s;        /* their scales, (ldp) and (C) */
};

/* gdn's input projections side by side: their outputs' width, and the
 * offset of each block (in the order of the rows of w16) */
enum { PJ_Q, PJ_K, PJ_V, PJ_A, PJ_B, PJ_G, PJ_N };
static int proj_off(const LinearOp *op, int j)
{
	int HD = op->H * op->D, GD = op->G * op->D, w[PJ_N] = {HD, GD, GD, op->H, op->H, HD}, off = 0;
	for (int i = 0; i < j; i++)
		off += w[i];
	return off;
}

/* dp16's token stride: the projections' width rounded up to 16, which
 * e4m3 products want of their K (the columns past it zero) */
static int dp_ld(const LinearOp *op) { return (proj_off(op, PJ_N) + 15) / 16 * 16; }

static void layout(GpuLop *g, Carver *c)
{
	const LinearOp *op = &g->op;
	size_t N = (size_t)g->max_tokens, H = op->H, G = op->G, HD = H * op->D, GD = G * op->D;
	int gdn = op->kind == LOP_GDN;
	CARVE(c, g->q, N * HD), CARVE(c, g->k, N * HD), CARVE(c, g->v, N * HD);
	if (gdn) { /* the six input projections' outputs side by side: one GEMM */
		g->ldp = dp_ld(op); /* what an e4m3 product's width wants (gpu_lop_forward_fp8) */
		CARVE(c, g->pj, N * g->ldp);
		g->pq = g->pj + proj_off(op, PJ_Q), g->pk = g->pj + proj_off(op, PJ_K), g->pv = g->pj + proj_off(op, PJ_V);
		g->za = g->pj + proj_off(op, PJ_A), g->zb = g->pj + proj_off(op, PJ_B), g->zg = g->pj + proj_off(op, PJ_G);
	} else {
		g->pq = g->q; /* gla: q = pq + bq in place */
		CARVE(c, g->pk, N * GD), CARVE(c, g->pv, N * GD), CARVE(c, g->zg, N * HD);
	}
	if (gdn) {
		CARVE(c, g->qinv, N * H), CARVE(c, g->kinv, N * G);
		CARVE(c, g->g, N * H), CARVE(c, g->beta, N * H);
		CARVE(c, g->dg, N * H), CARVE(c, g->dbeta, N * H), CARVE(c, g->dAg, N * H);
	} else {
		CARVE(c, g->h1, N * op->R), CARVE(c, g->zgk, N * HD), CARVE(c, g->gk, N * HD);
		CARVE(c, g->dh1, N * op->R);
	}
	CARVE(c, g->o, N * HD), CARVE(c, g->rstd, N * H);
	for (int i = 0; i < (gdn ? 4 : 5); i++)
		CARVE(c, g->s[i], N * HD);
	CARVE(c, g->dpk, N * GD), CARVE(c, g->dpv, N * GD);
	if (gdn) {
		g->ldd = dp_ld(op);
		CARVE(c, g->dp16, N * g->ldd);
	}
	g->work = carve(c, g->work_bytes);
}

/* the recurrences' work for B sequences of T tokens */
static size_t chunk_work(const LinearOp *op, int B, int T)
{
	return op->kind == LOP_GDN ? gdn_chunked_work(B, T, op->H, op->D, op->D)
	                           : gla_chunked_work(B, T, op->H, op->D, op->D);
}

__global__ void fill_kernel(float *x, float v, int64_t n)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		x[i] = v;
}

static void check_op(const LinearOp *op, int max_tokens)
{
	if (op->kind != LOP_GDN && op->kind != LOP_GLA)
		die("gpu_lop_new: no GPU operator %s", lop_name(op->kind));
	if (op->D < 1 || op->D > ROW_VALS * WARP_SIZE)
		die("gpu_lop_new: head dim %d outside 1..%d", op->D, ROW_VALS * WARP_SIZE);
	if (max_tokens < 1)
		BUG("gpu_lop_new: max_tokens %d", max_tokens);
}

/* g's layout at max_tokens, carved from base 0 (to size it) or an arena */
static size_t lay_out(GpuLop *g, const LinearOp *op, int max_tokens, uintptr_t base)
{
	g->op = *op;
	g->op.w = NULL, g->op.inv_freq = NULL; /* and nothing else of op's is used */
	g->max_tokens = max_tokens;
	/* one sequence of max_tokens (the work grows with the chunks, and B
	 * sequences of 1 token would need 2 max_tokens chunks' worth); a call
	 * runs its sequences in groups that fit, see seq_group */
	g->work_bytes = chunk_work(op, 1, max_tokens);
	Carver c = {base, 0};
	layout(g, &c);
	return c.off;
}

extern "C" size_t gpu_lop_arena_bytes(const LinearOp *op, int max_tokens)
{
	check_op(op, max_tokens);
	GpuLop g;
	memset(&g, 0, sizeof g);
	return lay_out(&g, op, max_tokens, 0);
}

extern "C" GpuLopArena *gpu_lop_arena_new(size_t bytes)
{
	GpuLopArena *a = (GpuLopArena *)callocCheck(1, sizeof *a);
	a->bytes = bytes;
	a->d = gpu_alloc(bytes);
	return a;
}

extern "C" void gpu_lop_arena_free(GpuLopArena *a)
{
	if (a)
		gpu_free(a->d), free(a);
}

extern "C" GpuLop *gpu_lop_new(const LinearOp *op, int max_tokens, GpuLopArena *arena)
{
	size_t bytes = gpu_lop_arena_bytes(op, max_tokens);
	GpuLop *g = (GpuLop *)callocCheck(1, sizeof *g);
	if (!arena)
		arena = g->own = gpu_lop_arena_new(bytes);
	if (arena->bytes < bytes)
		BUG("gpu_lop_new: a shared arena of %zu bytes, %s needs %zu", arena->bytes, lop_name(op->kind), bytes);
	g->arena = arena;
	lay_out(g, op, max_tokens, (uintptr_t)arena->d);
	g->w = (float *)gpu_alloc(op->n * sizeof(float));
	gpu_upload(g->w, op->w, op->n * sizeof(float));
	int64_t no = (int64_t)max_tokens * op->H;
	g->ones = (float *)gpu_alloc((size_t)no * sizeof(float));
	fill_kernel<<<ew_blocks(no), EW_THREADS>>>(g->ones, 1.0f, no);
	cudaCheck(cudaGetLastError());
	return g;
}

extern "C" void gpu_lop_free(GpuLop *g)
{
	if (!g)
		return;
	gpu_lop_arena_free(g->own);
	gpu_free(g->w), gpu_free(g->ones), gpu_free(g->w16), gpu_free(g->w8), gpu_free(g->wf8);
	free(g);
}

extern "C" float *gpu_lop_params(GpuLop *g)
{
	g->w16_ok = 0; /* the caller may change them */
	return g->w;
}

extern "C" void gpu_lop_download(GpuLop *g, LinearOp *op)
{
	if (op->kind != g->op.kind || op->n != g->op.n)
		BUG("gpu_lop_download: %s with %zu parameters into %s with %zu", lop_name(g->op.kind), g->op.n,
		    lop_name(op->kind), op->n);
	gpu_download(op->w, g->w, op->n * sizeof(float));
}

/* the parameter block name in the device parameters (or gradient) x */
static float *P(const GpuLop *g, float *x, const char *name)
{
	const LopParam *p = lop_param(&g->op, name);
	if (!p)
		BUG("gpu_lop: no parameter %s in %s", name, lop_name(g->op.kind));
	return x + p->off;
}

static void check_shape(const GpuLop *g, int B, int T)
{
	if (B < 1 || T < 1 || (int64_t)B * T > g->max_tokens)
		BUG("gpu_lop: B %d x T %d tokens, at most %d", B, T, g->max_tokens);
}

/* seq_group: how many sequences of T tokens one call of the recurrences
 * takes within the work: B when B*T fills whole chunks of 64, fewer when
 * the last chunks of the sequences are short (at least 1, as T <=
 * max_tokens) */
static int seq_group(const GpuLop *g, int B, int T)
{
	int nb = B;
	while (nb > 1 && chunk_work(&g->op, nb, T) > g->work_bytes)
		nb--;
	return nb;
}

/* DASH_GDN_RECOMPUTE=1: gdn's backward recomputes the recurrence's forward
 * states (the old path, for comparison) instead of reading what the forward
 * left in the work */
static int gdn_recompute(void)
{
	const char *e = getenv("DASH_GDN_RECOMPUTE");
	return e && !strcmp(e, "1");
}

/* gdn's bf16 weights, made from w when w16 does not hold them (first use,
 * or gpu_lop_params since) */
static void half_weights(GpuLop *g)
{
	const LinearOp *op = &g->op;
	size_t C = op->C, HD = (size_t)op->H * op->D, OC = proj_off(op, PJ_N);
	if (!g->w16)
		g->w16 = (bf16_t *)gpu_alloc((OC * C + C * HD + C) * sizeof(bf16_t));
	if (g->w16_ok)
		return;
	/* one after another, in the order of the PJ_ blocks, then wo and bo */
	const char *nm[] = {"wq", "wk", "wv", "wa", "wb", "wg", "wo", "bo"};
	for (size_t j = 0, at = 0; j < 8; j++) {
		const LopParam *p = lop_param(op, nm[j]);
		size_t cnt = (size_t)p->rows * p->cols;
		f32_to_bf16_cuda(g->w16 + at, g->w + p->off, cnt);
		at += cnt;
	}
	g->w16_ok = 1;
	if (g->fp8) { /* their codes: the projections' K padded with zero rows to ldd */
		size_t pad = (size_t)g->ldd * C;
		bf16_t *t = (bf16_t *)gpu_alloc(pad * sizeof(bf16_t));
		cudaCheck(cudaMemsetAsync(t + OC * C, 0, (pad - OC * C) * sizeof(bf16_t)));
		cudaCheck(cudaMemcpyAsync(t, g->w16, OC * C * sizeof(bf16_t), cudaMemcpyDeviceToDevice));
		fp8_cols_t_cuda(g->w8, g->w8s, t, g->ldd, (int)C);
		fp8_cols_t_cuda(g->wo8, g->wo8s, g->w16 + OC * C, (int)C, (int)HD);
		gpu_free(t);
	}
	if (g->fwd8) { /* by their rows, the projections' padded with zero rows to ldp */
		size_t ldp = dp_ld(op);
		cudaCheck(cudaMemsetAsync(g->wf8, 0, ldp * C));
		cudaCheck(cudaMemsetAsync(g->wf8s, 0, ldp * sizeof(float)));
		fp8_rows_cuda(g->wf8, g->wf8s, g->w16, (int)OC, (int)C);
		fp8_rows_cuda(g->wof8, g->wof8s, g->w16 + OC * C, (int)C, (int)HD);
	}
}

/* the scratch a search's gdn columns share, run one after another: the
 * codes of max_tokens rows of da or dp (this many bytes), then their scales */
static size_t scratch_codes(const LinearOp *op, int max_tokens)
{
	size_t k = std::max(dp_ld(op), op->C);
	return ((size_t)max_tokens * k + 255) / 256 * 256;
}

extern "C" size_t gpu_lop_fp8_scratch_bytes(const LinearOp *op, int max_tokens)
{
	return scratch_codes(op, max_tokens) + (size_t)max_tokens * sizeof(float);
}

extern "C" int gpu_lop_fp8_fits(const LinearOp *op)
{
	return op->kind == LOP_GDN && op->C % 16 == 0 && op->H * op->D % 16 == 0;
}

/* what both float8 switches check and set: the op, the GPU, the widths and
 * the rows' scratch */
static void fp8_check(GpuLop *g, const char *who, const char *flag, void *d_scratch)
{
	const LinearOp *op = &g->op;
	if (op->kind != LOP_GDN)
		BUG("%s: %s, not gdn", who, lop_name(op->kind));
	if (cuda_cc_major() < 9)
		die("%s wants a GPU of compute capability 9.0 or newer (Hopper), this one is %d.x", flag,
		    cuda_cc_major());
	if (!gpu_lop_fp8_fits(op))
		die("%s wants gdn's widths in multiples of 16, not C %d, H*D %d", flag, op->C, op->H * op->D);
	g->sq = (uint8_t *)d_scratch;
	g->ss = (float *)(g->sq + scratch_codes(op, g->max_tokens));
}

/* the codes of the projections (rows x cols bytes, rows scales) and of wo
 * (rows2 x cols2, rows2 scales) in one allocation, unless *on already;
 * their bytes. They are made with w16, so w16 is made again at the next
 * forward. */
static size_t codes_alloc(GpuLop *g, int *on, uint8_t **q, float **s, uint8_t **qo, float **so, size_t rows,
                          size_t cols, size_t rows2, size_t cols2)
{
	size_t b = rows * cols, bo = rows2 * cols2, bytes = b + bo + (rows + rows2) * sizeof(float);
	if (!*on) {
		*q = (uint8_t *)gpu_alloc(bytes);
		*qo = *q + b;
		*s = (float *)(*qo + bo), *so = *s + rows;
		*on = 1, g->w16_ok = 0;
	}
	return bytes;
}

extern "C" size_t gpu_lop_grad_fp8(GpuLop *g, void *d_scratch)
{
	const LinearOp *op = &g->op;
	fp8_check(g, "gpu_lop_grad_fp8", "--grad fp8", d_scratch);
	/* by their columns: [wq; ...; wg]^T (C, ldd), wo^T (HD, C) */
	return codes_alloc(g, &g->fp8, &g->w8, &g->w8s, &g->wo8, &g->wo8s, op->C, g->ldd, (size_t)op->H * op->D,
	                   op->C);
}

extern "C" size_t gpu_lop_forward_fp8(GpuLop *g, void *d_scratch)
{
	const LinearOp *op = &g->op;
	fp8_check(g, "gpu_lop_forward_fp8", "--forward fp8", d_scratch);
	/* by their rows: [wq; ...; wg] (ldp, C), wo (C, HD) */
	return codes_alloc(g, &g->fwd8, &g->wf8, &g->wf8s, &g->wof8, &g->wof8s, dp_ld(op), op->C, op->C,
	                   (size_t)op->H * op->D);
}

/* the token stride of a projection's output of width values: gdn's sit
 * side by side in pj */
static int ldp(const GpuLop *g, int width) { return g->op.kind == LOP_GDN ? g->ldp : width; }

/* out (n, OC; its rows ldo apart) float32 = x (n, IC) W^T, bf16 operands */
static void lin16(float *out, int ldo, const bf16_t *x, const bf16_t *W, int n, int IC, int OC)
{
	gemm_bf16(CUBLAS_OP_T, OC, n, IC, W, IC, x, IC, out, CUDA_R_32F, ldo);
}

/* the forward of gpu_lop_forward (d_S NULL: zero states, none kept), of
 * gpu_lop_forward_state (d_S (B, H, D, D) in and out; nothing kept for a
 * backward) and of gpu_lop_forward_bf16 (half: d_u and d_a bf16, the GEMMs
 * in bf16). A decoding step (T 1, D 64 or 128) runs the recurrent kernel,
 * one launch for all B: the chunked one would pad each token to a chunk of
 * 64. */
static void forward(GpuLop *g, void *d_a, const void *d_u, const uint8_t *d_uq, const float *d_us, int B, int T,
                    float *d_S, int half)
{
	const LinearOp *op = &g->op;
	int n = B * T, C = op->C, H = op->H, G = op->G, D = op->D, R = op->R, HD = H * D, GD = G * D;
	int gdn = op->kind == LOP_GDN, rep = H / G, step = d_S && T == 1 && (D == 64 || D == 128), kept = 0;
	size_t HDD = (size_t)H * D * D; /* a sequence's state */
	float *w = g->w, scale = 1 / sqrtf((float)D);
	const float *uf = (const float *)d_u;
	const bf16_t *u16 = (const bf16_t *)d_u;
	check_shape(g, B, T);
	if (half && (!gdn || d_S))
		BUG("gpu_lop_forward_bf16: gdn from zero states only");
	if (half && g->fwd8) { /* all six in one e4m3 product, from u's codes (given, or made here) */
		half_weights(g);
		if (!d_uq)
			fp8_rows_cuda(g->sq, g->ss, u16, n, C), d_uq = g->sq, d_us = g->ss;
		matmul_backward_fp8_cuda(g->pj, 1, 0, d_uq, d_us, g->wf8, g->wf8s, n, g->ldp, C);
	} else if (half) { /* all six input projections in one GEMM */
		half_weights(g);
		lin16(g->pj, g->ldp, u16, g->w16, n, C, proj_off(op, PJ_N));
	} else { /* gla's q and k in float32 (kernels/gpu_lop.h says why) */
		lin_(g->pq, uf, P(g, w, "wq"), n, C, HD, !gdn, ldp(g, HD));
		lin_(g->pk, uf, P(g, w, "wk"), n, C, GD, !gdn, ldp(g, GD));
		lin_(g->pv, uf, P(g, w, "wv"), n, C, GD, 0, ldp(g, GD));
	}
	feature_forward({FeatFwd{g->q, g->qinv, g->pq, P(g, w, "bq"), H, ldp(g, HD), n * H, D, HD, 1, gdn, gdn},
	                 FeatFwd{g->k, g->kinv, g->pk, P(g, w, "bk"), G, ldp(g, GD), n * G, D, GD, rep, gdn, gdn},
	                 FeatFwd{g->v, NULL, g->pv, P(g, w, "bv"), G, ldp(g, GD), n * G, D, GD, rep, gdn, 0}});
	if (gdn) {
		if (!half) {
			lin_(g->za, uf, P(g, w, "wa"), n, C, H, 0, g->ldp);
			lin_(g->zb, uf, P(g, w, "wb"), n, C, H, 0, g->ldp);
		}
		gdn_gates_kernel<<<ew_blocks((int64_t)n * H), EW_THREADS>>>(g->g, g->beta, g->za, g->zb, g->ldp,
		                                                            P(g, w, "dt_bias"), P(g, w, "A_log"), n, H);
		cudaCheck(cudaGetLastError());
		kept = !d_S && !gdn_recompute() && seq_group(g, B, T) >= B;
		if (step)
			gdn_forward_recurrent_cuda(g->o, d_S, g->q, g->k, g->v, g->g, g->beta, B, 1, H, D, D, scale);
		else if (kept) /* one call: its chunk states stay in the work for the backward */
			gdn_forward_chunked_keep_cuda(g->o, NULL, g->q, g->k, g->v, g->g, g->beta, B, T, H, D, D, scale,
			                              g->work, half);
		else
			for (int b = 0, nb = seq_group(g, B, T); b < B; b += nb) {
				size_t x = (size_t)b * T * HD, h = (size_t)b * T * H; /* sequence b's rows */
				gdn_forward_chunked_cuda(g->o + x, d_S ? d_S + (size_t)b * HDD : NULL, g->q + x, g->k + x,
				                         g->v + x, g->g + h, g->beta + h, B - b < nb ? B - b : nb, T, H, D, D,
				                         scale, g->work);
			}
	} else {
		lin(g->h1, uf, P(g, w, "wgk1"), n, C, R);
		lin(g->zgk, g->h1, P(g, w, "wgk2"), n, R, HD);
		gla_gates_kernel<<<ew_blocks((int64_t)n * HD), EW_THREADS>>>(g->gk, g->zgk, P(g, w, "bgk"), n, HD);
		cudaCheck(cudaGetLastError());
		if (step)
			gla_forward_recurrent_cuda(g->o, d_S, g->q, g->k, g->v, g->gk, B, 1, H, D, D, scale);
		else
			for (int b = 0, nb = seq_group(g, B, T); b < B; b += nb) {
				size_t x = (size_t)b * T * HD;
				gla_forward_chunked_cuda(g->o + x, d_S ? d_S + (size_t)b * HDD : NULL, g->q + x, g->k + x,
				                         g->v + x, g->gk + x, B - b < nb ? B - b : nb, T, H, D, D, scale,
				                         g->work);
			}
	}
	float *y = g->s[0];
	bf16_t *y16 = half ? (bf16_t *)g->s[0] : NULL;
	if (!half)
		lin_(g->zg, uf, P(g, w, "wg"), n, C, HD, 0, ldp(g, HD));
	/* y, or under the e4m3 forward only its codes */
	int y8 = half && g->fwd8 &&
	         onorm_forward_fp8(g->sq, g->ss, g->rstd, g->o, g->zg, H, ldp(g, HD), P(g, w, "onorm"), n, D);
	if (!y8)
		onorm_forward(y, y16, g->rstd, g->o, g->zg, H, ldp(g, HD), P(g, w, "onorm"), n * H, D);
	if (half) { /* wo and bo follow the projections in w16 */
		const bf16_t *wo = g->w16 + (size_t)proj_off(op, PJ_N) * C;
		if (g->fwd8) {
			if (!y8)
				fp8_rows_cuda(g->sq, g->ss, y16, n, HD);
			matmul_forward_fp8_cuda((bf16_t *)d_a, NULL, g->sq, g->ss, g->wof8, g->wof8s, n, HD, C);
			add_bias_cuda((bf16_t *)d_a, wo + (size_t)C * HD, 1.0f, n, C);
		} else {
			matmul_forward_cuda((bf16_t *)d_a, y16, wo, wo + (size_t)C * HD, n, HD, C);
		}
	} else {
		lin((float *)d_a, y, P(g, w, "wo"), n, HD, C);
		add_bias_kernel<<<ew_blocks((int64_t)n * C), EW_THREADS>>>((float *)d_a, P(g, w, "bo"), n, C);
		cudaCheck(cudaGetLastError());
	}
	/* from given states, the recurrence's kept activations are not what
	 * gpu_lop_backward (from a zero state) would need: it refuses */
	g->last_u = d_S ? NULL : d_u, g->last_B = d_S ? 0 : B, g->last_T = d_S ? 0 : T;
	g->kept = kept, g->half = half;
	g->arena->user = g;
}

extern "C" void gpu_lop_forward(GpuLop *g, float *d_a, const float *d_u, int B, int T)
{
	forward(g, d_a, d_u, NULL, NULL, B, T, NULL, 0);
}

extern "C" void gpu_lop_forward_state(GpuLop *g, float *d_a, const float *d_u, int B, int T, float *d_S)
{
	if (!d_S)
		BUG("gpu_lop_forward_state: no states");
	forward(g, d_a, d_u, NULL, NULL, B, T, d_S, 0);
}

extern "C" void gpu_lop_forward_bf16(GpuLop *g, uint16_t *d_a, const uint16_t *d_u, const uint8_t *d_uq,
                                     const float *d_us, int B, int T)
{
	forward(g, d_a, d_u, d_uq, d_us, B, T, NULL, 1);
}

/* the backward of a projection p = x W^T (+ b): dW += dp^T x, db += the
 * column sums of dp (b may be NULL) unless grad is NULL, dx += dp W when dx
 * (add 0: =) */
static void proj_back(const GpuLop *g, float *grad, float *dx, int add, const float *dp, const float *x,
                      const char *wname, const char *bname, int n, int IC, int OC)
{
	if (grad) {
		lin_dw(P(g, grad, wname), dp, x, n, IC, OC);
		if (bname)
			colsum(P(g, grad, bname), dp, g->ones, n, OC);
	}
	if (dx)
		lin_dx(dx, dp, P(g, g->w, wname), n, IC, OC, add);
}

extern "C" void gpu_lop_backward(GpuLop *g, float *d_grad, float *d_du, const float *d_da, const float *d_u, int B,
                                 int T)
{
	const LinearOp *op = &g->op;
	int n = B * T, C = op->C, H = op->H, G = op->G, D = op->D, R = op->R, HD = H * D, GD = G * D;
	int gdn = op->kind == LOP_GDN, rep = H / G;
	float *w = g->w, scale = 1 / sqrtf((float)D);
	check_shape(g, B, T);
	if (d_u != g->last_u || B != g->last_B || T != g->last_T || g->half)
		BUG("gpu_lop_backward: the last forward was not gpu_lop_forward on this u, B %d, T %d", B, T);
	if (g->arena->user != g)
		BUG("gpu_lop_backward: another operator's forward has run in the shared arena since this one's");
	/* a = Wo y + bo, y recomputed into s[0] (for dWo only) */
	float *y = g->s[0], *dy = g->s[1], *dO = g->s[2], *dzg = g->s[0];
	if (d_grad) {
		onorm_y_kernel<<<ew_blocks((int64_t)n * HD), EW_THREADS>>>(y, g->rstd, g->o, g->zg, HD, ldp(g, HD),
		                                                           P(g, w, "onorm"),
		                                                           (int64_t)n * HD, D);
		cudaCheck(cudaGetLastError());
	}
	proj_back(g, d_grad, dy, 0, d_da, y, "wo", "bo", n, HD, C);
	/* y = o rstd onorm silu(zg); dzg takes y's place */
	onorm_backward(dO, dzg, NULL, H, 0, dy, d_grad ? dy : NULL, 1.0f, g->o, g->rstd, g->zg, ldp(g, HD),
	               P(g, w, "onorm"), n * H,
	               D);
	if (d_grad)
		colsum(P(g, d_grad, "onorm"), dy, g->ones, n * H, D);
	proj_back(g, d_grad, d_du, 0, dzg, d_u, "wg", NULL, n, C, HD);
	/* the recurrence: dq, dk, dv into the free s[0], s[1], s[3] */
	float *dq = g->s[0], *dk = g->s[1], *dv = g->s[3];
	if (gdn) {
		if (g->kept) /* the forward's one call left its chunk states in the work */
			gdn_backward_chunked_kept_cuda(dq, dk, dv, g->dg, g->dbeta, NULL, dO, NULL, g->q, g->k, g->v, g->g,
			                               g->beta, NULL, B, T, H, D, D, scale, g->work, 0);
		else
			for (int b = 0, nb = seq_group(g, B, T); b < B; b += nb) {
				size_t x = (size_t)b * T * HD, h = (size_t)b * T * H;
				gdn_backward_chunked_cuda(dq + x, dk + x, dv + x, g->dg + h, g->dbeta + h, NULL, dO + x,
				                          NULL, g->q + x, g->k + x, g->v + x, g->g + h, g->beta + h, NULL,
				                          B - b < nb ? B - b : nb, T, H, D, D, scale, g->work);
			}
		/* beta = sigmoid(zb); g = -exp(A) softplus(za) */
		gdn_gates_backward_kernel<<<ew_blocks((int64_t)n * H), EW_THREADS>>>(
			g->dg, g->dbeta, g->dAg, NULL, 0, 0, 0, g->g, g->beta, g->za, g->ldp, P(g, w, "A_log"), n, H);
		cudaCheck(cudaGetLastError());
		if (d_grad)
			colsum(P(g, d_grad, "A_log"), g->dAg, g->ones, n, H);
		proj_back(g, d_grad, d_du, 1, g->dbeta, d_u, "wb", NULL, n, C, H);
		proj_back(g, d_grad, d_du, 1, g->dg, d_u, "wa", "dt_bias", n, C, H);
		/* q = l2norm(silu(pq)), k likewise before the repeat, v = silu(pv) */
		feature_backward({FeatBwd{dq, NULL, dq, g->q, g->qinv, g->pq, H, 0, g->ldp, n * H, D, 1, 1, 1},
		                  FeatBwd{g->dpk, NULL, dk, g->k, g->kinv, g->pk, G, 0, g->ldp, n * G, D, rep, 1, 1},
		                  FeatBwd{g->dpv, NULL, dv, NULL, NULL, g->pv, G, 0, g->ldp, n * G, D, rep, 1, 0}});
	} else {
		float *dgk = g->s[4];
		for (int b = 0, nb = seq_group(g, B, T); b < B; b += nb) {
			size_t x = (size_t)b * T * HD;
			gla_backward_chunked_cuda(dq + x, dk + x, dv + x, dgk + x, NULL, dO + x, NULL, g->q + x, g->k + x,
			                          g->v + x, g->gk + x, NULL, B - b < nb ? B - b : nb, T, H, D, D, scale,
			                          g->work);
		}
		/* gk = logsigmoid(zgk) / 16, zgk = Wgk2 h1 + bgk, h1 = Wgk1 u */
		gla_gates_backward_kernel<<<ew_blocks((int64_t)n * HD), EW_THREADS>>>(dgk, g->zgk, (int64_t)n * HD);
		cudaCheck(cudaGetLastError());
		proj_back(g, d_grad, g->dh1, 0, dgk, g->h1, "wgk2", "bgk", n, R, HD);
		proj_back(g, d_grad, d_du, 1, g->dh1, d_u, "wgk1", NULL, n, C, R);
		feature_backward({FeatBwd{g->dpk, NULL, dk, NULL, NULL, NULL, G, 0, GD, n * G, D, rep, 0, 0},
		                  FeatBwd{g->dpv, NULL, dv, NULL, NULL, NULL, G, 0, GD, n * G, D, rep, 0, 0}});
	}
	proj_back(g, d_grad, d_du, 1, dq, d_u, "wq", "bq", n, C, HD);
	proj_back(g, d_grad, d_du, 1, g->dpk, d_u, "wk", "bk", n, C, GD);
	proj_back(g, d_grad, d_du, 1, g->dpv, d_u, "wv", "bv", n, C, GD);
}

extern "C" void gpu_lop_backward_bf16(GpuLop *g, float *d_du, float w, int accumulate, const uint16_t *d_da,
                                      const uint8_t *d_daq, const float *d_das, int B, int T)
{
	const LinearOp *op = &g->op;
	int n = B * T, C = op->C, H = op->H, G = op->G, D = op->D, HD = H * D, rep = H / G;
	int OC = proj_off(op, PJ_N);
	float scale = 1 / sqrtf((float)D);
	check_shape(g, B, T);
	if (!g->half || !g->last_u || B != g->last_B || T != g->last_T)
		BUG("gpu_lop_backward_bf16: the last forward was not gpu_lop_forward_bf16 of B %d, T %d", B, T);
	if (g->arena->user != g)
		BUG("gpu_lop_backward_bf16: another operator's forward has run in the shared arena since this one's");
	/* dy = w da Wo (w taken in by the norm's backward: everything after is
	 * linear in it); dzg and, below, every projection's gradient in bf16
	 * side by side in dp16, for one GEMM into du */
	float *dy = g->s[1], *dO = g->s[2];
	bf16_t *dp = g->dp16;
	int ldd = g->ldd;
	if (g->fp8) {
		if (!d_daq)
			fp8_rows_cuda(g->sq, g->ss, d_da, n, C), d_daq = g->sq, d_das = g->ss;
		matmul_backward_fp8_cuda(dy, 1, 0, d_daq, d_das, g->wo8, g->wo8s, n, HD, C);
	} else {
		gemm_bf16(CUBLAS_OP_N, HD, n, C, g->w16 + (size_t)OC * C, HD, d_da, C, dy, CUDA_R_32F, HD);
	}
	check_finite_cuda("gdn dy", -1, dy, (size_t)n * HD, 1);
	onorm_backward(dO, NULL, dp + proj_off(op, PJ_G), H, ldd, dy, NULL, w, g->o, g->rstd, g->zg, g->ldp,
	               P(g, g->w, "onorm"), n * H, D);
	check_finite_cuda("gdn dO", -1, dO, (size_t)n * HD, 1);
	float *dq = g->s[0], *dk = g->s[1], *dv = g->s[3];
	if (g->kept)
		gdn_backward_chunked_kept_cuda(dq, dk, dv, g->dg, g->dbeta, NULL, dO, NULL, g->q, g->k, g->v, g->g, g->beta,
		                               NULL, B, T, H, D, D, scale, g->work, 1);
	else
		for (int b = 0, nb = seq_group(g, B, T); b < B; b += nb) {
			size_t x = (size_t)b * T * HD, h = (size_t)b * T * H;
			gdn_backward_chunked_cuda(dq + x, dk + x, dv + x, g->dg + h, g->dbeta + h, NULL, dO + x, NULL,
			                          g->q + x, g->k + x, g->v + x, g->g + h, g->beta + h, NULL,
			                          B - b < nb ? B - b : nb, T, H, D, D, scale, g->work);
		}
	gdn_gates_backward_kernel<<<ew_blocks((int64_t)n * H), EW_THREADS>>>(
	        g->dg, g->dbeta, g->dAg, (bf16 *)dp, ldd, proj_off(op, PJ_A), proj_off(op, PJ_B), g->g, g->beta, g->za,
	        g->ldp, P(g, g->w, "A_log"), n, H);
	cudaCheck(cudaGetLastError());
	feature_backward({FeatBwd{NULL, (bf16 *)(dp + proj_off(op, PJ_Q)), dq, g->q, g->qinv, g->pq, H, ldd, g->ldp,
	                          n * H, D, 1, 1, 1},
	                  FeatBwd{NULL, (bf16 *)(dp + proj_off(op, PJ_K)), dk, g->k, g->kinv, g->pk, G, ldd, g->ldp,
	                          n * G, D, rep, 1, 1},
	                  FeatBwd{NULL, (bf16 *)(dp + proj_off(op, PJ_V)), dv, NULL, NULL, g->pv, G, ldd, g->ldp, n * G,
	                          D, rep, 1, 0}});
	/* du (+)= [dpq dpk dpv dza dzb dzg] [wq; wk; wv; wa; wb; wg] */
	if (g->fp8) {
		if (ldd > OC) /* the pad: zeros, which leave the amax and the product as they are */
			cudaCheck(cudaMemset2DAsync(dp + OC, (size_t)ldd * sizeof(bf16_t), 0,
			                            (size_t)(ldd - OC) * sizeof(bf16_t), n));
		check_finite_cuda("gdn dp", -1, dp, (size_t)n * ldd, 0);
		fp8_rows_cuda(g->sq, g->ss, dp, n, ldd);
		matmul_backward_fp8_cuda(d_du, 1, accumulate, g->sq, g->ss, g->w8, g->w8s, n, C, ldd);
	} else {
		gemm_bf16_acc(CUBLAS_OP_N, C, n, OC, g->w16, C, dp, ldd, accumulate ? d_du : NULL, d_du, CUDA_R_32F, C);
	}
}
