/*
 * train: what training candidates on the GPU needs besides the operators
 * (distill-linear): the teacher's bf16 rows to float32, the normalised error
 * and its gradient, and AdamW with gradient clipping. The sums are
 * deterministic: a fixed grid of blocks each sums a fixed stride of the
 * data in double, one block adds the partial sums in order, so that a run
 * and its resumption from a checkpoint take the same steps.
 */
#include "cuda_common.cuh"
#include "gpu.h"

#define RED_BLOCKS 264 /* partial sums: two blocks an SM of an H100 */
#define RED_THREADS 256

/* the conversions, 8 values a thread and step where vec (vec8_ok), then
 * the rest one by one */
__global__ void bf16_to_f32_kernel(float *out, const bf16 *in, int64_t n, int vec)
{
	int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, st = (int64_t)gridDim.x * blockDim.x;
	int64_t n8 = vec ? n / 8 : 0;
	for (int64_t i = t; i < n8; i += st) {
		float x[8];
		load8(x, in, 0, i);
		((float4 *)out)[2 * i] = make_float4(x[0], x[1], x[2], x[3]);
		((float4 *)out)[2 * i + 1] = make_float4(x[4], x[5], x[6], x[7]);
	}
	for (int64_t i = 8 * n8 + t; i < n; i += st)
		out[i] = __bfloat162float(in[i]);
}

__global__ void f32_to_bf16_kernel(bf16 *out, const float *in, int64_t n, int vec)
{
	int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, st = (int64_t)gridDim.x * blockDim.x;
	int64_t n8 = vec ? n / 8 : 0;
	for (int64_t i = t; i < n8; i += st) {
		float x[8];
		load8(x, in, 1, i);
		store8_bf16(out, x, i);
	}
	for (int64_t i = 8 * n8 + t; i < n; i += st)
		out[i] = __float2bfloat16(in[i]);
}

extern "C" void bf16_to_f32_cuda(float *d_out, const bf16_t *d_in, size_t n)
{
	bf16_to_f32_kernel<<<RED_BLOCKS * 4, RED_THREADS>>>(d_out, (const bf16 *)d_in, (int64_t)n,
	                                                     vec8_ok((int64_t)n, d_out, d_in));
	cudaCheck(cudaGetLastError());
}

extern "C" void f32_to_bf16_cuda(bf16_t *d_out, const float *d_in, size_t n)
{
	f32_to_bf16_kernel<<<RED_BLOCKS * 4, RED_THREADS>>>((bf16 *)d_out, d_in, (int64_t)n,
	                                                     vec8_ok((int64_t)n, d_out, d_in));
	cudaCheck(cudaGetLastError());
}

/* the block's sum of v into every thread's return value */
static __device__ double block_sum(double v)
{
	return block_sum_double<RED_THREADS>(v);
}

/* partial[b] = (sum (x - y)^2, sum y^2) over block b's stride; y NULL: the
 * second sum is over x^2, the first 0 */
__global__ void sq_partial_kernel(double *partial, const float *x, const float *y, size_t n)
{
	double d = 0, s = 0;
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
		if (y) {
			double e = (double)x[i] - y[i];
			d += e * e, s += (double)y[i] * y[i];
		} else {
			s += (double)x[i] * x[i];
		}
	}
	d = block_sum(d), s = block_sum(s);
	if (threadIdx.x == 0)
		partial[2 * blockIdx.x] = d, partial[2 * blockIdx.x + 1] = s;
}

__global__ void sum_partial_kernel(double *out, const double *partial)
{
	double d = 0, s = 0;
	for (int b = threadIdx.x; b < RED_BLOCKS; b += blockDim.x)
		d += partial[2 * b], s += partial[2 * b + 1];
	d = block_sum(d), s = block_sum(s);
	if (threadIdx.x == 0)
		out[0] = d, out[1] = s;
}

/* sums (2 doubles) of x against y as sq_partial_kernel; scratch holds the
 * partials */
static void sq_sums(double *d_sums, const float *x, const float *y, size_t n, double *scratch)
{
	sq_partial_kernel<<<RED_BLOCKS, RED_THREADS>>>(scratch, x, y, n);
	cudaCheck(cudaGetLastError());
	sum_partial_kernel<<<1, RED_THREADS>>>(d_sums, scratch);
	cudaCheck(cudaGetLastError());
}

__global__ void nmse_grad_kernel(float *dah, const float *ah, const float *a, const double *sums, size_t n)
{
	double den = sums[1] > 0 ? sums[1] : 1;
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
		dah[i] = (float)(2 * ((double)ah[i] - a[i]) / den);
}

extern "C" size_t train_work(void) { return (2 * RED_BLOCKS + 2) * sizeof(double); }

extern "C" void nmse_cuda(double *d_sums, float *d_dah, const float *d_ah, const float *d_a, size_t n, void *d_work)
{
	sq_sums(d_sums, d_ah, d_a, n, (double *)d_work);
	if (d_dah) {
		nmse_grad_kernel<<<RED_BLOCKS * 4, RED_THREADS>>>(d_dah, d_ah, d_a, d_sums, n);
		cudaCheck(cudaGetLastError());
	}
}

/* one AdamW step on w[0..n), the gradient scaled by clip / |grad| when its
 * norm (sums[1]) is above clip; decay != 0 adds weight decay */
__global__ void adamw_kernel(float *w, float *m, float *v, const float *grad, size_t n, const double *sums,
                             float clip, float lr, float wd, float c1, float c2, int decay)
{
	double norm = sqrt(sums[1]);
	float k = norm > clip ? (float)(clip / norm) : 1.f;
	const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
		float g = grad[i] * k;
		float mi = b1 * m[i] + (1 - b1) * g, vi = b2 * v[i] + (1 - b2) * g * g;
		m[i] = mi, v[i] = vi;
		float upd = (mi / c1) / (sqrtf(vi / c2) + eps) + (decay ? wd * w[i] : 0.f);
		w[i] -= lr * upd;
	}
}

extern "C" void adamw_cuda(float *d_w, float *d_m, float *d_v, const float *d_grad, size_t n, const AdamSeg *segs,
                           int nseg, const AdamStep *st, void *d_work)
{
	double *sums = (double *)d_work + 2 * RED_BLOCKS;
	sq_sums(sums, d_grad, NULL, n, (double *)d_work);
	float c1 = (float)(1 - pow(0.9, (double)(st->t + 1))), c2 = (float)(1 - pow(0.999, (double)(st->t + 1)));
	for (int s = 0; s < nseg; s++) {
		size_t o = segs[s].off, len = segs[s].len;
		if (o + len > n)
			fprintf(stderr, "adamw_cuda: segment %d beyond %zu values\n", s, n), exit(1);
		int blocks = (int)(CEIL_DIV(len, (size_t)RED_THREADS) < RED_BLOCKS * 4 ? CEIL_DIV(len, (size_t)RED_THREADS)
		                                                                    : RED_BLOCKS * 4);
		adamw_kernel<<<blocks > 0 ? blocks : 1, RED_THREADS>>>(d_w + o, d_m + o, d_v + o, d_grad + o, len, sums,
		                                                      st->clip, st->lr, st->wd, c1, c2, segs[s].decay);
		cudaCheck(cudaGetLastError());
	}
}
