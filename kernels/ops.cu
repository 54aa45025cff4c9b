/*
 * ops: the memory-bound operators on the GPU, forward and backward: RMSNorm,
 * RoPE, SwiGLU, embedding lookup, residual add, and the fused forms the
 * teacher's layer uses. bf16 in and out, float32 inside. Each is the twin
 * of the same-named _cpu function in lib/ops_cpu.c (tests/test_kernels.cu
 * compares them).
 *
 * version 1: plain kernels, one warp per row for the norms, one thread per
 * element elsewhere.
 * version 2 (not yet measured): fused kernels for kernels/forward.cu,
 * 16-byte loads where the width allows: the residual add with the RMSNorm
 * that follows it (and their backward with the residual gradient), SwiGLU
 * on packed gate | up rows, and the split of the packed q | k | v projection
 * with its bias and RoPE (and back, into one packed gradient). The version 1
 * kernels stay, twin-tested, for other callers.
 * version 3: the q | k | v split with RoPE (and back) a block per position,
 * its cosines and sines once in shared memory, 16-byte loads and stores:
 * 14.7 and 14.2 us a layer at 4096 tokens of the Qwen2.5-3B shape (ncu,
 * H100), 39.4 and 27.5 before. (A residual RMSNorm backward holding its
 * rows in registers took 155 registers and ran slower, 34.9 us against
 * 31.5: not kept.)
 * version 4: rmsnorm_forward 16 bytes at a time (rmsnorm_forward_vec_kernel)
 * where the rows allow: the teacher's norms after the GEMMs that add the
 * residual themselves (kernels/forward.cu, version 4).
 */
#include <string.h>

#include "cuda_common.cuh"
#include "fp8.cuh" // defines: inv_of, scale_of, store8_e4m3, block_row_inv
#include "gpu.h"

extern "C" {
#include "util.h" // defines: BUG
}

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

static void rmsnorm_forward_vec_launch(bf16 *out, float *rstd, const bf16 *x, const bf16 *w, int n, int C,
                                       float eps);
static bool aligned16(const void *p);

extern "C" void rmsnorm_forward_cuda(bf16_t *d_out, float *d_rstd, const bf16_t *d_x, const bf16_t *d_w,
                                     int n, int C, float eps)
{
	if (C % 8 == 0 && aligned16(d_out) && aligned16(d_x) && aligned16(d_w)) {
		rmsnorm_forward_vec_launch((bf16 *)d_out, d_rstd, (const bf16 *)d_x, (const bf16 *)d_w, n, C, eps);
		return;
	}
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
	out[i] = __float2bfloat16(silu_fast(g) * __bfloat162float(up[i]));
}

__global__ void swiglu_backward_kernel(bf16 *dgate, bf16 *dup, const bf16 *dout, const bf16 *gate,
                                       const bf16 *up, int64_t n)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n)
		return;
	float g = __bfloat162float(gate[i]), u = __bfloat162float(up[i]), d = __bfloat162float(dout[i]);
	float sg = sigmoid_fast(g);
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

/* the cosine and sine of the angle pos inv_freq (the angle rounded to
 * float32, its cosine and sine in double) */
__device__ __forceinline__ void rope_cos_sin(int pos, float inv_freq, float *cf, float *sf)
{
	double s, c;
	sincos((double)((float)pos * inv_freq), &s, &c);
	*cf = (float)c, *sf = (float)s;
}

__global__ void rope_kernel(bf16 *x, const float *inv_freq, int B, int T, int pos0, int NH, int D, float sign)
{
	int half = D / 2;
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (int64_t)B * T * NH * half)
		return;
	int p = (int)(i % half);
	int64_t bth = i / half; /* (b*T + t) * NH + h */
	int t = (int)((bth / NH) % T);
	float cf, sf;
	rope_cos_sin(pos0 + t, inv_freq[p], &cf, &sf);
	sf *= sign;
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

// ----------------------------------------------------------------------------
// fused operators for the teacher's layer (kernels/forward.cu): each is the
// twin of the same-named composition in lib/ops_cpu.c. The row kernels move
// 8 bf16 (16 bytes) at a time when the width is a multiple of 8 and every
// pointer is 16-byte aligned (VEC 8), one at a time otherwise (VEC 1).

template <int VEC> struct Pack {
	bf16 v[VEC];
};

template <int VEC> __device__ __forceinline__ Pack<VEC> load_pack(const bf16 *p)
{
	Pack<VEC> r;
	if constexpr (VEC == 8) {
		int4 raw = *(const int4 *)p;
		memcpy(&r, &raw, sizeof raw);
	} else {
		for (int j = 0; j < VEC; j++)
			r.v[j] = p[j];
	}
	return r;
}

template <int VEC> __device__ __forceinline__ void store_pack(bf16 *p, const Pack<VEC> &r)
{
	if constexpr (VEC == 8) {
		int4 raw;
		memcpy(&raw, &r, sizeof raw);
		*(int4 *)p = raw;
	} else {
		for (int j = 0; j < VEC; j++)
			p[j] = r.v[j];
	}
}

/* VEC values of a row as float32, from bf16 or float32 (VEC 8: 16-byte
 * aligned) */
