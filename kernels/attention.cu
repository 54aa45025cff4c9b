/*
 * attention: causal GQA softmax attention (optionally sliding-window) on the
 * tensor cores, forward. Twin of attention_forward_cpu (lib/ops_cpu.c).
 *   q (B*T, H, D), k, v (B*T, G, D) bf16 -> out (B*T, H, D) bf16,
 *   lse (B, H, T) float32: log-sum-exp of each query's scaled scores, for the
 *   backward.
 * RoPE is applied before; query head h reads kv head h / (H / G).
 *
 * version 1 (flash-attention style, WMMA 16x16x16 bf16, float32 accumulate):
 * a block of 4 warps takes 64 queries of one head; each warp owns 16 rows.
 * Key/value tiles of 64 go through shared memory; S = Q K^T lands in shared
 * float32, each warp turns its rows into probabilities with the running max
 * and sum (online softmax), and O (float32, shared) is rescaled and
 * accumulates P V. Tiles wholly above the diagonal or left of the window are
 * skipped. Next: O in registers (mma.sync with a known fragment layout),
 * double-buffered async copies of K and V, and wgmma on Hopper.
 */
#include <mma.h>

#include "cuda_common.cuh"
#include "gpu.h"

using namespace nvcuda;

#define BQ 64
#define BK 64
#define NWARP 4

/* rows padded so that a warp walking down a column of S, P or O does not
 * hit one bank 16 times (WMMA wants leading dimensions of 16 bytes) */
#define SPAD 4
#define HPAD 8

template <int D>
struct FwdSmem {
	bf16 q[BQ][D + HPAD];
	bf16 k[BK][D + HPAD];
	bf16 v[BK][D + HPAD];
	float s[BQ][BK + SPAD];
	bf16 p[BQ][BK + HPAD];
	float o[BQ][D + SPAD];
	float m[BQ], l[BQ], alpha[BQ];
};

/* a tile of rows x D bf16 from global rows (stride in elements) into shared
 * memory, 16 bytes a thread, zeros past row limit */
template <int D>
__device__ void load_tile(bf16 (*dst)[D + HPAD], const bf16 *src, size_t stride, int row0, int rows, int limit)
{
	const int per_row = D / 8;
	for (int i = threadIdx.x; i < rows * per_row; i += blockDim.x) {
		int r = i / per_row, c = (i % per_row) * 8;
		uint4 val = make_uint4(0, 0, 0, 0);
		if (row0 + r < limit)
			val = *reinterpret_cast<const uint4 *>(src + (size_t)(row0 + r) * stride + c);
		*reinterpret_cast<uint4 *>(&dst[r][c]) = val;
	}
}

