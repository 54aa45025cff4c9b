/*
 * matmul: the linear layers through cuBLAS, bf16 operands, float32
 * accumulation. Our matrices are row-major and cuBLAS is column-major: a
 * row-major (R, C) matrix is a column-major (C, R) one, so
 *   out (n, OC) = x (n, IC) w^T   is   out^T = op_T(w^T) x^T   in cuBLAS terms,
 *   dx (n, IC) = dout (n, OC) w   is   dx^T = w^T dout^T.
 * Twin of matmul_forward_cpu / matmul_backward_cpu.
 *
 * version 1: cublasGemmEx with the default algorithm and a separate bias
 * kernel; cuBLASLt with a tuned algorithm and a fused bias epilogue is next.
 */
#include "cuda_common.cuh"
#include "gpu.h"

/* one handle; split-K reductions stay in float32 (cuBLAS by default may
 * reduce bf16 outputs in bf16, which costs the backward a percent) */
static cublasHandle_t handle(void)
{
	static cublasHandle_t h;
	if (!h) {
		cublasCheck(cublasCreate(&h));
		cublasCheck(cublasSetMathMode(h, (cublasMath_t)(CUBLAS_DEFAULT_MATH |
		                                                CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
	}
	return h;
}

cublasHandle_t cublas_handle(void)
{
	return handle();
}

__global__ void add_bias_kernel(bf16 *out, const bf16 *b, int n, int OC)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < (int64_t)n * OC)
		out[i] = __float2bfloat16(__bfloat162float(out[i]) + __bfloat162float(b[i % OC]));
}

extern "C" void matmul_forward_cuda(bf16_t *d_out, const bf16_t *d_x, const bf16_t *d_w, const bf16_t *d_b, int n,
                                    int IC, int OC)
{
	const float one = 1, zero = 0;
	cublasCheck(cublasGemmEx(handle(), CUBLAS_OP_T, CUBLAS_OP_N, OC, n, IC, &one, d_w, CUDA_R_16BF, IC, d_x,
	                         CUDA_R_16BF, IC, &zero, d_out, CUDA_R_16BF, OC, CUBLAS_COMPUTE_32F,
	                         CUBLAS_GEMM_DEFAULT));
	if (d_b) {
		add_bias_kernel<<<(unsigned)CEIL_DIV((int64_t)n * OC, 256), 256>>>((bf16 *)d_out, (const bf16 *)d_b, n, OC);
		cudaCheck(cudaGetLastError());
	}
}

extern "C" void matmul_backward_cuda(bf16_t *d_dx, const bf16_t *d_dout, const bf16_t *d_w, int n, int IC, int OC)
{
	const float one = 1, zero = 0;
	cublasCheck(cublasGemmEx(handle(), CUBLAS_OP_N, CUBLAS_OP_N, IC, n, OC, &one, d_w, CUDA_R_16BF, IC, d_dout,
	                         CUDA_R_16BF, OC, &zero, d_dx, CUDA_R_16BF, IC, CUBLAS_COMPUTE_32F,
	                         CUBLAS_GEMM_DEFAULT));
}
