/*
 * gla_chunked (GPU): the GLA recurrence of lib/linear_attn.h in chunks of
 * 64 steps, forward and backward, for training lengths. Twins of
 * gla_forward_chunked and gla_backward_chunked (lib/linear_attn.c, where the
 * chunk math is written out); float32 in and out, float32 accuracy
 * throughout (the forward's products on the tensor cores in 3xTF32, the
 * rest on the CUDA cores). Not the decoding step: that is
 * gla_forward_recurrent_cuda.
 *
 * The structure is fla's. Forward, three launches:
 *   intra  a block per (sequence, head, chunk): G, the chunk-local sums of
 *          gk, then A = (Q K^T gated), o = scale A V (the chunk's own share)
 *          and the chunk's state increment Kt^T V
 *   scan   a warp per state row, chunk after chunk: each chunk's start
 *          state, the final state (elementwise: the increments are known)
 *   inter  a block per chunk again: o += scale (Q o exp(G)) S_chunk
 * Backward: intra again (also scale Qg^T dO, the chunks' dS increments, and
 * dP = scale dO V^T), the forward scan and a reverse one (each chunk's dS',
 * the gradient with respect to its end state, and the end state's share of
 * dgk), then one kernel for dv (a block per chunk and 64 columns of v) and
 * one for dq, dk and dgk (a block per chunk and 64 key dimensions). Every
 * tile kernel keeps under 110 KB of shared memory and 128 registers a
 * thread: two blocks an SM.
 *
 * Gates: G is kept in log2 units (exp2f is one instruction and a fix-up).
 * exp(G_i - G_j) is never formed as exp(G_i) exp(-G_j) over a chunk: gk goes
 * down to about -1.3 a step and exp(-G) overflows float32 within 64 steps.
 * The chunk is cut in four sub-chunks of 16; between sub-chunks a > b the
 * factor is split at a sub-chunk boundary (every exponent <= 0), and on the
 * four diagonal 16 x 16 blocks it is formed term by term.
 *
 * Products: a block is 256 threads, a 16 x 16 grid; a thread owns the
 * entries (ty + 16 m, tx + 16 n) of a product, so that in A's and dP's 64 x
 * 64 it holds one entry of each 16 x 16 block. Operands sit in shared memory
 * with odd row strides, so every load is free of bank conflicts whichever
 * way a matrix is read.
 *
 * Times on one H100 at B=1 T=4096 H=16 D=128 (float32; fla's Triton
 * chunk_gla there: forward 0.648 ms, forward + backward 2.53 ms):
 * version 1: register tiles of up to 8 x 8, a thread per state entry in the
 *   scan, the end state's share of dgk summed in the dq/dk kernel: forward
 *   0.659 ms, forward + backward 2.61 ms. The dq/dk kernel took 1.04 ms,
 *   waiting on loads issued one at a time (a loop bounded by Dv).
 * version 2: every tile's loads issued before its first store (16 bytes
 *   where aligned), the scan a warp per row and the end state's share summed
 *   there (warp_sum), the cumulative sums four or two threads a column, q
 *   in flight with the inter kernel's tiles: forward 0.487 ms (intra 0.271,
 *   scan 0.064, inter 0.163), forward + backward 1.874 ms (backward: intra
 *   0.359, scans 0.064 + 0.080, dv 0.208, dq/dk 0.698). Napkin math: the
 *   products are about 6 GFLOP forward and 15 backward (11 TFLOP/s over
 *   the pair), the traffic about 0.6 and 1.3 GB (1 TB/s). By count, the
 *   tile kernels are bound by shared memory bandwidth (a 4-byte operand
 *   load for every 2 FMAs with 4 x 4 tiles), not by the FMAs.
 * version 3 (the forward only; DASH_GLA_V2=1 in the environment runs
 *   version 2's for comparison): gla_fwd_intra_kernel and
 *   gla_fwd_inter_kernel do their products on the tensor cores, mma.sync
 *   m16n8k8 in 3xTF32 (each operand split hi + lo, three products: float32's
 *   accuracy; o's largest error in the twin test 5.1e-7 of the scale,
 *   version 2's 2.2e-7, the tolerance 1e-4): A's six
 *   blocks below its diagonal, A V, Kt^T V and Qg S_c, 32 x 32 tiles a warp
 *   over operands whose row strides (4 or 8 mod 32) keep the fragment
 *   loads free of bank conflicts. A's diagonal blocks stay term by term on
 *   the CUDA cores, but folded (block 2u's lower triangle and block 2u+1's
 *   on one 16 x 16 thread grid: every lane one gated term a step, half the
 *   exp2f of version 2) with 16-byte loads; V's loads in flight over the
 *   blocks below the diagonal. One H100, the same call: forward 0.366 ms
 *   against version 2's 0.486 (intra 0.189 ms, scan 0.053, inter 0.113 by
 *   ncu), forward + backward 1.75 ms against 1.87. Another call, with fla
 *   (fla-core 0.6.0's chunk_gla forward, bench/linear_fla.py's inputs and
 *   timing): ours 0.367 and 0.366 ms (version 2: 0.483), fla 0.491 ms in
 *   float32 and 0.641 in bf16: 25% faster than fla's float32 forward.
 */
#include <string.h>

#include "cuda_common.cuh"
#include "tf32.cuh"
#include "gpu.h"

#define BT 64   /* chunk */
#define BS 16   /* sub-chunk */
#define NT 256  /* threads a block: a 16 x 16 grid */
#define LOG2E 1.4426950408889634f

extern __shared__ __align__(16) float gla_smem[];

// ----------------------------------------------------------------------------
// building blocks

/* s (R, W), row stride LD (W + 1 unless given) <- rows r < nr, columns
 * d < nc of x (row r at x + r * stride); zeros elsewhere. Every load of the
 * tile is issued before the first store; 16-byte loads where nc, the stride
 * and x allow. */
template <int R, int W, int LD = W + 1>
__device__ __forceinline__ void load_tile(float *s, const float *x, size_t stride, int nr, int nc)
{
	if ((nc & 3) == 0 && (stride & 3) == 0 && ((size_t)x & 15) == 0) {
		constexpr int N = R * W / 4 / NT;
		float4 f[N];
#pragma unroll
		for (int u = 0; u < N; u++) {
			int i = threadIdx.x + u * NT, r = i / (W / 4), d = 4 * (i % (W / 4));
			f[u] = r < nr && d < nc ? *(const float4 *)(x + r * stride + d) : make_float4(0.f, 0.f, 0.f, 0.f);
		}
#pragma unroll
		for (int u = 0; u < N; u++) {
			int i = threadIdx.x + u * NT, r = i / (W / 4), d = 4 * (i % (W / 4));
			float *p = s + r * LD + d;
			p[0] = f[u].x, p[1] = f[u].y, p[2] = f[u].z, p[3] = f[u].w;
		}
	} else {
#pragma unroll 16
		for (int u = 0; u < R * W / NT; u++) {
			int i = threadIdx.x + u * NT, r = i / W, d = i % W;
			s[r * LD + d] = r < nr && d < nc ? x[r * stride + d] : 0.f;
		}
	}
}

/* sG (BT, W), row stride LD, gk on entry (loaded and synced): the sums over
 * steps 0..t of the chunk, times log2(e), synced on return. NT / W threads
 * a column, each summing a segment of rows, then adding the segments before
 * it. Padding rows hold zeros, so the last row is the last real step's sum. */