template <int D>
__global__ void __launch_bounds__(NWARP * WARP_SIZE)
attention_forward_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int T, int H, int G,
                         int window, float scale)
{
	extern __shared__ __align__(128) unsigned char smem_raw[];
	FwdSmem<D> &sm = *reinterpret_cast<FwdSmem<D> *>(smem_raw);
	int q0 = blockIdx.x * BQ, h = blockIdx.y, b = blockIdx.z, g = h / (H / G);
	int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE, tid = threadIdx.x;
	const size_t qs = (size_t)H * D, ks = (size_t)G * D; /* row strides */
	const bf16 *qb = q + ((size_t)b * T) * qs + (size_t)h * D;
	const bf16 *kb = k + ((size_t)b * T) * ks + (size_t)g * D;
	const bf16 *vb = v + ((size_t)b * T) * ks + (size_t)g * D;

	/* the query tile, zero beyond T; O = 0, m = -inf, l = 0 */
	load_tile<D>(sm.q, qb, qs, q0, BQ, T);
	for (int i = tid; i < BQ * D; i += blockDim.x)
		sm.o[i / D][i % D] = 0.f;
	for (int r = tid; r < BQ; r += blockDim.x)
		sm.m[r] = -INFINITY, sm.l[r] = 0.f;
	__syncthreads();

	int qlast = min(q0 + BQ, T) - 1;
	int kfirst = window > 0 ? max(0, q0 - window + 1) : 0;
	for (int k0 = kfirst / BK * BK; k0 <= qlast; k0 += BK) {
		load_tile<D>(sm.k, kb, ks, k0, BK, T);
		load_tile<D>(sm.v, vb, ks, k0, BK, T);
		__syncthreads();

		/* S (this warp's 16 rows x 64 keys) = Q K^T */
		for (int n = 0; n < BK / 16; n++) {
			wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
			wmma::fill_fragment(acc, 0.f);
			for (int d = 0; d < D; d += 16) {
				wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
				wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
				wmma::load_matrix_sync(fa, &sm.q[warp * 16][d], D + HPAD);
				wmma::load_matrix_sync(fb, &sm.k[n * 16][d], D + HPAD);
				wmma::mma_sync(acc, fa, fb, acc);
			}
			wmma::store_matrix_sync(&sm.s[warp * 16][n * 16], acc, BK + SPAD, wmma::mem_row_major);
		}
		__syncwarp();

		/* online softmax over the warp's rows: two lanes a row, 32 keys each */
		{
			int r = warp * 16 + lane / 2, half = lane % 2, qi = q0 + r;
			float mx = -INFINITY;
			for (int j = half * 32; j < half * 32 + 32; j++) {
				int kj = k0 + j;
				bool ok = kj <= qi && kj < T && (window <= 0 || kj > qi - window);
				float sv = ok ? sm.s[r][j] * scale : -INFINITY;
				sm.s[r][j] = sv;
				mx = fmaxf(mx, sv);
			}
			mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
			float mold = sm.m[r], mnew = fmaxf(mold, mx);
			float sum = 0.f;
			for (int j = half * 32; j < half * 32 + 32; j++) {
				float pv = mnew == -INFINITY ? 0.f : __expf(sm.s[r][j] - mnew);
				bf16 pb = __float2bfloat16(pv);
				sm.p[r][j] = pb;
				sum += __bfloat162float(pb); /* the sum of what P V will add */
			}
			sum += __shfl_xor_sync(0xffffffffu, sum, 1);
			__syncwarp();
			if (half == 0) {
				float a = mold == -INFINITY ? 0.f : __expf(mold - mnew);
				sm.alpha[r] = a;
				sm.l[r] = sm.l[r] * a + sum;
				sm.m[r] = mnew;
			}
		}
		__syncwarp();

		/* O = alpha O + P V, for the warp's rows */
		for (int i = lane; i < 16 * D; i += WARP_SIZE) {
			int r = warp * 16 + i / D, c = i % D;
			sm.o[r][c] *= sm.alpha[r];
		}
		__syncwarp();
		for (int n = 0; n < D / 16; n++) {
			wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
			wmma::load_matrix_sync(acc, &sm.o[warp * 16][n * 16], D + SPAD, wmma::mem_row_major);
			for (int j = 0; j < BK; j += 16) {
				wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
				wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
				wmma::load_matrix_sync(fa, &sm.p[warp * 16][j], BK + HPAD);
				wmma::load_matrix_sync(fb, &sm.v[j][n * 16], D + HPAD);
				wmma::mma_sync(acc, fa, fb, acc);
			}
			wmma::store_matrix_sync(&sm.o[warp * 16][n * 16], acc, D + SPAD, wmma::mem_row_major);
		}
		__syncthreads(); /* before the next tile overwrites K and V */
	}

	/* out = O / l; lse = m + log l */
	for (int i = tid; i < BQ * D; i += blockDim.x) {
		int r = i / D, c = i % D;
		if (q0 + r < T)
			out[((size_t)b * T + q0 + r) * qs + (size_t)h * D + c] = __float2bfloat16(sm.o[r][c] / sm.l[r]);
	}
	for (int r = tid; r < BQ; r += blockDim.x)
		if (q0 + r < T)
			lse[((size_t)b * H + h) * T + q0 + r] = sm.m[r] + logf(sm.l[r]);
}

template <int D>
static void forward_launch(bf16_t *d_out, float *d_lse, const bf16_t *d_q, const bf16_t *d_k, const bf16_t *d_v,
                           int B, int T, int H, int G, int window)
{
	size_t smem = sizeof(FwdSmem<D>);
	static bool configured;
	if (!configured) {
		cudaCheck(cudaFuncSetAttribute(attention_forward_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
		                               (int)smem));
		configured = true;
	}
	dim3 grid(CEIL_DIV(T, BQ), H, B);
	attention_forward_kernel<D><<<grid, NWARP * WARP_SIZE, smem>>>(
		(bf16 *)d_out, d_lse, (const bf16 *)d_q, (const bf16 *)d_k, (const bf16 *)d_v, T, H, G, window,
		1.0f / sqrtf((float)D));
	cudaCheck(cudaGetLastError());
}

