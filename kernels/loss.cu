/*
 * loss: the vocabulary projection fused with cross-entropy or
 * KL(teacher || student), forward and backward, on the GPU. Twin of
 * vocab_loss_cpu (lib/loss.c; lib/loss.h states the contract). The logits of
 * all n rows never exist at once; per chunk of rows:
 *   1. cuBLAS: z (rows, V) = h W^T, bf16 operands, float32 accumulation and
 *      float32 output (cublasGemmEx with a CUDA_R_32F C); for KL the
 *      teacher's zt likewise; vocab_loss_logits8_cuda (KL, search-logits
 *      --forward fp8-all): both from e4m3 codes, h's and W's by their
 *      rows, by cuBLASLt's e4m3 product into the same float32 logits
 *      (matmul_forward_fp8_f32_cuda), the row kernels as they are;
 *   2. vocab_loss_row_kernel, one block per row: one pass over z (and zt)
 *      for the online max and sum of exponentials (and, for KL, the sum of
 *      exp(zt - max) (zt - z)), then for the backward a second pass writing
 *      dz = scale (softmax(z) - onehot(target) or softmax(zt)) as bf16 over
 *      the first half of the row's own float32 bytes;
 *   3. cuBLAS: dhidden (rows, C) = dz W, bf16 out, float32 accumulation;
 *      vocab_loss_fp8_cuda (KL): dz's rows into e4m3 codes in the teacher
 *      logits' place, then cuBLASLt's e4m3 product with W's codes
 *      (matmul_backward_fp8_cuda; search-logits --grad fp8).
 * Then one block adds the chunk's row losses in double, in a fixed order,
 * to a running total in the scratch: the loss is the same from run to run.
 *
 * Why float32 logits: a bf16 logit is off by up to 2^-9 of its size (0.06
 * at 30), which moves every probability by several percent, more than the
 * KL between a good student and its teacher. dz in bf16 costs little: each
 * term of the dhidden sum is rounded by at most 2^-9 of itself, and the
 * GEMM adds them in float32.
 *
 * Scratch (vocab_loss_work): a double (the running total), VOCAB_LOSS_ROWS
 * row losses (for when the caller wants none), then VOCAB_LOSS_ROWS rows of
 * float32 logits at a stride ldz = V rounded up to 8 floats, so that every
 * row starts 32-byte aligned for float4 loads whatever V is. A cross-entropy
 * chunk is VOCAB_LOSS_ROWS rows; a KL chunk is half of that, the student's
 * logits in the first half of the rows and the teacher's in the second.
 * 1.24 GB at V 151936 (VOCAB_LOSS_ROWS 2048).
 *
 * version 1 (written without a GPU at hand; twin-tested by
 * tests/test_loss.cu, not yet timed: bench/bin/loss): the GEMMs through
 * cublasGemmEx with the default algorithm; the row kernel streams each row
 * twice from memory (a 600 KB row does not stay in L2 between its passes
 * with ~260 rows in flight). Napkin math at n 4096, C 2048, V 151936: the
 * GEMMs are 2.5 TFLOP each (~3.5 ms at ~700 TFLOP/s), the float32 logits
 * 2.5 GB, each pass over them ~0.8 ms at 3 TB/s. Next: the max and sum in
 * the forward GEMM's epilogue (cuBLASLt or an own kernel), which removes
 * the logits' write and first read.
 * version 2 (H100, ncu, n 4096 V 151936): chunks of 2048 rows, not 512
 * (the GEMMs through gemm_bf16, cuBLASLt with measured algorithms: the
 * logits GEMMs 3.29 ms in all, 3.64 before; dhidden without split-K), and on
 * a Hopper the row kernel as a cluster of 8 blocks a row that reads each
 * logit once, from a shared-memory copy of its slice: 2.41 ms for both
 * chunks, against 2.58 for the two-pass kernel. The CE forward + backward in
 * bench/bin/teacher's step: 9.2 ms, 9.8 before.
 * version 3 (H200, bench/bin/loss n 4096 C 2048 V 151936, the old and the
 * new binary in one call, two calls): the cluster kernel takes each thread's
 * max first, then exponentials in log2 units (one FFMA and one ex2.approx a
 * logit, no rescaling) written over the slice, so that dz costs a multiply
 * a logit and no exponential; blocks and warps merged by butterflies; each
 * block pushes its statistics into every block of the cluster before one
 * barrier, and none waits for the others at its end; 16 blocks a row (KL
 * two blocks an SM, cross-entropy four). KL forward + backward 13.90-13.97
 * and 13.86 ms (15.09, 15.16), forward 9.83-10.00 (10.89-10.92); CE forward
 * + backward 8.25-8.33 (8.75-8.76), forward 4.38-4.52 (4.46-4.83). ncu, KL
 * forward + backward: 1.245 GB read and 0.30 GB written a launch of 1024
 * rows (each logit read once), 0.80-0.85 ms a launch (measured on the bulk
 * copy variant below). 8 blocks a row (DASH_LOSS_CLUSTER8 then; now the
 * default, 16 under DASH_LOSS_CLUSTER16) was faster in both calls: KL
 * 13.80 and 13.71, CE 8.22 and 8.16, CE forward 3.85 and 3.87; then through
 * tests/test_loss.cu (37 ok, 0 errors under compute-sanitizer) and
 * bench/bin/loss: KL 13.87. A guess, not measured: two blocks of an SM
 * start, copy and compute in step, so one's copies do not hide the other's
 * arithmetic. Tried and dropped: the slices copied
 * by the bulk copy engine (cp.async.bulk on one mbarrier) instead of
 * cp.async: KL 14.10 (13.86 in the same call). Next: a persistent cluster
 * that copies the next row while it works on this one.
 */
