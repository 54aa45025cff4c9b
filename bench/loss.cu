/* bench/loss: times vocab_loss_cuda at the Qwen2.5-3B vocabulary shape
 * (default n 4096 rows, C 2048, V 151936) with CUDA events, median of 20
 * after 3 warm-ups, on random inputs: cross-entropy and KL, the forward
 * alone and the forward with the backward.
 * usage: bench/loss [n C V]
 * Napkin math printed with each line: the GEMMs' TFLOP/s (2 n V C a GEMM:
 * the student's and, for KL, the teacher's logits, and dhidden) and the
 * bytes the logits cost in memory (float32 written by the GEMM and read by
 * the row kernel, twice with the backward, plus dz in bf16 written and
 * read), as GB/s if that were all the time. */
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <cuda_runtime.h>

#include "cuda_common.cuh"
#include "bench.h"
#include "gpu.h"
extern "C" {
#include "tensor.h"
}

static bf16_t *rand_bf16(size_t n, float scale)
{
	bf16_t *h = (bf16_t *)malloc(n * 2), *d = (bf16_t *)gpu_alloc(n * 2);
	for (size_t i = 0; i < n; i++)
		h[i] = f32_to_bf16(scale * ((float)rand() / RAND_MAX * 2 - 1));
	gpu_upload(d, h, n * 2);
	free(h);
	return d;
}

int main(int argc, char **argv)
{
	int n = 4096, C = 2048, V = 151936;
	if (argc == 4)
		n = atoi(argv[1]), C = atoi(argv[2]), V = atoi(argv[3]);
	else if (argc != 1) {
		fprintf(stderr, "usage: bench/loss [n C V]\n");
		return 2;
	}
	if (cuda_device_count() == 0) {
		fprintf(stderr, "bench/loss: no GPU\n");
		return 1;
	}
	char name[128];
	cuda_device_name(0, name, sizeof name);
	printf("# %s; n %d C %d V %d; scratch %.1f MB\n", name, n, C, V, vocab_loss_work(C, V) / 1e6);
	bf16_t *h = rand_bf16((size_t)n * C, 1), *g = rand_bf16((size_t)n * C, 1);
	bf16_t *w = rand_bf16((size_t)V * C, 3.0f / sqrtf((float)C)), *dh = (bf16_t *)gpu_alloc((size_t)n * C * 2);
	int32_t *tg = (int32_t *)malloc((size_t)n * 4), *d_tg = (int32_t *)gpu_alloc((size_t)n * 4);
	for (int t = 0; t < n; t++)
		tg[t] = rand() % V;
	gpu_upload(d_tg, tg, (size_t)n * 4);
	float *loss = (float *)gpu_alloc(4);
	void *work = gpu_alloc(vocab_loss_work(C, V));

	double gemm = 2.0 * n * V * C, logits = (double)n * V * 4;
	for (int kl = 0; kl < 2; kl++)
		for (int grad = 0; grad < 2; grad++) {
			const bf16_t *teacher = kl ? g : NULL;
			const int32_t *targets = kl ? NULL : d_tg;
			bf16_t *dhid = grad ? dh : NULL;
			float ms = median_ms([&] {
				vocab_loss_cuda(loss, NULL, dhid, h, teacher, targets, w, n, C, V, 1.0f / n, work);
			});
			double flop = gemm * ((kl ? 2 : 1) + grad);
			/* float32 logits written and read once (twice with the backward,
			 * for the student's), dz in bf16 written and read */
			double bytes = logits * (kl ? 2 : 1) * 2 + (grad ? logits + logits / 2 * 2 : 0);
			printf("vocab_loss_cuda %s %-16s %8.3f ms  GEMMs %6.1f TFLOP/s  logits %5.1f GB (%6.0f GB/s)\n",
			       kl ? "KL" : "CE", grad ? "forward+backward" : "forward", ms, flop / (ms * 1e-3) / 1e12,
			       bytes / 1e9, bytes / (ms * 1e-3) / 1e9);
		}
	gpu_free(h), gpu_free(g), gpu_free(w), gpu_free(dh), gpu_free(d_tg), gpu_free(loss), gpu_free(work);
	free(tg);
	return 0;
}
