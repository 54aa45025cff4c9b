/*
 * fp8: the backward's products in float8 e4m3 (search-logits --grad fp8),
 * and the codes of the supernet's forward's (--forward fp8).
 * Twin of lib/fp8.c: the same codes (round to nearest even, saturating at
 * 448) and the same scales (a row's amax / 448; inv = 448 / amax in IEEE
 * division), so a matrix quantised here is the CPU's byte for byte.
 *
 *   fp8_rows_cuda            rows of a bf16 matrix (dout); fp8_rows_ld_cuda
 *                            with the rows ldx apart (the vocabulary's dz)
 *   fp8_cols_t_cuda          a weight's columns, transposed: w (OC, IC) ->
 *                            w^T (IC, OC), once per model
 *   swiglu_packed_backward_fp8_cuda
 *                            dgu = swiglu'(dact) straight into codes: a
 *                            block holds its row, so the 2F-wide rows are
 *                            never written in bf16 (the largest of the
 *                            backward's inputs: 180 MB a layer at the
 *                            Qwen2.5-3B shape); the same codes as
 *                            swiglu_packed_backward_cuda + fp8_rows_cuda
 *   swiglu_packed_forward_fp8_cuda
 *                            act = silu(gate) up straight into codes, the
 *                            same way (--forward fp8: the down product's
 *                            input, never written in bf16)
 *   matmul_backward_fp8_cuda dx = dout w through cuBLASLt's e4m3 product
 *                            with a scale vector on each side (Hopper;
 *                            kernels/matmul.cu)
 *
 * Why: the search's step is held at the card's power limit (bench/RESULTS.md,
 * version 10), and an e4m3 product takes about half the energy of a bf16
 * one (bench/bin/gemm8). --grad fp8 takes the backward's products through
 * float8, which moves the gradient of alpha by the quantisation noise of
 * dout and w (lib/fp8.h); --forward fp8 the forwards' layer products too,
 * which moves the KL itself (kernels/forward.cu).
 */
#include "cuda_common.cuh"
#include "fp8.cuh" // defines: e4m3, inv_of, scale_of, store8_e4m3, block_row_inv
#include "gpu.h"

// ----------------------------------------------------------------------------
// rows

#define ROWS_NT 256

/* a block a row: its amax, then its codes (VEC8: k % 8 == 0, aligned) */
template <int VEC8>
__global__ void __launch_bounds__(ROWS_NT) fp8_rows_kernel(uint8_t *q, float *scale, const bf16 *x, int64_t ldx, int k)
{
	const bf16 *r = x + (int64_t)blockIdx.x * ldx;
	uint8_t *qr = q + (int64_t)blockIdx.x * k;
	float m = 0, v[8];
	if (VEC8) {
		for (int j = threadIdx.x; j < k / 8; j += ROWS_NT) {
			load8(v, r, 0, j);
#pragma unroll
			for (int i = 0; i < 8; i++)
				m = fmaxf(m, fabsf(v[i]));
		}
	} else {
		for (int j = threadIdx.x; j < k; j += ROWS_NT)
			m = fmaxf(m, fabsf(__bfloat162float(r[j])));
	}
	float inv = block_row_inv<ROWS_NT>(scale, blockIdx.x, m);
	if (VEC8) {
		for (int j = threadIdx.x; j < k / 8; j += ROWS_NT) {
			load8(v, r, 0, j);
			store8_e4m3(qr + 8 * j, v, inv);
		}
	} else {
		for (int j = threadIdx.x; j < k; j += ROWS_NT)
			qr[j] = e4m3(__bfloat162float(r[j]) * inv);
	}
}

extern "C" void fp8_rows_ld_cuda(uint8_t *d_q, float *d_scale, const bf16_t *d_x, int64_t ldx, int n, int k)
{
	if (n == 0)
		return;
	if (k % 8 == 0 && ldx % 8 == 0 && ((uintptr_t)d_x & 15) == 0 && ((uintptr_t)d_q & 7) == 0)
		fp8_rows_kernel<1><<<n, ROWS_NT>>>(d_q, d_scale, (const bf16 *)d_x, ldx, k);
	else
		fp8_rows_kernel<0><<<n, ROWS_NT>>>(d_q, d_scale, (const bf16 *)d_x, ldx, k);
	cudaCheck(cudaGetLastError());
}

extern "C" int fp8_unfused(void) { return env_flag("DASH_FP8_UNFUSED"); }

extern "C" void fp8_rows_cuda(uint8_t *d_q, float *d_scale, const bf16_t *d_x, int n, int k)
{
	fp8_rows_ld_cuda(d_q, d_scale, d_x, k, n, k);
}

// ----------------------------------------------------------------------------
// a weight's columns

#define COLS_SLAB 256 /* rows of w a thread takes for the amax */

