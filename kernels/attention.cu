/*
 * attention: causal GQA softmax attention (optionally sliding-window) on the
 * tensor cores, forward and backward. Twins of attention_forward_cpu and
 * attention_backward_cpu (lib/ops_cpu.c).
 *   q (B*T, H, D), k, v (B*T, G, D) bf16 -> out (B*T, H, D) bf16,
 *   lse (B, H, T) float32: log-sum-exp of each query's scaled scores, for the
 *   backward.
 * RoPE is applied before; query head h reads kv head h / (H / G). The
 * backward of two attentions of one q, k, v and dout (a supernet's fa and
 * swa, attention_backward2_cuda) adds both into one set of float32
 * accumulators and converts once: on Hopper, both weighed, in one pass (the
 * wgmma backward with TWO: one S and dP for both softmaxes, the weights in
 * P and dS), else each kernel in turn, its dq, dk, dv scaled by its weight.
 * Their forwards run in one pass on Hopper (attention_forward2_cuda): the
 * key tiles newest first, the window's result stored once its keys are in.
 *
 * version 2, flash-attention-2 style, register resident: every product is an
 * mma.sync.m16n8k16 (bf16 in, float32 accumulate) on fragments read from
 * shared memory by ldmatrix; tiles travel from global memory by cp.async,
 * the next one in flight while the current one is used. The accumulator
 * layout of m16n8k16 is the A-operand layout of the next product, so the
 * probabilities P never leave registers. Shared rows are padded by 16 bytes,
 * which makes the 8 rows of every ldmatrix land in 8 different bank groups.
 *
 * Fragment layouts used below (PTX ISA, mma.m16n8k16 for bf16), with
 * lane = 4 g + t:
 *   A (16 x 16): a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..)
 *   B (16 x 8):  b0 (k 2t..2t+1, n g), b1 (k 2t+8.., n g)
 *   C (16 x 8):  c0 c1 (g, 2t..2t+1), c2 c3 (g+8, 2t..2t+1)
 */
#include <string.h>

#include <cuda.h>
#include <cudaTypedefs.h>

#include "cuda_common.cuh"
#include "gpu.h"
#include "mbar.cuh"
#include "wgmma.cuh"

#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

// ----------------------------------------------------------------------------
// PTX helpers

/* 16 bytes global -> shared, asynchronously; zeros when !pred (the source
 * is then not read, but must be a valid address) */
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool pred)
{
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
	             "r"(pred ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit(void) { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait(void)
{
	asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/* four 8x8 matrices of 16-bit values: lane l gives the address of row l % 8
 * of matrix l / 8; r[i] receives matrix i, lane holding (row l / 4, columns
 * 2 (l % 4) and +1), or with .trans its transpose */
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const bf16 *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
	             : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
	             : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const bf16 *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
	             : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
	             : "r"(smem_addr(p)));
}

/* c (16x8, float32) += a (16x16) b (16x8), bf16 */
__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
	             "{%8,%9}, {%0,%1,%2,%3};\n"
	             : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
	             : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* 2^x by the special function unit alone (exp2f adds a range fix-up for
 * denormal results, which probabilities below 2^-126 do not need);
 * 2^-inf = +0 */
__device__ __forceinline__ float exp2_approx(float x)
{
	float y;
	asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
	return y;
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
	__nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
	return *reinterpret_cast<uint32_t *>(&v);
}

/* The addresses ldmatrix wants, for a tile stored row-major with ld
 * elements a row:
 *   a_frag: the A operand (16 x 16) at rows r0.., columns c0..
 *   b_pair: the B operands of two n-tiles when the tile holds B^T (rows are
 *           n: keys for S = Q K^T), rows n0..n0+15, columns k0..k0+15:
 *           r[0], r[1] for n0..n0+7 and r[2], r[3] for n0+8..
 *   bt_pair (with ldmatrix .trans): the B operands of two n-tiles when the
 *           tile holds B itself (rows are k: keys for O = P V), rows
 *           k0..k0+15, columns n0..n0+15 */
__device__ __forceinline__ const bf16 *a_frag(const bf16 *s, int ld, int r0, int c0, int lane)
{
	return s + (r0 + (lane & 15)) * ld + c0 + (lane >> 4) * 8;
}
__device__ __forceinline__ const bf16 *b_pair(const bf16 *s, int ld, int n0, int k0, int lane)
{
	return s + (n0 + (lane & 7) + (lane >> 4) * 8) * ld + k0 + ((lane >> 3) & 1) * 8;
}
__device__ __forceinline__ const bf16 *bt_pair(const bf16 *s, int ld, int k0, int n0, int lane)
{
	return s + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + n0 + (lane >> 4) * 8;
}

/* rows row0.. (ROWS of them) of D bf16 from global rows of stride elements
 * into shared rows of D + 8, asynchronously; zeros from row limit on */
template <int D, int ROWS, int NTHREADS>
__device__ __forceinline__ void load_tile_async(bf16 *dst, const bf16 *src, size_t stride, int row0, int limit)
{
	constexpr int PER_ROW = D / 8, LD = D + 8;
	for (int i = threadIdx.x; i < ROWS * PER_ROW; i += NTHREADS) {
		int r = i / PER_ROW, c = (i % PER_ROW) * 8;
		bool in = row0 + r < limit;
		cp_async16(dst + r * LD + c, src + (in ? (size_t)(row0 + r) * stride + c : 0), in);
	}
}

/* may key kj be seen by query qi */
__device__ __forceinline__ bool visible(int qi, int kj, int T, int window)
{
	return kj <= qi && kj < T && (window <= 0 || kj > qi - window);
}

// ----------------------------------------------------------------------------
// forward: a block of 4 warps takes 128 queries of one head, 32 a warp (two
// m-tiles, so that every K and V fragment read from shared memory feeds two
// products); key/value tiles of 64. Per tile, S = Q K^T (32 x 64 a warp,
// registers), the online softmax on it (row max and sum across the 4 lanes
// of a row by shuffles), O = alpha O + P V with P straight from S's
// registers. V's copy overlaps S, the next K's overlaps P V. Query tiles run
// last first, heads fastest in the grid: the causal long ones start early
// (the Hopper forward below gained 19% from the heads' order). The tile sizes are macros
// so that bench/ can build variants (2026-11-27, H200, T 4096: 8 warps of
// 16 rows 0.430 ms, 4 of 32 rows 0.372 ms, 4 of 32 with 32-key tiles 0.391,
// 8 of 32 with 32-key tiles 0.467).

#ifndef FWD_WARPS
#define FWD_WARPS 4
#endif
#ifndef FWD_MT
#define FWD_MT 2
#endif
#define FWD_BQ (16 * FWD_MT * FWD_WARPS)
#ifndef FWD_BK
#define FWD_BK 64
#endif

template <int D>
__global__ void __launch_bounds__(FWD_WARPS * WARP_SIZE)
attention_forward_kernel(bf16 *out, float *lse, const bf16 *q, const bf16 *k, const bf16 *v, int T, int H, int G,
                         int window, float scale)
{
	constexpr int LD = D + 8, NT = FWD_WARPS * WARP_SIZE, MT = FWD_MT;
	/* with one m-tile a warp, Q's fragments stay in registers; with more,
	 * each B fragment serves MT products and Q is read from shared memory */
	constexpr bool QREG = MT == 1;
	extern __shared__ __align__(128) unsigned char smem_raw[];
	bf16 *sq = (bf16 *)smem_raw, *sk = sq + FWD_BQ * LD, *sv = sk + FWD_BK * LD;
	int q0 = (gridDim.y - 1 - blockIdx.y) * FWD_BQ, h = blockIdx.x, b = blockIdx.z, g = h / (H / G);
	int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE;
	const size_t qs = (size_t)H * D, ks = (size_t)G * D;
	const bf16 *qb = q + (size_t)b * T * qs + (size_t)h * D;
	const bf16 *kb = k + (size_t)b * T * ks + (size_t)g * D;
	const bf16 *vb = v + (size_t)b * T * ks + (size_t)g * D;
	const float sl2 = scale * LOG2E;

	int qlast = min(q0 + FWD_BQ, T) - 1, wr0 = warp * 16 * MT, wq0 = q0 + wr0;
	int kt0 = (window > 0 ? max(0, q0 - window + 1) : 0) / FWD_BK, kt1 = qlast / FWD_BK;
	load_tile_async<D, FWD_BQ, NT>(sq, qb, qs, q0, T);
	cp_async_commit();
	load_tile_async<D, FWD_BK, NT>(sk, kb, ks, kt0 * FWD_BK, T);
	cp_async_commit();

	uint32_t qf[QREG ? D / 16 : 1][4];
	float o[MT][D / 8][4];
#pragma unroll
	for (int mt = 0; mt < MT; mt++)
#pragma unroll
		for (int n = 0; n < D / 8; n++)
			o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.f;
	/* this lane's rows: wq0 + 16 mt + lane / 4 (+ 8); index 2 mt + i */
	float m[2 * MT], l[2 * MT];
#pragma unroll
	for (int i = 0; i < 2 * MT; i++)
		m[i] = -INFINITY, l[i] = 0.f;

	for (int kt = kt0; kt <= kt1; kt++) {
		int k0 = kt * FWD_BK;
		load_tile_async<D, FWD_BK, NT>(sv, vb, ks, k0, T);
		cp_async_commit();
		cp_async_wait<1>(); /* Q (first time) and this K */
		__syncthreads();
		if (QREG && kt == kt0)
#pragma unroll
			for (int d = 0; d < D / 16; d++)
				ldmatrix_x4(qf[QREG ? d : 0], a_frag(sq, LD, wr0, d * 16, lane));

		/* S = Q K^T: 16 MT rows x BK keys */
		float s[MT][FWD_BK / 8][4];
#pragma unroll
		for (int mt = 0; mt < MT; mt++)
#pragma unroll
			for (int j = 0; j < FWD_BK / 8; j++)
				s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
#pragma unroll
		for (int d = 0; d < D / 16; d++) {
			uint32_t qa[MT][4];
			if (!QREG)
#pragma unroll
				for (int mt = 0; mt < MT; mt++)
					ldmatrix_x4(qa[mt], a_frag(sq, LD, wr0 + 16 * mt, d * 16, lane));
#pragma unroll
			for (int n = 0; n < FWD_BK / 16; n++) {
				uint32_t kf[4];
				ldmatrix_x4(kf, b_pair(sk, LD, n * 16, d * 16, lane));
#pragma unroll
				for (int mt = 0; mt < MT; mt++) {
					const uint32_t *a = QREG ? qf[QREG ? d : 0] : qa[mt];
					mma16816(s[mt][2 * n], a, kf[0], kf[1]);
					mma16816(s[mt][2 * n + 1], a, kf[2], kf[3]);
				}
			}
		}
		__syncthreads(); /* every warp is done with K: fetch the next */
		if (kt < kt1)
			load_tile_async<D, FWD_BK, NT>(sk, kb, ks, k0 + FWD_BK, T);
		cp_async_commit();

		/* masks only where a tile crosses the diagonal, the end or the window */
		if (k0 + FWD_BK - 1 > wq0 || k0 + FWD_BK > T || (window > 0 && wq0 + 16 * MT - 1 - k0 >= window))
#pragma unroll
			for (int mt = 0; mt < MT; mt++)
#pragma unroll
				for (int j = 0; j < FWD_BK / 8; j++)
#pragma unroll
					for (int e = 0; e < 4; e++)
						if (!visible(wq0 + 16 * mt + lane / 4 + 8 * (e >> 1), k0 + j * 8 + 2 * (lane % 4) + (e & 1), T,
						             window))
							s[mt][j][e] = -INFINITY;

		/* online softmax: a row lives in the 4 lanes of a quad */
#pragma unroll
		for (int mt = 0; mt < MT; mt++) {
			float mx[2] = {m[2 * mt], m[2 * mt + 1]};
#pragma unroll
			for (int j = 0; j < FWD_BK / 8; j++) {
				mx[0] = fmaxf(mx[0], fmaxf(s[mt][j][0], s[mt][j][1]));
				mx[1] = fmaxf(mx[1], fmaxf(s[mt][j][2], s[mt][j][3]));
			}
			float base[2], alpha[2];
#pragma unroll
			for (int i = 0; i < 2; i++) {
				mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
				mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
				base[i] = mx[i] == -INFINITY ? 0.f : mx[i] * sl2; /* a row with nothing visible yet */
				alpha[i] = exp2_approx(m[2 * mt + i] * sl2 - base[i]);
				m[2 * mt + i] = mx[i];
			}
			float sum[2] = {0.f, 0.f};
#pragma unroll
			for (int j = 0; j < FWD_BK / 8; j++)
#pragma unroll
				for (int e = 0; e < 4; e++) {
					s[mt][j][e] = exp2_approx(s[mt][j][e] * sl2 - base[e >> 1]);
					sum[e >> 1] += s[mt][j][e];
				}
			/* each lane keeps its part of l; the quad sums at the end */
			l[2 * mt] = l[2 * mt] * alpha[0] + sum[0];
			l[2 * mt + 1] = l[2 * mt + 1] * alpha[1] + sum[1];
#pragma unroll
			for (int n = 0; n < D / 8; n++) {
				o[mt][n][0] *= alpha[0], o[mt][n][1] *= alpha[0];
				o[mt][n][2] *= alpha[1], o[mt][n][3] *= alpha[1];
			}
		}

		cp_async_wait<1>(); /* this V */
		__syncthreads();
		/* O += P V: P's 16-key slices are A fragments already */
#pragma unroll
		for (int c = 0; c < FWD_BK / 16; c++) {
			uint32_t pa[MT][4];
#pragma unroll
			for (int mt = 0; mt < MT; mt++) {
				pa[mt][0] = pack_bf16(s[mt][2 * c][0], s[mt][2 * c][1]);
				pa[mt][1] = pack_bf16(s[mt][2 * c][2], s[mt][2 * c][3]);
				pa[mt][2] = pack_bf16(s[mt][2 * c + 1][0], s[mt][2 * c + 1][1]);
				pa[mt][3] = pack_bf16(s[mt][2 * c + 1][2], s[mt][2 * c + 1][3]);
			}
#pragma unroll
			for (int n = 0; n < D / 16; n++) {
				uint32_t vf[4];
				ldmatrix_x4_trans(vf, bt_pair(sv, LD, c * 16, n * 16, lane));
#pragma unroll
				for (int mt = 0; mt < MT; mt++) {
					mma16816(o[mt][2 * n], pa[mt], vf[0], vf[1]);
					mma16816(o[mt][2 * n + 1], pa[mt], vf[2], vf[3]);
				}
			}
		}
		__syncthreads(); /* every warp is done with V */
	}
	cp_async_wait<0>();

	/* out = O / l; lse = m scale + ln l */
#pragma unroll
	for (int i = 0; i < 2 * MT; i++) {
		l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
		l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
		int row = wq0 + 16 * (i / 2) + lane / 4 + 8 * (i % 2);
		if (row >= T)
			continue;
		float inv = 1.f / l[i];
		bf16 *ob = out + ((size_t)b * T + row) * qs + (size_t)h * D + 2 * (lane % 4);
#pragma unroll
		for (int n = 0; n < D / 8; n++)
			*reinterpret_cast<__nv_bfloat162 *>(ob + n * 8) =
				__floats2bfloat162_rn(o[i / 2][n][2 * (i % 2)] * inv, o[i / 2][n][2 * (i % 2) + 1] * inv);
		if (lane % 4 == 0)
			lse[((size_t)b * H + h) * T + row] = (m[i] * sl2 + log2f(l[i])) * LN2;
	}
}

// ----------------------------------------------------------------------------
// Hopper (sm_90a): the products on wgmma. Tiles sit in shared memory in
// wgmma's 128-byte-swizzled layout: rows of 64 bf16 (128 B) in blocks of 64
// columns, the 16-byte chunk c of row r at chunk c ^ (r % 8), each block
// 1024-aligned. The wgmma A layout in registers is the mma.m16n8k16 one.

#ifdef DASH_HAVE_WGMMA
/* d (64 x 64, float32) = (z: overwrite) or += (a) A (64 x 16) B (16 x 64), both
 * in shared memory (128-byte swizzle), TA / TB 1 for an MN-major A / B */
template <int TA, int TB>
__device__ __forceinline__ void wgmma_m64n64k16_ss_z(float (&d)[32], uint64_t da, uint64_t db)
{
	asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 0, 0;\n"
	             "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, %34, %35;\n}\n"
	             : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3]), "=f"(d[4]), "=f"(d[5]), "=f"(d[6]), "=f"(d[7]), "=f"(d[8]), "=f"(d[9]), "=f"(d[10]), "=f"(d[11]), "=f"(d[12]), "=f"(d[13]), "=f"(d[14]), "=f"(d[15]), "=f"(d[16]), "=f"(d[17]), "=f"(d[18]), "=f"(d[19]), "=f"(d[20]), "=f"(d[21]), "=f"(d[22]), "=f"(d[23]), "=f"(d[24]), "=f"(d[25]), "=f"(d[26]), "=f"(d[27]), "=f"(d[28]), "=f"(d[29]), "=f"(d[30]), "=f"(d[31])
	             : "l"(da), "l"(db), "n"(TA), "n"(TB));
}
template <int TA, int TB>
__device__ __forceinline__ void wgmma_m64n64k16_ss_a(float (&d)[32], uint64_t da, uint64_t db)
{
	asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
	             "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, %34, %35;\n}\n"
	             : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
	             : "l"(da), "l"(db), "n"(TA), "n"(TB));
}

