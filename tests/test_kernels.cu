/* test_kernels: every CUDA kernel of kernels/ against its CPU twin in
 * lib/ops_cpu.c, on random inputs rounded to bf16 (so both sides see the
 * same numbers), at awkward shapes: one row, rows not a multiple of the
 * block, several sequences, odd widths. bf16 outputs pass within
 * 1e-2 |ref| + 1e-3 max|ref|. Runs on a GPU: make test-gpu. */
#include <string.h>

#include "gpu.h"
extern "C" {
#include "ops_cpu.h"
#include "test.h"
#include "util.h"
}
#include "gpu_test.h"

static Buf buf_empty(size_t n)
{
	Buf b = {(float *)mallocCheck(n * 4), (bf16_t *)mallocCheck(n * 2), (bf16_t *)gpu_alloc(n * 2), n};
	/* poison: NaN everywhere, so an element the kernel misses fails */
	for (size_t i = 0; i < n; i++)
		b.h[i] = 0x7fc0;
	gpu_upload(b.d, b.h, n * 2);
	return b;
}

/* download a device result and compare it with a float32 reference:
 * within rtol |ref| + atol max(max|ref|, 1e-3) (the floor for references
 * that are exactly zero, such as dq of a query that sees only itself) */
static int same_tol(const char *name, Buf *got, const float *ref, double atol, double rtol)
{
	gpu_sync();
	gpu_download(got->h, got->d, got->n * 2);
	double *r = (double *)mallocCheck(got->n * sizeof(double));
	for (size_t i = 0; i < got->n; i++)
		got->f[i] = bf16_to_f32(got->h[i]), r[i] = ref[i];
	double scale = max_abs(r, got->n);
	int ok = check_tensor(name, got->f, r, got->n, atol * (scale > 1e-3 ? scale : 1e-3), rtol);
	free(r);
	return ok;
}

static int same(const char *name, Buf *got, const float *ref)
{
	return same_tol(name, got, ref, 1e-3, 1e-2);
}

static Tensor view(const Buf *b, int ndim, int64_t d0, int64_t d1)
{
	Tensor t = {DT_F32, ndim, {d0, d1}, b->f};
	return t;
}

static void test_matmul(int n, int IC, int OC, int bias)
{
	Buf x = buf_rand((size_t)n * IC, 1), w = buf_rand((size_t)OC * IC, 0.2f), b = buf_rand((size_t)OC, 1);
	Buf out = buf_empty((size_t)n * OC), dout = buf_rand((size_t)n * OC, 1), dx = buf_empty((size_t)n * IC);
	float *ref = (float *)mallocCheck((size_t)n * (OC > IC ? OC : IC) * 4);
	Tensor W = view(&w, 2, OC, IC), Bv = view(&b, 1, OC, 0), none = {};
	char msg[128];
	matmul_forward_cpu(ref, x.f, &W, bias ? &Bv : &none, n, IC, OC);
	matmul_forward_cuda(out.d, x.d, w.d, bias ? b.d : NULL, n, IC, OC);
	snprintf(msg, sizeof msg, "matmul_forward n=%d IC=%d OC=%d%s", n, IC, OC, bias ? " +bias" : "");
	test_cond(msg, same("out", &out, ref));
	matmul_backward_cpu(ref, dout.f, &W, n, IC, OC);
	matmul_backward_cuda(dx.d, dout.d, w.d, n, IC, OC);
	snprintf(msg, sizeof msg, "matmul_backward n=%d IC=%d OC=%d", n, IC, OC);
	test_cond(msg, same("dx", &dx, ref));
	buf_free(&x), buf_free(&w), buf_free(&b), buf_free(&out), buf_free(&dout), buf_free(&dx);
	free(ref);
}

/* matmul_forward_residual_cuda: out = res + x w^T against matmul_forward_cpu
 * then residual_forward_cpu (the GPU does not round the product to bf16
 * before the add: within the matmul's tolerance); inplace: out is res */