#include <cooperative_groups.h>

#include "cuda_common.cuh"
#include "gpu.h"

namespace cg = cooperative_groups;

#define ROW_THREADS 512 /* a row kernel block; two fit on an SM */
#define SUM_THREADS 256

/* ldz: the padded stride of a row of logits, in floats */
static int ldz_of(int V)
{
	return CEIL_DIV(V, 8) * 8;
}

// ----------------------------------------------------------------------------
// online softmax statistics: m the running max, s = sum exp(x - m), and for
// the teacher's row a = sum exp(zt - m) (zt - z), all rescaled together when
// m grows

/* merge (mo, so, ao) into (m, s, a); -inf maxima (no elements yet) are
 * skipped rather than turned into exp(-inf + inf) = NaN. The result does not
 * depend on the order of the two operands. */
__device__ __forceinline__ void stats_merge(float &m, float &s, float &a, float mo, float so, float ao)
{
	if (mo > m) {
		float f = expf(m - mo);
		s = s * f + so, a = a * f + ao, m = mo;
	} else if (mo != -INFINITY) {
		float f = expf(mo - m);
		s += so * f, a += ao * f;
	}
}

/* add four logits x to (m, s); for the teacher's row (KL) x is zt, z the
 * student's logits at the same places and a gathers exp(zt - m) (zt - z).
 * The student's and the teacher's sums are the same code, so that a row
 * compared with itself gives the same lse twice and a KL of exactly 0. */
template <bool KL>
__device__ __forceinline__ void stats_add4(float &m, float &s, float &a, float4 x, float4 z)
{
	float mx = fmaxf(fmaxf(x.x, x.y), fmaxf(x.z, x.w));
	if (mx > m) {
		float f = expf(m - mx);
		s *= f, m = mx;
		if (KL)
			a *= f;
	}
	float e0 = expf(x.x - m), e1 = expf(x.y - m), e2 = expf(x.z - m), e3 = expf(x.w - m);
	s += (e0 + e1) + (e2 + e3);
	if (KL)
		a += (e0 * (x.x - z.x) + e1 * (x.y - z.y)) + (e2 * (x.z - z.z) + e3 * (x.w - z.w));
}

/* the statistics of the whole block, in every thread: a butterfly within
 * each warp, then every thread merges the warps' results in warp order, so
 * all threads hold the same bits. sh: [3][32] shared floats. */
__device__ void block_stats(float &m, float &s, float &a, float (*sh)[32])
{
	for (int o = WARP_SIZE / 2; o > 0; o /= 2) {
		float mo = __shfl_xor_sync(0xffffffffu, m, o), so = __shfl_xor_sync(0xffffffffu, s, o);
		float ao = __shfl_xor_sync(0xffffffffu, a, o);
		stats_merge(m, s, a, mo, so, ao);
	}
	int warp = threadIdx.x / WARP_SIZE, nwarps = blockDim.x / WARP_SIZE;
	if (threadIdx.x % WARP_SIZE == 0)
		sh[0][warp] = m, sh[1][warp] = s, sh[2][warp] = a;
	__syncthreads();
	m = sh[0][0], s = sh[1][0], a = sh[2][0];
	for (int w = 1; w < nwarps; w++)
		stats_merge(m, s, a, sh[0][w], sh[1][w], sh[2][w]);
}

// ----------------------------------------------------------------------------
// the row kernel: one block per row of the chunk

/* z (rows, ldz) float32 logits, overwritten by dz (rows, 2 ldz) bf16 when
 * grad; zt (rows, ldz) the teacher's logits (KL) or NULL; targets (rows) for
 * cross-entropy (KL: NULL); rl (rows) receives the row losses.
 *
 * The in-place write: dz[v] (2 bytes) lands on bytes 2v..2v+1 of the row,
 * inside float z[v / 2], which every thread has read by then. The second
 * pass goes in rounds of 4 ROW_THREADS logits; round k reads floats
 * [4kB, 4(k+1)B) and, after a barrier, writes bf16 over floats
 * [2kB, 2(k+1)B): read in this round or before, never needed again. */