/* d (64 x 64, float32) += A (64 x 16, registers, the mma.m16n8k16 A layout)
 * B (16 x 64), B MN-major in shared memory (16 rows of 64, 128-byte swizzle) */
__device__ __forceinline__ void wgmma_m64n64k16_rs_tb(float (&d)[32], const uint32_t (&a)[4], uint64_t db)
{
	asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
	             "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
	             : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
	             : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}

/* d (64 x 128, float32) += A (64 x 16, registers, the mma.m16n8k16 A layout)
 * B (16 x 128), B MN-major in shared memory (16 rows of 128, 128-byte swizzle) */
__device__ __forceinline__ void wgmma_m64n128k16_rs_tb(float (&d)[64], const uint32_t (&a)[4], uint64_t db)
{
	asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
	             "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
	             : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
	             : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}

#endif

/* wgmma's shared-memory operand descriptors: 128-byte swizzle, 8-row
 * groups 1024 B apart, and the leading byte offset lbo (for an MN-major
 * operand, rows of the tile along K: the distance between its 64-column
 * blocks; 16 for a K-major one, where it is unused). Made from the shared
 * address a, which the compiler must take as new each time: those of the
 * k-steps are then a base plus a constant, made where used, instead of
 * dozens of registers held across the loop */
struct WgDesc {
	uint32_t lo; /* start address / 16 and leading byte offset / 16 */
	__device__ __forceinline__ WgDesc(uint32_t a, uint32_t lbo)
	{
		asm volatile("" : "+r"(a));
		lo = ((a & 0x3ffff) >> 4) | (lbo >> 4) << 16;
	}
	/* the descriptor off bytes further on (the address field takes the
	 * sum: shared addresses stay below 2^18); the upper half, stride 1024
	 * and the swizzle, is a constant */
	__device__ __forceinline__ uint64_t operator()(uint32_t off) const
	{
		return (uint64_t)(lo + off / 16) | (uint64_t)((1024 >> 4) | 1u << 30) << 32;
	}
};

// ----------------------------------------------------------------------------
// forward on Hopper: two consumer warpgroups a block share the K and V
// tiles of 128 queries (64 a warpgroup), both double-buffered, and each
// warpgroup's softmax of tile j runs under its own P V product of tile
// j - 1 (flash attention 3's intra-warpgroup pipeline); a third warpgroup
// is the producer: one of its threads copies Q and every K and V tile by
// the copy engine (tensor maps, 128-byte swizzled boxes), the rest of it
// exits, and the consumers take its registers (setmaxnreg). Per tile:
//   wait for K_j and V_{j-1}; issue S_j = Q K_j^T, then O += P_{j-1} V_{j-1};
//   wait for S_j alone (K_j's buffer released); mask, row max, exponentials
//   and row sums of S_j (under P V); wait for P V (V_{j-1}'s released);
//   rescale O; P_j into A fragments.
// The producer copies K_{j+1} and V_j into the buffers of K_{j-1} and
// V_{j-2} as soon as both warpgroups have released those.
// No block barrier in the loop: a full and an empty mbarrier a buffer (the
// producer's arrival with the copies' bytes, and each consumer warp's after
// its products), so that one warpgroup's softmax can run under the other's
// products. V is read as it lies (rows of keys, an MN-major B operand):
// no transposed copy. The grid runs heads fastest: blocks start longest
// (last queries) first.
// The key tiles are visited newest (the diagonal) first, so that the keys
// of a window come first: the full causal attention and a window's of the
// same q, k, v (a supernet's fa and swa) then take one pass (TWO, see
// WfVisits). The window's (m, l, O) is normalized and stored at the visit
// after its last, between the wait for P V and the rescaling of O: there O
// holds P V up to the window's last tile at the maximum before this
// visit's softmax, m and l saved before it. A tile across the window's edge
// is visited twice, under the window's mask, then (after the store) under
// its complement for the full attention: its S is computed twice, 1 tile
// a block at W 1024 (of up to 33).
// Measured (2026-11-28, H200, the same shape, bench/bin/attention): newest
// first 0.167 ms against 0.170 oldest first; the full and a window of 1024
// in one pass 0.193 ms against 0.270 as two forwards (0.167 + 0.105). Then
// the masks as two compares a score, the output through shared memory and
// the window's store out of the loop: forward 0.157-0.158 ms (0.172 the
// oldest-first kernel in the same call, 438 TFLOP/s), window 1024 0.094,
// both in one pass 0.175 (two forwards 0.250). forward2 without the
// window's store (a wrong result) took 0.172: the 24 edge tiles visited
// twice a head and the masks on them are most of what is left over the
// full forward alone.
// Measured (2026-11-28, H100, B 1, T 4096, H 16, G 2, D 128, causal;
// bench/bin/attention, SDPA 0.169-0.180 ms in the same calls): the first
// Hopper forward (a warpgroup a block, K single-buffered, V through a
// transposed copy, the softmax between the products) 0.285-0.291 ms; this
// one with a block barrier a tile 0.238 ms with query tiles fastest in the
// grid (ncu: the SMs idle 22% of the time, at the end), 0.187-0.193 with
// heads fastest; with the mbarriers 0.170 ms (403 TFLOP/s).
// ncu on the 0.238 version: issue slots 27% busy; stalls: the block
// barrier first (one warpgroup waiting for the other's copies and
// products), then fixed-latency waits (the row max and sum chains, now
// four partial ones a row).
// Measured (2026-11-29, H200, the same shape, window 1024, bench/bin/attention
// alternated with the kernel before in one call): with the producer
// warpgroup (the consumers issued every copy by cp.async before, each
// waiting for the other warpgroup to release a buffer before refilling it,
// at 246-252 registers) forward2 0.171-0.173 -> 0.129-0.131 ms, the
// window's forward alone 0.091-0.093 -> 0.071-0.073.

/* the compiler must not move reads or writes of accumulators across the
 * wgmma wait that completes them: an empty asm on each, after the wait */
template <int N>
__device__ __forceinline__ void reg_fence(float (&r)[N])
{
#pragma unroll
	for (int i = 0; i < N; i++)
		asm volatile("" : "+f"(r[i])::"memory");
}

#define WF_BQ 128 /* queries a block, 64 a warpgroup */
#define WF_BK 128 /* keys a tile */

template <int D>
struct WfLayout {
	/* bf16 offsets from a 1024-aligned base: Q, two K tiles, two V tiles,
	 * the output's rows on their way out (16 a warp, rows of D + 8), then
	 * 9 mbarriers */
	static constexpr int q = 0, k = q + WF_BQ * D, v = k + 2 * WF_BK * D, st = v + 2 * WF_BK * D,
	                     end = st + WF_BQ * (D + 8);
	static constexpr size_t bytes = (size_t)end * sizeof(bf16) + 9 * 8 + 1024;
};

