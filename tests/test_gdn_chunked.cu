/* test_gdn_chunked (GPU): the chunked Gated DeltaNet kernels of
 * kernels/gdn_chunked.cu against their CPU twins in lib/linear_attn.c: the
 * forward against gdn_forward_recurrent (output and final state), the
 * backward against gdn_backward (every gradient), with and without an
 * initial state and a final state's gradient, at T 1, one short of a chunk,
 * a chunk, one past, several, Dk = Dv 64 and 128, odd small widths (Dk 32,
 * Dv 48), several sequences and heads; then the optional outputs left NULL.
 * float32 on both sides, the sums in other orders: within 1e-4 of the scale.
 * At every shape the keeping forward (gdn_forward_chunked_keep_cuda) must
 * give the plain forward's o and final state, and the kept backward
 * (gdn_backward_chunked_kept_cuda, twice, d_g and d_S0 NULL) the
 * recomputing backward's gradients, bit for bit; with tf32 (the state
 * passes and most chunk products on the tensor cores) o, S and the gradients
 * within TF32_TOL of their scale (the state carries TF32-rounded products
 * across the chunks), the same bits with the state passes' operands by
 * bulk copies (a Hopper's) as by cp.async.
 * DASH_BENCH=1 also prints the time of the forward and forward + backward at
 * B 1, T 4096, H 16, D 128, recomputing and kept; DASH_BENCH=2 runs only
 * the tf32 keeping forward and kept backward there, twice, for a profiler
 * (ncu -k regex:gdn_; DASH_GDN_CPASYNC=1: the state passes' operands by
 * cp.async). Runs on a GPU: make test-gpu. */
#include <string.h>

#include "../bench/bench.h" // defines: median_ms
#include "cuda_common.cuh"
#include "gpu.h"
extern "C" {
#include "linear_attn.h"
#include "test.h"
#include "util.h"
}
#include "gpu_test.h"

#define TF32_TOL 5e-3

/* n values in [lo, hi) */
static float *uniform(size_t n, float lo, float hi)
{
	float *x = test_rnd(n, 1);
	for (size_t i = 0; i < n; i++)
		x[i] = lo + (x[i] + 1) / 2 * (hi - lo);
	return x;
}

/* n random rows of d values, L2-normalised as the operator's q and k */
static float *l2rows(size_t n, int d)
{
	float *x = test_rnd(n * d, 1);
	for (size_t r = 0; r < n; r++) {
		double s = 0;
		for (int i = 0; i < d; i++)
			s += (double)x[r * d + i] * x[r * d + i];
		for (int i = 0; i < d; i++)
			x[r * d + i] = (float)(x[r * d + i] / sqrt(s + 1e-12));
	}
	return x;
}

/* test_rel_err, and the first mismatches printed when over tol */
static double cmp(const char *name, const float *got, const float *ref, size_t n, double tol)
{
	double e = test_rel_err(got, ref, n);
	if (!(e < tol)) {
		double m = 1;
		for (size_t i = 0; i < n; i++)
			m = fabs(ref[i]) > m ? fabs(ref[i]) : m;
		for (size_t i = 0, bad = 0; i < n && bad < 5; i++)
			if (!(fabs((double)got[i] - ref[i]) / m < tol))
				printf("  %s[%zu]: got %.8g ref %.8g\n", name, i, (double)got[i], (double)ref[i]), bad++;
	}
	return e;
}

typedef struct {
	int B, T, H, Dk, Dv;
	float *q, *k, *v, *g, *beta, *S0, *dout, *dSf; /* host */
	float *d_q, *d_k, *d_v, *d_g, *d_beta, *d_S0, *d_dout, *d_dSf;
	void *d_work;
} Case;

static Case case_new(int B, int T, int H, int Dk, int Dv, int with_S0, int with_dSf)
{
	size_t nh = (size_t)B * T * H, nv = nh * Dv, nS = (size_t)B * H * Dk * Dv;
	Case c;
	memset(&c, 0, sizeof c);
	c.B = B, c.T = T, c.H = H, c.Dk = Dk, c.Dv = Dv;
	c.q = l2rows(nh, Dk), c.k = l2rows(nh, Dk), c.v = test_rnd(nv, 1);
	c.g = uniform(nh, -0.6f, -0.01f), c.beta = uniform(nh, 0.05f, 0.95f);
	c.S0 = with_S0 ? test_rnd(nS, 0.5f) : NULL;
	c.dout = test_rnd(nv, 1), c.dSf = with_dSf ? test_rnd(nS, 1) : NULL;
	c.d_q = dev_f32(c.q, nh * Dk), c.d_k = dev_f32(c.k, nh * Dk), c.d_v = dev_f32(c.v, nv);
	c.d_g = dev_f32(c.g, nh), c.d_beta = dev_f32(c.beta, nh), c.d_S0 = dev_f32(c.S0, nS);
	c.d_dout = dev_f32(c.dout, nv), c.d_dSf = dev_f32(c.dSf, nS);
	c.d_work = gpu_alloc(gdn_chunked_work(B, T, H, Dk, Dv));
	return c;
}