template <int VEC> __device__ __forceinline__ void load_f32(float (&f)[VEC], const bf16 *p)
{
	Pack<VEC> v = load_pack<VEC>(p);
	for (int j = 0; j < VEC; j++)
		f[j] = __bfloat162float(v.v[j]);
}
template <int VEC> __device__ __forceinline__ void load_f32(float (&f)[VEC], const float *p)
{
	if constexpr (VEC == 8) {
		load8(f, p, 1, 0);
	} else {
		for (int j = 0; j < VEC; j++)
			f[j] = p[j];
	}
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* a row of codes a warp (blockDim.x 32): the row's amax from each lane's
 * m, its scale written by lane 0; returns what its values are multiplied
 * by into codes */
__device__ float warp_row_inv(float *scale, int row, float m)
{
	for (int o = WARP_SIZE / 2; o; o >>= 1)
		m = fmaxf(m, __shfl_xor_sync(~0u, m, o));
	if (threadIdx.x == 0)
		scale[row] = scale_of(m);
	return inv_of(m);
}

/* the norms' codes (CODES below): out = h r w's row, whose amax over the
 * warp is m, made again 8 values at a time and written as e4m3 codes */
__device__ void norm_codes(uint8_t *q, float *scale, size_t r0, int row, const bf16 *h, const bf16 *w, float r, float m,
                           int C)
{
	float inv = warp_row_inv(scale, row, m), v[8];
	for (int i = threadIdx.x * 8; i < C; i += WARP_SIZE * 8) {
		Pack<8> hv = load_pack<8>(h + r0 + i), wv = load_pack<8>(w + i);
		for (int j = 0; j < 8; j++)
			v[j] = __bfloat162float(
			        __float2bfloat16(__bfloat162float(hv.v[j]) * r * __bfloat162float(wv.v[j])));
		store8_e4m3(q + r0 + i, v, inv);
	}
}

/* h = x + a (rounded to bf16, as stored), then out = h r w with r from the
 * rounded h; one warp per row. h may be x: each lane reads x before it
 * writes h at the same indices, and reads back only what it wrote. CODES
 * (VEC 8): also out's codes (norm_codes), out written only where it is
 * not NULL. */
template <int VEC, int CODES>
__global__ void residual_rmsnorm_forward_kernel(bf16 *h, bf16 *out, float *rstd, uint8_t *q, float *scale,
                                                const bf16 *x, const bf16 *a, const bf16 *w, int n, int C, float eps)
{
	int row = blockIdx.x * ROWS_PER_BLOCK + threadIdx.y, lane = threadIdx.x;
	if (row >= n)
		return;
	size_t r0 = (size_t)row * C;
	float ss = 0, m = 0;
	for (int i = lane * VEC; i < C; i += WARP_SIZE * VEC) {
		Pack<VEC> xv = load_pack<VEC>(x + r0 + i), av = load_pack<VEC>(a + r0 + i), hv;
		for (int j = 0; j < VEC; j++) {
			hv.v[j] = __float2bfloat16(__bfloat162float(xv.v[j]) + __bfloat162float(av.v[j]));
			float f = __bfloat162float(hv.v[j]);
			ss += f * f;
		}
		store_pack<VEC>(h + r0 + i, hv);
	}
	float r = 1.0f / sqrtf(warp_sum(ss) / C + eps);
	for (int i = lane * VEC; i < C; i += WARP_SIZE * VEC) {
		Pack<VEC> hv = load_pack<VEC>(h + r0 + i), wv = load_pack<VEC>(w + i), ov;
		for (int j = 0; j < VEC; j++) {
			ov.v[j] = __float2bfloat16(__bfloat162float(hv.v[j]) * r * __bfloat162float(wv.v[j]));
			if (CODES)
				m = fmaxf(m, fabsf(__bfloat162float(ov.v[j])));
		}
		if (!CODES || out)
			store_pack<VEC>(out + r0 + i, ov);
	}
	if (lane == 0)
		rstd[row] = r;
	if (CODES)
		norm_codes(q, scale, r0, row, h, w, r, m, C);
}

/* the codes of a row y that this warp has just written (each lane reads
 * back its own stores), m its lane's amax */
__device__ void row_codes(uint8_t *q, float *scale, size_t r0, int row, const bf16 *y, float m, int C)
{
	float inv = warp_row_inv(scale, row, m), v[8];
	for (int i = threadIdx.x * 8; i < C; i += WARP_SIZE * 8) {
		load_f32<8>(v, y + r0 + i);
		store8_e4m3(q + r0 + i, v, inv);
	}
}

/* dh = dres + r w dout - h r^3 / C * sum_j dout_j w_j h_j; one warp per
 * row; dout bf16 or float32 (DT). dh may be dres (read and written at the
 * same index by one lane). CODES (VEC 8): also dh's e4m3 codes, from a
 * third pass over what each lane wrote of dh. */
template <int VEC, typename DT, int CODES>
__global__ void residual_rmsnorm_backward_kernel(bf16 *dh, uint8_t *q, float *scale, const DT *dout, const bf16 *dres,
                                                 const bf16 *h, const float *rstd, const bf16 *w, int n, int C)
{
	int row = blockIdx.x * ROWS_PER_BLOCK + threadIdx.y, lane = threadIdx.x;
	if (row >= n)
		return;
	size_t r0 = (size_t)row * C;
	float dot = 0, m = 0, dv[VEC], hv[VEC], wv[VEC], rv[VEC];
	for (int i = lane * VEC; i < C; i += WARP_SIZE * VEC) {
		load_f32<VEC>(dv, dout + r0 + i), load_f32<VEC>(hv, h + r0 + i), load_f32<VEC>(wv, w + i);
		for (int j = 0; j < VEC; j++)
			dot += dv[j] * wv[j] * hv[j];
	}
	dot = warp_sum(dot);
	float r = rstd[row], c = r * r * r * dot / C;
	for (int i = lane * VEC; i < C; i += WARP_SIZE * VEC) {
		load_f32<VEC>(dv, dout + r0 + i), load_f32<VEC>(hv, h + r0 + i), load_f32<VEC>(wv, w + i);
		load_f32<VEC>(rv, dres + r0 + i);
		Pack<VEC> ov;
		for (int j = 0; j < VEC; j++) {
			ov.v[j] = __float2bfloat16(rv[j] + r * wv[j] * dv[j] - c * hv[j]);
			if (CODES)
				m = fmaxf(m, fabsf(__bfloat162float(ov.v[j])));
		}
		store_pack<VEC>(dh + r0 + i, ov);
	}
	if (CODES)
		row_codes(q, scale, r0, row, dh, m, C);
}

/* rmsnorm_forward_kernel 8 bf16 (16 bytes) at a time, for C % 8 == 0 and
 * 16-byte aligned rows: the same arithmetic (the sum of squares in another
 * order), one warp per row; the second pass reads the row again (from L1
 * or L2, 4 KB at C 2048). CODES: also out's codes (norm_codes: the amax
 * from the second pass, the codes from a third that makes the same values
 * again), out written only where it is not NULL. */
template <int CODES>
__global__ void rmsnorm_forward_vec_kernel(bf16 *out, float *rstd, uint8_t *q, float *scale, const bf16 *x,
                                           const bf16 *w, int n, int C, float eps)
{
	int row = blockIdx.x * ROWS_PER_BLOCK + threadIdx.y, lane = threadIdx.x;
	if (row >= n)
		return;
	size_t r0 = (size_t)row * C;
	float ss = 0, m = 0;
	for (int i = lane * 8; i < C; i += WARP_SIZE * 8) {
		Pack<8> xv = load_pack<8>(x + r0 + i);
		for (int j = 0; j < 8; j++) {
			float f = __bfloat162float(xv.v[j]);
			ss += f * f;
		}
	}
	float r = 1.0f / sqrtf(warp_sum(ss) / C + eps);
	for (int i = lane * 8; i < C; i += WARP_SIZE * 8) {
		Pack<8> xv = load_pack<8>(x + r0 + i), wv = load_pack<8>(w + i), ov;
		for (int j = 0; j < 8; j++) {
			ov.v[j] = __float2bfloat16(__bfloat162float(xv.v[j]) * r * __bfloat162float(wv.v[j]));
			if (CODES)
				m = fmaxf(m, fabsf(__bfloat162float(ov.v[j])));
		}
		if (!CODES || out)
			store_pack<8>(out + r0 + i, ov);
	}
	if (lane == 0)
		rstd[row] = r;
	if (CODES)
		norm_codes(q, scale, r0, row, x, w, r, m, C);
}

static void rmsnorm_forward_vec_launch(bf16 *out, float *rstd, const bf16 *x, const bf16 *w, int n, int C, float eps)
{
	dim3 block(WARP_SIZE, ROWS_PER_BLOCK);
	rmsnorm_forward_vec_kernel<0><<<CEIL_DIV(n, ROWS_PER_BLOCK), block>>>(out, rstd, NULL, NULL, x, w, n, C, eps);
	cudaCheck(cudaGetLastError());
}

extern "C" int rmsnorm_forward_fp8_cuda(bf16_t *d_out, float *d_rstd, uint8_t *d_q, float *d_scale, const bf16_t *d_x,
                                        const bf16_t *d_w, int n, int C, float eps)
{
	if (fp8_unfused())
		return 0;
	if (C % 8 || (d_out && !aligned16(d_out)) || !aligned16(d_x) || !aligned16(d_w) || ((uintptr_t)d_q & 7))
		return 0;
	if (n == 0)
		return 1;
	dim3 block(WARP_SIZE, ROWS_PER_BLOCK);
	rmsnorm_forward_vec_kernel<1><<<CEIL_DIV(n, ROWS_PER_BLOCK), block>>>(
	        (bf16 *)d_out, d_rstd, d_q, d_scale, (const bf16 *)d_x, (const bf16 *)d_w, n, C, eps);
	cudaCheck(cudaGetLastError());
	return 1;
}

extern "C" void residual_rmsnorm_forward_cuda(bf16_t *d_h, bf16_t *d_out, float *d_rstd, const bf16_t *d_x,
                                              const bf16_t *d_a, const bf16_t *d_w, int n, int C, float eps)
{
	dim3 block(WARP_SIZE, ROWS_PER_BLOCK);
	unsigned grid = (unsigned)CEIL_DIV(n, ROWS_PER_BLOCK);
	bf16 *h = (bf16 *)d_h, *out = (bf16 *)d_out;
	const bf16 *x = (const bf16 *)d_x, *a = (const bf16 *)d_a, *w = (const bf16 *)d_w;
	if (C % 8 == 0 && aligned16(d_h) && aligned16(d_out) && aligned16(d_x) && aligned16(d_a) && aligned16(d_w))
		residual_rmsnorm_forward_kernel<8, 0><<<grid, block>>>(h, out, d_rstd, NULL, NULL, x, a, w, n, C, eps);
	else
		residual_rmsnorm_forward_kernel<1, 0><<<grid, block>>>(h, out, d_rstd, NULL, NULL, x, a, w, n, C, eps);
	cudaCheck(cudaGetLastError());
}

extern "C" int residual_rmsnorm_forward_fp8_cuda(bf16_t *d_h, bf16_t *d_out, float *d_rstd, uint8_t *d_q,
                                                 float *d_scale, const bf16_t *d_x, const bf16_t *d_a,
                                                 const bf16_t *d_w, int n, int C, float eps)
{
	if (fp8_unfused())
		return 0;
	if (C % 8 || !aligned16(d_h) || (d_out && !aligned16(d_out)) || !aligned16(d_x) || !aligned16(d_a) ||
	    !aligned16(d_w) || ((uintptr_t)d_q & 7))
		return 0;
	if (n == 0)
		return 1;
	dim3 block(WARP_SIZE, ROWS_PER_BLOCK);
	residual_rmsnorm_forward_kernel<8, 1><<<(unsigned)CEIL_DIV(n, ROWS_PER_BLOCK), block>>>(
	        (bf16 *)d_h, (bf16 *)d_out, d_rstd, d_q, d_scale, (const bf16 *)d_x, (const bf16 *)d_a,
	        (const bf16 *)d_w, n, C, eps);
	cudaCheck(cudaGetLastError());
	return 1;
}

template <typename DT>
static void residual_rmsnorm_backward(bf16_t *d_dh, const DT *dout, const bf16_t *d_dres, const bf16_t *d_h,
                                      const float *d_rstd, const bf16_t *d_w, int n, int C)
{
	dim3 block(WARP_SIZE, ROWS_PER_BLOCK);
	unsigned grid = (unsigned)CEIL_DIV(n, ROWS_PER_BLOCK);
	bf16 *dh = (bf16 *)d_dh;
	const bf16 *dres = (const bf16 *)d_dres, *h = (const bf16 *)d_h, *w = (const bf16 *)d_w;
	if (C % 8 == 0 && aligned16(d_dh) && aligned16(dout) && aligned16(d_dres) && aligned16(d_h) && aligned16(d_w))
		residual_rmsnorm_backward_kernel<8, DT, 0>
		        <<<grid, block>>>(dh, NULL, NULL, dout, dres, h, d_rstd, w, n, C);
	else
		residual_rmsnorm_backward_kernel<1, DT, 0>
		        <<<grid, block>>>(dh, NULL, NULL, dout, dres, h, d_rstd, w, n, C);
	cudaCheck(cudaGetLastError());
}

extern "C" void residual_rmsnorm_backward_cuda(bf16_t *d_dh, const bf16_t *d_dout, const bf16_t *d_dres,
                                               const bf16_t *d_h, const float *d_rstd, const bf16_t *d_w, int n,
                                               int C)
{
	residual_rmsnorm_backward(d_dh, (const bf16 *)d_dout, d_dres, d_h, d_rstd, d_w, n, C);
}

extern "C" void residual_rmsnorm_backward_f32_cuda(bf16_t *d_dh, const float *d_dout, const bf16_t *d_dres,
                                                   const bf16_t *d_h, const float *d_rstd, const bf16_t *d_w, int n,
                                                   int C)
{
	residual_rmsnorm_backward(d_dh, d_dout, d_dres, d_h, d_rstd, d_w, n, C);
}

extern "C" int residual_rmsnorm_backward_fp8_cuda(bf16_t *d_dh, uint8_t *d_q, float *d_scale, const void *d_dout,
                                                  int f32, const bf16_t *d_dres, const bf16_t *d_h, const float *d_rstd,
                                                  const bf16_t *d_w, int n, int C)
{
	if (fp8_unfused())
		return 0;
	if (C % 8 || !aligned16(d_dh) || !aligned16(d_dout) || !aligned16(d_dres) || !aligned16(d_h) ||
	    !aligned16(d_w) || ((uintptr_t)d_q & 7))
		return 0;
	if (n == 0)
		return 1;
	dim3 block(WARP_SIZE, ROWS_PER_BLOCK);
	unsigned grid = (unsigned)CEIL_DIV(n, ROWS_PER_BLOCK);
	bf16 *dh = (bf16 *)d_dh;
	const bf16 *dres = (const bf16 *)d_dres, *h = (const bf16 *)d_h, *w = (const bf16 *)d_w;
	if (f32)
		residual_rmsnorm_backward_kernel<8, float, 1>
		        <<<grid, block>>>(dh, d_q, d_scale, (const float *)d_dout, dres, h, d_rstd, w, n, C);
	else
		residual_rmsnorm_backward_kernel<8, bf16, 1>
		        <<<grid, block>>>(dh, d_q, d_scale, (const bf16 *)d_dout, dres, h, d_rstd, w, n, C);
	cudaCheck(cudaGetLastError());
	return 1;
}

// ----------------------------------------------------------------------------
// a mixture of two attentions' outputs (a supernet's fa and swa columns)

/* out = w1 a1 + w2 a2, 8 values a thread (n8 packs of 8, 16-byte aligned) */
__global__ void att_mix_kernel(bf16 *out, float w1, const bf16 *a1, float w2, const bf16 *a2, int64_t n8)
{
	for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += (int64_t)gridDim.x * blockDim.x) {
		float x[8], y[8];
		load8(x, a1, 0, i), load8(y, a2, 0, i);
#pragma unroll
		for (int e = 0; e < 8; e++)
			x[e] = __fmaf_rn(w1, x[e], w2 * y[e]);
		store8_bf16(out, x, i);
	}
}

