/* test_loss: vocab_loss_cuda (kernels/loss.cu) against its CPU twin
 * vocab_loss_cpu (lib/loss.c), cross-entropy and KL, forward only and
 * forward + backward, on random bf16 inputs (both sides see the same
 * numbers) at awkward shapes: one row, 37 rows, a chunk and 3 more rows,
 * V 3 (no float4 at all), 70 (17 float4s: on a Hopper the last blocks of a
 * row's cluster get none), 1001 (a ragged end and a padded stride) and the
 * Qwen vocabulary 151936, small C for speed; and logits 30 times larger
 * (a standard deviation of ~90: softmaxes near one-hot, most of a row's
 * exponentials far below the row's largest); vocab_loss_fp8_cuda against
 * vocab_loss_fp8_cpu (test_fp8 says how); vocab_loss_logits8_cuda against
 * vocab_loss_logits8_cpu (test_logits8). Runs on a GPU: make test-gpu.
 *
 * Tolerances, and why:
 *   loss and row losses: 1e-4 + 1e-4 |ref|. Both sides compute float32
 *     logits from the same bf16 values; the GPU's softmax sums are float32
 *     (a row of 151936 terms: ~1e-6 of lse ~ 16) where the CPU's are
 *     double, and the GEMMs add in another order (~1e-6 of a logit).
 *   dhidden: 1e-2 |ref| + 5e-3 max|ref|. dz is rounded to bf16 before the
 *     GEMM (2^-9 of each term) and dhidden is bf16 (2^-9 of the result):
 *     under 1% of a value whose terms do not cancel, and the floor for
 *     those that do. */
#include <string.h>

#include "cuda_common.cuh" // defines: cuda_cc_major
#include "gpu.h"
extern "C" {
#include "loss.h"
#include "test.h"
#include "util.h"
}
#include "gpu_test.h"

/* NaN everywhere, so that an element the kernels miss fails */
static void poison(void *d, size_t bytes)
{
	unsigned char *h = (unsigned char *)mallocCheck(bytes);
	memset(h, 0xff, bytes);
	gpu_upload(d, h, bytes);
	free(h);
}

static int close_to(double got, double ref)
{
	return fabs(got - ref) <= 1e-4 + 1e-4 * fabs(ref);
}

/* one case: n rows of width C against a vocabulary of V; kl picks the mode,
 * grad the backward; self makes the teacher the student itself (KL 0); big
 * multiplies the logits (and the teacher's distance) by 30 */
