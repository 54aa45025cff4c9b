/* test_gpu_model: the teacher's forward and backward on the GPU against the
 * CPU reference, on the tiny GGUF fixtures (head dim 64; every quantisation
 * type, dequantised to bf16 on upload): B 2 sequences of 37 tokens, in
 * GpuModels with room for more tokens than that (so a row stride that
 * confuses n with max_tokens shows). bf16 activations through the whole
 * network: the logits agree within 3e-2 of their scale in both the
 * inference and the train GpuModel, the final hidden rows within 3e-2, and
 * the backward's dL/dx0 and every layer's dL/da within 5e-2 of theirs;
 * gpu_model_forward_layers stopped after layer 0 hands its hook the same
 * u and a as the CPU forward's hook, within 3e-2 (what distill-linear
 * trains on). Runs on a GPU: make test-gpu. */
#include <string.h>

#include "gpu.h"
#include "gpu_model.h"
extern "C" {
#include "test.h"
#include "util.h"
}

/* each layer's dL/da, from either side's grad hook: L x (n, C) float32 */
typedef struct {
	float *da;
	int n, C;
} Grads;

static void cpu_hook(void *ctx, int l, const float *u, const float *da, int B, int T)
{
	Grads *g = (Grads *)ctx;
	(void)u;
	memcpy(g->da + (size_t)l * g->n * g->C, da, (size_t)B * T * g->C * sizeof(float));
}

static void gpu_hook(void *ctx, int l, const uint16_t *d_da, int n, int C)
{
	Grads *g = (Grads *)ctx;
	uint16_t *h = (uint16_t *)mallocCheck((size_t)n * C * 2);
	gpu_download(h, d_da, (size_t)n * C * 2);
	for (size_t i = 0; i < (size_t)n * C; i++)
		g->da[(size_t)l * g->n * g->C + i] = bf16_to_f32(h[i]);
	free(h);
}

static int close_to(const char *name, const float *got, const float *ref, size_t n, double tol)
{
	double *r = (double *)mallocCheck(n * sizeof(double));
	for (size_t i = 0; i < n; i++)
		r[i] = ref[i];
	int ok = check_tensor(name, got, r, n, tol * max_abs(r, n), 0);
	free(r);
	return ok;
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
	GpuModel *g = gpu_model_new(&m, n + 5, 0);
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

	gpu_model_free(g);

	/* a train GpuModel: the same logits, the final hidden rows, then the
	 * backward from a random dL/dhidden through every layer: dL/dx0 and
	 * each layer's dL/da */
	g = gpu_model_new(&m, n + 3, 1);
	gpu_model_forward(g, ids, B, T, got);
	snprintf(msg, sizeof msg, "%s: train GpuModel's logits equal the CPU reference within 3e-2 of max|logit|", path);
	test_cond(msg, check_tensor("logits", got, r, (size_t)n * c->V, 3e-2 * max_abs(r, (size_t)n * c->V), 0));
	size_t nC = (size_t)n * c->C;
	uint16_t *hb = (uint16_t *)mallocCheck(nC * 2);
	float *hid = (float *)mallocCheck(nC * 4);
	gpu_download(hb, gpu_model_hidden(g), nC * 2);
	for (size_t i = 0; i < nC; i++)
		hid[i] = bf16_to_f32(hb[i]);
	snprintf(msg, sizeof msg, "%s: gpu_model_hidden equals the CPU's final-normed hidden within 3e-2", path);
	test_cond(msg, close_to("hidden", hid, hidden, nC, 3e-2));

	float *dh = (float *)mallocCheck(nC * 4), *dx_cpu = (float *)mallocCheck(nC * 4);
	float *dx_gpu = (float *)mallocCheck(nC * 4);
	Grads gc = {(float *)mallocCheck((size_t)c->L * nC * 4), n, c->C};
	Grads gg = {(float *)mallocCheck((size_t)c->L * nC * 4), n, c->C};
	for (size_t i = 0; i < nC; i++)
		dh[i] = (float)((i * 2654435761u % 1000) / 500.0 - 1.0);
	model_backward(&m, ids, B, T, dh, cpu_hook, &gc, dx_cpu);
	gpu_model_backward_host(g, B, T, dh, gpu_hook, &gg, dx_gpu);
	snprintf(msg, sizeof msg, "%s: GPU backward's dL/dx0 equals the CPU reference within 5e-2 of its scale", path);
	test_cond(msg, close_to("dx0", dx_gpu, dx_cpu, nC, 5e-2));
	int ok = 1;
	for (int l = 0; l < c->L; l++) {
		char name[32];
		snprintf(name, sizeof name, "da[%d]", l);
		ok &= close_to(name, gg.da + (size_t)l * nC, gc.da + (size_t)l * nC, nC, 5e-2);
	}
	snprintf(msg, sizeof msg, "%s: every layer's dL/da (the grad hook) equals the CPU's within 5e-2", path);
	test_cond(msg, ok);

	/* the device entry point, into a device dx0, gives the same (up to the
	 * order of the attention backward's float32 atomics) */
	bf16_t *d_dh = (bf16_t *)gpu_alloc(nC * 2), *d_dx0 = (bf16_t *)gpu_alloc(nC * 2);
	for (size_t i = 0; i < nC; i++)
		hb[i] = f32_to_bf16(dh[i]);
	gpu_upload(d_dh, hb, nC * 2);
	gpu_model_backward(g, B, T, d_dh, NULL, NULL, d_dx0);
	gpu_download(hb, d_dx0, nC * 2);
	for (size_t i = 0; i < nC; i++)
		hid[i] = bf16_to_f32(hb[i]);
	snprintf(msg, sizeof msg, "%s: gpu_model_backward into a device dx0 equals gpu_model_backward_host", path);
	test_cond(msg, close_to("dx0", hid, dx_gpu, nC, 1e-2));
	gpu_free(d_dh), gpu_free(d_dx0);
	free(hb), free(hid), free(dh), free(dx_cpu), free(dx_gpu), free(gc.da), free(gg.da);
	gpu_model_free(g);
	free(hidden), free(ref), free(got), free(r);
	model_free(&m);
}