template <int W, int LD = W + 1>
__device__ __forceinline__ void cumsum_tile(float *sG)
{
	constexpr int P = NT / W, RS = BT / P;
	const int col = threadIdx.x % W, part = threadIdx.x / W;
	float *g = sG + part * RS * LD + col, s = 0.f, off = 0.f;
#pragma unroll
	for (int t = 0; t < RS; t++)
		s += g[t * LD], g[t * LD] = s;
	__syncthreads();
	for (int p = 0; p < part; p++)
		off += sG[((p + 1) * RS - 1) * LD + col];
	__syncthreads();
#pragma unroll
	for (int t = 0; t < RS; t++)
		g[t * LD] = (g[t * LD] + off) * LOG2E;
	__syncthreads();
}

/* acc (TM, TN) += the thread's entries of A (M, K) B (K, N): A's (m, k) at
 * A[m * AM + k * AK], B's (k, n) at B[k * BK + n * BN]; the thread's rows
 * are ty + 16 m, its columns tx + 16 n */
template <int TM, int TN, int K, int AM, int AK, int BK, int BN>
__device__ __forceinline__ void mm(float (&acc)[TM][TN], const float *A, const float *B)
{
	const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
	A += ty * AM, B += tx * BN;
#pragma unroll 4
	for (int k = 0; k < K; k++) {
		float a[TM], b[TN];
#pragma unroll
		for (int m = 0; m < TM; m++)
			a[m] = A[k * AK + 16 * m * AM];
#pragma unroll
		for (int n = 0; n < TN; n++)
			b[n] = B[k * BK + 16 * n * BN];
#pragma unroll
		for (int m = 0; m < TM; m++)
#pragma unroll
			for (int n = 0; n < TN; n++)
				acc[m][n] = fmaf(a[m], b[n], acc[m][n]);
	}
}

/* load_tile in two halves, for loads in flight over other work: fetch (the
 * loads, into registers; 16-byte ones where nc, the stride and x allow) and
 * put (the stores, row stride LD) */
template <int R, int W>
struct TileLoad {
	static constexpr int N = R * W / 4 / NT;
	float4 f[N];
	__device__ __forceinline__ void fetch(const float *x, size_t stride, int nr, int nc)
	{
		const bool vec = (nc & 3) == 0 && (stride & 3) == 0 && ((size_t)x & 15) == 0;
#pragma unroll
		for (int u = 0; u < N; u++) {
			int i = threadIdx.x + u * NT, r = i / (W / 4), d = 4 * (i % (W / 4));
			const float *p = x + r * stride + d;
			bool in = r < nr;
			if (vec)
				f[u] = in && d < nc ? *(const float4 *)p : make_float4(0.f, 0.f, 0.f, 0.f);
			else
				f[u] = make_float4(in && d < nc ? p[0] : 0.f, in && d + 1 < nc ? p[1] : 0.f,
				                   in && d + 2 < nc ? p[2] : 0.f, in && d + 3 < nc ? p[3] : 0.f);
		}
	}
	template <int LD>
	__device__ __forceinline__ void put(float *s) const
	{
#pragma unroll
		for (int u = 0; u < N; u++) {
			int i = threadIdx.x + u * NT, r = i / (W / 4), d = 4 * (i % (W / 4));
			float *p = s + r * LD + d;
			p[0] = f[u].x, p[1] = f[u].y, p[2] = f[u].z, p[3] = f[u].w;
		}
	}
};

/* where a block is: pair bh = b * H + h, chunk c of NC, its n steps; row is
 * the chunk's first row of the (B, T, H, .) arrays */
struct Chunk {
	int bh, c, n;
	size_t row;
};

__device__ __forceinline__ Chunk chunk_of(int T, int H, int NC)
{
	Chunk ch;
	ch.bh = blockIdx.x / NC, ch.c = blockIdx.x % NC;
	int t0 = ch.c * BT;
	ch.n = T - t0 < BT ? T - t0 : BT;
	ch.row = ((size_t)(ch.bh / H) * T + t0) * H + ch.bh % H;
	return ch;
}

// ----------------------------------------------------------------------------
// kernels

/* One chunk: A (64, 64) = sum_d q_i k_j exp(G_i - G_j), j <= i; the state
 * increment Kt^T V -> slot c of S (B*H, NC+1, Dk, Dv); exp(G_last) -> decay
 * (B*H, NC, Dk). Forward: o = scale A V, the chunk's own share of o.
 * Backward (BWD): A -> Ab (B*H, NC, 64, 64); scale Qg^T dO -> slot c of dS;
 * dP = scale dO V^T, j <= i -> dPb (B*H, NC, 64, 64). Three tiles of shared
 * memory (two blocks an SM at 128 x 128), taken over as operands fall due:
 *   s0: G, then A (forward) or V (backward)
 *   s1: q, Qr, then V (forward) or Qg (backward)
 *   s2: k, Kb, Kt, then dO (backward) */