/* The key tiles of a block's 128 queries (q0..qlast), in the order they
 * are visited, newest (the diagonal) first: na tiles kt1 down to kw0 under
 * the window's mask (window <= 0: none, all the causal keys); with TWO (the
 * full attention as well) then nb tiles ke1 down to kw0 again under the
 * complement (the causal keys out of some row's window: key <= query -
 * window), then the tiles kw0 - 1 down to 0 whole. The running (m, l, O)
 * after the first na visits is the window's attention, after all n the
 * full one. */
template <bool TWO>
struct WfVisits {
	int kt1, kw0, ke1, na, nb, n;
	__device__ __forceinline__ WfVisits(int q0, int qlast, int window)
	{
		kt1 = qlast / WF_BK;
		kw0 = (window > 0 ? max(0, q0 - window + 1) : 0) / WF_BK;
		na = kt1 - kw0 + 1;
		/* the newest key out of some row's window (< 0: none; then kw0 is 0) */
		int cut = window > 0 ? qlast - window : -1;
		ke1 = cut >= 0 ? cut / WF_BK : -1;
		nb = TWO && ke1 >= kw0 ? ke1 - kw0 + 1 : 0;
		n = TWO ? na + nb + kw0 : na;
	}
	__device__ __forceinline__ int tile(int i) const
	{
		return i < na ? kt1 - i : i < na + nb ? ke1 - (i - na) : kw0 - 1 - (i - na - nb);
	}
};

template <int D, bool TWO>
__global__ void __launch_bounds__(384, 1)
attention_forward_wgmma_kernel(bf16 *out, float *lse, bf16 *out2, float *lse2, const __grid_constant__ CUtensorMap mq,
                                const __grid_constant__ CUtensorMap mk, const __grid_constant__ CUtensorMap mv, int T,
                                int H, int G, int window, float scale)
{
#ifdef DASH_HAVE_WGMMA
	typedef WfLayout<D> L;
	constexpr int BQ = WF_BQ, BK = WF_BK;
	constexpr uint32_t TILE = BK * D * sizeof(bf16);   /* bytes between the two K (or V) buffers */
	constexpr uint32_t LBO_V = BK * 64 * sizeof(bf16); /* between the 64-column blocks of a V tile */
	extern __shared__ __align__(128) unsigned char smem_raw[];
	bf16 *sm = (bf16 *)(smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023));
	int q0 = (gridDim.y - 1 - blockIdx.y) * BQ, h = blockIdx.x, b = blockIdx.z, g = h / (H / G);
	int tid = threadIdx.x, wg = __shfl_sync(0xffffffffu, tid / 128, 0),
	    warp = __shfl_sync(0xffffffffu, (tid / WARP_SIZE) % 4, 0), lane = tid % WARP_SIZE;
	const size_t qs = (size_t)H * D;
	const float sl2 = scale * LOG2E;

	int qlast = min(q0 + BQ, T) - 1, wq0 = q0 + wg * 64 + warp * 16;
	const WfVisits<TWO> vis(q0, qlast, window);
	const int n = vis.n;
	/* this warpgroup's 64 rows of Q (in each 64-column block), K and V buffer 0 */
	const uint32_t a_q = smem_addr(sm + L::q + wg * 64 * 64), a_k = smem_addr(sm + L::k),
	               a_v = smem_addr(sm + L::v);

	/* full_k + 8 b: K buffer b's tile is in (the producer's arrival with
	 * its bytes); empty_k + 8 b: the 8 consumer warps' products that read
	 * it are done (an arrival a warp); full_v, empty_v the same for V,
	 * full_q Q's. The tile of visit i goes to buffer i % 2, and its phases
	 * of these barriers have the parity (i / 2) % 2. */
	const uint32_t full_k = smem_addr(sm + L::end), full_v = full_k + 16, empty_k = full_k + 32,
	               empty_v = full_k + 48, full_q = full_k + 64;
	if (tid == 0) {
		for (int i = 0; i < 2; i++) {
			mbar_init(full_k + 8 * i, 1), mbar_init(full_v + 8 * i, 1);
			mbar_init(empty_k + 8 * i, 8), mbar_init(empty_v + 8 * i, 8);
		}
		mbar_init(full_q, 1);
		mbar_init_fence();
	}
	__syncthreads();
	if (wg == 2) {
		/* the producer: one thread copies every tile by the copy engine
		 * (64-column boxes of 128 rows, swizzled as wgmma reads them;
		 * rows past T come in as zeros), a tile ahead of the products */
		setmaxnreg_dec<24>();
		if (tid != 256)
			return;
		mbar_arrive_tx(full_q, BQ * D * sizeof(bf16));
#pragma unroll
		for (int c = 0; c < D / 64; c++)
			tma_load4(smem_addr(sm + L::q + c * BQ * 64), &mq, c * 64, h, q0, b, full_q);
		/* visit i's tile of K or V (base: buffer 0; empty, full: buffer
		 * 0's barriers) into buffer i % 2, once both warpgroups have
		 * released the tile of visit i - 2 there */
		auto fill = [&](int i, uint32_t base, uint32_t empty, uint32_t full, const CUtensorMap *m) {
			int bf = i & 1;
			if (i >= 2)
				mbar_wait(empty + 8 * bf, (i - 2) >> 1);
			mbar_arrive_tx(full + 8 * bf, TILE);
#pragma unroll
			for (int c = 0; c < D / 64; c++)
				tma_load4(base + bf * TILE + c * BK * 128, m, c * 64, g, vis.tile(i) * BK, b, full + 8 * bf);
		};
		for (int i = 0; i < n; i++)
			fill(i, a_k, empty_k, full_k, &mk), fill(i, a_v, empty_v, full_v, &mv);
		return;
	}
	setmaxnreg_inc<240>();
	int row[2] = {wq0 + lane / 4, wq0 + lane / 4 + 8};

	float o[D / 2], s[BK / 2];
#pragma unroll
	for (int i = 0; i < D / 2; i++)
		o[i] = 0.f;
	float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
	uint32_t pa[BK / 16][4];

	auto issue_s = [&](int i) { /* S of visit i */
		WgDesc dq(a_q, 16), dk(a_k + (i & 1) * TILE, 16);
#pragma unroll
		for (int d = 0; d < D / 16; d++) /* bytes: 64-column blocks, then 32 B a step */
			wgmma_m64n128k16_ss(s, dq((d / 4) * BQ * 128 + (d % 4) * 32), dk((d / 4) * BK * 128 + (d % 4) * 32),
			                    d > 0);
		wgmma_commit();
	};
	auto issue_pv = [&](int i) { /* O += P V of visit i */
		WgDesc dv(a_v + (i & 1) * TILE, LBO_V);
#pragma unroll
		for (int c = 0; c < BK / 16; c++) /* 16 rows of 128 B a step */
			if constexpr (D == 128)
				wgmma_m64n128k16_rs_tb(o, pa[c], dv(c * 2048));
			else
				wgmma_m64n64k16_rs_tb(o, pa[c], dv(c * 2048));
		wgmma_commit();
	};
	/* S of visit i to exponentials in place; m and l updated; alpha: O's
	 * factors */
	auto softmax = [&](int i, float (&alpha)[2]) {
		/* the keys each row sees, lo <= key - kc <= hi, counted from
		 * this thread's first column kc: its columns are then 8 j + 0 or
		 * 1, constants. Under the window's mask (visible), or its
		 * complement (key <= row - window; the window is >= 1: those
		 * keys are causal and below T), or none. */
		int k0 = vis.tile(i) * BK, kc = k0 + 2 * (lane % 4), lo[2], hi[2];
		bool mask;
		if (i < vis.na) {
			mask = k0 + BK - 1 > wq0 || k0 + BK > T || (window > 0 && wq0 + 15 - k0 >= window);
#pragma unroll
			for (int r = 0; r < 2; r++)
				lo[r] = (window > 0 ? row[r] - window + 1 : 0) - kc, hi[r] = min(row[r], T - 1) - kc;
		} else {
			mask = TWO && i < vis.na + vis.nb && k0 + BK - 1 > wq0 - window;
#pragma unroll
			for (int r = 0; r < 2; r++)
				lo[r] = -BK, hi[r] = row[r] - window - kc;
		}
		if (mask)
#pragma unroll
			for (int j = 0; j < BK / 8; j++)
#pragma unroll
				for (int e = 0; e < 4; e++)
					if (j * 8 + (e & 1) < lo[e >> 1] || j * 8 + (e & 1) > hi[e >> 1])
						s[4 * j + e] = -INFINITY;
		/* four partial maxima and sums a row: short dependency chains */
		float mp[2][4];
#pragma unroll
		for (int e = 0; e < 4; e++)
			mp[0][e] = fmaxf(s[4 * e], s[4 * e + 1]), mp[1][e] = fmaxf(s[4 * e + 2], s[4 * e + 3]);
#pragma unroll
		for (int j = 4; j < BK / 8; j++) {
			mp[0][j % 4] = fmaxf(mp[0][j % 4], fmaxf(s[4 * j], s[4 * j + 1]));
			mp[1][j % 4] = fmaxf(mp[1][j % 4], fmaxf(s[4 * j + 2], s[4 * j + 3]));
		}
		float mx[2], base[2];
#pragma unroll
		for (int i = 0; i < 2; i++) {
			mx[i] = fmaxf(fmaxf(m[i], fmaxf(mp[i][0], mp[i][1])), fmaxf(mp[i][2], mp[i][3]));
			mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
			mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
			base[i] = mx[i] == -INFINITY ? 0.f : mx[i] * sl2;
			alpha[i] = exp2_approx(m[i] * sl2 - base[i]);
			m[i] = mx[i];
		}
		float sum[2][4] = {};
#pragma unroll
		for (int i = 0; i < BK / 2; i++) {
			s[i] = exp2_approx(s[i] * sl2 - base[(i >> 1) & 1]);
			sum[(i >> 1) & 1][(i >> 2) % 4] += s[i];
		}
#pragma unroll
		for (int i = 0; i < 2; i++)
			l[i] = l[i] * alpha[i] + ((sum[i][0] + sum[i][1]) + (sum[i][2] + sum[i][3]));
	};
	auto pack_p = [&] {
#pragma unroll
		for (int c = 0; c < BK / 16; c++) {
			pa[c][0] = pack_bf16(s[8 * c], s[8 * c + 1]), pa[c][1] = pack_bf16(s[8 * c + 2], s[8 * c + 3]);
			pa[c][2] = pack_bf16(s[8 * c + 4], s[8 * c + 5]), pa[c][3] = pack_bf16(s[8 * c + 6], s[8 * c + 7]);
		}
	};

	/* normalized O to bf16 rows of o_, the rows' lse to l_, from the
	 * state (mm, ll). The rows go through the warp's 16 rows of shared
	 * memory (D + 8 a row: the 8 rows of each 4-byte store land in
	 * different banks) and out as 16-byte pieces, whole rows a store
	 * (straight from the accumulators' layout, 8 lines a store, the
	 * forward took 0.164-0.170 ms instead of 0.156-0.157: H200, T 4096) */
	bf16 *st = sm + L::st + (wg * 64 + warp * 16) * (D + 8);
	auto store = [&](bf16 *o_, float *l_, const float (&mm)[2], const float (&ll)[2]) {
#pragma unroll
		for (int i = 0; i < 2; i++) {
			float li = ll[i] + __shfl_xor_sync(0xffffffffu, ll[i], 1);
			li += __shfl_xor_sync(0xffffffffu, li, 2);
			float inv = 1.f / li;
			bf16 *sr = st + (lane / 4 + 8 * i) * (D + 8) + 2 * (lane % 4);
#pragma unroll
			for (int c = 0; c < D / 8; c++)
				*reinterpret_cast<__nv_bfloat162 *>(sr + c * 8) =
					__floats2bfloat162_rn(o[4 * c + 2 * i] * inv, o[4 * c + 2 * i + 1] * inv);
			if (lane % 4 == 0 && row[i] < T)
				l_[((size_t)b * H + h) * T + row[i]] = (mm[i] * sl2 + log2f(li)) * LN2;
		}
		__syncwarp();
		constexpr int PR = D / 8; /* 16-byte pieces a row */
#pragma unroll
		for (int it = 0; it < 16 * PR / WARP_SIZE; it++) {
			int r = it * (WARP_SIZE / PR) + lane / PR, c = lane % PR;
			if (wq0 + r < T)
				*reinterpret_cast<uint4 *>(o_ + ((size_t)b * T + wq0 + r) * qs + (size_t)h * D + c * 8) =
					*reinterpret_cast<const uint4 *>(st + r * (D + 8) + c * 8);
		}
		__syncwarp(); /* read before the next store writes */
	};

	/* The warpgroups take turns to issue their products (FA3's pingpong),
	 * so that one's softmax runs under the other's products rather than
	 * both at once: named barrier 1 + w is warpgroup w's turn, passed on
	 * by the other's arrival. Warpgroup 1 opens with warpgroup 0's turn
	 * and does not pass on its last (each of the n + 1 issues waits for
	 * exactly one arrival). */
	auto turn_wait = [&] { asm volatile("bar.sync %0, 256;\n" ::"r"(1 + wg) : "memory"); };
	/* a warp's products that read a buffer are done (its wait returned) */
	auto release = [&](uint32_t bar) {
		if (lane == 0)
			mbar_arrive(bar);
	};
	auto turn_pass = [&] { asm volatile("bar.arrive %0, 256;\n" ::"r"(2 - wg) : "memory"); };
	if (wg == 1)
		turn_pass();

	float alpha[2];
	mbar_wait(full_q, 0);
	mbar_wait(full_k, 0);
	wgmma_fence();
	turn_wait();
	issue_s(0);
	turn_pass();
	wgmma_wait<0>();
	reg_fence(s);
	release(empty_k);
	softmax(0, alpha);
	pack_p();
	/* visit i (>= 1) and P V of visit i - 1; snap: store the window's
	 * result on the way (the visit after its last) */
	auto step = [&](int i, bool snap) {
		int bf = i & 1; /* the buffers of this visit's K and V */
		mbar_wait(full_k + 8 * bf, i >> 1);
		mbar_wait(full_v + 8 * (bf ^ 1), (i - 1) >> 1);
		wgmma_fence();
		turn_wait();
		issue_s(i);
		issue_pv(i - 1);
		turn_pass();
		wgmma_wait<1>(); /* S_i; P_{i-1} V_{i-1} runs under its softmax */
		reg_fence(s);
		release(empty_k + 8 * bf);
		/* the window's state: after P V of its last visit (na - 1), at
		 * the maximum and sum before this visit's softmax */
		float ms[2] = {m[0], m[1]}, ls[2] = {l[0], l[1]};
		softmax(i, alpha);
		wgmma_wait<0>();
		reg_fence(o);
		release(empty_v + 8 * (bf ^ 1));
		if (snap && out2)
			store(out2, lse2, ms, ls);
#pragma unroll
		for (int c = 0; c < D / 2; c++)
			o[c] *= alpha[(c >> 1) & 1];
		pack_p();
	};
	/* the window's store between two loops: inside one loop (a branch a
	 * visit) forward2 took 0.183-0.186 ms against 0.175, and 0.180
	 * against 0.167 at a window >= T (H200, T 4096) */
	for (int i = 1; i < (TWO ? vis.na : n); i++)
		step(i, false);
	if (TWO && vis.na < n) {
		step(vis.na, true);
		for (int i = vis.na + 1; i < n; i++)
			step(i, false);
	}
	mbar_wait(full_v + 8 * ((n - 1) & 1), (n - 1) >> 1);
	wgmma_fence();
	turn_wait();
	issue_pv(n - 1);
	if (wg == 0)
		turn_pass();
	wgmma_wait<0>();
	reg_fence(o);
	store(out, lse, m, l);
	if (TWO && n == vis.na && out2) /* no key out of the window: the same */
		store(out2, lse2, m, l);