static void test_vocab_loss_at(int n, int C, int V, int kl, int grad, int self, int big)
{
	/* logits of standard deviation ~3, as a trained model's (~90 if big) */
	float hs = big ? 30.0f : 1.0f;
	Buf h = buf_rand((size_t)n * C, hs), w = buf_rand((size_t)V * C, 9.0f / sqrtf((float)C));
	Buf g = {};
	int32_t *tg = NULL, *d_tg = NULL;
	if (kl) {
		/* a teacher near the student, as after distillation */
		g = buf_rand((size_t)n * C, 0.3f * hs);
		for (size_t i = 0; i < g.n; i++) {
			g.h[i] = f32_to_bf16(self ? h.f[i] : h.f[i] + g.f[i]);
			g.f[i] = bf16_to_f32(g.h[i]);
		}
		gpu_upload(g.d, g.h, g.n * 2);
	} else {
		tg = (int32_t *)mallocCheck((size_t)n * 4);
		d_tg = (int32_t *)gpu_alloc((size_t)n * 4);
		for (int t = 0; t < n; t++)
			tg[t] = t % 7 == 3 ? -1 : (int32_t)((test_frand() + 1) * 0.5f * (V - 1));
		gpu_upload(d_tg, tg, (size_t)n * 4);
	}
	Tensor W = {DT_F32, 2, {V, C}, w.f};
	float scale = 1.0f / n;
	size_t nh = (size_t)n * C;

	float *rl = (float *)mallocCheck((size_t)n * 4), *dh = grad ? (float *)mallocCheck(nh * 4) : NULL;
	double ref = vocab_loss_cpu(dh, rl, h.f, kl ? g.f : NULL, tg, &W, n, C, V, scale);

	float *d_loss = (float *)gpu_alloc(4), *d_rl = (float *)gpu_alloc((size_t)n * 4);
	bf16_t *d_dh = grad ? (bf16_t *)gpu_alloc(nh * 2) : NULL;
	void *work = gpu_alloc(vocab_loss_work(C, V));
	poison(d_loss, 4), poison(d_rl, (size_t)n * 4);
	if (grad)
		poison(d_dh, nh * 2);
	vocab_loss_cuda(d_loss, d_rl, d_dh, h.d, kl ? g.d : NULL, d_tg, w.d, n, C, V, scale, work);
	gpu_sync();

	float loss, *grl = (float *)mallocCheck((size_t)n * 4);
	bf16_t *gdh = (bf16_t *)mallocCheck(nh * 2);
	float *gdhf = (float *)mallocCheck(nh * 4);
	double *r = (double *)mallocCheck((nh > (size_t)n ? nh : (size_t)n) * sizeof(double));
	gpu_download(&loss, d_loss, 4);
	gpu_download(grl, d_rl, (size_t)n * 4);
	printf("  loss %.7f reference %.7f\n", loss, ref);
	int ok = close_to(loss, ref);
	for (int t = 0; t < n; t++)
		r[t] = rl[t];
	ok &= check_tensor("row_loss", grl, r, (size_t)n, 1e-4, 1e-4);
	if (grad) {
		gpu_download(gdh, d_dh, nh * 2);
		for (size_t i = 0; i < nh; i++)
			gdhf[i] = bf16_to_f32(gdh[i]), r[i] = dh[i];
		double m = max_abs(r, nh);
		ok &= check_tensor("dhidden", gdhf, r, nh, 5e-3 * (m > 1e-6 ? m : 1e-6), 1e-2);
		/* an ignored row's gradient is exactly zero */
		for (int t = 0; tg && t < n; t++)
			for (int i = 0; tg[t] < 0 && i < C; i++)
				ok &= gdh[(size_t)t * C + i] == 0 || gdh[(size_t)t * C + i] == 0x8000;
	}
	if (self) {
		/* the same logits on both sides: nothing but rounding is left */
		int zero = fabsf(loss) <= 1e-6f;
		for (int t = 0; t < n; t++)
			zero &= fabsf(grl[t]) <= 1e-5f;
		for (size_t i = 0; grad && i < nh; i++)
			zero &= fabsf(gdhf[i]) <= 1e-6f;
		ok &= zero;
	}

	/* again, without row losses: the same bits (a deterministic total) */
	float loss2;
	bf16_t *gdh2 = (bf16_t *)mallocCheck(nh * 2);
	poison(d_loss, 4);
	vocab_loss_cuda(d_loss, NULL, d_dh, h.d, kl ? g.d : NULL, d_tg, w.d, n, C, V, scale, work);
	gpu_sync();
	gpu_download(&loss2, d_loss, 4);
	int same = memcmp(&loss, &loss2, 4) == 0;
	if (grad) {
		gpu_download(gdh2, d_dh, nh * 2);
		same &= memcmp(gdh, gdh2, nh * 2) == 0;
	}
	printf("  second call (row_loss NULL): %s\n", same ? "the same bits" : "DIFFERENT");

	char msg[160];
	snprintf(msg, sizeof msg, "vocab_loss_cuda %s%s%s n=%d C=%d V=%d %s", kl ? "KL" : "CE",
	         self ? " (teacher = student)" : "", big ? " (logits x30)" : "", n, C, V,
	         grad ? "forward+backward" : "forward");
	test_cond(msg, ok && same);

	buf_free(&h), buf_free(&w);
	if (kl)
		buf_free(&g);
	free(tg), free(rl), free(dh), free(grl), free(gdh), free(gdh2), free(gdhf), free(r);
	gpu_free(d_tg), gpu_free(d_loss), gpu_free(d_rl), gpu_free(d_dh), gpu_free(work);
}

static void test_vocab_loss(int n, int C, int V, int kl, int grad, int self)
{
	test_vocab_loss_at(n, C, V, kl, grad, self, 0);
}

/* vocab_loss_fp8_cuda (KL, dhidden through e4m3) against
 * vocab_loss_fp8_cpu: the loss of vocab_loss_cuda bit for bit; dhidden
 * within 2e-2 of its max from the CPU's e4m3 one (the GPU quantises dz
 * rounded to bf16, the CPU its float32 values: codes a step apart where
 * the two straddle a boundary, as often as bf16's rounding is a sizeable
 * part of a step), and away from vocab_loss_cuda's dhidden by more than
 * twice that one's distance from the CPU's float32 one (the codes were
 * used) */
