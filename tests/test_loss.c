/* test_loss: vocab_loss_cpu (lib/loss.c), the vocabulary projection fused
 * with cross-entropy or KL(teacher || student), against a reference computed
 * wholly in double here and against central finite differences of its own
 * float32 forward; ignored targets, KL of a row with itself, independence
 * of the chunking, bf16 weights and large logits; dhidden through e4m3
 * (vocab_loss_fp8_cpu); the logits through e4m3 (vocab_loss_logits8_cpu)
 * against a double reference of the same codes and near float32's. */
#include <string.h>

#include "fp8.h" // defines: fp8_rows_cpu, fp8_e4m3_value
#include "loss.h"
#include "test.h"
#include "util.h"

/* a problem: hidden (n, C), teacher (n, C) or NULL, targets (n) or NULL,
 * w (V, C) float32 */
typedef struct {
	int n, C, V;
	float *h, *g, *w;
	int32_t *tg;
	Tensor W;
	float scale;
} Case;

static Case case_new(int n, int C, int V, int kl, float hscale)
{
	Case c = {.n = n, .C = C, .V = V, .scale = 0.7f};
	c.h = test_rnd((size_t)n * C, hscale);
	c.w = test_rnd((size_t)V * C, 1);
	c.W = (Tensor){DT_F32, 2, {V, C}, c.w};
	if (kl) {
		/* the teacher near the student, as after distillation */
		c.g = test_rnd((size_t)n * C, 0.3f * hscale);
		for (size_t i = 0; i < (size_t)n * C; i++)
			c.g[i] += c.h[i];
	} else {
		c.tg = mallocCheck((size_t)n * sizeof(int32_t));
		for (int t = 0; t < n; t++)
			c.tg[t] = (int32_t)((test_frand() + 1) * 0.5f * (V - 1));
	}
	return c;
}

static void case_free(Case *c)
{
	free(c->h), free(c->g), free(c->w), free(c->tg);
}

static double run(const Case *c, float *dh, float *rl)
{
	return vocab_loss_cpu(dh, rl, c->h, c->g, c->tg, &c->W, c->n, c->C, c->V, c->scale);
}

// ----------------------------------------------------------------------------
// the reference in double: logits, softmax, loss and dhidden row by row

static double ref_lse(const double *z, int V)
{
	double mx = -INFINITY, s = 0;
	for (int v = 0; v < V; v++)
		mx = z[v] > mx ? z[v] : mx;
	for (int v = 0; v < V; v++)
		s += exp(z[v] - mx);
	return mx + log(s);
}

static double ref_loss(double *dh, double *rl, const Case *c)
{
	int C = c->C, V = c->V;
	double *z = mallocCheck((size_t)V * sizeof(double)), *zt = mallocCheck((size_t)V * sizeof(double));
	double *dz = mallocCheck((size_t)V * sizeof(double)), total = 0;
	for (int t = 0; t < c->n; t++) {
		for (int v = 0; v < V; v++) {
			double a = 0, b = 0;
			for (int i = 0; i < C; i++) {
				a += (double)c->h[(size_t)t * C + i] * c->w[(size_t)v * C + i];
				if (c->g)
					b += (double)c->g[(size_t)t * C + i] * c->w[(size_t)v * C + i];
			}
			z[v] = a, zt[v] = b;
		}
		double lse = ref_lse(z, V), loss = 0;
		if (c->g) {
			double lset = ref_lse(zt, V);
			for (int v = 0; v < V; v++) {
				double pt = exp(zt[v] - lset);
				loss += pt * ((zt[v] - lset) - (z[v] - lse));
				dz[v] = exp(z[v] - lse) - pt;
			}
		} else if (c->tg[t] < 0) {
			for (int v = 0; v < V; v++)
				dz[v] = 0;
		} else {
			loss = lse - z[c->tg[t]];
			for (int v = 0; v < V; v++)
				dz[v] = exp(z[v] - lse) - (v == c->tg[t]);
		}
		rl[t] = loss, total += loss;
		for (int i = 0; i < C; i++) {
			double a = 0;
			for (int v = 0; v < V; v++)
				a += dz[v] * c->w[(size_t)v * C + i];
			dh[(size_t)t * C + i] = c->scale * a;
		}
	}
	free(z), free(zt), free(dz);
	return c->scale * total;
}