#else
	__trap(); /* built without sm_90a: the launcher never picks this kernel */
#endif
}

/* the wgmma kernel where it was built (sm_90a) and the device is a Hopper;
 * DASH_ATTENTION_MMA=1 in the environment forces the mma.sync one (twin
 * tests and benchmarks of both) */
static bool use_wgmma(void)
{
#ifdef DASH_SM90A
	return cuda_cc_major() == 9 && !env_flag("DASH_ATTENTION_MMA");
#else
	return false;
#endif
}

/* cuTensorMapEncodeTiled from the driver, through the runtime (no -lcuda) */
static PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder(void)
{
	static PFN_cuTensorMapEncodeTiled_v12000 fn;
	if (!fn) {
		void *p = NULL;
		cudaDriverEntryPointQueryResult r;
		cudaCheck(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &r));
		if (r != cudaDriverEntryPointSuccess || !p)
			fprintf(stderr, "attention: the driver has no cuTensorMapEncodeTiled\n"), exit(1);
		fn = (PFN_cuTensorMapEncodeTiled_v12000)p;
	}
	return fn;
}

/* the tensor map of rows (B*T, heads, D) bf16 for the Hopper kernels'
 * copies: boxes of 64 columns x rows rows of one head, 128-byte swizzled
 * (the layout wgmma reads), rows past T zeros */
static CUtensorMap att_map(const bf16_t *base, int D, int heads, int T, int B, int rows)
{
	CUtensorMap m;
	cuuint64_t dim[4] = {(cuuint64_t)D, (cuuint64_t)heads, (cuuint64_t)T, (cuuint64_t)B};
	cuuint64_t stride[3] = {(cuuint64_t)D * 2, (cuuint64_t)heads * D * 2, (cuuint64_t)T * heads * D * 2};
	cuuint32_t box[4] = {64, 1, (cuuint32_t)rows, 1}, es[4] = {1, 1, 1, 1};
	CUresult r = tensor_map_encoder()(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, (void *)base, dim, stride, box, es,
	                                  CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
	                                  CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
	if (r != CUDA_SUCCESS)
		fprintf(stderr, "attention: cuTensorMapEncodeTiled failed (%d)\n", (int)r), exit(1);
	return m;
}

/* the wgmma kernel: out, lse the full attention (TWO) or the window's; with
 * TWO, out2, lse2 the window's too */
template <int D, bool TWO>
static void forward_wgmma_launch(bf16_t *d_out, float *d_lse, bf16_t *d_out2, float *d_lse2, const bf16_t *d_q,
                                 const bf16_t *d_k, const bf16_t *d_v, int B, int T, int H, int G, int window)
{
	size_t smem = WfLayout<D>::bytes;
	static bool configured;
	smem_allow(attention_forward_wgmma_kernel<D, TWO>, smem, &configured);
	CUtensorMap mq = att_map(d_q, D, H, T, B, WF_BQ), mk = att_map(d_k, D, G, T, B, WF_BK),
	            mv = att_map(d_v, D, G, T, B, WF_BK);
	/* heads fastest: the blocks start in the order of their lengths, the
	 * longest (last queries) first, whatever H */
	dim3 grid(H, CEIL_DIV(T, WF_BQ), B);
	attention_forward_wgmma_kernel<D, TWO><<<grid, 384, smem>>>((bf16 *)d_out, d_lse, (bf16 *)d_out2, d_lse2, mq,
	                                                            mk, mv, T, H, G, window, 1.0f / sqrtf((float)D));
	cudaCheck(cudaGetLastError());
}

template <int D>
static void forward_launch(bf16_t *d_out, float *d_lse, const bf16_t *d_q, const bf16_t *d_k, const bf16_t *d_v,
                           int B, int T, int H, int G, int window)
{
	if (use_wgmma()) {
		forward_wgmma_launch<D, false>(d_out, d_lse, NULL, NULL, d_q, d_k, d_v, B, T, H, G, window);
		return;
	}
	size_t smem = (size_t)(FWD_BQ + 2 * FWD_BK) * (D + 8) * sizeof(bf16);
	static bool configured;
	smem_allow(attention_forward_kernel<D>, smem, &configured);
	dim3 grid(H, CEIL_DIV(T, FWD_BQ), B); /* heads fastest: the longest blocks first */
	attention_forward_kernel<D><<<grid, FWD_WARPS * WARP_SIZE, smem>>>((bf16 *)d_out, d_lse, (const bf16 *)d_q,
	                                                                   (const bf16 *)d_k, (const bf16 *)d_v, T, H, G,
	                                                                   window, 1.0f / sqrtf((float)D));
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

/* both at once on Hopper (one kernel); elsewhere the two forwards */
extern "C" void attention_forward2_cuda(bf16_t *d_out1, float *d_lse1, bf16_t *d_out2, float *d_lse2,
                                        const bf16_t *d_q, const bf16_t *d_k, const bf16_t *d_v, int B, int T, int H,
                                        int G, int D, int window2)
{
	if (H % G != 0)
		fprintf(stderr, "attention_forward2_cuda: H %d is not a multiple of G %d\n", H, G), exit(1);
	if (D != 64 && D != 128)
		fprintf(stderr, "attention_forward2_cuda: head dim %d (64 and 128 are built)\n", D), exit(1);
	if (!use_wgmma()) {
		attention_forward_cuda(d_out1, d_lse1, d_q, d_k, d_v, B, T, H, G, D, 0);
		if (d_out2)
			attention_forward_cuda(d_out2, d_lse2, d_q, d_k, d_v, B, T, H, G, D, window2);
		return;
	}
	if (D == 64)
		forward_wgmma_launch<64, true>(d_out1, d_lse1, d_out2, d_lse2, d_q, d_k, d_v, B, T, H, G, window2);
	else
		forward_wgmma_launch<128, true>(d_out1, d_lse1, d_out2, d_lse2, d_q, d_k, d_v, B, T, H, G, window2);
}

// ----------------------------------------------------------------------------
// backward, portable (mma.sync; on a Hopper only with DASH_ATTENTION_MMA=1):
// a block of 8 warps owns 128 keys of one query head (16 a warp)
// and walks the query tiles (64 queries) that see them, the next tile's Q
// and dO in flight while the current one is used. Per tile, a warp computes
// its transposed products S^T = K Q^T and dP^T = V dO^T (16 keys x 64
// queries, registers), P^T = exp(scale S^T - lse) and
// dS^T = P^T (dP^T - delta) scale, and accumulates dV += P^T dO and
// dK += dS^T Q in registers (P^T and dS^T are A fragments already). dS^T
// goes to shared memory once, and dQ += dS K (64 queries x D, split over the
// 8 warps) is added to a float32 buffer with vector atomics, as flash
// attention 2 does. dK and dV of the query heads of a group meet in float32
// buffers too; a last kernel turns the three into bf16.

#ifndef BWD_BK
#define BWD_BK 128
#endif
#ifndef BWD_BQ
#define BWD_BQ 64
#endif
#define BWD_WARPS (BWD_BK / 16)
static_assert(BWD_BK % BWD_BQ == 0, "the dQ product splits BWD_BQ query rows over BWD_BK / 16 warps");

template <int D>
struct BwdLayout {
	static constexpr int LD = D + 8, LDS = BWD_BQ + 8;
	static constexpr size_t k = 0, v = k + BWD_BK * LD, q = v + BWD_BK * LD; /* bf16 offsets */
	static constexpr size_t dout = q + 2 * BWD_BQ * LD, ds = dout + 2 * BWD_BQ * LD, end = ds + BWD_BK * LDS;
	static constexpr size_t bytes = end * sizeof(bf16) + 2 * 2 * BWD_BQ * sizeof(float); /* + lse, delta */
};

/* delta (B, H, T) = rowsum(dout * out) and delta2 of out2 (each when its out
 * is given: two attentions of one q, k, v and dout), one warp a row; the
 * same warp zeroes the row's float32 dQ accumulator and, for h < G, the kv
 * rows of dK and dV (one pass instead of a memset; none when dq_acc is
 * NULL: only the deltas) */
__global__ void attention_delta_kernel(float *delta, float *delta2, float *dq_acc, float *dk_acc, float *dv_acc,
                                       const bf16 *dout, const bf16 *out, const bf16 *out2, int B, int T, int H,
                                       int G, int D)
{
	int64_t row = (int64_t)blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE; /* (b*T + t)*H + h */
	int lane = threadIdx.x % WARP_SIZE;
	if (row >= (int64_t)B * T * H)
		return;
	int h = (int)(row % H);
	int64_t bt = row / H;
	const float4 zero = make_float4(0.f, 0.f, 0.f, 0.f);
	for (int i = 4 * lane; dq_acc && i < D; i += 4 * WARP_SIZE) {
		*reinterpret_cast<float4 *>(dq_acc + row * D + i) = zero;
		if (h < G) {
			*reinterpret_cast<float4 *>(dk_acc + (bt * G + h) * D + i) = zero;
			*reinterpret_cast<float4 *>(dv_acc + (bt * G + h) * D + i) = zero;
		}
	}
	float s = 0, s2 = 0;
	for (int i = 2 * lane; i < D; i += 2 * WARP_SIZE) {
		float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(dout + row * D + i));
		if (out) {
			float2 c = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(out + row * D + i));
			s += a.x * c.x + a.y * c.y;
		}
		if (out2) {
			float2 c = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(out2 + row * D + i));
			s2 += a.x * c.x + a.y * c.y;
		}
	}
	s = warp_sum(s), s2 = warp_sum(s2);
	if (lane == 0) {
		int64_t b = bt / T, t = bt % T;
		if (out)
			delta[(b * H + h) * T + t] = s;
		if (out2)
			delta2[(b * H + h) * T + t] = s2;
	}
}