static void test_fp8(int n, int C, int V)
{
	Buf h = buf_rand((size_t)n * C, 1.0f), w = buf_rand((size_t)V * C, 9.0f / sqrtf((float)C));
	Buf g = buf_rand((size_t)n * C, 0.3f);
	for (size_t i = 0; i < g.n; i++) {
		g.h[i] = f32_to_bf16(h.f[i] + g.f[i]);
		g.f[i] = bf16_to_f32(g.h[i]);
	}
	gpu_upload(g.d, g.h, g.n * 2);
	Tensor W = {DT_F32, 2, {V, C}, w.f};
	float scale = 1.0f / n;
	size_t nh = (size_t)n * C;
	float *dh = (float *)mallocCheck(nh * 4), *dh8 = (float *)mallocCheck(nh * 4);
	vocab_loss_cpu(dh, NULL, h.f, g.f, NULL, &W, n, C, V, scale);
	vocab_loss_fp8_cpu(dh8, NULL, h.f, g.f, NULL, &W, n, C, V, scale);
	uint8_t *d_w8 = (uint8_t *)gpu_alloc((size_t)C * V);
	float *d_s8 = (float *)gpu_alloc((size_t)C * 4), *d_loss = (float *)gpu_alloc(8);
	bf16_t *d_dh = (bf16_t *)gpu_alloc(nh * 2);
	void *work = gpu_alloc(vocab_loss_work(C, V));
	fp8_cols_t_cuda(d_w8, d_s8, w.d, V, C);
	float loss[2], *gdh[2];
	for (int k = 0; k < 2; k++) {
		poison(d_dh, nh * 2);
		if (k)
			vocab_loss_fp8_cuda(d_loss + k, NULL, d_dh, h.d, g.d, w.d, d_w8, d_s8, n, C, V, scale, work);
		else
			vocab_loss_cuda(d_loss + k, NULL, d_dh, h.d, g.d, NULL, w.d, n, C, V, scale, work);
		bf16_t *t = (bf16_t *)mallocCheck(nh * 2);
		gpu_download(t, d_dh, nh * 2);
		gdh[k] = (float *)mallocCheck(nh * 4);
		for (size_t i = 0; i < nh; i++)
			gdh[k][i] = bf16_to_f32(t[i]);
		free(t);
	}
	gpu_download(loss, d_loss, 8);
	double e8 = test_rel_err(gdh[1], dh8, nh), e16 = test_rel_err(gdh[0], dh, nh);
	double moved = test_rel_err(gdh[1], gdh[0], nh);
	char msg[224];
	snprintf(msg, sizeof msg,
	         "vocab_loss_fp8_cuda KL n=%d C=%d V=%d: the loss's bits, dhidden %.1e of max from the CPU's e4m3 "
	         "(within 2e-2)",
	         n, C, V, e8);
	test_cond(msg, memcmp(&loss[0], &loss[1], 4) == 0 && e8 < 2e-2);
	snprintf(msg, sizeof msg,
	         "vocab_loss_fp8_cuda KL n=%d C=%d V=%d: dhidden %.1e of max from the bf16 product's, more than "
	         "twice that one's %.1e from float32's",
	         n, C, V, moved, e16);
	test_cond(msg, moved > 2 * e16);
	buf_free(&h), buf_free(&w), buf_free(&g);
	free(dh), free(dh8), free(gdh[0]), free(gdh[1]);
	gpu_free(d_w8), gpu_free(d_s8), gpu_free(d_loss), gpu_free(d_dh), gpu_free(work);
}

/* vocab_loss_logits8_cuda (KL, both logits through e4m3: --forward
 * fp8-all) against vocab_loss_logits8_cpu on the same bf16 values (whose
 * rows code the same on both sides, test_fp8.cu's test_rows; W's rows by
 * fp8_rows_cuda here, lm_rows there): the same codes, but the e4m3
 * tensor-core product does not sum them as float32 would (an H200: row
 * losses up to 9.2e-4 from the double sums' at these shapes, the loss
 * 6e-5), so the loss within 5e-4 and the row losses within 2e-3 (both
 * also relative; a wrong scale or row moves them by the e4m3 codes'
 * own effect, 4e-2 to 2e-1, checked below, or more) and dhidden as
 * test_vocab_loss's (grad8 0: bf16 dz W) or
 * test_fp8's (grad8 1: within 2e-2 of its max; the GPU codes dz rounded
 * to bf16); the row losses away from vocab_loss_cuda's by more than twice
 * that one's distance from the CPU's float32 ones (the codes were used);
 * with the teacher the student (self), loss, row losses and dhidden 0
 * (<= 1e-6 as test_vocab_loss's; the same codes on both sides should make
 * them exactly 0, which is printed) */