// ----------------------------------------------------------------------------

/* against the double reference, then every dhidden against the central
 * difference of the float32 forward's total (h = 1e-2, as test_grad_cpu) */
static void test_grad(int n, int C, int V, int kl)
{
	Case c = case_new(n, C, V, kl, 1);
	int ign = !kl && n > 2 ? n / 2 : -1;
	if (ign >= 0)
		c.tg[ign] = -1; /* one ignored row among the others */
	size_t nh = (size_t)n * C;
	float *dh = mallocCheck(nh * sizeof(float)), *rl = mallocCheck((size_t)n * sizeof(float));
	double *rdh = mallocCheck(nh * sizeof(double)), *rrl = mallocCheck((size_t)n * sizeof(double));
	double loss = run(&c, dh, rl), rloss = ref_loss(rdh, rrl, &c);
	char msg[128];
	snprintf(msg, sizeof msg, "vocab_loss_cpu %s n=%d C=%d V=%d: loss, row_loss, dhidden vs double",
	         kl ? "KL" : "CE", n, C, V);
	printf("  loss %.9f reference %.9f\n", loss, rloss);
	int ok = fabs(loss - rloss) <= 1e-6 * fabs(rloss) + 1e-7;
	ok &= check_tensor("row_loss", rl, rrl, (size_t)n, 1e-6, 1e-6);
	ok &= check_tensor("dhidden", dh, rdh, nh, 1e-6 * max_abs(rdh, nh), 1e-5);
	test_cond(msg, ok);
	if (kl) {
		int nonneg = 1;
		for (int t = 0; t < n; t++)
			nonneg &= rl[t] >= 0;
		test_cond("vocab_loss_cpu KL: every row's KL >= 0", nonneg);
	} else if (ign >= 0) {
		int zero = rl[ign] == 0;
		for (int i = 0; i < C; i++)
			zero &= dh[(size_t)ign * C + i] == 0;
		test_cond("vocab_loss_cpu CE: an ignored target gives row loss 0 and a zero dhidden row", zero);
	}

	/* the forward alone gives the same total */
	snprintf(msg, sizeof msg, "vocab_loss_cpu %s n=%d C=%d V=%d: forward only (no dhidden, no row_loss), same loss",
	         kl ? "KL" : "CE", n, C, V);
	test_cond(msg, run(&c, NULL, NULL) == loss);

	const double eps = 1e-2;
	int bad = 0;
	double maxerr = 0;
	for (size_t i = 0; i < nh; i++) {
		float x0 = c.h[i];
		c.h[i] = (float)(x0 + eps);
		double lp = run(&c, NULL, NULL);
		c.h[i] = (float)(x0 - eps);
		double lm = run(&c, NULL, NULL);
		c.h[i] = x0;
		double fd = (lp - lm) / (2 * eps), err = fabs(fd - dh[i]);
		maxerr = err > maxerr ? err : maxerr;
		if (err > 1e-3 + 1e-2 * fabs(fd)) {
			if (bad < 5)
				printf("  dhidden[%zu]: finite difference %.6g, backward %.6g\n", i, fd, (double)dh[i]);
			bad++;
		}
	}
	printf("  dhidden: %zu gradients, max error %.2e, %d outside tolerance\n", nh, maxerr, bad);
	snprintf(msg, sizeof msg, "vocab_loss_cpu %s n=%d C=%d V=%d: dhidden vs finite differences", kl ? "KL" : "CE",
	         n, C, V);
	test_cond(msg, bad == 0);
	free(dh), free(rl), free(rdh), free(rrl);
	case_free(&c);
}

/* the case's loss, every row loss and every value of dhidden are exactly 0 */
static int all_zero(Case *c)
{
	float *dh = mallocCheck((size_t)c->n * c->C * sizeof(float)), *rl = mallocCheck((size_t)c->n * sizeof(float));
	int ok = run(c, dh, rl) == 0;
	for (int t = 0; t < c->n; t++)
		ok &= rl[t] == 0;
	for (int i = 0; i < c->n * c->C; i++)
		ok &= dh[i] == 0;
	free(dh), free(rl);
	return ok;
}

