/*
 * gdn_chunked (GPU): the Gated DeltaNet recurrence of lib/linear_attn.h in
 * chunks of 64 steps, forward and backward, for training lengths. Twins of
 * gdn_forward_chunked and gdn_backward_chunked (lib/linear_attn.c states
 * the math; the layouts and NULL rules are gdn_forward_recurrent's and
 * gdn_backward's). float32 in and out, float32 arithmetic on the CUDA cores,
 * or (the keep/kept calls with tf32) most products on the tensor cores in
 * 1xTF32 (versions 4 and 5).
 *
 * version 1, fla's structure. The forward is three launches:
 *   chunk   a block per (chunk, sequence, head): G, A and the WY factors
 *           [U | W] = (I + A)^{-1} [diag(beta) V | diag(beta e^G) K] by forward
 *           substitution, a thread per column (no barrier between rows), and
 *           the decayed keys Kt (rows e^{G_last - G_j} k_j)
 *   state   sequential over the chunks, a block per (sequence, head, 16 value
 *           columns of the state): keeps the start state S_c of every chunk,
 *           Wn = U - W S_c, S = e^{G_last} S + Kt^T Wn; the next chunk's
 *           operands travel by cp.async while this one computes
 *   output  a block per chunk: O = scale (diag(e^G) Q S_c + M Wn)
 * The backward recomputes chunk and state (unless the forward kept them,
 * version 3), then
 *   bprep   per chunk: Pm = scale M^T dO, Hq = scale Q^T diag(e^G) dO
 *   state   the same kernel run from the last chunk back: dWn = Pm + Kt dS',
 *           dS = e^{G_last} dS' + Hq - W^T dWn, keeping every chunk's dS'
 *   bstate  per chunk, the products with the states: dq = scale diag(e^G) dO
 *           S_c^T, dk = diag(e^{G_last - G}) Wn dS'^T, dW = -dWn S_c^T, and
 *           their share of dG
 *   bwy     back substitution dX = (I + A)^{-T} [dWn | dW], a thread per
 *           column; dA = -(dX Y^T): dv, dbeta, the WY share of dk and dG
 *   bintra  the intra-chunk product M Wn: dq, dk, the rest of dG, and dg, its
 *           reverse cumulative sum within the chunk
 * Every product is a register tile per thread over operands staged in shared
 * memory, both stored k-major (one row of each per step of the sum), so that
 * a thread reads float4s. Dk and Dv are padded to 64 or 128 with zeros in
 * the scratch and in shared memory, rows past T are zeros (g = beta = 0
 * there, so G repeats its last value and nothing leaks).
 *
 * Measured on an H100 at B 1, T 4096, H 16, Dk = Dv 128 (tests/test_gdn_chunked.cu,
 * DASH_BENCH=1; fla's Triton forward: 0.555 ms):
 *   version 1: forward 0.752 ms, forward + backward 3.108 ms. ncu: chunk 263 us,
 *     state 276 (backwards 319), output 201, bprep 163, bstate 403, bwy 590,
 *     bintra 286; one block an SM for most, latency-bound (issue slots 20-50%
 *     busy), loads stuck behind stores the compiler could not move them past.
 *   version 2: forward 0.651 ms, forward + backward 2.469 ms. Loads batched
 *     before stores (dq, dk read-modify-writes, q and k for the dG dots, V and
 *     K staged in shared memory), bstate, bintra and output reorganised to fit
 *     two blocks an SM, four partial sums a row in the forward substitution:
 *     chunk 230 us, output 157, bstate 289, bwy 342, bintra 195. A 3xTF32
 *     mma.sync state pass (float32 accuracy) was slower than the CUDA cores
 *     here (309 us against 276): fragment loads and the hi/lo splits cost more
 *     than the products saved. Then the state pass's first product summed in
 *     two halves of the block, halving its shared-memory traffic: state 250 us
 *     (backwards 273); forward 0.645 ms, forward + backward 2.43 ms.
 * What is left is latency: 8 to 16 warps an SM waiting on shared memory. The
 * next steps are tensor-core products (wgmma) in the chunk-parallel kernels
 * and a forward substitution by blocks (fla's 16x16 diagonal solves).
 *   version 3: the backward reuses the forward's work. The keeping forward
 *     (gdn_forward_chunked_keep_cuda) runs the chunk kernel in its backward
 *     form (it also stores Ak, W and Kt^T: 80 KB more a block at D 128), and
 *     the kept backward (gdn_backward_chunked_kept_cuda) starts at bprep,
 *     skipping the recomputation (chunk 230 us + state 250 at B 1, T 4096,
 *     H 16, D 128). The output kernel and every backward kernel only read
 *     G, Ak, U, W, WT, Kt, KtT, Wn and S, so the work still holds them when
 *     the backward runs (and after it). tests/test_gdn_chunked.cu checks the
 *     same bits as forward + recomputing backward (58 ok, H100).
 *     Measured (H100, DASH_BENCH=1): keeping forward 0.666 ms (plain 0.646),
 *     keeping forward + kept backward 1.942 ms against 2.425: 0.483 ms less.
 *   version 4: the state passes' products on the tensor cores in 1xTF32
 *     (gdn_state_kernel with TC, kernels/tf32.cuh; the keep/kept calls' tf32,
 *     the search's path), shared rows padded so that fragment reads do not
 *     conflict. H200: keeping forward 0.649 -> 0.595 ms, + kept backward
 *     1.867 -> 1.765; o, S and every gradient within 5.8e-4 of their scale
 *     of the float32 pass (tests). Less than the products' count promised:
 *     the pass is then bound by loading each chunk's W and Kt (64 KB) into
 *     each of a head's 8 blocks, 537 MB from L2 a pass. Next: the 8 blocks
 *     of a head as a cluster, each chunk loaded once and multicast.
 *   version 5: with tf32 also the products of output, bprep, bstate, bintra
 *     and the chunk kernel's Ak on the tensor cores in 1xTF32 (template
 *     parameter TC, wmma_tf32: a warp a 32 x 16 to 64 x 32 tile, operands
 *     k-major as before, rows padded by 8 floats so that fragment reads do not
 *     conflict; row and column sums of the epilogues over the lanes of a
 *     fragment row or column by shuffles, then over the warps in shared
 *     memory). TC keeps two blocks an SM where float32 had them (bprep now
 *     too: dO takes Q^T's place once M is made). The float32 path compiles
 *     to the same SASS as before. H200, ncu per layer: output 153 -> 92 us,
 *     bprep 152 -> 112, bstate 277 -> 202, bintra 185 -> 170, chunk 236 ->
 *     216. bwy on the tensor cores (dA and Zs K) was slower, 368 us against
 *     325 (dX^T rows padded to 72 or left at 68 alike), and is left out.
 *     DASH_BENCH, same call: tf32 keeping forward 0.588 -> 0.504 ms, + kept
 *     backward 1.754 -> 1.557 (bintra there in a slower variant, 187 us);
 *     the final code on another H200: 0.501 and 1.528 ms (float32 1.884);
 *     o, S and every gradient within 5.8e-4 of their scale, as in version 4.
 *     Then the state pass's products in two chains of accumulators
 *     (wmma_tf32's NA 2; ncu had the pass issue-bound on fixed-latency
 *     dependencies, 8 warps an SM): 0.486 and 1.504 ms on a third H200 (not
 *     the same call; the search step did not move beyond its noise).
 *   version 6: the tf32 state passes (gdn_state_tc_kernel) with a quarter
 *     of the instructions: the chunk kernel's TC form writes W^T, Kt, Kt^T
 *     and W in mma fragment order (frag_a_at), rounded to TF32 but W (bwy
 *     reads it too), so that a lane loads a k-step's A fragment with one
 *     128-bit shared load and converts nothing (before: four scalar loads
 *     and four cvt.rna); St stays float32 in registers (a thread always
 *     holds the same elements), X and St go to shared memory once, as TF32
 *     B fragments; two barriers a chunk instead of three; Kt, W and W^T
 *     leave the chunk kernel as coalesced float4s (gathered from shared
 *     memory). bwy gathers W^T from the fragment order into rows padded by
 *     4 (unpadded: 8-way conflicts, 360 us). H200, ncu per layer, same
 *     call: state forward 173 -> 133 us, backward 206 -> 145, chunk 217 ->
 *     203, bwy 327 -> 329; DASH_BENCH: tf32 keeping forward 0.488 -> 0.431
 *     ms, + kept backward 1.511 -> 1.384 (1.504 -> 1.389 in a second run);
 *     o, S and the gradients as close as before (within 5.9e-4 of their
 *     scale). 32 value columns a block (64 blocks, half the L2 traffic) was
 *     slower: 174 and 198 us.
 *   version 7: no serial chains in the tf32 path. The chunk kernel's TC
 *     form inverts the chunk's unit lower I + A itself (tri_diag, tri_merge,
 *     float32: 16 x 16 diagonal blocks by substitution, then two levels of
 *     merges by block products) and forms [U | W] = T [diag(beta) V |
 *     diag(beta e^G) K] in 3xTF32 (T's fragments split once for both),
 *     keeping T (Tm, 16 KB a chunk) for the backward; V comes by cp.async
 *     into K^T's place once Ak is made (Kt, Kt^T read from K) and the
 *     diagonal solves overlap the Kt stores. bwy's TC form
 *     (gdn_bwy_tc_kernel) takes dX = T^T [dWn | dW] in 3xTF32 and dA^T, Zs
 *     K in 1xTF32, over 64-column slabs that travel by cp.async a slab
 *     ahead (W's as A fragments straight from W^T's fragment order), 111 KB
 *     of shared memory: two blocks an SM against one. H200, same call: ncu
 *     chunk 204 -> 149 us, bwy 330 -> 163; DASH_BENCH tf32 keeping forward
 *     0.433 -> 0.375 ms, + kept backward 1.388 -> 1.160 (two runs each); o,
 *     S and every gradient within 5.8e-4 of their scale (5.9e-4 before);
 *     float32 path untouched. Steps on the way, same call: the first bwy
 *     form (dA by rows of dX, W gathered from fragment order into rows, Y
 *     loaded after each slab's dX, dk read back at the end) 194 us, chunk
 *     with the two products apart and V loaded after Kt 161 us (1.211 ms).
 *     T alone in the old bwy (its one block an SM, dA on the CUDA cores)
 *     changed nothing (333 us): the substitution was not what bound it.
 *   version 8: bstate's and bintra's tf32 forms (gdn_bstate_tc_kernel,
 *     gdn_bintra_tc_kernel; ncu had both waiting on loads staged through
 *     registers, 0.4-0.5 warps ready a scheduler) take their operands by
 *     cp.async straight into shared memory, untransposed, rows padded by 4
 *     floats. bstate streams S_c, dO, dWn, then dS', Wn in slices of 32
 *     value columns through three stages, one barrier a slice (113 KB, two
 *     blocks an SM, no spills); the e^G scale and the sign come after the
 *     product; <dS', S_c> from the dS' slices against S_c read again one
 *     slice ahead. bintra asks for Q, K and dO, Wn (two stages of 32
 *     columns) before its first product, dM's first slice made while Q and
 *     K arrive; dME and dME^T reuse the stages (107 KB). Both store dq and
 *     dk by float2 (tc_put_rows; before: single floats 8 bytes apart). H200,
 *     ncu at base clocks, same call, on version 6: bstate 250 -> 158-161 us,
 *     bintra 202-203 -> 120; DASH_BENCH tf32 keeping forward + kept
 *     backward 1.389, 1.394 -> 1.252, 1.250 ms; within 5.8e-4 of scale.
 *     The float32 forms lost their dead TC branches (their PTX unchanged).
 *   version 9: version 8's treatment for output and bprep, and the last
 *     loads through registers out of the chunk and bwy kernels' tf32 forms.
 *     gdn_output_tc_kernel asks for Q and K (rows DK + 4 apart,
 *     untransposed) by cp.async with the first two 32-row slices of S_c;
 *     S_c, then Wn stream through two stages, M^T into K's place; o by
 *     float2. gdn_bprep_tc_kernel asks for Q (rows DK + 8 apart: Hq reads
 *     its columns), K and dO at once, forms M^T = K Q^T (M into K's place)
 *     and applies e^G to dO's rows as Hq's fragments are read (Q loaded
 *     once, not twice). The chunk kernel asks for K and V together and
 *     forms Ak from K's rows (K^T, loaded transposed through registers,
 *     left out); bwy takes Zs K from the last K slab still in sV and asks
 *     for the first as the last dA^T product starts (no reloads by load_n).
 *     H200, ncu at base clocks, two runs, same call: output 114.8, 114.7
 *     -> 89.0, 88.2 us, bprep 140.9, 141.9 -> 106.6, 106.7, chunk 185.2,
 *     184.8 -> 172.7, 172.7; in a second call bwy 200.2, 198.4 -> 191.1,
 *     191.6 (its DK 128, DV 64 form now spills 8 bytes). DASH_BENCH, same
 *     call: tf32 keeping forward 0.376 -> 0.342 ms, + kept backward 1.026
 *     -> 0.955; within 5.8e-4 of scale as before; the float32 forms' PTX
 *     unchanged.
 *   version 10: the tf32 state passes' W^T, Kt (or Kt^T, W) by two bulk
 *     copies a chunk (gdn_state_tc_kernel's BULK, sm_90), the same bits.
 *     ncu had the pass waiting, not bandwidth-bound (L2 30%, DRAM 22%):
 *     forward 237 -> 189 thousand cycles, backward 249 -> 222; DASH_BENCH
 *     tf32 keeping forward 0.344 -> 0.319 ms, + kept backward 0.960 ->
 *     0.907. Version 4's next step, the 8 blocks of a head as a cluster
 *     with each chunk multicast, was slower at every size (clusters of 2,
 *     4, 8: 1.019, 1.427, 1.611 ms), the blocks waiting on each other.
 */
#include "cuda_common.cuh"
#include "gpu.h"
#include "mbar.cuh"
#include "tf32.cuh"

#define GDN_C 64   /* chunk length */
#define GDN_NT 256 /* threads of every block */
#define GDN_SV 16  /* value columns of the state one state-pass block carries */
#define GDN_LX (GDN_C + 4) /* row stride of dX^T, written a row per thread */

/* The scratch, carved from d_work; per (sequence, head, chunk), with DK, DV
 * the padded dimensions. With tf32 (the chunk kernel's TC form) WT, Kt,
 * KtT and W hold the same values in the state passes' fragment order
 * (frag_a_at: WT and KtT as A operands of C x DK, Kt and W of DK x C), all
 * but W rounded to TF32: */
struct GdnWork {
	float *G;   /* (C)      chunk-local cumulative sums of g */
	float *Ak;  /* (C, C)   e^{G_i - G_j} k_i . k_j for j < i, else 0 */
	float *U;   /* (C, DV)  */
	float *W;   /* (C, DK)  */
	float *WT;  /* (DK, C)  W transposed */
	float *Kt;  /* (C, DK)  e^{G_last - G_j} k_j */
	float *KtT; /* (DK, C)  */
	float *Wn;  /* (C, DV)  U - W S_c, the update rows */
	float *S;   /* (DK, DV) S_c, the state the chunk starts from */
	float *Pm;  /* (C, DV)  scale M^T dO */
	float *Hq;  /* (DK, DV) scale Q^T diag(e^G) dO */
	float *dS;  /* (DK, DV) the gradient with respect to the chunk's end state */
	float *dWn; /* (C, DV)  */
	float *dW;  /* (C, DK)  */
	float *dG;  /* (C)      the gradient with respect to G, summed over kernels */
	float *Tm;  /* (C, C)   tf32: T = (I + A)^{-1}, A = diag(beta) Ak */
};

static int gdn_pad(int d) { return d <= 64 ? 64 : 128; }

/* gdn_carve lays the scratch out (w NULL: only counts); returns its bytes */
static size_t gdn_carve(GdnWork *w, void *base, int B, int T, int H, int Dk, int Dv)
{
	size_t n = (size_t)B * H * CEIL_DIV(T, GDN_C), C = GDN_C, DK = gdn_pad(Dk), DV = gdn_pad(Dv), off = 0;
	float **f[] = {&w->G, &w->Ak, &w->U, &w->W, &w->WT, &w->Kt, &w->KtT, &w->Wn, &w->S, &w->Pm, &w->Hq, &w->dS,
	               &w->dWn, &w->dW, &w->dG, &w->Tm};
	size_t sz[] = {C, C * C, C * DV, C * DK, DK * C, C * DK, DK * C, C * DV, DK * DV, C * DV, DK * DV, DK * DV,
	               C * DV, C * DK, C, C * C};
	for (int i = 0; i < 16; i++) {
		if (base)
			*f[i] = (float *)((char *)base + off);
		off += (n * sz[i] * sizeof(float) + 255) / 256 * 256;
	}
	return off;
}

// ----------------------------------------------------------------------------
// device helpers

static __device__ __forceinline__ float *dyn_smem(void)
{
	extern __shared__ __align__(16) float4 gdn_smem[];
	return (float *)gdn_smem;
}

static __device__ __forceinline__ void cp_async16(float *s, const float *g)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	unsigned a = (unsigned)__cvta_generic_to_shared(s);
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(g));
#else
	*(float4 *)s = *(const float4 *)g;
#endif
}

static __device__ __forceinline__ void cp_async_commit(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	asm volatile("cp.async.commit_group;\n" ::);
#endif
}