static void test_matmul_residual(int n, int IC, int OC, int inplace)
{
	Buf x = buf_rand((size_t)n * IC, 1), w = buf_rand((size_t)OC * IC, 0.2f), res = buf_rand((size_t)n * OC, 2);
	Buf out = buf_empty((size_t)n * OC), *o = inplace ? &res : &out;
	float *ref = (float *)mallocCheck((size_t)n * OC * 4);
	Tensor W = view(&w, 2, OC, IC), none = {};
	char msg[128];
	matmul_forward_cpu(ref, x.f, &W, &none, n, IC, OC);
	residual_forward_cpu(ref, res.f, (int64_t)n * OC);
	matmul_forward_residual_cuda(o->d, x.d, w.d, res.d, n, IC, OC);
	snprintf(msg, sizeof msg, "matmul_forward_residual n=%d IC=%d OC=%d%s", n, IC, OC, inplace ? " in place" : "");
	test_cond(msg, same("out", o, ref));
	buf_free(&x), buf_free(&w), buf_free(&res), buf_free(&out);
	free(ref);
}

static void test_rmsnorm(int n, int C)
{
	Buf x = buf_rand((size_t)n * C, 2), w = buf_rand((size_t)C, 1), out = buf_empty((size_t)n * C);
	Buf dout = buf_rand((size_t)n * C, 1), dx = buf_empty((size_t)n * C);
	float *ref = (float *)mallocCheck((size_t)n * C * 4), *rstd = (float *)gpu_alloc((size_t)n * 4);
	Tensor W = view(&w, 1, C, 0);
	char msg[96];
	rmsnorm_forward_cpu(ref, x.f, &W, n, C, 1e-6f);
	rmsnorm_forward_cuda(out.d, rstd, x.d, w.d, n, C, 1e-6f);
	snprintf(msg, sizeof msg, "rmsnorm_forward n=%d C=%d", n, C);
	test_cond(msg, same("out", &out, ref));
	rmsnorm_backward_cpu(ref, dout.f, x.f, &W, n, C, 1e-6f);
	rmsnorm_backward_cuda(dx.d, dout.d, x.d, rstd, w.d, n, C);
	snprintf(msg, sizeof msg, "rmsnorm_backward n=%d C=%d", n, C);
	test_cond(msg, same("dx", &dx, ref));
	buf_free(&x), buf_free(&w), buf_free(&out), buf_free(&dout), buf_free(&dx);
	free(ref);
	gpu_free(rstd);
}

static void test_embedding(int n, int V, int C)
{
	Buf w = buf_rand((size_t)V * C, 1), out = buf_empty((size_t)n * C);
	int32_t *ids = (int32_t *)mallocCheck((size_t)n * 4), *d_ids = (int32_t *)gpu_alloc((size_t)n * 4);
	for (int i = 0; i < n; i++)
		ids[i] = (int32_t)((test_frand() + 1) * 0.5f * (V - 1));
	gpu_upload(d_ids, ids, (size_t)n * 4);
	float *ref = (float *)mallocCheck((size_t)n * C * 4);
	Tensor W = view(&w, 2, V, C);
	embedding_forward_cpu(ref, ids, &W, n, C);
	embedding_forward_cuda(out.d, d_ids, w.d, n, C);
	char msg[96];
	snprintf(msg, sizeof msg, "embedding_forward n=%d V=%d C=%d", n, V, C);
	test_cond(msg, same("out", &out, ref));
	buf_free(&w), buf_free(&out);
	free(ids), free(ref);
	gpu_free(d_ids);
}

static void test_rope(int B, int T, int NH, int D, int pos0)
{
	size_t n = (size_t)B * T * NH * D;
	Buf x = buf_rand(n, 1);
	float *inv = (float *)mallocCheck((size_t)D / 2 * 4), *d_inv = (float *)gpu_alloc((size_t)D / 2 * 4);
	for (int i = 0; i < D / 2; i++)
		inv[i] = (float)(1.0 / pow(1e6, 2.0 * i / D));
	gpu_upload(d_inv, inv, (size_t)D / 2 * 4);
	float *ref = (float *)mallocCheck(n * 4);
	memcpy(ref, x.f, n * 4);
	rope_forward_cpu(ref, inv, B, T, pos0, NH, D);
	rope_forward_cuda(x.d, d_inv, B, T, pos0, NH, D);
	char msg[96];
	snprintf(msg, sizeof msg, "rope_forward B=%d T=%d NH=%d D=%d pos0=%d", B, T, NH, D, pos0);
	test_cond(msg, same("x", &x, ref));
	/* the backward from the forward's output, on both sides */
	memcpy(ref, x.f, n * 4);
	rope_backward_cpu(ref, inv, B, T, pos0, NH, D);
	rope_backward_cuda(x.d, d_inv, B, T, pos0, NH, D);
	snprintf(msg, sizeof msg, "rope_backward B=%d T=%d NH=%d D=%d pos0=%d", B, T, NH, D, pos0);
	test_cond(msg, same("dx", &x, ref));
	buf_free(&x);
	free(inv), free(ref);
	gpu_free(d_inv);
}