/* every target ignored: nothing at all */
static void test_all_ignored(void)
{
	Case c = case_new(7, 16, 37, 0, 1);
	for (int t = 0; t < c.n; t++)
		c.tg[t] = -1;
	test_cond("vocab_loss_cpu CE: every target -1 gives loss 0 and dhidden 0", all_zero(&c));
	case_free(&c);
}

/* KL of the student with itself: exactly 0, gradient exactly 0 */
static void test_kl_self(void)
{
	Case c = case_new(9, 16, 37, 1, 2);
	memcpy(c.g, c.h, (size_t)c.n * c.C * sizeof(float));
	test_cond("vocab_loss_cpu KL: teacher == student gives loss 0 and dhidden 0", all_zero(&c));
	case_free(&c);
}

/* n across several chunks gives, row for row, the bits of one row at a time */
static void test_chunks(int kl, int V)
{
	int n = 2 * VOCAB_LOSS_CPU_ROWS + 5, C = 24;
	Case c = case_new(n, C, V, kl, 1);
	if (!kl)
		c.tg[3] = c.tg[VOCAB_LOSS_CPU_ROWS] = -1;
	float *dh = mallocCheck((size_t)n * C * sizeof(float)), *rl = mallocCheck((size_t)n * sizeof(float));
	float *dh1 = mallocCheck((size_t)n * C * sizeof(float)), *rl1 = mallocCheck((size_t)n * sizeof(float));
	double loss = run(&c, dh, rl), sum = 0;
	for (int t = 0; t < n; t++) {
		Case one = c;
		one.n = 1, one.h = c.h + (size_t)t * C;
		one.g = c.g ? c.g + (size_t)t * C : NULL;
		one.tg = c.tg ? c.tg + t : NULL;
		sum += run(&one, dh1 + (size_t)t * C, rl1 + t);
	}
	int ok = memcmp(dh, dh1, (size_t)n * C * sizeof(float)) == 0 && memcmp(rl, rl1, (size_t)n * sizeof(float)) == 0;
	ok &= fabs(loss - sum) <= 1e-12 * fabs(sum);
	char msg[128];
	snprintf(msg, sizeof msg, "vocab_loss_cpu %s n=%d V=%d: the same bits in chunks of %d as row by row",
	         kl ? "KL" : "CE", n, V, VOCAB_LOSS_CPU_ROWS);
	test_cond(msg, ok);
	free(dh), free(rl), free(dh1), free(rl1);
	case_free(&c);
}

/* the weights as bf16 give what their float32 values give */
static void test_bf16_weights(int kl)
{
	Case c = case_new(11, 32, 101, kl, 1);
	uint16_t *wb = mallocCheck((size_t)c.V * c.C * sizeof(uint16_t));
	for (size_t i = 0; i < (size_t)c.V * c.C; i++) {
		wb[i] = f32_to_bf16(c.w[i]);
		c.w[i] = bf16_to_f32(wb[i]);
	}
	size_t nh = (size_t)c.n * c.C;
	float *dh = mallocCheck(nh * sizeof(float)), *dh2 = mallocCheck(nh * sizeof(float));
	double l = run(&c, dh, NULL);
	Case b = c;
	b.W = (Tensor){DT_BF16, 2, {c.V, c.C}, wb};
	double l2 = run(&b, dh2, NULL);
	test_cond(kl ? "vocab_loss_cpu KL: bf16 weights give the bits of their float32 values"
	             : "vocab_loss_cpu CE: bf16 weights give the bits of their float32 values",
	          l == l2 && memcmp(dh, dh2, nh * sizeof(float)) == 0);
	free(wb), free(dh), free(dh2);
	case_free(&c);
}

