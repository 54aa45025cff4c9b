/* bench/gemm8: the backward's product dx = dout w at the Qwen2.5-3B shape's
 * linear layers in bf16 (matmul_backward_cuda) against float8 e4m3
 * (search-logits --grad fp8: fp8_rows_cuda on dout, then
 * matmul_backward_fp8_cuda with w^T's codes made once), hot: each repeated
 * for 400 ms after 300 ms of itself, so that the card sits at its power
 * limit as it does in a search step (bench/RESULTS.md, version 10). Prints
 * both times, the quantisation's share, and the float8 product's relative
 * error against the bf16 one (normal random operands); the float8 product
 * twice, its sums split into float32 every few k-steps and in the tensor
 * cores' own accumulator at every k (matmul_fp8_fast 0 and 2; the step
 * takes the second for k up to 65536, kernels/matmul.cu).
 * usage: bench/bin/gemm8 [n]   (default 4096) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <cuda_runtime.h>

#include "bench.h"
#include "gpu.h"

static __global__ void fill(bf16 *p, size_t n, unsigned seed, float s)
{
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
		unsigned long long x = i * 0x9E3779B97F4A7C15ULL + seed * 0xBF58476D1CE4E5B9ULL;
		x ^= x >> 31, x *= 0x94D049BB133111EBULL, x ^= x >> 29;
		float u1 = ((x >> 40) + 1) / 16777217.0f, u2 = ((x >> 16) & 0xFFFFFF) / 16777216.0f;
		p[i] = __float2bfloat16(s * sqrtf(-2 * logf(u1)) * cosf(6.2831853f * u2));
	}
}

static __global__ void diff(double *acc, const bf16 *a, const bf16 *b, size_t n)
{
	double d = 0, r = 0;
	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
		double x = __bfloat162float(a[i]), y = __bfloat162float(b[i]);
		d += (x - y) * (x - y), r += y * y;
	}
	atomicAdd(&acc[0], d), atomicAdd(&acc[1], r);
}

/* ms a run of fn once the card has run it for 300 ms */
template <typename F> static float hot_ms(F fn)
{
	cudaEvent_t e0, e1;
	cudaCheck(cudaEventCreate(&e0)), cudaCheck(cudaEventCreate(&e1));
	float ms = 0;
	int reps = 1;
	for (int phase = 0; phase < 3; phase++) { /* a probe, 300 ms unmeasured, 400 ms measured */
		cudaCheck(cudaEventRecord(e0));
		for (int i = 0; i < reps; i++)
			fn();
		cudaCheck(cudaEventRecord(e1));
		cudaCheck(cudaEventSynchronize(e1));
		cudaCheck(cudaEventElapsedTime(&ms, e0, e1));
		ms /= reps;
		reps = (int)((phase ? 400 : 300) / ms) + 1;
	}
	cudaCheck(cudaEventDestroy(e0)), cudaCheck(cudaEventDestroy(e1));
	return ms;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 4096;
	struct {
		const char *name;
		int n, IC, OC;
	} shapes[] = {
	        {"qkv (2048 -> 2560)", n, 2048, 2560},          {"o (2048 -> 2048)", n, 2048, 2048},
	        {"gate|up (2048 -> 22016)", n, 2048, 22016},    {"down (11008 -> 2048)", n, 11008, 2048},
	        {"vocab (2048 -> 151936)", 1024, 2048, 151936},
	};
	size_t most = 0;
	for (auto &s : shapes)
		most = std::max(most, std::max((size_t)s.n * s.IC, std::max((size_t)s.n * s.OC, (size_t)s.IC * s.OC)));
	bf16 *dy = (bf16 *)gpu_alloc(most * 2), *w = (bf16 *)gpu_alloc(most * 2);
	bf16 *o16 = (bf16 *)gpu_alloc(most * 2), *o8 = (bf16 *)gpu_alloc(most * 2);
	uint8_t *dq = (uint8_t *)gpu_alloc(most), *wq = (uint8_t *)gpu_alloc(most);
	float *sd = (float *)gpu_alloc(most / 1024 * 4 + 4096 * 4),
	      *sw = (float *)gpu_alloc(most / 1024 * 4 + 4096 * 4);
	double *acc = (double *)gpu_alloc(16);
	char dev[128];
	cuda_device_name(0, dev, sizeof dev);
	printf("# %s, hot (400 ms of each after 300); fp8 times include quantising dout; TF/s without it\n"
	       "%-26s %8s %8s %8s %8s %8s %8s %8s %9s %9s\n",
	       dev, "layer (n rows)", "bf16 ms", "split ms", "fast ms", "quant ms", "TF bf16", "TF split", "TF fast",
	       "err split", "err fast");
	for (auto &s : shapes) {
		fill<<<1024, 256>>>(dy, (size_t)s.n * s.OC, 1, 1e-3f);
		fill<<<1024, 256>>>(w, (size_t)s.OC * s.IC, 2, 0.02f);
		cudaCheck(cudaGetLastError());
		fp8_cols_t_cuda(wq, sw, (const bf16_t *)w, s.OC, s.IC);
		double flop = 2.0 * s.n * s.IC * s.OC;
		float b16 = hot_ms([&] {
			matmul_backward_cuda((bf16_t *)o16, (const bf16_t *)dy, (const bf16_t *)w, s.n, s.IC, s.OC);
		});
		float q = hot_ms([&] { fp8_rows_cuda(dq, sd, (const bf16_t *)dy, s.n, s.OC); });
		float f8[2];
		double err[2];
		for (int a = 0; a < 2; a++) {
			matmul_fp8_fast(2 * a); /* split, then fast at every k */
			f8[a] = hot_ms([&] {
				fp8_rows_cuda(dq, sd, (const bf16_t *)dy, s.n, s.OC);
				matmul_backward_fp8_cuda(o8, 0, 0, dq, sd, wq, sw, s.n, s.IC, s.OC);
			});
			cudaCheck(cudaMemset(acc, 0, 16));
			diff<<<512, 256>>>(acc, o8, o16, (size_t)s.n * s.IC);
			double ha[2];
			cudaCheck(cudaMemcpy(ha, acc, 16, cudaMemcpyDeviceToHost));
			err[a] = sqrt(ha[0] / ha[1]);
		}
		matmul_fp8_fast(0);
		printf("%-26s %8.3f %8.3f %8.3f %8.3f %8.1f %8.1f %8.1f %9.3e %9.3e\n", s.name, b16, f8[0], f8[1], q,
		       flop / b16 / 1e9, flop / (f8[0] - q) / 1e9, flop / (f8[1] - q) / 1e9, err[0], err[1]);
		fflush(stdout);
	}
	return 0;
}