static void case_free(Case *c)
{
	free(c->q), free(c->k), free(c->v), free(c->g), free(c->beta), free(c->S0), free(c->dout), free(c->dSf);
	float *d[] = {c->d_q, c->d_k, c->d_v, c->d_g, c->d_beta, c->d_S0, c->d_dout, c->d_dSf};
	for (int i = 0; i < 8; i++)
		if (d[i])
			gpu_free(d[i]);
	gpu_free(c->d_work);
}

/* The tf32 keeping forward and kept backward on c (its initial state, if
 * any, into d_S first), the state passes' operands by bulk copies or not
 * (gdn_chunked_bulk): out[8] = o, S (NULL without d_S), dq, dk, dv, dg,
 * dbeta, dS0, downloaded. */
static void tf32_outputs(Case *c, int bulk, float *d_o, float *d_S, float *const d[6], float *out[8])
{
	size_t nh = (size_t)c->B * c->T * c->H, nv = nh * c->Dv, nS = (size_t)c->B * c->H * c->Dk * c->Dv;
	size_t n[6] = {nh * c->Dk, nh * c->Dk, nv, nh, nh, nS};
	float scale = 1 / sqrtf((float)c->Dk);
	int was = gdn_chunked_bulk(bulk);
	if (d_S)
		gpu_upload(d_S, c->S0, nS * 4);
	cudaCheck(cudaMemset(d_o, 0xff, nv * 4));
	gdn_forward_chunked_keep_cuda(d_o, d_S, c->d_q, c->d_k, c->d_v, c->d_g, c->d_beta, c->B, c->T, c->H, c->Dk,
	                              c->Dv, scale, c->d_work, 1);
	for (int i = 0; i < 6; i++)
		cudaCheck(cudaMemset(d[i], 0xff, n[i] * 4));
	gdn_backward_chunked_kept_cuda(d[0], d[1], d[2], d[3], d[4], d[5], c->d_dout, c->d_dSf, c->d_q, c->d_k, c->d_v,
	                               NULL, c->d_beta, NULL, c->B, c->T, c->H, c->Dk, c->Dv, scale, c->d_work, 1);
	out[0] = host_f32(d_o, nv), out[1] = d_S ? host_f32(d_S, nS) : NULL;
	for (int i = 0; i < 6; i++)
		out[2 + i] = host_f32(d[i], n[i]);
	gdn_chunked_bulk(was);
}

/* The keeping forward and then the kept backward on c, twice (it must leave
 * the forward's work as it was), with d_g and d_S0 NULL (it must not read
 * them): o, S (the final state, NULL if none) and h[6] (dq, dk, dv, dg,
 * dbeta, dS0) of the plain forward and the recomputing backward, bit for
 * bit. The outputs start as NaNs, so that every value must be written. */
