/* test_supernet: the search's gradients on the tiny Qwen2 and Llama
 * fixtures. d(KL)/dw through the whole network against central finite
 * differences of the forward (every layer, every op: fa, swa, gdn, gla);
 * then, for each relaxation, d(loss)/dalpha of relax_backward against
 * finite differences of loss(w(alpha)) (softmax with its budget term,
 * budget-dist), and gumbel-topk's straight-through surrogate; and the
 * relaxations' invariants (sum of fa weights, exact top-N, seeded noise);
 * d(KL)/dw with the backward's products in float8 e4m3 near the exact, and
 * with the forward's (--forward fp8, fp8-both, fp8-all) near the float32
 * ones. */
#include <math.h>
#include <string.h>

#include "model.h"
#include "supernet.h"
#include "test.h"
#include "util.h"

#define B 2
#define T 9 /* not a power of two; swa's window 3 is shorter */

typedef struct {
	Model m;
	Supernet sn;
	int32_t ids[B * T];
	float *th; /* the teacher's hidden rows */
} Fix;

static void fix_init(Fix *f, const char *dir)
{
	model_load(&f->m, dir);
	model_unpack(&f->m);
	int ops[4] = {ARCH_FA, ARCH_SWA, ARCH_GDN, ARCH_GLA};
	supernet_init(&f->sn, &f->m, 4, ops, NULL, 3, B * T);
	uint64_t s = 7;
	for (int i = 0; i < B * T; i++)
		f->ids[i] = (int32_t)((s = s * 6364136223846793005ULL + 1442695040888963407ULL) >> 33) % f->m.cfg.V;
	f->th = mallocCheck((size_t)B * T * f->m.cfg.C * sizeof(float));
	model_forward(&f->m, f->ids, B, T, f->th, NULL, NULL);
}

static void fix_free(Fix *f)
{
	supernet_free(&f->sn), model_free(&f->m), free(f->th);
}

/* d(KL)/dw of every (layer, op) against central differences */
static void check_dw(Fix *f, const char *name)
{
	Supernet *sn = &f->sn;
	int LK = sn->L * sn->K;
	for (int i = 0; i < LK; i++) /* mixed, unequal weights */
		sn->w[i] = 0.15f + 0.1f * (float)(i % 5);
	memset(sn->dw, 0, (size_t)LK * sizeof(double));
	double kl = supernet_backward_kl(sn, f->ids, B, T, f->th);
	double kl2 = supernet_kl(sn, f->ids, B, T, f->th, NULL);
	char what[160];
	snprintf(what, sizeof what, "%s: the backward's KL is the forward's (%.6g, %.6g)", name, kl, kl2);
	test_cond(what, fabs(kl - kl2) <= 1e-6 * fabs(kl2) && kl > 0);
	const double h = 1e-3; /* the mixture curves: at 1e-2 the difference is off by a few percent */
	int bad = 0;
	double maxerr = 0;
	for (int i = 0; i < LK; i++) {
		float w0 = sn->w[i];
		sn->w[i] = (float)(w0 + h);
		double lp = supernet_kl(sn, f->ids, B, T, f->th, NULL);
		sn->w[i] = (float)(w0 - h);
		double lm = supernet_kl(sn, f->ids, B, T, f->th, NULL);
		sn->w[i] = w0;
		double fd = (lp - lm) / (2 * h), err = fabs(fd - sn->dw[i]);
		maxerr = err > maxerr ? err : maxerr;
		if (err > 1e-4 + 5e-3 * fabs(fd)) {
			printf("  layer %d op %s: finite difference %.6g, backward %.6g\n", i / sn->K,
			       arch_op_names[sn->ops[i % sn->K]], fd, sn->dw[i]);
			bad++;
		}
	}
	printf("  %s: %d weights, max error %.2e\n", name, LK, maxerr);
	snprintf(what, sizeof what, "%s: d(KL)/dw of every layer and op (fa, swa, gdn, gla) = finite differences", name);
	test_cond(what, bad == 0);
}