extern "C" void attention_forward_cuda(bf16_t *d_out, float *d_lse, const bf16_t *d_q, const bf16_t *d_k,
                                       const bf16_t *d_v, int B, int T, int H, int G, int D, int window)
{
	if (H % G != 0)
		fprintf(stderr, "attention_forward_cuda: H %d is not a multiple of G %d\n", H, G), exit(1);
	switch (D) {
	case 64: forward_launch<64>(d_out, d_lse, d_q, d_k, d_v, B, T, H, G, window); break;
	case 128: forward_launch<128>(d_out, d_lse, d_q, d_k, d_v, B, T, H, G, window); break;
	default: fprintf(stderr, "attention_forward_cuda: head dim %d (64 and 128 are built)\n", D), exit(1);
	}
}

// ----------------------------------------------------------------------------
// backward (version 1): a block owns one kv head and one tile of 64 keys of
// one sequence, and keeps their dK and dV (float32, shared) while it walks
// every head of the group and every query tile that sees those keys. Per
// query tile: S = Q K^T, P = exp(scale S - lse), dP = dO V^T,
// dS = P (dP - delta) scale with delta = rowsum(dO O); dV += P^T dO,
// dK += dS^T Q, and dQ += dS K goes to a float32 buffer by atomics (turned
// into bf16 at the end). Next: dQ without atomics (a second pass over query
// tiles), registers instead of shared accumulators, wgmma.

template <int D>
struct BwdSmem {
	bf16 k[BK][D + HPAD];
	bf16 v[BK][D + HPAD];
	bf16 q[BQ][D + HPAD];
	bf16 dout[BQ][D + HPAD];
	float s[BQ][BK + SPAD];   /* S, then P */
	float dp[BQ][BK + SPAD];  /* dP, then scratch for dQ */
	bf16 p[BQ][BK + HPAD];
	bf16 ds[BQ][BK + HPAD];
	float dk[BK][D + SPAD];
	float dv[BK][D + SPAD];
	float lse[BQ], delta[BQ];
};

/* delta (B, H, T) = rowsum(dout * out), one warp a row */
__global__ void attention_delta_kernel(float *delta, const bf16 *dout, const bf16 *out, int B, int T, int H, int D)
{
	int64_t row = (int64_t)blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE; /* (b*T + t)*H + h */
	int lane = threadIdx.x % WARP_SIZE;
	if (row >= (int64_t)B * T * H)
		return;
	float s = 0;
	for (int i = lane; i < D; i += WARP_SIZE)
		s += __bfloat162float(dout[row * D + i]) * __bfloat162float(out[row * D + i]);
	s = warp_sum(s);
	if (lane == 0) {
		int h = (int)(row % H);
		int64_t bt = row / H, b = bt / T, t = bt % T;
		delta[(b * H + h) * T + t] = s;
	}
}

__global__ void f32_to_bf16_kernel(bf16 *out, const float *in, int64_t n)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		out[i] = __float2bfloat16(in[i]);
}

