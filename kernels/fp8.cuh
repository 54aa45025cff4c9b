/*
 * fp8.cuh: float8 e4m3 codes on the device, shared by kernels/fp8.cu and the
 * kernels that write their outputs straight into codes (kernels/ops.cu's
 * RMSNorm): lib/fp8.c's code of a value (round to nearest even, saturating
 * at 448) and a row's inv and scale.
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

#endif