/* logits in the hundreds: nothing overflows, the reference still agrees */
static void test_large_logits(int kl)
{
	Case c = case_new(4, 16, 37, kl, 60);
	size_t nh = (size_t)c.n * c.C;
	float *dh = mallocCheck(nh * sizeof(float)), *rl = mallocCheck((size_t)c.n * sizeof(float));
	double *rdh = mallocCheck(nh * sizeof(double)), *rrl = mallocCheck((size_t)c.n * sizeof(double));
	double loss = run(&c, dh, rl), rloss = ref_loss(rdh, rrl, &c);
	printf("  loss %.9g reference %.9g\n", loss, rloss);
	/* float32 logits of size ~300 carry ~3e-5 of rounding into each loss */
	int ok = isfinite(loss) && fabs(loss - rloss) <= 1e-6 * fabs(rloss) + 1e-4;
	ok &= check_tensor("row_loss", rl, rrl, (size_t)c.n, 1e-4, 1e-6);
	ok &= check_tensor("dhidden", dh, rdh, nh, 1e-4 * max_abs(rdh, nh), 1e-4);
	test_cond(kl ? "vocab_loss_cpu KL: logits in the hundreds stay finite and exact"
	             : "vocab_loss_cpu CE: logits in the hundreds stay finite and exact", ok);
	free(dh), free(rl), free(rdh), free(rrl);
	case_free(&c);
}

/* vocab_loss_fp8_cpu: the losses of vocab_loss_cpu bit for bit, dhidden
 * within e4m3's noise of its (and never equal), over several chunks (W's
 * codes made once for the call), bf16 weights as their float32 values */
static void test_fp8(int kl)
{
	int n = 2 * VOCAB_LOSS_CPU_ROWS + 5;
	Case c = case_new(n, 32, 1001, kl, 1);
	uint16_t *wb = mallocCheck((size_t)c.V * c.C * sizeof(uint16_t));
	for (size_t i = 0; i < (size_t)c.V * c.C; i++) {
		wb[i] = f32_to_bf16(c.w[i]);
		c.w[i] = bf16_to_f32(wb[i]);
	}
	size_t nh = (size_t)n * c.C;
	float *dh = mallocCheck(nh * sizeof(float)), *dh8 = mallocCheck(nh * sizeof(float));
	float *dhb = mallocCheck(nh * sizeof(float)), *rl = mallocCheck((size_t)n * sizeof(float));
	float *rl8 = mallocCheck((size_t)n * sizeof(float));
	double l = run(&c, dh, rl);
	double l8 = vocab_loss_fp8_cpu(dh8, rl8, c.h, c.g, c.tg, &c.W, n, c.C, c.V, c.scale);
	Tensor wt = {DT_BF16, 2, {c.V, c.C}, wb};
	vocab_loss_fp8_cpu(dhb, NULL, c.h, c.g, c.tg, &wt, n, c.C, c.V, c.scale);
	double e = test_rel_err(dh8, dh, nh);
	char msg[160];
	snprintf(msg, sizeof msg, "vocab_loss_fp8_cpu %s n=%d V=%d: the losses' bits, dhidden %.2e of max from "
	         "float32's, in (0, 0.1]", kl ? "KL" : "CE", n, c.V, e);
	test_cond(msg, l == l8 && memcmp(rl, rl8, (size_t)n * sizeof(float)) == 0 && e > 0 && e <= 0.1);
	test_cond(kl ? "vocab_loss_fp8_cpu KL: bf16 weights give the bits of their float32 values"
	             : "vocab_loss_fp8_cpu CE: bf16 weights give the bits of their float32 values",
	          memcmp(dh8, dhb, nh * sizeof(float)) == 0);
	free(wb), free(dh), free(dh8), free(dhb), free(rl), free(rl8);
	case_free(&c);
}

/* the row losses of c in double from logits of e4m3 codes made here, h's
 * (and g's) rows and W's rows each with their own scale: what
 * vocab_loss_logits8_cpu should compute, to its float32 logits */
