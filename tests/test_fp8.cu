/* test_fp8 (GPU): kernels/fp8.cu against lib/fp8.c: the rows' (contiguous
 * and ldx apart) and the columns' codes and scales byte for byte, SwiGLU's
 * backward and forward into codes, the norms (forward and backward), RoPE's
 * backward (also from the attention backward's float32 gradients) and the
 * attentions' mixture into codes
 * (the unfused kernels' codes; the CPU's within one code where the
 * device's expf or sum of squares differs), and cuBLASLt's e4m3
 * product against the CPU's from the same codes (bf16 and float32 out,
 * float32 accumulating; within 3e-4 of the largest value, see below), and
 * the forward's product (--forward fp8) against matmul_forward_fp8_cpu, into
 * bf16 and (--forward fp8-all's logits) float32. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_test.h"
extern "C" {
#include "fp8.h"
#include "ops_cpu.h"
}

static uint8_t *host_codes(const uint8_t *d, size_t n)
{
	uint8_t *h = (uint8_t *)mallocCheck(n);
	gpu_download(h, d, n);
	return h;
}

/* the codes and scales of the device against the CPU's: equal, or (tol)
 * at most one code apart in at most a thousandth of them */
static int same_codes(const char *name, const uint8_t *dq, const float *ds, const uint8_t *q, const float *s, int rows,
                      int k, int tol)
{
	uint8_t *hq = host_codes(dq, (size_t)rows * k);
	float *hs = host_f32(ds, rows);
	size_t off = 0, far = 0, sbad = 0;
	for (int r = 0; r < rows; r++) {
		sbad += tol ? fabsf(hs[r] - s[r]) > 1e-6f * s[r] : hs[r] != s[r];
		for (int j = 0; j < k; j++) {
			uint8_t a = hq[(size_t)r * k + j], b = q[(size_t)r * k + j];
			float va = fp8_e4m3_value(a), vb = fp8_e4m3_value(b);
			if (va == vb)
				continue;
			off++;
			far += (a ^ b) & 0x80 || abs((a & 0x7f) - (b & 0x7f)) > 1;
		}
	}
	printf("  %s: %zu of %zu codes differ (%zu by more than one step), %zu scales\n", name, off, (size_t)rows * k,
	       far, sbad);
	free(hq), free(hs);
	return sbad == 0 && far == 0 && (tol ? off * 1000 <= (size_t)rows * k : off == 0);
}

static void test_rows(int n, int k)
{
	Buf x = buf_rand((size_t)n * k, 0.01f);
	if (n > 2) { /* a zero row, and one of values near 1e-38 (448 / amax would be infinite): zeros */
		for (int j = 0; j < k; j++) {
			x.h[(size_t)k + j] = 0, x.f[(size_t)k + j] = 0;
			x.h[(size_t)2 * k + j] = f32_to_bf16(j % 3 ? 0 : 1e-38f * (1 + j % 5));
			x.f[(size_t)2 * k + j] = bf16_to_f32(x.h[(size_t)2 * k + j]);
		}
		gpu_upload(x.d, x.h, (size_t)n * k * 2);
	}
	uint8_t *q = (uint8_t *)mallocCheck((size_t)n * k), *dq = (uint8_t *)gpu_alloc((size_t)n * k);
	float *s = (float *)mallocCheck((size_t)n * 4), *ds = (float *)gpu_alloc((size_t)n * 4);
	fp8_rows_cpu(q, s, x.f, n, k);
	fp8_rows_cuda(dq, ds, x.d, n, k);
	char msg[128];
	snprintf(msg, sizeof msg, "fp8_rows n=%d k=%d: the CPU's codes and scales", n, k);
	int tiny = 1;
	for (int j = 0; n > 2 && j < k; j++)
		tiny &= q[(size_t)2 * k + j] == 0 && s[2] == 1;
	test_cond(msg, same_codes(msg, dq, ds, q, s, n, k, 0) && tiny);
	/* the rows 2k + 8 values apart (as the vocabulary's dz): the same codes */
	int64_t ld = 2 * (int64_t)k + 8;
	bf16_t *hw = (bf16_t *)callocCheck((size_t)n * ld, 2), *wide = (bf16_t *)gpu_alloc((size_t)n * ld * 2);
	for (int r = 0; r < n; r++)
		memcpy(hw + r * ld, x.h + (size_t)r * k, (size_t)k * 2);
	gpu_upload(wide, hw, (size_t)n * ld * 2);
	fp8_rows_ld_cuda(dq, ds, wide, ld, n, k);
	snprintf(msg, sizeof msg, "fp8_rows_ld n=%d k=%d ldx=%lld: the CPU's codes and scales", n, k, (long long)ld);
	test_cond(msg, same_codes(msg, dq, ds, q, s, n, k, 0));
	free(hw), gpu_free(wide);
	free(q), free(s), gpu_free(dq), gpu_free(ds), buf_free(&x);
}