#define DOT_THREADS 1024

/* *dot[b] += the sum of delta[b] (n), in double, in a fixed order: the
 * dot product <dout, out> of a whole attention, its weight's gradient in a
 * supernet. A block each, four sums a thread in flight (by float4 where
 * delta[b] is 16-byte aligned). */
struct DeltaSums {
	double *dot[2];
	const float *delta[2];
};
__global__ void delta_sum_kernel(DeltaSums a, int64_t n)
{
	const float *d = a.delta[blockIdx.x];
	double s[4] = {0, 0, 0, 0};
	int64_t n4 = (uintptr_t)d % 16 ? 0 : n / 4;
	for (int64_t i = threadIdx.x; i < n4; i += DOT_THREADS) {
		float4 v = reinterpret_cast<const float4 *>(d)[i];
		s[0] += v.x, s[1] += v.y, s[2] += v.z, s[3] += v.w;
	}
	for (int64_t i = 4 * n4 + threadIdx.x; i < n; i += DOT_THREADS)
		s[0] += d[i];
	double t = block_sum_double<DOT_THREADS>((s[0] + s[1]) + (s[2] + s[3]));
	if (threadIdx.x == 0)
		*a.dot[blockIdx.x] += t;
}

/* the deltas of the attentions whose out is given (and, dq_acc given, the
 * accumulators zeroed), then the sums of those whose dot is asked for */
static void deltas(float *const delta[2], double *const dot[2], float *dq_acc, float *dk_acc, float *dv_acc,
                   const bf16_t *d_dout, const bf16_t *const out[2], int B, int T, int H, int G, int D)
{
	int64_t rows = (int64_t)B * T * H;
	attention_delta_kernel<<<(unsigned)CEIL_DIV(rows, 8), 8 * WARP_SIZE>>>(
		delta[0], delta[1], dq_acc, dk_acc, dv_acc, (const bf16 *)d_dout, (const bf16 *)out[0],
		(const bf16 *)out[1], B, T, H, G, D);
	cudaCheck(cudaGetLastError());
	DeltaSums a;
	int n = 0;
	for (int i = 0; i < 2; i++)
		if (dot[i] && out[i])
			a.dot[n] = dot[i], a.delta[n++] = delta[i];
	if (n) {
		delta_sum_kernel<<<n, DOT_THREADS>>>(a, rows);
		cudaCheck(cudaGetLastError());
	}
}

/* dq (nq), dk, dv (nk each) in bf16 from the float32 accumulators acc (dq,
 * dk, dv one after another), dq times qscale; four values a thread (n's are
 * multiples of 4: D is) */
__global__ void attention_convert_kernel(bf16 *dq, bf16 *dk, bf16 *dv, const float *acc, int64_t nq, int64_t nk,
                                         float qscale)
{
	int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 4;
	if (i >= nq + 2 * nk)
		return;
	float4 x = *reinterpret_cast<const float4 *>(acc + i);
	bf16 *dst;
	float s = 1.f;
	if (i < nq)
		dst = dq + i, s = qscale;
	else if (i < nq + nk)
		dst = dk + (i - nq);
	else
		dst = dv + (i - nq - nk);
	__nv_bfloat162 lo = __floats2bfloat162_rn(x.x * s, x.y * s), hi = __floats2bfloat162_rn(x.z * s, x.w * s);
	if ((uintptr_t)dst % 8 == 0) {
		*reinterpret_cast<uint2 *>(dst) = make_uint2(*reinterpret_cast<uint32_t *>(&lo), *reinterpret_cast<uint32_t *>(&hi));
	} else {
		dst[0] = lo.x, dst[1] = lo.y, dst[2] = hi.x, dst[3] = hi.y;
	}
}

template <int D>
__global__ void __launch_bounds__(BWD_WARPS * WARP_SIZE)
attention_backward_kernel(float *dq_acc, float *dk_acc, float *dv_acc, const bf16 *dout, const bf16 *q,
                          const bf16 *k, const bf16 *v, const float *lse, const float *delta, int T, int H, int G,
                          int window, float scale, float w)
{
	typedef BwdLayout<D> L;
	constexpr int LD = L::LD, LDS = L::LDS, NT = BWD_WARPS * WARP_SIZE;
	extern __shared__ __align__(128) unsigned char smem_raw[];
	bf16 *sm = (bf16 *)smem_raw;
	bf16 *sk = sm + L::k, *sv = sm + L::v, *sds = sm + L::ds;
	float *slse = (float *)(sm + L::end), *sdelta = slse + 2 * BWD_BQ;
	int h = blockIdx.x, k0 = blockIdx.y * BWD_BK, b = blockIdx.z, g = h / (H / G);
	int warp = threadIdx.x / WARP_SIZE, lane = threadIdx.x % WARP_SIZE, tid = threadIdx.x;
	const size_t qs = (size_t)H * D, ks = (size_t)G * D;
	const bf16 *qb = q + (size_t)b * T * qs + (size_t)h * D, *db = dout + (size_t)b * T * qs + (size_t)h * D;
	const float *lb = lse + ((size_t)b * H + h) * T, *deb = delta + ((size_t)b * H + h) * T;
	const float sl2 = scale * LOG2E, ws = scale * w; /* dS: the softmax scale and the weight */

	/* the queries that see these keys: from the diagonal to the window's end */
	int klast = min(k0 + BWD_BK, T) - 1;
	int qt0 = k0 / BWD_BQ, qt1 = (window > 0 ? min(T - 1, klast + window - 1) : T - 1) / BWD_BQ;
	load_tile_async<D, BWD_BK, NT>(sk, k + (size_t)b * T * ks + (size_t)g * D, ks, k0, T);
	load_tile_async<D, BWD_BK, NT>(sv, v + (size_t)b * T * ks + (size_t)g * D, ks, k0, T);
	auto load_q = [&](int qt, int buf) {
		int q0 = qt * BWD_BQ;
		load_tile_async<D, BWD_BQ, NT>(sm + L::q + buf * BWD_BQ * LD, qb, qs, q0, T);
		load_tile_async<D, BWD_BQ, NT>(sm + L::dout + buf * BWD_BQ * LD, db, qs, q0, T);
		for (int r = tid; r < BWD_BQ; r += NT) {
			bool in = q0 + r < T;
			slse[buf * BWD_BQ + r] = in ? lb[q0 + r] * LOG2E : 0.f;
			sdelta[buf * BWD_BQ + r] = in ? deb[q0 + r] : 0.f;
		}
	};
	load_q(qt0, 0);
	cp_async_commit();

	float dk[D / 8][4], dv[D / 8][4];
	#pragma unroll
	for (int n = 0; n < D / 8; n++)
		#pragma unroll
		for (int e = 0; e < 4; e++)
			dk[n][e] = dv[n][e] = 0.f;
	int wk0 = k0 + warp * 16;                            /* this warp's keys */
	int key[2] = {wk0 + lane / 4, wk0 + lane / 4 + 8};   /* this lane's */

	for (int qt = qt0; qt <= qt1; qt++) {
		int buf = (qt - qt0) & 1, q0 = qt * BWD_BQ;
		const bf16 *sq = sm + L::q + buf * BWD_BQ * LD, *sdo = sm + L::dout + buf * BWD_BQ * LD;
		const float *tl = slse + buf * BWD_BQ, *td = sdelta + buf * BWD_BQ;
		if (qt < qt1)
			load_q(qt + 1, buf ^ 1);
		cp_async_commit();
		cp_async_wait<1>();
		__syncthreads();

		/* S^T = K Q^T and dP^T = V dO^T: 16 keys x 64 queries */
		float st[BWD_BQ / 8][4], dpt[BWD_BQ / 8][4];
		#pragma unroll
		for (int j = 0; j < BWD_BQ / 8; j++)
			#pragma unroll
			for (int e = 0; e < 4; e++)
				st[j][e] = dpt[j][e] = 0.f;
		#pragma unroll
		for (int d = 0; d < D / 16; d++) {
			uint32_t kf[4], vf[4];
			ldmatrix_x4(kf, a_frag(sk, LD, warp * 16, d * 16, lane));
			ldmatrix_x4(vf, a_frag(sv, LD, warp * 16, d * 16, lane));
			#pragma unroll
			for (int n = 0; n < BWD_BQ / 16; n++) {
				uint32_t f[4];
				ldmatrix_x4(f, b_pair(sq, LD, n * 16, d * 16, lane));
				mma16816(st[2 * n], kf, f[0], f[1]);
				mma16816(st[2 * n + 1], kf, f[2], f[3]);
				ldmatrix_x4(f, b_pair(sdo, LD, n * 16, d * 16, lane));
				mma16816(dpt[2 * n], vf, f[0], f[1]);
				mma16816(dpt[2 * n + 1], vf, f[2], f[3]);
			}
		}

		/* P^T and dS^T in place of S^T and dP^T */
		bool edge = wk0 + 15 > q0 || q0 + BWD_BQ > T || wk0 + 16 > T ||
		            (window > 0 && q0 + BWD_BQ - 1 - wk0 >= window);
		#pragma unroll
		for (int j = 0; j < BWD_BQ / 8; j++)
			#pragma unroll
			for (int e = 0; e < 4; e++) {
				int c = j * 8 + 2 * (lane % 4) + (e & 1);
				float p = exp2_approx(st[j][e] * sl2 - tl[c]);
				if (edge && !visible(q0 + c, key[e >> 1], T, window))
					p = 0.f;
				st[j][e] = p;
				dpt[j][e] = p * (dpt[j][e] - td[c]) * ws;
			}

		/* dV += P^T dO and dK += dS^T Q; dS^T to shared memory for dQ */
		#pragma unroll
		for (int c = 0; c < BWD_BQ / 16; c++) {
			uint32_t pa[4] = {pack_bf16(st[2 * c][0], st[2 * c][1]), pack_bf16(st[2 * c][2], st[2 * c][3]),
			                  pack_bf16(st[2 * c + 1][0], st[2 * c + 1][1]),
			                  pack_bf16(st[2 * c + 1][2], st[2 * c + 1][3])};
			uint32_t da[4] = {pack_bf16(dpt[2 * c][0], dpt[2 * c][1]), pack_bf16(dpt[2 * c][2], dpt[2 * c][3]),
			                  pack_bf16(dpt[2 * c + 1][0], dpt[2 * c + 1][1]),
			                  pack_bf16(dpt[2 * c + 1][2], dpt[2 * c + 1][3])};
			#pragma unroll
			for (int n = 0; n < D / 16; n++) {
				uint32_t f[4];
				ldmatrix_x4_trans(f, bt_pair(sdo, LD, c * 16, n * 16, lane));
				mma16816(dv[2 * n], pa, f[0], f[1]);
				mma16816(dv[2 * n + 1], pa, f[2], f[3]);
				ldmatrix_x4_trans(f, bt_pair(sq, LD, c * 16, n * 16, lane));
				mma16816(dk[2 * n], da, f[0], f[1]);
				mma16816(dk[2 * n + 1], da, f[2], f[3]);
			}
			/* da[0] is (key g, queries c*16 + 2t..), da[1] key g+8, da[2], da[3] queries + 8 */
			int r = warp * 16 + lane / 4, col = c * 16 + 2 * (lane % 4);
			*reinterpret_cast<uint32_t *>(sds + r * LDS + col) = da[0];
			*reinterpret_cast<uint32_t *>(sds + (r + 8) * LDS + col) = da[1];
			*reinterpret_cast<uint32_t *>(sds + r * LDS + col + 8) = da[2];
			*reinterpret_cast<uint32_t *>(sds + (r + 8) * LDS + col + 8) = da[3];
		}
		__syncthreads(); /* all of dS^T is in */

		/* dQ (BQ queries x D) += dS K: a warp takes 16 queries and a part of
		 * D; A = dS read transposed out of dS^T, B = K by .trans */
		{
			constexpr int QS = BWD_BQ / 16, DH = D / (BWD_WARPS / QS);
			int wq = (warp % QS) * 16, d0 = (warp / QS) * DH;
			float acc[DH / 8][4];
#pragma unroll
			for (int n = 0; n < DH / 8; n++)
				acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
#pragma unroll
			for (int c = 0; c < BWD_BK / 16; c++) {
				uint32_t a[4];
				/* matrices: (keys c*16.., queries wq..), (keys.., wq+8..), (keys +8, wq..), (+8, +8) */
				ldmatrix_x4_trans(a, sds + (c * 16 + (lane & 7) + (lane >> 4) * 8) * LDS + wq + ((lane >> 3) & 1) * 8);
#pragma unroll
				for (int n = 0; n < DH / 16; n++) {
					uint32_t f[4];
					ldmatrix_x4_trans(f, bt_pair(sk, LD, c * 16, d0 + n * 16, lane));
					mma16816(acc[2 * n], a, f[0], f[1]);
					mma16816(acc[2 * n + 1], a, f[2], f[3]);
				}
			}
#pragma unroll
			for (int i = 0; i < 2; i++) {
				int qi = q0 + wq + lane / 4 + 8 * i;
				if (qi >= T)
					continue;
				float *dst = dq_acc + ((size_t)b * T + qi) * qs + (size_t)h * D + d0 + 2 * (lane % 4);
#pragma unroll
				for (int n = 0; n < DH / 8; n++)
					atomicAdd(reinterpret_cast<float2 *>(dst + n * 8), make_float2(acc[n][2 * i], acc[n][2 * i + 1]));
			}
		}
		__syncthreads(); /* before the next tile's loads and dS^T */
	}
	cp_async_wait<0>();

	/* this head's share of dK and dV of the group's kv head */
	#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (key[i] >= T)
			continue;
		size_t o = ((size_t)b * T + key[i]) * ks + (size_t)g * D + 2 * (lane % 4);
		#pragma unroll
		for (int n = 0; n < D / 8; n++) {
			atomicAdd(reinterpret_cast<float2 *>(dk_acc + o + n * 8), make_float2(dk[n][2 * i], dk[n][2 * i + 1]));
			atomicAdd(reinterpret_cast<float2 *>(dv_acc + o + n * 8),
			          make_float2(w * dv[n][2 * i], w * dv[n][2 * i + 1]));
		}
	}
}