static void test_swiglu_residual(int64_t n)
{
	Buf g = buf_rand((size_t)n, 4), u = buf_rand((size_t)n, 2), out = buf_empty((size_t)n);
	Buf dout = buf_rand((size_t)n, 1), dg = buf_empty((size_t)n), du = buf_empty((size_t)n);
	float *ref = (float *)mallocCheck((size_t)n * 4), *ref2 = (float *)mallocCheck((size_t)n * 4);
	char msg[96];
	swiglu_forward_cpu(ref, g.f, u.f, n);
	swiglu_forward_cuda(out.d, g.d, u.d, n);
	snprintf(msg, sizeof msg, "swiglu_forward n=%lld", (long long)n);
	test_cond(msg, same("out", &out, ref));
	swiglu_backward_cpu(ref, ref2, dout.f, g.f, u.f, n);
	swiglu_backward_cuda(dg.d, du.d, dout.d, g.d, u.d, n);
	snprintf(msg, sizeof msg, "swiglu_backward n=%lld", (long long)n);
	test_cond(msg, same("dgate", &dg, ref) && same("dup", &du, ref2));
	memcpy(ref, g.f, (size_t)n * 4);
	residual_forward_cpu(ref, u.f, n);
	residual_forward_cuda(g.d, u.d, n);
	snprintf(msg, sizeof msg, "residual_forward n=%lld", (long long)n);
	test_cond(msg, same("out", &g, ref));
	buf_free(&g), buf_free(&u), buf_free(&out), buf_free(&dout), buf_free(&dg), buf_free(&du);
	free(ref), free(ref2);
}

/* the fused kernels of the teacher's layer against their CPU compositions */

static void test_qkv_rope(int B, int T, int H, int G, int D, int pos0, int bias)
{
	size_t n = (size_t)B * T, HD = (size_t)H * D, GD = (size_t)G * D, W = HD + 2 * GD;
	Buf qkv = buf_rand(n * W, 2), b = buf_rand(W, 1);
	Buf q = buf_empty(n * HD), k = buf_empty(n * GD), v = buf_empty(n * GD);
	float *inv = (float *)mallocCheck((size_t)D / 2 * 4), *d_inv = (float *)gpu_alloc((size_t)D / 2 * 4);
	for (int i = 0; i < D / 2; i++)
		inv[i] = (float)(1.0 / pow(1e6, 2.0 * i / D));
	gpu_upload(d_inv, inv, (size_t)D / 2 * 4);
	float *rq = (float *)mallocCheck(n * HD * 4), *rk = (float *)mallocCheck(n * GD * 4);
	float *rv = (float *)mallocCheck(n * GD * 4), *r = (float *)mallocCheck(n * W * 4);
	Tensor Bv = view(&b, 1, (int64_t)W, 0), none = {};
	char msg[128];
	qkv_rope_forward_cpu(rq, rk, rv, qkv.f, bias ? &Bv : &none, inv, B, T, pos0, H, G, D);
	qkv_rope_forward_cuda(q.d, k.d, v.d, qkv.d, bias ? b.d : NULL, d_inv, B, T, pos0, H, G, D);
	snprintf(msg, sizeof msg, "qkv_rope_forward B=%d T=%d H=%d G=%d D=%d pos0=%d%s", B, T, H, G, D, pos0,
	         bias ? " +bias" : "");
	test_cond(msg, same("q", &q, rq) & same("k", &k, rk) & same("v", &v, rv));
	/* the backward from random dq, dk, dv */
	Buf dq = buf_rand(n * HD, 1), dk = buf_rand(n * GD, 1), dv = buf_rand(n * GD, 1), dqkv = buf_empty(n * W);
	qkv_rope_backward_cpu(r, dq.f, dk.f, dv.f, inv, B, T, pos0, H, G, D);
	qkv_rope_backward_cuda(dqkv.d, dq.d, dk.d, dv.d, d_inv, B, T, pos0, H, G, D);
	snprintf(msg, sizeof msg, "qkv_rope_backward B=%d T=%d H=%d G=%d D=%d pos0=%d", B, T, H, G, D, pos0);
	test_cond(msg, same("dqkv", &dqkv, r));
	buf_free(&qkv), buf_free(&b), buf_free(&q), buf_free(&k), buf_free(&v);
	buf_free(&dq), buf_free(&dk), buf_free(&dv), buf_free(&dqkv);
	free(inv), free(rq), free(rk), free(rv), free(r);
	gpu_free(d_inv);
}

