/* bench/teacher: the teacher's forward, and forward + backward (activations
 * only, what the search differentiates), on the GPU at a real shape with
 * random bf16 weights made in memory (model_load "random:qwen2.5-3b"); CUDA events,
 * median of 10 after 2 warm-ups. One train GpuModel serves both. The
 * forward is gpu_model_forward (which keeps what the backward reads) and
 * the logits GEMM on its final hidden rows (bf16, as transformers' forward
 * gives them), nothing downloaded; forward + backward is the same forward
 * without the logits GEMM, the fused chunked next-token cross-entropy with
 * its backward (vocab_loss_cuda: logits, loss and dL/dhidden chunk by
 * chunk), and gpu_model_backward from that dL/dhidden, recomputing nothing:
 * what transformers' peer does with its labels. The model's FLOP count
 * (matrix products only; the attention causal) gives TFLOP/s, which
 * bench/RESULTS.md divides by bench/bin/gemm's ceiling for the MFU. The
 * device memory comes last: the GpuModel's weights and activation arena,
 * and all that the device has in use (cudaMemGetInfo) once the runs are done.
 * On stderr: the medians of the forward + backward's three parts (forward,
 * loss, backward), each timed alone, and the last step's loss. DASH_TEACHER_PROFILE=1 runs one
 * forward + backward between cudaProfilerStart and Stop after a warm-up and
 * times nothing (for ncu --profile-from-start off).
 * usage: bench/bin/teacher [B T]   (default 1 4096; the Qwen2.5-3B shape) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include "gpu.h"
#include "gpu_model.h"
#include "model.h"
#include "util.h"

#define CK(e) ck_((e), __FILE__, __LINE__)
static void ck_(cudaError_t e, const char *file, int line)
{
	if (e != cudaSuccess) {
		fprintf(stderr, "[CUDA ERROR] at file %s:%d: %s\n", file, line, cudaGetErrorString(e));
		exit(1);
	}
}

static int cmp(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

#define GIB(b) ((double)(b) / (1 << 30))

int main(int argc, char **argv)
{
	util_init(argc, argv);
	if (argc != 1 && argc != 3) {
		fprintf(stderr, "usage: bench/bin/teacher [B T]\n");
		return 2;
	}
	long long B = 1, T = 4096;
	if (argc == 3)
		B = estrtocount(argv[1], "B"), T = estrtocount(argv[2], "T");
	if (B < 1 || T < 1 || B * T > 1 << 20)
		die("B and T must be at least 1, B*T at most 1048576");
	int n = (int)(B * T);
	Model m;
	double t0 = now_seconds();
	model_load(&m, "random:qwen2.5-3b");
	ModelConfig c = m.cfg;
	GpuModel *g = gpu_model_new(&m, n, 1);
	char name[128];
	cuda_device_name(0, name, sizeof name);
	fprintf(stderr, "bench/teacher: %s, random Qwen2.5-3B shape ready in %.1fs\n", name, now_seconds() - t0);
	int32_t *ids = malloc((size_t)n * sizeof *ids);
	for (int i = 0; i < n; i++)
		ids[i] = (int32_t)((i * 2654435761u) % (unsigned)c.V);
	/* the forward's logits; the loss's targets (the next id, none for the
	 * last position of a sequence), scratch and dL/dhidden */
	size_t nV = (size_t)n * c.V * sizeof(bf16_t);
	bf16_t *logits = gpu_alloc(nV), *dhid = gpu_alloc((size_t)n * c.C * sizeof(bf16_t));
	int32_t *tg = malloc((size_t)n * sizeof *tg), *d_tg = gpu_alloc((size_t)n * sizeof *tg);
	for (int i = 0; i < n; i++)
		tg[i] = (i + 1) % T == 0 ? -1 : ids[i + 1];
	gpu_upload(d_tg, tg, (size_t)n * sizeof *tg);
	void *work = gpu_alloc(vocab_loss_work(c.C, c.V));
	float *d_loss = gpu_alloc(sizeof(float));
	const bf16_t *lm = gpu_model_lm_head(g);
	cudaEvent_t e0, e1, ef, el;
	CK(cudaEventCreate(&e0));
	CK(cudaEventCreate(&e1));
	CK(cudaEventCreate(&ef));
	CK(cudaEventCreate(&el));
	float fwd[10], fb[10], ph[3][10];
	/* DASH_TEACHER_PROFILE=1: one forward + backward after a warm-up of
	 * each, between cudaProfilerStart and Stop (for ncu
	 * --profile-from-start off), and nothing else */
	const char *prof = getenv("DASH_TEACHER_PROFILE");
	if (prof && *prof && strcmp(prof, "0") != 0) {
		gpu_model_forward(g, ids, (int)B, (int)T, NULL);
		matmul_forward_cuda(logits, gpu_model_hidden(g), lm, NULL, n, c.C, c.V);
		for (int i = 0; i < 2; i++) {
			CK(cudaDeviceSynchronize());
			if (i == 1)
				CK(cudaProfilerStart());
			gpu_model_forward(g, ids, (int)B, (int)T, NULL);
			vocab_loss_cuda(d_loss, NULL, dhid, gpu_model_hidden(g), NULL, d_tg, lm, n, c.C, c.V, 1.0f / n, work);
			gpu_model_backward(g, (int)B, (int)T, dhid, NULL, NULL, NULL);
			CK(cudaDeviceSynchronize());
		}
		CK(cudaProfilerStop());
		fprintf(stderr, "bench/teacher: one forward + backward profiled\n");
		return 0;
	}
	for (int i = 0; i < 12; i++) {
		CK(cudaEventRecord(e0, 0));
		gpu_model_forward(g, ids, (int)B, (int)T, NULL);
		matmul_forward_cuda(logits, gpu_model_hidden(g), lm, NULL, n, c.C, c.V);
		CK(cudaEventRecord(e1, 0));
		CK(cudaEventSynchronize(e1));
		if (i >= 2)
			CK(cudaEventElapsedTime(&fwd[i - 2], e0, e1));
	}
	for (int i = 0; i < 12; i++) {
		CK(cudaEventRecord(e0, 0));
		gpu_model_forward(g, ids, (int)B, (int)T, NULL);
		CK(cudaEventRecord(ef, 0));
		vocab_loss_cuda(d_loss, NULL, dhid, gpu_model_hidden(g), NULL, d_tg, lm, n, c.C, c.V, 1.0f / n, work);
		CK(cudaEventRecord(el, 0));
		gpu_model_backward(g, (int)B, (int)T, dhid, NULL, NULL, NULL);
		CK(cudaEventRecord(e1, 0));
		CK(cudaEventSynchronize(e1));
		if (i >= 2) {
			CK(cudaEventElapsedTime(&fb[i - 2], e0, e1));
			CK(cudaEventElapsedTime(&ph[0][i - 2], e0, ef));
			CK(cudaEventElapsedTime(&ph[1][i - 2], ef, el));
			CK(cudaEventElapsedTime(&ph[2][i - 2], el, e1));
		}
	}
	qsort(fwd, 10, sizeof(float), cmp);
	qsort(fb, 10, sizeof(float), cmp);
	for (int k = 0; k < 3; k++)
		qsort(ph[k], 10, sizeof(float), cmp);
	/* where the forward + backward goes (medians of each part on its own),
	 * and the last step's loss (variants of the kernels should agree on it
	 * to a few digits) */
	float loss;
	gpu_download(&loss, d_loss, sizeof loss);
	fprintf(stderr, "bench/teacher: forward + backward = forward %.1f ms, loss %.1f ms, backward %.1f ms; loss %.6f\n",
	        ph[0][5], ph[1][5], ph[2][5], loss);
	size_t wb, ab, freeb, totalb;
	gpu_model_bytes(g, &wb, &ab);
	CK(cudaMemGetInfo(&freeb, &totalb));
	/* FLOPs of the matrix products: the layers' and the vocabulary's GEMMs
	 * (2 per weight and token; the backward's dx the same again) and the
	 * causal attention (4 T^2/2 D H per layer and sequence forward, 2.5 times
	 * that backward) */
	double lin = 2.0 * n * ((double)c.L * ((double)c.C * (c.H + 2 * c.G) * c.D + (double)c.H * c.D * c.C +
	                                       3.0 * c.C * c.F) + (double)c.C * c.V);
	double att = 4.0 * B * c.H * c.D * ((double)T * T / 2) * c.L;
	double ffwd = lin + att, ffb = 2 * lin + 3.5 * att;
	printf("ours B=%lld T=%lld: forward %.1f ms (%.1fK tok/s, %.0f TFLOP/s), forward+backward %.1f ms (%.1fK tok/s, "
	       "%.0f TFLOP/s)\n", B, T, fwd[5], n / fwd[5], ffwd / fwd[5] / 1e9, fb[5], n / fb[5], ffb / fb[5] / 1e9);
	printf("ours memory: weights %.2f GiB, activations %.2f GiB, forward logits %.2f GiB; device in use %.2f of "
	       "%.2f GiB\n", GIB(wb), GIB(ab), GIB(nV), GIB(totalb - freeb), GIB(totalb));
	CK(cudaEventDestroy(e0));
	CK(cudaEventDestroy(e1));
	CK(cudaEventDestroy(ef));
	CK(cudaEventDestroy(el));
	gpu_free(logits), gpu_free(dhid), gpu_free(d_tg), gpu_free(work), gpu_free(d_loss);
	free(ids), free(tg);
	gpu_model_free(g);
	model_free(&m);
	return 0;
}