static void test_cols(int OC, int IC)
{
	Buf w = buf_rand((size_t)OC * IC, 0.05f);
	uint8_t *q = (uint8_t *)mallocCheck((size_t)OC * IC), *dq = (uint8_t *)gpu_alloc((size_t)OC * IC);
	float *s = (float *)mallocCheck((size_t)IC * 4), *ds = (float *)gpu_alloc((size_t)IC * 4);
	fp8_cols_t_cpu(q, s, w.f, OC, IC);
	fp8_cols_t_cuda(dq, ds, w.d, OC, IC);
	char msg[128];
	snprintf(msg, sizeof msg, "fp8_cols_t OC=%d IC=%d: the CPU's codes and scales", OC, IC);
	test_cond(msg, same_codes(msg, dq, ds, q, s, IC, OC, 0));
	free(q), free(s), gpu_free(dq), gpu_free(ds), buf_free(&w);
}

/* the fused kernel against the two it replaces on the device (the same
 * codes), and against the CPU's dgu rounded to bf16 (within one code where
 * the device's expf differs) */
static void test_swiglu(int n, int F)
{
	Buf gu = buf_rand((size_t)n * 2 * F, 3.0f), d = buf_rand((size_t)n * F, 1e-3f);
	size_t nq = (size_t)n * 2 * F;
	float *dgu = (float *)mallocCheck(nq * 4), *s = (float *)mallocCheck((size_t)n * 4);
	uint8_t *q = (uint8_t *)mallocCheck(nq), *dq = (uint8_t *)gpu_alloc(nq), *dq2 = (uint8_t *)gpu_alloc(nq);
	float *ds = (float *)gpu_alloc((size_t)n * 4), *ds2 = (float *)gpu_alloc((size_t)n * 4);
	bf16_t *dgu16 = (bf16_t *)gpu_alloc(nq * 2);
	swiglu_packed_backward_cpu(dgu, d.f, gu.f, n, F);
	for (size_t i = 0; i < nq; i++)
		dgu[i] = bf16_to_f32(f32_to_bf16(dgu[i]));
	fp8_rows_cpu(q, s, dgu, n, 2 * F);
	int ran = swiglu_packed_backward_fp8_cuda(dq, ds, d.d, gu.d, n, F);
	swiglu_packed_backward_cuda(dgu16, d.d, gu.d, n, F);
	fp8_rows_cuda(dq2, ds2, dgu16, n, 2 * F);
	uint8_t *h2 = host_codes(dq2, nq);
	float *hs2 = host_f32(ds2, n);
	char msg[128];
	snprintf(msg, sizeof msg, "swiglu_packed_backward_fp8 n=%d F=%d: swiglu_packed_backward + fp8_rows's codes", n,
	         F);
	test_cond(msg, ran && same_codes(msg, dq, ds, h2, hs2, n, 2 * F, 0));
	snprintf(msg, sizeof msg, "swiglu_packed_backward_fp8 n=%d F=%d: the CPU's codes within one step", n, F);
	test_cond(msg, ran && same_codes(msg, dq, ds, q, s, n, 2 * F, 1));
	free(dgu), free(s), free(q), free(h2), free(hs2);
	gpu_free(dq), gpu_free(dq2), gpu_free(ds), gpu_free(ds2), gpu_free(dgu16), buf_free(&gu), buf_free(&d);
}

/* SwiGLU's forward into codes against swiglu_packed_forward_cuda +
 * fp8_rows_cuda (the same codes) and the CPU's act rounded to bf16 (within
 * one code, expf) */