/* the same rows (a warp a row of k values) as e4m3 codes: the row's amax
 * over the bf16-rounded mixture, then the same values again into codes */
__global__ void att_mix_fp8_kernel(uint8_t *q, float *scale, float w1, const bf16 *a1, float w2, const bf16 *a2, int n,
                                   int k)
{
	int row = blockIdx.x * ROWS_PER_BLOCK + threadIdx.y, lane = threadIdx.x;
	if (row >= n)
		return;
	int64_t r0 = (int64_t)row * k;
	float m = 0, x[8], y[8];
	for (int j = lane; j < k / 8; j += WARP_SIZE) {
		load8(x, a1 + r0, 0, j), load8(y, a2 + r0, 0, j);
#pragma unroll
		for (int e = 0; e < 8; e++)
			m = fmaxf(m, fabsf(__bfloat162float(__float2bfloat16(__fmaf_rn(w1, x[e], w2 * y[e])))));
	}
	float inv = warp_row_inv(scale, row, m);
	for (int j = lane; j < k / 8; j += WARP_SIZE) {
		load8(x, a1 + r0, 0, j), load8(y, a2 + r0, 0, j);
#pragma unroll
		for (int e = 0; e < 8; e++)
			x[e] = __bfloat162float(__float2bfloat16(__fmaf_rn(w1, x[e], w2 * y[e])));
		store8_e4m3(q + r0 + 8 * j, x, inv);
	}
}