// ----------------------------------------------------------------------------
// backward on Hopper (sm_90a): a block of two warpgroups owns 128 keys of one
// query head, 64 a warpgroup (16 a warp), and walks the query tiles of 64
// that see them; the next tile's Q and dO (by the copy engine: tensor maps,
// thread 0 issuing) and lse and delta (cp.async) are in flight while the
// current one is used. Every product is a wgmma on tiles in the
// forward's 128-byte-swizzled layout, each tile read both ways: as K-major
// operands (rows along M or N) and as MN-major ones (rows along K, the
// transpose bits of wgmma set), so nothing is transposed. Per tile a
// warpgroup computes
//   S^T = K Q^T and dP^T = V dO^T   (64 keys x 64 queries, SS, registers),
//   P^T = exp2(S^T scale log2 e - lse log2 e), dS^T = P^T (dP^T - delta),
//   dV += P^T dO, dK += dS^T Q      (RS: P^T and dS^T are A fragments as
//                                    they lie; dO and Q MN-major),
// the softmax part of one product under the next one in flight (S's
// exponentials under dP, dS under dV, the dS^T stores under dK). dS^T goes
// to shared memory once, and dQ = dS K (64 queries x D, A = dS^T and B = K
// both MN-major) is split over the warpgroups by columns of D (D 128) or by
// keys (D 64), stored to shared memory, and added to the float32 buffer by
// the bulk-copy unit, a row of D floats a thread (cp.reduce.async.bulk
// .add.f32), issued after the next tile's first barrier. The softmax scale
// is left out of dS and applied to dK here and to dQ in the conversion
// kernel.
// Measured (2026-11-27, H100, B 1, T 4096, H 16, G 2, D 128, causal):
// forward + backward 0.763-0.770 ms (backward ~0.48, with ~0.045 of it in
// the delta and conversion kernels, both at memory bandwidth) against
// SDPA's 0.684-0.801 in the same calls; the mma.sync backward 0.90. Seen on
// the way (ncu): the first version spilled (255 registers, 1268
// instructions a tile and warp, 0.69 ms): hoisted copy addresses and
// descriptors, generic loads of lse and delta, per-element masks; the
// fence before the next tile's products waited for the dQ atomics just
// issued (now the atomics follow it). Tried and not kept: dK's products
// after the barrier with dQ's (1% slower), float4 atomics by a quad
// shuffle (no faster), dQ's wait deferred under the next tile's products
// (ptxas serializes the wgmmas and spills).
// 2026-11-28 (H100, same shape; bench/bin/attention): dQ by bulk
// reduce-adds from shared memory instead of float2 atomics from registers
// (ncu had shown the next tile's first product waiting for the atomics to
// read their registers): forward + backward 0.630 ms against 0.663, SDPA
// 0.697 in the same call; the teacher's step 107.6-109.9 ms against
// 109.7-112.3.
// 2026-11-29 (H200, window 1024; bench/bin/attention alternated with the
// kernel before in one call, three pairs): Q, dO, K and V by tensor maps
// instead of every thread's cp.async: backward2 0.495-0.500 -> 0.475-0.481
// ms.

#define WB_BK 128
#define WB_BQ 64

template <int D>
struct WbLayout {
	/* bf16 offsets from a 1024-aligned base; every tile 1024-aligned */
	static constexpr int k = 0, v = k + WB_BK * D, q = v + WB_BK * D, dout = q + 2 * WB_BQ * D,
	                     ds = dout + 2 * WB_BQ * D, end = ds + WB_BK * WB_BQ;
	/* then floats: lse and delta of two query tiles (and the second
	 * attention's: attention_backward2), and the dQ tiles (D 128: one, each
	 * warpgroup its 64 columns; D 64: one a warpgroup), rows of D floats
	 * padded by 8 (2-way bank conflicts for the stores) */
	static constexpr int dq_tiles = D == 128 ? 1 : 2, dq_ld = D + 8;
	/* then 3 mbarriers: K and V in, Q and dO of buffer 0, 1 in */
	static constexpr size_t bars =
		(size_t)end * sizeof(bf16) + (4 * 2 * WB_BQ + dq_tiles * WB_BQ * dq_ld) * sizeof(float);
	static constexpr size_t bytes = bars + 3 * 8 + 1024;
};

/* size bytes of float32 from shared memory added to global memory by the
 * bulk-copy unit (both 16-byte aligned, size a multiple of 16), in this
 * thread's bulk group; the group committed; waits for this thread's
 * groups to have read their sources, or to be complete */
__device__ __forceinline__ void bulk_reduce_add_f32(float *dst, uint32_t src, uint32_t size)
{
	asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(dst),
	             "r"(src), "r"(size)
	             : "memory");
}
__device__ __forceinline__ void bulk_commit(void) { asm volatile("cp.async.bulk.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void bulk_wait_read(void)
{
	asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
}
__device__ __forceinline__ void bulk_wait(void) { asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory"); }

/* four 8x8 matrices of 16-bit values to shared memory, the inverse of
 * ldmatrix_x4: lane l gives the address of row l % 8 of matrix l / 8 */
__device__ __forceinline__ void stmatrix_x4(uint32_t addr, const uint32_t (&r)[4])
{
	asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1,%2,%3,%4};\n" ::"r"(addr), "r"(r[0]), "r"(r[1]),
	             "r"(r[2]), "r"(r[3])
	             : "memory");
}

/* 4 bytes global -> shared, asynchronously; zeros when !pred */
__device__ __forceinline__ void cp_async4(void *dst, const void *src, bool pred)
{
	asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
	             "r"(pred ? 4 : 0));
}


/* TWO: also the second attention of attention_backward2 (lse2, delta2,
 * window2 > 0, weight w2; the first then without a window), in the same
 * pass: both softmaxes from one S^T and one dP^T, P^T = w P1^T + w2 P2^T
 * into dV, dS^T = w dS1^T + w2 dS2^T into dK and dQ, so that the query
 * tiles within the window cost one set of products, not two. The weights
 * then enter P and dS, not the sums at the end. */
template <int D, bool TWO>
__global__ void __launch_bounds__(256, 1)
attention_backward_wgmma_kernel(float *dq_acc, float *dk_acc, float *dv_acc, const __grid_constant__ CUtensorMap mdo,
                                const __grid_constant__ CUtensorMap mq, const __grid_constant__ CUtensorMap mk,
                                const __grid_constant__ CUtensorMap mv, const float *lse, const float *delta, int T,
                                int H, int G, int window, float scale, float w, const float *lse2, const float *delta2,
                                int window2, float w2)
{
#ifdef DASH_HAVE_WGMMA
	typedef WbLayout<D> L;
	constexpr int BQ = WB_BQ, BK = WB_BK;
	constexpr uint32_t LBO_Q = BQ * 64 * sizeof(bf16); /* between the 64-column blocks of a Q or dO tile */
	extern __shared__ __align__(128) unsigned char smem_raw[];
	/* 1024-aligned, by an offset (the compiler then still knows these
	 * pointers for shared ones: ld.shared, not generic loads) */
	bf16 *sm = (bf16 *)(smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023));
	bf16 *sk = sm + L::k, *sv = sm + L::v, *sds = sm + L::ds;
	float *slse = (float *)(sm + L::end), *sdelta = slse + 2 * BQ, *slse2 = sdelta + 2 * BQ,
	      *sdelta2 = slse2 + 2 * BQ, *sdq = sdelta2 + 2 * BQ;
	int h = blockIdx.x, k0 = blockIdx.y * BK, b = blockIdx.z, g = h / (H / G);
	/* the warpgroup and warp from lane 0: the compiler then knows them
	 * uniform, and the descriptors live in uniform registers */
	int tid = threadIdx.x, wg = __shfl_sync(0xffffffffu, tid / 128, 0),
	    warp = __shfl_sync(0xffffffffu, (tid / WARP_SIZE) % 4, 0), lane = tid % WARP_SIZE;
	const size_t qs = (size_t)H * D, ks = (size_t)G * D;
	const float *lb = lse + ((size_t)b * H + h) * T, *deb = delta + ((size_t)b * H + h) * T;
	const float *lb2 = TWO ? lse2 + ((size_t)b * H + h) * T : NULL, *deb2 = TWO ? delta2 + ((size_t)b * H + h) * T : NULL;
	/* dK: the softmax scale and (not TWO) the weight; dV and dQ the weight */
	const float sl2 = scale * LOG2E, ws = TWO ? scale : scale * w, wo = TWO ? 1.f : w;

	/* the queries that see these keys: from the diagonal to the window's end */
	int klast = min(k0 + BK, T) - 1;
	int qt0 = k0 / BQ, qt1 = (window > 0 ? min(T - 1, klast + window - 1) : T - 1) / BQ;
	/* Q and dO tiles, K and V by the copy engine (tensor maps: 128-byte
	 * swizzled boxes of 64 columns, rows past T zeros), issued by thread 0;
	 * bar_q + 8 buf: buffer buf's Q and dO are in, its phases those of the
	 * tiles qt0 + buf, + 2, ... */
	const uint32_t bar_kv = smem_addr(sm) + (uint32_t)L::bars, bar_q = bar_kv + 8;
	if (tid == 0) {
		for (int i = 0; i < 3; i++)
			mbar_init(bar_kv + 8 * i, 1);
		mbar_init_fence();
		mbar_arrive_tx(bar_kv, 2 * BK * D * sizeof(bf16));
#pragma unroll
		for (int c = 0; c < D / 64; c++) {
			tma_load4(smem_addr(sk + c * BK * 64), &mk, c * 64, g, k0, b, bar_kv);
			tma_load4(smem_addr(sv + c * BK * 64), &mv, c * 64, g, k0, b, bar_kv);
		}
	}
	/* lse and delta (lse2, delta2) of a tile by cp.async, a float a thread */
	auto load_q = [&](int qt, int buf) {
		int q0 = qt * BQ;
		if (tid == 0) {
			uint32_t bar = bar_q + 8 * buf;
			mbar_arrive_tx(bar, 2 * BQ * D * sizeof(bf16));
#pragma unroll
			for (int c = 0; c < D / 64; c++) {
				tma_load4(smem_addr(sm + L::q + buf * BQ * D + c * BQ * 64), &mq, c * 64, h, q0, b, bar);
				tma_load4(smem_addr(sm + L::dout + buf * BQ * D + c * BQ * 64), &mdo, c * 64, h, q0, b, bar);
			}
		}
		if (tid < (TWO ? 4 : 2) * BQ) {
			int r = tid % BQ, x = tid / BQ;
			bool in = q0 + r < T;
			float *d = x == 0 ? slse : x == 1 ? sdelta : x == 2 ? slse2 : sdelta2;
			const float *src = x == 0 ? lb : x == 1 ? deb : x == 2 ? lb2 : deb2;
			cp_async4(d + buf * BQ + r, src + (in ? q0 + r : 0), in);
		}
	};
	__syncthreads(); /* the barriers' inits */
	load_q(qt0, 0);
	cp_async_commit();

	float dk[D / 2], dv[D / 2];