/* layer 0's u and a as the layer hooks see them, float32 (n, C) each */
typedef struct {
	float *u, *a;
	int n, C;
} Seen;

static void cpu_seen(void *ctx, int l, const float *u, float *a, int B, int T)
{
	Seen *s = (Seen *)ctx;
	if (l == 0)
		memcpy(s->u, u, (size_t)B * T * s->C * 4), memcpy(s->a, a, (size_t)B * T * s->C * 4);
}

static void gpu_seen(void *ctx, int l, const uint16_t *d_u, uint16_t *d_a, int n, int C)
{
	Seen *s = (Seen *)ctx;
	if (l != 0)
		BUG("gpu_model_forward_layers ran layer %d after the last asked for", l);
	float *du = (float *)gpu_alloc((size_t)n * C * 4), *da = (float *)gpu_alloc((size_t)n * C * 4);
	bf16_to_f32_cuda(du, d_u, (size_t)n * C), bf16_to_f32_cuda(da, d_a, (size_t)n * C);
	gpu_download(s->u, du, (size_t)n * C * 4), gpu_download(s->a, da, (size_t)n * C * 4);
	gpu_free(du), gpu_free(da);
}

static void check_layers(const char *path)
{
	Model m;
	model_load(&m, path);
	const ModelConfig *c = &m.cfg;
	int B = 2, T = 37, n = B * T;
	int32_t ids[74];
	for (int i = 0; i < n; i++)
		ids[i] = (i * 104729 + 7) % c->V;
	size_t nC = (size_t)n * c->C;
	Seen sc = {(float *)mallocCheck(nC * 4), (float *)mallocCheck(nC * 4), n, c->C};
	Seen sg = {(float *)mallocCheck(nC * 4), (float *)mallocCheck(nC * 4), n, c->C};
	float *hidden = (float *)mallocCheck(nC * 4);
	model_forward(&m, ids, B, T, hidden, cpu_seen, &sc);
	GpuModel *g = gpu_model_new(&m, n + 5, 0);
	gpu_model_forward_layers(g, ids, B, T, 0, gpu_seen, &sg);
	char msg[160];
	snprintf(msg, sizeof msg, "%s: gpu_model_forward_layers to layer 0 hands the hook the CPU's u and a (3e-2)", path);
	test_cond(msg, close_to("u", sg.u, sc.u, nC, 3e-2) & close_to("a", sg.a, sc.a, nC, 3e-2));
	gpu_model_free(g);
	free(sc.u), free(sc.a), free(sg.u), free(sg.a), free(hidden);
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
	check_layers("tests/data/gguf/tiny-qwen2.gguf");
	return test_report();
}
