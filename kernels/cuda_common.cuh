/*
 * cuda_common: error checks and small helpers shared by every kernel file.
 * Every CUDA call is wrapped in cudaCheck (cuBLAS calls in cublasCheck) and
 * every launch is followed by cudaCheck(cudaGetLastError()); failures name
 * the file and line and exit 1.
 */
#ifndef DASH_CUDA_COMMON_CUH
#define DASH_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define WARP_SIZE 32
#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

static inline void cuda_check_(cudaError_t err, const char *file, int line)
{
	if (err != cudaSuccess) {
		fprintf(stderr, "[CUDA ERROR] at file %s:%d: %s\n", file, line, cudaGetErrorString(err));
		exit(1);
	}
}
#define cudaCheck(err) cuda_check_((err), __FILE__, __LINE__)

static inline void cublas_check_(cublasStatus_t st, const char *file, int line)
{
	if (st != CUBLAS_STATUS_SUCCESS) {
		fprintf(stderr, "[cuBLAS ERROR] at file %s:%d: %s\n", file, line, cublasGetStatusString(st));
		exit(1);
	}
}
#define cublasCheck(st) cublas_check_((st), __FILE__, __LINE__)

typedef __nv_bfloat16 bf16;

/* the one cuBLAS handle of kernels/ (made in matmul.cu on first use), with
 * reduced-precision split-K reductions disallowed */
cublasHandle_t cublas_handle(void);

/* the sum of v over the warp, in every lane */
__device__ __forceinline__ float warp_sum(float v)
{
	for (int o = WARP_SIZE / 2; o > 0; o /= 2)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

#endif
