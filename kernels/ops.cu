/*
 * ops: the memory-bound operators on the GPU, forward and backward: RMSNorm,
 * RoPE, SwiGLU, embedding lookup, residual add. bf16 in and out, float32
 * inside. Each is the twin of the same-named _cpu function in lib/ops_cpu.c
 * (tests/test_kernels.cu compares them).
 *
 * version 1: plain kernels, one warp per row for the norms, one thread per
 * element elsewhere; no fusion yet. Fusing norm + residual and RoPE into the
 * QKV epilogue are the next steps once the whole layer runs here.
 */
#include "cuda_common.cuh"
#include "gpu.h"

#define ROWS_PER_BLOCK 4

// ----------------------------------------------------------------------------
// RMSNorm: one warp per row

__global__ void rmsnorm_forward_kernel(bf16 *out, float *rstd, const bf16 *x, const bf16 *w, int n, int C,
                                       float eps)
{
	int row = blockIdx.x * ROWS_PER_BLOCK + threadIdx.y, lane = threadIdx.x;
	if (row >= n)
		return;
	const bf16 *xr = x + (size_t)row * C;
	float ss = 0;
	for (int i = lane; i < C; i += WARP_SIZE) {
		float v = __bfloat162float(xr[i]);
		ss += v * v;
	}
	float r = 1.0f / sqrtf(warp_sum(ss) / C + eps);
	for (int i = lane; i < C; i += WARP_SIZE)
		out[(size_t)row * C + i] = __float2bfloat16(__bfloat162float(xr[i]) * r * __bfloat162float(w[i]));
	if (lane == 0)
		rstd[row] = r;
}

/* y_i = x_i r w_i:  dx_i = r w_i dy_i - x_i r^3 / C * sum_j dy_j w_j x_j */
__global__ void rmsnorm_backward_kernel(bf16 *dx, const bf16 *dout, const bf16 *x, const float *rstd,
                                        const bf16 *w, int n, int C)
{
	int row = blockIdx.x * ROWS_PER_BLOCK + threadIdx.y, lane = threadIdx.x;
	if (row >= n)
		return;
	const bf16 *xr = x + (size_t)row * C, *dr = dout + (size_t)row * C;
	float dot = 0;
	for (int i = lane; i < C; i += WARP_SIZE)
		dot += __bfloat162float(dr[i]) * __bfloat162float(w[i]) * __bfloat162float(xr[i]);
	dot = warp_sum(dot);
	float r = rstd[row], c = r * r * r * dot / C;
	for (int i = lane; i < C; i += WARP_SIZE)
		dx[(size_t)row * C + i] = __float2bfloat16(r * __bfloat162float(w[i]) * __bfloat162float(dr[i]) -
		                                           c * __bfloat162float(xr[i]));
}

extern "C" void rmsnorm_forward_cuda(bf16_t *d_out, float *d_rstd, const bf16_t *d_x, const bf16_t *d_w,
                                     int n, int C, float eps)
{
	dim3 block(WARP_SIZE, ROWS_PER_BLOCK);
	rmsnorm_forward_kernel<<<CEIL_DIV(n, ROWS_PER_BLOCK), block>>>((bf16 *)d_out, d_rstd, (const bf16 *)d_x,
	                                                               (const bf16 *)d_w, n, C, eps);
	cudaCheck(cudaGetLastError());
}

extern "C" void rmsnorm_backward_cuda(bf16_t *d_dx, const bf16_t *d_dout, const bf16_t *d_x, const float *d_rstd,
                                      const bf16_t *d_w, int n, int C)
{
	dim3 block(WARP_SIZE, ROWS_PER_BLOCK);
	rmsnorm_backward_kernel<<<CEIL_DIV(n, ROWS_PER_BLOCK), block>>>(
		(bf16 *)d_dx, (const bf16 *)d_dout, (const bf16 *)d_x, d_rstd, (const bf16 *)d_w, n, C);
	cudaCheck(cudaGetLastError());
}

// ----------------------------------------------------------------------------
// embedding, residual, SwiGLU: one thread per element

__global__ void embedding_forward_kernel(bf16 *out, const int32_t *ids, const bf16 *w, int n, int C)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (int64_t)n * C)
		return;
	int t = (int)(i / C), c = (int)(i % C);
	out[i] = w[(size_t)ids[t] * C + c];
}

extern "C" void embedding_forward_cuda(bf16_t *d_out, const int32_t *d_ids, const bf16_t *d_w, int n, int C)
{
	int64_t total = (int64_t)n * C;
	embedding_forward_kernel<<<(unsigned)CEIL_DIV(total, 256), 256>>>((bf16 *)d_out, d_ids, (const bf16 *)d_w, n, C);
	cudaCheck(cudaGetLastError());
}