template <int D>
__global__ void __launch_bounds__(NWARP * WARP_SIZE)
attention_backward_kernel(float *dq_acc, bf16 *dk, bf16 *dv, const bf16 *dout, const bf16 *q, const bf16 *k,
                          const bf16 *v, const float *lse, const float *delta, int T, int H, int G, int window,
                          float scale)
{
	extern __shared__ __align__(128) unsigned char smem_raw[];
	BwdSmem<D> &sm = *reinterpret_cast<BwdSmem<D> *>(smem_raw);
	int k0 = blockIdx.x * BK, g = blockIdx.y, b = blockIdx.z, rep = H / G;
	int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE, tid = threadIdx.x;
	const size_t qs = (size_t)H * D, ks = (size_t)G * D;
	const bf16 *kb = k + (size_t)b * T * ks + (size_t)g * D, *vb = v + (size_t)b * T * ks + (size_t)g * D;

	load_tile<D>(sm.k, kb, ks, k0, BK, T);
	load_tile<D>(sm.v, vb, ks, k0, BK, T);
	for (int i = tid; i < BK * D; i += blockDim.x)
		sm.dk[i / D][i % D] = 0.f, sm.dv[i / D][i % D] = 0.f;
	int klast = min(k0 + BK, T) - 1;
	/* the queries that see these keys: from the diagonal to the window's end */
	int qend = window > 0 ? min(T, klast + window) : T;

	for (int h = g * rep; h < (g + 1) * rep; h++) {
		const bf16 *qb = q + (size_t)b * T * qs + (size_t)h * D, *db = dout + (size_t)b * T * qs + (size_t)h * D;
		for (int q0 = k0 / BQ * BQ; q0 < qend; q0 += BQ) {
			__syncthreads(); /* the previous tile's readers are done */
			load_tile<D>(sm.q, qb, qs, q0, BQ, T);
			load_tile<D>(sm.dout, db, qs, q0, BQ, T);
			for (int r = tid; r < BQ; r += blockDim.x) {
				bool in = q0 + r < T;
				sm.lse[r] = in ? lse[((size_t)b * H + h) * T + q0 + r] : 0.f;
				sm.delta[r] = in ? delta[((size_t)b * H + h) * T + q0 + r] : 0.f;
			}
			__syncthreads();

			/* S = Q K^T and dP = dO V^T for this warp's 16 query rows */
			for (int n = 0; n < BK / 16; n++) {
				wmma::fragment<wmma::accumulator, 16, 16, 16, float> as, ap;
				wmma::fill_fragment(as, 0.f);
				wmma::fill_fragment(ap, 0.f);
				for (int d = 0; d < D; d += 16) {
					wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
					wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
					wmma::load_matrix_sync(fa, &sm.q[warp * 16][d], D + HPAD);
					wmma::load_matrix_sync(fb, &sm.k[n * 16][d], D + HPAD);
					wmma::mma_sync(as, fa, fb, as);
					wmma::load_matrix_sync(fa, &sm.dout[warp * 16][d], D + HPAD);
					wmma::load_matrix_sync(fb, &sm.v[n * 16][d], D + HPAD);
					wmma::mma_sync(ap, fa, fb, ap);
				}
				wmma::store_matrix_sync(&sm.s[warp * 16][n * 16], as, BK + SPAD, wmma::mem_row_major);
				wmma::store_matrix_sync(&sm.dp[warp * 16][n * 16], ap, BK + SPAD, wmma::mem_row_major);
			}
			__syncwarp();
			/* P and dS, masked: a lane takes a row's 32 keys */
			{
				int r = warp * 16 + lane / 2, j0 = (lane % 2) * 32, qi = q0 + r;
				for (int j = j0; j < j0 + 32; j++) {
					int kj = k0 + j;
					bool ok = qi < T && kj < T && kj <= qi && (window <= 0 || kj > qi - window);
					float pv = ok ? __expf(sm.s[r][j] * scale - sm.lse[r]) : 0.f;
					float dsv = pv * (sm.dp[r][j] - sm.delta[r]) * scale;
					sm.p[r][j] = __float2bfloat16(pv);
					sm.ds[r][j] = __float2bfloat16(dsv);
				}
			}
			__syncthreads(); /* dV and dK read P and dS of every warp */

			/* dV += P^T dO and dK += dS^T Q for this warp's 16 keys */
			for (int n = 0; n < D / 16; n++) {
				wmma::fragment<wmma::accumulator, 16, 16, 16, float> av, ak;
				wmma::load_matrix_sync(av, &sm.dv[warp * 16][n * 16], D + SPAD, wmma::mem_row_major);
				wmma::load_matrix_sync(ak, &sm.dk[warp * 16][n * 16], D + SPAD, wmma::mem_row_major);
				for (int j = 0; j < BQ; j += 16) {
					wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::col_major> fa;
					wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
					wmma::load_matrix_sync(fa, &sm.p[j][warp * 16], BK + HPAD);
					wmma::load_matrix_sync(fb, &sm.dout[j][n * 16], D + HPAD);
					wmma::mma_sync(av, fa, fb, av);
					wmma::load_matrix_sync(fa, &sm.ds[j][warp * 16], BK + HPAD);
					wmma::load_matrix_sync(fb, &sm.q[j][n * 16], D + HPAD);
					wmma::mma_sync(ak, fa, fb, ak);
				}
				wmma::store_matrix_sync(&sm.dv[warp * 16][n * 16], av, D + SPAD, wmma::mem_row_major);
				wmma::store_matrix_sync(&sm.dk[warp * 16][n * 16], ak, D + SPAD, wmma::mem_row_major);
			}

			/* dQ += dS K for this warp's 16 query rows, through its dP rows */
			for (int n = 0; n < D / 16; n++) {
				wmma::fragment<wmma::accumulator, 16, 16, 16, float> aq;
				wmma::fill_fragment(aq, 0.f);
				for (int j = 0; j < BK; j += 16) {
					wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
					wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
					wmma::load_matrix_sync(fa, &sm.ds[warp * 16][j], BK + HPAD);
					wmma::load_matrix_sync(fb, &sm.k[j][n * 16], D + HPAD);
					wmma::mma_sync(aq, fa, fb, aq);
				}
				wmma::store_matrix_sync(&sm.dp[warp * 16][0], aq, BK + SPAD, wmma::mem_row_major);
				__syncwarp();
				for (int i = lane; i < 256; i += WARP_SIZE) {
					int r = i / 16, c = i % 16, qi = q0 + warp * 16 + r;
					if (qi < T)
						atomicAdd(&dq_acc[((size_t)b * T + qi) * qs + (size_t)h * D + n * 16 + c], sm.dp[warp * 16 + r][c]);
				}
				__syncwarp();
			}
		}
	}
	__syncthreads();
	for (int i = tid; i < BK * D; i += blockDim.x) {
		int r = i / D, c = i % D;
		if (k0 + r < T) {
			size_t o = ((size_t)b * T + k0 + r) * ks + (size_t)g * D + c;
			dk[o] = __float2bfloat16(sm.dk[r][c]);
			dv[o] = __float2bfloat16(sm.dv[r][c]);
		}
	}
}