static void test_logits8(int n, int C, int V, int grad8, int self)
{
	Buf h = buf_rand((size_t)n * C, 1.0f), w = buf_rand((size_t)V * C, 9.0f / sqrtf((float)C));
	Buf g = buf_rand((size_t)n * C, 0.3f);
	for (size_t i = 0; i < g.n; i++) {
		g.h[i] = f32_to_bf16(self ? h.f[i] : h.f[i] + g.f[i]);
		g.f[i] = bf16_to_f32(g.h[i]);
	}
	gpu_upload(g.d, g.h, g.n * 2);
	Tensor W = {DT_F32, 2, {V, C}, w.f};
	float scale = 1.0f / n;
	size_t nh = (size_t)n * C;
	float *dh = (float *)mallocCheck(nh * 4), *rl = (float *)mallocCheck((size_t)n * 4);
	float *rl32 = (float *)mallocCheck((size_t)n * 4);
	double ref = vocab_loss_logits8_cpu(dh, rl, h.f, g.f, NULL, &W, n, C, V, scale, grad8);
	vocab_loss_cpu(NULL, rl32, h.f, g.f, NULL, &W, n, C, V, scale);
	uint8_t *hq = (uint8_t *)gpu_alloc(nh), *tq = (uint8_t *)gpu_alloc(nh);
	uint8_t *wr = (uint8_t *)gpu_alloc((size_t)V * C);
	float *hs = (float *)gpu_alloc((size_t)n * 4), *ts = (float *)gpu_alloc((size_t)n * 4);
	float *wrs = (float *)gpu_alloc((size_t)V * 4);
	uint8_t *w8 = grad8 ? (uint8_t *)gpu_alloc((size_t)C * V) : NULL;
	float *s8 = grad8 ? (float *)gpu_alloc((size_t)C * 4) : NULL;
	fp8_rows_cuda(hq, hs, h.d, n, C);
	fp8_rows_cuda(tq, ts, g.d, n, C);
	fp8_rows_cuda(wr, wrs, w.d, V, C);
	if (grad8)
		fp8_cols_t_cuda(w8, s8, w.d, V, C);
	float *d_loss = (float *)gpu_alloc(8), *d_rl = (float *)gpu_alloc((size_t)n * 4 * 2);
	bf16_t *d_dh = (bf16_t *)gpu_alloc(nh * 2);
	void *work = gpu_alloc(vocab_loss_work(C, V));
	poison(d_loss, 8), poison(d_rl, (size_t)n * 8), poison(d_dh, nh * 2);
	vocab_loss_logits8_cuda(d_loss, d_rl, d_dh, hq, hs, tq, ts, w.d, wr, wrs, w8, s8, n, C, V, scale, work);
	vocab_loss_cuda(d_loss + 1, d_rl + n, NULL, h.d, g.d, NULL, w.d, n, C, V, scale, work);
	gpu_sync();
	float loss[2], *grl = (float *)mallocCheck((size_t)n * 8), *gdh = (float *)mallocCheck(nh * 4);
	bf16_t *t16 = (bf16_t *)mallocCheck(nh * 2);
	double *r = (double *)mallocCheck((nh > (size_t)n ? nh : (size_t)n) * sizeof(double));
	gpu_download(loss, d_loss, 8);
	gpu_download(grl, d_rl, (size_t)n * 8);
	gpu_download(t16, d_dh, nh * 2);
	for (size_t i = 0; i < nh; i++)
		gdh[i] = bf16_to_f32(t16[i]);
	printf("  loss %.7f reference %.7f (bf16 logits %.7f)\n", loss[0], ref, loss[1]);
	int ok = fabs(loss[0] - ref) <= 5e-4 + 5e-4 * fabs(ref);
	for (int t = 0; t < n; t++)
		r[t] = rl[t];
	ok &= check_tensor("row_loss", grl, r, (size_t)n, 2e-3, 2e-3);
	for (size_t i = 0; i < nh; i++)
		r[i] = dh[i];
	double m = max_abs(r, nh), e8 = test_rel_err(gdh, dh, nh);
	if (grad8)
		printf("  dhidden %.2e of max from the CPU's\n", e8), ok &= e8 < 2e-2;
	else
		ok &= check_tensor("dhidden", gdh, r, nh, 5e-3 * (m > 1e-6 ? m : 1e-6), 1e-2);
	char msg[224];
	if (self) {
		int zero = fabsf(loss[0]) <= 1e-6f, exact = loss[0] == 0;
		for (int t = 0; t < n; t++)
			zero &= fabsf(grl[t]) <= 1e-6f, exact &= grl[t] == 0;
		for (size_t i = 0; i < nh; i++)
			zero &= fabsf(gdh[i]) <= 1e-6f, exact &= gdh[i] == 0;
		printf("  teacher = student: %s\n", exact ? "exactly 0" : "not exactly 0");
		snprintf(msg, sizeof msg, "vocab_loss_logits8_cuda n=%d C=%d V=%d%s: teacher = student gives loss, row "
		         "losses and dhidden 0", n, C, V, grad8 ? " grad fp8" : "");
		test_cond(msg, ok && zero);
	} else {
		double moved = 0, e16 = 0;
		for (int t = 0; t < n; t++) {
			moved = fmax(moved, fabs((double)grl[t] - grl[n + t]));
			e16 = fmax(e16, fabs((double)grl[n + t] - rl32[t]));
		}
		snprintf(msg, sizeof msg, "vocab_loss_logits8_cuda n=%d C=%d V=%d%s: the CPU's e4m3 logits' loss, row "
		         "losses and dhidden", n, C, V, grad8 ? " grad fp8" : "");
		test_cond(msg, ok);
		snprintf(msg, sizeof msg, "vocab_loss_logits8_cuda n=%d C=%d V=%d: row losses %.1e from bf16 logits', "
		         "more than twice those's %.1e from float32's", n, C, V, moved, e16);
		test_cond(msg, moved > 2 * e16);
	}
	buf_free(&h), buf_free(&w), buf_free(&g);
	free(dh), free(rl), free(rl32), free(grl), free(gdh), free(t16), free(r);
	gpu_free(hq), gpu_free(tq), gpu_free(wr), gpu_free(hs), gpu_free(ts), gpu_free(wrs), gpu_free(w8), gpu_free(s8);
	gpu_free(d_loss), gpu_free(d_rl), gpu_free(d_dh), gpu_free(work);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	test_seed(0xda3e39cb94b95bdbULL);
	if (cuda_device_count() == 0) {
		printf("SKIP: no GPU\n");
		return 0;
	}
	char name[128];
	cuda_device_name(0, name, sizeof name);
	printf("# %s, vocab_loss_work(2048, 151936) = %.1f MB\n", name, vocab_loss_work(2048, 151936) / 1e6);
	for (int kl = 0; kl < 2; kl++) {
		int chunk = kl ? VOCAB_LOSS_ROWS / 2 : VOCAB_LOSS_ROWS;
		for (int grad = 0; grad < 2; grad++) {
			test_vocab_loss(1, 64, 1000, kl, grad, 0);
			test_vocab_loss(37, 64, 1000, kl, grad, 0);
			test_vocab_loss(37, 72, 1001, kl, grad, 0);
			test_vocab_loss(5, 200, 3, kl, grad, 0);
			test_vocab_loss(9, 64, 70, kl, grad, 0);
			test_vocab_loss(chunk + 3, 64, 1001, kl, grad, 0);
			test_vocab_loss(2 * chunk, 64, 1000, kl, grad, 0);
			test_vocab_loss(37, 64, 151936, kl, grad, 0);
		}
	}
	test_vocab_loss(37, 64, 1001, 1, 1, 1);
	test_vocab_loss(5, 64, 151936, 1, 1, 1);
	if (cuda_cc_major() >= 9) {
		test_fp8(37, 64, 1008);
		test_fp8(VOCAB_LOSS_ROWS / 2 + 3, 64, 1008); /* two chunks */
		test_fp8(37, 64, 151936);
		for (int grad8 = 0; grad8 < 2; grad8++) {
			test_logits8(37, 64, 1008, grad8, 0);
			test_logits8(VOCAB_LOSS_ROWS / 2 + 3, 64, 1008, grad8, 0); /* two chunks */
			test_logits8(37, 64, 151936, grad8, 0);
			test_logits8(5, 64, 151936, grad8, 1);
		}
	} else {
		printf("SKIP: e4m3 products want a Hopper (compute capability 9.0)\n");
	}
	test_vocab_loss_at(5, 64, 151936, 1, 1, 1, 1);
	for (int kl = 0; kl < 2; kl++)
		test_vocab_loss_at(37, 64, 151936, kl, 1, 0, 1);
	return test_report();
}