static void ref_loss8(double *rl, const Case *c)
{
	int n = c->n, C = c->C, V = c->V;
	uint8_t *hq = mallocCheck((size_t)n * C), *gq = mallocCheck((size_t)n * C), *wq = mallocCheck((size_t)V * C);
	float *hs = mallocCheck((size_t)n * sizeof(float)), *gs = mallocCheck((size_t)n * sizeof(float));
	float *ws = mallocCheck((size_t)V * sizeof(float));
	double *z = mallocCheck((size_t)V * sizeof(double)), *zt = mallocCheck((size_t)V * sizeof(double));
	fp8_rows_cpu(hq, hs, c->h, n, C);
	fp8_rows_cpu(wq, ws, c->w, V, C);
	if (c->g)
		fp8_rows_cpu(gq, gs, c->g, n, C);
	for (int t = 0; t < n; t++) {
		for (int v = 0; v < V; v++) {
			double a = 0, b = 0;
			for (int i = 0; i < C; i++) {
				double wv = fp8_e4m3_value(wq[(size_t)v * C + i]);
				a += fp8_e4m3_value(hq[(size_t)t * C + i]) * wv;
				if (c->g)
					b += fp8_e4m3_value(gq[(size_t)t * C + i]) * wv;
			}
			z[v] = a * hs[t] * ws[v], zt[v] = c->g ? b * gs[t] * ws[v] : 0;
		}
		double lse = ref_lse(z, V);
		if (c->g) {
			double lset = ref_lse(zt, V);
			rl[t] = 0;
			for (int v = 0; v < V; v++)
				rl[t] += exp(zt[v] - lset) * ((zt[v] - lset) - (z[v] - lse));
		} else {
			rl[t] = c->tg[t] < 0 ? 0 : lse - z[c->tg[t]];
		}
	}
	free(hq), free(gq), free(wq), free(hs), free(gs), free(ws), free(z), free(zt);
}

/* vocab_loss_logits8_cpu: the row losses those of e4m3 logits (ref_loss8,
 * to 1e-5: codes by W's columns, or one scale for all, would round
 * elsewhere and miss it by e4m3's noise; W's rows span 2^-9 to 4 of each
 * other so that every scale differs); near float32's, not equal: a code is
 * within 1/16 of its value, so a logit of standard deviation 1 to 4 (W's
 * rows at 1, 2, 4 times) moves by ~3% of that, up to ~0.5 in a row of
 * 1001, and a row loss by about as much (0.57 and 0.17 seen, CE and KL);
 * a scale applied wrongly or a transposed product moves them by the
 * logits' own size. dhidden near float32's; over several chunks the bits
 * of one row at a time; bf16 weights the bits of their float32 values;
 * --grad fp8's dhidden with the same losses */
