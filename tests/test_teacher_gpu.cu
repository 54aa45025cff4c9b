/* test_teacher_gpu: the real default teacher (data/teacher/, fetched by
 * `make data`; skipped when absent) on the GPU against the CPU reference:
 * the logits of 2 sequences of the ids of tests/data/tok/mixed.ids (the
 * teacher's own tokenizer on mixed.txt). The GPU keeps activations in bf16
 * through 24 layers, the CPU in float32, so the logits agree to bf16
 * precision, not to the last bit: the test asks for next-token losses
 * within 1% of each other, the same argmax at 97% of positions or more, and
 * at 99% of positions or more every logit within 10% of that position's
 * largest |logit| (319 of 320 on an H100, 2026-11-27). The
 * positions left out are those of Qwen2.5's massive activations (values in
 * the thousands in a few channels of the residual stream at the first token
 * and the first delimiter), where a bf16 residual stream loses digits: on
 * these ids position 1 (",") is 10.2 off on an H100, and transformers' own
 * bf16 model on the GPU is 11.2 off there against its float32 one (checked
 * on the device, 2026-11-27). Runs on a GPU: make test-gpu. */
#include <string.h>
#include <unistd.h>

#include "gpu.h"
#include "gpu_model.h"
extern "C" {
#include "test.h"
#include "tokens.h"
#include "util.h"
}

#define TEACHER "data/teacher/qwen2.5-coder-0.5b.gguf"

/* the mean next-token cross-entropy of logits (B*T, V) on ids */
static double next_token_loss(const float *logits, const int32_t *ids, int B, int T, int V)
{
	double sum = 0;
	for (int b = 0; b < B; b++)
		for (int t = 0; t + 1 < T; t++) {
			const float *z = logits + ((size_t)b * T + t) * V;
			double mx = z[0], s = 0;
			for (int v = 1; v < V; v++)
				mx = z[v] > mx ? z[v] : mx;
			for (int v = 0; v < V; v++)
				s += exp(z[v] - mx);
			sum += mx + log(s) - z[ids[b * T + t + 1]];
		}
	return sum / (B * (T - 1));
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	if (cuda_device_count() == 0) {
		printf("SKIP: no GPU\n");
		return 0;
	}
	if (access(TEACHER, R_OK) != 0) {
		printf("SKIP: %s not fetched (make data)\n", TEACHER);
		return 0;
	}
	Model m;
	model_load(&m, TEACHER);
	const ModelConfig *c = &m.cfg;
	int64_t nids;
	int32_t *ids = tokens_read_text("tests/data/tok/mixed.ids", c->V, &nids);
	int B = 2, T = (int)(nids / 2 < 160 ? nids / 2 : 160), n = B * T;
	size_t nv = (size_t)n * c->V;
	float *hidden = (float *)mallocCheck((size_t)n * c->C * 4);
	float *ref = (float *)mallocCheck(nv * 4), *got = (float *)mallocCheck(nv * 4);
	double t0 = now_seconds();
	model_forward(&m, ids, B, T, hidden, NULL, NULL);
	model_logits(&m, hidden, n, ref);
	double t1 = now_seconds();
	GpuModel *g = gpu_model_new(&m, n, 0);
	gpu_model_forward(g, ids, B, T, got);
	printf("# %s: %d x %d tokens, CPU %.1fs, GPU (with upload) %.1fs\n", TEACHER, B, T, t1 - t0,
	       now_seconds() - t1);

	int agree = 0, close = 0;
	double maxref = 0, maxdiff = 0;
	for (size_t i = 0; i < nv; i++)
		maxref = fabs(ref[i]) > maxref ? fabs(ref[i]) : maxref;
	for (int t = 0; t < n; t++) {
		const float *a = got + (size_t)t * c->V, *r = ref + (size_t)t * c->V;
		int ia = 0, ir = 0;
		double pd = 0, pm = 0;
		for (int v = 0; v < c->V; v++) {
			ia = a[v] > a[ia] ? v : ia, ir = r[v] > r[ir] ? v : ir;
			pd = fabs(a[v] - r[v]) > pd ? fabs(a[v] - r[v]) : pd;
			pm = fabs(r[v]) > pm ? fabs(r[v]) : pm;
		}
		agree += ia == ir;
		close += pd <= 0.1 * pm;
		maxdiff = pd > maxdiff ? pd : maxdiff;
		if (pd > 0.1 * pm)
			printf("  position %d (id %d): max |diff| %.3f, argmax %d vs %d\n", t, ids[t], pd, ia, ir);
	}
	double lr = next_token_loss(ref, ids, B, T, c->V), lg = next_token_loss(got, ids, B, T, c->V);
	printf("  loss CPU %.6f GPU %.6f; argmax agreement %d/%d; max |diff| %.4f of max |logit| %.2f; %d/%d positions "
	       "within 10%%\n", lr, lg, agree, n, maxdiff, maxref, close, n);
	test_cond("the real teacher's next-token loss on the GPU is within 1% of the CPU's", fabs(lg - lr) <= 0.01 * lr);
	test_cond("the real teacher's GPU argmax equals the CPU's at >= 97% of positions", agree >= 0.97 * n);
	test_cond("the real teacher's GPU logits are within 10% of the position's max |logit| at >= 99% of positions",
	          close >= 0.99 * n);
	gpu_model_free(g);
	free(hidden), free(ref), free(got), free(ids);
	model_free(&m);
	return test_report();
}