extern "C" void att_mix_cuda(bf16_t *d_out, float w1, const bf16_t *d_a1, float w2, const bf16_t *d_a2, int64_t n)
{
	if (n % 8 || !aligned16(d_out) || !aligned16(d_a1) || !aligned16(d_a2))
		BUG("att_mix_cuda: %lld values, or a pointer, not in 16-byte packs", (long long)n);
	att_mix_kernel<<<(unsigned)std::min<int64_t>(CEIL_DIV(n / 8, 256), 4096), 256>>>(
	        (bf16 *)d_out, w1, (const bf16 *)d_a1, w2, (const bf16 *)d_a2, n / 8);
	cudaCheck(cudaGetLastError());
}

extern "C" int att_mix_fp8_cuda(uint8_t *d_q, float *d_scale, float w1, const bf16_t *d_a1, float w2,
                                const bf16_t *d_a2, int n, int k)
{
	if (fp8_unfused())
		return 0;
	if (k % 8 || !aligned16(d_a1) || !aligned16(d_a2) || ((uintptr_t)d_q & 7))
		return 0;
	if (n == 0)
		return 1;
	dim3 block(WARP_SIZE, ROWS_PER_BLOCK);
	att_mix_fp8_kernel<<<CEIL_DIV(n, ROWS_PER_BLOCK), block>>>(d_q, d_scale, w1, (const bf16 *)d_a1, w2,
	                                                           (const bf16 *)d_a2, n, k);
	cudaCheck(cudaGetLastError());
	return 1;
}

