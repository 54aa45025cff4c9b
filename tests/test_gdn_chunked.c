/* test_gdn_chunked: gdn_backward_chunked, the specification of the GPU
 * chunked backward, against gdn_backward (recurrent, the specification of
 * the gradients; finite differences check that one in test_grad_cpu), at
 * chunk 16 and 64, T 1, one short of a chunk, a chunk, one past and several,
 * Dk != Dv, with and without an initial state and a final state's gradient;
 * then the NULL gradients left out. Both sides sum in double, but gdn_backward
 * recomputes its states in float32: every gradient agrees within 1e-6 of
 * its scale (test_rel_err), not to double's digits. */
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

/* L2-normalise each row of x (n rows of d), as the operator does to q, k */
static void l2rows(float *x, size_t n, int d)
{
	for (size_t r = 0; r < n; r++) {
		double s = 0;
		for (int i = 0; i < d; i++)
			s += (double)x[r * d + i] * x[r * d + i];
		for (int i = 0; i < d; i++)
			x[r * d + i] = (float)(x[r * d + i] / sqrt(s + 1e-12));
	}
}

static double worst;

static void check(int chunk, int B, int T, int H, int Dk, int Dv, int with_S0, int with_dSf)
{
	size_t nk = (size_t)B * T * H * Dk, nv = (size_t)B * T * H * Dv, nh = (size_t)B * T * H;
	size_t nS = (size_t)B * H * Dk * Dv;
	float *q = test_rnd(nk, 1), *k = test_rnd(nk, 1), *v = test_rnd(nv, 1);
	float *g = uniform(nh, -0.6f, -0.01f), *beta = uniform(nh, 0.05f, 0.95f);
	float *S0 = with_S0 ? test_rnd(nS, 0.5f) : NULL, *dSf = with_dSf ? test_rnd(nS, 1) : NULL;
	float *dout = test_rnd(nv, 1);
	l2rows(q, nh, Dk), l2rows(k, nh, Dk);
	float scale = 1 / sqrtf((float)Dk);
	float *r[6], *c[6]; /* dq, dk, dv, dg, dbeta, dS0: recurrent, chunked */
	size_t n[6] = {nk, nk, nv, nh, nh, nS};
	for (int i = 0; i < 6; i++)
		r[i] = mallocCheck(n[i] * 4), c[i] = mallocCheck(n[i] * 4);
	gdn_backward(r[0], r[1], r[2], r[3], r[4], r[5], dout, dSf, q, k, v, g, beta, S0, B, T, H, Dk, Dv, scale);
	gdn_backward_chunked(c[0], c[1], c[2], c[3], c[4], c[5], dout, dSf, q, k, v, g, beta, S0, B, T, H, Dk, Dv,
	                     scale, chunk);
	double e[6], m = 0;
	for (int i = 0; i < 6; i++) {
		e[i] = test_rel_err(c[i], r[i], n[i]);
		m = e[i] > m || isnan(e[i]) ? e[i] : m;
	}
	worst = m > worst ? m : worst;
	char msg[256];
	snprintf(msg, sizeof msg, "gdn_backward_chunked chunk %d B=%d T=%d H=%d Dk=%d Dv=%d%s%s equals gdn_backward "
	         "(dq %.1e dk %.1e dv %.1e dg %.1e dbeta %.1e dS0 %.1e)", chunk, B, T, H, Dk, Dv,
	         with_S0 ? ", S0" : "", with_dSf ? ", dSf" : "", e[0], e[1], e[2], e[3], e[4], e[5]);
	test_cond(msg, m < 1e-6);
	/* the optional gradients left out: the rest unchanged */
	if (chunk == 16 && T == 65) {
		gdn_backward_chunked(c[0], c[1], c[2], NULL, NULL, NULL, dout, dSf, q, k, v, g, beta, S0, B, T, H, Dk, Dv,
		                     scale, chunk);
		snprintf(msg, sizeof msg, "gdn_backward_chunked with dg, dbeta, dS0 NULL: dq, dk, dv as before");
		test_cond(msg, test_rel_err(c[0], r[0], nk) <= e[0] && test_rel_err(c[1], r[1], nk) <= e[1] &&
		               test_rel_err(c[2], r[2], nv) <= e[2]);
	}
	for (int i = 0; i < 6; i++)
		free(r[i]), free(c[i]);
	free(q), free(k), free(v), free(g), free(beta), free(S0), free(dSf), free(dout);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	test_seed(0x3c6ef372fe94f82bULL);
	static const int Ts[] = {1, 63, 64, 65, 150};
	for (int chunk = 16; chunk <= 64; chunk *= 4)
		for (int t = 0; t < 5; t++) {
			int T = Ts[t];
			check(chunk, 1, T, 1, 8, 6, 1, 1);
			check(chunk, 2, T, 3, 6, 10, t % 2, t / 2 % 2);
		}
	check(16, 1, 70, 2, 16, 16, 0, 0);
	check(64, 3, 130, 1, 12, 4, 1, 0);
	check(64, 1, 100, 2, 32, 24, 0, 1);
	printf("# largest relative error %.2e\n", worst);
	return test_report();
}