static void keep_check(Case *c, const float *o, const float *S, float *const h[6], const char *shape)
{
	size_t nh = (size_t)c->B * c->T * c->H, nv = nh * c->Dv, nS = (size_t)c->B * c->H * c->Dk * c->Dv;
	size_t n[6] = {nh * c->Dk, nh * c->Dk, nv, nh, nh, nS};
	const char *names[6] = {"dq", "dk", "dv", "dg", "dbeta", "dS0"};
	float scale = 1 / sqrtf((float)c->Dk), *d_o = (float *)gpu_alloc(nv * 4), *d_S = dev_f32(c->S0, nS), *d[6];
	cudaCheck(cudaMemset(d_o, 0xff, nv * 4));
	gdn_forward_chunked_keep_cuda(d_o, d_S, c->d_q, c->d_k, c->d_v, c->d_g, c->d_beta, c->B, c->T, c->H, c->Dk,
	                              c->Dv, scale, c->d_work, 0);
	float *o2 = host_f32(d_o, nv), *S2 = d_S ? host_f32(d_S, nS) : NULL;
	int same_f = !memcmp(o2, o, nv * 4) && (!S || !memcmp(S2, S, nS * 4)), same_b = 1;
	for (int i = 0; i < 6; i++)
		d[i] = (float *)gpu_alloc(n[i] * 4);
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < 6; i++)
			cudaCheck(cudaMemset(d[i], 0xff, n[i] * 4));
		gdn_backward_chunked_kept_cuda(d[0], d[1], d[2], d[3], d[4], d[5], c->d_dout, c->d_dSf, c->d_q, c->d_k,
		                               c->d_v, NULL, c->d_beta, NULL, c->B, c->T, c->H, c->Dk, c->Dv, scale,
		                               c->d_work, 0);
		for (int i = 0; i < 6; i++) {
			float *x = host_f32(d[i], n[i]);
			if (memcmp(x, h[i], n[i] * 4))
				printf("  kept backward, pass %d: %s differs\n", pass, names[i]), same_b = 0;
			free(x);
		}
	}
	char msg[256];
	snprintf(msg, sizeof msg, "gdn chunked %s: keeping forward o%s %s, kept backward (twice) %s as recomputing", shape,
	         S ? ", S" : "", same_f ? "same bits" : "DIFFER", same_b ? "same bits" : "DIFFERS");
	test_cond(msg, same_f && same_b);
	/* tf32: the same within TF32_TOL (the state passes' operands by cp.async) */
	float *t1[8], *tq[8];
	size_t m[8] = {nv, nS, n[0], n[1], n[2], n[3], n[4], n[5]};
	tf32_outputs(c, 0, d_o, d_S, d, t1);
	double e = test_rel_err(t1[0], o, nv);
	if (S)
		e = fmax(e, test_rel_err(t1[1], S, nS));
	for (int i = 0; i < 6; i++) {
		double ei = test_rel_err(t1[2 + i], h[i], n[i]);
		if (ei >= TF32_TOL)
			printf("  tf32: %s off by %.2e of its scale\n", names[i], ei);
		e = fmax(e, ei);
	}
	snprintf(msg, sizeof msg, "gdn chunked %s: tf32 state passes, o%s and every gradient within %.0e (%.1e)", shape,
	         S ? ", S" : "", TF32_TOL, e);
	test_cond(msg, e < TF32_TOL);
	/* and by bulk copies where the device has them: the same bits */
	int same = 1;
	tf32_outputs(c, 1, d_o, d_S, d, tq);
	for (int i = 0; i < 8; i++) {
		if (tq[i] && memcmp(tq[i], t1[i], m[i] * 4))
			printf("  bulk copies: output %d differs\n", i), same = 0;
		free(tq[i]);
	}
	snprintf(msg, sizeof msg, "gdn chunked %s: tf32 state passes, operands by bulk copies (a Hopper's) or cp.async, "
	         "the same bits", shape);
	test_cond(msg, same);
	for (int i = 0; i < 8; i++)
		free(t1[i]);
	for (int i = 0; i < 6; i++)
		gpu_free(d[i]);
	gpu_free(d_o);
	if (d_S)
		gpu_free(d_S);
	free(o2), free(S2);
}