/* --grad fp8: the backward's products through e4m3 codes (lib/fp8.h) move
 * d(KL)/dw by the codes' noise: near the exact gradient, not equal to it */
static void check_dw_fp8(Fix *f, const char *name)
{
	Supernet *sn = &f->sn;
	int LK = sn->L * sn->K;
	for (int i = 0; i < LK; i++)
		sn->w[i] = 0.15f + 0.1f * (float)(i % 5);
	double *dw = mallocCheck((size_t)LK * sizeof(double)), mx = 0, d = 0, se = 0, sr = 0;
	memset(sn->dw, 0, (size_t)LK * sizeof(double));
	double kl = supernet_backward_kl(sn, f->ids, B, T, f->th);
	memcpy(dw, sn->dw, (size_t)LK * sizeof(double));
	sn->grad_fp8 = 1;
	memset(sn->dw, 0, (size_t)LK * sizeof(double));
	double kl8 = supernet_backward_kl(sn, f->ids, B, T, f->th);
	sn->grad_fp8 = 0;
	for (int i = 0; i < LK; i++) {
		mx = fmax(mx, fabs(dw[i])), d = fmax(d, fabs(sn->dw[i] - dw[i]));
		se += (sn->dw[i] - dw[i]) * (sn->dw[i] - dw[i]), sr += dw[i] * dw[i];
	}
	printf("  %s fp8: KL %.8g (float32 %.8g), dw max error %.2e of max |dw|, relative %.2e\n", name, kl8, kl,
	       d / mx, sqrt(se / sr));
	char what[160];
	snprintf(what, sizeof what, "%s: fp8 products leave the KL as it was and move dw by %.2e of max |dw| (0, 0.1]",
	         name, d / mx);
	test_cond(what, kl8 == kl && d > 0 && d <= 0.1 * mx);
	free(dw);
}

/* --forward fp8: the supernet's forward through e4m3 products (the
 * teacher's stays float32). Its backward's KL is its forward's; the KL and
 * dw move by the codes' noise (near the float32 ones, not equal); with
 * every layer fa the supernet is the teacher in e4m3, KL > 0: the floor
 * the quantisation itself puts under the search's KL */
