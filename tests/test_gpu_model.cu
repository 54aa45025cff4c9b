/* test_gpu_model: the teacher's forward on the GPU against the CPU
 * reference, on the tiny GGUF fixtures (head dim 64; every quantisation
 * type, dequantised to bf16 on upload): B 2 sequences of 37 tokens. bf16
 * activations through the whole network: the logits agree within 3e-2 of
 * their scale. Runs on a GPU: make test-gpu. */
#include <string.h>

#include "gpu.h"
#include "gpu_model.h"
extern "C" {
#include "test.h"
#include "util.h"
}

static void check(const char *path)
{
	Model m;
	model_load(&m, path);
	const ModelConfig *c = &m.cfg;
	int B = 2, T = 37, n = B * T;
	int32_t ids[74];
	for (int i = 0; i < n; i++)
		ids[i] = (i * 7919 + 13) % c->V;
	float *hidden = (float *)mallocCheck((size_t)n * c->C * 4);
	float *ref = (float *)mallocCheck((size_t)n * c->V * 4), *got = (float *)mallocCheck((size_t)n * c->V * 4);
	model_forward(&m, ids, B, T, hidden, NULL, NULL);
	model_logits(&m, hidden, n, ref);
	GpuModel *g = gpu_model_new(&m, n);
	gpu_model_forward(g, ids, B, T, got);
	double *r = (double *)mallocCheck((size_t)n * c->V * sizeof(double));
	int agree = 0;
	for (size_t i = 0; i < (size_t)n * c->V; i++)
		r[i] = ref[i];
	for (int t = 0; t < n; t++) {
		int a = 0, b = 0;
		for (int v = 1; v < c->V; v++) {
			a = got[(size_t)t * c->V + v] > got[(size_t)t * c->V + a] ? v : a;
			b = ref[(size_t)t * c->V + v] > ref[(size_t)t * c->V + b] ? v : b;
		}
		agree += a == b;
	}
	char msg[160];
	snprintf(msg, sizeof msg, "%s: GPU logits equal the CPU reference within 3e-2 of max|logit| (argmax %d/%d)",
	         path, agree, n);
	test_cond(msg, check_tensor("logits", got, r, (size_t)n * c->V, 3e-2 * max_abs(r, (size_t)n * c->V), 0));

	/* the backward: the gradient with respect to the embeddings, from a
	 * random dL/dhidden, through every layer */
	float *dh = (float *)mallocCheck((size_t)n * c->C * 4), *dx_cpu = (float *)mallocCheck((size_t)n * c->C * 4);
	float *dx_gpu = (float *)mallocCheck((size_t)n * c->C * 4);
	for (size_t i = 0; i < (size_t)n * c->C; i++)
		dh[i] = (float)((i * 2654435761u % 1000) / 500.0 - 1.0);
	model_backward(&m, ids, B, T, dh, NULL, NULL, dx_cpu);
	gpu_model_backward(g, ids, B, T, dh, NULL, NULL, dx_gpu);
	double *rx = (double *)mallocCheck((size_t)n * c->C * sizeof(double));
	for (size_t i = 0; i < (size_t)n * c->C; i++)
		rx[i] = dx_cpu[i];
	snprintf(msg, sizeof msg, "%s: GPU backward's dL/dx0 equals the CPU reference within 5e-2 of its scale", path);
	test_cond(msg, check_tensor("dx0", dx_gpu, rx, (size_t)n * c->C, 5e-2 * max_abs(rx, (size_t)n * c->C), 0));
	free(dh), free(dx_cpu), free(dx_gpu), free(rx);
	gpu_model_free(g);
	free(hidden), free(ref), free(got), free(r);
	model_free(&m);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	if (cuda_device_count() == 0) {
		printf("SKIP: no GPU\n");
		return 0;
	}
	check("tests/data/gguf/tiny-qwen2.gguf");
	check("tests/data/gguf/tiny-llama.gguf");
	return test_report();
}