#pragma unroll
	for (int i = 0; i < D / 2; i++)
		dk[i] = dv[i] = 0.f;
	int wk0 = k0 + wg * 64 + warp * 16;                /* this warp's keys */
	int key[2] = {wk0 + lane / 4, wk0 + lane / 4 + 8}; /* this lane's */
	const unsigned wlim = window > 0 ? (unsigned)window : 0x7fffffffu;
	/* shared addresses: this warpgroup's 64 rows of K and V (in each
	 * 64-column block), the tiles of Q and dO of buffer 0, dS^T, K */
	const uint32_t a_kw = smem_addr(sk + wg * 64 * 64), a_vw = smem_addr(sv + wg * 64 * 64);
	const uint32_t a_q = smem_addr(sm + L::q), a_do = smem_addr(sm + L::dout), a_ds = smem_addr(sds),
	               a_k = smem_addr(sk);
	constexpr uint32_t QBUF = BQ * D * sizeof(bf16); /* bytes between the two buffers */

	/* dQ of a tile goes through shared memory (sdq), and the threads
	 * tid < L::dq_tiles * BQ add a row each to dq_acc by the bulk-copy
	 * unit, after the next barrier; before the one after that they wait
	 * until it has been read */
	auto dq_out = [&](int q0) {
		if (tid < L::dq_tiles * BQ) {
			int r = tid % BQ;
			if (q0 + r < T)
				bulk_reduce_add_f32(dq_acc + ((size_t)b * T + q0 + r) * qs + (size_t)h * D,
				                    smem_addr(sdq + (tid / BQ) * BQ * L::dq_ld + r * L::dq_ld), D * sizeof(float));
			bulk_commit();
		}
	};
	cp_async_wait<0>();
	mbar_wait(bar_kv, 0);
	for (int qt = qt0; qt <= qt1; qt++) {
		int buf = (qt - qt0) & 1, q0 = qt * BQ;
		const float *tl = slse + buf * BQ, *td = sdelta + buf * BQ, *tl2 = slse2 + buf * BQ,
		            *td2 = sdelta2 + buf * BQ;
		/* TWO: whether some query of the tile sees one of this warp's keys
		 * in the window (warp-uniform); elsewhere only the first softmax */
		const bool win = TWO && q0 - (wk0 + 15) < window2;
		__syncthreads(); /* this tile's lse and delta are in, and every warp is done with the last one */
		if (qt > qt0)
			dq_out(q0 - BQ);
		mbar_wait(bar_q + 8 * buf, (qt - qt0) >> 1);

		/* S^T and dP^T, each its own group */
		float s[BQ / 2], dp[BQ / 2];
		uint32_t a_qb = a_q + buf * QBUF, a_dob = a_do + buf * QBUF;
		wgmma_fence();
		{
			WgDesc da(a_kw, 16), db(a_qb, 16);
			wgmma_m64n64k16_ss_z<0, 0>(s, da(0), db(0));
#pragma unroll
			for (int d = 1; d < D / 16; d++) /* bytes: 64-column blocks, then 32 B a step */
				wgmma_m64n64k16_ss_a<0, 0>(s, da((d / 4) * BK * 128 + (d % 4) * 32),
				                           db((d / 4) * BQ * 128 + (d % 4) * 32));
		}
		wgmma_commit();
		{
			WgDesc da(a_vw, 16), db(a_dob, 16);
			wgmma_m64n64k16_ss_z<0, 0>(dp, da(0), db(0));
#pragma unroll
			for (int d = 1; d < D / 16; d++)
				wgmma_m64n64k16_ss_a<0, 0>(dp, da((d / 4) * BK * 128 + (d % 4) * 32),
				                           db((d / 4) * BQ * 128 + (d % 4) * 32));
		}
		wgmma_commit();
		/* the next tile's copies, under the products */
		if (qt < qt1)
			load_q(qt + 1, buf ^ 1);
		cp_async_commit();

		/* P^T in place of S^T, under dP^T's products. This lane's
		 * queries: q0 + 8 j + 2 (lane % 4) (+1). Only the causal and
		 * window masks: a query row past T has Q, dO, lse and delta zero
		 * (P 1, dS 0: no share in dV, dK, dQ), a key row past T K and V
		 * zero (no share in dQ; its dK, dV are not stored) */
		wgmma_wait<1>();
		uint32_t pa[BQ / 16][4], p1a[BQ / 16][4], p2a[BQ / 16][4];
		if (TWO && win) {
			/* both softmaxes: this lane's queries q0 + 8 j + 2 (lane % 4)
			 * (+1), keys key[e >> 1]; P1 causal, P2 also within the window;
			 * pa = w P1 + w2 P2 for dV, p1a = w P1 and p2a = w2 P2 for dS */
			int dk0 = q0 + 2 * (lane % 4) - key[0];
#pragma unroll
			for (int c = 0; c < BQ / 16; c++) {
				float p1[8], p2[8];
#pragma unroll
				for (int jj = 0; jj < 2; jj++) {
					int j = 2 * c + jj, col = j * 8 + 2 * (lane % 4);
					float2 la = *reinterpret_cast<const float2 *>(tl + col),
					       lb = *reinterpret_cast<const float2 *>(tl2 + col);
#pragma unroll
					for (int e = 0; e < 4; e++) {
						int qk = dk0 + 8 * j + (e & 1) - 8 * (e >> 1);
						float x = s[4 * j + e] * sl2;
						float e1 = exp2_approx(x - (e & 1 ? la.y : la.x) * LOG2E);
						float e2 = exp2_approx(x - (e & 1 ? lb.y : lb.x) * LOG2E);
						p1[4 * jj + e] = qk >= 0 ? w * e1 : 0.f;
						p2[4 * jj + e] = qk >= 0 && qk < window2 ? w2 * e2 : 0.f;
					}
				}
#pragma unroll
				for (int i = 0; i < 4; i++) {
					pa[c][i] = pack_bf16(p1[2 * i] + p2[2 * i], p1[2 * i + 1] + p2[2 * i + 1]);
					p1a[c][i] = pack_bf16(p1[2 * i], p1[2 * i + 1]);
					p2a[c][i] = pack_bf16(p2[2 * i], p2[2 * i + 1]);
				}
			}
		} else {
			/* P^T in place of S^T, under dP^T's products. This lane's
			 * queries: q0 + 8 j + 2 (lane % 4) (+1). Only the causal and
			 * window masks: a query row past T has Q, dO, lse and delta
			 * zero (P 1, dS 0: no share in dV, dK, dQ), a key row past T K
			 * and V zero (no share in dQ; its dK, dV are not stored). TWO:
			 * w P^T, the weight in P. */
#pragma unroll
			for (int j = 0; j < BQ / 8; j++) {
				int c = j * 8 + 2 * (lane % 4);
				float2 l2 = *reinterpret_cast<const float2 *>(tl + c);
				float lx = l2.x * LOG2E, ly = l2.y * LOG2E;
#pragma unroll
				for (int e = 0; e < 4; e++)
					s[4 * j + e] = exp2_approx(s[4 * j + e] * sl2 - (e & 1 ? ly : lx));
			}
			if (q0 < wk0 + 15 || (window > 0 && q0 + BQ - 1 - wk0 >= window)) {
				/* visible: 0 <= query - key < window */
				int dk0 = q0 + 2 * (lane % 4) - key[0];
#pragma unroll
				for (int j = 0; j < BQ / 8; j++)
#pragma unroll
					for (int e = 0; e < 4; e++)
						if ((unsigned)(dk0 + 8 * j + (e & 1) - 8 * (e >> 1)) >= wlim)
							s[4 * j + e] = 0.f;
			}
			if (TWO)
#pragma unroll
				for (int i = 0; i < BQ / 2; i++)
					s[i] *= w;
#pragma unroll
			for (int c = 0; c < BQ / 16; c++) {
				pa[c][0] = pack_bf16(s[8 * c], s[8 * c + 1]), pa[c][1] = pack_bf16(s[8 * c + 2], s[8 * c + 3]);
				pa[c][2] = pack_bf16(s[8 * c + 4], s[8 * c + 5]), pa[c][3] = pack_bf16(s[8 * c + 6], s[8 * c + 7]);
			}
		}
		/* dV += P^T dO */
		wgmma_fence();
		{
			WgDesc db(a_dob, LBO_Q);
#pragma unroll
			for (int c = 0; c < BQ / 16; c++) { /* 16 rows of 128 B a step */
				if constexpr (D == 128)
					wgmma_m64n128k16_rs_tb(dv, pa[c], db(c * 2048));
				else
					wgmma_m64n64k16_rs_tb(dv, pa[c], db(c * 2048));
			}
		}
		wgmma_commit();

		/* dS^T in place of dP^T, under dV's products, from P^T as rounded
		 * to bf16 (the float32 copy is not kept: registers); TWO within the
		 * window w dS1^T + w2 dS2^T */
		wgmma_wait<1>();
		if (TWO && win) {
#pragma unroll
			for (int j = 0; j < BQ / 8; j++) {
				int c = j * 8 + 2 * (lane % 4);
				float2 d1 = *reinterpret_cast<const float2 *>(td + c), d2 = *reinterpret_cast<const float2 *>(td2 + c);
#pragma unroll
				for (int e = 0; e < 4; e++) {
					uint32_t u1 = p1a[j / 2][(j % 2) * 2 + (e >> 1)], u2 = p2a[j / 2][(j % 2) * 2 + (e >> 1)];
					float a1 = __uint_as_float(e & 1 ? u1 & 0xffff0000u : u1 << 16);
					float a2 = __uint_as_float(e & 1 ? u2 & 0xffff0000u : u2 << 16), x = dp[4 * j + e];
					dp[4 * j + e] = a1 * (x - (e & 1 ? d1.y : d1.x)) + a2 * (x - (e & 1 ? d2.y : d2.x));
				}
			}
		} else {
#pragma unroll
			for (int j = 0; j < BQ / 8; j++) {
				int c = j * 8 + 2 * (lane % 4);
				float2 d2 = *reinterpret_cast<const float2 *>(td + c);
#pragma unroll
				for (int e = 0; e < 4; e++) {
					uint32_t u = pa[j / 2][(j % 2) * 2 + (e >> 1)];
					float p = __uint_as_float(e & 1 ? u & 0xffff0000u : u << 16);
					dp[4 * j + e] = p * (dp[4 * j + e] - (e & 1 ? d2.y : d2.x));
				}
			}
		}
		uint32_t da[BQ / 16][4];
#pragma unroll
		for (int c = 0; c < BQ / 16; c++) {
			da[c][0] = pack_bf16(dp[8 * c], dp[8 * c + 1]), da[c][1] = pack_bf16(dp[8 * c + 2], dp[8 * c + 3]);
			da[c][2] = pack_bf16(dp[8 * c + 4], dp[8 * c + 5]), da[c][3] = pack_bf16(dp[8 * c + 6], dp[8 * c + 7]);
		}
		/* dK += dS^T Q */
		wgmma_fence();
		{
			WgDesc db(a_qb, LBO_Q);
#pragma unroll
			for (int c = 0; c < BQ / 16; c++) {
				if constexpr (D == 128)
					wgmma_m64n128k16_rs_tb(dk, da[c], db(c * 2048));
				else
					wgmma_m64n64k16_rs_tb(dk, da[c], db(c * 2048));
			}
		}
		wgmma_commit();

		/* dS^T to shared memory under dK's products: rows of 64 queries
		 * (128 B), swizzled, one stmatrix a 16 x 16 fragment (da[c] holds
		 * the 8 x 8 matrices (rows 0-7, queries 16 c..), (rows 8-15, ..),
		 * (0-7, 16 c + 8..), (8-15, ..); lane l gives the address of row
		 * l % 8 of matrix l / 8) */
		{
			int row = wg * 64 + warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, y = (lane >> 4) ^ (lane & 7);
			uint32_t ra = a_ds + row * 128;
#pragma unroll
			for (int c = 0; c < BQ / 16; c++)
				stmatrix_x4(ra + (((2 * c) ^ y) << 4), da[c]);
		}
		wgmma_wait<0>();
		fence_proxy_async();
		bulk_wait_read(); /* the last tile's dQ is out of sdq */
		__syncthreads(); /* all of dS^T is in */

		/* dQ = dS K: 64 queries x 64 columns of D a warpgroup (D 128: its
		 * half of D over all 128 keys; D 64: all of D over its 64 keys) */
		float dq[32];
		wgmma_fence();
		{
			/* D 128: all 128 keys of dS^T, the warpgroup's 64-column block
			 * of K; D 64: its 64 keys of both */
			constexpr int KS = D == 128 ? BK / 16 : 4;
			uint32_t oa = D == 128 ? 0 : wg * 64 * 128, ob = D == 128 ? wg * BK * 128 : wg * 64 * 128;
			WgDesc da(a_ds + oa, 16), db(a_k + ob, 16);
			wgmma_m64n64k16_ss_z<1, 1>(dq, da(0), db(0));
#pragma unroll
			for (int kk = 1; kk < KS; kk++)
				wgmma_m64n64k16_ss_a<1, 1>(dq, da(kk * 2048), db(kk * 2048));
		}
		wgmma_commit();
		wgmma_wait<0>();
		/* the next tile's lse and delta are in (issued under this tile's
		 * products) */
		cp_async_wait<0>();
		/* this warpgroup's 64 columns (D 64: its keys' share) to sdq; the
		 * fence makes them visible to the async proxy (the bulk copies) */
		{
			float *t = sdq + (D == 128 ? wg * 64 : wg * BQ * L::dq_ld) + (warp * 16 + lane / 4) * L::dq_ld +
			           2 * (lane % 4);
#pragma unroll
			for (int j = 0; j < 8; j++) {
				*reinterpret_cast<float2 *>(t + 8 * j) = make_float2(wo * dq[4 * j], wo * dq[4 * j + 1]);
				*reinterpret_cast<float2 *>(t + 8 * L::dq_ld + 8 * j) =
					make_float2(wo * dq[4 * j + 2], wo * dq[4 * j + 3]);
			}
		}
		fence_proxy_async();
	}
	__syncthreads();
	dq_out(qt1 * BQ);
	bulk_wait();

	/* this head's share of dK (scaled) and dV of the group's kv head */
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (key[i] >= T)
			continue;
		size_t o = ((size_t)b * T + key[i]) * ks + (size_t)g * D + 2 * (lane % 4);