__global__ void col_amax_kernel(unsigned *amax, const bf16 *w, int OC, int IC)
{
	int i = blockIdx.x * blockDim.x + threadIdx.x, o0 = blockIdx.y * COLS_SLAB;
	if (i >= IC)
		return;
	float m = 0;
	for (int o = o0; o < OC && o < o0 + COLS_SLAB; o++)
		m = fmaxf(m, fabsf(__bfloat162float(w[(int64_t)o * IC + i])));
	atomicMax(amax + i, __float_as_uint(m)); /* non-negative floats order as their bits */
}

/* a 32 x 32 tile of w through shared memory into w^T's codes */
__global__ void cols_t_kernel(uint8_t *q, float *scale, const unsigned *amax, const bf16 *w, int OC, int IC)
{
	__shared__ float tile[32][33];
	int i0 = blockIdx.x * 32, o0 = blockIdx.y * 32;
	for (int y = threadIdx.y; y < 32; y += blockDim.y) {
		int o = o0 + y, i = i0 + threadIdx.x;
		tile[y][threadIdx.x] = o < OC && i < IC ? __bfloat162float(w[(int64_t)o * IC + i]) : 0;
	}
	__syncthreads();
	for (int y = threadIdx.y; y < 32; y += blockDim.y) {
		int i = i0 + y, o = o0 + threadIdx.x;
		if (i >= IC)
			continue;
		float m = __uint_as_float(amax[i]), inv = inv_of(m);
		if (o < OC)
			q[(int64_t)i * OC + o] = e4m3(tile[threadIdx.x][y] * inv);
		if (blockIdx.y == 0 && threadIdx.x == 0)
			scale[i] = scale_of(m);
	}
}

extern "C" void fp8_cols_t_cuda(uint8_t *d_q, float *d_scale, const bf16_t *d_w, int OC, int IC)
{
	if (OC == 0 || IC == 0)
		return;
	unsigned *amax = (unsigned *)gpu_alloc((size_t)IC * sizeof(unsigned));
	cudaCheck(cudaMemsetAsync(amax, 0, (size_t)IC * sizeof(unsigned)));
	col_amax_kernel<<<dim3(CEIL_DIV(IC, 256), CEIL_DIV(OC, COLS_SLAB)), 256>>>(amax, (const bf16 *)d_w, OC, IC);
	cudaCheck(cudaGetLastError());
	cols_t_kernel<<<dim3(CEIL_DIV(IC, 32), CEIL_DIV(OC, 32)), dim3(32, 8)>>>(d_q, d_scale, amax, (const bf16 *)d_w,
	                                                                         OC, IC);
	cudaCheck(cudaGetLastError());
	gpu_free(amax); /* cudaFree waits for the kernels */
}

// ----------------------------------------------------------------------------
// SwiGLU's backward into codes

#define SWIGLU_NT 256
#define SWIGLU_SMEM_MAX (200 << 10) /* F up to 51200 */

/* the shared memory a row of b bytes asks for: past 48 KB, less what
 * block_max holds statically, a kernel has to opt in (*allowed: what it
 * has been allowed so far) */
template <typename K> static void row_smem(K kernel, size_t b, size_t *allowed)
{
	if (!*allowed)
		*allowed = (48 << 10) - SWIGLU_NT / WARP_SIZE * sizeof(float);
	if (b > *allowed)
		smem_allow(kernel, *allowed = b);
}

/* a block a row t: dgate, dup (swiglu_packed_backward_cuda's, rounded to
 * bf16 as it rounds them) into shared memory, the row's amax over both,
 * then the codes: fp8_rows_cuda of that kernel's dgu, without dgu's round
 * trip through device memory. The row sits in shared memory (4F bytes,
 * several blocks an SM), not in registers, so that enough rows are in
 * flight to keep the loads streaming. */
__global__ void __launch_bounds__(SWIGLU_NT)
        swiglu_bwd_fp8_kernel(uint8_t *q, float *scale, const bf16 *dout, const bf16 *gu, int F)
{
	extern __shared__ uint4 row[]; /* dgate | dup, bf16 */
	int64_t t = blockIdx.x;
	const bf16 *g = gu + t * 2 * F, *d = dout + t * F;
	uint8_t *qr = q + t * 2 * F;
	float m = 0;
	for (int j0 = threadIdx.x; j0 < F / 8;
	     j0 += 2 * SWIGLU_NT) { /* two packs a turn: their loads in flight together */
		float x[2][8], u[2][8], dv[2][8];
		int np = j0 + SWIGLU_NT < F / 8 ? 2 : 1;
#pragma unroll
		for (int p = 0; p < 2; p++)
			if (p < np) {
				int j = j0 + p * SWIGLU_NT;
				load8(x[p], g, 0, j), load8(u[p], g + F, 0, j), load8(dv[p], d, 0, j);
			}
#pragma unroll
		for (int p = 0; p < 2; p++) {
			if (p >= np)
				break;
			float dg[8], du[8];
#pragma unroll
			for (int i = 0; i < 8; i++) {
				float xi = x[p][i], sg = sigmoid_fast(xi);
				du[i] = __bfloat162float(__float2bfloat16(dv[p][i] * xi * sg));
				dg[i] = __bfloat162float(
				        __float2bfloat16(dv[p][i] * u[p][i] * sg * (1.0f + xi * (1.0f - sg))));
				m = fmaxf(m, fmaxf(fabsf(du[i]), fabsf(dg[i])));
			}
			store8_bf16(row, dg, j0 + p * SWIGLU_NT);
			store8_bf16(row, du, F / 8 + j0 + p * SWIGLU_NT);
		}
	}
	float inv = block_row_inv<SWIGLU_NT>(scale, t, m), v[8]; /* its barrier: the row's stores before the loads below */
	for (int j = threadIdx.x; j < F / 8; j += SWIGLU_NT) { /* 16 codes a store */
		uint4 c;
		load8(v, row, 0, 2 * j);
		store8_e4m3((uint8_t *)&c, v, inv);
		load8(v, row, 0, 2 * j + 1);
		store8_e4m3((uint8_t *)&c + 8, v, inv);
		*(uint4 *)(qr + 16 * j) = c;
	}
}