static void check_fwd_fp8(Fix *f, const char *name)
{
	Supernet *sn = &f->sn;
	int LK = sn->L * sn->K;
	for (int i = 0; i < LK; i++)
		sn->w[i] = 0.15f + 0.1f * (float)(i % 5);
	double *dw = mallocCheck((size_t)LK * sizeof(double)), mx = 0, d = 0;
	memset(sn->dw, 0, (size_t)LK * sizeof(double));
	double kl = supernet_backward_kl(sn, f->ids, B, T, f->th);
	memcpy(dw, sn->dw, (size_t)LK * sizeof(double));
	sn->fwd_fp8 = 1;
	memset(sn->dw, 0, (size_t)LK * sizeof(double));
	double kl8 = supernet_backward_kl(sn, f->ids, B, T, f->th), kl8f = supernet_kl(sn, f->ids, B, T, f->th, NULL);
	for (int i = 0; i < LK; i++)
		mx = fmax(mx, fabs(dw[i])), d = fmax(d, fabs(sn->dw[i] - dw[i]));
	for (int i = 0; i < LK; i++)
		sn->w[i] = i % sn->K == 0;
	double kl0 = supernet_kl(sn, f->ids, B, T, f->th, NULL);
	sn->fwd_fp8 = 0;
	double kl0f = supernet_kl(sn, f->ids, B, T, f->th, NULL);
	printf("  %s forward fp8: KL %.8g (forward only %.8g; float32 %.8g), dw max error %.2e of max |dw|; "
	       "all fa %.3g (float32 %.3g)\n",
	       name, kl8, kl8f, kl, d / mx, kl0, kl0f);
	char what[200];
	snprintf(what, sizeof what, "%s: forward fp8: the backward's KL is the forward's, near float32's (%.5g, %.5g)",
	         name, kl8, kl);
	test_cond(what, fabs(kl8 - kl8f) <= 1e-6 * kl8 && kl8 != kl && fabs(kl8 - kl) <= 0.1 * kl);
	snprintf(what, sizeof what, "%s: forward fp8 moves dw by %.2e of max |dw| (0, 0.1]", name, d / mx);
	test_cond(what, d > 0 && d <= 0.1 * mx);
	snprintf(what, sizeof what, "%s: forward fp8, every layer fa: KL %.3g > 0, small beside the mixture's", name,
	         kl0);
	test_cond(what, kl0 > 0 && kl0 < 0.1 * kl && kl0f < 1e-6);
	/* fp8-both: the teacher's rows through the same codes; every layer fa
	 * is the teacher again (KL 0), a mixture near float32's */
	float *th8 = mallocCheck((size_t)B * T * sn->m->cfg.C * sizeof(float));
	model_forward_fp8(sn->m, f->ids, B, T, th8, NULL, NULL);
	sn->fwd_fp8 = 2;
	double kl0b = supernet_kl(sn, f->ids, B, T, th8, NULL);
	for (int i = 0; i < LK; i++)
		sn->w[i] = 0.15f + 0.1f * (float)(i % 5);
	memset(sn->dw, 0, (size_t)LK * sizeof(double));
	double klb = supernet_backward_kl(sn, f->ids, B, T, th8);
	sn->fwd_fp8 = 0;
	d = 0;
	for (int i = 0; i < LK; i++)
		d = fmax(d, fabs(sn->dw[i] - dw[i]));
	printf("  %s forward fp8-both: all fa KL %.3g, mixed KL %.8g, dw max error %.2e of max |dw|\n", name, kl0b, klb,
	       d / mx);
	snprintf(what, sizeof what,
	         "%s: forward fp8-both: every layer fa KL 0 (%.2g); mixed near float32's, dw by %.2e", name, kl0b,
	         d / mx);
	test_cond(what, fabs(kl0b) < 1e-9 && fabs(klb - kl) <= 0.1 * kl && d > 0 && d <= 0.1 * mx);
	/* fp8-all: both sides' vocabulary logits through e4m3 as well. Every
	 * layer fa: the same rows, the same codes, KL 0 and (dz 0) dw 0; a
	 * mixture near fp8-both's, not equal (the logits' codes were used),
	 * its backward's KL its forward's, dw near float32's */
	sn->fwd_fp8 = 3;
	for (int i = 0; i < LK; i++)
		sn->w[i] = i % sn->K == 0;
	memset(sn->dw, 0, (size_t)LK * sizeof(double));
	double kl0a = supernet_kl(sn, f->ids, B, T, th8, NULL), kl0ab = supernet_backward_kl(sn, f->ids, B, T, th8);
	int dw0 = 1;
	for (int i = 0; i < LK; i++)
		dw0 &= sn->dw[i] == 0;
	for (int i = 0; i < LK; i++)
		sn->w[i] = 0.15f + 0.1f * (float)(i % 5);
	memset(sn->dw, 0, (size_t)LK * sizeof(double));
	double kla = supernet_backward_kl(sn, f->ids, B, T, th8), klaf = supernet_kl(sn, f->ids, B, T, th8, NULL);
	sn->fwd_fp8 = 0;
	d = 0;
	for (int i = 0; i < LK; i++)
		d = fmax(d, fabs(sn->dw[i] - dw[i]));
	printf("  %s forward fp8-all: all fa KL %.3g (backward %.3g), mixed KL %.8g (forward only %.8g; fp8-both "
	       "%.8g), dw max error %.2e of max |dw|\n",
	       name, kl0a, kl0ab, kla, klaf, klb, d / mx);
	snprintf(what, sizeof what, "%s: forward fp8-all: every layer fa KL 0 and dw 0, forward and backward "
	         "(%.2g, %.2g)", name, kl0a, kl0ab);
	test_cond(what, kl0a == 0 && kl0ab == 0 && dw0);
	snprintf(what, sizeof what,
	         "%s: forward fp8-all: mixed, the backward's KL the forward's, not fp8-both's, near float32's (%.5g, "
	         "%.5g); dw by %.2e",
	         name, kla, kl, d / mx);
	test_cond(what, fabs(kla - klaf) <= 1e-6 * kla && kla != klb && fabs(kla - kl) <= 0.1 * kl && d > 0 &&
	                        d <= 0.1 * mx);
	free(dw), free(th8);
}