template <int DK, int DV, bool BWD>
__global__ void __launch_bounds__(NT, 2) gla_intra_kernel(float *o, float *S, float *decay, float *Ab, float *dS,
                                                          float *dPb, const float *q, const float *k, const float *v,
                                                          const float *gk, const float *dout, int T, int H, int Dk,
                                                          int Dv, int NC, float scale)
{
	constexpr int LK = DK + 1, LV = DV + 1, LA = BT + 1, TILE = BT * (LK > LV ? LK : LV);
	float *s0 = gla_smem, *s1 = s0 + TILE, *s2 = s1 + TILE;
	float *sM = s2 + TILE; /* (6, DK): exp(G at sub-chunk a's first row - at b's last), a > b */
	float *sG = s0, *sQ = s1, *sK = s2;
	const Chunk ch = chunk_of(T, H, NC);
	const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4, n = ch.n;
	const size_t sk = (size_t)H * Dk, sv = (size_t)H * Dv, slot = ((size_t)ch.bh * (NC + 1) + ch.c) * Dk * Dv;
	load_tile<BT, DK>(sG, gk + ch.row * Dk, sk, n, Dk);
	load_tile<BT, DK>(sQ, q + ch.row * Dk, sk, n, Dk);
	load_tile<BT, DK>(sK, k + ch.row * Dk, sk, n, Dk);
	__syncthreads();
	cumsum_tile<DK>(sG);
	for (int i = threadIdx.x; i < 6 * DK; i += NT) {
		int p = i / DK, d = i % DK, a = p < 1 ? 1 : p < 3 ? 2 : 3, b = p - a * (a - 1) / 2;
		sM[i] = exp2f(sG[BS * a * LK + d] - sG[(BS * b + BS - 1) * LK + d]);
	}
	if ((int)threadIdx.x < Dk)
		decay[((size_t)ch.bh * NC + ch.c) * Dk + threadIdx.x] = exp2f(sG[(BT - 1) * LK + threadIdx.x]);
	/* A's diagonal blocks, term by term */
	float acc[4][4] = {};
	if (tx <= ty)
		for (int d = 0; d < DK; d++)
#pragma unroll
			for (int m = 0; m < 4; m++) {
				int i = ty + BS * m, j = tx + BS * m;
				acc[m][m] += sQ[i * LK + d] * sK[j * LK + d] * exp2f(sG[i * LK + d] - sG[j * LK + d]);
			}
	__syncthreads();
	/* Qr = q exp(G - G at its sub-chunk's first row), Kb = k exp(G at its
	 * sub-chunk's last row - G); block (a, b) = sum_d Qr_i Kb_j sM_ab */
#pragma unroll 4
	for (int x = threadIdx.x; x < BT * DK; x += NT) {
		int t = x / DK, d = x % DK, r = t & ~(BS - 1);
		float g = sG[t * LK + d];
		sQ[t * LK + d] *= exp2f(g - sG[r * LK + d]);
		sK[t * LK + d] *= exp2f(sG[(r + BS - 1) * LK + d] - g);
	}
	__syncthreads();
	for (int d = 0; d < DK; d++) {
		float a1 = sQ[(ty + 16) * LK + d], a2 = sQ[(ty + 32) * LK + d], a3 = sQ[(ty + 48) * LK + d];
		float b0 = sK[tx * LK + d], b1 = sK[(tx + 16) * LK + d], b2 = sK[(tx + 32) * LK + d];
		const float *m = sM + d;
		acc[1][0] += a1 * (b0 * m[0]);
		acc[2][0] += a2 * (b0 * m[DK]);
		acc[2][1] += a2 * (b1 * m[2 * DK]);
		acc[3][0] += a3 * (b0 * m[3 * DK]);
		acc[3][1] += a3 * (b1 * m[4 * DK]);
		acc[3][2] += a3 * (b2 * m[5 * DK]);
	}
	__syncthreads();
	/* Kt = k exp(G_last - G) and (backward) Qg = q exp(G), each from the
	 * factor above; the forward's V where q was */
	float *sV = BWD ? s0 : s1;
#pragma unroll 4
	for (int x = threadIdx.x; x < BT * DK; x += NT) {
		int t = x / DK, d = x % DK, r = t & ~(BS - 1);
		if (BWD)
			sQ[t * LK + d] *= exp2f(sG[r * LK + d]);
		sK[t * LK + d] *= exp2f(sG[(BT - 1) * LK + d] - sG[(r + BS - 1) * LK + d]);
	}
	if (!BWD)
		load_tile<BT, DV>(sV, v + ch.row * Dv, sv, n, Dv);
	__syncthreads();
	if (BWD) {
		float *A = Ab + ((size_t)ch.bh * NC + ch.c) * BT * BT;
#pragma unroll
		for (int m = 0; m < 4; m++)
#pragma unroll
			for (int j = 0; j < 4; j++)
				A[(ty + BS * m) * BT + tx + BS * j] = acc[m][j];
		load_tile<BT, DV>(sV, v + ch.row * Dv, sv, n, Dv);
	} else {
		float *sA = s0;
#pragma unroll
		for (int m = 0; m < 4; m++)
#pragma unroll
			for (int j = 0; j < 4; j++)
				sA[(ty + BS * m) * LA + tx + BS * j] = acc[m][j];
	}
	__syncthreads();
	if (!BWD) {
		float ao[4][DV / 16] = {};
		mm<4, DV / 16, BT, LA, 1, LV, 1>(ao, s0, sV);
#pragma unroll
		for (int m = 0; m < 4; m++)
#pragma unroll
			for (int j = 0; j < DV / 16; j++) {
				int i = ty + BS * m, e = tx + 16 * j;
				if (i < n && e < Dv)
					o[(ch.row + (size_t)i * H) * Dv + e] = scale * ao[m][j];
			}
	}
	{
		float au[DK / 16][DV / 16] = {};
		mm<DK / 16, DV / 16, BT, 1, LK, LV, 1>(au, sK, sV);
#pragma unroll
		for (int m = 0; m < DK / 16; m++)
#pragma unroll
			for (int j = 0; j < DV / 16; j++) {
				int d = ty + 16 * m, e = tx + 16 * j;
				if (d < Dk && e < Dv)
					S[slot + (size_t)d * Dv + e] = au[m][j];
			}
	}
	if (BWD) {
		float *sO = s2; /* once Kt is spent */
		__syncthreads();
		load_tile<BT, DV>(sO, dout + ch.row * Dv, sv, n, Dv);
		__syncthreads();
		float aw[DK / 16][DV / 16] = {};
		mm<DK / 16, DV / 16, BT, 1, LK, LV, 1>(aw, sQ, sO);
#pragma unroll
		for (int m = 0; m < DK / 16; m++)
#pragma unroll
			for (int j = 0; j < DV / 16; j++) {
				int d = ty + 16 * m, e = tx + 16 * j;
				if (d < Dk && e < Dv)
					dS[slot + (size_t)d * Dv + e] = scale * aw[m][j];
			}
		float ap[4][4] = {};
		mm<4, 4, DV, LV, 1, 1, LV>(ap, sO, sV);
		float *P = dPb + ((size_t)ch.bh * NC + ch.c) * BT * BT;
#pragma unroll
		for (int m = 0; m < 4; m++)
#pragma unroll
			for (int j = 0; j < 4; j++) {
				int i = ty + BS * m, jj = tx + BS * j;
				P[i * BT + jj] = jj <= i ? scale * ap[m][j] : 0.f;
			}
	}
}

#define SCAN_AHEAD 2 /* chunks whose loads a scan lane has in flight */

/* A warp per state row (pair, d), a lane per 32nd value of it (Dv <= 128),
 * chunk after chunk (last first when reverse): slot c of buf (B*H, NC+1,
 * Dk, Dv) holds chunk c's increment on entry and on return the value before
 * it, x_c; x_{c+1} = decay_c x_c + increment_c. x starts from init (NULL:
 * zeros); the last value goes to slot NC when keep_end and to fin unless
 * NULL (fin may be init). With end (the reverse scan, x = dS'): end (B*H,
 * NC, Dk) = sum_e x_c[d, e] S_{c+1}[d, e], S the forward scan's states, the
 * end state's share of dG at the chunk's last row. */
__global__ void __launch_bounds__(256, 4) gla_scan_kernel(float *buf, const float *decay, const float *init,
                                                          float *fin, float *end, const float *S, int BH, int NC,
                                                          int Dk, int Dv, int keep_end, int reverse)
{
	int row = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
	if (row >= BH * Dk) /* whole warps */
		return;
	int bh = row / Dk, d = row % Dk;
	size_t SS = (size_t)Dk * Dv, base = (size_t)bh * (NC + 1) * SS + (size_t)d * Dv;
	float *x = buf + base;
	const float *a = decay + (size_t)bh * NC * Dk + d;
	float s[4];
#pragma unroll
	for (int u = 0; u < 4; u++) {
		int e = lane + WARP_SIZE * u;
		s[u] = init && e < Dv ? init[(size_t)row * Dv + e] : 0.f;
	}
	for (int j0 = 0; j0 < NC; j0 += SCAN_AHEAD) {
		float U[SCAN_AHEAD][4], P[SCAN_AHEAD][4], w[SCAN_AHEAD];
#pragma unroll
		for (int l = 0; l < SCAN_AHEAD; l++) {
			int j = j0 + l, c = reverse ? NC - 1 - j : j;
			w[l] = j < NC ? a[(size_t)c * Dk] : 0.f;
#pragma unroll
			for (int u = 0; u < 4; u++) {
				int e = lane + WARP_SIZE * u;
				U[l][u] = j < NC && e < Dv ? x[c * SS + e] : 0.f;
				P[l][u] = end && j < NC && e < Dv ? S[base + (c + 1) * SS + e] : 0.f;
			}
		}
#pragma unroll
		for (int l = 0; l < SCAN_AHEAD; l++) {
			int j = j0 + l, c = reverse ? NC - 1 - j : j;
			if (j >= NC) /* the same for the whole warp */
				break;
			float p = 0.f;
#pragma unroll
			for (int u = 0; u < 4; u++) {
				int e = lane + WARP_SIZE * u;
				if (e < Dv)
					x[c * SS + e] = s[u];
				p += s[u] * P[l][u];
				s[u] = w[l] * s[u] + U[l][u];
			}
			if (end) {
				p = warp_sum(p);
				if (lane == 0)
					end[((size_t)bh * NC + c) * Dk + d] = p;
			}
		}
	}
#pragma unroll
	for (int u = 0; u < 4; u++) {
		int e = lane + WARP_SIZE * u;
		if (e < Dv && keep_end)
			x[NC * SS + e] = s[u];
		if (e < Dv && fin)
			fin[(size_t)row * Dv + e] = s[u];
	}
}