static void check(int B, int T, int H, int Dk, int Dv, int with_S0, int with_dSf)
{
	Case c = case_new(B, T, H, Dk, Dv, with_S0, with_dSf);
	size_t nh = (size_t)B * T * H, nk = nh * Dk, nv = nh * Dv, nS = (size_t)B * H * Dk * Dv;
	float scale = 1 / sqrtf((float)Dk);
	char msg[256], shape[96];
	snprintf(shape, sizeof shape, "B=%d T=%d H=%d Dk=%d Dv=%d%s%s", B, T, H, Dk, Dv, with_S0 ? ", S0" : "",
	         with_dSf ? ", dSf" : "");
	/* forward */
	float *ro = (float *)mallocCheck(nv * 4), *rS = (float *)callocCheck(nS, 4);
	if (c.S0)
		memcpy(rS, c.S0, nS * 4);
	gdn_forward_recurrent(ro, rS, c.q, c.k, c.v, c.g, c.beta, B, T, H, Dk, Dv, scale);
	float *d_o = (float *)gpu_alloc(nv * 4), *d_S = c.S0 ? dev_f32(c.S0, nS) : NULL;
	gdn_forward_chunked_cuda(d_o, d_S, c.d_q, c.d_k, c.d_v, c.d_g, c.d_beta, B, T, H, Dk, Dv, scale, c.d_work);
	float *o = host_f32(d_o, nv), *S = d_S ? host_f32(d_S, nS) : NULL;
	double eo = cmp("o", o, ro, nv, 1e-4), es = S ? cmp("S", S, rS, nS, 1e-4) : 0;
	snprintf(msg, sizeof msg, "gdn_forward_chunked_cuda %s: o %.1e, final state %s%.1e", shape, eo,
	         S ? "" : "(none) ", es);
	test_cond(msg, eo < 1e-4 && es < 1e-4);
	/* backward */
	float *r[6], *d[6], *h[6]; /* dq, dk, dv, dg, dbeta, dS0: CPU, device, device's downloaded */
	size_t n[6] = {nk, nk, nv, nh, nh, nS};
	const char *names[6] = {"dq", "dk", "dv", "dg", "dbeta", "dS0"};
	for (int i = 0; i < 6; i++)
		r[i] = (float *)mallocCheck(n[i] * 4), d[i] = (float *)gpu_alloc(n[i] * 4);
	gdn_backward(r[0], r[1], r[2], r[3], r[4], r[5], c.dout, c.dSf, c.q, c.k, c.v, c.g, c.beta, c.S0, B, T, H, Dk,
	             Dv, scale);
	gdn_backward_chunked_cuda(d[0], d[1], d[2], d[3], d[4], d[5], c.d_dout, c.d_dSf, c.d_q, c.d_k, c.d_v, c.d_g,
	                          c.d_beta, c.d_S0, B, T, H, Dk, Dv, scale, c.d_work);
	double e[6], m = 0;
	for (int i = 0; i < 6; i++) {
		h[i] = host_f32(d[i], n[i]);
		e[i] = cmp(names[i], h[i], r[i], n[i], 1e-4);
		m = e[i] > m || isnan(e[i]) ? e[i] : m;
	}
	snprintf(msg, sizeof msg, "gdn_backward_chunked_cuda %s: dq %.1e dk %.1e dv %.1e dg %.1e dbeta %.1e dS0 %.1e",
	         shape, e[0], e[1], e[2], e[3], e[4], e[5]);
	test_cond(msg, m < 1e-4);
	keep_check(&c, o, S, h, shape);
	/* no final state, no dg, dbeta, dS0: the rest as before */
	if (T == 65 && with_S0 && with_dSf) {
		gdn_forward_chunked_cuda(d_o, NULL, c.d_q, c.d_k, c.d_v, c.d_g, c.d_beta, B, T, H, Dk, Dv, scale,
		                         c.d_work);
		float *o2 = host_f32(d_o, nv);
		memset(rS, 0, nS * 4);
		gdn_forward_recurrent(ro, rS, c.q, c.k, c.v, c.g, c.beta, B, T, H, Dk, Dv, scale);
		double e0 = test_rel_err(o2, ro, nv);
		gdn_backward_chunked_cuda(d[0], d[1], d[2], NULL, NULL, NULL, c.d_dout, c.d_dSf, c.d_q, c.d_k, c.d_v, c.d_g,
		                          c.d_beta, c.d_S0, B, T, H, Dk, Dv, scale, c.d_work);
		int same = 1;
		for (int i = 0; i < 3; i++) {
			float *x = host_f32(d[i], n[i]);
			same &= memcmp(x, h[i], n[i] * 4) == 0;
			free(x);
		}
		snprintf(msg, sizeof msg, "gdn chunked, %s: forward from zeros with no state (o %.1e); backward with dg, "
		         "dbeta, dS0 NULL gives the same dq, dk, dv", shape, e0);
		test_cond(msg, e0 < 1e-4 && same);
		free(o2);
	}
	for (int i = 0; i < 6; i++)
		free(r[i]), free(h[i]), gpu_free(d[i]);
	free(ro), free(rS), free(o), free(S);
	gpu_free(d_o);
	if (d_S)
		gpu_free(d_S);
	case_free(&c);
}

/* forward (and backward when asked) of case c once, for median_ms; keep:
 * the keeping forward and the kept backward (keep 2: with tf32) */
static void run_case(Case *c, float *d_o, float *d_grad[6], int backward, int keep)
{
	float scale = 1 / sqrtf((float)c->Dk);
	if (keep)
		gdn_forward_chunked_keep_cuda(d_o, NULL, c->d_q, c->d_k, c->d_v, c->d_g, c->d_beta, c->B, c->T, c->H,
		                              c->Dk, c->Dv, scale, c->d_work, keep == 2);
	else
		gdn_forward_chunked_cuda(d_o, NULL, c->d_q, c->d_k, c->d_v, c->d_g, c->d_beta, c->B, c->T, c->H, c->Dk,
		                         c->Dv, scale, c->d_work);
	if (backward && keep)
		gdn_backward_chunked_kept_cuda(d_grad[0], d_grad[1], d_grad[2], d_grad[3], d_grad[4], NULL, c->d_dout,
		                               NULL, c->d_q, c->d_k, c->d_v, c->d_g, c->d_beta, NULL, c->B, c->T, c->H,
		                               c->Dk, c->Dv, scale, c->d_work, keep == 2);
	else if (backward)
		gdn_backward_chunked_cuda(d_grad[0], d_grad[1], d_grad[2], d_grad[3], d_grad[4], NULL, c->d_dout, NULL,
		                          c->d_q, c->d_k, c->d_v, c->d_g, c->d_beta, NULL, c->B, c->T, c->H, c->Dk, c->Dv,
		                          scale, c->d_work);
}