template <int N>
static __device__ __forceinline__ void cp_async_wait(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

/* A thread's fragment of N indices along one side of a product: N < 4
 * contiguous from base; else groups of 4 contiguous, s apart. */
template <int N>
static __device__ __forceinline__ int frag(int base, int s, int x)
{
	return N < 4 ? base + x : base + x / 4 * s + x % 4;
}

template <int N>
static __device__ __forceinline__ void load_frag(float (&r)[N], const float *p, int s)
{
	if (N >= 4) {
#pragma unroll
		for (int g = 0; g < N / 4; g++) {
			float4 v = *(const float4 *)(p + g * s);
			r[4 * g] = v.x, r[4 * g + 1] = v.y, r[4 * g + 2] = v.z, r[4 * g + 3] = v.w;
		}
	} else if (N == 2) {
		float2 v = *(const float2 *)p;
		r[0] = v.x, r[N - 1] = v.y;
	} else {
		r[0] = p[0];
	}
}

/* acc[x][y] += sum over k in [k0, k1) of At[k][frag(ai, as, x)] * Bk[k][frag(bj, bs, y)]:
 * both operands k-major in shared memory, rows lda and ldb floats apart */
template <int TM, int TN>
static __device__ __forceinline__ void mm(float (&acc)[TM][TN], const float *At, int lda, int ai, int as,
                                          const float *Bk, int ldb, int bj, int bs, int k0, int k1)
{
#pragma unroll 4
	for (int k = k0; k < k1; k++) {
		float a[TM], b[TN];
		load_frag<TM>(a, At + k * lda + ai, as);
		load_frag<TN>(b, Bk + k * ldb + bj, bs);
#pragma unroll
		for (int x = 0; x < TM; x++)
#pragma unroll
			for (int y = 0; y < TN; y++)
				acc[x][y] = fmaf(a[x], b[y], acc[x][y]);
	}
}

template <int TM, int TN>
static __device__ __forceinline__ void zero(float (&acc)[TM][TN])
{
#pragma unroll
	for (int x = 0; x < TM; x++)
#pragma unroll
		for (int y = 0; y < TN; y++)
			acc[x][y] = 0.f;
}

/* R rows of E values from global memory (row i at x + i * rs, the first d
 * values real, rows from n on zeros), each times a (and sc[i] if sc), into
 * shared memory transposed: s[e * ld + i]. A thread takes a row's float4 when
 * it can: lanes run along the rows, so the shared stores do not conflict. */
template <int R, int E>
static __device__ void load_t(float *s, int ld, const float *x, size_t rs, int n, int d, float a, const float *sc)
{
	if ((d & 3) == 0 && (rs & 3) == 0 && ((size_t)x & 15) == 0) {
		for (int idx = threadIdx.x; idx < R * E / 4; idx += GDN_NT) {
			int i = idx % R, e = idx / R * 4;
			float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
			if (i < n && e < d)
				v = *(const float4 *)(x + i * rs + e);
			float m = sc ? a * sc[i] : a;
			s[(e + 0) * ld + i] = m * v.x, s[(e + 1) * ld + i] = m * v.y;
			s[(e + 2) * ld + i] = m * v.z, s[(e + 3) * ld + i] = m * v.w;
		}
	} else {
		for (int idx = threadIdx.x; idx < R * E; idx += GDN_NT) {
			int i = idx % R, e = idx / R;
			s[e * ld + i] = i < n && e < d ? (sc ? a * sc[i] : a) * x[i * rs + e] : 0.f;
		}
	}
}

/* the same, not transposed: s[i * ld + e] */
template <int R, int E>
static __device__ void load_n(float *s, int ld, const float *x, size_t rs, int n, int d, float a, const float *sc)
{
	if ((d & 3) == 0 && (rs & 3) == 0 && ((size_t)x & 15) == 0) {
		for (int idx = threadIdx.x; idx < R * E / 4; idx += GDN_NT) {
			int i = idx / (E / 4), e = idx % (E / 4) * 4;
			float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
			if (i < n && e < d)
				v = *(const float4 *)(x + i * rs + e);
			float m = sc ? a * sc[i] : a;
			*(float4 *)(s + i * ld + e) = make_float4(m * v.x, m * v.y, m * v.z, m * v.w);
		}
	} else {
		for (int idx = threadIdx.x; idx < R * E; idx += GDN_NT) {
			int i = idx / E, e = idx % E;
			s[i * ld + e] = i < n && e < d ? (sc ? a * sc[i] : a) * x[i * rs + e] : 0.f;
		}
	}
}

/* n floats from global to shared memory, both 16-byte aligned, n % 4 == 0 */
static __device__ void copy_s(float *s, const float *x, int n)
{
	for (int i = threadIdx.x * 4; i < n; i += GDN_NT * 4)
		*(float4 *)(s + i) = *(const float4 *)(x + i);
}

/* a warp's wmma_tf32 tile at (m0, n0), times a, into x (rows ld apart, ld even) */
template <int WM, int WN>
static __device__ __forceinline__ void tc_store(float *x, int ld, int m0, int n0, const float (&c)[WM][WN][4], float a)
{
#pragma unroll
	for (int i = 0; i < WM; i++)
#pragma unroll
		for (int j = 0; j < WN; j++)
#pragma unroll
			for (int h = 0; h < 2; h++)
				*(float2 *)(x + (size_t)tc_row(m0, i, 2 * h) * ld + tc_col(n0, j, 0)) =
					make_float2(a * c[i][j][2 * h], a * c[i][j][2 * h + 1]);
}

/* R rows of E floats (E % 4 == 0) from global memory (row i at x + i * rs,
 * the first d values real, rows from n on zeros) into shared rows ld apart
 * (16-byte aligned), by cp.async where x allows (not waited for: the caller
 * commits the group), else by plain loads and stores */
template <int R, int E>
static __device__ void stage_rows(float *s, int ld, const float *x, size_t rs, int n, int d)
{
	if ((d & 3) == 0 && (rs & 3) == 0 && ((size_t)x & 15) == 0) {
#pragma unroll
		for (int u = 0; u < CEIL_DIV(R * E / 4, GDN_NT); u++) {
			int idx = u * GDN_NT + threadIdx.x, i = idx / (E / 4), e = idx % (E / 4) * 4;
			if (idx >= R * E / 4)
				break;
			if (i < n && e < d)
				cp_async16(s + i * ld + e, x + i * rs + e);
			else
				*(float4 *)(s + i * ld + e) = make_float4(0.f, 0.f, 0.f, 0.f);
		}
	} else {
		for (int idx = threadIdx.x; idx < R * E; idx += GDN_NT) {
			int i = idx / E, e = idx % E;
			s[i * ld + e] = i < n && e < d ? x[i * rs + e] : 0.f;
		}
	}
}

/* a warp's wmma_tf32 tile at (m0, n0), row i times f[i] (f NULL: 1), into
 * rows i < n, columns d < dk of a (B, T, H, dk) gradient y (ADD: added to
 * it), row i at y + (base + i H) dk; rd[i][h] gets the dot of the tile's row
 * tc_row(m0, i, 2 h) (as stored) with x's (x NULL: none). By float2 where dk
 * and the pointers allow; a tile row's loads all before its stores. */
template <bool ADD, int WM, int WN>
static __device__ __forceinline__ void tc_put_rows(float *y, const float *x, size_t base, int H, int n, int dk,
                                                   int m0, int n0, const float (&c)[WM][WN][4], const float *f,
                                                   float (&rd)[WM][2])
{
	bool v2 = (dk & 1) == 0 && ((size_t)y & 7) == 0 && ((size_t)x & 7) == 0;
#pragma unroll
	for (int i = 0; i < WM; i++) {
		float xv[WN][4], ov[WN][4];
#pragma unroll
		for (int j = 0; j < WN; j++)
#pragma unroll
			for (int h = 0; h < 2; h++) {
				int row = tc_row(m0, i, 2 * h), d = tc_col(n0, j, 0);
				size_t o = (base + (size_t)row * H) * dk + d;
				float2 a = make_float2(0.f, 0.f), b = make_float2(0.f, 0.f);
				if (v2) {
					if (row < n && d < dk) {
						if (x)
							a = *(const float2 *)(x + o);
						if (ADD)
							b = *(const float2 *)(y + o);
					}
				} else {
					if (row < n && d < dk)
						a.x = x ? x[o] : 0.f, b.x = ADD ? y[o] : 0.f;
					if (row < n && d + 1 < dk)
						a.y = x ? x[o + 1] : 0.f, b.y = ADD ? y[o + 1] : 0.f;
				}
				xv[j][2 * h] = a.x, xv[j][2 * h + 1] = a.y, ov[j][2 * h] = b.x, ov[j][2 * h + 1] = b.y;
			}
		rd[i][0] = rd[i][1] = 0.f;
#pragma unroll
		for (int j = 0; j < WN; j++)
#pragma unroll
			for (int h = 0; h < 2; h++) {
				int row = tc_row(m0, i, 2 * h), d = tc_col(n0, j, 0);
				size_t o = (base + (size_t)row * H) * dk + d;
				float a = f ? f[row] : 1.f, v0 = a * c[i][j][2 * h], v1 = a * c[i][j][2 * h + 1];
				rd[i][h] += xv[j][2 * h] * v0 + xv[j][2 * h + 1] * v1;
				v0 += ov[j][2 * h], v1 += ov[j][2 * h + 1];
				if (v2) {
					if (row < n && d < dk)
						*(float2 *)(y + o) = make_float2(v0, v1);
				} else {
					if (row < n && d < dk)
						y[o] = v0;
					if (row < n && d + 1 < dk)
						y[o + 1] = v1;
				}
			}
	}
}

/* Fragment order: an mma.m16n8k8 operand stored so that a lane reads its
 * whole fragment of a k-step at once (wmma_tf32's lane (g, t) = (lane / 4,
 * lane % 4)). A (M x K, row m, column k) by tiles of 16 x 8, 128 floats a
 * tile, the tiles of a row of 16 together: lane's float4 holds (g, t), (g +
 * 8, t), (g, t + 4), (g + 8, t + 4) of its tile. B (K x N) by tiles of 8 x
 * 8, 64 floats a tile, the tiles of a column of 8 together: lane's float2
 * holds (t, g), (t + 4, g). Both read without bank conflicts. */
static __device__ __forceinline__ int frag_b(int k, int n, int K)
{
	return ((n >> 3) * (K >> 3) + (k >> 3)) * 64 + ((n & 7) * 4 + (k & 3)) * 2 + ((k >> 2) & 1);
}

/* the element (m, k) of the A fragments' float4 q (r its place in it) */
static __device__ __forceinline__ void frag_a_at(int q, int r, int K, int &m, int &k)
{
	int tile = q / 32, lane = q % 32;
	m = tile / (K / 8) * 16 + lane / 4 + 8 * (r & 1);
	k = tile % (K / 8) * 8 + lane % 4 + 4 * (r >> 1);
}

/* a warp's 32 x 16 product tile at (m0, n0), of q_i . k_j (IR: rows i,
 * columns j) or of k_j . q_i (rows j, columns i), as M_ij = e^{G_i - G_j}
 * q_i . k_j for j <= i, else 0, stored transposed: s[column ld + row] */
template <bool IR>
static __device__ __forceinline__ void decay_store_t(float *s, int ld, int m0, int n0, const float (&p)[2][2][4],
                                                     const float *sG)
{
#pragma unroll
	for (int mi = 0; mi < 2; mi++)
#pragma unroll
		for (int nj = 0; nj < 2; nj++)
#pragma unroll
			for (int r = 0; r < 4; r++) {
				int a = tc_row(m0, mi, r), b = tc_col(n0, nj, r), i = IR ? a : b, j = IR ? b : a;
				s[b * ld + a] = j <= i ? expf(sG[i] - sG[j]) * p[mi][nj][r] : 0.f;
			}
}

/* the sum of v over the block, in every thread; red: GDN_NT floats */
static __device__ float block_sum(float v, float *red)
{
	int t = threadIdx.x;
	red[t] = v;
	__syncthreads();
	for (int s = GDN_NT / 2; s > 0; s >>= 1) {
		if (t < s)
			red[t] += red[t + s];
		__syncthreads();
	}
	float r = red[0];
	__syncthreads();
	return r;
}

/* What each chunk kernel knows of its block: chunk c of (sequence b, head
 * h); n real rows; row i of a (B, T, H, D) input at x + (base + i H) D. */
struct GdnBlock {
	int c, bh, n;
	size_t base, bhc;
};

static __device__ GdnBlock gdn_block(int T, int H, int NC)
{
	GdnBlock k;
	k.c = blockIdx.x, k.bh = blockIdx.y;
	k.n = T - k.c * GDN_C < GDN_C ? T - k.c * GDN_C : GDN_C;
	k.base = ((size_t)(k.bh / H) * T + (size_t)k.c * GDN_C) * H + k.bh % H;
	k.bhc = (size_t)k.bh * NC + k.c;
	return k;
}

/* T = (I + A)^{-1} of a chunk's strictly lower A (rows C + 4 apart) into sT
 * (the same strides), in float32, in two steps: tri_diag, the 16 x 16
 * diagonal blocks by substitution, threads t < C a column each (no barrier:
 * the other threads may do other work meanwhile); then, after a barrier,
 * tri_merge, 16 -> 32 -> 64 by [[T1, 0], [A21, T2]]^{-1} = [[T1, 0], [-T2
 * A21 T1, T2]], A21 T1 parked in the block above the diagonal (zeros of T,
 * cleared last). tri_merge ends with a barrier. */
static __device__ void tri_diag(float *sT, const float *sA, int t)
{
	const int CA = GDN_C + 4;
	if (t < GDN_C) {
		int b = t & ~15;
		float y[16];
#pragma unroll
		for (int i = 0; i < 16; i++) {
			float s = b + i == t ? 1.f : 0.f;
#pragma unroll
			for (int j = 0; j < i; j++)
				s = fmaf(-sA[(b + i) * CA + b + j], y[j], s);
			y[i] = s;
		}
#pragma unroll
		for (int i = 0; i < 16; i++)
			sT[(b + i) * CA + t] = y[i];
	}
}

static __device__ void tri_merge(float *sT, const float *sA, int t)
{
	const int C = GDN_C, CA = C + 4;
	/* h = 16: two merges (p 0, 1), h = 32: one; P = A21 T1 at (o, o + h),
	 * then T21 = -T2 P at (o + h, o) */
	for (int h = 16; h < C; h *= 2) {
		int per = h * C / 2 / GDN_NT; /* outputs a thread: h h of each of C / 2 h merges */
		for (int e = t * per; e < t * per + per; e++) {
			int o = e / (h * h) * 2 * h, r = e % (h * h) / h, c = e % h;
			float s = 0.f;
			for (int k = c; k < h; k++) /* T1 lower triangular */
				s = fmaf(sA[(o + h + r) * CA + o + k], sT[(o + k) * CA + o + c], s);
			sT[(o + r) * CA + o + h + c] = s;
		}
		__syncthreads();
		for (int e = t * per; e < t * per + per; e++) {
			int o = e / (h * h) * 2 * h, r = e % (h * h) / h, c = e % h;
			float s = 0.f;
			for (int k = 0; k <= r; k++) /* T2 lower triangular */
				s = fmaf(sT[(o + h + r) * CA + o + h + k], sT[(o + k) * CA + o + h + c], s);
			sT[(o + h + r) * CA + o + c] = -s;
		}
		__syncthreads();
	}
	/* the parked products back to zeros: (0..32, 32..64), (0..16, 16..32), (32..48, 48..64) */
	for (int e = t; e < 1536; e += GDN_NT) {
		int r = e < 1024 ? e / 32 : e < 1280 ? (e - 1024) / 16 : 32 + (e - 1280) / 16;
		int c = e < 1024 ? 32 + e % 32 : e < 1280 ? 16 + e % 16 : 48 + e % 16;
		sT[r * CA + c] = 0.f;
	}
	__syncthreads();
}

// ----------------------------------------------------------------------------
// forward kernels (the backward recomputes the first two unless kept)

/* the TC chunk kernel's first region: V, then W */
static constexpr __host__ __device__ int chunk_r1(int DK, int DV)
{
	return DK + 4 > DV + 8 ? GDN_C * (DK + 4) : GDN_C * (DV + 8);
}

/* G, A and the WY factors of one chunk; in its backward form (BWD: the
 * backward's recomputation, or a forward that keeps its work for the
 * backward) also Ak, W and Kt^T. TC: K (rows padded by 8) and V by
 * cp.async, both asked for at once, K^T left out: Ak = K K^T on the tensor
 * cores in 1xTF32 from K's rows; the rows of A padded by 4 (CA = C + 4,
 * else C); [U | W] = T X, T = (I + A)^{-1} kept in Tm for bwy.
 * Shared memory: DK CP + DK C + C CA + 4 C floats (TC: chunk_r1 + C (DK +
 * 8) + 2 C CA + 5 C). */
template <int DK, int DV, bool BWD, bool TC>
__global__ void __launch_bounds__(GDN_NT, TC ? 2 : 0)
	gdn_chunk_kernel(GdnWork w, const float *k, const float *v, const float *g, const float *beta, int T, int H,
	                 int dk, int dv, int NC)
{
	const int C = GDN_C, t = threadIdx.x, CP = TC ? C + 8 : C, CA = TC ? C + 4 : C, LK = TC ? DK + 8 : DK;
	constexpr int R1 = TC ? chunk_r1(DK, DV) : DK * C;
	float *sKT = dyn_smem();   /* (DK, CP) K^T; TC: V (C, DV + 8), then W (C, DK + 4) */
	float *sK = sKT + R1;      /* (C, LK) */
	float *sA = sK + C * LK;   /* (C, CA) A = diag(beta) Ak */
	float *sT = sA + C * CA;   /* TC: (C, CA) T = (I + A)^{-1} */
	float *sG = sT + (TC ? C * CA : 0); /* (C) */
	float *sB = sG + C;        /* (C) beta */
	float *sE = sB + C;        /* (C) e^G */
	float *sL = sE + C;        /* (C) e^{G_last - G} */
	float *sF = sL + C;        /* TC: (C) beta e^G */
	GdnBlock bk = gdn_block(T, H, NC);
	int n = bk.n;
	const float *k0 = k + bk.base * dk;
	size_t rk = (size_t)H * dk;
	if (t < C) {
		sG[t] = t < n ? g[bk.base + (size_t)t * H] : 0.f;
		sB[t] = t < n ? beta[bk.base + (size_t)t * H] : 0.f;
	}
	if (TC) {
		/* K, then V into the first region (zeros past n, dk, dv) */
		stage_rows<C, DK>(sK, LK, k0, rk, n, dk);
		cp_async_commit();
		stage_rows<C, DV>(sKT, DV + 8, v + bk.base * dv, (size_t)H * dv, n, dv);
		cp_async_commit();
	} else {
		load_t<C, DK>(sKT, CP, k0, rk, n, dk, 1.f, nullptr);
		load_n<C, DK>(sK, LK, k0, rk, n, dk, 1.f, nullptr);
	}
	/* G: inclusive scan of g (Hillis-Steele) */
	for (int o = 1; o < C; o *= 2) {
		__syncthreads();
		float x = t < C && t >= o ? sG[t - o] : 0.f;
		__syncthreads();
		if (t < C)
			sG[t] += x;
	}
	if (TC)
		cp_async_wait<1>(); /* K */
	__syncthreads();
	if (t < C) {
		w.G[bk.bhc * C + t] = sG[t];
		sE[t] = expf(sG[t]);
		sL[t] = expf(sG[C - 1] - sG[t]);
		if (TC)
			sF[t] = sB[t] * sE[t];
	}
	/* Ak = e^{G_i - G_j} k_i . k_j below the diagonal; TC: warp w the rows
	 * 32 (w / 4), columns 16 (w % 4), else a 4x4 tile a thread */
	if (TC) {
		int warp = t / WARP_SIZE, m0 = warp / 4 * 32, n0 = warp % 4 * 16;
		float acc[2][2][4] = {};
		wmma_tf32<false, 2, 2, LK, 1, 1, LK>(acc, sK + m0 * LK, sK + n0 * LK, DK);
#pragma unroll
		for (int mi = 0; mi < 2; mi++)
#pragma unroll
			for (int nj = 0; nj < 2; nj++)
#pragma unroll
				for (int h = 0; h < 2; h++) {
					int i = tc_row(m0, mi, 2 * h), j = tc_col(n0, nj, 0), r = 2 * h;
					float a0 = j < i ? expf(sG[i] - sG[j]) * acc[mi][nj][r] : 0.f;
					float a1 = j + 1 < i ? expf(sG[i] - sG[j + 1]) * acc[mi][nj][r + 1] : 0.f;
					*(float2 *)(sA + i * CA + j) = make_float2(sB[i] * a0, sB[i] * a1);
					if (BWD)
						*(float2 *)(w.Ak + bk.bhc * C * C + i * C + j) = make_float2(a0, a1);
				}
	} else {
		int i0 = t / 16 * 4, j0 = t % 16 * 4;
		float acc[4][4];
		zero(acc);
		mm<4, 4>(acc, sKT, C, i0, 0, sKT, C, j0, 0, 0, DK);
#pragma unroll
		for (int x = 0; x < 4; x++)
#pragma unroll
			for (int y = 0; y < 4; y++) {
				int i = i0 + x, j = j0 + y;
				float ak = j < i ? expf(sG[i] - sG[j]) * acc[x][y] : 0.f;
				sA[i * C + j] = sB[i] * ak;
				if (BWD)
					w.Ak[bk.bhc * C * C + i * C + j] = ak;
			}
	}
	__syncthreads();
	if (TC) {
		float *sV = sKT;
		tri_diag(sT, sA, t);
		/* Kt as the A operand of the forward state pass's St update (DK x
		 * C), Kt^T as that of the backward's X (C x DK): fragment order,
		 * rounded to TF32 */
		for (int f = t; f < C * DK / 4; f += GDN_NT) {
			float ka[4], kb[4];
#pragma unroll
			for (int r = 0; r < 4; r++) {
				int m, kk;
				frag_a_at(f, r, C, m, kk); /* d, i */
				ka[r] = __uint_as_float(to_tf32(sL[kk] * sK[kk * LK + m]));
				frag_a_at(f, r, DK, m, kk); /* i, d */
				kb[r] = __uint_as_float(to_tf32(sL[m] * sK[m * LK + kk]));
			}
			*(float4 *)(w.Kt + bk.bhc * C * DK + 4 * f) = make_float4(ka[0], ka[1], ka[2], ka[3]);
			if (BWD)
				*(float4 *)(w.KtT + bk.bhc * DK * C + 4 * f) = make_float4(kb[0], kb[1], kb[2], kb[3]);
		}
		cp_async_wait<0>();
		__syncthreads();
		tri_merge(sT, sA, t);
		for (int f = t; f < C * C / 4; f += GDN_NT)
			*(float4 *)(w.Tm + bk.bhc * C * C + 4 * f) = *(const float4 *)(sT + f / (C / 4) * CA + f % (C / 4) * 4);
		/* [U | W] = T [diag(beta) V | diag(beta e^G) K] in 3xTF32 (float32's
		 * accuracy; wmma_tf32's sums, T's fragments split once for both):
		 * warp w the columns DV / 8 w.. of U and DK / 8 w.. of W, all rows */
		const int warp = t / WARP_SIZE, g = t % WARP_SIZE / 4, tq = t % 4, cu = warp * DV / 8, cw = warp * DK / 8;
		constexpr int NU = DV / 64, NW = DK / 64;
		float au[4][NU][4] = {}, aw[4][NW][4] = {};
#pragma unroll 2
		for (int ks = 0; ks < C; ks += 8) {
			unsigned bh[NU + NW][2], bl[NU + NW][2];
#pragma unroll
			for (int r = 0; r < 2; r++) {
				int i = ks + tq + 4 * r;
#pragma unroll
				for (int j = 0; j < NU; j++)
					split_tf32(sV[i * (DV + 8) + cu + 8 * j + g] * sB[i], bh[j][r], bl[j][r]);
#pragma unroll
				for (int j = 0; j < NW; j++)
					split_tf32(sK[i * LK + cw + 8 * j + g] * sF[i], bh[NU + j][r], bl[NU + j][r]);
			}
#pragma unroll
			for (int m = 0; m < 4; m++) {
				unsigned ah[4], al[4];
#pragma unroll
				for (int r = 0; r < 4; r++)
					split_tf32(sT[(16 * m + g + 8 * (r & 1)) * CA + ks + tq + 4 * (r >> 1)], ah[r], al[r]);
#pragma unroll
				for (int j = 0; j < NU; j++) {
					mma_tf32(au[m][j], al, bh[j]);
					mma_tf32(au[m][j], ah, bl[j]);
					mma_tf32(au[m][j], ah, bh[j]);
				}
#pragma unroll
				for (int j = 0; j < NW; j++) {
					mma_tf32(aw[m][j], al, bh[NU + j]);
					mma_tf32(aw[m][j], ah, bl[NU + j]);
					mma_tf32(aw[m][j], ah, bh[NU + j]);
				}
			}
		}
		tc_store<4, NU>(w.U + bk.bhc * C * DV, DV, 0, cu, au, 1.f);
		__syncthreads();
		tc_store<4, NW>(sKT, DK + 4, 0, cw, aw, 1.f); /* W into V's place */
	}
	/* [U | W] by forward substitution, a thread per column: y_i = x_i -
	 * sum_{j<i} A_ij y_j; A_ij = 0 for j >= i, so whole float4s of A's row
	 * can be used (the y_j there still hold x_j, finite). Four partial sums
	 * a row keep four FMA chains in flight. */
	if (!TC && t < DV + DK) {
		float y[C];
		int d = t - DV;
#pragma unroll
		for (int i = 0; i < C; i++) {
			if (t < DV)
				y[i] = t < dv && i < n ? sB[i] * v[(bk.base + (size_t)i * H) * dv + t] : 0.f;
			else
				y[i] = sB[i] * sE[i] * sK[i * DK + d];
		}
#pragma unroll
		for (int i = 1; i < C; i++) {
			float s0 = y[i], s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma unroll
			for (int j = 0; j < i; j += 4) {
				float4 a = *(const float4 *)(sA + i * CA + j);
				s0 = fmaf(-a.x, y[j], s0);
				s1 = fmaf(-a.y, y[j + 1], s1);
				s2 = fmaf(-a.z, y[j + 2], s2);
				s3 = fmaf(-a.w, y[j + 3], s3);
			}
			y[i] = (s0 + s1) + (s2 + s3);
		}
		if (t < DV) {
			float *u = w.U + bk.bhc * C * DV + t;
#pragma unroll
			for (int i = 0; i < C; i++)
				u[i * DV] = y[i];
		} else {
			float *wt = w.WT + (bk.bhc * DK + d) * C;
#pragma unroll
			for (int i = 0; i < C; i += 4)
				*(float4 *)(wt + i) = make_float4(y[i], y[i + 1], y[i + 2], y[i + 3]);
			if (BWD) {
				float *wn = w.W + bk.bhc * C * DK + d;
#pragma unroll
				for (int i = 0; i < C; i++)
					wn[i * DK] = y[i];
			}
		}
	}
	if (TC) {
		/* W^T as the A operand of the forward state pass's X (C x DK),
		 * rounded to TF32, and W as that of the backward's St update (DK x
		 * C), not rounded (bwy reads it): fragment order, from W's rows in
		 * K^T's place (DK + 4 apart) */
		const float *sW = sKT;
		__syncthreads();
		for (int f = t; f < C * DK / 4; f += GDN_NT) {
			float wa[4], wb[4];
#pragma unroll
			for (int r = 0; r < 4; r++) {
				int m, kk;
				frag_a_at(f, r, DK, m, kk); /* i, d */
				wa[r] = __uint_as_float(to_tf32(sW[m * (DK + 4) + kk]));
				frag_a_at(f, r, C, m, kk); /* d, i */
				wb[r] = sW[kk * (DK + 4) + m];
			}
			*(float4 *)(w.WT + bk.bhc * DK * C + 4 * f) = make_float4(wa[0], wa[1], wa[2], wa[3]);
			if (BWD)
				*(float4 *)(w.W + bk.bhc * C * DK + 4 * f) = make_float4(wb[0], wb[1], wb[2], wb[3]);
		}
	} else {
		/* Kt (and its transpose) */
		for (int idx = t; idx < C * DK; idx += GDN_NT) {
			int i = idx / DK, d = idx % DK;
			w.Kt[bk.bhc * C * DK + idx] = sL[i] * sK[i * DK + d];
			if (BWD) {
				int d2 = idx / C, i2 = idx % C;
				w.KtT[bk.bhc * DK * C + idx] = sL[i2] * sKT[d2 * CP + i2];
			}
		}
	}
}

/* The state passes' copies of chunk bhc into the buffer b (shared): A1
 * (DK C floats), A2 (C DK; neither when A1 is NULL: the bulk copies of
 * gdn_state_tc_kernel bring them), the SV columns js.. of Xa (C, SV) and
 * of Sa (DK, SV; when given) and G (C), one after another, by cp.async in
 * one commit group */
template <int DK, int SV>
__device__ __forceinline__ void state_prefetch(float *b, const float *A1, const float *A2, const float *Xa,
                                               const float *Sa, const float *G, size_t bhc, int js, int DV, int t)
{
	const int C = GDN_C;
	if (A1) {
		const float *a1 = A1 + bhc * DK * C, *a2 = A2 + bhc * C * DK;
		for (int i = t * 4; i < DK * C; i += GDN_NT * 4) {
			cp_async16(b + i, a1 + i);
			cp_async16(b + DK * C + i, a2 + i);
		}
	}
	float *bx = b + 2 * DK * C;
	const float *xa = Xa + bhc * C * DV + js;
	for (int i = t; i < C * SV / 4; i += GDN_NT)
		cp_async16(bx + i * 4, xa + (size_t)(i / (SV / 4)) * DV + i % (SV / 4) * 4);
	if (Sa) {
		const float *sa = Sa + bhc * DK * DV + js;
		for (int i = t; i < DK * SV / 4; i += GDN_NT)
			cp_async16(bx + C * SV + i * 4, sa + (size_t)(i / (SV / 4)) * DV + i % (SV / 4) * 4);
	}
	if (t < C / 4)
		cp_async16(bx + C * SV + DK * SV + t * 4, G + bhc * C + t * 4);
	cp_async_commit();
}

/* The state pass, sequential over the chunks, a block per (sequence, head,
 * GDN_SV value columns js): from the carried state St (DK, SV), chunk c:
 *   Sst[c] = St
 *   X      = Xa[c] + s1 A1[c]^T St          (C, SV);  Xo[c] = X
 *   St     = e^{G_last} St + Sa[c] + s2 A2[c]^T X
 * with A1 (DK, C) and A2 (C, DK) per chunk. The forward: A1 = W^T, A2 = Kt,
 * Xa = U, s1 = -1, s2 = 1, Sa none: Sst the start states, Xo = Wn. The
 * backward (REV, the chunks last to first): A1 = Kt^T, A2 = W, Xa = Pm,
 * Sa = Hq, s1 = 1, s2 = -1: St is dS', Xo = dWn. Sin (B H, dk, dv) the
 * first St, or NULL for zeros; Sout the last, or NULL. The products in
 * float32 on the CUDA cores; gdn_state_tc_kernel below is the tensor cores'
 * form (the search's path: the keep/kept calls with tf32). */
template <int DK, bool REV>
__global__ void __launch_bounds__(GDN_NT)
	gdn_state_kernel(const float *A1, const float *A2, const float *Xa, const float *Sa, const float *G, float *Xo,
	                 float *Sst, const float *Sin, float *Sout, float s1, float s2, int DV, int NC, int dk, int dv)
{
	const int C = GDN_C, SV = GDN_SV, t = threadIdx.x;
	float *sS = dyn_smem();    /* (DK, SV) */
	float *sX = sS + DK * SV;  /* (C, SV) */
	float *sbuf = sX + C * SV; /* two buffers of A1 (DK, C), A2 (C, DK), Xa (C, SV), Sa (DK, SV), G (C) */
	const int NB = DK * C + C * DK + C * SV + DK * SV + C;
	int js = blockIdx.x * SV, bh = blockIdx.y;
	for (int idx = t; idx < DK * SV; idx += GDN_NT) {
		int d = idx / SV, j = js + idx % SV;
		sS[d * SV + idx % SV] = Sin && d < dk && j < dv ? Sin[((size_t)bh * dk + d) * dv + j] : 0.f;
	}
	auto prefetch = [&](int c, int p) {
		state_prefetch<DK, SV>(sbuf + p * NB, A1, A2, Xa, Sa, G, (size_t)bh * NC + c, js, DV, t);
	};
	prefetch(REV ? NC - 1 : 0, 0);
	__syncthreads();
	for (int it = 0; it < NC; it++) {
		int c = REV ? NC - 1 - it : it, p = it & 1;
		size_t bhc = (size_t)bh * NC + c;
		if (it + 1 < NC)
			prefetch(REV ? c - 1 : c + 1, p ^ 1);
		float *sst = Sst + bhc * DK * DV + js;
		for (int i = t; i < DK * SV / 4; i += GDN_NT)
			*(float4 *)(sst + (size_t)(i / (SV / 4)) * DV + i % (SV / 4) * 4) =
				*(const float4 *)(sS + i / (SV / 4) * SV + i % (SV / 4) * 4);
		if (it + 1 < NC)
			cp_async_wait<1>();
		else
			cp_async_wait<0>();
		__syncthreads();
		const float *sA1 = sbuf + p * NB, *sA2 = sA1 + DK * C, *sXa = sA2 + C * DK, *sSa = sXa + C * SV;
		float *xo = Xo + bhc * C * DV + js;
		{
			/* X: each half of the block sums half of the d, a 4x2 tile a
			 * thread (half the shared-memory traffic of a 4x1 tile over
			 * all d); the second half leaves its sums in sX for the first */
			int hk = t / (GDN_NT / 2), tt = t % (GDN_NT / 2), i0 = tt / (SV / 2) * 4, j0 = tt % (SV / 2) * 2;
			float acc[4][2];
			zero(acc);
			mm<4, 2>(acc, sA1, C, i0, 0, sS, SV, j0, 0, hk * DK / 2, (hk + 1) * DK / 2);
			if (hk)
#pragma unroll
				for (int x = 0; x < 4; x++)
					*(float2 *)(sX + (i0 + x) * SV + j0) = make_float2(acc[x][0], acc[x][1]);
			__syncthreads();
			if (!hk)
#pragma unroll
				for (int x = 0; x < 4; x++)
#pragma unroll
					for (int y = 0; y < 2; y++) {
						int i = i0 + x, j = j0 + y;
						float val = sXa[i * SV + j] + s1 * (acc[x][y] + sX[i * SV + j]);
						sX[i * SV + j] = val;
						xo[(size_t)i * DV + j] = val;
					}
		}
		__syncthreads();
		/* St = e^{G_last} St + Sa + s2 A2^T X */
		float a = expf(sA1[NB - 1]);
		{ /* a 4xTN tile a thread */
			constexpr int TN = DK / 64, CT = SV / TN;
			int d0 = t / CT * 4, j0 = t % CT * TN;
			float acc[4][TN];
			zero(acc);
			mm<4, TN>(acc, sA2, DK, d0, 0, sX, SV, j0, 0, 0, C);
#pragma unroll
			for (int x = 0; x < 4; x++)
#pragma unroll
				for (int y = 0; y < TN; y++) {
					int idx = (d0 + x) * SV + j0 + y;
					sS[idx] = a * sS[idx] + (Sa ? sSa[idx] : 0.f) + s2 * acc[x][y];
				}
		}
		__syncthreads();
	}
	if (Sout)
		for (int idx = t; idx < DK * SV; idx += GDN_NT) {
			int d = idx / SV, j = js + idx % SV;
			if (d < dk && j < dv)
				Sout[((size_t)bh * dk + d) * dv + j] = sS[d * SV + idx % SV];
		}
}

/* The state pass on the tensor cores in 1xTF32 (the keep/kept calls with
 * tf32): gdn_state_kernel's recurrence, a block per (sequence, head, SV
 * value columns), A1 and A2 in fragment order (the chunk kernel's TC form
 * writes them so: A1 as the A operand of X (C x DK), A2 as that of St's
 * update (DK x C), both rounded to TF32 but A2 unless A2R), so that a lane
 * reads a fragment with one 128-bit shared load and converts nothing. The
 * carried St stays float32 in registers (a thread always holds the same
 * elements of it); shared memory holds St and X only as TF32 B fragments,
 * written once by the thread that makes them. Warp w: X's rows 16 (w % 4),
 * St's rows 16 WM (w % 4), both the columns SV / 2 (w / 4). Two barriers a
 * chunk: the next chunk's copies start after the first, into the buffer the
 * chunk before used.
 * BULK (sm_90): A1 and A2, 64 KB a chunk at DK 128, come by two bulk
 * copies that thread 0 starts (the copy engine's work, completing on an
 * mbarrier) instead of 16 cp.async a thread, in a pass whose 8 warps an SM
 * wait mostly on the shared-memory pipe (ncu: an instruction every 7.5
 * cycles a warp, short-scoreboard stalls first). The same bits. */
template <int DK, int SV, bool REV, bool A2R, bool BULK>
__global__ void __launch_bounds__(GDN_NT)
	gdn_state_tc_kernel(const float *A1, const float *A2, const float *Xa, const float *Sa, const float *G,
	                    float *Xo, float *Sst, const float *Sin, float *Sout, float s1, float s2, int DV, int NC,
	                    int dk, int dv)
{
	constexpr int C = GDN_C, WM = DK / 64, NJ = SV / 16, NB = 2 * DK * C + C * SV + DK * SV + C;
	const int t = threadIdx.x, lane = t % WARP_SIZE, warp = t / WARP_SIZE, g = lane / 4;
	const int mw = warp % 4, nw = warp / 4, jc = nw * (SV / 2) + 2 * (lane % 4);
	float *sSf = dyn_smem();    /* (DK, SV) St, B fragments */
	float *sXf = sSf + DK * SV; /* (C, SV) X, B fragments */
	float *sbuf = sXf + C * SV; /* two buffers of A1 (DK C), A2 (C DK), Xa (C, SV), Sa (DK, SV), G (C) */
	int js = blockIdx.x * SV, bh = blockIdx.y;
	/* BULK: full + 8 p, buffer p's A1 and A2 are in (thread 0's arrival
	 * expecting their bytes, then the bytes). Chunk it goes to buffer it %
	 * 2; its phases have the parity (it / 2) % 2. */
#ifndef DASH_HAVE_BULK
	if (BULK)
		__trap(); /* built without sm_90: gdn_state never launches it */
#else
	const uint32_t full = smem_addr(sbuf + 2 * NB);
	if (BULK && t == 0) {
		mbar_init(full, 1), mbar_init(full + 8, 1);
		mbar_init_fence();
	}
	/* BULK, thread 0: chunk c's A1 and A2 into buffer p */
	auto bulk = [&](int c, int p) {
		const unsigned AB = DK * C * sizeof(float);
		size_t bhc = (size_t)bh * NC + c;
		float *b = sbuf + p * NB;
		mbar_arrive_tx(full + 8 * p, 2 * AB);
		bulk_copy(smem_addr(b), A1 + bhc * DK * C, AB, full + 8 * p);
		bulk_copy(smem_addr(b + DK * C), A2 + bhc * C * DK, AB, full + 8 * p);
	};
#endif
	/* st[mi][nj][r]: St's row srow(mi, r), column jc + 8 nj + r % 2 */
	float st[WM][NJ][4];
	auto srow = [&](int mi, int r) { return (mw * WM + mi) * 16 + g + 8 * (r >> 1); };
#pragma unroll
	for (int mi = 0; mi < WM; mi++)
#pragma unroll
		for (int nj = 0; nj < NJ; nj++)
#pragma unroll
			for (int r = 0; r < 4; r++) {
				int d = srow(mi, r), j = js + jc + 8 * nj + (r & 1);
				st[mi][nj][r] = Sin && d < dk && j < dv ? Sin[((size_t)bh * dk + d) * dv + j] : 0.f;
			}
	auto put_st = [&]() {
#pragma unroll
		for (int mi = 0; mi < WM; mi++)
#pragma unroll
			for (int nj = 0; nj < NJ; nj++)
#pragma unroll
				for (int r = 0; r < 4; r++)
					sSf[frag_b(srow(mi, r), jc + 8 * nj + (r & 1), DK)] = __uint_as_float(to_tf32(st[mi][nj][r]));
	};
	put_st();
	auto prefetch = [&](int c, int p) {
		state_prefetch<DK, SV>(sbuf + p * NB, BULK ? nullptr : A1, A2, Xa, Sa, G, (size_t)bh * NC + c, js, DV,
		                       t);
	};
	prefetch(REV ? NC - 1 : 0, 0);
#ifdef DASH_HAVE_BULK
	if (BULK) {
		__syncthreads(); /* the barriers' inits */
		if (t == 0)
			bulk(REV ? NC - 1 : 0, 0);
	}
#endif
	for (int it = 0; it < NC; it++) {
		int c = REV ? NC - 1 - it : it, p = it & 1;
		size_t bhc = (size_t)bh * NC + c;
		float *sst = Sst + bhc * DK * DV + js + jc;
#pragma unroll
		for (int mi = 0; mi < WM; mi++)
#pragma unroll
			for (int nj = 0; nj < NJ; nj++)
#pragma unroll
				for (int h = 0; h < 2; h++)
					*(float2 *)(sst + (size_t)srow(mi, 2 * h) * DV + 8 * nj) =
						make_float2(st[mi][nj][2 * h], st[mi][nj][2 * h + 1]);
		cp_async_wait<0>();
#ifdef DASH_HAVE_BULK
		if (BULK)
			mbar_wait(full + 8 * p, it >> 1);
#endif
		__syncthreads();
		if (it + 1 < NC) {
			prefetch(REV ? c - 1 : c + 1, p ^ 1);
#ifdef DASH_HAVE_BULK
			if (BULK && t == 0) /* buffer p ^ 1 held chunk it - 1, done with (the barrier above) */
				bulk(REV ? c - 1 : c + 1, p ^ 1);
#endif
		}
		const float *sA1 = sbuf + p * NB, *sA2 = sA1 + DK * C, *sXa = sA2 + C * DK, *sSa = sXa + C * SV;
		{ /* X = Xa + s1 A1^T St, the k-steps in NA chains */
			constexpr int NK = DK / 8, NA = 4 / NJ;
			float acc[NA][NJ][4] = {};
			const float4 *a = (const float4 *)sA1 + mw * NK * 32 + lane;
			const float2 *b = (const float2 *)sSf + nw * NJ * NK * 32 + lane;
#pragma unroll
			for (int ks = 0; ks < NK; ks++) {
				float4 av = a[ks * 32];
				unsigned af[4] = {__float_as_uint(av.x), __float_as_uint(av.y), __float_as_uint(av.z),
				                  __float_as_uint(av.w)};
#pragma unroll
				for (int nj = 0; nj < NJ; nj++) {
					float2 bv = b[(nj * NK + ks) * 32];
					unsigned bf[2] = {__float_as_uint(bv.x), __float_as_uint(bv.y)};
					mma_tf32(acc[ks % NA][nj], af, bf);
				}
			}
			float *xo = Xo + bhc * C * DV + js + jc;
#pragma unroll
			for (int nj = 0; nj < NJ; nj++)
#pragma unroll
				for (int h = 0; h < 2; h++) {
					int i = mw * 16 + g + 8 * h, j = jc + 8 * nj;
					float p0 = 0.f, p1 = 0.f;
#pragma unroll
					for (int u = 0; u < NA; u++)
						p0 += acc[u][nj][2 * h], p1 += acc[u][nj][2 * h + 1];
					float2 xa = *(const float2 *)(sXa + i * SV + j);
					float x0 = xa.x + s1 * p0, x1 = xa.y + s1 * p1;
					*(float2 *)(xo + (size_t)i * DV + 8 * nj) = make_float2(x0, x1);
					sXf[frag_b(i, j, C)] = __uint_as_float(to_tf32(x0));
					sXf[frag_b(i, j + 1, C)] = __uint_as_float(to_tf32(x1));
				}
		}
		__syncthreads();
		{ /* St = e^{G_last} St + Sa + s2 A2^T X, the k-steps in NA chains */
			constexpr int NK = C / 8, NA = 2 / NJ;
			float acc[NA][WM][NJ][4] = {};
			const float4 *a = (const float4 *)sA2 + mw * WM * NK * 32 + lane;
			const float2 *b = (const float2 *)sXf + nw * NJ * NK * 32 + lane;
#pragma unroll
			for (int ks = 0; ks < NK; ks++) {
				unsigned bf[NJ][2];
#pragma unroll
				for (int nj = 0; nj < NJ; nj++) {
					float2 bv = b[(nj * NK + ks) * 32];
					bf[nj][0] = __float_as_uint(bv.x), bf[nj][1] = __float_as_uint(bv.y);
				}
#pragma unroll
				for (int mi = 0; mi < WM; mi++) {
					float4 av = a[(mi * NK + ks) * 32];
					unsigned af[4];
					if (A2R)
						af[0] = __float_as_uint(av.x), af[1] = __float_as_uint(av.y),
						af[2] = __float_as_uint(av.z), af[3] = __float_as_uint(av.w);
					else
						af[0] = to_tf32(av.x), af[1] = to_tf32(av.y), af[2] = to_tf32(av.z),
						af[3] = to_tf32(av.w);
#pragma unroll
					for (int nj = 0; nj < NJ; nj++)
						mma_tf32(acc[ks % NA][mi][nj], af, bf[nj]);
				}
			}
			float e = expf(sA1[NB - 1]);
#pragma unroll
			for (int mi = 0; mi < WM; mi++)
#pragma unroll
				for (int nj = 0; nj < NJ; nj++)
#pragma unroll
					for (int r = 0; r < 4; r++) {
						int d = srow(mi, r), j = jc + 8 * nj + (r & 1);
						float sum = 0.f;
#pragma unroll
						for (int u = 0; u < NA; u++)
							sum += acc[u][mi][nj][r];
						st[mi][nj][r] = e * st[mi][nj][r] + (Sa ? sSa[d * SV + j] : 0.f) + s2 * sum;
					}
			put_st();
		}
	}
	if (Sout)
#pragma unroll
		for (int mi = 0; mi < WM; mi++)
#pragma unroll
			for (int nj = 0; nj < NJ; nj++)
#pragma unroll
				for (int r = 0; r < 4; r++) {
					int d = srow(mi, r), j = js + jc + 8 * nj + (r & 1);
					if (d < dk && j < dv)
						Sout[((size_t)bh * dk + d) * dv + j] = st[mi][nj][r];
				}
}

/* O = scale (diag(e^G) Q S_c + M Wn), M_ij = e^{G_i - G_j} q_i . k_j for j <= i.
 * Shared memory: DK C + C C + 2 C + max(DK C, C DV) floats: K^T, then S_c
 * half by half, then Wn take turns in the last part, so that two blocks fit
 * an SM. float32; the tf32 form is gdn_output_tc_kernel. */
template <int DK, int DV>
__global__ void __launch_bounds__(GDN_NT)
	gdn_output_kernel(float *o, GdnWork w, const float *q, const float *k, int T, int H, int dk, int dv, int NC,
	                  float scale)
{
	const int C = GDN_C, t = threadIdx.x;
	float *sQT = dyn_smem();   /* (DK, C) */
	float *sMT = sQT + DK * C; /* (C, C) M^T */
	float *sG = sMT + C * C;   /* (C) */
	float *sE = sG + C;        /* (C) e^G */
	float *sKT = sE + C;       /* (DK, C), then S_c rows (DK / 2, DV), then Wn (C, DV) */
	float *sS = sKT, *sWn = sKT;
	GdnBlock bk = gdn_block(T, H, NC);
	load_t<C, DK>(sQT, C, q + bk.base * dk, (size_t)H * dk, bk.n, dk, 1.f, nullptr);
	load_t<C, DK>(sKT, C, k + bk.base * dk, (size_t)H * dk, bk.n, dk, 1.f, nullptr);
	if (t < C) {
		sG[t] = w.G[bk.bhc * C + t];
		sE[t] = expf(sG[t]);
	}
	__syncthreads();
	int i0 = t / 16 * 4, jb = t % 16 * 4;
	{
		float acc[4][4];
		zero(acc);
		mm<4, 4>(acc, sQT, C, i0, 0, sKT, C, jb, 0, 0, DK);
#pragma unroll
		for (int y = 0; y < 4; y++) {
			int j = jb + y;
			float m[4];
#pragma unroll
			for (int x = 0; x < 4; x++)
				m[x] = j <= i0 + x ? expf(sG[i0 + x] - sG[j]) * acc[x][y] : 0.f;
			*(float4 *)(sMT + j * C + i0) = make_float4(m[0], m[1], m[2], m[3]);
		}
	}
	constexpr int TN = DV / 16;
	float acc[4][TN];
	zero(acc);
	for (int h = 0; h < 2; h++) {
		__syncthreads();
		copy_s(sS, w.S + (bk.bhc * DK + h * DK / 2) * DV, DK / 2 * DV);
		__syncthreads();
		mm<4, TN>(acc, sQT + h * DK / 2 * C, C, i0, 0, sS, DV, jb, 64, 0, DK / 2);
	}
#pragma unroll
	for (int x = 0; x < 4; x++)
#pragma unroll
		for (int y = 0; y < TN; y++)
			acc[x][y] *= sE[i0 + x];
	__syncthreads();
	copy_s(sWn, w.Wn + bk.bhc * C * DV, C * DV);
	__syncthreads();
	mm<4, TN>(acc, sMT, C, i0, 0, sWn, DV, jb, 64, 0, i0 + 4);
#pragma unroll
	for (int x = 0; x < 4; x++)
#pragma unroll
		for (int y = 0; y < TN; y++) {
			int i = i0 + x, j = frag<TN>(jb, 64, y);
			if (i < bk.n && j < dv)
				o[(bk.base + (size_t)i * H) * dv + j] = scale * acc[x][y];
		}
}

/* gdn_output_kernel's TC form: Q and K (rows DK + 4 apart) by cp.async,
 * untransposed, then S_c and Wn in slices of 32 rows (DV + 8 apart) through
 * two stages, the first two asked for with Q and K; M^T (rows C + 8 apart)
 * in K's place once M is made. Shared memory: C max(DK + 4, C + 8) + C (DK
 * + 4) + 64 (DV + 8) + 2 C floats. */
template <int DK, int DV>
__global__ void __launch_bounds__(GDN_NT, 2)
	gdn_output_tc_kernel(float *o, GdnWork w, const float *q, const float *k, int T, int H, int dk, int dv, int NC,
	                     float scale)
{
	constexpr int C = GDN_C, LK = DK + 4, CP = C + 8, L = DV + 8, NS = DK / 32, WN = DV / 32;
	constexpr int R2 = C * (LK > CP ? LK : CP);
	const int t = threadIdx.x, warp = t / WARP_SIZE, m0 = warp / 4 * 32, c0 = warp % 4 * (DV / 4);
	float *sQ = dyn_smem();      /* (C, LK) */
	float *sK = sQ + C * LK;     /* (C, LK), then M^T (C, CP) */
	float *sMT = sK;
	float *sb = sK + R2;         /* 2 stages (32, L): rows of S_c, then of Wn */
	float *sG = sb + 2 * 32 * L; /* (C) */
	float *sE = sG + C;          /* (C) e^G */
	GdnBlock bk = gdn_block(T, H, NC);
	/* slice s: the rows 32 s of S_c (s < NS), then of Wn; none past NS + 2 (an empty group) */
	auto issue = [&](int s) {
		float *b = sb + s % 2 * 32 * L;
		if (s < NS)
			stage_rows<32, DV>(b, L, w.S + (bk.bhc * DK + s * 32) * DV, DV, 32, DV);
		else if (s < NS + 2)
			stage_rows<32, DV>(b, L, w.Wn + (bk.bhc * C + (s - NS) * 32) * DV, DV, 32, DV);
		cp_async_commit();
	};
	stage_rows<C, DK>(sQ, LK, q + bk.base * dk, (size_t)H * dk, bk.n, dk);
	stage_rows<C, DK>(sK, LK, k + bk.base * dk, (size_t)H * dk, bk.n, dk);
	cp_async_commit();
	issue(0);
	issue(1);
	if (t < C) {
		sG[t] = w.G[bk.bhc * C + t];
		sE[t] = expf(sG[t]);
	}
	cp_async_wait<2>();
	__syncthreads();
	{
		/* M: warp w the rows 32 (w / 4), columns 16 (w % 4), into M^T once
		 * every warp is done with K */
		int n0 = warp % 4 * 16;
		float mq[2][2][4] = {};
		wmma_tf32<false, 2, 2, LK, 1, 1, LK>(mq, sQ + m0 * LK, sK + n0 * LK, DK);
		__syncthreads();
		decay_store_t<true>(sMT, CP, m0, n0, mq, sG);
	}
	/* O: warp w the rows 32 (w / 4), columns DV / 4 (w % 4); diag(e^G) Q S_c
	 * over the first NS slices, then M Wn (M_ij = 0 for j > i) */
	float acc[2][WN][4] = {};
	for (int s = 0; s < NS + 2; s++) {
		cp_async_wait<1>();
		__syncthreads();
		const float *b = sb + s % 2 * 32 * L;
		if (s < NS)
			wmma_tf32<false, 2, WN, LK, 1, L, 1>(acc, sQ + m0 * LK + s * 32, b + c0, 32);
		else if ((s - NS) * 32 < m0 + 32)
			wmma_tf32<false, 2, WN, 1, CP, L, 1>(acc, sMT + (s - NS) * 32 * CP + m0, b + c0, 32);
		if (s == NS - 1) {
#pragma unroll
			for (int mi = 0; mi < 2; mi++)
#pragma unroll
				for (int nj = 0; nj < WN; nj++)
#pragma unroll
					for (int r = 0; r < 4; r++)
						acc[mi][nj][r] *= sE[tc_row(m0, mi, r)];
		}
		__syncthreads();
		issue(s + 2);
	}
	/* by float2 where dv and o allow */
	bool v2 = (dv & 1) == 0 && ((size_t)o & 7) == 0;
#pragma unroll
	for (int mi = 0; mi < 2; mi++)
#pragma unroll
		for (int nj = 0; nj < WN; nj++)
#pragma unroll
			for (int h = 0; h < 2; h++) {
				int i = tc_row(m0, mi, 2 * h), j = tc_col(c0, nj, 0);
				float *y = o + (bk.base + (size_t)i * H) * dv + j;
				float v0 = scale * acc[mi][nj][2 * h], v1 = scale * acc[mi][nj][2 * h + 1];
				if (i >= bk.n || j >= dv)
					continue;
				if (v2) {
					*(float2 *)y = make_float2(v0, v1);
				} else {
					y[0] = v0;
					if (j + 1 < dv)
						y[1] = v1;
				}
			}
}

// ----------------------------------------------------------------------------
// backward kernels

/* Pm = scale M^T dO (C, DV) and Hq = scale Q^T diag(e^G) dO (DK, DV).
 * Shared memory: 2 DK C + C C + C DV + 2 C floats. float32; the tf32 form
 * is gdn_bprep_tc_kernel. */
template <int DK, int DV>
__global__ void __launch_bounds__(GDN_NT)
	gdn_bprep_kernel(GdnWork w, const float *q, const float *k, const float *dout, int T, int H, int dk, int dv,
	                 int NC, float scale)
{
	const int C = GDN_C, t = threadIdx.x;
	float *sQT = dyn_smem();   /* (DK, C) */
	float *sKT = sQT + DK * C; /* (DK, C), then Q diag(e^G) (C, DK) */
	float *sQg = sKT;
	float *sM = sKT + DK * C;  /* (C, C) */
	float *sdO = sM + C * C;   /* (C, DV) */
	float *sG = sdO + C * DV;  /* (C) */
	float *sE = sG + C;        /* (C) */
	GdnBlock bk = gdn_block(T, H, NC);
	const float *q0 = q + bk.base * dk;
	load_t<C, DK>(sQT, C, q0, (size_t)H * dk, bk.n, dk, 1.f, nullptr);
	load_t<C, DK>(sKT, C, k + bk.base * dk, (size_t)H * dk, bk.n, dk, 1.f, nullptr);
	load_n<C, DV>(sdO, DV, dout + bk.base * dv, (size_t)H * dv, bk.n, dv, 1.f, nullptr);
	if (t < C) {
		sG[t] = w.G[bk.bhc * C + t];
		sE[t] = expf(sG[t]);
	}
	__syncthreads();
	int r0 = t / 16 * 4, cb = t % 16 * 4;
	{
		float acc[4][4];
		zero(acc);
		mm<4, 4>(acc, sQT, C, r0, 0, sKT, C, cb, 0, 0, DK);
#pragma unroll
		for (int x = 0; x < 4; x++) {
			int i = r0 + x;
			float m[4];
#pragma unroll
			for (int y = 0; y < 4; y++)
				m[y] = cb + y <= i ? expf(sG[i] - sG[cb + y]) * acc[x][y] : 0.f;
			*(float4 *)(sM + i * C + cb) = make_float4(m[0], m[1], m[2], m[3]);
		}
	}
	__syncthreads();
	load_n<C, DK>(sQg, DK, q0, (size_t)H * dk, bk.n, dk, 1.f, sE);
	__syncthreads();
	{
		constexpr int TN = DV / 16;
		float acc[4][TN];
		zero(acc);
		mm<4, TN>(acc, sM, C, r0, 0, sdO, DV, cb, 64, r0, C); /* M_ij = 0 for i < j */
		float *pm = w.Pm + bk.bhc * C * DV;
#pragma unroll
		for (int x = 0; x < 4; x++)
#pragma unroll
			for (int y = 0; y < TN; y++)
				pm[(r0 + x) * DV + frag<TN>(cb, 64, y)] = scale * acc[x][y];
	}
	{
		constexpr int TM = DK / 16, TN = DV / 16;
		float acc[TM][TN];
		zero(acc);
		mm<TM, TN>(acc, sQg, DK, r0, 64, sdO, DV, cb, 64, 0, C);
		float *hq = w.Hq + bk.bhc * DK * DV;
#pragma unroll
		for (int x = 0; x < TM; x++)
#pragma unroll
			for (int y = 0; y < TN; y++)
				hq[frag<TM>(r0, 64, x) * DV + frag<TN>(cb, 64, y)] = scale * acc[x][y];
	}
}

/* gdn_bprep_kernel's TC form: Q (rows DK + 8 apart: its columns are read
 * for Hq), K (rows DK + 4 apart) and dO (rows DV + 8 apart) by cp.async,
 * untransposed, all asked for at once; M^T = K Q^T on the tensor cores, M
 * (rows C + 8 apart) into K's place; e^G applied to dO's rows as Hq's
 * fragments are read. Shared memory: C (DK + 8) + C max(DK + 4, C + 8) + C
 * (DV + 8) + 2 C floats. */
template <int DK, int DV>
__global__ void __launch_bounds__(GDN_NT, 2)
	gdn_bprep_tc_kernel(GdnWork w, const float *q, const float *k, const float *dout, int T, int H, int dk, int dv,
	                    int NC, float scale)
{
	constexpr int C = GDN_C, LQ = DK + 8, LK = DK + 4, CP = C + 8, L = DV + 8, WM = DK / 32, WN = DV / 32;
	constexpr int R2 = C * (LK > CP ? LK : CP);
	const int t = threadIdx.x, warp = t / WARP_SIZE, m0 = warp / 4 * 32, c0 = warp % 4 * (DV / 4);
	float *sQ = dyn_smem();  /* (C, LQ) */
	float *sK = sQ + C * LQ; /* (C, LK), then M (C, CP) */
	float *sM = sK;
	float *sdO = sK + R2;    /* (C, L) */
	float *sG = sdO + C * L; /* (C) */
	float *sE = sG + C;      /* (C) */
	GdnBlock bk = gdn_block(T, H, NC);
	stage_rows<C, DK>(sQ, LQ, q + bk.base * dk, (size_t)H * dk, bk.n, dk);
	stage_rows<C, DK>(sK, LK, k + bk.base * dk, (size_t)H * dk, bk.n, dk);
	cp_async_commit();
	stage_rows<C, DV>(sdO, L, dout + bk.base * dv, (size_t)H * dv, bk.n, dv);
	cp_async_commit();
	if (t < C) {
		sG[t] = w.G[bk.bhc * C + t];
		sE[t] = expf(sG[t]);
	}
	cp_async_wait<1>();
	__syncthreads();
	/* M^T: warp w the rows 32 (w / 4), columns 16 (w % 4), into M once
	 * every warp is done with K */
	float mt[2][2][4] = {};
	int n0 = warp % 4 * 16;
	wmma_tf32<false, 2, 2, LK, 1, 1, LQ>(mt, sK + m0 * LK, sQ + n0 * LQ, DK);
	cp_async_wait<0>();
	__syncthreads();
	decay_store_t<false>(sM, CP, m0, n0, mt, sG);
	{
		/* Hq: warp w the rows DK / 2 (w / 4), columns DV / 4 (w % 4) */
		float acc[WM][WN][4] = {};
		int d0 = warp / 4 * (DK / 2);
		wmma_tf32<false, WM, WN, 1, LQ, L, 1>(acc, sQ + d0, sdO + c0, C, sE);
		tc_store(w.Hq + bk.bhc * DK * DV, DV, d0, c0, acc, scale);
	}
	__syncthreads();
	/* Pm: warp w the rows 32 (w / 4), columns DV / 4 (w % 4); rows j of
	 * M^T dO: i >= j */
	float acc[2][WN][4] = {};
	wmma_tf32<false, 2, WN, 1, CP, L, 1>(acc, sM + m0 * CP + m0, sdO + m0 * L + c0, C - m0);
	tc_store(w.Pm + bk.bhc * C * DV, DV, m0, c0, acc, scale);
}

/* The products with the chunk's states: [dQs; dW] = [scale diag(e^G) dO;
 * -dWn] S_c^T, dKs = diag(e^{G_last - G}) Wn dS'^T; dq = dQs and dk = dKs
 * (the first writers); dG_i = q_i . dQs_i - k_i . dKs_i, and the last row
 * also <dS', e^{G_last} S_c> + sum_j k_j . dKs_j. The sums run over the value
 * columns in two halves, so that two blocks fit an SM. Shared memory:
 * DV/2 (DK + 2C) + 4 C + 16 C + GDN_NT floats. float32; the tf32 form is
 * gdn_bstate_tc_kernel. */
template <int DK, int DV>
__global__ void __launch_bounds__(GDN_NT, 2)
	gdn_bstate_kernel(float *dq, float *dkk, GdnWork w, const float *q, const float *k, const float *dout, int T,
	                  int H, int dk, int dv, int NC, float scale)
{
	const int C = GDN_C, HV = DV / 2, t = threadIdx.x;
	float *sST = dyn_smem();      /* (HV, DK) half of S_c^T, then of dS'^T */
	float *sLT = sST + HV * DK;   /* (HV, 2C) half of [dO e^G scale; -dWn]^T, then of Wn^T (HV, C) */
	float *sG = sLT + HV * 2 * C; /* (C) */
	float *sEs = sG + C;          /* (C) scale e^G */
	float *sL = sEs + C;          /* (C) e^{G_last - G} */
	float *sRed = sL + 2 * C;     /* (C, 16) */
	float *red = sRed + 16 * C;   /* (GDN_NT) */
	GdnBlock bk = gdn_block(T, H, NC);
	int n = bk.n;
	size_t rq = (size_t)H * dk;
	const float *q0 = q + bk.base * dk, *k0 = k + bk.base * dk, *S = w.S + bk.bhc * DK * DV;
	const float *dS = w.dS + bk.bhc * DK * DV;
	if (t < C) {
		sG[t] = w.G[bk.bhc * C + t];
		sEs[t] = scale * expf(sG[t]);
	}
	__syncthreads();
	if (t < C)
		sL[t] = expf(sG[C - 1] - sG[t]);
	int r0 = t / 16 * 4, cb = t % 16 * 4;
	constexpr int TN = DK / 16;
	float acc[8][TN], qk[4][TN];
	zero(acc);
	for (int h = 0; h < 2; h++) {
		if (h)
			__syncthreads();
		load_t<DK, HV>(sST, DK, S + h * HV, DV, DK, HV, 1.f, nullptr);
		load_t<C, HV>(sLT, 2 * C, dout + bk.base * dv + h * HV, (size_t)H * dv, n, dv - h * HV, 1.f, sEs);
		load_t<C, HV>(sLT + C, 2 * C, w.dWn + bk.bhc * C * DV + h * HV, DV, C, HV, -1.f, nullptr);
		__syncthreads();
		mm<8, TN>(acc, sLT, 2 * C, r0, 64, sST, DK, cb, 64, 0, HV);
	}
	float *dw = w.dW + bk.bhc * C * DK;
#pragma unroll
	for (int x = 0; x < 4; x++)
#pragma unroll
		for (int y = 0; y < TN; y++)
			dw[(r0 + x) * DK + frag<TN>(cb, 64, y)] = acc[x + 4][y];
	/* q all at once before the stores of dq, which loads cannot pass */
#pragma unroll
	for (int x = 0; x < 4; x++)
#pragma unroll
		for (int y = 0; y < TN; y++) {
			int i = r0 + x, d = frag<TN>(cb, 64, y);
			qk[x][y] = i < n && d < dk ? q0[i * rq + d] : 0.f;
		}
#pragma unroll
	for (int x = 0; x < 4; x++) {
		int i = r0 + x;
		float s = 0.f;
#pragma unroll
		for (int y = 0; y < TN; y++) {
			int d = frag<TN>(cb, 64, y);
			if (i < n && d < dk)
				dq[(bk.base + (size_t)i * H) * dk + d] = acc[x][y];
			s += qk[x][y] * acc[x][y];
		}
		sRed[i * 16 + t % 16] = s;
	}
	__syncthreads();
	float dgi = 0.f;
	if (t < C)
		for (int u = 0; u < 16; u++)
			dgi += sRed[t * 16 + u];
	float a2[4][TN];
	zero(a2);
	for (int h = 0; h < 2; h++) {
		__syncthreads();
		load_t<DK, HV>(sST, DK, dS + h * HV, DV, DK, HV, 1.f, nullptr);
		load_t<C, HV>(sLT, C, w.Wn + bk.bhc * C * DV + h * HV, DV, C, HV, 1.f, nullptr);
		__syncthreads();
		mm<4, TN>(a2, sLT, C, r0, 0, sST, DK, cb, 64, 0, HV);
	}
	/* <dS', S_c> */
	float ss = 0.f;
	for (int i = t * 4; i < DK * DV; i += GDN_NT * 4) {
		float4 a = *(const float4 *)(S + i), b = *(const float4 *)(dS + i);
		ss += a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
	}
#pragma unroll
	for (int x = 0; x < 4; x++)
#pragma unroll
		for (int y = 0; y < TN; y++) {
			int i = r0 + x, d = frag<TN>(cb, 64, y);
			qk[x][y] = i < n && d < dk ? k0[i * rq + d] : 0.f;
		}
#pragma unroll
	for (int x = 0; x < 4; x++) {
		int i = r0 + x;
		float s = 0.f;
#pragma unroll
		for (int y = 0; y < TN; y++) {
			int d = frag<TN>(cb, 64, y);
			float val = sL[i] * a2[x][y];
			if (i < n && d < dk)
				dkk[(bk.base + (size_t)i * H) * dk + d] = val;
			s += qk[x][y] * val;
		}
		sRed[i * 16 + t % 16] = s;
	}
	__syncthreads();
	float kd = 0.f;
	if (t < C)
		for (int u = 0; u < 16; u++)
			kd += sRed[t * 16 + u];
	float tot = block_sum(expf(sG[C - 1]) * ss + kd, red);
	if (t < C)
		w.dG[bk.bhc * C + t] = dgi - kd + (t == C - 1 ? tot : 0.f);
}

/* gdn_bstate_kernel's TC form: its operands streamed by cp.async in slices
 * of QV value columns through three stages, a barrier a slice, untransposed
 * (rows QL = QV + 4 apart: the fragment reads do not conflict): S_c, dO and
 * dWn for [dQ; dW] = [dO; -dWn] S_c^T (e^G scale and the sign applied to the
 * product), then dS' and Wn for dKs = Wn dS'^T, <dS', S_c> from the dS'
 * slices and S_c read again from global memory. Shared memory: 3 (DK + 2 C)
 * QL + 7 C + GDN_NT floats. */
#define GDN_QV 32
#define GDN_QL (GDN_QV + 4)
template <int DK, int DV>
__global__ void __launch_bounds__(GDN_NT, 2)
	gdn_bstate_tc_kernel(float *dq, float *dkk, GdnWork w, const float *q, const float *k, const float *dout,
	                     int T, int H, int dk, int dv, int NC, float scale)
{
	constexpr int C = GDN_C, L = GDN_QL, NQ = DV / GDN_QV, ST = (DK + 2 * C) * L, WN = DK / 32;
	constexpr int NS = DK * GDN_QV / 4 / GDN_NT; /* float4s of an S_c slice a thread */
	const int t = threadIdx.x, warp = t / WARP_SIZE, wc = warp % 4, n0 = wc * (DK / 4), lane = t % WARP_SIZE;
	float *sb = dyn_smem();   /* 3 stages (DK + 2 C, L): S_c or dS' rows, then dO and dWn or Wn rows */
	float *sG = sb + 3 * ST;  /* (C) */
	float *sEs = sG + C;      /* (C) scale e^G */
	float *sL = sEs + C;      /* (C) e^{G_last - G} */
	float *sRed = sL + C;     /* (C, 4) */
	float *red = sRed + 4 * C; /* (GDN_NT) */
	GdnBlock bk = gdn_block(T, H, NC);
	int n = bk.n;
	const float *S = w.S + bk.bhc * DK * DV, *dS = w.dS + bk.bhc * DK * DV;
	/* slice s < NQ: S_c, dO, dWn; then dS', Wn; none past 2 NQ (an empty group) */
	auto issue = [&](int s) {
		float *b = sb + s % 3 * ST;
		int v0 = s % NQ * GDN_QV;
		if (s < NQ) {
			stage_rows<DK, GDN_QV>(b, L, S + v0, DV, DK, GDN_QV);
			stage_rows<C, GDN_QV>(b + DK * L, L, dout + bk.base * dv + v0, (size_t)H * dv, n, dv - v0);
			stage_rows<C, GDN_QV>(b + (DK + C) * L, L, w.dWn + bk.bhc * C * DV + v0, DV, C, GDN_QV);
		} else if (s < 2 * NQ) {
			stage_rows<DK, GDN_QV>(b, L, dS + v0, DV, DK, GDN_QV);
			stage_rows<C, GDN_QV>(b + DK * L, L, w.Wn + bk.bhc * C * DV + v0, DV, C, GDN_QV);
		}
		cp_async_commit();
	};
	issue(0);
	issue(1);
	if (t < C)
		sG[t] = w.G[bk.bhc * C + t];
	__syncthreads();
	if (t < C) {
		sEs[t] = scale * expf(sG[t]);
		sL[t] = expf(sG[C - 1] - sG[t]);
	}
	{
		/* warp w the rows 64 (w / 4) of [dQ; dW], columns DK / 4 (w % 4) */
		float acc[4][WN][4] = {};
		for (int s = 0; s < NQ; s++) {
			cp_async_wait<1>();
			__syncthreads();
			issue(s + 2);
			const float *b = sb + s % 3 * ST;
			wmma_tf32<false, 4, WN, L, 1, 1, L>(acc, b + (DK + warp / 4 * C) * L, b + n0 * L, GDN_QV);
		}
		if (warp >= 4) {
			tc_store(w.dW + bk.bhc * C * DK, DK, 0, n0, acc, -1.f);
		} else {
			float rd[4][2];
			tc_put_rows<false>(dq, q, bk.base, H, n, dk, 0, n0, acc, sEs, rd);
#pragma unroll
			for (int mi = 0; mi < 4; mi++)
#pragma unroll
				for (int h = 0; h < 2; h++) {
					float x = tc_row_sum(rd[mi][h]);
					if (lane % 4 == 0)
						sRed[tc_row(0, mi, 2 * h) * 4 + wc] = x;
				}
		}
	}
	/* warp w the rows 32 (w / 4) of dKs, columns DK / 4 (w % 4) */
	float acc[2][WN][4] = {}, dgi = 0.f, ss = 0.f;
	int m0 = warp / 4 * 32;
	for (int s = NQ; s < 2 * NQ; s++) {
		int v0 = (s - NQ) * GDN_QV;
		float4 sv[NS];
#pragma unroll
		for (int u = 0; u < NS; u++) {
			int idx = u * GDN_NT + t;
			sv[u] = *(const float4 *)(S + idx / (GDN_QV / 4) * DV + v0 + idx % (GDN_QV / 4) * 4);
		}
		cp_async_wait<1>();
		__syncthreads();
		if (s == NQ && t < C)
			dgi = (sRed[t * 4] + sRed[t * 4 + 1]) + (sRed[t * 4 + 2] + sRed[t * 4 + 3]);
		issue(s + 2);
		const float *b = sb + s % 3 * ST;
		wmma_tf32<false, 2, WN, L, 1, 1, L>(acc, b + (DK + m0) * L, b + n0 * L, GDN_QV);
		/* <dS', S_c> */
#pragma unroll
		for (int u = 0; u < NS; u++) {
			int idx = u * GDN_NT + t;
			float4 a = sv[u], d = *(const float4 *)(b + idx / (GDN_QV / 4) * L + idx % (GDN_QV / 4) * 4);
			ss += a.x * d.x + a.y * d.y + a.z * d.z + a.w * d.w;
		}
	}
	float rd[2][2];
	tc_put_rows<false>(dkk, k, bk.base, H, n, dk, m0, n0, acc, sL, rd);
#pragma unroll
	for (int mi = 0; mi < 2; mi++)
#pragma unroll
		for (int h = 0; h < 2; h++) {
			float x = tc_row_sum(rd[mi][h]);
			if (lane % 4 == 0)
				sRed[tc_row(m0, mi, 2 * h) * 4 + wc] = x;
		}
	__syncthreads();
	float kd = 0.f;
	if (t < C)
		kd = (sRed[t * 4] + sRed[t * 4 + 1]) + (sRed[t * 4 + 2] + sRed[t * 4 + 3]);
	float tot = block_sum(expf(sG[C - 1]) * ss + kd, red);
	if (t < C)
		w.dG[bk.bhc * C + t] = dgi - kd + (t == C - 1 ? tot : 0.f);
}

/* The WY factors' backward: dX = (I + A)^{-T} [dWn | dW] by back
 * substitution (a thread per column), dA = -(dX Y^T) below the diagonal with
 * Y = [U | W]; dv = diag(beta) dXv; dbeta; dk += diag(beta e^G) dXk + Zs K
 * with Zs = Z + Z^T, Z_ij = dA_ij beta_i e^{G_i - G_j}; dG += beta_i e^{G_i}
 * k_i . dXk_i + row and column sums of dA o A. Shared memory: C C + 3 C +
 * NY (LX + C) + C C + 8 C + 48 C floats, NY = DV + DK. gdn_bwy_tc_kernel
 * below is the tensor cores' form. */
template <int DK, int DV>
__global__ void __launch_bounds__(GDN_NT)
	gdn_bwy_kernel(float *dv_, float *dkk, float *dbeta, GdnWork w, const float *k, const float *v,
	               const float *beta, int T, int H, int dk, int dv, int NC)
{
	const int C = GDN_C, LX = GDN_LX, NY = DV + DK, t = threadIdx.x;
	float *sA = dyn_smem();      /* (C, C) A = diag(beta) Ak */
	float *sB = sA + C * C;      /* (C) beta */
	float *sG = sB + C;          /* (C) */
	float *sE = sG + C;          /* (C) e^G */
	float *sXT = sE + C;         /* (NY, LX) dX^T */
	float *sRT = sXT + NY * LX;  /* (NY, C) [V | e^G K]^T, then Y^T, then K (C, DK) */
	float *sYT = sRT, *sK = sRT;
	float *sZ = sRT + NY * C;    /* (C, C) Zs */
	float *sRv = sZ + C * C;     /* (4, C) */
	float *sRk = sRv + 4 * C;    /* (4, C) */
	float *sRow = sRk + 4 * C;   /* (C, 16) */
	float *sCol = sRow + 16 * C; /* (C, 16) */
	float *sDb = sCol + 16 * C;  /* (C, 16) */
	GdnBlock bk = gdn_block(T, H, NC);
	int n = bk.n;
	const float *Ak = w.Ak + bk.bhc * C * C;
	if (t < C) {
		sB[t] = t < n ? beta[bk.base + (size_t)t * H] : 0.f;
		sG[t] = w.G[bk.bhc * C + t];
		sE[t] = expf(sG[t]);
	}
	__syncthreads();
	load_n<C, C>(sA, C, Ak, C, C, C, 1.f, sB);
	load_t<C, DV>(sRT, C, v + bk.base * dv, (size_t)H * dv, n, dv, 1.f, nullptr);
	load_t<C, DK>(sRT + DV * C, C, k + bk.base * dk, (size_t)H * dk, n, dk, 1.f, sE);
	__syncthreads();
	if (t < NY) {
		float x[C];
		int d = t - DV;
#pragma unroll
		for (int i = 0; i < C; i++)
			x[i] = t < DV ? w.dWn[(bk.bhc * C + i) * DV + t] : w.dW[(bk.bhc * C + i) * DK + d];
		/* dX_j = dY_j - sum_{i>j} A_ij dX_i: once dX_i is final, take
		 * its share from every x_j, j < i (A_ij = 0 for j >= i) */
#pragma unroll
		for (int i = C - 1; i > 0; i--) {
			float xi = x[i];
#pragma unroll
			for (int j = 0; j < i; j += 4) {
				float4 a = *(const float4 *)(sA + i * C + j);
				x[j] = fmaf(-a.x, xi, x[j]);
				x[j + 1] = fmaf(-a.y, xi, x[j + 1]);
				x[j + 2] = fmaf(-a.z, xi, x[j + 2]);
				x[j + 3] = fmaf(-a.w, xi, x[j + 3]);
			}
		}
#pragma unroll
		for (int j = 0; j < C; j += 4)
			*(float4 *)(sXT + t * LX + j) = make_float4(x[j], x[j + 1], x[j + 2], x[j + 3]);
		if (t < dv)
#pragma unroll
			for (int j = 0; j < C; j++)
				if (j < n)
					dv_[(bk.base + (size_t)j * H) * dv + t] = sB[j] * x[j];
	}
	__syncthreads();
	/* v_j . dXv_j and e^{G_j} k_j . dXk_j: four threads a row */
	{
		int j = t % C, part = t / C;
		float pv = 0.f, pk = 0.f;
		for (int c = part; c < DV; c += 4)
			pv += sXT[c * LX + j] * sRT[c * C + j];
		for (int c = DV + part; c < NY; c += 4)
			pk += sXT[c * LX + j] * sRT[c * C + j];
		sRv[part * C + j] = pv, sRk[part * C + j] = pk;
	}
	__syncthreads();
	float pv = 0.f, pk = 0.f;
	if (t < C)
		for (int u = 0; u < 4; u++)
			pv += sRv[u * C + t], pk += sRk[u * C + t];
	load_t<C, DV>(sYT, C, w.U + bk.bhc * C * DV, DV, C, DV, 1.f, nullptr);
	copy_s(sYT + DV * C, w.WT + bk.bhc * DK * C, DK * C);
	__syncthreads();
	/* dA, a 4x4 tile a thread */
	{
		int i0 = t / 16 * 4, j0 = t % 16 * 4;
		float acc[4][4], rs[4] = {0.f, 0.f, 0.f, 0.f}, cs[4] = {0.f, 0.f, 0.f, 0.f}, db[4] = {0.f, 0.f, 0.f, 0.f};
		zero(acc);
		mm<4, 4>(acc, sXT, LX, i0, 0, sYT, C, j0, 0, 0, NY);
#pragma unroll
		for (int x = 0; x < 4; x++)
#pragma unroll
			for (int y = 0; y < 4; y++) {
				int i = i0 + x, j = j0 + y;
				if (j < i) {
					float da = -acc[x][y], ak = Ak[i * C + j], r = da * sA[i * C + j];
					float z = da * sB[i] * expf(sG[i] - sG[j]);
					db[x] += da * ak, rs[x] += r, cs[y] += r;
					sZ[i * C + j] = z, sZ[j * C + i] = z;
				} else if (j == i) {
					sZ[i * C + i] = 0.f;
				}
			}
#pragma unroll
		for (int x = 0; x < 4; x++) {
			sRow[(i0 + x) * 16 + t % 16] = rs[x];
			sDb[(i0 + x) * 16 + t % 16] = db[x];
			sCol[(j0 + x) * 16 + t / 16] = cs[x];
		}
	}
	__syncthreads();
	if (t < C) {
		float db = pv + pk, dg = sB[t] * pk;
		for (int u = 0; u < 16; u++)
			db += sDb[t * 16 + u], dg += sRow[t * 16 + u] - sCol[t * 16 + u];
		if (dbeta && t < n)
			dbeta[bk.base + (size_t)t * H] = db;
		w.dG[bk.bhc * C + t] += dg;
	}
	load_n<C, DK>(sK, DK, k + bk.base * dk, (size_t)H * dk, n, dk, 1.f, nullptr);
	__syncthreads();
	/* dk += Zs K + diag(beta e^G) dXk */
	{
		constexpr int TN = DK / 16;
		int j0 = t / 16 * 4, cb = t % 16 * 4;
		float acc[4][TN];
		zero(acc);
		mm<4, TN>(acc, sZ, C, j0, 0, sK, DK, cb, 64, 0, C);
		float old[4][TN];
#pragma unroll
		for (int x = 0; x < 4; x++)
#pragma unroll
			for (int y = 0; y < TN; y++) {
				int j = j0 + x, d = frag<TN>(cb, 64, y);
				old[x][y] = j < n && d < dk ? dkk[(bk.base + (size_t)j * H) * dk + d] : 0.f;
			}
#pragma unroll
		for (int x = 0; x < 4; x++)
#pragma unroll
			for (int y = 0; y < TN; y++) {
				int j = j0 + x, d = frag<TN>(cb, 64, y);
				if (j < n && d < dk)
					dkk[(bk.base + (size_t)j * H) * dk + d] =
						old[x][y] + acc[x][y] + sB[j] * sE[j] * sXT[(DV + d) * LX + j];
			}
	}
}

/* bwy on the tensor cores (the keep/kept calls with tf32): the same sums
 * over 64-column slabs q of [dWn | dW] and Y = [U | W]: dXq = T^T dYq in
 * 3xTF32 (T the chunk kernel's), then from its fragments dv, the row dots
 * v_j . dXv_j and e^{G_j} k_j . dXk_j and diag(beta e^G) dXk (kept in
 * registers), and dA^T += Yq dXq^T in 1xTF32, W's slabs as the A operand
 * straight from W^T's fragment order (TF32 already). The next slabs of dY,
 * Y and V or K travel by cp.async meanwhile (Y double buffered). Then Zs,
 * and Zs K a slab of K at a time: the last slab still in sV from the row
 * dots, the first (DK 128) asked for into sD as the last dA^T product
 * starts. Warp w holds the rows 32 (w / 4), columns 16 (w % 4) of each 64
 * x 64 tile. Shared memory: 2 C (C + 8) + 4 C (C + 4) + 19 C floats: two
 * blocks an SM. */
template <int DK, int DV>
__global__ void __launch_bounds__(GDN_NT, 2)
	gdn_bwy_tc_kernel(float *dv_, float *dkk, float *dbeta, GdnWork w, const float *k, const float *v,
	                  const float *beta, int T, int H, int dk, int dv, int NC)
{
	constexpr int C = GDN_C, QV = DV / 64, QK = DK / 64, NQ = QV + QK, L8 = C + 8, L4 = C + 4;
	const int t = threadIdx.x, lane = t % WARP_SIZE, warp = t / WARP_SIZE, m0 = warp / 4 * 32, n0 = warp % 4 * 16;
	const int wc = warp % 4, wr = warp / 4;
	float *sT = dyn_smem();  /* (C, L8) T */
	float *sD = sT + C * L8; /* (C, L8) slab q of [dWn | dW], then of K */
	float *sX = sD + C * L8; /* (C, L4) dXq, then Zs */
	float *sY = sX + C * L4; /* (2, C, L4) slab q of U (rows) or of W^T (fragment order) */
	float *sV = sY + 2 * C * L4; /* (C, L4) slab q of V or K, for the row dots */
	float *sB = sV + C * L4; /* (C) beta */
	float *sG = sB + C;      /* (C) */
	float *sE = sG + C;      /* (C) e^G */
	float *sR = sE + C;      /* (4, C) each over the warps' columns: pv, pk, dA o A column sums; (2, C) each over
	                            the warps' rows: dA o Ak and dA o A row sums (dA^T's tiles: rows j, columns i) */
	GdnBlock bk = gdn_block(T, H, NC);
	int n = bk.n;
	const float *Ak = w.Ak + bk.bhc * C * C;
	/* slab q of dY into sD, of Y into sY[q % 2], of V or K into sV (zeros
	 * past n and dv or dk), one commit group */
	auto load_slab = [&](int q) {
		const float *gs = q < QV ? v + bk.base * dv + q * 64 : k + bk.base * dk + (q - QV) * 64;
		int gd = q < QV ? dv - q * 64 : dk - (q - QV) * 64;
		size_t grs = (size_t)H * (q < QV ? dv : dk);
		if ((grs & 3) == 0 && (gd & 3) == 0 && ((size_t)gs & 15) == 0) {
			for (int i = t; i < C * 16; i += GDN_NT) {
				int r = i / 16, e = i % 16 * 4;
				if (r < n && e < gd)
					cp_async16(sV + r * L4 + e, gs + r * grs + e);
				else
					*(float4 *)(sV + r * L4 + e) = make_float4(0.f, 0.f, 0.f, 0.f);
			}
		} else {
			for (int i = t; i < C * 64; i += GDN_NT) {
				int r = i / 64, e = i % 64;
				sV[r * L4 + e] = r < n && e < gd ? gs[r * grs + e] : 0.f;
			}
		}
		const float *s = q < QV ? w.dWn + bk.bhc * C * DV + q * 64 : w.dW + bk.bhc * C * DK + (q - QV) * 64;
		size_t rs = q < QV ? DV : DK;
		float *y = sY + q % 2 * C * L4;
		for (int i = t; i < C * 16; i += GDN_NT)
			cp_async16(sD + i / 16 * L8 + i % 16 * 4, s + i / 16 * rs + i % 16 * 4);
		if (q < QV) {
			const float *u = w.U + bk.bhc * C * DV + q * 64;
			for (int i = t; i < C * 16; i += GDN_NT)
				cp_async16(y + i / 16 * L4 + i % 16 * 4, u + (size_t)(i / 16) * DV + i % 16 * 4);
		} else { /* the 4 x 8 tiles of rows 16 m, k-steps 8 (q - QV).. */
			const float *wt = w.WT + bk.bhc * C * DK + (q - QV) * 1024;
			for (int i = t * 4; i < C * 64; i += GDN_NT * 4)
				cp_async16(y + i, wt + i / 1024 * (DK / 8) * 128 + i % 1024);
		}
		cp_async_commit();
	};
	if (t < C) {
		sB[t] = t < n ? beta[bk.base + (size_t)t * H] : 0.f;
		sG[t] = w.G[bk.bhc * C + t];
		sE[t] = expf(sG[t]);
	}
	for (int i = t; i < C * C / 4; i += GDN_NT)
		cp_async16(sT + i / 16 * L8 + i % 16 * 4, w.Tm + bk.bhc * C * C + 4 * i);
	load_slab(0);
	float dA[2][2][4] = {}, kx[QK][2][2][4], pv[2][2] = {}, pk[2][2] = {}, ak[2][2][4];
#pragma unroll
	for (int q = 0; q < NQ; q++) {
		if (q == NQ - 1) /* Ak_ij at dA^T's (j, i) */
#pragma unroll
			for (int i = 0; i < 2; i++)
#pragma unroll
				for (int jj = 0; jj < 2; jj++)
#pragma unroll
					for (int r = 0; r < 4; r++)
						ak[i][jj][r] = Ak[tc_col(n0, jj, r) * C + tc_row(m0, i, r)];
		cp_async_wait<0>();
		__syncthreads();
		/* dXq = T^T dYq */
		float x[2][2][4] = {};
		wmma_tf32<true, 2, 2, 1, L8, L8, 1>(x, sT + m0, sD + n0, C);
#pragma unroll
		for (int i = 0; i < 2; i++)
#pragma unroll
			for (int jj = 0; jj < 2; jj++)
#pragma unroll
				for (int r = 0; r < 4; r++) {
					int j = tc_row(m0, i, r), c = tc_col(n0, jj, r), cv = q * 64 + c;
					float xv = x[i][jj][r];
					sX[j * L4 + c] = xv;
					if (q < QV) {
						if (cv < dv && j < n)
							dv_[(bk.base + (size_t)j * H) * dv + cv] = sB[j] * xv;
						pv[i][r >> 1] += sV[j * L4 + c] * xv;
					} else {
						pk[i][r >> 1] += sE[j] * sV[j * L4 + c] * xv;
						kx[q < QV ? 0 : q - QV][i][jj][r] = sB[j] * sE[j] * xv;
					}
				}
		__syncthreads();
		if (q + 1 < NQ) {
			load_slab(q + 1);
		} else if (QK > 1) { /* K's first slab for Zs K (its last is in sV) */
			stage_rows<C, 64>(sD, L8, k + bk.base * dk, (size_t)H * dk, n, dk);
			cp_async_commit();
		}
		/* dA^T += Yq dXq^T: rows j, columns i */
		const float *y = sY + q % 2 * C * L4;
		if (q < QV) {
			wmma_tf32<false, 2, 2, L4, 1, 1, L4>(dA, y + m0 * L4, sX + n0 * L4, C);
		} else {
			const int g = lane / 4, tq = lane % 4;
#pragma unroll 2
			for (int ks = 0; ks < 8; ks++) {
				unsigned a[2][4], b[2][2];
#pragma unroll
				for (int i = 0; i < 2; i++) {
					float4 f = *(const float4 *)(y + ((m0 / 16 + i) * 8 + ks) * 128 + lane * 4);
					a[i][0] = __float_as_uint(f.x), a[i][1] = __float_as_uint(f.y);
					a[i][2] = __float_as_uint(f.z), a[i][3] = __float_as_uint(f.w);
				}
#pragma unroll
				for (int jj = 0; jj < 2; jj++)
#pragma unroll
					for (int r = 0; r < 2; r++)
						b[jj][r] = to_tf32(sX[(n0 + 8 * jj + g) * L4 + 8 * ks + tq + 4 * r]);
#pragma unroll
				for (int i = 0; i < 2; i++)
#pragma unroll
					for (int jj = 0; jj < 2; jj++)
						mma_tf32(dA[i][jj], a[i], b[jj]);
			}
		}
	}
	__syncthreads();
	/* dA_ij (at dA^T's (j, i)) for j < i: Zs (into dXq's place) and the sums of dA o Ak, dA o A */
	float db[2][2] = {}, rs[2][2] = {}, cs[2][2] = {};
#pragma unroll
	for (int i = 0; i < 2; i++)
#pragma unroll
		for (int jj = 0; jj < 2; jj++)
#pragma unroll
			for (int r = 0; r < 4; r++) {
				int j = tc_row(m0, i, r), ii = tc_col(n0, jj, r);
				if (j < ii) {
					float da = -dA[i][jj][r], a = da * (sB[ii] * ak[i][jj][r]);
					float z = da * sB[ii] * expf(sG[ii] - sG[j]);
					db[jj][r & 1] += da * ak[i][jj][r], rs[jj][r & 1] += a, cs[i][r >> 1] += a;
					sX[ii * L4 + j] = z, sX[j * L4 + ii] = z;
				} else if (j == ii) {
					sX[j * L4 + j] = 0.f;
				}
			}
#pragma unroll
	for (int i = 0; i < 2; i++)
#pragma unroll
		for (int h = 0; h < 2; h++) {
			float a = tc_row_sum(pv[i][h]), b = tc_row_sum(pk[i][h]), c = tc_row_sum(cs[i][h]);
			int j = tc_row(m0, i, 2 * h);
			if (lane % 4 == 0)
				sR[wc * C + j] = a, sR[(4 + wc) * C + j] = b, sR[(8 + wc) * C + j] = c;
		}
#pragma unroll
	for (int jj = 0; jj < 2; jj++)
#pragma unroll
		for (int e = 0; e < 2; e++) {
			float a = tc_col_sum(db[jj][e]), b = tc_col_sum(rs[jj][e]);
			int i = tc_col(n0, jj, e);
			if (lane < 4)
				sR[(12 + wr) * C + i] = a, sR[(14 + wr) * C + i] = b;
		}
	float od[QK][2][2][4]; /* dk's old values */
#pragma unroll
	for (int q = 0; q < QK; q++)
#pragma unroll
		for (int i = 0; i < 2; i++)
#pragma unroll
			for (int jj = 0; jj < 2; jj++)
#pragma unroll
				for (int r = 0; r < 4; r++) {
					int j = tc_row(m0, i, r), d = q * 64 + tc_col(n0, jj, r);
					od[q][i][jj][r] = j < n && d < dk ? dkk[(bk.base + (size_t)j * H) * dk + d] : 0.f;
				}
	cp_async_wait<0>();
	__syncthreads();
	if (t < C) {
		float pvt = 0.f, pkt = 0.f, cst = 0.f;
		for (int u = 0; u < 4; u++)
			pvt += sR[u * C + t], pkt += sR[(4 + u) * C + t], cst += sR[(8 + u) * C + t];
		float db = sR[12 * C + t] + sR[13 * C + t] + pvt + pkt;
		float dg = sR[14 * C + t] + sR[15 * C + t] - cst + sB[t] * pkt;
		if (dbeta && t < n)
			dbeta[bk.base + (size_t)t * H] = db;
		w.dG[bk.bhc * C + t] += dg;
	}
	/* dk = its old value + diag(beta e^G) dXk + Zs K, a slab of K at a
	 * time: the last from sV, the first (QK 2) from sD */
#pragma unroll
	for (int q = 0; q < QK; q++) {
		if (q == QK - 1)
			wmma_tf32<false, 2, 2, L4, 1, L4, 1>(kx[q], sX + m0 * L4, sV + n0, C);
		else
			wmma_tf32<false, 2, 2, L4, 1, L8, 1>(kx[q], sX + m0 * L4, sD + n0, C);
#pragma unroll
		for (int i = 0; i < 2; i++)
#pragma unroll
			for (int jj = 0; jj < 2; jj++)
#pragma unroll
				for (int r = 0; r < 4; r++) {
					int j = tc_row(m0, i, r), d = q * 64 + tc_col(n0, jj, r);
					if (j < n && d < dk)
						dkk[(bk.base + (size_t)j * H) * dk + d] = od[q][i][jj][r] + kx[q][i][jj][r];
				}
	}
}

/* bintra's end: dG_t = the other kernels' share plus the row minus the
 * column sums of dM o M (NR partial sums each, rows NR apart), then dg_t =
 * sum_{i >= t} dG_i, a reverse scan in s (C floats, shared) */
template <int NR>
static __device__ void bintra_dg(float *dg, const GdnWork &w, const GdnBlock &bk, int H, const float *sRow,
                                 const float *sCol, float *s)
{
	const int C = GDN_C, t = threadIdx.x;
	if (t < C) {
		float d = w.dG[bk.bhc * C + t];
		for (int u = 0; u < NR; u++)
			d += sRow[t * NR + u] - sCol[t * NR + u];
		s[t] = d;
	}
	for (int o = 1; o < C; o *= 2) {
		__syncthreads();
		float x = t + o < C ? s[t + o] : 0.f;
		__syncthreads();
		if (t < C)
			s[t] += x;
	}
	__syncthreads();
	if (dg && t < bk.n)
		dg[bk.base + (size_t)t * H] = s[t];
}

/* The intra-chunk product M Wn: dM = scale dO Wn^T, dME = dM o E (j <= i);
 * dq += dME K, dk += dME^T Q, dG += row minus column sums of dM o M; then dg,
 * the reverse cumulative sum of dG within the chunk. Q^T and K^T (for M),
 * dO^T and Wn^T (for dM), Q and K take turns in one region. Shared memory:
 * 2 max(DK, DV) C + 2 C C + 2 C + 32 C floats. float32; the tf32 form is
 * gdn_bintra_tc_kernel. */
template <int DK, int DV>
__global__ void __launch_bounds__(GDN_NT, 0)
	gdn_bintra_kernel(float *dq, float *dkk, float *dg, GdnWork w, const float *q, const float *k,
	                  const float *dout, int T, int H, int dk, int dv, int NC, float scale)
{
	const int C = GDN_C, D = DK > DV ? DK : DV, t = threadIdx.x, CP = C, DKP = DK, NR = 16;
	float *sX1 = dyn_smem();      /* (D, C) Q^T, dO^T; then Q (C, DK) */
	float *sX2 = sX1 + D * CP;    /* (D, C) K^T, Wn^T; then K (C, DK) */
	float *sdME = sX2 + D * CP;   /* (C, CP) */
	float *sdMET = sdME + C * CP; /* (C, CP) */
	float *sG = sdMET + C * CP;   /* (C) */
	float *sV = sG + C;           /* (C) */
	float *sRow = sV + C;         /* (C, NR) */
	float *sCol = sRow + NR * C;  /* (C, NR) */
	GdnBlock bk = gdn_block(T, H, NC);
	int n = bk.n;
	const float *q0 = q + bk.base * dk, *k0 = k + bk.base * dk;
	size_t rq = (size_t)H * dk;
	load_t<C, DK>(sX1, CP, q0, rq, n, dk, 1.f, nullptr);
	load_t<C, DK>(sX2, CP, k0, rq, n, dk, 1.f, nullptr);
	if (t < C)
		sG[t] = w.G[bk.bhc * C + t];
	__syncthreads();
	int i0 = t / 16 * 4, j0 = t % 16 * 4;
	{
		float mq[4][4], dm[4][4], me[4][4], rs[4] = {0.f, 0.f, 0.f, 0.f}, cs[4] = {0.f, 0.f, 0.f, 0.f};
		zero(mq), zero(dm);
		mm<4, 4>(mq, sX1, C, i0, 0, sX2, C, j0, 0, 0, DK);
		__syncthreads();
		load_t<C, DV>(sX1, C, dout + bk.base * dv, (size_t)H * dv, n, dv, 1.f, nullptr);
		load_t<C, DV>(sX2, C, w.Wn + bk.bhc * C * DV, DV, C, DV, 1.f, nullptr);
		__syncthreads();
		mm<4, 4>(dm, sX1, C, i0, 0, sX2, C, j0, 0, 0, DV);
#pragma unroll
		for (int x = 0; x < 4; x++)
#pragma unroll
			for (int y = 0; y < 4; y++) {
				int i = i0 + x, j = j0 + y;
				me[x][y] = 0.f;
				if (j <= i) {
					float e = expf(sG[i] - sG[j]), d = scale * dm[x][y], r = d * e * mq[x][y];
					me[x][y] = d * e;
					rs[x] += r, cs[y] += r;
				}
			}
#pragma unroll
		for (int x = 0; x < 4; x++) {
			*(float4 *)(sdME + (i0 + x) * C + j0) = make_float4(me[x][0], me[x][1], me[x][2], me[x][3]);
			*(float4 *)(sdMET + (j0 + x) * C + i0) = make_float4(me[0][x], me[1][x], me[2][x], me[3][x]);
			sRow[(i0 + x) * 16 + t % 16] = rs[x];
			sCol[(j0 + x) * 16 + t / 16] = cs[x];
		}
	}
	__syncthreads();
	float *sQ = sX1, *sK = sX2;
	load_n<C, DK>(sQ, DKP, q0, rq, n, dk, 1.f, nullptr);
	load_n<C, DK>(sK, DKP, k0, rq, n, dk, 1.f, nullptr);
	bintra_dg<NR>(dg, w, bk, H, sRow, sCol, sV);
	constexpr int TN = DK / 16;
	float acc[4][TN], old[4][TN];
	zero(acc);
	mm<4, TN>(acc, sdMET, C, i0, 0, sK, DK, j0, 64, 0, i0 + 4); /* dME_ij = 0 for j > i */
#pragma unroll
	for (int x = 0; x < 4; x++)
#pragma unroll
		for (int y = 0; y < TN; y++) {
			int i = i0 + x, d = frag<TN>(j0, 64, y);
			old[x][y] = i < n && d < dk ? dq[(bk.base + (size_t)i * H) * dk + d] : 0.f;
		}
#pragma unroll
	for (int x = 0; x < 4; x++)
#pragma unroll
		for (int y = 0; y < TN; y++) {
			int i = i0 + x, d = frag<TN>(j0, 64, y);
			if (i < n && d < dk)
				dq[(bk.base + (size_t)i * H) * dk + d] = old[x][y] + acc[x][y];
		}
	zero(acc);
	mm<4, TN>(acc, sdME, C, i0, 0, sQ, DK, j0, 64, i0, C); /* rows j of dME^T Q: i >= j */
#pragma unroll
	for (int x = 0; x < 4; x++)
#pragma unroll
		for (int y = 0; y < TN; y++) {
			int j = i0 + x, d = frag<TN>(j0, 64, y);
			old[x][y] = j < n && d < dk ? dkk[(bk.base + (size_t)j * H) * dk + d] : 0.f;
		}
#pragma unroll
	for (int x = 0; x < 4; x++)
#pragma unroll
		for (int y = 0; y < TN; y++) {
			int j = i0 + x, d = frag<TN>(j0, 64, y);
			if (j < n && d < dk)
				dkk[(bk.base + (size_t)j * H) * dk + d] = old[x][y] + acc[x][y];
		}
}

/* gdn_bintra_kernel's TC form: Q and K (rows DK + 4 apart) and dO and Wn
 * (in slices of QV value columns through two stages, rows QL apart) by
 * cp.async, untransposed, all issued before the first product: dM's first
 * slice, then M and the rest; dME and dME^T (rows C + 8 apart) over the
 * slices' stages. Shared memory: 2 C (DK + 4) + 4 C QL + 10 C floats. */
template <int DK, int DV>
__global__ void __launch_bounds__(GDN_NT, 2)
	gdn_bintra_tc_kernel(float *dq, float *dkk, float *dg, GdnWork w, const float *q, const float *k,
	                     const float *dout, int T, int H, int dk, int dv, int NC, float scale)
{
	constexpr int C = GDN_C, L = GDN_QL, LK = DK + 4, CP = C + 8, ND = DV / GDN_QV, NR = 4;
	static_assert(2 * C * CP == 4 * C * L, "dME and dME^T fill the slices' stages");
	const int t = threadIdx.x, warp = t / WARP_SIZE, wr = warp / 4, wc = warp % 4, lane = t % WARP_SIZE;
	float *sQ = dyn_smem();        /* (C, LK) */
	float *sK = sQ + C * LK;       /* (C, LK) */
	float *sb = sK + C * LK;       /* 2 stages (2 C, L): dO, Wn rows; then dME, dME^T (C, CP) */
	float *sdME = sb, *sdMET = sb + C * CP;
	float *sG = sb + 4 * C * L;    /* (C) */
	float *sV = sG + C;            /* (C) */
	float *sRow = sV + C;          /* (C, NR) */
	float *sCol = sRow + NR * C;   /* (C, NR) */
	GdnBlock bk = gdn_block(T, H, NC);
	int n = bk.n;
	size_t rq = (size_t)H * dk;
	auto issue = [&](int s) {
		float *b = sb + s % 2 * 2 * C * L;
		int v0 = s * GDN_QV;
		stage_rows<C, GDN_QV>(b, L, dout + bk.base * dv + v0, (size_t)H * dv, n, dv - v0);
		stage_rows<C, GDN_QV>(b + C * L, L, w.Wn + bk.bhc * C * DV + v0, DV, C, GDN_QV);
		cp_async_commit();
	};
	issue(0);
	stage_rows<C, DK>(sQ, LK, q + bk.base * dk, rq, n, dk);
	stage_rows<C, DK>(sK, LK, k + bk.base * dk, rq, n, dk);
	cp_async_commit();
	issue(1);
	if (t < C)
		sG[t] = w.G[bk.bhc * C + t];
	/* M and dM: warp w the rows 32 (w / 4), columns 16 (w % 4); the row
	 * sums over the 4 lanes of a row, then the 4 warps (sRow), the column
	 * sums over the 8 lanes of a column, then 2 warps (sCol) */
	int m0 = wr * 32, n0 = wc * 16;
	float mq[2][2][4] = {}, dm[2][2][4] = {}, rs[2][2] = {}, cs[2][2] = {};
	cp_async_wait<2>();
	__syncthreads();
	wmma_tf32<false, 2, 2, L, 1, 1, L>(dm, sb + m0 * L, sb + (C + n0) * L, GDN_QV);
	for (int s = 1; s < ND; s++) {
		cp_async_wait<0>();
		__syncthreads();
		if (s + 1 < ND)
			issue(s + 1);
		if (s == 1)
			wmma_tf32<false, 2, 2, LK, 1, 1, LK>(mq, sQ + m0 * LK, sK + n0 * LK, DK);
		const float *b = sb + s % 2 * 2 * C * L;
		wmma_tf32<false, 2, 2, L, 1, 1, L>(dm, b + m0 * L, b + (C + n0) * L, GDN_QV);
	}
	__syncthreads();
#pragma unroll
	for (int mi = 0; mi < 2; mi++)
#pragma unroll
		for (int nj = 0; nj < 2; nj++)
#pragma unroll
			for (int r = 0; r < 4; r++) {
				int i = tc_row(m0, mi, r), j = tc_col(n0, nj, r);
				float me = 0.f;
				if (j <= i) {
					float e = expf(sG[i] - sG[j]), d = scale * dm[mi][nj][r], x = d * e * mq[mi][nj][r];
					me = d * e;
					rs[mi][r / 2] += x, cs[nj][r % 2] += x;
				}
				sdME[i * CP + j] = me;
				sdMET[j * CP + i] = me;
			}
#pragma unroll
	for (int h = 0; h < 2; h++) {
#pragma unroll
		for (int mi = 0; mi < 2; mi++) {
			float x = tc_row_sum(rs[mi][h]);
			if (lane % 4 == 0)
				sRow[tc_row(m0, mi, 2 * h) * NR + wc] = x;
		}
#pragma unroll
		for (int nj = 0; nj < 2; nj++) {
			float x = tc_col_sum(cs[nj][h]);
			if (lane < 4) {
				int j = tc_col(n0, nj, h);
				sCol[j * NR + wr] = x, sCol[j * NR + 2 + wr] = 0.f;
			}
		}
	}
	__syncthreads();
	bintra_dg<NR>(dg, w, bk, H, sRow, sCol, sV);
	/* dq, dk: warp w the rows 32 (w / 4), columns DK / 4 (w % 4) */
	constexpr int WN = DK / 32;
	int n1 = wc * (DK / 4);
	float rd[2][2];
	{
		float acc[2][WN][4] = {};
		wmma_tf32<false, 2, WN, 1, CP, LK, 1>(acc, sdMET + m0, sK + n1, m0 + 32); /* dME_ij = 0 for j > i */
		tc_put_rows<true>(dq, (const float *)nullptr, bk.base, H, n, dk, m0, n1, acc, nullptr, rd);
	}
	/* rows j of dME^T Q: i >= j */
	float acc[2][WN][4] = {};
	wmma_tf32<false, 2, WN, 1, CP, LK, 1>(acc, sdME + m0 * CP + m0, sQ + m0 * LK + n1, C - m0);
	tc_put_rows<true>(dkk, (const float *)nullptr, bk.base, H, n, dk, m0, n1, acc, nullptr, rd);
}

// ----------------------------------------------------------------------------
// launchers

static const int GDN_SMEM_MAX = 227 * 1024;

/* bytes of dynamic shared memory of each kernel */
static size_t smem_chunk(int DK, int DV, bool tc)
{
	if (tc)
		return (size_t)(chunk_r1(DK, DV) + GDN_C * (DK + 8) + 2 * GDN_C * (GDN_C + 4) + 5 * GDN_C) * 4;
	return (size_t)(DK * GDN_C + DK * GDN_C + GDN_C * GDN_C + 4 * GDN_C) * 4;
}
/* both state kernels, SV columns a block */
static size_t smem_state(int DK, int SV)
{
	return (size_t)(DK * SV + GDN_C * SV + 2 * (2 * DK * GDN_C + GDN_C * SV + DK * SV + GDN_C)) * 4;
}
static size_t smem_output(int DK, int DV, bool tc)
{
	size_t C = GDN_C, LK = DK + 4, CP = C + 8;
	if (tc)
		return (C * LK + C * (LK > CP ? LK : CP) + 64 * (DV + 8) + 2 * C) * 4;
	return (DK * C + C * C + 2 * C + (DK * C > C * DV ? DK * C : C * DV)) * 4;
}
static size_t smem_bprep(int DK, int DV, bool tc)
{
	size_t C = GDN_C, LK = DK + 4, CP = C + 8;
	if (tc)
		return (C * (DK + 8) + C * (LK > CP ? LK : CP) + C * (DV + 8) + 2 * C) * 4;
	return (2 * DK * C + C * C + C * DV + 2 * C) * 4;
}
static size_t smem_bstate(int DK, int DV, bool tc)
{
	if (tc)
		return (size_t)(3 * (DK + 2 * GDN_C) * GDN_QL + 7 * GDN_C + GDN_NT) * 4;
	return (size_t)(DV / 2 * DK + DV * GDN_C + 4 * GDN_C + 16 * GDN_C + GDN_NT) * 4;
}
static size_t smem_bwy(int DK, int DV, bool tc)
{
	if (tc)
		return (size_t)(2 * GDN_C * (GDN_C + 8) + 4 * GDN_C * (GDN_C + 4) + 19 * GDN_C) * 4;
	return (size_t)(GDN_C * GDN_C + 3 * GDN_C + (DK + DV) * (GDN_LX + GDN_C) + GDN_C * GDN_C + 8 * GDN_C +
	                48 * GDN_C) * 4;
}
static size_t smem_bintra(int DK, int DV, bool tc)
{
	if (tc)
		return (size_t)(2 * GDN_C * (DK + 4) + 4 * GDN_C * GDN_QL + 10 * GDN_C) * 4;
	return (size_t)(2 * (DK > DV ? DK : DV) * GDN_C + 2 * GDN_C * GDN_C + 2 * GDN_C + 32 * GDN_C) * 4;
}

/* kernel f on grid, GDN_NT threads and bytes of dynamic shared memory,
 * allowed it on the first launch (done: the kernel's own flag) */
template <class F, class... Args>
static void gdn_launch(F f, size_t bytes, bool *done, dim3 grid, Args... args)
{
	if (bytes > (size_t)GDN_SMEM_MAX)
		fprintf(stderr, "gdn_chunked: %zu bytes of shared memory\n", bytes), exit(1);
	smem_allow(f, bytes, done);
	f<<<grid, GDN_NT, bytes>>>(args...);
	cudaCheck(cudaGetLastError());
}

/* the tf32 state passes' A1 and A2 by bulk copies where the device has
 * them (gdn_chunked_bulk; DASH_GDN_CPASYNC=1 for the benches: by cp.async) */
static int gdn_bulk = -1;

static int bulk_on(void)
{
	if (gdn_bulk < 0)
		gdn_bulk = !env_flag("DASH_GDN_CPASYNC");
	return gdn_bulk;
}

extern "C" int gdn_chunked_bulk(int on)
{
	int was = bulk_on();
	gdn_bulk = on != 0;
	return was;
}

/* the state pass, its products in float32 or (tf32) on the tensor cores;
 * tf32 on a Hopper with bulk copies */
template <int DK, bool REV>
static void gdn_state(bool tf32, dim3 grid, const float *A1, const float *A2, const float *Xa, const float *Sa,
                      const float *G, float *Xo, float *Sst, const float *Sin, float *Sout, float s1, float s2, int DV,
                      int NC, int dk, int dv)
{
	static bool done[3];
	size_t bytes = smem_state(DK, GDN_SV);
#ifdef DASH_SM90A
	if (tf32 && bulk_on() && cuda_cc_major() >= 9) {
		gdn_launch(gdn_state_tc_kernel<DK, GDN_SV, REV, !REV, true>, bytes + 2 * sizeof(uint64_t), &done[2],
		           grid, A1, A2, Xa, Sa, G, Xo, Sst, Sin, Sout, s1, s2, DV, NC, dk, dv);
		return;
	}
#endif
	/* tf32: A1 and A2 in fragment order, rounded but for the backward's W */
	auto f = tf32 ? gdn_state_tc_kernel<DK, GDN_SV, REV, !REV, false> : gdn_state_kernel<DK, REV>;
	gdn_launch(f, bytes, &done[tf32], grid, A1, A2, Xa, Sa, G, Xo, Sst, Sin, Sout, s1, s2, DV, NC, dk, dv);
}

struct GdnArgs {
	float *o, *S, *dq, *dk, *dv, *dg, *dbeta, *dS0;
	const float *q, *k, *v, *g, *beta, *dout, *dSf, *S0;
	int B, T, H, dk_, dv_;
	float scale;
	void *work;
	bool tf32; /* the products of chunk (Ak, [U | W]), state, output, bprep, bstate, bwy and bintra on the tensor cores */
};

/* the chunk and state kernels: G, the WY factors, Wn and every chunk's start
 * state from S0 (NULL: zeros); the final state into Sf unless NULL */
template <int DK, int DV, bool BWD>
static void gdn_forward_states(const GdnArgs *a, GdnWork *w, const float *S0, float *Sf)
{
	static bool d1[2];
	int NC = CEIL_DIV(a->T, GDN_C);
	gdn_carve(w, a->work, a->B, a->T, a->H, a->dk_, a->dv_);
	bool tc = a->tf32;
	auto fc = tc ? gdn_chunk_kernel<DK, DV, BWD, true> : gdn_chunk_kernel<DK, DV, BWD, false>;
	gdn_launch(fc, smem_chunk(DK, DV, tc), &d1[tc], dim3(NC, a->B * a->H), *w, a->k, a->v, a->g, a->beta, a->T, a->H,
	           a->dk_, a->dv_, NC);
	gdn_state<DK, false>(a->tf32, dim3(DV / GDN_SV, a->B * a->H), w->WT, w->Kt, w->U, nullptr, w->G, w->Wn, w->S, S0, Sf, -1.f, 1.f,
	                     DV, NC, a->dk_, a->dv_);
}

/* KEEP: the chunk kernel in its backward form, so that the work holds all
 * that gdn_backward would recompute */
template <int DK, int DV, bool KEEP>
static void gdn_forward(const GdnArgs *a)
{
	static bool d3[2];
	GdnWork w;
	int NC = CEIL_DIV(a->T, GDN_C);
	bool tc = a->tf32;
	gdn_forward_states<DK, DV, KEEP>(a, &w, a->S, a->S);
	auto fo = tc ? gdn_output_tc_kernel<DK, DV> : gdn_output_kernel<DK, DV>;
	gdn_launch(fo, smem_output(DK, DV, tc), &d3[tc], dim3(NC, a->B * a->H), a->o, w, a->q, a->k, a->T, a->H, a->dk_,
	           a->dv_, NC, a->scale);
}

/* kept: the work holds a keeping forward's states of these inputs (only
 * carved here, not recomputed) */
template <int DK, int DV>
static void gdn_backward(const GdnArgs *a, bool kept)
{
	static bool d1[2], d3[2], d4[2], d5[2];
	GdnWork w;
	int NC = CEIL_DIV(a->T, GDN_C), BH = a->B * a->H;
	bool tc = a->tf32;
	dim3 chunks(NC, BH);
	if (kept)
		gdn_carve(&w, a->work, a->B, a->T, a->H, a->dk_, a->dv_);
	else
		gdn_forward_states<DK, DV, true>(a, &w, a->S0, nullptr);
	auto fp = tc ? gdn_bprep_tc_kernel<DK, DV> : gdn_bprep_kernel<DK, DV>;
	gdn_launch(fp, smem_bprep(DK, DV, tc), &d1[tc], chunks, w, a->q, a->k, a->dout, a->T, a->H, a->dk_, a->dv_, NC,
	           a->scale);
	gdn_state<DK, true>(tc, dim3(DV / GDN_SV, BH), w.KtT, w.W, w.Pm, w.Hq, w.G, w.dWn, w.dS, a->dSf, a->dS0, 1.f, -1.f,
	                    DV, NC, a->dk_, a->dv_);
	auto fs = tc ? gdn_bstate_tc_kernel<DK, DV> : gdn_bstate_kernel<DK, DV>;
	gdn_launch(fs, smem_bstate(DK, DV, tc), &d3[tc], chunks, a->dq, a->dk, w, a->q, a->k, a->dout, a->T, a->H, a->dk_,
	           a->dv_, NC, a->scale);
	auto fy = tc ? gdn_bwy_tc_kernel<DK, DV> : gdn_bwy_kernel<DK, DV>;
	gdn_launch(fy, smem_bwy(DK, DV, tc), &d4[tc], chunks, a->dv, a->dk, a->dbeta, w, a->k, a->v, a->beta, a->T, a->H,
	           a->dk_, a->dv_, NC);
	auto fi = tc ? gdn_bintra_tc_kernel<DK, DV> : gdn_bintra_kernel<DK, DV>;
	gdn_launch(fi, smem_bintra(DK, DV, tc), &d5[tc], chunks, a->dq, a->dk, a->dg, w, a->q, a->k, a->dout, a->T, a->H,
	           a->dk_, a->dv_, NC, a->scale);
}

static void gdn_check(const char *who, int B, int T, int H, int Dk, int Dv)
{
	if (B < 1 || T < 1 || H < 1 || Dk < 1 || Dk > 128 || Dv < 1 || Dv > 128)
		fprintf(stderr, "%s: B %d T %d H %d Dk %d Dv %d (Dk, Dv 1 to 128)\n", who, B, T, H, Dk, Dv), exit(1);
}

extern "C" size_t gdn_chunked_work(int B, int T, int H, int Dk, int Dv)
{
	GdnWork w;
	return gdn_carve(&w, NULL, B, T, H, Dk, Dv);
}

/* gdn_forward at a's padded widths */
template <bool KEEP>
static void gdn_forward_padded(const GdnArgs *a)
{
	switch (gdn_pad(a->dk_) * 1000 + gdn_pad(a->dv_)) {
	case 64064: gdn_forward<64, 64, KEEP>(a); break;
	case 64128: gdn_forward<64, 128, KEEP>(a); break;
	case 128064: gdn_forward<128, 64, KEEP>(a); break;
	default: gdn_forward<128, 128, KEEP>(a); break;
	}
}

/* the forward (keep: leaving the backward's states in the work) */
static void gdn_forward_chunked(const char *who, float *d_o, float *d_S, const float *d_q, const float *d_k,
                                const float *d_v, const float *d_g, const float *d_beta, int B, int T, int H, int Dk,
                                int Dv, float scale, void *d_work, bool keep, bool tf32)
{
	gdn_check(who, B, T, H, Dk, Dv);
	GdnArgs a = {};
	a.o = d_o, a.S = d_S, a.q = d_q, a.k = d_k, a.v = d_v, a.g = d_g, a.beta = d_beta;
	a.B = B, a.T = T, a.H = H, a.dk_ = Dk, a.dv_ = Dv, a.scale = scale, a.work = d_work, a.tf32 = tf32;
	if (keep)
		gdn_forward_padded<true>(&a);
	else
		gdn_forward_padded<false>(&a);
}

/* the backward (kept: from a keeping forward's work, no recomputation) */
static void gdn_backward_chunked(const char *who, float *d_dq, float *d_dk, float *d_dv, float *d_dg, float *d_dbeta,
                                 float *d_dS0, const float *d_dout, const float *d_dSf, const float *d_q,
                                 const float *d_k, const float *d_v, const float *d_g, const float *d_beta,
                                 const float *d_S0, int B, int T, int H, int Dk, int Dv, float scale, void *d_work,
                                 bool kept, bool tf32)
{
	gdn_check(who, B, T, H, Dk, Dv);
	GdnArgs a = {};
	a.dq = d_dq, a.dk = d_dk, a.dv = d_dv, a.dg = d_dg, a.dbeta = d_dbeta, a.dS0 = d_dS0;
	a.dout = d_dout, a.dSf = d_dSf, a.q = d_q, a.k = d_k, a.v = d_v, a.g = d_g, a.beta = d_beta, a.S0 = d_S0;
	a.B = B, a.T = T, a.H = H, a.dk_ = Dk, a.dv_ = Dv, a.scale = scale, a.work = d_work, a.tf32 = tf32;
	switch (gdn_pad(Dk) * 1000 + gdn_pad(Dv)) {
	case 64064: gdn_backward<64, 64>(&a, kept); break;
	case 64128: gdn_backward<64, 128>(&a, kept); break;
	case 128064: gdn_backward<128, 64>(&a, kept); break;
	default: gdn_backward<128, 128>(&a, kept); break;
	}
}

extern "C" void gdn_forward_chunked_cuda(float *d_o, float *d_S, const float *d_q, const float *d_k, const float *d_v,
                                         const float *d_g, const float *d_beta, int B, int T, int H, int Dk, int Dv,
                                         float scale, void *d_work)
{
	gdn_forward_chunked("gdn_forward_chunked_cuda", d_o, d_S, d_q, d_k, d_v, d_g, d_beta, B, T, H, Dk, Dv, scale,
	                    d_work, false, false);
}

extern "C" void gdn_forward_chunked_keep_cuda(float *d_o, float *d_S, const float *d_q, const float *d_k,
                                              const float *d_v, const float *d_g, const float *d_beta, int B, int T,
                                              int H, int Dk, int Dv, float scale, void *d_work, int tf32)
{
	gdn_forward_chunked("gdn_forward_chunked_keep_cuda", d_o, d_S, d_q, d_k, d_v, d_g, d_beta, B, T, H, Dk, Dv, scale,
	                    d_work, true, tf32 != 0);
}

extern "C" void gdn_backward_chunked_cuda(float *d_dq, float *d_dk, float *d_dv, float *d_dg, float *d_dbeta,
                                          float *d_dS0, const float *d_dout, const float *d_dSf, const float *d_q,
                                          const float *d_k, const float *d_v, const float *d_g, const float *d_beta,
                                          const float *d_S0, int B, int T, int H, int Dk, int Dv, float scale,
                                          void *d_work)
{
	gdn_backward_chunked("gdn_backward_chunked_cuda", d_dq, d_dk, d_dv, d_dg, d_dbeta, d_dS0, d_dout, d_dSf, d_q, d_k,
	                     d_v, d_g, d_beta, d_S0, B, T, H, Dk, Dv, scale, d_work, false, false);
}

extern "C" void gdn_backward_chunked_kept_cuda(float *d_dq, float *d_dk, float *d_dv, float *d_dg, float *d_dbeta,
                                               float *d_dS0, const float *d_dout, const float *d_dSf,
                                               const float *d_q, const float *d_k, const float *d_v,
                                               const float *d_g, const float *d_beta, const float *d_S0, int B,
                                               int T, int H, int Dk, int Dv, float scale, void *d_work, int tf32)
{
	gdn_backward_chunked("gdn_backward_chunked_kept_cuda", d_dq, d_dk, d_dv, d_dg, d_dbeta, d_dS0, d_dout, d_dSf, d_q,
	                     d_k, d_v, d_g, d_beta, d_S0, B, T, H, Dk, Dv, scale, d_work, true, tf32 != 0);
}