static void test_swiglu_fwd(int n, int F)
{
	Buf gu = buf_rand((size_t)n * 2 * F, 3.0f);
	size_t nq = (size_t)n * F;
	float *act = (float *)mallocCheck(nq * 4), *s = (float *)mallocCheck((size_t)n * 4);
	uint8_t *q = (uint8_t *)mallocCheck(nq), *dq = (uint8_t *)gpu_alloc(nq), *dq2 = (uint8_t *)gpu_alloc(nq);
	float *ds = (float *)gpu_alloc((size_t)n * 4), *ds2 = (float *)gpu_alloc((size_t)n * 4);
	bf16_t *act16 = (bf16_t *)gpu_alloc(nq * 2);
	swiglu_packed_forward_cpu(act, gu.f, n, F);
	for (size_t i = 0; i < nq; i++)
		act[i] = bf16_to_f32(f32_to_bf16(act[i]));
	fp8_rows_cpu(q, s, act, n, F);
	int ran = swiglu_packed_forward_fp8_cuda(dq, ds, gu.d, n, F);
	swiglu_packed_forward_cuda(act16, gu.d, n, F);
	fp8_rows_cuda(dq2, ds2, act16, n, F);
	uint8_t *h2 = host_codes(dq2, nq);
	float *hs2 = host_f32(ds2, n);
	char msg[128];
	snprintf(msg, sizeof msg, "swiglu_packed_forward_fp8 n=%d F=%d: swiglu_packed_forward + fp8_rows's codes", n,
	         F);
	test_cond(msg, ran && same_codes(msg, dq, ds, h2, hs2, n, F, 0));
	snprintf(msg, sizeof msg, "swiglu_packed_forward_fp8 n=%d F=%d: the CPU's codes within one step", n, F);
	test_cond(msg, ran && same_codes(msg, dq, ds, q, s, n, F, 1));
	free(act), free(s), free(q), free(h2), free(hs2);
	gpu_free(dq), gpu_free(dq2), gpu_free(ds), gpu_free(ds2), gpu_free(act16), buf_free(&gu);
}

static int same_bytes(const char *name, const void *d1, const void *d2, size_t bytes)
{
	uint8_t *a = (uint8_t *)mallocCheck(bytes), *b = (uint8_t *)mallocCheck(bytes);
	gpu_download(a, d1, bytes), gpu_download(b, d2, bytes);
	int same = memcmp(a, b, bytes) == 0;
	if (!same)
		printf("  %s: not the same bytes\n", name);
	free(a), free(b);
	return same;
}

/* the norms into codes (res: h = x + a first): out, rstd (and h) the
 * plain kernel's bytes, the codes fp8_rows_cuda's of that out, out NULL
 * the same codes; against the CPU's norm rounded to bf16 within one code
 * (its sum of squares in another order) */
static void test_norm(int n, int C, int res)
{
	Buf x = buf_rand((size_t)n * C, 2.0f), a = buf_rand((size_t)n * C, 1.0f), w = buf_rand(C, 1.5f);
	size_t nc = (size_t)n * C;
	if (n > 2) { /* a zero row: zero codes, scale 1 */
		for (size_t j = 0; j < (size_t)C; j++)
			x.h[C + j] = x.f[C + j] = a.h[C + j] = a.f[C + j] = 0;
		gpu_upload(x.d, x.h, nc * 2), gpu_upload(a.d, a.h, nc * 2);
	}
	float *u = (float *)mallocCheck(nc * 4), *h = (float *)mallocCheck(nc * 4), *s = (float *)mallocCheck(n * 4);
	uint8_t *q = (uint8_t *)mallocCheck(nc), *dq = (uint8_t *)gpu_alloc(nc), *dq2 = (uint8_t *)gpu_alloc(nc),
	        *dq3 = (uint8_t *)gpu_alloc(nc);
	float *ds = (float *)gpu_alloc(n * 4), *ds2 = (float *)gpu_alloc(n * 4), *ds3 = (float *)gpu_alloc(n * 4);
	float *r1 = (float *)gpu_alloc(n * 4), *r2 = (float *)gpu_alloc(n * 4), *r3 = (float *)gpu_alloc(n * 4);
	bf16_t *u1 = (bf16_t *)gpu_alloc(nc * 2), *u2 = (bf16_t *)gpu_alloc(nc * 2);
	bf16_t *h1 = (bf16_t *)gpu_alloc(nc * 2), *h2 = (bf16_t *)gpu_alloc(nc * 2), *h3 = (bf16_t *)gpu_alloc(nc * 2);
	Tensor W = {DT_F32, 1, {C}, w.f};
	for (size_t i = 0; i < nc; i++) /* h as the device keeps it, in bf16 */
		h[i] = res ? bf16_to_f32(f32_to_bf16(x.f[i] + a.f[i])) : x.f[i];
	rmsnorm_forward_cpu(u, h, &W, n, C, 1e-6f);
	for (size_t i = 0; i < nc; i++)
		u[i] = bf16_to_f32(f32_to_bf16(u[i]));
	fp8_rows_cpu(q, s, u, n, C);
	int ran;
	if (res) {
		residual_rmsnorm_forward_cuda(h1, u1, r1, x.d, a.d, w.d, n, C, 1e-6f);
		ran = residual_rmsnorm_forward_fp8_cuda(h2, u2, r2, dq2, ds2, x.d, a.d, w.d, n, C, 1e-6f) &&
		      residual_rmsnorm_forward_fp8_cuda(h3, NULL, r3, dq3, ds3, x.d, a.d, w.d, n, C, 1e-6f);
	} else {
		rmsnorm_forward_cuda(u1, r1, x.d, w.d, n, C, 1e-6f);
		ran = rmsnorm_forward_fp8_cuda(u2, r2, dq2, ds2, x.d, w.d, n, C, 1e-6f) &&
		      rmsnorm_forward_fp8_cuda(NULL, r3, dq3, ds3, x.d, w.d, n, C, 1e-6f);
	}
	fp8_rows_cuda(dq, ds, u1, n, C);
	uint8_t *hq = host_codes(dq, nc);
	float *hs = host_f32(ds, n);
	const char *name = res ? "residual_rmsnorm_forward_fp8" : "rmsnorm_forward_fp8";
	char msg[128];
	snprintf(msg, sizeof msg, "%s n=%d C=%d: the plain kernel's out%s and rstd, fp8_rows's codes", name, n, C,
	         res ? ", h" : "");
	int same = ran && same_bytes(msg, u1, u2, nc * 2) && same_bytes(msg, r1, r2, n * 4) &&
	           same_bytes(msg, r1, r3, n * 4) &&
	           (!res || (same_bytes(msg, h1, h2, nc * 2) && same_bytes(msg, h1, h3, nc * 2)));
	test_cond(msg,
	          same && same_codes(msg, dq2, ds2, hq, hs, n, C, 0) && same_codes(msg, dq3, ds3, hq, hs, n, C, 0));
	snprintf(msg, sizeof msg, "%s n=%d C=%d: the CPU's codes within one step", name, n, C);
	test_cond(msg, ran && same_codes(msg, dq2, ds2, q, s, n, C, 1) && (n <= 2 || s[1] == 1));
	free(u), free(h), free(s), free(q), free(hq), free(hs);
	gpu_free(dq), gpu_free(dq2), gpu_free(dq3), gpu_free(ds), gpu_free(ds2), gpu_free(ds3);
	gpu_free(r1), gpu_free(r2), gpu_free(r3), gpu_free(u1), gpu_free(u2), gpu_free(h1), gpu_free(h2), gpu_free(h3);
	buf_free(&x), buf_free(&a), buf_free(&w);
}

