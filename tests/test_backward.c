/* test_backward: the teacher's backward pass (activations only) against
 * finite differences, on the tiny Qwen2 and Llama fixtures. The loss is
 * sum(logits * R); a forward hook perturbs one element of one layer's
 * attention output a_l, and the difference quotient must equal the dL/da_l
 * that model_backward hands its gradient hook. */
#include <string.h>

#include "model.h"
#include "test.h"
#include "util.h"

typedef struct {
	int layer;
	size_t index;
	float delta;
} Poke;

static void poke(void *ctx, int l, const float *u, float *a, int B, int T)
{
	const Poke *p = ctx;
	(void)u, (void)B, (void)T;
	if (l == p->layer)
		a[p->index] += p->delta;
}

typedef struct {
	float *da; // (L, B*T, C)
	size_t nC;
} Grads;

static void keep(void *ctx, int l, const float *u, const float *da, int B, int T)
{
	Grads *g = ctx;
	(void)u, (void)B, (void)T;
	memcpy(g->da + (size_t)l * g->nC, da, g->nC * sizeof(float));
}

static double loss(const Model *m, const int32_t *ids, int B, int T, const float *R, Poke *p)
{
	int n = B * T;
	float *hidden = mallocCheck((size_t)n * m->cfg.C * sizeof(float));
	float *logits = mallocCheck((size_t)n * m->cfg.V * sizeof(float));
	model_forward(m, ids, B, T, hidden, poke, p);
	model_logits(m, hidden, n, logits);
	double l = 0;
	for (size_t i = 0; i < (size_t)n * m->cfg.V; i++)
		l += (double)logits[i] * R[i];
	free(hidden), free(logits);
	return l;
}

static void check(const char *dir)
{
	Model m;
	model_load(&m, dir);
	const ModelConfig *c = &m.cfg;
	int B = 2, T = 7, n = B * T;
	int32_t ids[14];
	uint64_t r = 12345;
	for (int i = 0; i < n; i++)
		ids[i] = (int32_t)((r = r * 6364136223846793005ULL + 1442695040888963407ULL) >> 33) % c->V;
	float *R = mallocCheck((size_t)n * c->V * sizeof(float));
	for (size_t i = 0; i < (size_t)n * c->V; i++)
		R[i] = (float)(((r = r * 6364136223846793005ULL + 1442695040888963407ULL) >> 40) / 16777216.0 - 0.5);
	float *dhidden = mallocCheck((size_t)n * c->C * sizeof(float));
	Grads g = {mallocCheck((size_t)c->L * n * c->C * sizeof(float)), (size_t)n * c->C};
	model_logits_backward(&m, R, n, dhidden);
	model_backward(&m, ids, B, T, dhidden, keep, &g, NULL);

	int bad = 0, checked = 0;
	double maxerr = 0;
	for (int k = 0; k < 48; k++) {
		Poke p = {k % c->L, (size_t)((r = r * 6364136223846793005ULL + 1442695040888963407ULL) >> 33) % g.nC, 1e-2f};
		double lp = loss(&m, ids, B, T, R, &p);
		p.delta = -1e-2f;
		double lm = loss(&m, ids, B, T, R, &p);
		double fd = (lp - lm) / 2e-2, an = g.da[(size_t)p.layer * g.nC + p.index], err = fabs(fd - an);
		maxerr = err > maxerr ? err : maxerr;
		if (err > 2e-3 + 1e-2 * fabs(fd) && bad++ < 5)
			printf("  layer %d element %zu: finite difference %.6g, backward %.6g\n", p.layer, p.index, fd, an);
		checked++;
	}
	char msg[160];
	snprintf(msg, sizeof msg, "%s: dL/da_l of model_backward equals finite differences (%d elements, max error %.1e)",
	         dir, checked, maxerr);
	test_cond(msg, bad == 0);
	free(R), free(dhidden), free(g.da);
	model_free(&m);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	check("tests/data/tiny-qwen2");
	check("tests/data/tiny-llama");
	check("tests/data/gguf/tiny-llama.gguf");
	return test_report();
}