/* One chunk: o += scale (q o exp(G)) S_c, the start state's share; S the
 * scanned states (B*H, NC+1, Dk, Dv) */
template <int DK, int DV>
__global__ void __launch_bounds__(NT, 2) gla_inter_kernel(float *o, const float *S, const float *q, const float *gk,
                                                          int T, int H, int Dk, int Dv, int NC, float scale)
{
	constexpr int LK = DK + 1, LV = DV + 1;
	float *sQ = gla_smem, *sS = sQ + BT * LK;
	const Chunk ch = chunk_of(T, H, NC);
	const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4, n = ch.n;
	const size_t sk = (size_t)H * Dk;
	constexpr int NQ = BT * DK / NT;
	float qr[NQ]; /* q, in flight with the tiles' loads */
#pragma unroll
	for (int u = 0; u < NQ; u++) {
		int x = threadIdx.x + u * NT, t = x / DK, d = x % DK;
		qr[u] = t < n && d < Dk ? q[(ch.row + (size_t)t * H) * Dk + d] : 0.f;
	}
	load_tile<BT, DK>(sQ, gk + ch.row * Dk, sk, n, Dk);
	load_tile<DK, DV>(sS, S + ((size_t)ch.bh * (NC + 1) + ch.c) * Dk * Dv, Dv, Dk, Dv);
	__syncthreads();
	cumsum_tile<DK>(sQ);
#pragma unroll
	for (int u = 0; u < NQ; u++) {
		int x = threadIdx.x + u * NT, t = x / DK, d = x % DK;
		sQ[t * LK + d] = qr[u] * exp2f(sQ[t * LK + d]);
	}
	__syncthreads();
	float ao[4][DV / 16] = {};
	mm<4, DV / 16, DK, LK, 1, LV, 1>(ao, sQ, sS);
#pragma unroll
	for (int m = 0; m < 4; m++)
#pragma unroll
		for (int j = 0; j < DV / 16; j++) {
			int i = ty + BS * m, e = tx + 16 * j;
			if (i < n && e < Dv)
				o[(ch.row + (size_t)i * H) * Dv + e] += scale * ao[m][j];
		}
}

/* Version 3's forward, one chunk: the state increment Kt^T V -> slot c of
 * S, exp(G_last) -> decay, o = scale A V. The products on the tensor cores
 * (wmma_tf32 in 3xTF32: A's blocks below its diagonal, A V, Kt^T V); A's four diagonal
 * 16 x 16 blocks term by term on the CUDA cores. Three regions of 64 rows
 * of shared memory:
 *   r0: G (row stride LK), then V (LV)
 *   r1: q, Qr (LK), then Kt (LT)
 *   r2: k, Kb (LK), then A (LA)
 * LK, LA = 4 mod 32 (fragments read along rows), LT, LV = 8 mod 32 (read
 * down columns); LK a multiple of 4 for the diagonal's 16-byte loads. */
