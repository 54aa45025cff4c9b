/* bench/gemm: the GEMM ceiling that the teacher's MFU is measured against.
 * Times matmul_forward_cuda and matmul_backward_cuda (cuBLAS, bf16 operands,
 * float32 accumulation, as the model uses them) at every linear layer of the
 * Qwen2.5-3B shape for n tokens, and at 8192^3; CUDA events, median of 20
 * after 3 warm-ups. The best TFLOP/s printed is "the measured ceiling".
 * usage: bench/bin/gemm [n]   (default 4096) */
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <cuda_runtime.h>

#include "bench.h"
#include "gpu.h"

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 4096;
	struct {
		const char *name;
		int n, IC, OC;
	} shapes[] = {
		{"qkv (2048 -> 2560)", n, 2048, 2560},   {"o (2048 -> 2048)", n, 2048, 2048},
		{"gate|up (2048 -> 22016)", n, 2048, 22016}, {"down (11008 -> 2048)", n, 11008, 2048},
		{"vocab (2048 -> 151936)", n, 2048, 151936}, {"square 8192", 8192, 8192, 8192},
	};
	size_t most = 0;
	for (auto &s : shapes)
		most = std::max(most, std::max((size_t)s.n * s.IC, std::max((size_t)s.n * s.OC, (size_t)s.IC * s.OC)));
	bf16_t *a = (bf16_t *)gpu_alloc(most * 2), *w = (bf16_t *)gpu_alloc(most * 2), *o = (bf16_t *)gpu_alloc(most * 2);
	cudaMemset(a, 0x3c, most * 2), cudaMemset(w, 0x3c, most * 2); /* 0x3c3c: a small bf16 */
	char dev[128];
	cuda_device_name(0, dev, sizeof dev);
	printf("# %s\n%-26s %12s %10s %12s %10s\n", dev, "layer (n rows)", "fwd ms", "TFLOP/s", "bwd (dx) ms", "TFLOP/s");
	double best = 0;
	for (auto &s : shapes) {
		double flop = 2.0 * s.n * s.IC * s.OC;
		float f = median_ms([&] { matmul_forward_cuda(o, a, w, NULL, s.n, s.IC, s.OC); });
		float b = median_ms([&] { matmul_backward_cuda(o, a, w, s.n, s.IC, s.OC); });
		printf("%-26s %12.3f %10.1f %12.3f %10.1f\n", s.name, f, flop / f / 1e9, b, flop / b / 1e9);
		best = std::max(best, std::max(flop / f / 1e9, flop / b / 1e9));
	}
	printf("measured GEMM ceiling: %.1f TFLOP/s\n", best);
	return 0;
}