__global__ void __launch_bounds__(ROW_THREADS, 2)
vocab_loss_row_kernel(float *z, const float *__restrict__ zt, float *rl, const int32_t *targets, int V, int ldz,
                      float scale, int grad)
{
	__shared__ float sh[2][3][32];
	int row = blockIdx.x, tid = threadIdx.x, nvec = V / 4;
	float *zr = z + (size_t)row * ldz;
	const float *tr = zt ? zt + (size_t)row * ldz : NULL;
	const float4 *z4 = reinterpret_cast<const float4 *>(zr), *t4 = reinterpret_cast<const float4 *>(tr);
	int target = targets ? targets[row] : 0;
	bool skip = targets && target < 0; /* an ignored row: no loss, no gradient */

	float lse = 0, lset = 0;
	if (!skip) {
		float m = -INFINITY, s = 0, a = 0, mt = -INFINITY, st = 0, at = 0;
		if (tr) {
			#pragma unroll 4
			for (int j = tid; j < nvec; j += blockDim.x) {
				float4 x = z4[j], y = t4[j];
				stats_add4<false>(m, s, a, x, x);
				stats_add4<true>(mt, st, at, y, x);
			}
		} else {
			#pragma unroll 4
			for (int j = tid; j < nvec; j += blockDim.x) {
				float4 x = z4[j];
				stats_add4<false>(m, s, a, x, x);
			}
		}
		/* the last V % 4 logits, one to a thread */
		int v = 4 * nvec + tid;
		if (v < V) {
			stats_merge(m, s, a, zr[v], 1.0f, 0.0f);
			if (tr)
				stats_merge(mt, st, at, tr[v], 1.0f, tr[v] - zr[v]);
		}
		block_stats(m, s, a, sh[0]);
		lse = m + logf(s);
		if (tr) {
			block_stats(mt, st, at, sh[1]);
			lset = mt + logf(st);
		}
		/* KL = sum pt (zt - lset - z + lse) = at / st + lse - lset; z[target]
		 * is read before the second pass's first barrier, so before any
		 * write */
		if (tid == 0)
			rl[row] = tr ? at / st + (lse - lset) : lse - zr[target];
	} else if (tid == 0) {
		rl[row] = 0;
	}
	if (!grad)
		return;

	bf16 *dzr = reinterpret_cast<bf16 *>(zr);
	for (int j0 = 0; j0 < nvec; j0 += blockDim.x) {
		int j = j0 + tid;
		float4 d = make_float4(0, 0, 0, 0);
		if (j < nvec && !skip) {
			float4 x = z4[j];
			if (tr) {
				float4 y = t4[j];
				d.x = scale * (expf(x.x - lse) - expf(y.x - lset));
				d.y = scale * (expf(x.y - lse) - expf(y.y - lset));
				d.z = scale * (expf(x.z - lse) - expf(y.z - lset));
				d.w = scale * (expf(x.w - lse) - expf(y.w - lset));
			} else {
				int v = 4 * j;
				d.x = scale * (expf(x.x - lse) - (v == target));
				d.y = scale * (expf(x.y - lse) - (v + 1 == target));
				d.z = scale * (expf(x.z - lse) - (v + 2 == target));
				d.w = scale * (expf(x.w - lse) - (v + 3 == target));
			}
		}
		__syncthreads();
		if (j < nvec) {
			__nv_bfloat162 lo = __floats2bfloat162_rn(d.x, d.y), hi = __floats2bfloat162_rn(d.z, d.w);
			uint2 u = make_uint2(*reinterpret_cast<uint32_t *>(&lo), *reinterpret_cast<uint32_t *>(&hi));
			*reinterpret_cast<uint2 *>(dzr + 4 * j) = u; /* 8 bytes, 8-byte aligned */
		}
	}
	/* the last V % 4: read, wait for every read of the row, write */
	int v = 4 * nvec + tid;
	float d = 0;
	if (v < V && !skip)
		d = scale * (expf(zr[v] - lse) - (tr ? expf(tr[v] - lset) : (float)(v == target)));
	__syncthreads();
	if (v < V)
		dzr[v] = __float2bfloat16(d);
}