template <int DK, int DV>
__global__ void __launch_bounds__(NT, 2) gla_fwd_intra_kernel(float *o, float *S, float *decay, const float *q,
                                                              const float *k, const float *v, const float *gk, int T,
                                                              int H, int Dk, int Dv, int NC, float scale)
{
	constexpr int LK = DK + 4, LT = DK + 8, LV = DV + 8, LA = BT + 4, REG = BT * (LT > LV ? LT : LV);
	constexpr int NV = DV / 32; /* 32-column warp tiles of V */
	float *r0 = gla_smem, *r1 = r0 + REG, *r2 = r1 + REG;
	/* sM (6, DK): exp(G at sub-chunk a's first row - at b's last), a > b;
	 * then (4, DK): exp(G_last - G at sub-chunk b's last row) */
	float *sM = r2 + REG;
	float *sG = r0, *sQ = r1, *sK = r2;
	const Chunk ch = chunk_of(T, H, NC);
	const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4, n = ch.n, warp = threadIdx.x >> 5;
	const int g = (threadIdx.x & 31) >> 2, t4 = threadIdx.x & 3;
	const size_t sk = (size_t)H * Dk, sv = (size_t)H * Dv, slot = ((size_t)ch.bh * (NC + 1) + ch.c) * Dk * Dv;
	load_tile<BT, DK, LK>(sG, gk + ch.row * Dk, sk, n, Dk);
	load_tile<BT, DK, LK>(sQ, q + ch.row * Dk, sk, n, Dk);
	load_tile<BT, DK, LK>(sK, k + ch.row * Dk, sk, n, Dk);
	__syncthreads();
	cumsum_tile<DK, LK>(sG);
	for (int i = threadIdx.x; i < 10 * DK; i += NT) {
		int p = i / DK, d = i % DK, a = p < 1 ? 1 : p < 3 ? 2 : 3, b = p - a * (a - 1) / 2;
		sM[i] = p < 6 ? exp2f(sG[BS * a * LK + d] - sG[(BS * b + BS - 1) * LK + d])
		              : exp2f(sG[(BT - 1) * LK + d] - sG[(BS * (p - 6) + BS - 1) * LK + d]);
	}
	if ((int)threadIdx.x < Dk)
		decay[((size_t)ch.bh * NC + ch.c) * Dk + threadIdx.x] = exp2f(sG[(BT - 1) * LK + threadIdx.x]);
	/* A's diagonal blocks, term by term, in two rounds u of one term a lane:
	 * thread (ty, tx) takes (i, j) = (ty, tx) of block 2u where tx <= ty,
	 * else (15 - ty, 15 - tx) of block 2u + 1; the threads tx = ty then
	 * block 2u + 1's diagonal entry 15 - ty (ungated: exp(0) = 1) */
	const bool low = tx <= ty;
	float dA[2], dD[2];
#pragma unroll
	for (int u = 0; u < 2; u++) {
		const int m = 2 * u + !low, i = BS * m + (low ? ty : BS - 1 - ty), j = BS * m + (low ? tx : BS - 1 - tx);
		const float4 *Qi = (const float4 *)(sQ + i * LK), *Gi = (const float4 *)(sG + i * LK);
		const float4 *Kj = (const float4 *)(sK + j * LK), *Gj = (const float4 *)(sG + j * LK);
		float s = 0.f, e = 0.f;
#pragma unroll 4
		for (int d = 0; d < DK / 4; d++) {
			float4 a = Qi[d], b = Kj[d], x = Gi[d], y = Gj[d];
			s += a.x * b.x * exp2f(x.x - y.x);
			s += a.y * b.y * exp2f(x.y - y.y);
			s += a.z * b.z * exp2f(x.z - y.z);
			s += a.w * b.w * exp2f(x.w - y.w);
		}
		if (tx == ty) {
			const int ii = BS * (2 * u + 1) + BS - 1 - ty;
			const float4 *Qd = (const float4 *)(sQ + ii * LK), *Kd = (const float4 *)(sK + ii * LK);
			for (int d = 0; d < DK / 4; d++) {
				float4 a = Qd[d], b = Kd[d];
				e += a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
			}
		}
		dA[u] = s, dD[u] = e;
	}
	__syncthreads();
	/* Qr = q exp(G - G at its sub-chunk's first row), Kb = k exp(G at its
	 * sub-chunk's last row - G) */
#pragma unroll 4
	for (int x = threadIdx.x; x < BT * DK; x += NT) {
		int t = x / DK, d = x % DK, r = t & ~(BS - 1);
		float gg = sG[t * LK + d];
		sQ[t * LK + d] *= exp2f(gg - sG[r * LK + d]);
		sK[t * LK + d] *= exp2f(sG[(r + BS - 1) * LK + d] - gg);
	}
	TileLoad<BT, DV> vl;
	vl.fetch(v + ch.row * Dv, sv, n, Dv);
	__syncthreads();
	/* block (a, b) below the diagonal, a warp each: Qr_a (Kb_b o sM_ab)^T */
	float cb[1][2][4] = {};
	const int a = warp < 1 ? 1 : warp < 3 ? 2 : 3, b = warp - a * (a - 1) / 2;
	if (warp < 6)
		wmma_tf32<true, 1, 2, LK, 1, 1, LK>(cb, sQ + BS * a * LK, sK + BS * b * LK, DK, sM + warp * DK);
	vl.put<LV>(r0); /* V where G was */
	__syncthreads();
	/* Kt = k exp(G_last - G) = Kb exp(G_last - G at its sub-chunk's last row), where q was */
#pragma unroll 4
	for (int x = threadIdx.x; x < BT * DK; x += NT) {
		int t = x / DK, d = x % DK;
		r1[t * LT + d] = sK[t * LK + d] * sM[(6 + t / BS) * DK + d];
	}
	__syncthreads();
	float *sA = r2; /* where k was */
#pragma unroll
	for (int u = 0; u < 2; u++) {
		const int m = 2 * u + !low, i = BS * m + (low ? ty : BS - 1 - ty), j = BS * m + (low ? tx : BS - 1 - tx);
		sA[i * LA + j] = dA[u];
		if (tx == ty) {
			const int ii = BS * (2 * u + 1) + BS - 1 - ty;
			sA[ii * LA + ii] = dD[u];
		}
	}
#pragma unroll
	for (int m = 0; m < 4; m++) {
		if (!low)
			sA[(BS * m + ty) * LA + BS * m + tx] = 0.f;
		for (int l = m + 1; l < 4; l++)
			sA[(BS * m + ty) * LA + BS * l + tx] = 0.f;
	}
	if (warp < 6)
#pragma unroll
		for (int j = 0; j < 2; j++)
#pragma unroll
			for (int r = 0; r < 4; r++)
				sA[(BS * a + g + 8 * (r >> 1)) * LA + BS * b + 8 * j + 2 * t4 + (r & 1)] = cb[0][j][r];
	__syncthreads();
	/* o = scale A V, 32 x 32 tiles a warp; A is causal: k up to the tile's last row */
	for (int p = warp; p < 2 * NV; p += NT / 32) {
		const int m0 = 32 * (p / NV), e0 = 32 * (p % NV);
		float c[2][4][4] = {};
		wmma_tf32<true, 2, 4, LA, 1, LV, 1>(c, sA + m0 * LA, r0 + e0, m0 + 32);
#pragma unroll
		for (int i = 0; i < 2; i++)
#pragma unroll
			for (int j = 0; j < 4; j++)
#pragma unroll
				for (int r = 0; r < 4; r++) {
					int row = m0 + 16 * i + g + 8 * (r >> 1), e = e0 + 8 * j + 2 * t4 + (r & 1);
					if (row < n && e < Dv)
						o[(ch.row + (size_t)row * H) * Dv + e] = scale * c[i][j][r];
				}
	}
	/* the increment Kt^T V */
	for (int p = warp; p < DK / 32 * NV; p += NT / 32) {
		const int d0 = 32 * (p / NV), e0 = 32 * (p % NV);
		float c[2][4][4] = {};
		wmma_tf32<true, 2, 4, 1, LT, LV, 1>(c, r1 + d0, r0 + e0, BT);
#pragma unroll
		for (int i = 0; i < 2; i++)
#pragma unroll
			for (int j = 0; j < 4; j++)
#pragma unroll
				for (int r = 0; r < 4; r++) {
					int d = d0 + 16 * i + g + 8 * (r >> 1), e = e0 + 8 * j + 2 * t4 + (r & 1);
					if (d < Dk && e < Dv)
						S[slot + (size_t)d * Dv + e] = c[i][j][r];
				}
	}
}

/* Version 3's inter: o += scale (q o exp(G)) S_c on the tensor cores, 32 x
 * 32 tiles a warp; S the scanned states (B*H, NC+1, Dk, Dv) */
template <int DK, int DV>
__global__ void __launch_bounds__(NT, 2) gla_fwd_inter_kernel(float *o, const float *S, const float *q,
                                                              const float *gk, int T, int H, int Dk, int Dv, int NC,
                                                              float scale)
{
	constexpr int LK = DK + 4, LV = DV + 8, NV = DV / 32;
	float *sQ = gla_smem, *sS = sQ + BT * LK;
	const Chunk ch = chunk_of(T, H, NC);
	const int n = ch.n, warp = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2, t4 = threadIdx.x & 3;
	const size_t sk = (size_t)H * Dk;
	TileLoad<BT, DK> ql; /* q, in flight with the tiles' loads */
	ql.fetch(q + ch.row * Dk, sk, n, Dk);
	load_tile<BT, DK, LK>(sQ, gk + ch.row * Dk, sk, n, Dk);
	load_tile<DK, DV, LV>(sS, S + ((size_t)ch.bh * (NC + 1) + ch.c) * Dk * Dv, Dv, Dk, Dv);
	__syncthreads();
	cumsum_tile<DK, LK>(sQ);
#pragma unroll
	for (int u = 0; u < TileLoad<BT, DK>::N; u++) {
		int i = threadIdx.x + u * NT, t = i / (DK / 4), d = 4 * (i % (DK / 4));
		float *p = sQ + t * LK + d;
		p[0] = ql.f[u].x * exp2f(p[0]), p[1] = ql.f[u].y * exp2f(p[1]);
		p[2] = ql.f[u].z * exp2f(p[2]), p[3] = ql.f[u].w * exp2f(p[3]);
	}
	__syncthreads();
	for (int p = warp; p < 2 * NV; p += NT / 32) {
		const int m0 = 32 * (p / NV), e0 = 32 * (p % NV);
		float c[2][4][4] = {};
		wmma_tf32<true, 2, 4, LK, 1, LV, 1>(c, sQ + m0 * LK, sS + e0, DK);
		float x[2][4][4]; /* o's values, all loads before the first store */
#pragma unroll
		for (int i = 0; i < 2; i++)
#pragma unroll
			for (int j = 0; j < 4; j++)
#pragma unroll
				for (int r = 0; r < 4; r++) {
					int row = m0 + 16 * i + g + 8 * (r >> 1), e = e0 + 8 * j + 2 * t4 + (r & 1);
					x[i][j][r] = row < n && e < Dv ? o[(ch.row + (size_t)row * H) * Dv + e] : 0.f;
				}
#pragma unroll
		for (int i = 0; i < 2; i++)
#pragma unroll
			for (int j = 0; j < 4; j++)
#pragma unroll
				for (int r = 0; r < 4; r++) {
					int row = m0 + 16 * i + g + 8 * (r >> 1), e = e0 + 8 * j + 2 * t4 + (r & 1);
					if (row < n && e < Dv)
						o[(ch.row + (size_t)row * H) * Dv + e] = x[i][j][r] + scale * c[i][j][r];
				}
	}
}