#pragma unroll
		for (int j = 0; j < D / 8; j++) {
			atomicAdd(reinterpret_cast<float2 *>(dk_acc + o + 8 * j),
			          make_float2(dk[4 * j + 2 * i] * ws, dk[4 * j + 2 * i + 1] * ws));
			atomicAdd(reinterpret_cast<float2 *>(dv_acc + o + 8 * j),
			          make_float2(wo * dv[4 * j + 2 * i], wo * dv[4 * j + 2 * i + 1]));
		}
	}
#else
	__trap(); /* built without sm_90a: the launcher never picks this kernel */
#endif
}

/* one attention of attention_backward2_cuda: its weight, output, lse and window */
struct AttGrad {
	float w;
	const bf16_t *out;
	const float *lse;
	int window;
};

/* the wgmma backward of attention a (delta da) into the accumulators; with
 * TWO also of b (delta db), a's then without a window, in the same pass */
template <int D, bool TWO>
static void backward_wgmma_launch(float *dq_acc, float *dk_acc, float *dv_acc, const bf16_t *d_dout, const bf16_t *d_q,
                                  const bf16_t *d_k, const bf16_t *d_v, int B, int T, int H, int G, const AttGrad &a,
                                  const float *da, const AttGrad *b, const float *db)
{
	size_t smem = WbLayout<D>::bytes;
	static bool configured;
	smem_allow(attention_backward_wgmma_kernel<D, TWO>, smem, &configured);
	dim3 grid(H, CEIL_DIV(T, WB_BK), B);
	CUtensorMap mdo = att_map(d_dout, D, H, T, B, WB_BQ), mq = att_map(d_q, D, H, T, B, WB_BQ),
	            mk = att_map(d_k, D, G, T, B, WB_BK), mv = att_map(d_v, D, G, T, B, WB_BK);
	attention_backward_wgmma_kernel<D, TWO><<<grid, 256, smem>>>(
		dq_acc, dk_acc, dv_acc, mdo, mq, mk, mv, a.lse, da, T, H, G, TWO ? 0 : a.window, 1.0f / sqrtf((float)D), a.w,
		TWO ? b->lse : NULL, TWO ? db : NULL, TWO ? b->window : 0, TWO ? b->w : 0.f);
	cudaCheck(cudaGetLastError());
}

template <int D>
static void backward_launch(bf16_t *d_dq, bf16_t *d_dk, bf16_t *d_dv, const bf16_t *d_dout, const AttGrad (&a)[2],
                            const bf16_t *d_q, const bf16_t *d_k, const bf16_t *d_v, int B, int T, int H, int G,
                            float *d_work, double *const dot[2])
{
	int64_t nq = (int64_t)B * T * H * D, nk = (int64_t)B * T * G * D, rows = (int64_t)B * T * H;
	float *dq_acc = d_work, *dk_acc = dq_acc + nq, *dv_acc = dk_acc + nk, *delta[2] = {dv_acc + nk, dv_acc + nk + rows};
	float scale = 1.0f / sqrtf((float)D);
	/* the deltas of the weighed attentions, and of one of weight 0 whose dot is asked for */
	const bf16_t *out[2];
	for (int i = 0; i < 2; i++)
		out[i] = a[i].w != 0 || dot[i] ? a[i].out : NULL;
	deltas(delta, dot, dq_acc, dk_acc, dv_acc, d_dout, out, B, T, H, G, D);
	/* each attention adds its share to the accumulators; heads fastest:
	 * the key tiles near the start, which see the most queries, go first.
	 * On a Hopper a full attention and a window's, both weighed, run as
	 * one (TWO): the window's query tiles then cost one set of products */
	bool wg = use_wgmma();
	if (wg && a[0].w != 0 && a[1].w != 0 && a[0].window <= 0 && a[1].window > 0) {
		backward_wgmma_launch<D, true>(dq_acc, dk_acc, dv_acc, d_dout, d_q, d_k, d_v, B, T, H, G, a[0], delta[0],
		                               &a[1], delta[1]);
	} else {
		for (int i = 0; i < 2; i++) {
			if (a[i].w == 0)
				continue;
			if (wg) {
				backward_wgmma_launch<D, false>(dq_acc, dk_acc, dv_acc, d_dout, d_q, d_k, d_v, B, T, H, G, a[i],
				                                delta[i], NULL, NULL);
				continue;
			}
			size_t smem = BwdLayout<D>::bytes;
			static bool configured;
			smem_allow(attention_backward_kernel<D>, smem, &configured);
			dim3 grid(H, CEIL_DIV(T, BWD_BK), B);
			attention_backward_kernel<D><<<grid, BWD_WARPS * WARP_SIZE, smem>>>(
				dq_acc, dk_acc, dv_acc, (const bf16 *)d_dout, (const bf16 *)d_q, (const bf16 *)d_k,
				(const bf16 *)d_v, a[i].lse, delta[i], T, H, G, a[i].window, scale, a[i].w);
			cudaCheck(cudaGetLastError());
		}
	}
	if (d_dq)
		attention_convert_cuda(d_dq, d_dk, d_dv, d_work, B, T, H, G, D);
}

/* the mma.sync kernel has the scale in dS already */
extern "C" float attention_backward_qscale(int D) { return use_wgmma() ? 1.0f / sqrtf((float)D) : 1.f; }

extern "C" void attention_convert_cuda(bf16_t *d_dq, bf16_t *d_dk, bf16_t *d_dv, const float *d_work, int B, int T,
                                       int H, int G, int D)
{
	int64_t nq = (int64_t)B * T * H * D, nk = (int64_t)B * T * G * D;
	if (nq == 0)
		return;
	attention_convert_kernel<<<(unsigned)CEIL_DIV(nq + 2 * nk, 4 * 256), 256>>>(
		(bf16 *)d_dq, (bf16 *)d_dk, (bf16 *)d_dv, d_work, nq, nk, attention_backward_qscale(D));
	cudaCheck(cudaGetLastError());
}

/* dq, dk, dv accumulators (G <= H, so H serves for the kv heads) and two deltas */
extern "C" size_t attention_backward_work(int B, int T, int H, int D)
{
	return (size_t)B * T * H * (3 * (size_t)D + 2);
}

extern "C" void attention_dots_cuda(double *d_dot1, double *d_dot2, const bf16_t *d_dout, const bf16_t *d_out1,
                                    const bf16_t *d_out2, int B, int T, int H, int D, float *d_work)
{
	int64_t rows = (int64_t)B * T * H;
	float *delta[2] = {d_work, d_work + rows};
	double *const dot[2] = {d_dot1, d_dot2};
	const bf16_t *out[2] = {d_dot1 ? d_out1 : NULL, d_dot2 ? d_out2 : NULL};
	deltas(delta, dot, NULL, NULL, NULL, d_dout, out, B, T, H, H, D);
}

extern "C" void attention_backward2_cuda(bf16_t *d_dq, bf16_t *d_dk, bf16_t *d_dv, const bf16_t *d_dout, float w1,
                                         const bf16_t *d_out1, const float *d_lse1, int window1, float w2,
                                         const bf16_t *d_out2, const float *d_lse2, int window2, const bf16_t *d_q,
                                         const bf16_t *d_k, const bf16_t *d_v, int B, int T, int H, int G, int D,
                                         float *d_work, double *d_dot1, double *d_dot2)
{
	if (H % G != 0)
		fprintf(stderr, "attention_backward_cuda: H %d is not a multiple of G %d\n", H, G), exit(1);
	if (w1 == 0 && w2 == 0)
		fprintf(stderr, "attention_backward2_cuda: both weights 0\n"), exit(1);
	const AttGrad a[2] = {{w1, d_out1, d_lse1, window1}, {w2, d_out2, d_lse2, window2}};
	double *const dot[2] = {d_dot1, d_dot2};
	switch (D) {
	case 64:
		backward_launch<64>(d_dq, d_dk, d_dv, d_dout, a, d_q, d_k, d_v, B, T, H, G, d_work, dot);
		break;
	case 128:
		backward_launch<128>(d_dq, d_dk, d_dv, d_dout, a, d_q, d_k, d_v, B, T, H, G, d_work, dot);
		break;
	default: fprintf(stderr, "attention_backward_cuda: head dim %d (64 and 128 are built)\n", D), exit(1);
	}
}

extern "C" void attention_backward_cuda(bf16_t *d_dq, bf16_t *d_dk, bf16_t *d_dv, const bf16_t *d_dout,
                                        const bf16_t *d_out, const float *d_lse, const bf16_t *d_q,
                                        const bf16_t *d_k, const bf16_t *d_v, int B, int T, int H, int G, int D,
                                        int window, float *d_work)
{
	attention_backward2_cuda(d_dq, d_dk, d_dv, d_dout, 1.f, d_out, d_lse, window, 0.f, NULL, NULL, 0, d_q, d_k, d_v,
	                         B, T, H, G, D, d_work, NULL, NULL);
}