static void test_swiglu_packed(int n, int F)
{
	size_t nF = (size_t)n * F;
	Buf gu = buf_rand(2 * nF, 3), out = buf_empty(nF), dout = buf_rand(nF, 1), dgu = buf_empty(2 * nF);
	float *ref = (float *)mallocCheck(2 * nF * 4);
	char msg[96];
	swiglu_packed_forward_cpu(ref, gu.f, n, F);
	swiglu_packed_forward_cuda(out.d, gu.d, n, F);
	snprintf(msg, sizeof msg, "swiglu_packed_forward n=%d F=%d", n, F);
	test_cond(msg, same("out", &out, ref));
	swiglu_packed_backward_cpu(ref, dout.f, gu.f, n, F);
	swiglu_packed_backward_cuda(dgu.d, dout.d, gu.d, n, F);
	snprintf(msg, sizeof msg, "swiglu_packed_backward n=%d F=%d", n, F);
	test_cond(msg, same("dgu", &dgu, ref));
	buf_free(&gu), buf_free(&out), buf_free(&dout), buf_free(&dgu);
	free(ref);
}

/* inplace: h is x in the forward (as the inference forward runs it) and dh
 * is dres in the backward */
static void test_residual_rmsnorm(int n, int C, int inplace)
{
	size_t nC = (size_t)n * C;
	Buf x = buf_rand(nC, 2), a = buf_rand(nC, 1), w = buf_rand((size_t)C, 1), h = buf_empty(nC);
	Buf out = buf_empty(nC), dout = buf_rand(nC, 1), dres = buf_rand(nC, 1), dh = buf_empty(nC);
	float *rh = (float *)mallocCheck(nC * 4), *ref = (float *)mallocCheck(nC * 4);
	float *rstd = (float *)gpu_alloc((size_t)n * 4);
	Tensor W = view(&w, 1, C, 0);
	Buf *hg = inplace ? &x : &h, *dhg = inplace ? &dres : &dh;
	char msg[128];
	residual_rmsnorm_forward_cpu(rh, ref, x.f, a.f, &W, n, C, 1e-6f);
	residual_rmsnorm_forward_cuda(hg->d, out.d, rstd, x.d, a.d, w.d, n, C, 1e-6f);
	snprintf(msg, sizeof msg, "residual_rmsnorm_forward n=%d C=%d%s", n, C, inplace ? " in place" : "");
	/* the kernel normalises the bf16 h it stores, the CPU the float32 sum */
	test_cond(msg, same("h", hg, rh) & same("out", &out, ref));
	/* the backward at the GPU's h (same() left its bf16 values in hg->f) */
	residual_rmsnorm_backward_cpu(ref, dout.f, dres.f, hg->f, &W, n, C, 1e-6f);
	residual_rmsnorm_backward_cuda(dhg->d, dout.d, dres.d, hg->d, rstd, w.d, n, C);
	snprintf(msg, sizeof msg, "residual_rmsnorm_backward n=%d C=%d%s", n, C, inplace ? " in place" : "");
	test_cond(msg, same("dh", dhg, ref));
	buf_free(&x), buf_free(&a), buf_free(&w), buf_free(&h), buf_free(&out), buf_free(&dout), buf_free(&dres);
	buf_free(&dh);
	free(rh), free(ref);
	gpu_free(rstd);
}

/* the largest error of a device lse (B, H, T) against each query's
 * log-sum-exp of its scaled scores under the window W, in double */