/* the loss of alpha: KL(w(alpha)) plus, for softmax, the budget term */
static double total(Fix *f, Relax *r, const float *alpha, const float *noise, double lambda)
{
	Supernet *sn = &f->sn;
	relax_weights(r, alpha, noise, sn->w);
	double kl = supernet_kl(sn, f->ids, B, T, f->th, NULL), nf = 0;
	for (int l = 0; l < sn->L; l++)
		nf += sn->w[(size_t)l * sn->K];
	return kl + (r->kind == RELAX_SOFTMAX ? lambda * (nf - r->nfa) * (nf - r->nfa) / sn->L : 0);
}

/* d(loss)/dalpha by the backward and relax_backward, as search-logits
 * takes it */
static void grad_alpha(Fix *f, Relax *r, const float *alpha, const float *noise, double lambda, double *da)
{
	Supernet *sn = &f->sn;
	int L = sn->L, K = sn->K;
	relax_weights(r, alpha, noise, sn->w);
	memset(sn->dw, 0, (size_t)L * K * sizeof(double));
	supernet_backward_kl(sn, f->ids, B, T, f->th);
	double nf = 0;
	for (int l = 0; l < L; l++)
		nf += sn->w[(size_t)l * K];
	if (r->kind == RELAX_SOFTMAX)
		for (int l = 0; l < L; l++)
			sn->dw[(size_t)l * K] += 2 * lambda * (nf - r->nfa) / L;
	relax_backward(r, sn->dw, da);
}

static void check_alpha(Fix *f, const char *name, RelaxKind kind, int nfa, double tau)
{
	Supernet *sn = &f->sn;
	int L = sn->L, K = sn->K, LK = L * K;
	Relax r;
	relax_init(&r, kind, L, K, nfa);
	r.tau = tau;
	float *alpha = mallocCheck((size_t)LK * sizeof(float));
	double *da = mallocCheck((size_t)LK * sizeof(double));
	for (int i = 0; i < LK; i++)
		alpha[i] = 0.3f * (float)((i * 7) % 5) - 0.5f;
	const double lambda = 0.7, h = 1e-2;
	grad_alpha(f, &r, alpha, NULL, lambda, da);
	int bad = 0;
	double maxerr = 0;
	for (int i = 0; i < LK; i++) {
		float a0 = alpha[i];
		alpha[i] = (float)(a0 + h);
		double lp = total(f, &r, alpha, NULL, lambda);
		alpha[i] = (float)(a0 - h);
		double lm = total(f, &r, alpha, NULL, lambda);
		alpha[i] = a0;
		double fd = (lp - lm) / (2 * h), err = fabs(fd - da[i]);
		maxerr = err > maxerr ? err : maxerr;
		if (err > 1e-4 + 1e-2 * fabs(fd)) {
			printf("  alpha[%d][%s]: finite difference %.6g, backward %.6g\n", i / K, arch_op_names[sn->ops[i % K]],
			       fd, da[i]);
			bad++;
		}
	}
	char what[160];
	printf("  %s %s: %d logits, max error %.2e\n", name, relax_names[kind], LK, maxerr);
	snprintf(what, sizeof what, "%s: %s (N %d, tau %g): d(loss)/dalpha = finite differences", name,
	         relax_names[kind], nfa, tau);
	test_cond(what, bad == 0);
	relax_free(&r), free(alpha), free(da);
}

/* gumbel-topk: the forward takes the hard top N; the backward is that of
 * the soft surrogate w_0 = p = sigmoid((z - t) / tau) (t held),
 * w_k = (1 - p) softmax_{k>0}(alpha / tau): J_soft^T dw for a given dw */
