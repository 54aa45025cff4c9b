/* test_model: the CPU forward pass against Hugging Face transformers.
 * tests/data/tiny-*.ref.h5 hold the float64 reference of transformers on the
 * same bf16 weights (made by tests/make_tiny_ref.py): logits, and each layer's
 * operator input u and output a. The bound is the issue's: 1e-4 of max|ref|. */
#include <string.h>

#include "h5io.h"
#include "model.h"
#include "test.h"
#include "util.h"

typedef struct {
	float *u, *a; // (L, B*T, C)
	int C;
} Capture;

static void capture(void *ctx, int l, const float *u, float *a, int B, int T)
{
	Capture *c = ctx;
	size_t n = (size_t)B * T * c->C;
	memcpy(c->u + (size_t)l * n, u, n * sizeof(float));
	memcpy(c->a + (size_t)l * n, a, n * sizeof(float));
}

static void check_model(const char *name)
{
	char dir[256], ref[256], msg[256];
	snprintf(dir, sizeof dir, "tests/data/%s", name);
	snprintf(ref, sizeof ref, "tests/data/%s.ref.h5", name);
	Model m;
	model_load(&m, dir);
	const ModelConfig *c = &m.cfg;
	H5File *f = h5_open(ref);
	int64_t d[4];
	int32_t *ids = h5_read(f, "/ids", DT_I32, NULL, d);
	int B = (int)d[0], T = (int)d[1];
	double *rlog = h5_read(f, "/logits", DT_F64, NULL, NULL);
	double *ru = h5_read(f, "/u", DT_F64, NULL, NULL);
	double *ra = h5_read(f, "/a", DT_F64, NULL, NULL);
	h5_close(f);

	size_t n = (size_t)B * T;
	float *hidden = mallocCheck(n * c->C * sizeof(float));
	float *logits = mallocCheck(n * c->V * sizeof(float));
	Capture cap = {mallocCheck((size_t)c->L * n * c->C * sizeof(float)),
	               mallocCheck((size_t)c->L * n * c->C * sizeof(float)), c->C};
	model_forward(&m, ids, B, T, hidden, capture, &cap);
	model_logits(&m, hidden, (int)n, logits);

	double tol = 1e-4 * max_abs(rlog, n * c->V);
	snprintf(msg, sizeof msg, "%s: logits equal transformers float64 within 1e-4 of max|logit|", name);
	test_cond(msg, check_tensor("logits", logits, rlog, n * c->V, tol, 0));
	size_t lu = (size_t)c->L * n * c->C;
	snprintf(msg, sizeof msg, "%s: every layer's operator input u matches", name);
	test_cond(msg, check_tensor("u", cap.u, ru, lu, 1e-4 * max_abs(ru, lu), 0));
	snprintf(msg, sizeof msg, "%s: every layer's operator output a matches", name);
	test_cond(msg, check_tensor("a", cap.a, ra, lu, 1e-4 * max_abs(ra, lu), 0));

	/* sequence 1 alone gives what it gave inside the batch: positions restart */
	float *h1 = mallocCheck((size_t)T * c->C * sizeof(float));
	model_forward(&m, ids + T, 1, T, h1, NULL, NULL);
	snprintf(msg, sizeof msg, "%s: a sequence alone equals the same sequence in a batch", name);
	test_cond(msg, memcmp(h1, hidden + (size_t)T * c->C, (size_t)T * c->C * sizeof(float)) == 0);

	/* decoding one token at a time over the cache gives the batch's logits */
	KVCache kv;
	kvcache_init(&kv, &m, T);
	float *step = mallocCheck((size_t)T * c->V * sizeof(float));
	for (int t = 0; t < T; t++)
		model_step(&m, &kv, ids[t], step + (size_t)t * c->V);
	double *ref64 = mallocCheck((size_t)T * c->V * sizeof(double));
	for (size_t i = 0; i < (size_t)T * c->V; i++)
		ref64[i] = logits[i];
	snprintf(msg, sizeof msg, "%s: model_step over a KV cache equals the batched forward", name);
	test_cond(msg, check_tensor("step", step, ref64, (size_t)T * c->V, 1e-5 * max_abs(ref64, (size_t)T * c->V), 0));
	kvcache_free(&kv);
	free(step), free(ref64);

	/* the fingerprint: 16 hex digits, the same on every load */
	Model m2;
	model_load(&m2, dir);
	snprintf(msg, sizeof msg, "%s: fingerprint %s is stable across loads", name, m.fingerprint);
	test_cond(msg, strlen(m.fingerprint) == 16 && strcmp(m.fingerprint, m2.fingerprint) == 0);
	model_free(&m2);

	free(h1), free(hidden), free(logits), free(cap.u), free(cap.a);
	free(ids), free(rlog), free(ru), free(ra);
	model_free(&m);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	check_model("tiny-qwen2");
	check_model("tiny-llama");

	Model a, b;
	model_load(&a, "tests/data/tiny-qwen2");
	model_load(&b, "tests/data/tiny-llama");
	test_cond("the two fixtures have different fingerprints", strcmp(a.fingerprint, b.fingerprint) != 0);
	test_cond("tiny-qwen2 is read as qwen2, tied, with q/k/v biases",
	          a.cfg.arch == ARCH_QWEN2 && a.cfg.tied && a.cfg.qkv_bias && !a.cfg.o_bias &&
	          a.cfg.rope_theta == 1e6 && a.cfg.G == 2);
	test_cond("tiny-llama is read as llama, untied, one kv head, head_dim 24, llama3 rope",
	          b.cfg.arch == ARCH_LLAMA && !b.cfg.tied && !b.cfg.qkv_bias && b.cfg.G == 1 &&
	          b.cfg.D == 24 && b.cfg.rope_type == ROPE_LLAMA3 && b.cfg.rope_theta == 1e4);
	model_free(&a);
	model_free(&b);
	return test_report();
}