__global__ void residual_forward_kernel(bf16 *out, const bf16 *x, int64_t n)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n)
		out[i] = __float2bfloat16(__bfloat162float(out[i]) + __bfloat162float(x[i]));
}

extern "C" void residual_forward_cuda(bf16_t *d_out, const bf16_t *d_x, int64_t n)
{
	residual_forward_kernel<<<(unsigned)CEIL_DIV(n, 256), 256>>>((bf16 *)d_out, (const bf16 *)d_x, n);
	cudaCheck(cudaGetLastError());
}

__global__ void swiglu_forward_kernel(bf16 *out, const bf16 *gate, const bf16 *up, int64_t n)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n)
		return;
	float g = __bfloat162float(gate[i]);
	out[i] = __float2bfloat16(g / (1.0f + expf(-g)) * __bfloat162float(up[i]));
}

__global__ void swiglu_backward_kernel(bf16 *dgate, bf16 *dup, const bf16 *dout, const bf16 *gate,
                                       const bf16 *up, int64_t n)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n)
		return;
	float g = __bfloat162float(gate[i]), u = __bfloat162float(up[i]), d = __bfloat162float(dout[i]);
	float sg = 1.0f / (1.0f + expf(-g));
	dup[i] = __float2bfloat16(d * g * sg);
	dgate[i] = __float2bfloat16(d * u * sg * (1.0f + g * (1.0f - sg)));
}

extern "C" void swiglu_forward_cuda(bf16_t *d_out, const bf16_t *d_gate, const bf16_t *d_up, int64_t n)
{
	swiglu_forward_kernel<<<(unsigned)CEIL_DIV(n, 256), 256>>>((bf16 *)d_out, (const bf16 *)d_gate,
	                                                           (const bf16 *)d_up, n);
	cudaCheck(cudaGetLastError());
}

extern "C" void swiglu_backward_cuda(bf16_t *d_dgate, bf16_t *d_dup, const bf16_t *d_dout, const bf16_t *d_gate,
                                     const bf16_t *d_up, int64_t n)
{
	swiglu_backward_kernel<<<(unsigned)CEIL_DIV(n, 256), 256>>>((bf16 *)d_dgate, (bf16 *)d_dup,
	                                                            (const bf16 *)d_dout, (const bf16 *)d_gate,
	                                                            (const bf16 *)d_up, n);
	cudaCheck(cudaGetLastError());
}

// ----------------------------------------------------------------------------
// RoPE (HF rotate-half): one thread per (position, head, pair); the angle in
// float32 as transformers computes it, its cosine and sine in double as the
// CPU twin does. sign -1 is the transpose, the backward.

__global__ void rope_kernel(bf16 *x, const float *inv_freq, int B, int T, int pos0, int NH, int D, float sign)
{
	int half = D / 2;
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (int64_t)B * T * NH * half)
		return;
	int p = (int)(i % half);
	int64_t bth = i / half; /* (b*T + t) * NH + h */
	int t = (int)((bth / NH) % T);
	float ang = (float)(pos0 + t) * inv_freq[p];
	double s, c;
	sincos((double)ang, &s, &c);
	float cf = (float)c, sf = sign * (float)s;
	bf16 *xh = x + bth * D;
	float x1 = __bfloat162float(xh[p]), x2 = __bfloat162float(xh[p + half]);
	xh[p] = __float2bfloat16(x1 * cf - x2 * sf);
	xh[p + half] = __float2bfloat16(x2 * cf + x1 * sf);
}

static void rope_launch(bf16_t *d_x, const float *d_inv_freq, int B, int T, int pos0, int NH, int D, float sign)
{
	int64_t total = (int64_t)B * T * NH * (D / 2);
	rope_kernel<<<(unsigned)CEIL_DIV(total, 256), 256>>>((bf16 *)d_x, d_inv_freq, B, T, pos0, NH, D, sign);
	cudaCheck(cudaGetLastError());
}

extern "C" void rope_forward_cuda(bf16_t *d_x, const float *d_inv_freq, int B, int T, int pos0, int NH, int D)
{
	rope_launch(d_x, d_inv_freq, B, T, pos0, NH, D, 1.0f);
}

extern "C" void rope_backward_cuda(bf16_t *d_dx, const float *d_inv_freq, int B, int T, int pos0, int NH, int D)
{
	rope_launch(d_dx, d_inv_freq, B, T, pos0, NH, D, -1.0f);
}