static void test_logits8(int kl)
{
	int n = 2 * VOCAB_LOSS_CPU_ROWS + 5, C = 48, V = 1001;
	Case c = case_new(n, C, V, kl, 1);
	for (int v = 0; v < V; v++) { /* rows at 2^-9, 1, 2, 4 times a logit of standard deviation ~1 */
		float f = ldexpf(3.0f / sqrtf((float)C), v % 13 == 0 ? -9 : v % 3);
		uint16_t b;
		for (int i = 0; i < C; i++)
			b = f32_to_bf16(f * c.w[(size_t)v * C + i]), c.w[(size_t)v * C + i] = bf16_to_f32(b);
	}
	uint16_t *wb = mallocCheck((size_t)V * C * sizeof(uint16_t));
	for (size_t i = 0; i < (size_t)V * C; i++)
		wb[i] = f32_to_bf16(c.w[i]);
	size_t nh = (size_t)n * C;
	float *dh = mallocCheck(nh * sizeof(float)), *dh8 = mallocCheck(nh * sizeof(float));
	float *dhx = mallocCheck(nh * sizeof(float)), *dh1 = mallocCheck(nh * sizeof(float));
	float *rl = mallocCheck((size_t)n * sizeof(float)), *rl8 = mallocCheck((size_t)n * sizeof(float));
	float *rlx = mallocCheck((size_t)n * sizeof(float)), *rl1 = mallocCheck((size_t)n * sizeof(float));
	double *rref = mallocCheck((size_t)n * sizeof(double));
	double l = run(&c, dh, rl);
	double l8 = vocab_loss_logits8_cpu(dh8, rl8, c.h, c.g, c.tg, &c.W, n, C, V, c.scale, 0);
	ref_loss8(rref, &c);
	const char *mode = kl ? "KL" : "CE";
	char msg[200];
	snprintf(msg, sizeof msg, "vocab_loss_logits8_cpu %s n=%d V=%d: the row losses of the codes' logits (double)",
	         mode, n, V);
	test_cond(msg, check_tensor("row_loss", rl8, rref, (size_t)n, 1e-5, 1e-5));
	double d = 0, m = 0;
	for (int t = 0; t < n; t++)
		d = fmax(d, fabs((double)rl8[t] - rl[t])), m = fmax(m, fabs((double)rl[t]));
	double e = test_rel_err(dh8, dh, nh);
	printf("  %s: loss %.6g (float32 %.6g), row losses off by %.3g at most (max %.3g), dhidden %.2e of max\n",
	       mode, l8, l, d, m, e);
	snprintf(msg, sizeof msg, "vocab_loss_logits8_cpu %s: row losses within e4m3's noise of float32's (%.3g of "
	         "%.3g), not equal; dhidden %.2e of max from float32's, in (0, 0.25]", mode, d, m, e);
	test_cond(msg, d > 0 && d <= (kl ? 0.5 : 1.5) && e > 0 && e <= 0.25);
	/* several chunks: the bits of one row at a time */
	int same = 1;
	for (int t = 0; t < n; t += 61) {
		Case one = c;
		one.n = 1, one.h = c.h + (size_t)t * C, one.g = c.g ? c.g + (size_t)t * C : NULL;
		one.tg = c.tg ? c.tg + t : NULL;
		vocab_loss_logits8_cpu(dh1, rl1, one.h, one.g, one.tg, &c.W, 1, C, V, c.scale, 0);
		same &= rl1[0] == rl8[t] && !memcmp(dh1, dh8 + (size_t)t * C, (size_t)C * sizeof(float));
	}
	snprintf(msg, sizeof msg, "vocab_loss_logits8_cpu %s: the same bits in chunks of %d as row by row", mode,
	         VOCAB_LOSS_CPU_ROWS);
	test_cond(msg, same);
	Tensor wt = {DT_BF16, 2, {V, C}, wb};
	double lb = vocab_loss_logits8_cpu(dhx, rlx, c.h, c.g, c.tg, &wt, n, C, V, c.scale, 0);
	snprintf(msg, sizeof msg, "vocab_loss_logits8_cpu %s: bf16 weights give the bits of their float32 values",
	         mode);
	test_cond(msg,
	          lb == l8 && !memcmp(rlx, rl8, (size_t)n * sizeof(float)) && !memcmp(dhx, dh8, nh * sizeof(float)));
	double lf = vocab_loss_logits8_cpu(dhx, rlx, c.h, c.g, c.tg, &c.W, n, C, V, c.scale, 1);
	e = test_rel_err(dhx, dh8, nh);
	snprintf(msg, sizeof msg, "vocab_loss_logits8_cpu %s, grad fp8: the same losses, dhidden %.2e of max from "
	         "W's, in (0, 0.1]", mode, e);
	test_cond(msg, lf == l8 && !memcmp(rlx, rl8, (size_t)n * sizeof(float)) && e > 0 && e <= 0.1);
	if (kl) { /* the teacher the student: both through the same codes */
		memcpy(c.g, c.h, nh * sizeof(float));
		double l0 = vocab_loss_logits8_cpu(dhx, rlx, c.h, c.g, NULL, &c.W, n, C, V, c.scale, 1);
		int zero = l0 == 0;
		for (size_t i = 0; i < nh; i++)
			zero &= dhx[i] == 0;
		for (int t = 0; t < n; t++)
			zero &= rlx[t] == 0;
		test_cond("vocab_loss_logits8_cpu KL: teacher == student gives loss 0 and dhidden 0", zero);
	}
	free(wb), free(dh), free(dh8), free(dhx), free(dh1), free(rl), free(rl8), free(rlx), free(rl1), free(rref);
	case_free(&c);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	test_seed(0x9e3779b97f4a7c15ULL);
	test_grad(5, 16, 37, 0);
	test_grad(5, 16, 37, 1);
	test_grad(1, 8, 3, 0);
	test_grad(3, 33, 200, 1);
	test_all_ignored();
	test_kl_self();
	test_chunks(0, 37);
	test_chunks(1, 37);
	test_chunks(0, 1001);
	test_chunks(1, 1001);
	test_bf16_weights(0);
	test_bf16_weights(1);
	test_large_logits(0);
	test_large_logits(1);
	test_fp8(0);
	test_fp8(1);
	test_logits8(0);
	test_logits8(1);
	return test_report();
}