/* The row kernel again, a row a cluster of Q blocks (Hopper; Q 8, or 16
 * under DASH_LOSS_CLUSTER16): block `rank` copies its slice of S float4s of
 * the row (and of the teacher's) into shared memory, and each thread then
 * works on the float4s it copied itself (no block barrier before them):
 *   1. its max mx over them;
 *   2. e = 2^(x log2e - m2), m2 = mx log2e rounded, written over x, their
 *      sum s (and for the teacher a = sum et (zt - z)): statistics in log2
 *      units, (m2, s, a) standing for 2^m2 s, never rescaled in the loop;
 *   3. the block's statistics pushed into every block of the cluster (its
 *      own row `rank` of `all`), a cluster barrier, then every thread merges
 *      the Q rows alike (the same bits in every block): lse2 = m2 + log2 s;
 *   4. dz = scale (e 2^(m2 - lse2) - et 2^(mt2 - lset2)): no exponential
 *      a logit.
 * The student's and the teacher's values are the same code with the
 * products rounded apart (no fused multiply-add across the two sides), so
 * a row compared with itself gives the same lse twice, a KL of exactly 0 and
 * dz exactly 0. The last rank also takes the V % 4 logits after the last
 * float4. dz lands on other blocks' slices of the row (dz[v] within float
 * z[v / 2]), so it is written only after the cluster barrier that follows
 * every block's reads; no block reads another's shared memory after that
 * barrier, so a block leaves as soon as its dz is out. Arguments as
 * vocab_loss_row_kernel's; dynamic shared memory: S float4s, twice for KL. */
#define CL_MAX 16 /* blocks a row at most (a non-portable cluster size) */
/* dst (shared) = src (global), 16 bytes, asynchronously (sm_80 and up) */
__device__ __forceinline__ void cp_async16(float4 *dst, const float4 *src)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	unsigned d = (unsigned)__cvta_generic_to_shared(dst);
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src) : "memory");
#else
	*dst = *src;
#endif
}
/* 2^x by the special function unit (ex2.approx: 2 ulp; 2^-inf = 0) */
__device__ __forceinline__ float ex2(float x)
{
	float y;
	asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
	return y;
}
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f
/* stats_merge in log2 units: (mo, so, ao) stands for 2^mo so; the same
 * bits whatever the order of the two operands */
__device__ __forceinline__ void stats_merge2(float &m, float &s, float &a, float mo, float so, float ao)
{
	if (mo > m) {
		float f = ex2(m - mo);
		s = fmaf(s, f, so), a = fmaf(a, f, ao), m = mo;
	} else if (mo != -INFINITY) {
		float f = ex2(mo - m);
		s = fmaf(so, f, s), a = fmaf(ao, f, a);
	}
}
/* (m, s, a) merged over the lanes of a warp whose xor is below `width`:
 * every lane of each group ends with the same bits */
__device__ __forceinline__ void warp_stats2(float &m, float &s, float &a, int width)
{
	for (int o = width / 2; o > 0; o /= 2) {
		float mo = __shfl_xor_sync(0xffffffffu, m, o), so = __shfl_xor_sync(0xffffffffu, s, o);
		float ao = __shfl_xor_sync(0xffffffffu, a, o);
		stats_merge2(m, s, a, mo, so, ao);
	}
}
/* e = 2^(x log2e - m2) of four logits, their sum added to s */
__device__ __forceinline__ float4 exp4(float4 x, float m2, float &s)
{
	float4 e;
	e.x = ex2(fmaf(x.x, LOG2E, -m2)), e.y = ex2(fmaf(x.y, LOG2E, -m2));
	e.z = ex2(fmaf(x.z, LOG2E, -m2)), e.w = ex2(fmaf(x.w, LOG2E, -m2));
	s += (e.x + e.y) + (e.z + e.w);
	return e;
}
__device__ __forceinline__ float max4(float4 x)
{
	return fmaxf(fmaxf(x.x, x.y), fmaxf(x.z, x.w));
}
/* scale (p c - q cq), the two products rounded before the difference */
__device__ __forceinline__ float dz_of(float scale, float p, float c, float q, float cq)
{
	return scale * (__fmul_rn(p, c) - __fmul_rn(q, cq));
}
#define CL_THREADS 512
#define CL_WARPS (CL_THREADS / WARP_SIZE)
#define CL_SMEM_MAX (200 << 10) /* the slices' shared memory at most */
/* KL: 76 KB of slices a block at Q 16, two blocks an SM; cross-entropy: 38
 * KB, four */