/* the norm's backward into codes (dout float32 or bf16; in place: dh is
 * dres): dh the plain kernel's bytes, its codes fp8_rows_cuda's of that dh;
 * against the CPU's dh rounded to bf16 within one code (rstd recomputed) */
static void test_norm_back(int n, int C, int f32, int inplace)
{
	const float eps = 1e-6f;
	Buf h = buf_rand((size_t)n * C, 2.0f), d = buf_rand((size_t)n * C, 0.5f), r = buf_rand((size_t)n * C, 0.3f),
	    w = buf_rand(C, 1.5f);
	size_t nc = (size_t)n * C;
	float *rs = (float *)mallocCheck(n * 4), *dh = (float *)mallocCheck(nc * 4), *s = (float *)mallocCheck(n * 4);
	for (int t = 0; t < n; t++) {
		double ss = 0;
		for (int j = 0; j < C; j++)
			ss += (double)h.f[(size_t)t * C + j] * h.f[(size_t)t * C + j];
		rs[t] = (float)(1 / sqrt(ss / C + eps));
	}
	float *drs = dev_f32(rs, n), *df = dev_f32(d.f, nc), *ds = (float *)gpu_alloc(n * 4),
	      *ds2 = (float *)gpu_alloc(n * 4);
	const void *dout = f32 ? (const void *)df : (const void *)d.d;
	uint8_t *q = (uint8_t *)mallocCheck(nc), *dq = (uint8_t *)gpu_alloc(nc), *dq2 = (uint8_t *)gpu_alloc(nc);
	bf16_t *dh1 = (bf16_t *)gpu_alloc(nc * 2), *dh2 = (bf16_t *)gpu_alloc(nc * 2);
	Tensor W = {DT_F32, 1, {C}, w.f};
	residual_rmsnorm_backward_cpu(dh, d.f, r.f, h.f, &W, n, C, eps);
	for (size_t i = 0; i < nc; i++)
		dh[i] = bf16_to_f32(f32_to_bf16(dh[i]));
	fp8_rows_cpu(q, s, dh, n, C);
	if (f32)
		residual_rmsnorm_backward_f32_cuda(dh1, df, r.d, h.d, drs, w.d, n, C);
	else
		residual_rmsnorm_backward_cuda(dh1, d.d, r.d, h.d, drs, w.d, n, C);
	fp8_rows_cuda(dq, ds, dh1, n, C);
	if (inplace)
		gpu_upload(dh2, r.h, nc * 2);
	int ran =
	        residual_rmsnorm_backward_fp8_cuda(dh2, dq2, ds2, dout, f32, inplace ? dh2 : r.d, h.d, drs, w.d, n, C);
	uint8_t *hq = host_codes(dq, nc);
	float *hs = host_f32(ds, n);
	char msg[128];
	snprintf(msg, sizeof msg,
	         "residual_rmsnorm_backward_fp8 n=%d C=%d%s%s: the plain kernel's dh, fp8_rows's codes", n, C,
	         f32 ? " f32" : "", inplace ? " in place" : "");
	test_cond(msg, ran && same_bytes(msg, dh1, dh2, nc * 2) && same_codes(msg, dq2, ds2, hq, hs, n, C, 0));
	snprintf(msg, sizeof msg, "residual_rmsnorm_backward_fp8 n=%d C=%d%s: the CPU's codes within one step", n, C,
	         f32 ? " f32" : "");
	test_cond(msg, ran && same_codes(msg, dq2, ds2, q, s, n, C, 1));
	free(rs), free(dh), free(s), free(q), free(hq), free(hs);
	gpu_free(drs), gpu_free(df), gpu_free(ds), gpu_free(ds2), gpu_free(dq), gpu_free(dq2), gpu_free(dh1),
	        gpu_free(dh2);
	buf_free(&h), buf_free(&d), buf_free(&r), buf_free(&w);
}