/* SwiGLU on the packed gate | up rows: one thread per VEC consecutive
 * outputs of a row (F % VEC == 0, so they never straddle two rows) */
template <int VEC> __global__ void swiglu_packed_forward_kernel(bf16 *out, const bf16 *gu, int n, int F)
{
	int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * VEC; /* into out (n, F) */
	if (i >= (int64_t)n * F)
		return;
	int64_t t = i / F;
	int j = (int)(i % F);
	const bf16 *g = gu + t * 2 * F + j;
	Pack<VEC> gv = load_pack<VEC>(g), uv = load_pack<VEC>(g + F), ov;
	for (int k = 0; k < VEC; k++) {
		float x = __bfloat162float(gv.v[k]);
		ov.v[k] = __float2bfloat16(silu_fast(x) * __bfloat162float(uv.v[k]));
	}
	store_pack<VEC>(out + i, ov);
}

template <int VEC>
__global__ void swiglu_packed_backward_kernel(bf16 *dgu, const bf16 *dout, const bf16 *gu, int n, int F)
{
	int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * VEC; /* into dout (n, F) */
	if (i >= (int64_t)n * F)
		return;
	int64_t t = i / F;
	int j = (int)(i % F);
	const bf16 *g = gu + t * 2 * F + j;
	bf16 *dg = dgu + t * 2 * F + j;
	Pack<VEC> gv = load_pack<VEC>(g), uv = load_pack<VEC>(g + F), dv = load_pack<VEC>(dout + i), dgv, duv;
	for (int k = 0; k < VEC; k++) {
		float x = __bfloat162float(gv.v[k]), u = __bfloat162float(uv.v[k]), d = __bfloat162float(dv.v[k]);
		float sg = sigmoid_fast(x);
		duv.v[k] = __float2bfloat16(d * x * sg);
		dgv.v[k] = __float2bfloat16(d * u * sg * (1.0f + x * (1.0f - sg)));
	}
	store_pack<VEC>(dg, dgv);
	store_pack<VEC>(dg + F, duv);
}

extern "C" void swiglu_packed_forward_cuda(bf16_t *d_out, const bf16_t *d_gu, int n, int F)
{
	int64_t total = (int64_t)n * F;
	if (F % 8 == 0 && aligned16(d_out) && aligned16(d_gu))
		swiglu_packed_forward_kernel<8><<<(unsigned)CEIL_DIV(total / 8, 256), 256>>>((bf16 *)d_out,
		                                                                            (const bf16 *)d_gu, n, F);
	else
		swiglu_packed_forward_kernel<1><<<(unsigned)CEIL_DIV(total, 256), 256>>>((bf16 *)d_out, (const bf16 *)d_gu,
		                                                                         n, F);
	cudaCheck(cudaGetLastError());
}

extern "C" void swiglu_packed_backward_cuda(bf16_t *d_dgu, const bf16_t *d_dout, const bf16_t *d_gu, int n, int F)
{
	int64_t total = (int64_t)n * F;
	if (F % 8 == 0 && aligned16(d_dgu) && aligned16(d_dout) && aligned16(d_gu))
		swiglu_packed_backward_kernel<8><<<(unsigned)CEIL_DIV(total / 8, 256), 256>>>(
			(bf16 *)d_dgu, (const bf16 *)d_dout, (const bf16 *)d_gu, n, F);
	else
		swiglu_packed_backward_kernel<1><<<(unsigned)CEIL_DIV(total, 256), 256>>>(
			(bf16 *)d_dgu, (const bf16 *)d_dout, (const bf16 *)d_gu, n, F);
	cudaCheck(cudaGetLastError());
}

/* head hh (of H query heads, then G key and G value heads) of position bt:
 * its D values in q (B*T, H, D), k or v (B*T, G, D) */
template <typename P>
__device__ inline P *head_row(P *q, P *k, P *v, int64_t bt, int hh, int H, int G, int D)
{
	if (hh < H)
		return q + (bt * H + hh) * D;
	if (hh < H + G)
		return k + (bt * G + (hh - H)) * D;
	return v + (bt * G + (hh - H - G)) * D;
}

/* The packed q | k | v projection to the attention's layout: one thread per
 * (position, rotation pair p < D/2), over every head, so the cosine and sine
 * are computed once for H + G heads. Head hh < H is q's, then G of k (both
 * rotated), then G of v (copied). The angle and its cosine and sine as in
 * rope_kernel; the bias is added in float32 before the rotation. */