/* One chunk, columns e0 = 64 blockIdx.y onwards of v:
 * dv = scale A^T dO + Kt dS', dS' from the reverse scan */
template <int DK>
__global__ void __launch_bounds__(NT, 2) gla_dv_kernel(float *dv, const float *Ab, const float *dS, const float *k,
                                                       const float *gk, const float *dout, int T, int H, int Dk, int Dv,
                                                       int NC, float scale)
{
	constexpr int LK = DK + 1, L = BT + 1;
	float *sA = gla_smem, *sO = sA + BT * L, *sK = sO + BT * L, *sS = sK + BT * LK; /* sS: G, then dS' */
	const Chunk ch = chunk_of(T, H, NC);
	const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4, n = ch.n, e0 = BT * blockIdx.y;
	const size_t sk = (size_t)H * Dk, sv = (size_t)H * Dv;
	load_tile<BT, DK>(sS, gk + ch.row * Dk, sk, n, Dk);
	load_tile<BT, DK>(sK, k + ch.row * Dk, sk, n, Dk);
	load_tile<BT, BT>(sA, Ab + ((size_t)ch.bh * NC + ch.c) * BT * BT, BT, BT, BT);
	load_tile<BT, BT>(sO, dout + ch.row * Dv + e0, sv, n, Dv - e0);
	__syncthreads();
	cumsum_tile<DK>(sS);
#pragma unroll 4
	for (int x = threadIdx.x; x < BT * DK; x += NT) {
		int t = x / DK, d = x % DK;
		sK[t * LK + d] *= exp2f(sS[(BT - 1) * LK + d] - sS[t * LK + d]);
	}
	__syncthreads();
	load_tile<DK, BT>(sS, dS + ((size_t)ch.bh * (NC + 1) + ch.c) * Dk * Dv + e0, Dv, Dk, Dv - e0);
	__syncthreads();
	float acc[4][4] = {};
	mm<4, 4, BT, 1, L, L, 1>(acc, sA, sO);
#pragma unroll
	for (int m = 0; m < 4; m++)
#pragma unroll
		for (int j = 0; j < 4; j++)
			acc[m][j] *= scale;
	mm<4, 4, DK, LK, 1, L, 1>(acc, sK, sS);
#pragma unroll
	for (int m = 0; m < 4; m++)
#pragma unroll
		for (int j = 0; j < 4; j++) {
			int i = ty + BS * m, e = e0 + tx + BS * j;
			if (i < n && e < Dv)
				dv[(ch.row + (size_t)i * H) * Dv + e] = acc[m][j];
		}
}

/* One chunk, key dimensions d0 = 64 blockIdx.y onwards: dq, dk, and dgk
 * (unless NULL) from dP (intra), S_c (forward scan), dS' and the end
 * state's share of dG_last, end (B*H, NC, Dk) (reverse scan). Six 64 x 64
 * tiles of shared memory whatever Dv: the products over Dv run 64 columns
 * at a time through sX and sY. */