template <int D>
static void backward_launch(bf16_t *d_dq, bf16_t *d_dk, bf16_t *d_dv, const bf16_t *d_dout, const bf16_t *d_out,
                            const float *d_lse, const bf16_t *d_q, const bf16_t *d_k, const bf16_t *d_v, int B,
                            int T, int H, int G, int window, float *d_work)
{
	size_t smem = sizeof(BwdSmem<D>);
	static bool configured;
	if (!configured) {
		cudaCheck(cudaFuncSetAttribute(attention_backward_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
		                               (int)smem));
		configured = true;
	}
	int64_t nq = (int64_t)B * T * H * D;
	float *dq_acc = d_work, *delta = d_work + nq;
	cudaCheck(cudaMemset(dq_acc, 0, (size_t)nq * sizeof(float)));
	int64_t rows = (int64_t)B * T * H;
	attention_delta_kernel<<<(unsigned)CEIL_DIV(rows, 8), 8 * WARP_SIZE>>>(delta, (const bf16 *)d_dout,
	                                                                       (const bf16 *)d_out, B, T, H, D);
	cudaCheck(cudaGetLastError());
	dim3 grid(CEIL_DIV(T, BK), G, B);
	attention_backward_kernel<D><<<grid, NWARP * WARP_SIZE, smem>>>(
		dq_acc, (bf16 *)d_dk, (bf16 *)d_dv, (const bf16 *)d_dout, (const bf16 *)d_q, (const bf16 *)d_k,
		(const bf16 *)d_v, d_lse, delta, T, H, G, window, 1.0f / sqrtf((float)D));
	cudaCheck(cudaGetLastError());
	f32_to_bf16_kernel<<<(unsigned)CEIL_DIV(nq, 256), 256>>>((bf16 *)d_dq, dq_acc, nq);
	cudaCheck(cudaGetLastError());
}

extern "C" size_t attention_backward_work(int B, int T, int H, int D)
{
	return (size_t)B * T * H * (D + 1);
}

extern "C" void attention_backward_cuda(bf16_t *d_dq, bf16_t *d_dk, bf16_t *d_dv, const bf16_t *d_dout,
                                        const bf16_t *d_out, const float *d_lse, const bf16_t *d_q,
                                        const bf16_t *d_k, const bf16_t *d_v, int B, int T, int H, int G, int D,
                                        int window, float *d_work)
{
	if (H % G != 0)
		fprintf(stderr, "attention_backward_cuda: H %d is not a multiple of G %d\n", H, G), exit(1);
	switch (D) {
	case 64: backward_launch<64>(d_dq, d_dk, d_dv, d_dout, d_out, d_lse, d_q, d_k, d_v, B, T, H, G, window, d_work); break;
	case 128: backward_launch<128>(d_dq, d_dk, d_dv, d_dout, d_out, d_lse, d_q, d_k, d_v, B, T, H, G, window, d_work); break;
	default: fprintf(stderr, "attention_backward_cuda: head dim %d (64 and 128 are built)\n", D), exit(1);
	}
}