__global__ void qkv_rope_forward_kernel(bf16 *q, bf16 *k, bf16 *v, const bf16 *qkv, const bf16 *b,
                                        const float *inv_freq, int B, int T, int pos0, int H, int G, int D)
{
	int half = D / 2;
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (int64_t)B * T * half)
		return;
	int p = (int)(i % half);
	int64_t bt = i / half; /* b*T + t */
	int t = (int)(bt % T);
	float cf, sf;
	rope_cos_sin(pos0 + t, inv_freq[p], &cf, &sf);
	const bf16 *row = qkv + bt * (int64_t)(H + 2 * G) * D;
	for (int hh = 0; hh < H + 2 * G; hh++) {
		int o = hh * D;
		float x1 = __bfloat162float(row[o + p]), x2 = __bfloat162float(row[o + p + half]);
		if (b)
			x1 += __bfloat162float(b[o + p]), x2 += __bfloat162float(b[o + p + half]);
		bf16 *dst = head_row(q, k, v, bt, hh, H, G, D);
		if (hh < H + G) {
			dst[p] = __float2bfloat16(x1 * cf - x2 * sf);
			dst[p + half] = __float2bfloat16(x2 * cf + x1 * sf);
		} else {
			dst[p] = __float2bfloat16(x1);
			dst[p + half] = __float2bfloat16(x2);
		}
	}
}

/* its backward: dq and dk turned back (the transposed rotation), packed
 * with dv into the projection's columns */
__global__ void qkv_rope_backward_kernel(bf16 *dqkv, const bf16 *dq, const bf16 *dk, const bf16 *dv,
                                         const float *inv_freq, int B, int T, int pos0, int H, int G, int D)
{
	int half = D / 2;
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= (int64_t)B * T * half)
		return;
	int p = (int)(i % half);
	int64_t bt = i / half;
	int t = (int)(bt % T);
	float cf, sf;
	rope_cos_sin(pos0 + t, inv_freq[p], &cf, &sf);
	sf = -sf;
	bf16 *row = dqkv + bt * (int64_t)(H + 2 * G) * D;
	for (int hh = 0; hh < H + 2 * G; hh++) {
		const bf16 *src = head_row(dq, dk, dv, bt, hh, H, G, D);
		float g1 = __bfloat162float(src[p]), g2 = __bfloat162float(src[p + half]);
		int o = hh * D;
		if (hh < H + G) {
			row[o + p] = __float2bfloat16(g1 * cf - g2 * sf);
			row[o + p + half] = __float2bfloat16(g2 * cf + g1 * sf);
		} else {
			row[o + p] = src[p];
			row[o + p + half] = src[p + half];
		}
	}
}

/* The same two, a block per position: the cosines and sines of its D/2
 * angles are computed once into shared memory, then a thread turns 8
 * rotation pairs of one head (two 16-byte loads and stores). For D/2 a
 * multiple of 8, up to ROPE_MAX_HALF, and 16-byte aligned pointers; the
 * arithmetic is the kernels' above, element for element. */
#define ROPE_MAX_HALF 256
__global__ void qkv_rope_forward_vec_kernel(bf16 *q, bf16 *k, bf16 *v, const bf16 *qkv, const bf16 *b,
                                            const float *inv_freq, int T, int pos0, int H, int G, int D)
{
	__shared__ float cs[ROPE_MAX_HALF], sn[ROPE_MAX_HALF];
	int half = D / 2, groups = half / 8, NH = H + 2 * G;
	int64_t bt = blockIdx.x; /* b*T + t */
	int t = (int)(bt % T);
	for (int p = threadIdx.x; p < half; p += blockDim.x)
		rope_cos_sin(pos0 + t, inv_freq[p], &cs[p], &sn[p]);
	__syncthreads();
	const bf16 *row = qkv + bt * NH * D;
	for (int i = threadIdx.x; i < NH * groups; i += blockDim.x) {
		int hh = i / groups, p0 = i % groups * 8, o = hh * D;
		Pack<8> x1v = load_pack<8>(row + o + p0), x2v = load_pack<8>(row + o + p0 + half), b1v, b2v, r1, r2;
		if (b)
			b1v = load_pack<8>(b + o + p0), b2v = load_pack<8>(b + o + p0 + half);
		for (int j = 0; j < 8; j++) {
			float x1 = __bfloat162float(x1v.v[j]), x2 = __bfloat162float(x2v.v[j]);
			if (b)
				x1 += __bfloat162float(b1v.v[j]), x2 += __bfloat162float(b2v.v[j]);
			if (hh < H + G) {
				float cf = cs[p0 + j], sf = sn[p0 + j];
				r1.v[j] = __float2bfloat16(x1 * cf - x2 * sf);
				r2.v[j] = __float2bfloat16(x2 * cf + x1 * sf);
			} else {
				r1.v[j] = __float2bfloat16(x1);
				r2.v[j] = __float2bfloat16(x2);
			}
		}
		bf16 *dst = head_row(q, k, v, bt, hh, H, G, D);
		store_pack<8>(dst + p0, r1);
		store_pack<8>(dst + p0 + half, r2);
	}
}

/* the backward's rotation table of the block's position bt (shared cs,
 * sn: cos and -sin of each pair p < D / 2), then a barrier */
__device__ void rope_back_table(float *cs, float *sn, const float *inv_freq, int64_t bt, int T, int pos0, int half)
{
	int t = (int)(bt % T);
	for (int p = threadIdx.x; p < half; p += blockDim.x) {
		rope_cos_sin(pos0 + t, inv_freq[p], &cs[p], &sn[p]);
		sn[p] = -sn[p];
	}
	__syncthreads();
}

/* The backward's gradients of q, k and v: bf16 rows, or (acc) the
 * attention backward's float32 accumulators (attention_backward2_cuda
 * without outputs: dq (n, H, D), then dk and dv (n, G, D)) with dq's scale
 * still to come, read as its conversion to bf16 would write them */
struct RopeGrad {
	const bf16 *dq, *dk, *dv;
	const float *acc;
	float qscale;
	int64_t n;
};

