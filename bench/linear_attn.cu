/* bench/linear_attn: times the chunked Gated DeltaNet and GLA kernels
 * (kernels/gdn_chunked.cu, kernels/gla_chunked.cu) at one layer's shape
 * (default B 1, T 4096, H 16, D 128: the Qwen2.5-3B width) with CUDA
 * events, median of 20 after 3 warm-ups: the forward, and the forward and
 * backward together, from a zero state (what training a candidate runs).
 * float32 inputs, the operator's ranges: q and k unit rows, g in (-0.6, 0),
 * beta in (0, 1), gk = logsigmoid(z) / 16. The peer is bench/linear_fla.py.
 * usage: bench/linear_attn [B T H D] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"
#include "gpu.h"

static float frand(void) { return (float)rand() / RAND_MAX; }

static float *dev_rand(size_t n, int rows_of, int kind)
{
	float *h = (float *)malloc(n * sizeof(float));
	for (size_t i = 0; i < n; i++) {
		float z = 2 * frand() - 1;
		h[i] = kind == 1 ? -0.6f * frand() : kind == 2 ? frand() : kind == 3 ? -log1pf(expf(-3 * z)) / 16 : z;
	}
	if (rows_of) /* unit rows of rows_of values */
		for (size_t r = 0; r < n / rows_of; r++) {
			double s = 0;
			for (int i = 0; i < rows_of; i++)
				s += (double)h[r * rows_of + i] * h[r * rows_of + i];
			for (int i = 0; i < rows_of; i++)
				h[r * rows_of + i] /= (float)sqrt(s);
		}
	float *d = (float *)gpu_alloc(n * sizeof(float));
	gpu_upload(d, h, n * sizeof(float));
	free(h);
	return d;
}

int main(int argc, char **argv)
{
	int B = 1, T = 4096, H = 16, D = 128;
	if (argc == 5)
		B = atoi(argv[1]), T = atoi(argv[2]), H = atoi(argv[3]), D = atoi(argv[4]);
	else if (argc != 1)
		fprintf(stderr, "usage: bench/linear_attn [B T H D]\n"), exit(2);
	size_t nx = (size_t)B * T * H * D, nh = (size_t)B * T * H;
	float *q = dev_rand(nx, D, 0), *k = dev_rand(nx, D, 0), *v = dev_rand(nx, 0, 0);
	float *g = dev_rand(nh, 0, 1), *beta = dev_rand(nh, 0, 2), *gk = dev_rand(nx, 0, 3);
	float *o = (float *)gpu_alloc(nx * 4), *dout = dev_rand(nx, 0, 0);
	float *dq = (float *)gpu_alloc(nx * 4), *dk = (float *)gpu_alloc(nx * 4), *dv = (float *)gpu_alloc(nx * 4);
	float *dg = (float *)gpu_alloc(nx * 4), *dbeta = (float *)gpu_alloc(nh * 4);
	size_t wb = gdn_chunked_work(B, T, H, D, D) > gla_chunked_work(B, T, H, D, D) ? gdn_chunked_work(B, T, H, D, D)
	                                                                              : gla_chunked_work(B, T, H, D, D);
	void *work = gpu_alloc(wb);
	float scale = 1 / sqrtf((float)D);
	float f = median_ms([&] { gdn_forward_chunked_cuda(o, NULL, q, k, v, g, beta, B, T, H, D, D, scale, work); });
	float fb = median_ms([&] {
		gdn_forward_chunked_cuda(o, NULL, q, k, v, g, beta, B, T, H, D, D, scale, work);
		gdn_backward_chunked_cuda(dq, dk, dv, dg, dbeta, NULL, dout, NULL, q, k, v, g, beta, NULL, B, T, H, D, D, scale,
		                          work);
	});
	printf("gdn_chunked_cuda B=%d T=%d H=%d D=%d float32: forward %.3f ms, forward+backward %.3f ms\n", B, T, H, D, f,
	       fb);
	f = median_ms([&] { gla_forward_chunked_cuda(o, NULL, q, k, v, gk, B, T, H, D, D, scale, work); });
	fb = median_ms([&] {
		gla_forward_chunked_cuda(o, NULL, q, k, v, gk, B, T, H, D, D, scale, work);
		gla_backward_chunked_cuda(dq, dk, dv, dg, NULL, dout, NULL, q, k, v, gk, NULL, B, T, H, D, D, scale, work);
	});
	printf("gla_chunked_cuda B=%d T=%d H=%d D=%d float32: forward %.3f ms, forward+backward %.3f ms\n", B, T, H, D, f,
	       fb);
	printf("work %.1f MiB\n", (double)wb / (1 << 20));
	return 0;
}