static void check_gumbel(void)
{
	enum { L = 6, K = 3 };
	Relax r;
	relax_init(&r, RELAX_GUMBEL_TOPK, L, K, 2);
	r.tau = 0.7;
	float alpha[L * K], noise[L], w[L * K];
	double dw[L * K], da[L * K];
	for (int i = 0; i < L * K; i++)
		alpha[i] = 0.25f * (float)((i * 5) % 7) - 0.6f, dw[i] = 0.1 * ((i * 3) % 4) - 0.13;
	gumbel_noise(3, 11, L, noise);
	relax_weights(&r, alpha, noise, w);
	int hard = 1, n = 0;
	for (int l = 0; l < L; l++) {
		double s = 0;
		for (int k = 0; k < K; k++)
			s += w[l * K + k];
		hard &= (w[l * K] == 0 || w[l * K] == 1) && fabs(s - 1) < 1e-6;
		n += w[l * K] == 1;
	}
	test_cond("gumbel-topk: exactly N layers fa, the others mix the rest, each row sums to 1", hard && n == 2);
	relax_backward(&r, dw, da);
	double t = r.t, maxerr = 0;
	const double h = 1e-3;
	for (int i = 0; i < L * K; i++) {
		double f[2];
		for (int s = 0; s < 2; s++) {
			float a[L * K];
			memcpy(a, alpha, sizeof a);
			a[i] += (float)(s ? -h : h);
			double v = 0;
			for (int l = 0; l < L; l++) {
				double p = 1 / (1 + exp(-((a[l * K] + noise[l]) - t) / r.tau)), mx = -1e30, z = 0, e[K];
				for (int k = 1; k < K; k++)
					mx = a[l * K + k] / r.tau > mx ? a[l * K + k] / r.tau : mx;
				for (int k = 1; k < K; k++)
					z += e[k] = exp(a[l * K + k] / r.tau - mx);
				v += dw[l * K] * p;
				for (int k = 1; k < K; k++)
					v += dw[l * K + k] * (1 - p) * e[k] / z;
			}
			f[s] = v;
		}
		double fd = (f[0] - f[1]) / (2 * h), err = fabs(fd - da[i]);
		maxerr = err > maxerr ? err : maxerr;
	}
	printf("  gumbel-topk surrogate: max error %.2e\n", maxerr);
	test_cond("gumbel-topk: the straight-through backward is the soft surrogate's (finite differences)", maxerr < 1e-4);
	float g1[L], g2[L], g3[L];
	gumbel_noise(3, 11, L, g1), gumbel_noise(3, 11, L, g2), gumbel_noise(3, 12, L, g3);
	test_cond("gumbel noise: a pure function of (seed, step)", !memcmp(g1, g2, sizeof g1) && memcmp(g1, g3, sizeof g1));
	relax_free(&r);
}

static void check_budget_dist(void)
{
	enum { L = 7, K = 2 };
	Relax r;
	float alpha[L * K], w[L * K];
	for (int i = 0; i < L * K; i++)
		alpha[i] = 0.9f * (float)((i * 3) % 5) - 2;
	int ok = 1;
	for (int n = 0; n <= L; n++) {
		relax_init(&r, RELAX_BUDGET_DIST, L, K, n);
		r.tau = 0.3;
		relax_weights(&r, alpha, NULL, w);
		double s = 0;
		for (int l = 0; l < L; l++)
			s += w[l * K];
		ok &= fabs(s - n) < 1e-5;
		relax_free(&r);
	}
	test_cond("budget-dist: the fa weights sum to N exactly, for every N from 0 to L", ok);
}

int main(void)
{
	const char *dirs[2] = {"tests/data/tiny-qwen2", "tests/data/tiny-llama"};
	for (int d = 0; d < 2; d++) {
		Fix f;
		fix_init(&f, dirs[d]);
		const char *name = dirs[d] + 11;
		check_dw(&f, name);
		check_dw_fp8(&f, name);
		check_fwd_fp8(&f, name);
		check_alpha(&f, name, RELAX_SOFTMAX, 1, 0.8);
		check_alpha(&f, name, RELAX_BUDGET_DIST, 1, 0.8);
		fix_free(&f);
	}
	check_gumbel();
	check_budget_dist();
	return test_report();
}