template <int DV>
__global__ void __launch_bounds__(NT, 2) gla_dqk_kernel(float *dq, float *dk, float *dgk, const float *dPb,
                                                        const float *S, const float *dS, const float *end,
                                                        const float *q, const float *k, const float *v,
                                                        const float *gk, const float *dout, int T, int H, int Dk,
                                                        int Dv, int NC, float scale)
{
	constexpr int L = BT + 1, TILE = BT * L;
	float *sX = gla_smem, *sY = sX + TILE; /* 64 columns of dO and S_c rows, then of V and dS' rows */
	float *sP = sY + TILE, *sR = sP + TILE, *sT = sR + TILE, *sG = sT + TILE, *sL = sG + TILE;
	const Chunk ch = chunk_of(T, H, NC);
	const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4, n = ch.n, d0 = BT * blockIdx.y, nd = Dk - d0;
	const size_t sk = (size_t)H * Dk, sv = (size_t)H * Dv, slot = ((size_t)ch.bh * (NC + 1) + ch.c) * Dk * Dv;
	load_tile<BT, BT>(sG, gk + ch.row * Dk + d0, sk, n, nd);
	load_tile<BT, BT>(sR, k + ch.row * Dk + d0, sk, n, nd);
	load_tile<BT, BT>(sP, dPb + ((size_t)ch.bh * NC + ch.c) * BT * BT, BT, BT, BT);
	if (threadIdx.x < BT)
		sL[threadIdx.x] = dgk && (int)threadIdx.x < nd ? end[((size_t)ch.bh * NC + ch.c) * Dk + d0 + threadIdx.x] : 0.f;
	__syncthreads();
	cumsum_tile<BT>(sG);
	/* Kb = k exp(G at its sub-chunk's last row - G) */
#pragma unroll 4
	for (int x = threadIdx.x; x < BT * BT; x += NT) {
		int t = x / BT, d = x % BT;
		sT[t * L + d] = sR[t * L + d] * exp2f(sG[(t | (BS - 1)) * L + d] - sG[t * L + d]);
	}

	/* dq = scale exp(G) o (dO S^T) + sum_{j<=i} dP_ij exp(G_i - G_j) o k_j */
	float aq[4][4] = {};
#pragma unroll 1
	for (int e0 = 0; e0 < DV; e0 += BT) {
		__syncthreads();
		load_tile<BT, BT>(sX, dout + ch.row * Dv + e0, sv, n, Dv - e0);
		load_tile<BT, BT>(sY, S + slot + (size_t)d0 * Dv + e0, Dv, nd, Dv - e0);
		__syncthreads();
		mm<4, 4, BT, L, 1, 1, L>(aq, sX, sY);
	}
#pragma unroll
	for (int m = 0; m < 4; m++)
#pragma unroll
		for (int j = 0; j < 4; j++)
			aq[m][j] *= scale * exp2f(sG[(ty + BS * m) * L + tx + BS * j]);
	for (int b = 0; b < 3; b++) { /* j in sub-chunk b, i in a later one: exp(G_i - G_b_last) Kb */
		float t4[4][4] = {};
		mm<4, 4, BS, L, 1, L, 1>(t4, sP + BS * b, sT + BS * b * L);
#pragma unroll
		for (int m = 0; m < 4; m++)
#pragma unroll
			for (int j = 0; j < 4; j++) {
				int d = tx + BS * j;
				if (m > b)
					aq[m][j] += exp2f(sG[(ty + BS * m) * L + d] - sG[(BS * b + BS - 1) * L + d]) * t4[m][j];
			}
	}
#pragma unroll
	for (int m = 0; m < 4; m++) { /* the diagonal block, term by term */
		int i = ty + BS * m;
		for (int jj = 0; jj <= (ty | 1); jj++) {
			int j = BS * m + jj;
			float p = sP[i * L + j];
#pragma unroll
			for (int l = 0; l < 4; l++) {
				int d = tx + BS * l;
				float x = p * sR[j * L + d];
				aq[m][l] += jj <= ty ? x * exp2f(sG[i * L + d] - sG[j * L + d]) : 0.f;
			}
		}
	}
#pragma unroll
	for (int m = 0; m < 4; m++)
#pragma unroll
		for (int j = 0; j < 4; j++) {
			int i = ty + BS * m, d = tx + BS * j;
			if (i < n && d < nd)
				dq[(ch.row + (size_t)i * H) * Dk + d0 + d] = aq[m][j];
		}

	/* dk = sum_{i>=j} dP_ij exp(G_i - G_j) o q_i + exp(G_last - G_j) o (dS' v_j) */
	float ak[4][4] = {};
	__syncthreads();
	load_tile<BT, BT>(sR, q + ch.row * Dk + d0, sk, n, nd);
#pragma unroll 1
	for (int e0 = 0; e0 < DV; e0 += BT) {
		if (e0)
			__syncthreads();
		load_tile<BT, BT>(sX, v + ch.row * Dv + e0, sv, n, Dv - e0);
		load_tile<BT, BT>(sY, dS + slot + (size_t)d0 * Dv + e0, Dv, nd, Dv - e0);
		__syncthreads();
		mm<4, 4, BT, L, 1, 1, L>(ak, sX, sY);
	}
	/* Qr = q exp(G - G at its sub-chunk's first row) */
#pragma unroll 4
	for (int x = threadIdx.x; x < BT * BT; x += NT) {
		int t = x / BT, d = x % BT;
		sT[t * L + d] = sR[t * L + d] * exp2f(sG[t * L + d] - sG[(t & ~(BS - 1)) * L + d]);
	}
	__syncthreads();
#pragma unroll
	for (int m = 0; m < 4; m++)
#pragma unroll
		for (int j = 0; j < 4; j++) {
			int d = tx + BS * j;
			ak[m][j] *= exp2f(sG[(BT - 1) * L + d] - sG[(ty + BS * m) * L + d]);
		}
	for (int a = 1; a < 4; a++) { /* i in sub-chunk a, j in an earlier one: exp(G_a_first - G_j) Qr */
		float t4[4][4] = {};
		mm<4, 4, BS, 1, L, L, 1>(t4, sP + BS * a * L, sT + BS * a * L);
#pragma unroll
		for (int m = 0; m < 4; m++)
#pragma unroll
			for (int j = 0; j < 4; j++) {
				int d = tx + BS * j;
				if (m < a)
					ak[m][j] += exp2f(sG[BS * a * L + d] - sG[(ty + BS * m) * L + d]) * t4[m][j];
			}
	}
#pragma unroll
	for (int m = 0; m < 4; m++) { /* the diagonal block, term by term */
		int j = ty + BS * m;
		for (int ii = ty & ~1; ii < BS; ii++) {
			int i = BS * m + ii;
			float p = sP[i * L + j];
#pragma unroll
			for (int l = 0; l < 4; l++) {
				int d = tx + BS * l;
				float x = p * sR[i * L + d];
				ak[m][l] += ii >= ty ? x * exp2f(sG[i * L + d] - sG[j * L + d]) : 0.f;
			}
		}
	}
#pragma unroll
	for (int m = 0; m < 4; m++)
#pragma unroll
		for (int j = 0; j < 4; j++) {
			int i = ty + BS * m, d = tx + BS * j;
			if (i < n && d < nd)
				dk[(ch.row + (size_t)i * H) * Dk + d0 + d] = ak[m][j];
		}
	if (!dgk)
		return;

	/* dG = q o dq - k o dk, plus the end state's share at the last row;
	 * dgk its sums from the chunk's end. dq back from memory (this thread's
	 * own writes): held in registers it would spill. */
	float dg[4][4];
#pragma unroll
	for (int m = 0; m < 4; m++)
#pragma unroll
		for (int j = 0; j < 4; j++) {
			int i = ty + BS * m, d = tx + BS * j;
			size_t r = (ch.row + (size_t)i * H) * Dk + d0 + d;
			dg[m][j] = i < n && d < nd ? sR[i * L + d] * dq[r] - k[r] * ak[m][j] : 0.f;
		}
	__syncthreads();
#pragma unroll
	for (int m = 0; m < 4; m++)
#pragma unroll
		for (int j = 0; j < 4; j++)
			sP[(ty + BS * m) * L + tx + BS * j] = dg[m][j];
	__syncthreads();
	if (threadIdx.x < BT) {
		int d = threadIdx.x;
		float s = sL[d];
		for (int i = BT - 1; i >= 0; i--) {
			s += sP[i * L + d];
			if (i < n && d < nd)
				dgk[(ch.row + (size_t)i * H) * Dk + d0 + d] = s;
		}
	}
}

// ----------------------------------------------------------------------------
// launchers

/* the work, in 256-byte aligned regions of floats: S and dS (B*H, NC+1,
 * Dk, Dv), decay and end (B*H, NC, Dk), A and dP (B*H, NC, 64, 64) */
struct Work {
	float *S, *dS, *decay, *end, *A, *dP;
};

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

static size_t work_floats(int B, int T, int H, int Dk, int Dv, Work *w, void *base)
{
	size_t BH = (size_t)B * H, NC = CEIL_DIV(T, BT), sizes[6];
	sizes[0] = sizes[1] = align64(BH * (NC + 1) * Dk * Dv);
	sizes[2] = sizes[3] = align64(BH * NC * Dk);
	sizes[4] = sizes[5] = align64(BH * NC * BT * BT);
	float *p = (float *)base, **dst[6] = {&w->S, &w->dS, &w->decay, &w->end, &w->A, &w->dP};
	size_t n = 0;
	for (int i = 0; i < 6; i++) {
		if (base)
			*dst[i] = p + n;
		n += sizes[i];
	}
	return n;
}

extern "C" size_t gla_chunked_work(int B, int T, int H, int Dk, int Dv)
{
	Work w;
	return work_floats(B, T, H, Dk, Dv, &w, NULL) * sizeof(float);
}

static int padded(int D, const char *who)
{
	if (D < 1 || D > 128)
		fprintf(stderr, "%s: head dimension %d (1 to 128 are built)\n", who, D), exit(1);
	return D <= 64 ? 64 : 128;
}

/* three tiles of the wider of DK, DV (+1) and sM */
static size_t intra_smem(int DK, int DV) { return (3 * BT * ((DK > DV ? DK : DV) + 1) + 6 * DK) * sizeof(float); }

/* DASH_GLA_V2=1 in the environment (read once): the forward of version 2
 * (gla_intra_kernel, gla_inter_kernel on the CUDA cores), for comparison */
static int gla_forward_v2(void)
{
	static int v = -1;
	if (v < 0) {
		const char *e = getenv("DASH_GLA_V2");
		v = e && !strcmp(e, "1");
	}
	return v;
}