extern "C" int swiglu_packed_backward_fp8_cuda(uint8_t *d_q, float *d_scale, const bf16_t *d_dout, const bf16_t *d_gu,
                                               int n, int F)
{
	if (fp8_unfused())
		return 0;
	static size_t allowed;
	size_t smem = (size_t)4 * F;
	if (F % 8 || smem > SWIGLU_SMEM_MAX || ((uintptr_t)d_q & 15) || ((uintptr_t)d_dout & 15) ||
	    ((uintptr_t)d_gu & 15))
		return 0;
	if (n == 0)
		return 1;
	row_smem(swiglu_bwd_fp8_kernel, smem, &allowed);
	swiglu_bwd_fp8_kernel<<<n, SWIGLU_NT, smem>>>(d_q, d_scale, (const bf16 *)d_dout, (const bf16 *)d_gu, F);
	cudaCheck(cudaGetLastError());
	return 1;
}

// ----------------------------------------------------------------------------
// SwiGLU's forward into codes (--forward fp8)

/* a block a row t: act = silu(gate) up (swiglu_packed_forward_cuda's,
 * rounded to bf16 as it rounds them) into shared memory, the row's amax,
 * then the codes: fp8_rows_cuda of that kernel's act, without act's round
 * trip through device memory (90 MB a layer written and read back at the
 * Qwen2.5-3B shape) */
__global__ void __launch_bounds__(SWIGLU_NT) swiglu_fwd_fp8_kernel(uint8_t *q, float *scale, const bf16 *gu, int F)
{
	extern __shared__ uint4 row[]; /* act, bf16 */
	int64_t t = blockIdx.x;
	const bf16 *g = gu + t * 2 * F;
	uint8_t *qr = q + t * F;
	float m = 0;
	for (int j0 = threadIdx.x; j0 < F / 8; j0 += 2 * SWIGLU_NT) {
		float x[2][8], u[2][8];
		int np = j0 + SWIGLU_NT < F / 8 ? 2 : 1;
#pragma unroll
		for (int p = 0; p < 2; p++)
			if (p < np)
				load8(x[p], g, 0, j0 + p * SWIGLU_NT), load8(u[p], g + F, 0, j0 + p * SWIGLU_NT);
#pragma unroll
		for (int p = 0; p < 2; p++) {
			if (p >= np)
				break;
			float a[8];
#pragma unroll
			for (int i = 0; i < 8; i++) {
				a[i] = __bfloat162float(__float2bfloat16(silu_fast(x[p][i]) * u[p][i]));
				m = fmaxf(m, fabsf(a[i]));
			}
			store8_bf16(row, a, j0 + p * SWIGLU_NT);
		}
	}
	float inv = block_row_inv<SWIGLU_NT>(scale, t, m), v[8]; /* its barrier: the row's stores before the loads below */
	for (int j = threadIdx.x; j < F / 8; j += SWIGLU_NT) {
		load8(v, row, 0, j);
		store8_e4m3(qr + 8 * j, v, inv);
	}
}

extern "C" int swiglu_packed_forward_fp8_cuda(uint8_t *d_q, float *d_scale, const bf16_t *d_gu, int n, int F)
{
	if (fp8_unfused())
		return 0;
	static size_t allowed;
	size_t smem = (size_t)2 * F;
	if (F % 8 || smem > SWIGLU_SMEM_MAX || ((uintptr_t)d_q & 7) || ((uintptr_t)d_gu & 15))
		return 0;
	if (n == 0)
		return 1;
	row_smem(swiglu_fwd_fp8_kernel, smem, &allowed);
	swiglu_fwd_fp8_kernel<<<n, SWIGLU_NT, smem>>>(d_q, d_scale, (const bf16 *)d_gu, F);
	cudaCheck(cudaGetLastError());
	return 1;
}