/* DASH_BENCH=1: the times at B 1, T 4096, H 16, D 128; prof (DASH_BENCH=2,
 * for a profiler): only the tf32 keeping forward and kept backward, twice */
static void bench(int prof)
{
	int B = 1, T = 4096, H = 16, D = 128;
	Case c = case_new(B, T, H, D, D, 0, 0);
	size_t nh = (size_t)B * T * H;
	float *d_o = (float *)gpu_alloc(nh * D * 4), *d_grad[6];
	size_t n[5] = {nh * D, nh * D, nh * D, nh, nh};
	for (int i = 0; i < 5; i++)
		d_grad[i] = (float *)gpu_alloc(n[i] * 4);
	if (prof) {
		for (int r = 0; r < 2; r++)
			run_case(&c, d_o, d_grad, 1, 2);
		cudaCheck(cudaDeviceSynchronize());
	} else {
		char name[128];
		cuda_device_name(0, name, sizeof name);
		float f = median_ms([&] { run_case(&c, d_o, d_grad, 0, 0); });
		float fb = median_ms([&] { run_case(&c, d_o, d_grad, 1, 0); });
		float fk = median_ms([&] { run_case(&c, d_o, d_grad, 0, 1); });
		float fbk = median_ms([&] { run_case(&c, d_o, d_grad, 1, 1); });
		float ft = median_ms([&] { run_case(&c, d_o, d_grad, 0, 2); });
		float fbt = median_ms([&] { run_case(&c, d_o, d_grad, 1, 2); });
		int bulk = gdn_chunked_bulk(0);
		float ft0 = median_ms([&] { run_case(&c, d_o, d_grad, 0, 2); });
		float fbt0 = median_ms([&] { run_case(&c, d_o, d_grad, 1, 2); });
		gdn_chunked_bulk(bulk);
		printf("# bench %s, B=%d T=%d H=%d Dk=Dv=%d, work %.0f MB: forward %.3f ms, forward+backward %.3f ms "
		       "(median of 20)\n", name, B, T, H, D, gdn_chunked_work(B, T, H, D, D) / 1e6, f, fb);
		printf("# bench %s, B=%d T=%d H=%d Dk=Dv=%d: keeping forward %.3f ms, keeping forward + kept backward "
		       "%.3f ms (recomputing %.3f: %.3f ms saved)\n", name, B, T, H, D, fk, fbk, fb, fb - fbk);
		printf("# bench %s, B=%d T=%d H=%d Dk=Dv=%d, tf32 state passes: keeping forward %.3f ms, keeping forward "
		       "+ kept backward %.3f ms (%s; by cp.async %.3f and %.3f ms)\n", name, B, T, H, D, ft, fbt,
		       bulk ? "bulk copies where the device has them" : "DASH_GDN_CPASYNC", ft0, fbt0);
	}
	for (int i = 0; i < 5; i++)
		gpu_free(d_grad[i]);
	gpu_free(d_o);
	case_free(&c);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	test_seed(0x510e527fade682d1ULL);
	if (cuda_device_count() == 0) {
		printf("SKIP: no GPU\n");
		return 0;
	}
	const char *b = getenv("DASH_BENCH");
	if (b && strcmp(b, "2") == 0) {
		bench(1);
		return 0;
	}
	check(1, 1, 1, 64, 64, 1, 1);
	check(1, 1, 2, 128, 128, 0, 0);
	static const int Ts[] = {63, 64, 65, 200};
	for (int t = 0; t < 4; t++) {
		check(2, Ts[t], 3, 64, 64, 1, 1);
		check(2, Ts[t], 3, 128, 128, t % 2, t / 2 % 2);
		check(2, Ts[t], 3, 32, 48, 1, t % 2);
	}
	check(2, 65, 3, 64, 64, 0, 0);
	check(1, 130, 2, 64, 128, 1, 0);
	check(1, 100, 2, 128, 64, 0, 1);
	check(1, 70, 2, 5, 7, 1, 1);
	check(1, 1024, 4, 128, 128, 1, 1);
	if (b && strcmp(b, "1") == 0)
		bench(0);
	return test_report();
}