static void scan(float *buf, const float *decay, const float *init, float *fin, float *end, const float *S, int BH,
                 int NC, int Dk, int Dv, int keep_end, int reverse)
{
	size_t rows = (size_t)BH * Dk; /* a warp each, 8 a block */
	gla_scan_kernel<<<(unsigned)CEIL_DIV(rows, 8), 256>>>(buf, decay, init, fin, end, S, BH, NC, Dk, Dv, keep_end,
	                                                      reverse);
	cudaCheck(cudaGetLastError());
}

template <int DK, int DV>
static void forward(float *o, float *S0, const float *q, const float *k, const float *v, const float *gk, int B,
                    int T, int H, int Dk, int Dv, float scale, void *work)
{
	Work w;
	work_floats(B, T, H, Dk, Dv, &w, work);
	int BH = B * H, NC = CEIL_DIV(T, BT);
	if (!gla_forward_v2()) { /* version 3 */
		constexpr int LK = DK + 4, LT = DK + 8, LV = DV + 8;
		size_t sm = (3 * BT * (LT > LV ? LT : LV) + 10 * DK) * sizeof(float);
		smem_allow(gla_fwd_intra_kernel<DK, DV>, sm);
		gla_fwd_intra_kernel<DK, DV><<<BH * NC, NT, sm>>>(o, w.S, w.decay, q, k, v, gk, T, H, Dk, Dv, NC, scale);
		cudaCheck(cudaGetLastError());
		scan(w.S, w.decay, S0, S0, NULL, NULL, BH, NC, Dk, Dv, 0, 0);
		sm = (BT * LK + DK * LV) * sizeof(float);
		smem_allow(gla_fwd_inter_kernel<DK, DV>, sm);
		gla_fwd_inter_kernel<DK, DV><<<BH * NC, NT, sm>>>(o, w.S, q, gk, T, H, Dk, Dv, NC, scale);
		cudaCheck(cudaGetLastError());
		return;
	}
	size_t sm = intra_smem(DK, DV);
	smem_allow(gla_intra_kernel<DK, DV, false>, sm);
	gla_intra_kernel<DK, DV, false><<<BH * NC, NT, sm>>>(o, w.S, w.decay, NULL, NULL, NULL, q, k, v, gk, NULL, T, H,
	                                                     Dk, Dv, NC, scale);
	cudaCheck(cudaGetLastError());
	scan(w.S, w.decay, S0, S0, NULL, NULL, BH, NC, Dk, Dv, 0, 0);
	sm = (BT * (DK + 1) + DK * (DV + 1)) * sizeof(float);
	smem_allow(gla_inter_kernel<DK, DV>, sm);
	gla_inter_kernel<DK, DV><<<BH * NC, NT, sm>>>(o, w.S, q, gk, T, H, Dk, Dv, NC, scale);
	cudaCheck(cudaGetLastError());
}

template <int DK, int DV>
static void backward(float *dq, float *dk, float *dv, float *dgk, float *dS0, const float *dout, const float *dSf,
                     const float *q, const float *k, const float *v, const float *gk, const float *S0, int B, int T,
                     int H, int Dk, int Dv, float scale, void *work)
{
	Work w;
	work_floats(B, T, H, Dk, Dv, &w, work);
	int BH = B * H, NC = CEIL_DIV(T, BT), L = BT + 1;
	size_t sm = intra_smem(DK, DV);
	smem_allow(gla_intra_kernel<DK, DV, true>, sm);
	gla_intra_kernel<DK, DV, true><<<BH * NC, NT, sm>>>(NULL, w.S, w.decay, w.A, w.dS, w.dP, q, k, v, gk, dout, T,
	                                                    H, Dk, Dv, NC, scale);
	cudaCheck(cudaGetLastError());
	scan(w.S, w.decay, S0, NULL, NULL, NULL, BH, NC, Dk, Dv, 1, 0);
	scan(w.dS, w.decay, dSf, dS0, dgk ? w.end : NULL, w.S, BH, NC, Dk, Dv, 0, 1);
	size_t g = BT * (DK + 1) > DK * L ? BT * (DK + 1) : DK * L;
	sm = (2 * BT * L + BT * (DK + 1) + g) * sizeof(float);
	smem_allow(gla_dv_kernel<DK>, sm);
	gla_dv_kernel<DK><<<dim3(BH * NC, DV / BT), NT, sm>>>(dv, w.A, w.dS, k, gk, dout, T, H, Dk, Dv, NC, scale);
	cudaCheck(cudaGetLastError());
	sm = (6 * BT * L + NT) * sizeof(float);
	smem_allow(gla_dqk_kernel<DV>, sm);
	gla_dqk_kernel<DV><<<dim3(BH * NC, DK / BT), NT, sm>>>(dq, dk, dgk, w.dP, w.S, w.dS, w.end, q, k, v, gk, dout,
	                                                       T, H, Dk, Dv, NC, scale);
	cudaCheck(cudaGetLastError());
}

extern "C" void gla_forward_chunked_cuda(float *d_o, float *d_S, const float *d_q, const float *d_k,
                                         const float *d_v, const float *d_gk, int B, int T, int H, int Dk, int Dv,
                                         float scale, void *d_work)
{
	const char *who = "gla_forward_chunked_cuda";
	int DK = padded(Dk, who), DV = padded(Dv, who);
	if (DK == 64 && DV == 64)
		forward<64, 64>(d_o, d_S, d_q, d_k, d_v, d_gk, B, T, H, Dk, Dv, scale, d_work);
	else if (DK == 64)
		forward<64, 128>(d_o, d_S, d_q, d_k, d_v, d_gk, B, T, H, Dk, Dv, scale, d_work);
	else if (DV == 64)
		forward<128, 64>(d_o, d_S, d_q, d_k, d_v, d_gk, B, T, H, Dk, Dv, scale, d_work);
	else
		forward<128, 128>(d_o, d_S, d_q, d_k, d_v, d_gk, B, T, H, Dk, Dv, scale, d_work);
}

extern "C" void gla_backward_chunked_cuda(float *d_dq, float *d_dk, float *d_dv, float *d_dgk, float *d_dS0,
                                          const float *d_dout, const float *d_dSf, const float *d_q,
                                          const float *d_k, const float *d_v, const float *d_gk, const float *d_S0,
                                          int B, int T, int H, int Dk, int Dv, float scale, void *d_work)
{
	const char *who = "gla_backward_chunked_cuda";
	int DK = padded(Dk, who), DV = padded(Dv, who);
	if (DK == 64 && DV == 64)
		backward<64, 64>(d_dq, d_dk, d_dv, d_dgk, d_dS0, d_dout, d_dSf, d_q, d_k, d_v, d_gk, d_S0, B, T, H, Dk, Dv,
		                 scale, d_work);
	else if (DK == 64)
		backward<64, 128>(d_dq, d_dk, d_dv, d_dgk, d_dS0, d_dout, d_dSf, d_q, d_k, d_v, d_gk, d_S0, B, T, H, Dk, Dv,
		                  scale, d_work);
	else if (DV == 64)
		backward<128, 64>(d_dq, d_dk, d_dv, d_dgk, d_dS0, d_dout, d_dSf, d_q, d_k, d_v, d_gk, d_S0, B, T, H, Dk, Dv,
		                  scale, d_work);
	else
		backward<128, 128>(d_dq, d_dk, d_dv, d_dgk, d_dS0, d_dout, d_dSf, d_q, d_k, d_v, d_gk, d_S0, B, T, H, Dk,
		                   Dv, scale, d_work);
}
