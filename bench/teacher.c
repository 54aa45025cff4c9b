/* bench/teacher: the teacher's forward, and forward + backward (activations
 * only, what the search differentiates), on the GPU at a real shape with
 * random bf16 weights made in memory (model_init_random); CUDA events,
 * median of 10 after 2 warm-ups. The logits GEMM is in both; the backward
 * starts from a random dL/dlogits through the logits GEMM's backward.
 * usage: bench/bin/teacher [B T]   (default 1 4096; the Qwen2.5-3B shape) */
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime.h>

#include "gpu.h"
#include "gpu_model.h"
#include "model.h"
#include "util.h"

static int cmp(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	int B = argc == 3 ? atoi(argv[1]) : 1, T = argc == 3 ? atoi(argv[2]) : 4096, n = B * T;
	ModelConfig c = {.arch = ARCH_QWEN2, .L = 36, .C = 2048, .H = 16, .G = 2, .D = 128, .F = 11008,
	                 .V = 151936, .eps = 1e-6f, .rope_theta = 1e6, .tied = 1, .qkv_bias = 1,
	                 .bos_id = -1, .eos_id = -1, .max_pos = 32768};
	Model m;
	double t0 = now_seconds();
	model_init_random(&m, &c, 1);
	GpuModel *g = gpu_model_new(&m, n);
	char name[128];
	cuda_device_name(0, name, sizeof name);
	fprintf(stderr, "bench/teacher: %s, random Qwen2.5-3B shape ready in %.1fs\n", name, now_seconds() - t0);
	int32_t *ids = malloc((size_t)n * sizeof *ids);
	for (int i = 0; i < n; i++)
		ids[i] = (int32_t)((i * 2654435761u) % (unsigned)c.V);
	float *dh = malloc((size_t)n * c.C * sizeof(float));
	for (size_t i = 0; i < (size_t)n * c.C; i++)
		dh[i] = (float)((i * 40503u % 1000) / 500.0 - 1.0) * 1e-3f;
	/* dL/dlogits and the logits GEMM's backward, as the loss would start it */
	bf16_t *dlogits = gpu_alloc((size_t)n * c.V * 2), *dhid = gpu_alloc((size_t)n * c.C * 2);
	cudaMemset(dlogits, 0, (size_t)n * c.V * 2);
	bf16_t *lm = gpu_alloc((size_t)c.V * c.C * 2);
	cudaEvent_t e0, e1;
	cudaEventCreate(&e0), cudaEventCreate(&e1);
	float fwd[10], fb[10];
	for (int i = 0; i < 12; i++) {
		cudaEventRecord(e0, 0);
		gpu_model_forward(g, ids, B, T, NULL);
		cudaEventRecord(e1, 0);
		cudaEventSynchronize(e1);
		if (i >= 2)
			cudaEventElapsedTime(&fwd[i - 2], e0, e1);
	}
	for (int i = 0; i < 12; i++) {
		cudaEventRecord(e0, 0);
		gpu_model_forward(g, ids, B, T, NULL);
		matmul_backward_cuda(dhid, dlogits, lm, n, c.C, c.V);
		gpu_model_backward(g, ids, B, T, dh, NULL, NULL, NULL);
		cudaEventRecord(e1, 0);
		cudaEventSynchronize(e1);
		if (i >= 2)
			cudaEventElapsedTime(&fb[i - 2], e0, e1);
	}
	qsort(fwd, 10, sizeof(float), cmp);
	qsort(fb, 10, sizeof(float), cmp);
	printf("ours B=%d T=%d: forward %.1f ms (%.1fK tok/s), forward+backward %.1f ms (%.1fK tok/s)\n", B, T, fwd[5],
	       n / fwd[5], fb[5], n / fb[5]);
	gpu_model_free(g);
	model_free(&m);
	return 0;
}