/* 8 values of head hh of position bt from p, rounded to bf16 */
__device__ __forceinline__ Pack<8> grad_pack(const RopeGrad &s, int64_t bt, int hh, int p, int H, int G, int D)
{
	if (!s.acc)
		return load_pack<8>(head_row(s.dq, s.dk, s.dv, bt, hh, H, G, D) + p);
	const float *q = s.acc, *k = q + s.n * H * D, *v = k + s.n * G * D;
	const float *src = head_row(q, k, v, bt, hh, H, G, D) + p;
	float4 a = *(const float4 *)src, b = *(const float4 *)(src + 4);
	float m = hh < H ? s.qscale : 1.f, x[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
	Pack<8> r;
	for (int j = 0; j < 8; j++)
		r.v[j] = __float2bfloat16(x[j] * m);
	return r;
}

/* item i of position bt's dqkv row: head hh's values p0.. (r1) and p0 +
 * half.. (r2), rotated back for q and k heads, rounded to bf16; its offset
 * in the row returned */
__device__ __forceinline__ int rope_back_item(Pack<8> &r1, Pack<8> &r2, const RopeGrad &src, const float *cs,
                                              const float *sn, int64_t bt, int i, int H, int G, int D)
{
	int half = D / 2, groups = half / 8, hh = i / groups, p0 = i % groups * 8;
	Pack<8> g1v = grad_pack(src, bt, hh, p0, H, G, D), g2v = grad_pack(src, bt, hh, p0 + half, H, G, D);
	r1 = g1v, r2 = g2v;
	if (hh < H + G)
		for (int j = 0; j < 8; j++) {
			float g1 = __bfloat162float(g1v.v[j]), g2 = __bfloat162float(g2v.v[j]);
			float cf = cs[p0 + j], sf = sn[p0 + j];
			r1.v[j] = __float2bfloat16(g1 * cf - g2 * sf);
			r2.v[j] = __float2bfloat16(g2 * cf + g1 * sf);
		}
	return hh * D + p0;
}

__global__ void qkv_rope_backward_vec_kernel(bf16 *dqkv, const bf16 *dq, const bf16 *dk, const bf16 *dv,
                                             const float *inv_freq, int T, int pos0, int H, int G, int D)
{
	__shared__ float cs[ROPE_MAX_HALF], sn[ROPE_MAX_HALF];
	int half = D / 2, NH = H + 2 * G;
	int64_t bt = blockIdx.x;
	rope_back_table(cs, sn, inv_freq, bt, T, pos0, half);
	bf16 *row = dqkv + bt * NH * D;
	for (int i = threadIdx.x; i < NH * (half / 8); i += blockDim.x) {
		Pack<8> r1, r2;
		int o = rope_back_item(r1, r2, RopeGrad{dq, dk, dv, NULL, 1.f, 0}, cs, sn, bt, i, H, G, D);
		store_pack<8>(row + o, r1);
		store_pack<8>(row + o + half, r2);
	}
}

/* qkv_rope_backward_vec_kernel's rows straight into e4m3 codes by rows (q,
 * scale; under --grad fp8 dqkv is only the Wqkv product's input, never
 * written in bf16): each value rounded to bf16 first, so that the codes
 * are that kernel's and fp8_rows_cuda's byte for byte. A block a row, its
 * IPT items a thread held in registers between the row's amax and its
 * codes. */
#define ROPE8_NT 256
template <int IPT>
__global__ void __launch_bounds__(ROPE8_NT)
        qkv_rope_backward_fp8_kernel(uint8_t *q, float *scale, RopeGrad src, const float *inv_freq, int T, int pos0,
                                     int H, int G, int D)
{
	__shared__ float cs[ROPE_MAX_HALF], sn[ROPE_MAX_HALF];
	int half = D / 2, items = (H + 2 * G) * (half / 8), o[IPT];
	int64_t bt = blockIdx.x;
	rope_back_table(cs, sn, inv_freq, bt, T, pos0, half);
	float m = 0, r[IPT][2][8];
#pragma unroll
	for (int k = 0; k < IPT; k++) {
		int i = threadIdx.x + k * ROPE8_NT;
		if (i >= items)
			break;
		Pack<8> r1, r2;
		o[k] = rope_back_item(r1, r2, src, cs, sn, bt, i, H, G, D);
#pragma unroll
		for (int j = 0; j < 8; j++) {
			r[k][0][j] = __bfloat162float(r1.v[j]), r[k][1][j] = __bfloat162float(r2.v[j]);
			m = fmaxf(m, fmaxf(fabsf(r[k][0][j]), fabsf(r[k][1][j])));
		}
	}
	float inv = block_row_inv<ROPE8_NT>(scale, bt, m);
	uint8_t *row = q + bt * (int64_t)(H + 2 * G) * D;
#pragma unroll
	for (int k = 0; k < IPT; k++) {
		if (threadIdx.x + k * ROPE8_NT >= items)
			break;
		store8_e4m3(row + o[k], r[k][0], inv);
		store8_e4m3(row + o[k] + half, r[k][1], inv);
	}
}

/* threads a block of the vectorized kernels: their items, in whole warps */
static bool rope_vec(int D, int H, int G, unsigned *threads)
{
	int half = D / 2, items = (H + 2 * G) * (half / 8);
	*threads = (unsigned)(CEIL_DIV(items < 256 ? items : 256, WARP_SIZE) * WARP_SIZE);
	return D % 16 == 0 && half <= ROPE_MAX_HALF;
}

extern "C" void qkv_rope_forward_cuda(bf16_t *d_q, bf16_t *d_k, bf16_t *d_v, const bf16_t *d_qkv, const bf16_t *d_b,
                                      const float *d_inv_freq, int B, int T, int pos0, int H, int G, int D)
{
	unsigned threads;
	if (rope_vec(D, H, G, &threads) && aligned16(d_q) && aligned16(d_k) && aligned16(d_v) && aligned16(d_qkv) &&
	    (!d_b || aligned16(d_b))) {
		qkv_rope_forward_vec_kernel<<<(unsigned)(B * T), threads>>>((bf16 *)d_q, (bf16 *)d_k, (bf16 *)d_v,
		                                                           (const bf16 *)d_qkv, (const bf16 *)d_b,
		                                                           d_inv_freq, T, pos0, H, G, D);
		cudaCheck(cudaGetLastError());
		return;
	}
	int64_t total = (int64_t)B * T * (D / 2);
	qkv_rope_forward_kernel<<<(unsigned)CEIL_DIV(total, 256), 256>>>((bf16 *)d_q, (bf16 *)d_k, (bf16 *)d_v,
	                                                                 (const bf16 *)d_qkv, (const bf16 *)d_b,
	                                                                 d_inv_freq, B, T, pos0, H, G, D);
	cudaCheck(cudaGetLastError());
}

extern "C" void qkv_rope_backward_cuda(bf16_t *d_dqkv, const bf16_t *d_dq, const bf16_t *d_dk, const bf16_t *d_dv,
                                       const float *d_inv_freq, int B, int T, int pos0, int H, int G, int D)
{
	unsigned threads;
	if (rope_vec(D, H, G, &threads) && aligned16(d_dqkv) && aligned16(d_dq) && aligned16(d_dk) && aligned16(d_dv)) {
		qkv_rope_backward_vec_kernel<<<(unsigned)(B * T), threads>>>((bf16 *)d_dqkv, (const bf16 *)d_dq,
		                                                            (const bf16 *)d_dk, (const bf16 *)d_dv,
		                                                            d_inv_freq, T, pos0, H, G, D);
		cudaCheck(cudaGetLastError());
		return;
	}
	int64_t total = (int64_t)B * T * (D / 2);
	qkv_rope_backward_kernel<<<(unsigned)CEIL_DIV(total, 256), 256>>>((bf16 *)d_dqkv, (const bf16 *)d_dq,
	                                                                  (const bf16 *)d_dk, (const bf16 *)d_dv,
	                                                                  d_inv_freq, B, T, pos0, H, G, D);
	cudaCheck(cudaGetLastError());
}

static int rope_back_fp8(uint8_t *d_q, float *d_scale, const RopeGrad &src, const float *d_inv_freq, int B, int T,
                         int pos0, int H, int G, int D)
{
	if (fp8_unfused())
		return 0;
	unsigned threads;
	int items = (H + 2 * G) * (D / 16);
	if (!rope_vec(D, H, G, &threads) || items > 4 * ROPE8_NT || ((uintptr_t)d_q & 7))
		return 0;
	if (B * T == 0)
		return 1;
	auto f = items <= ROPE8_NT       ? qkv_rope_backward_fp8_kernel<1>
	         : items <= 2 * ROPE8_NT ? qkv_rope_backward_fp8_kernel<2>
	                                 : qkv_rope_backward_fp8_kernel<4>;
	f<<<(unsigned)(B * T), ROPE8_NT>>>(d_q, d_scale, src, d_inv_freq, T, pos0, H, G, D);
	cudaCheck(cudaGetLastError());
	return 1;
}

extern "C" int qkv_rope_backward_fp8_cuda(uint8_t *d_q, float *d_scale, const bf16_t *d_dq, const bf16_t *d_dk,
                                          const bf16_t *d_dv, const float *d_inv_freq, int B, int T, int pos0, int H,
                                          int G, int D)
{
	if (!aligned16(d_dq) || !aligned16(d_dk) || !aligned16(d_dv))
		return 0;
	RopeGrad src = {(const bf16 *)d_dq, (const bf16 *)d_dk, (const bf16 *)d_dv, NULL, 1.f, 0};
	return rope_back_fp8(d_q, d_scale, src, d_inv_freq, B, T, pos0, H, G, D);
}

extern "C" int qkv_rope_backward_fp8_acc_cuda(uint8_t *d_q, float *d_scale, const float *d_acc, float qscale,
                                              const float *d_inv_freq, int B, int T, int pos0, int H, int G, int D)
{
	if (!aligned16(d_acc))
		return 0;
	RopeGrad src = {NULL, NULL, NULL, d_acc, qscale, (int64_t)B * T};
	return rope_back_fp8(d_q, d_scale, src, d_inv_freq, B, T, pos0, H, G, D);
}

// ----------------------------------------------------------------------------
// a debugging aid: DASH_CHECK_FINITE=1

__global__ void count_nonfinite_kernel(unsigned long long *out, const void *x, size_t n, int f32)
{
	unsigned long long c = 0, first = ~0ull;
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
		float v = f32 ? ((const float *)x)[i] : __bfloat162float(((const bf16 *)x)[i]);
		if (!isfinite(v))
			c++, first = first < i ? first : i;
	}
	if (c)
		atomicAdd(out, c), atomicMin(out + 1, first);
}

extern "C" void check_finite_cuda(const char *what, int l, const void *d_x, size_t n, int f32)
{
	static int on = -1;
	if (on < 0)
		on = env_flag("DASH_CHECK_FINITE");
	if (!on || n == 0)
		return;
	unsigned long long h[2] = {0, ~0ull}, *d = (unsigned long long *)gpu_alloc(sizeof h);
	gpu_upload(d, h, sizeof h);
	count_nonfinite_kernel<<<(unsigned)std::min<size_t>(CEIL_DIV(n, 256), 4096), 256>>>(d, d_x, n, f32);
	cudaCheck(cudaGetLastError());
	gpu_download(h, d, sizeof h);
	gpu_free(d);
	if (h[0])
		fprintf(stderr, "check_finite: %s, layer %d: %llu of %zu values not finite, the first at %llu\n", what,
		        l, h[0], n, h[1]);
}