/* RoPE's backward into codes (the dqkv rows, B*T of H*D + 2*G*D) against
 * qkv_rope_backward_cuda + fp8_rows_cuda: the same codes; a D it cannot
 * take (not a multiple of 16) declined */
/* the codes (q, s) of a fused RoPE backward that ran against those of the
 * unfused way (q2, s2), byte for byte; declined (ran 0) where D % 16 */
static void rope_codes_same(const char *what, int ran, const uint8_t *q, const float *s, const uint8_t *q2,
                            const float *s2, int B, int T, int H, int G, int D, int pos0)
{
	int n = B * T, W = (H + 2 * G) * D;
	char msg[160];
	if (D % 16) {
		snprintf(msg, sizeof msg, "%s D=%d: declined", what, D);
		test_cond(msg, !ran);
		return;
	}
	uint8_t *h2 = host_codes(q2, (size_t)n * W);
	float *hs2 = host_f32(s2, n);
	snprintf(msg, sizeof msg, "%s B=%d T=%d H=%d G=%d D=%d pos0=%d: the unfused kernels' codes", what, B, T, H, G,
	         D, pos0);
	test_cond(msg, ran && same_codes(msg, q, s, h2, hs2, n, W, 0));
	free(h2), free(hs2);
}

static void test_rope_back(int B, int T, int H, int G, int D, int pos0)
{
	int n = B * T, W = (H + 2 * G) * D;
	Buf dq = buf_rand((size_t)n * H * D, 1.0f), dk = buf_rand((size_t)n * G * D, 3.0f),
	    dv = buf_rand((size_t)n * G * D, 0.5f);
	float *f = (float *)mallocCheck((size_t)D / 2 * 4), *d_f = (float *)gpu_alloc((size_t)D / 2 * 4);
	for (int p = 0; p < D / 2; p++)
		f[p] = powf(1e6f, -2.0f * p / D);
	gpu_upload(d_f, f, (size_t)D / 2 * 4);
	size_t nw = (size_t)n * W;
	uint8_t *q = (uint8_t *)gpu_alloc(nw), *q2 = (uint8_t *)gpu_alloc(nw);
	float *s = (float *)gpu_alloc((size_t)n * 4), *s2 = (float *)gpu_alloc((size_t)n * 4);
	bf16_t *dqkv = (bf16_t *)gpu_alloc(nw * 2);
	qkv_rope_backward_cuda(dqkv, dq.d, dk.d, dv.d, d_f, B, T, pos0, H, G, D);
	fp8_rows_cuda(q2, s2, dqkv, n, W);
	int ran = qkv_rope_backward_fp8_cuda(q, s, dq.d, dk.d, dv.d, d_f, B, T, pos0, H, G, D);
	rope_codes_same("qkv_rope_backward_fp8", ran, q, s, q2, s2, B, T, H, G, D, pos0);
	/* from the attention backward's float32 gradients left in its work
	 * (dq yet to be scaled): attention_convert_cuda's bf16 rows, then the
	 * kernel above's codes, byte for byte */
	size_t nq = (size_t)n * H * D, nk = (size_t)n * G * D;
	float *acc = test_rnd(nq + 2 * nk, 2.0f), *d_acc = (float *)gpu_alloc((nq + 2 * nk) * 4);
	gpu_upload(d_acc, acc, (nq + 2 * nk) * 4);
	attention_convert_cuda(dq.d, dk.d, dv.d, d_acc, B, T, H, G, D);
	qkv_rope_backward_fp8_cuda(q2, s2, dq.d, dk.d, dv.d, d_f, B, T, pos0, H, G, D);
	ran = qkv_rope_backward_fp8_acc_cuda(q, s, d_acc, attention_backward_qscale(D), d_f, B, T, pos0, H, G, D);
	rope_codes_same("qkv_rope_backward_fp8_acc", ran, q, s, q2, s2, B, T, H, G, D, pos0);
	free(f), free(acc);
	gpu_free(d_f), gpu_free(q), gpu_free(q2), gpu_free(s), gpu_free(s2), gpu_free(dqkv), gpu_free(d_acc);
	buf_free(&dq), buf_free(&dk), buf_free(&dv);
}

