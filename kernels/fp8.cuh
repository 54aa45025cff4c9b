/*
 * fp8.cuh: float8 e4m3 codes on the device, shared by kernels/fp8.cu and the
 * kernels that write their outputs straight into codes (kernels/ops.cu's
 * norms, RoPE's backward and the attentions' mixture, kernels/linear_op.cu's
 * output norm): lib/fp8.c's code of a value (round to nearest even,
 * saturating at 448), a row's inv and scale, and a block's row.
 */
#ifndef DASH_FP8_CUH
#define DASH_FP8_CUH

#include <cuda_fp8.h>

extern "C" {
#include "fp8.h" // defines: FP8_AMAX_MIN
}

__device__ __forceinline__ uint8_t e4m3(float x)
{
	return (uint8_t)__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
}

/* a row of amax m: what its values are multiplied by into codes, and the
 * scale its codes are multiplied by back (lib/fp8.c's fp8_inv and
 * fp8_scale: zeros below FP8_AMAX_MIN) */
__device__ __forceinline__ float inv_of(float m) { return m >= FP8_AMAX_MIN ? 448.0f / m : 0.0f; }
__device__ __forceinline__ float scale_of(float m) { return m >= FP8_AMAX_MIN ? m / 448.0f : 1.0f; }

/* 8 codes, one 8-byte store */
__device__ __forceinline__ void store8_e4m3(uint8_t *q, const float *x, float inv)
{
	uint2 v;
	uint8_t *b = (uint8_t *)&v;
#pragma unroll
	for (int j = 0; j < 8; j++)
		b[j] = e4m3(x[j] * inv);
	*(uint2 *)q = v;
}

/* the largest of every thread's m, in every thread */
template <int NT> __device__ __forceinline__ float block_max(float m)
{
	__shared__ float part[NT / WARP_SIZE];
	for (int o = WARP_SIZE / 2; o; o >>= 1)
		m = fmaxf(m, __shfl_xor_sync(~0u, m, o));
	__syncthreads(); /* part may still be read from a previous call */
	if (threadIdx.x % WARP_SIZE == 0)
		part[threadIdx.x / WARP_SIZE] = m;
	__syncthreads();
	m = 0;
	for (int w = 0; w < NT / WARP_SIZE; w++)
		m = fmaxf(m, part[w]);
	return m;
}

/* a row of codes a block: the row's amax from every thread's m (block_max,
 * whose barriers also order the block's earlier shared-memory stores
 * before what follows), its scale written by thread 0; returns what its
 * values are multiplied by into codes */
template <int NT> __device__ __forceinline__ float block_row_inv(float *scale, int64_t row, float m)
{
	m = block_max<NT>(m);
	if (threadIdx.x == 0)
		scale[row] = scale_of(m);
	return inv_of(m);
}

#endif
