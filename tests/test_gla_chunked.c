/* test_gla_chunked: gla_backward_chunked, the specification of the GPU
 * chunked backward, against gla_backward (recurrent, the specification of
 * the gradients; finite differences check that one in test_grad_cpu), at
 * chunk 16 and 64, T 1, one short of a chunk, a chunk, one past and several,
 * Dk != Dv, with and without an initial state and a final state's gradient,
 * decays in fla's range down to about -1.3 a step; then the NULL gradients
 * left out. Both sides sum and keep their states in double: every gradient
 * agrees within 1e-9 of its scale (test_rel_err). */
#include <string.h>

#include "linear_attn.h"
#include "test.h"
#include "util.h"

/* n values in [lo, hi) */
static float *uniform(size_t n, float lo, float hi)
{
	float *x = test_rnd(n, 1);
	for (size_t i = 0; i < n; i++)
		x[i] = lo + (x[i] + 1) / 2 * (hi - lo);
	return x;
}

static double worst;

static void check(int chunk, int B, int T, int H, int Dk, int Dv, int with_S0, int with_dSf, float gmin)
{
	size_t nk = (size_t)B * T * H * Dk, nv = (size_t)B * T * H * Dv, nS = (size_t)B * H * Dk * Dv;
	float *q = test_rnd(nk, 1), *k = test_rnd(nk, 1 / sqrtf((float)Dk)), *v = test_rnd(nv, 1);
	float *gk = uniform(nk, gmin, -0.005f), *dout = test_rnd(nv, 1);
	float *S0 = with_S0 ? test_rnd(nS, 0.5f) : NULL, *dSf = with_dSf ? test_rnd(nS, 1) : NULL;
	float scale = 1 / sqrtf((float)Dk);
	float *r[5], *c[5]; /* dq, dk, dv, dgk, dS0: recurrent, chunked */
	size_t n[5] = {nk, nk, nv, nk, nS};
	for (int i = 0; i < 5; i++)
		r[i] = mallocCheck(n[i] * 4), c[i] = mallocCheck(n[i] * 4);
	gla_backward(r[0], r[1], r[2], r[3], r[4], dout, dSf, q, k, v, gk, S0, B, T, H, Dk, Dv, scale);
	gla_backward_chunked(c[0], c[1], c[2], c[3], c[4], dout, dSf, q, k, v, gk, S0, B, T, H, Dk, Dv, scale, chunk);
	double e[5], m = 0;
	for (int i = 0; i < 5; i++) {
		e[i] = test_rel_err(c[i], r[i], n[i]);
		m = e[i] > m || isnan(e[i]) ? e[i] : m;
	}
	worst = m > worst ? m : worst;
	char msg[200];
	snprintf(msg, sizeof msg,
	         "gla_backward_chunked chunk %d B=%d T=%d H=%d Dk=%d Dv=%d%s%s gk>=%.1f: dq %.0e dk %.0e dv %.0e dgk %.0e "
	         "dS0 %.0e",
	         chunk, B, T, H, Dk, Dv, with_S0 ? " S0" : "", with_dSf ? " dSf" : "", gmin, e[0], e[1], e[2], e[3], e[4]);
	test_cond(msg, m < 1e-9);
	/* the optional gradients left out change nothing else */
	if (with_S0 && with_dSf) {
		float *x[3];
		for (int i = 0; i < 3; i++)
			x[i] = mallocCheck(n[i] * 4);
		gla_backward_chunked(x[0], x[1], x[2], NULL, NULL, dout, dSf, q, k, v, gk, S0, B, T, H, Dk, Dv, scale, chunk);
		snprintf(msg, sizeof msg, "gla_backward_chunked without dgk and dS0 gives the same dq, dk, dv (T=%d)", T);
		test_cond(msg, !memcmp(x[0], c[0], nk * 4) && !memcmp(x[1], c[1], nk * 4) && !memcmp(x[2], c[2], nv * 4));
		for (int i = 0; i < 3; i++)
			free(x[i]);
	}
	for (int i = 0; i < 5; i++)
		free(r[i]), free(c[i]);
	free(q), free(k), free(v), free(gk), free(dout), free(S0), free(dSf);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	test_seed(0x510e527fade682d1ULL);
	static const int Ts[] = {1, 63, 64, 65, 150};
	for (int chunk = 16; chunk <= 64; chunk *= 4)
		for (int i = 0; i < 5; i++) {
			int T = Ts[i];
			check(chunk, 2, T, 3, 8, 6, 1, 1, -0.6f);
			check(chunk, 1, T, 2, 6, 10, 0, 0, -0.6f);
			check(chunk, 3, T, 1, 12, 4, 1, 0, -1.3f);
			check(chunk, 1, T, 2, 5, 7, 0, 1, -1.3f);
		}
	printf("worst relative error %.1e\n", worst);
	return test_report();
}