/* the mixture of two attentions' outputs into codes against att_mix_cuda
 * + fp8_rows_cuda (the same codes) and the CPU's mixture rounded to bf16
 * (within one code) */
static void test_att_mix(int n, int k)
{
	Buf a1 = buf_rand((size_t)n * k, 1.0f), a2 = buf_rand((size_t)n * k, 2.0f);
	size_t nk = (size_t)n * k;
	const float w1 = 0.3f, w2 = 0.7f;
	float *x = (float *)mallocCheck(nk * 4), *s = (float *)mallocCheck((size_t)n * 4);
	uint8_t *q = (uint8_t *)mallocCheck(nk), *dq = (uint8_t *)gpu_alloc(nk), *dq2 = (uint8_t *)gpu_alloc(nk);
	float *ds = (float *)gpu_alloc((size_t)n * 4), *ds2 = (float *)gpu_alloc((size_t)n * 4);
	bf16_t *mix = (bf16_t *)gpu_alloc(nk * 2);
	for (size_t i = 0; i < nk; i++)
		x[i] = bf16_to_f32(f32_to_bf16(w1 * a1.f[i] + w2 * a2.f[i]));
	fp8_rows_cpu(q, s, x, n, k);
	att_mix_cuda(mix, w1, a1.d, w2, a2.d, (int64_t)nk);
	fp8_rows_cuda(dq2, ds2, mix, n, k);
	int ran = att_mix_fp8_cuda(dq, ds, w1, a1.d, w2, a2.d, n, k);
	uint8_t *h2 = host_codes(dq2, nk);
	float *hs2 = host_f32(ds2, n);
	char msg[128];
	snprintf(msg, sizeof msg, "att_mix_fp8 n=%d k=%d: att_mix + fp8_rows's codes", n, k);
	test_cond(msg, ran && same_codes(msg, dq, ds, h2, hs2, n, k, 0));
	snprintf(msg, sizeof msg, "att_mix_fp8 n=%d k=%d: the CPU's codes within one step", n, k);
	test_cond(msg, ran && same_codes(msg, dq, ds, q, s, n, k, 1));
	free(x), free(s), free(q), free(h2), free(hs2);
	gpu_free(dq), gpu_free(dq2), gpu_free(ds), gpu_free(ds2), gpu_free(mix), buf_free(&a1), buf_free(&a2);
}

/* matmul_fp8_fast's mode, and " (fast sums)" while it is 1, for the
 * products' messages */
static int fast;
static const char *accum = "";

/* tol, or where a sum of k products stays in the tensor cores' accumulator
 * (matmul_fp8_fast 1, k <= 65536: kernels/matmul.cu) at least 4e-3:
 * that accumulator keeps fewer bits than float32 (H200: float32 products at
 * k 2048 off by 1.1e-3 of their value, 14 times the split sums' largest
 * difference; at k 22016 three times) */
static double fast_tol(int k, double tol) { return fast && k <= 65536 ? fmax(tol, 4e-3) : tol; }