static double lse_error(const float *d_lse, const Buf *q, const Buf *k, int B, int T, int H, int G, int D, int W)
{
	float *lse = (float *)mallocCheck((size_t)B * H * T * 4);
	double *sc = (double *)mallocCheck((size_t)T * sizeof(double));
	gpu_download(lse, d_lse, (size_t)B * H * T * 4);
	double maxerr = 0;
	for (int b = 0; b < B; b++)
		for (int h = 0; h < H; h++)
			for (int t = 0; t < T; t++) {
				const float *qt = q->f + (((size_t)b * T + t) * H + h) * D;
				double mx = -1e300, z = 0;
				int s0 = W > 0 && t - W + 1 > 0 ? t - W + 1 : 0;
				for (int s = s0; s <= t; s++) {
					const float *ks = k->f + (((size_t)b * T + s) * G + h / (H / G)) * D;
					double d = 0;
					for (int i = 0; i < D; i++)
						d += (double)qt[i] * ks[i];
					sc[s] = d / sqrt((double)D);
					mx = sc[s] > mx ? sc[s] : mx;
				}
				for (int s = s0; s <= t; s++)
					z += exp(sc[s] - mx);
				double e = fabs(mx + log(z) - lse[((size_t)b * H + h) * T + t]);
				maxerr = e > maxerr ? e : maxerr;
			}
	free(lse), free(sc);
	return maxerr;
}

static void test_attention(int B, int T, int H, int G, int D, int W)
{
	size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * G * D;
	Buf q = buf_rand(nq, 2), k = buf_rand(nk, 2), v = buf_rand(nk, 1), out = buf_empty(nq);
	float *ref = (float *)mallocCheck(nq * 4), *d_lse = (float *)gpu_alloc((size_t)B * H * T * 4);
	attention_forward_cpu(ref, q.f, k.f, v.f, B, T, H, G, D, W);
	attention_forward_cuda(out.d, d_lse, q.d, k.d, v.d, B, T, H, G, D, W);
	char msg[128];
	const char *impl = getenv("DASH_ATTENTION_MMA") ? "mma.sync" : "default";
	snprintf(msg, sizeof msg, "attention_forward (%s) B=%d T=%d H=%d G=%d D=%d window=%d", impl, B, T, H, G, D, W);
	/* the kernel rounds the probabilities to bf16 before P V, as flash
	 * attention does: a few 1e-3 of the output's scale, not of each value */
	int ok = same_tol("out", &out, ref, 5e-3, 1e-2);
	double maxerr = lse_error(d_lse, &q, &k, B, T, H, G, D, W);
	printf("  lse max error %.2e\n", maxerr);
	test_cond(msg, ok && maxerr < 2e-2);

	/* the backward, from the GPU forward's out and lse */
	Buf dout = buf_rand(nq, 1), dq = buf_empty(nq), dk = buf_empty(nk), dv = buf_empty(nk);
	float *work = (float *)gpu_alloc(attention_backward_work(B, T, H, D) * sizeof(float));
	float *rdq = (float *)mallocCheck(nq * 4), *rdk = (float *)mallocCheck(nk * 4), *rdv = (float *)mallocCheck(nk * 4);
	attention_backward_cpu(rdq, rdk, rdv, dout.f, q.f, k.f, v.f, B, T, H, G, D, W);
	attention_backward_cuda(dq.d, dk.d, dv.d, dout.d, out.d, d_lse, q.d, k.d, v.d, B, T, H, G, D, W, work);
	snprintf(msg, sizeof msg, "attention_backward B=%d T=%d H=%d G=%d D=%d window=%d", B, T, H, G, D, W);
	/* P and dS are bf16 in the products, as in flash attention */
	test_cond(msg, same_tol("dq", &dq, rdq, 1e-2, 2e-2) & same_tol("dk", &dk, rdk, 1e-2, 2e-2) &
	               same_tol("dv", &dv, rdv, 1e-2, 2e-2));
	buf_free(&dout), buf_free(&dq), buf_free(&dk), buf_free(&dv);
	free(rdq), free(rdk), free(rdv);
	gpu_free(work);
	buf_free(&q), buf_free(&k), buf_free(&v), buf_free(&out);
	free(ref);
	gpu_free(d_lse);
}