template <bool KL>
__global__ void __launch_bounds__(CL_THREADS, KL ? 2 : 4)
vocab_loss_cluster_kernel(float *z, const float *__restrict__ zt, float *rl, const int32_t *targets, int V, int ldz,
                          float scale, int grad, int S)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
	static_assert(CL_WARPS <= WARP_SIZE && CL_MAX <= WARP_SIZE, "one warp merges the warps and the blocks");
	extern __shared__ float4 slice[]; /* [S] of z, then [S] of zt (KL) */
	__shared__ float wst[6][CL_WARPS];
	__shared__ float all[CL_MAX][6]; /* each block's (m2, s, a) of the student and the teacher */
	cg::cluster_group cluster = cg::this_cluster();
	int Q = (int)cluster.num_blocks(), rank = (int)cluster.block_rank(), row = blockIdx.x / Q;
	int tid = threadIdx.x, lane = tid % WARP_SIZE, warp = tid / WARP_SIZE, nvec = V / 4;
	int j0 = rank * S, j1 = min(j0 + S, nvec);
	float *zr = z + (size_t)row * ldz;
	const float *tr = KL ? zt + (size_t)row * ldz : NULL;
	const float4 *z4 = reinterpret_cast<const float4 *>(zr), *t4 = reinterpret_cast<const float4 *>(tr);
	float4 *ts = slice + S;
	int target = targets ? targets[row] : 0;
	bool skip = targets && target < 0;

	/* the slice into shared memory, every copy of the thread in flight at
	 * once (cp.async, 16 bytes each); the cluster barrier's first half
	 * (every block has started: its shared memory may be written) */
	for (int j = j0 + tid; j < j1; j += CL_THREADS) {
		cp_async16(slice + (j - j0), z4 + j);
		if (KL)
			cp_async16(ts + (j - j0), t4 + j);
	}
	asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
	int v = 4 * nvec + tid;
	bool tail = rank == Q - 1 && v < V;
	float zv = tail ? zr[v] : 0, tv = KL && tail ? tr[v] : 0, z_target = 0;
	/* z[target], before the barrier after which dz overwrites the row */
	if (!KL && !skip && rank == 0 && tid == 0)
		z_target = zr[target];
	asm volatile("cp.async.wait_all;\n" ::: "memory");

	/* 1. the thread's maxima */
	float mx = tail ? zv : -INFINITY, mxt = tail ? tv : -INFINITY;
	for (int j = j0 + tid; j < j1; j += CL_THREADS) {
		mx = fmaxf(mx, max4(slice[j - j0]));
		if (KL)
			mxt = fmaxf(mxt, max4(ts[j - j0]));
	}
	/* 2. exponentials over the logits, and their sums */
	float m2 = mx * LOG2E, mt2 = mxt * LOG2E, s = 0, st = 0, at = 0, a = 0;
	for (int j = j0 + tid; j < j1; j += CL_THREADS) {
		float4 x = slice[j - j0];
		slice[j - j0] = exp4(x, m2, s);
		if (KL) {
			float4 y = ts[j - j0], f = exp4(y, mt2, st);
			at += (f.x * (y.x - x.x) + f.y * (y.y - x.y)) + (f.z * (y.z - x.z) + f.w * (y.w - x.w));
			ts[j - j0] = f;
		}
	}
	float ev = 0, etv = 0;
	if (tail) {
		ev = ex2(fmaf(zv, LOG2E, -m2)), s += ev;
		if (KL)
			etv = ex2(fmaf(tv, LOG2E, -mt2)), st += etv, at += etv * (tv - zv);
	}

	/* 3. the block's statistics, pushed into every block; then the
	 * cluster's, in every thread */
	float bm = m2, bs = s, ba = a, bmt = mt2, bst = st, bat = at;
	warp_stats2(bm, bs, ba, WARP_SIZE);
	if (KL)
		warp_stats2(bmt, bst, bat, WARP_SIZE);
	if (lane == 0)
		wst[0][warp] = bm, wst[1][warp] = bs, wst[2][warp] = ba, wst[3][warp] = bmt, wst[4][warp] = bst,
		wst[5][warp] = bat;
	__syncthreads();
	asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory");
	if (warp == 0) {
		bool in = lane < CL_WARPS;
		bm = in ? wst[0][lane] : -INFINITY, bs = in ? wst[1][lane] : 0, ba = in ? wst[2][lane] : 0;
		bmt = in ? wst[3][lane] : -INFINITY, bst = in ? wst[4][lane] : 0, bat = in ? wst[5][lane] : 0;
		warp_stats2(bm, bs, ba, CL_WARPS);
		if (KL)
			warp_stats2(bmt, bst, bat, CL_WARPS);
		if (lane < Q) {
			float *o = cluster.map_shared_rank(&all[rank][0], lane);
			o[0] = bm, o[1] = bs, o[2] = ba, o[3] = bmt, o[4] = bst, o[5] = bat;
		}
	}
	/* every block's statistics are in, and all its reads of the row done */
	asm volatile("barrier.cluster.arrive.release.aligned;\n"
	             "barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
	bool in = lane < Q;
	bm = in ? all[lane][0] : -INFINITY, bs = in ? all[lane][1] : 0, ba = in ? all[lane][2] : 0;
	bmt = in ? all[lane][3] : -INFINITY, bst = in ? all[lane][4] : 0, bat = in ? all[lane][5] : 0;
	warp_stats2(bm, bs, ba, CL_MAX);
	if (KL)
		warp_stats2(bmt, bst, bat, CL_MAX);
	bm = __shfl_sync(0xffffffffu, bm, 0), bs = __shfl_sync(0xffffffffu, bs, 0);
	bmt = __shfl_sync(0xffffffffu, bmt, 0), bst = __shfl_sync(0xffffffffu, bst, 0);
	bat = __shfl_sync(0xffffffffu, bat, 0);
	float lse2 = bm + log2f(bs), lset2 = KL ? bmt + log2f(bst) : 0;
	if (rank == 0 && tid == 0)
		rl[row] = skip ? 0 : KL ? bat / bst + (lse2 - lset2) * LN2 : lse2 * LN2 - z_target;

	/* 4. dz from the exponentials */
	if (!grad)
		return;
	float c = ex2(m2 - lse2), ct = KL ? ex2(mt2 - lset2) : 0;
	bf16 *dzr = reinterpret_cast<bf16 *>(zr);
	for (int j = j0 + tid; j < j1; j += CL_THREADS) {
		float4 d = make_float4(0, 0, 0, 0);
		if (!skip) {
			float4 e = slice[j - j0];
			if (KL) {
				float4 f = ts[j - j0];
				d.x = dz_of(scale, e.x, c, f.x, ct), d.y = dz_of(scale, e.y, c, f.y, ct);
				d.z = dz_of(scale, e.z, c, f.z, ct), d.w = dz_of(scale, e.w, c, f.w, ct);
			} else {
				int w = 4 * j;
				d.x = dz_of(scale, e.x, c, w == target, 1), d.y = dz_of(scale, e.y, c, w + 1 == target, 1);
				d.z = dz_of(scale, e.z, c, w + 2 == target, 1), d.w = dz_of(scale, e.w, c, w + 3 == target, 1);
			}
		}
		__nv_bfloat162 lo = __floats2bfloat162_rn(d.x, d.y), hi = __floats2bfloat162_rn(d.z, d.w);
		uint2 u = make_uint2(*reinterpret_cast<uint32_t *>(&lo), *reinterpret_cast<uint32_t *>(&hi));
		*reinterpret_cast<uint2 *>(dzr + 4 * j) = u;
	}
	if (tail)
		dzr[v] = __float2bfloat16(skip ? 0.0f : dz_of(scale, ev, c, KL ? etv : (float)(v == target), KL ? ct : 1));
#else
	__trap(); /* built without sm_90: the launcher never picks this kernel */
#endif
}