static void test_product(int n, int IC, int OC, int f32, int acc)
{
	Buf dout = buf_rand((size_t)n * OC, 1e-3f), w = buf_rand((size_t)OC * IC, 0.05f);
	uint8_t *dq = (uint8_t *)gpu_alloc((size_t)n * OC), *wq = (uint8_t *)gpu_alloc((size_t)IC * OC);
	float *sd = (float *)gpu_alloc((size_t)n * 4), *sw = (float *)gpu_alloc((size_t)IC * 4);
	fp8_rows_cuda(dq, sd, dout.d, n, OC);
	fp8_cols_t_cuda(wq, sw, w.d, OC, IC);
	uint8_t *hdq = host_codes(dq, (size_t)n * OC), *hwq = host_codes(wq, (size_t)IC * OC);
	float *hsd = host_f32(sd, n), *hsw = host_f32(sw, IC);
	size_t nx = (size_t)n * IC;
	float *ref = (float *)mallocCheck(nx * 4), *got = (float *)mallocCheck(nx * 4), *c0 = NULL;
	matmul_backward_fp8_cpu(ref, hdq, hsd, hwq, hsw, n, IC, OC);
	void *dx = gpu_alloc(nx * (f32 ? 4 : 2));
	if (acc) { /* dx starts from a float32 addend */
		c0 = (float *)mallocCheck(nx * 4);
		for (size_t i = 0; i < nx; i++)
			c0[i] = 1e-4f * test_frand(), ref[i] += c0[i];
		gpu_upload(dx, c0, nx * 4);
	}
	matmul_backward_fp8_cuda(dx, f32, acc, dq, sd, wq, sw, n, IC, OC);
	gpu_sync();
	if (f32) {
		gpu_download(got, dx, nx * 4);
	} else {
		bf16_t *h = (bf16_t *)mallocCheck(nx * 2);
		gpu_download(h, dx, nx * 2);
		for (size_t i = 0; i < nx; i++)
			got[i] = bf16_to_f32(h[i]);
		free(h);
	}
	double *r = (double *)mallocCheck(nx * sizeof(double)), m = 0;
	for (size_t i = 0; i < nx; i++)
		r[i] = ref[i], m = fmax(m, fabs(ref[i]));
	char msg[160];
	snprintf(msg, sizeof msg, "matmul_backward_fp8 n=%d IC=%d OC=%d %s%s%s: the CPU's product of the same codes", n,
	         IC, OC, f32 ? "f32" : "bf16", acc ? " +=" : "", accum);
	/* Hopper's e4m3 products add in a narrower accumulator than float32
	 * between cuBLAS's promotions: 5e-5 of max |ref| seen at K 22016 (H200);
	 * a scale applied wrongly is off by far more */
	test_cond(msg, check_tensor(msg, got, r, nx, fast_tol(OC, 3e-4) * m, fast_tol(OC, f32 ? 1e-4 : 1e-2)));
	free(hdq), free(hwq), free(hsd), free(hsw), free(ref), free(got), free(r), free(c0);
	gpu_free(dq), gpu_free(wq), gpu_free(sd), gpu_free(sw), gpu_free(dx), buf_free(&dout), buf_free(&w);
}

/* the forward's product (--forward fp8): x and w by their rows on the
 * device, out = [res +] the product, against matmul_forward_fp8_cpu of the
 * same bf16 values (whose codes the CPU makes itself: rows of bf16 values
 * code the same both ways, test_rows) and res; res apart and in place;
 * f32: into float32 without res (matmul_forward_fp8_f32_cuda: the
 * vocabulary's logits under --forward fp8-all), test_product's f32
 * tolerance (no bf16 rounding) */