/* attention_forward2_cuda: the full causal attention and the window W's of
 * one q, k, v in one call, each against attention_forward_cpu, at the
 * tolerances of test_attention */
static void test_attention_fwd2(int B, int T, int H, int G, int D, int W)
{
	size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * G * D, nl = (size_t)B * H * T;
	Buf q = buf_rand(nq, 2), k = buf_rand(nk, 2), v = buf_rand(nk, 1), o1 = buf_empty(nq), o2 = buf_empty(nq);
	float *r1 = (float *)mallocCheck(nq * 4), *r2 = (float *)mallocCheck(nq * 4);
	float *l1 = (float *)gpu_alloc(nl * 4), *l2 = (float *)gpu_alloc(nl * 4);
	attention_forward_cpu(r1, q.f, k.f, v.f, B, T, H, G, D, 0);
	attention_forward_cpu(r2, q.f, k.f, v.f, B, T, H, G, D, W);
	attention_forward2_cuda(o1.d, l1, o2.d, l2, q.d, k.d, v.d, B, T, H, G, D, W);
	int ok = same_tol("out1", &o1, r1, 5e-3, 1e-2) & same_tol("out2", &o2, r2, 5e-3, 1e-2);
	double e1 = lse_error(l1, &q, &k, B, T, H, G, D, 0), e2 = lse_error(l2, &q, &k, B, T, H, G, D, W);
	printf("  lse1 max error %.2e, lse2 %.2e\n", e1, e2);
	char msg[128];
	snprintf(msg, sizeof msg, "attention_forward2 (%s) B=%d T=%d H=%d G=%d D=%d: full + window %d",
	         getenv("DASH_ATTENTION_MMA") ? "mma.sync" : "default", B, T, H, G, D, W);
	test_cond(msg, ok && e1 < 2e-2 && e2 < 2e-2);
	/* the window's output not asked for: out1 and lse1 the same bits */
	bf16_t *h1 = (bf16_t *)mallocCheck(nq * 2), *h3 = (bf16_t *)mallocCheck(nq * 2);
	float *hl1 = host_f32(l1, nl);
	gpu_download(h1, o1.d, nq * 2);
	attention_forward2_cuda(o1.d, l1, NULL, NULL, q.d, k.d, v.d, B, T, H, G, D, W);
	gpu_download(h3, o1.d, nq * 2);
	float *hl3 = host_f32(l1, nl);
	snprintf(msg, sizeof msg, "attention_forward2 (%s) B=%d T=%d H=%d G=%d D=%d window %d: no out2, out1 the same",
	         getenv("DASH_ATTENTION_MMA") ? "mma.sync" : "default", B, T, H, G, D, W);
	test_cond(msg, !memcmp(h1, h3, nq * 2) && !memcmp(hl1, hl3, nl * 4));
	free(h1), free(h3), free(hl1), free(hl3);
	buf_free(&q), buf_free(&k), buf_free(&v), buf_free(&o1), buf_free(&o2);
	free(r1), free(r2);
	gpu_free(l1), gpu_free(l2);
}

/* attention_backward2_cuda: w1 times the full causal attention's gradients
 * plus w2 times those of the window W's (a supernet's fa and swa of one q,
 * k, v), each from its GPU forward, against the CPU's backwards so summed;
 * w1 0: the second alone. Its dots <dout, out1> and <dout, out2> (also at
 * weight 0) against double sums over the same bf16 values, and
 * attention_dots_cuda's the same bits. */