/* the cluster kernel where it was built (sm_90a) and the device is a
 * Hopper, for slices that fit in shared memory; launched with its cluster
 * shape: 8 blocks a row (16 under DASH_LOSS_CLUSTER16 where the device runs
 * such clusters). False: the caller runs
 * vocab_loss_row_kernel. */
static bool row_cluster_launch(float *z, const float *zt, float *rl, const int32_t *targets, int rows, int V, int ldz,
                               float scale, int grad)
{
#ifdef DASH_SM90A
	static int ready = 0, Q = 8;
	int major = cuda_cc_major();
	if (!ready && major == 9) {
		ready = 1;
		void (*kernel[2])(float *, const float *, float *, const int32_t *, int, int, float, int, int) = {
			vocab_loss_cluster_kernel<false>, vocab_loss_cluster_kernel<true>};
		int q = env_flag("DASH_LOSS_CLUSTER16") ? CL_MAX : 8;
		for (int k = 0; k < 2; k++) {
			cudaCheck(cudaFuncSetAttribute(kernel[k], cudaFuncAttributeMaxDynamicSharedMemorySize, CL_SMEM_MAX));
			cudaCheck(cudaFuncSetAttribute(kernel[k], cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
		}
		/* can 16 blocks a row run (the KL's shared memory, the larger)? */
		for (; q > 8; q /= 2) {
			cudaLaunchConfig_t cfg = {};
			cudaLaunchAttribute at[1];
			at[0].id = cudaLaunchAttributeClusterDimension;
			at[0].val.clusterDim.x = q, at[0].val.clusterDim.y = 1, at[0].val.clusterDim.z = 1;
			cfg.gridDim = dim3(q), cfg.blockDim = dim3(CL_THREADS), cfg.attrs = at, cfg.numAttrs = 1;
			cfg.dynamicSmemBytes = (size_t)CEIL_DIV(ldz_of(V) / 4, q) * sizeof(float4) * 2;
			int nc = 0;
			if (cudaOccupancyMaxActiveClusters(&nc, kernel[1], &cfg) == cudaSuccess && nc > 0)
				break;
			(void)cudaGetLastError();
		}
		Q = q;
	}
	int S = CEIL_DIV(V / 4, Q);
	size_t smem = (size_t)S * sizeof(float4) * (zt ? 2 : 1);
	if (major != 9 || smem > CL_SMEM_MAX)
		return false;
	cudaLaunchConfig_t cfg = {};
	cudaLaunchAttribute at[1];
	at[0].id = cudaLaunchAttributeClusterDimension;
	at[0].val.clusterDim.x = Q, at[0].val.clusterDim.y = 1, at[0].val.clusterDim.z = 1;
	cfg.gridDim = dim3((unsigned)rows * Q), cfg.blockDim = dim3(CL_THREADS), cfg.dynamicSmemBytes = smem;
	cfg.stream = 0, cfg.attrs = at, cfg.numAttrs = 1;
	if (zt)
		cudaCheck(cudaLaunchKernelEx(&cfg, vocab_loss_cluster_kernel<true>, z, zt, rl, targets, V, ldz, scale, grad, S));
	else
		cudaCheck(cudaLaunchKernelEx(&cfg, vocab_loss_cluster_kernel<false>, z, zt, rl, targets, V, ldz, scale, grad,
		                             S));
	return true;
#else
	(void)z, (void)zt, (void)rl, (void)targets, (void)rows, (void)V, (void)ldz, (void)scale, (void)grad;
	return false;
#endif
}

/* acc (one double) = (first ? 0 : acc) + the sum of rl (rows), in a fixed
 * order whatever the timing; on the last chunk loss = scale * acc */
__global__ void __launch_bounds__(SUM_THREADS)
vocab_loss_sum_kernel(float *loss, double *acc, const float *rl, int rows, int first, int last, float scale)
{
	__shared__ double sh[SUM_THREADS];
	int tid = threadIdx.x;
	double s = 0;
	for (int i = tid; i < rows; i += SUM_THREADS)
		s += rl[i];
	sh[tid] = s;
	__syncthreads();
	for (int o = SUM_THREADS / 2; o > 0; o /= 2) {
		if (tid < o)
			sh[tid] += sh[tid + o];
		__syncthreads();
	}
	if (tid == 0) {
		double t = (first ? 0.0 : *acc) + sh[0];
		*acc = t;
		if (last)
			*loss = (float)(scale * t);
	}
}

// ----------------------------------------------------------------------------
// launchers

#define HEAD_BYTES (256 + CEIL_DIV(VOCAB_LOSS_ROWS * 4, 256) * 256) /* the total, the row losses */

extern "C" size_t vocab_loss_work(int C, int V)
{
	(void)C;
	return HEAD_BYTES + (size_t)VOCAB_LOSS_ROWS * ldz_of(V) * sizeof(float);
}

/* logits (rows, ldz) float32 = x (rows, C) W^T: in cuBLAS's column-major
 * terms logits^T (V, rows) = op_T(W^T) x^T (as in matmul.cu) */
static void logits_gemm(float *d_z, const bf16_t *d_x, const bf16_t *d_w, int rows, int C, int V, int ldz)
{
	gemm_bf16(CUBLAS_OP_T, V, rows, C, d_w, C, d_x, C, d_z, CUDA_R_32F, ldz);
}

/* dhidden (rows, C) = dz (rows, V) W, dz bf16 with its rows 2 ldz apart
 * (each sits in the first half of its float32 row): dhidden^T (C, rows) =
 * W^T (C, V) dz^T (V, rows) */
static void dhidden_gemm(bf16_t *d_dh, const void *d_dz, const bf16_t *d_w, int rows, int C, int V, int ldz)
{
	gemm_bf16(CUBLAS_OP_N, C, rows, V, d_w, C, d_dz, 2 * ldz, d_dh, CUDA_R_16BF, C);
}

/* the codes of vocab_loss_logits8_cuda's logits: the student's rows hq
 * (n, C), hs (n), the teacher's tq, ts, W's rows wr (V, C), wrs (V) */
typedef struct {
	const uint8_t *hq, *tq, *wr;
	const float *hs, *ts, *wrs;
} Logits8;

/* vocab_loss_cuda, or with d_w8 (KL) vocab_loss_fp8_cuda; with lg (KL) the
 * logits from codes, d_hidden and d_teacher_hidden unread */
static void vocab_loss(float *d_loss, float *d_row_loss, bf16_t *d_dhidden, const bf16_t *d_hidden,
                       const bf16_t *d_teacher_hidden, const int32_t *d_targets, const bf16_t *d_w, const uint8_t *d_w8,
                       const float *d_w8s, const Logits8 *lg, int n, int C, int V, float scale, void *d_work)
{
	if ((d_targets == NULL) == (d_teacher_hidden == NULL && !lg) || n < 0 || C <= 0 || V <= 0) {
		fprintf(stderr, "vocab_loss_cuda: one of targets, teacher rows; n %d C %d V %d\n", n, C, V);
		exit(1);
	}
	if (n == 0) {
		cudaCheck(cudaMemsetAsync(d_loss, 0, sizeof(float)));
		return;
	}
	int kl = d_targets == NULL, ldz = ldz_of(V), R = kl ? VOCAB_LOSS_ROWS / 2 : VOCAB_LOSS_ROWS;
	char *work = (char *)d_work;
	double *acc = (double *)work;
	float *rl_scratch = (float *)(work + 256), *z = (float *)(work + HEAD_BYTES);
	float *zt = kl ? z + (size_t)R * ldz : NULL;
	for (int r0 = 0; r0 < n; r0 += R) {
		int rows = n - r0 < R ? n - r0 : R;
		if (lg) { /* V a multiple of 16: the product's rows are ldz apart */
			size_t o = (size_t)r0 * C;
			matmul_forward_fp8_f32_cuda(z, lg->hq + o, lg->hs + r0, lg->wr, lg->wrs, rows, C, V);
			matmul_forward_fp8_f32_cuda(zt, lg->tq + o, lg->ts + r0, lg->wr, lg->wrs, rows, C, V);
		} else {
			logits_gemm(z, d_hidden + (size_t)r0 * C, d_w, rows, C, V, ldz);
			if (kl)
				logits_gemm(zt, d_teacher_hidden + (size_t)r0 * C, d_w, rows, C, V, ldz);
		}
		float *rl = d_row_loss ? d_row_loss + r0 : rl_scratch;
		const int32_t *tg = kl ? NULL : d_targets + r0;
		if (!row_cluster_launch(z, zt, rl, tg, rows, V, ldz, scale, d_dhidden != NULL)) {
			vocab_loss_row_kernel<<<rows, ROW_THREADS>>>(z, zt, rl, tg, V, ldz, scale, d_dhidden != NULL);
			cudaCheck(cudaGetLastError());
		}
		vocab_loss_sum_kernel<<<1, SUM_THREADS>>>(d_loss, acc, rl, rows, r0 == 0, r0 + rows == n, scale);
		cudaCheck(cudaGetLastError());
		if (d_dhidden && d_w8) { /* dz's codes where the teacher's logits were */
			uint8_t *q = (uint8_t *)zt;
			float *sd = (float *)(q + ((size_t)rows * V + 255) / 256 * 256);
			fp8_rows_ld_cuda(q, sd, (const bf16_t *)z, 2 * (int64_t)ldz, rows, V);
			matmul_backward_fp8_cuda(d_dhidden + (size_t)r0 * C, 0, 0, q, sd, d_w8, d_w8s, rows, C, V);
		} else if (d_dhidden) {
			dhidden_gemm(d_dhidden + (size_t)r0 * C, z, d_w, rows, C, V, ldz);
		}
	}
}

extern "C" void vocab_loss_cuda(float *d_loss, float *d_row_loss, bf16_t *d_dhidden, const bf16_t *d_hidden,
                                const bf16_t *d_teacher_hidden, const int32_t *d_targets, const bf16_t *d_w, int n,
                                int C, int V, float scale, void *d_work)
{
	vocab_loss(d_loss, d_row_loss, d_dhidden, d_hidden, d_teacher_hidden, d_targets, d_w, NULL, NULL, NULL, n, C,
	           V, scale, d_work);
}

extern "C" void vocab_loss_fp8_cuda(float *d_loss, float *d_row_loss, bf16_t *d_dhidden, const bf16_t *d_hidden,
                                    const bf16_t *d_teacher_hidden, const bf16_t *d_w, const uint8_t *d_w8,
                                    const float *d_w8s, int n, int C, int V, float scale, void *d_work)
{
	if (!d_teacher_hidden || !d_w8 || V % 16) {
		fprintf(stderr, "vocab_loss_fp8_cuda: KL only, with W's codes, V %d a multiple of 16\n", V);
		exit(1);
	}
	vocab_loss(d_loss, d_row_loss, d_dhidden, d_hidden, d_teacher_hidden, NULL, d_w, d_w8, d_w8s, NULL, n, C, V,
	           scale, d_work);
}

extern "C" void vocab_loss_logits8_cuda(float *d_loss, float *d_row_loss, bf16_t *d_dhidden, const uint8_t *d_hq,
                                        const float *d_hs, const uint8_t *d_tq, const float *d_ts, const bf16_t *d_w,
                                        const uint8_t *d_wr, const float *d_wrs, const uint8_t *d_w8,
                                        const float *d_w8s, int n, int C, int V, float scale, void *d_work)
{
	if (!d_hq || !d_tq || !d_wr || V % 16 || C % 16) {
		fprintf(stderr, "vocab_loss_logits8_cuda: both sides' codes and W's, C %d and V %d multiples of 16\n",
		        C, V);
		exit(1);
	}
	Logits8 lg = {d_hq, d_tq, d_wr, d_hs, d_ts, d_wrs};
	vocab_loss(d_loss, d_row_loss, d_dhidden, NULL, NULL, NULL, d_w, d_w8, d_w8s, &lg, n, C, V, scale, d_work);
}