static void test_forward(int n, int IC, int OC, int res, int inplace, int f32)
{
	Buf x = buf_rand((size_t)n * IC, 1.0f), w = buf_rand((size_t)OC * IC, 0.05f),
	    r = buf_rand((size_t)n * OC, 0.5f);
	uint8_t *xq = (uint8_t *)gpu_alloc((size_t)n * IC), *wq = (uint8_t *)gpu_alloc((size_t)OC * IC);
	float *sx = (float *)gpu_alloc((size_t)n * 4), *sw = (float *)gpu_alloc((size_t)OC * 4);
	size_t no = (size_t)n * OC;
	void *out = inplace ? (void *)r.d : gpu_alloc(no * (f32 ? 4 : 2));
	fp8_rows_cuda(xq, sx, x.d, n, IC);
	fp8_rows_cuda(wq, sw, w.d, OC, IC);
	if (f32)
		matmul_forward_fp8_f32_cuda((float *)out, xq, sx, wq, sw, n, IC, OC);
	else
		matmul_forward_fp8_cuda((bf16_t *)out, res ? r.d : NULL, xq, sx, wq, sw, n, IC, OC);
	float *ref = (float *)mallocCheck(no * 4);
	float *got = f32 ? host_f32((const float *)out, no) : host_bf16((const bf16_t *)out, no);
	Tensor wt = {DT_BF16, 2, {OC, IC}, w.h};
	matmul_forward_fp8_cpu(ref, x.f, &wt, NULL, n, IC, OC);
	double *rd = (double *)mallocCheck(no * sizeof(double)), m = 0, mp = 0;
	for (size_t i = 0; i < no; i++) {
		rd[i] = ref[i] + (res ? r.f[i] : 0);
		m = fmax(m, fabs(rd[i])), mp = fmax(mp, fabs(ref[i]));
	}
	char msg[160];
	snprintf(msg, sizeof msg, "matmul_forward_fp8%s n=%d IC=%d OC=%d%s%s: the CPU's e4m3 forward product%s",
	         f32 ? "_f32" : "", n, IC, OC, res ? inplace ? " + res in place" : " + res" : "", accum,
	         f32 ? " in float32" : "");
	/* with an addend, some of cuBLASLt's e4m3 kernels round the product
	 * to bf16 before adding it (seen at n 37, in place): one more
	 * rounding, 2^-9 of the product's size, where the sum cancels */
	test_cond(msg, check_tensor(msg, got, rd, no, fast_tol(IC, 3e-4) * m + (res ? mp / 256 : 0),
	                            fast_tol(IC, f32 ? 1e-4 : 1e-2)));
	free(ref), free(got), free(rd);
	if (!inplace)
		gpu_free(out);
	gpu_free(xq), gpu_free(wq), gpu_free(sx), gpu_free(sw), buf_free(&x), buf_free(&w), buf_free(&r);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	test_seed(0x9e3779b97f4a7c15ULL);
	if (cuda_device_count() == 0) {
		printf("SKIP: no GPU\n");
		return 0;
	}
	char name[128];
	cuda_device_name(0, name, sizeof name);
	printf("# %s\n", name);
	test_rows(1, 64);
	test_rows(37, 2048);
	test_rows(5, 100); /* k not a multiple of 8: a value at a time */
	test_cols(300, 70);
	test_cols(2560, 2048);
	test_swiglu(3, 64);
	test_swiglu(17, 11008);
	test_swiglu(4, 4864);  /* the default teacher's F */
	test_swiglu(5, 12288); /* 48 KB a row exactly: past the unasked-for shared memory with block_max's */
	test_swiglu(2, 20000); /* past 48 KB of shared memory a row */
	test_swiglu_fwd(3, 64);
	test_swiglu_fwd(9, 11008);
	test_swiglu_fwd(2, 30000); /* past 48 KB of shared memory a row */
	test_norm(1, 64, 0);
	test_norm(37, 2048, 0);
	test_norm(5, 2048, 1);
	test_norm(6, 136, 1); /* C not a multiple of 256: a partial turn of the warp */
	test_rope_back(2, 37, 16, 2, 128, 0); /* the Qwen2.5-3B shape */
	test_rope_back(1, 5, 4, 4, 64, 100);
	test_rope_back(1, 3, 2, 1, 24, 0);
	test_rope_back(2, 9, 40, 8, 128, 7); /* 448 items a row: two a thread */
	test_att_mix(37, 2048);
	test_att_mix(3, 136);
	test_norm_back(33, 2048, 0, 0);
	test_norm_back(33, 2048, 1, 0);
	test_norm_back(7, 136, 1, 1);
	/* the products both ways: cuBLASLt's float32 sums every few k-steps,
	 * then the tensor cores' own sums where k <= 65536 (the backward's,
	 * and the forward's under --forward fp8-fast) */
	for (fast = 0; fast < 2; fast++) {
		matmul_fp8_fast(fast);
		accum = fast ? " (fast sums)" : "";
		test_product(16, 32, 48, 0, 0);
		test_product(100, 2048, 2560, 0, 0);
		test_product(64, 1024, 2048, 1, 1);
		test_product(33, 2048, 22016, 0, 0);
		test_product(5, 64, 151936, 1, 0); /* the vocabulary's dhidden: split both ways */
		test_forward(16, 32, 48, 0, 0, 0);
		test_forward(100, 2048, 2560, 0, 0, 0);
		test_forward(64, 11008, 2048, 1, 0, 0); /* down, the residual added */
		test_forward(37, 2048, 2048, 1, 1, 0);
		test_forward(16, 32, 48, 0, 0, 1);
		test_forward(37, 512, 151936, 0, 0, 1); /* the width of the vocabulary's logits */
	}
	matmul_fp8_fast(0);
	return test_report();
}