static void test_attention2(int B, int T, int H, int G, int D, int W, float w1, float w2)
{
	size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * G * D, nl = (size_t)B * H * T;
	Buf q = buf_rand(nq, 2), k = buf_rand(nk, 2), v = buf_rand(nk, 1), o1 = buf_empty(nq), o2 = buf_empty(nq);
	Buf dout = buf_rand(nq, 1), dq = buf_empty(nq), dk = buf_empty(nk), dv = buf_empty(nk);
	float *l1 = (float *)gpu_alloc(nl * 4), *l2 = (float *)gpu_alloc(nl * 4);
	float *work = (float *)gpu_alloc(attention_backward_work(B, T, H, D) * sizeof(float));
	float *r[2][3];
	for (int i = 0; i < 2; i++)
		for (int j = 0; j < 3; j++)
			r[i][j] = (float *)mallocCheck((j ? nk : nq) * 4);
	attention_forward_cuda(o1.d, l1, q.d, k.d, v.d, B, T, H, G, D, 0);
	attention_forward_cuda(o2.d, l2, q.d, k.d, v.d, B, T, H, G, D, W);
	attention_backward_cpu(r[0][0], r[0][1], r[0][2], dout.f, q.f, k.f, v.f, B, T, H, G, D, 0);
	attention_backward_cpu(r[1][0], r[1][1], r[1][2], dout.f, q.f, k.f, v.f, B, T, H, G, D, W);
	for (int j = 0; j < 3; j++)
		for (size_t i = 0; i < (j ? nk : nq); i++)
			r[0][j][i] = w1 * r[0][j][i] + w2 * r[1][j][i];
	double *dots = (double *)gpu_alloc(4 * sizeof(double)), got[4];
	gpu_zero(dots, 4 * sizeof(double));
	attention_backward2_cuda(dq.d, dk.d, dv.d, dout.d, w1, w1 != 0 ? o1.d : NULL, w1 != 0 ? l1 : NULL, 0, w2, o2.d,
	                         l2, W, q.d, k.d, v.d, B, T, H, G, D, work, NULL, NULL);
	char msg[256];
	snprintf(msg, sizeof msg, "attention_backward2 B=%d T=%d H=%d G=%d D=%d: %g full + %g window %d", B, T, H, G,
	         D, w1, w2, W);
	test_cond(msg, same_tol("dq", &dq, r[0][0], 1e-2, 2e-2) & same_tol("dk", &dk, r[0][1], 1e-2, 2e-2) &
	               same_tol("dv", &dv, r[0][2], 1e-2, 2e-2));
	/* the dots, through the backward and alone */
	attention_backward2_cuda(dq.d, dk.d, dv.d, dout.d, w1, o1.d, l1, 0, w2, o2.d, l2, W, q.d, k.d, v.d, B, T, H, G,
	                         D, work, dots, dots + 1);
	attention_dots_cuda(dots + 2, dots + 3, dout.d, o1.d, o2.d, B, T, H, D, work);
	gpu_download(got, dots, sizeof got);
	gpu_download(o1.h, o1.d, nq * 2), gpu_download(o2.h, o2.d, nq * 2);
	double ref[2] = {0, 0}, mag[2] = {0, 0};
	for (size_t i = 0; i < nq; i++) {
		double d = bf16_to_f32(dout.h[i]), a = d * bf16_to_f32(o1.h[i]), b = d * bf16_to_f32(o2.h[i]);
		ref[0] += a, ref[1] += b, mag[0] += fabs(a), mag[1] += fabs(b);
	}
	double e = fmax(fabs(got[0] - ref[0]) / mag[0], fabs(got[1] - ref[1]) / mag[1]);
	snprintf(msg, sizeof msg, "attention_backward2 B=%d T=%d H=%d G=%d D=%d, %g and %g: <dout, out1>, <dout, out2> "
	         "within %.1e of their scale, attention_dots_cuda the same bits", B, T, H, G, D, w1, w2, e);
	test_cond(msg, e < 1e-6 && !memcmp(got, got + 2, 2 * sizeof(double)));
	gpu_free(dots);
	for (int i = 0; i < 2; i++)
		for (int j = 0; j < 3; j++)
			free(r[i][j]);
	buf_free(&q), buf_free(&k), buf_free(&v), buf_free(&o1), buf_free(&o2);
	buf_free(&dout), buf_free(&dq), buf_free(&dk), buf_free(&dv);
	gpu_free(l1), gpu_free(l2), gpu_free(work);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	test_seed(0x853c49e6748fea9bULL);
	if (cuda_device_count() == 0) {
		printf("SKIP: no GPU\n");
		return 0;
	}
	char name[128];
	cuda_device_name(0, name, sizeof name);
	printf("# %s\n", name);
	test_matmul(1, 64, 32, 0);
	test_matmul(37, 200, 77, 1);
	test_matmul(300, 2048, 256, 1);
	test_rmsnorm(1, 64);
	test_rmsnorm(37, 896);
	test_rmsnorm(129, 2048);
	test_rmsnorm(5, 100); /* C not a multiple of 8: one value at a time */
	test_matmul_residual(1, 64, 32, 0);
	test_matmul_residual(37, 200, 77, 1);
	test_matmul_residual(300, 2048, 256, 0);
	test_matmul_residual(129, 1100, 2048, 1);
	test_embedding(1, 100, 64);
	test_embedding(77, 5000, 896);
	test_rope(1, 1, 2, 64, 0);
	test_rope(2, 13, 3, 128, 5);
	test_rope(3, 100, 16, 128, 0);
	test_swiglu_residual(1);
	test_swiglu_residual(100003);
	test_qkv_rope(1, 1, 2, 1, 64, 0, 0);
	test_qkv_rope(2, 13, 4, 2, 128, 5, 1);
	test_qkv_rope(3, 100, 16, 2, 128, 0, 1);
	test_qkv_rope(2, 5, 3, 1, 12, 3, 1); /* D/2 not a multiple of 8: a thread per pair */
	test_swiglu_packed(1, 8);
	test_swiglu_packed(37, 1000);
	test_swiglu_packed(5, 77); /* F not a multiple of 8: one value at a time */
	test_residual_rmsnorm(1, 64, 0);
	test_residual_rmsnorm(37, 896, 0);
	test_residual_rmsnorm(37, 896, 1);
	test_residual_rmsnorm(129, 2048, 0);
	test_residual_rmsnorm(5, 100, 1); /* C not a multiple of 8: one value at a time */
	/* the default attention forward (wgmma on Hopper), then the portable
	 * mma.sync one */
	for (int impl = 0; impl < 2; impl++) {
		if (impl)
			setenv("DASH_ATTENTION_MMA", "1", 1);
		test_attention(1, 1, 2, 1, 64, 0);
		test_attention(2, 77, 4, 2, 128, 0);
		test_attention(1, 300, 16, 2, 128, 0);
		test_attention(2, 200, 4, 1, 64, 50);
		test_attention(1, 100, 2, 2, 128, 500);
		test_attention(1, 129, 2, 1, 64, 1);
		test_attention(1, 600, 8, 2, 128, 200); /* a window across several tiles of both kernels */
		test_attention(3, 257, 4, 4, 64, 0);    /* one past two tiles; as many kv heads as heads */
		test_attention(1, 384, 4, 2, 128, 0);   /* whole tiles of 128 */
		test_attention(2, 1000, 4, 2, 64, 300); /* a window over many tiles, two sequences */
		test_attention2(1, 600, 8, 2, 128, 200, 0.6f, 0.3f);
		test_attention2(2, 300, 4, 2, 64, 100, 0.f, 1.5f);
		/* both weighed (on a Hopper one pass for both): windows of whole
		 * tiles, of one key, past T */
		test_attention2(2, 300, 4, 2, 64, 100, 0.7f, 0.4f);
		test_attention2(1, 1000, 4, 2, 128, 256, 0.5f, 0.5f);
		test_attention2(1, 129, 2, 1, 64, 1, 0.3f, 0.9f);
		test_attention2(1, 200, 4, 2, 128, 5000, 0.2f, 0.8f);
		/* windows of whole tiles, across a tile's edge, inside one tile,
		 * past T, of one key; the last query tile part-filled */
		test_attention_fwd2(1, 1000, 8, 2, 128, 256);
		test_attention_fwd2(2, 700, 4, 2, 64, 256);
		test_attention_fwd2(1, 1000, 8, 2, 128, 200);
		test_attention_fwd2(2, 601, 4, 1, 64, 200);
		test_attention_fwd2(1, 777, 4, 2, 128, 100);
		test_attention_fwd2(1, 300, 4, 2, 64, 100);
		test_attention_fwd2(1, 300, 4, 2, 128, 300);
		test_attention_fwd2(2, 200, 4, 2, 64, 5000);
		test_attention_fwd2(1, 500, 4, 2, 128, 1);
		test_attention_fwd2(1, 129, 2, 1, 64, 1);
		test_attention_fwd2(1, 1, 2, 1, 128, 1);
	}
	unsetenv("DASH_ATTENTION_MMA");
	return test_report();
}
