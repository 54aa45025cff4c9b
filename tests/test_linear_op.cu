/* test_linear_op (GPU): the gdn and gla candidate operators of
 * kernels/linear_op.cu against their CPU twins lop_forward and lop_backward
 * (lib/linear_op.c): the output a, every parameter block's gradient
 * (reported by name) and du, from random parameters (sized as
 * tests/test_grad_cpu.c's), random u and da, at GQA and plain shapes, T not
 * a multiple of the chunk, several sequences, D up to 128. Most GEMMs round
 * to TF32: within 2e-3 of each block's max. The gradients again with d_du
 * NULL must agree, and a gdn and a gla sharing one arena, each backward
 * after its own forward, give what they give with arenas of their own.
 * gdn's backward reads the recurrence's states its forward kept when the
 * sequences ran in one chunked call (all gdn shapes but B 3, T 40, which
 * runs in groups of 2 and 1): a, du and the gradients must be those of
 * DASH_GDN_RECOMPUTE=1 (the backward recomputing them) bit for bit.
 * gdn's bf16 path (gpu_lop_forward_bf16, gpu_lop_backward_bf16: bf16
 * operands in every projection) against the CPU on the same bf16 u and da:
 * a and du within HALF_TOL of their max (u, da and every weight rounded to
 * bf16, and y and the projections' gradients on their way to the GEMMs: a
 * few roundings of 2^-9 each); the backward's w scales du and accumulate
 * adds to it; new parameters through gpu_lop_params reach the bf16 copy.
 * That path's two backward products in float8 e4m3 (gpu_lop_grad_fp8)
 * against lop_backward_fp8 on the same bf16 u and da: du within FP8_TOL of
 * its max (the GPU quantises the weights and the six gradients rounded to
 * bf16, the CPU their float32 values: where the two straddle a code's
 * boundary they land a code apart, about as often as the bf16 rounding
 * is a sizeable part of a code's step, so the twins differ by the same
 * order as the codes' own noise, not by far less), and away from the bf16
 * path's du by more than twice that path's own distance from the CPU (the
 * codes were used), with and without dp's padding columns (its width a
 * multiple of 16 or not); new parameters reach the codes. Its forward's
 * two products in e4m3 too (gpu_lop_forward_fp8) against lop_forward_fp8
 * and lop_backward_fp8 with both switches: a and du within FP8_TOL, a
 * moved from the bf16 path's by more than twice that path's error, and
 * the same bits when u's and da's codes are handed in (d_uq, d_daq) and
 * when y's codes come from fp8_rows_cuda instead of the output norm
 * (DASH_FP8_UNFUSED=1).
 *
 * With DASH_BENCH=1 it also times forward + backward of one gdn and one gla
 * operator at C 2048, H 16, G 2, D 128, 1 x 4096 tokens (bench/bench.h's
 * median_ms), gdn also with DASH_GDN_RECOMPUTE=1. Runs on a GPU: make
 * test-gpu. */
#include <string.h>

#include "../bench/bench.h" // defines: median_ms

#include "gpu.h"
#include "gpu_lop.h"
extern "C" {
#include "linear_op.h"
#include "test.h"
#include "util.h"
}
#include "gpu_test.h"

#define TOL 2e-3
#define HALF_TOL 1e-2
#define FP8_TOL 2e-2

static double max_absdiff(const float *a, const float *b, size_t n)
{
	double d = 0;
	for (size_t i = 0; i < n; i++)
		d = fabs((double)a[i] - b[i]) > d ? fabs((double)a[i] - b[i]) : d;
	return d;
}

/* reports one block: max |error|, relative to the block's max |value| */
static int block_ok(const char *name, const float *got, const float *ref, size_t n, double *worst)
{
	double e = test_rel_err(got, ref, n);
	printf("  %-8s max err %.3e, relative %.3e (%zu values)\n", name, max_absdiff(got, ref, n), e, n);
	*worst = e > *worst ? e : *worst;
	return e < TOL;
}

static void check(int kind, int C, int H, int G, int D, int B, int T)
{
	LinearOp op;
	op_rand(&op, kind, C, H, G, D);
	int n = B * T;
	size_t nu = (size_t)n * C;
	float *u = test_rnd(nu, 1), *da = test_rnd(nu, 1);
	float *ra = (float *)mallocCheck(nu * 4), *rdu = (float *)mallocCheck(nu * 4);
	float *rgrad = (float *)callocCheck(op.n, 4);
	lop_forward(&op, ra, u, B, T);
	lop_backward(&op, rgrad, rdu, da, u, B, T);

	GpuLop *g = gpu_lop_new(&op, n, NULL);
	float *d_u = dev_f32(u, nu), *d_da = dev_f32(da, nu), *d_a = (float *)gpu_alloc(nu * 4);
	float *d_du = (float *)gpu_alloc(nu * 4), *d_grad = (float *)gpu_alloc(op.n * 4);
	gpu_zero(d_grad, op.n * 4);
	gpu_lop_forward(g, d_a, d_u, B, T);
	gpu_lop_backward(g, d_grad, d_du, d_da, d_u, B, T);
	float *a = (float *)mallocCheck(nu * 4), *du = (float *)mallocCheck(nu * 4);
	float *grad = (float *)mallocCheck(op.n * 4), *grad2 = (float *)mallocCheck(op.n * 4);
	gpu_download(a, d_a, nu * 4), gpu_download(du, d_du, nu * 4), gpu_download(grad, d_grad, op.n * 4);
	/* the gradients again, without du */
	gpu_zero(d_grad, op.n * 4);
	gpu_lop_backward(g, d_grad, NULL, d_da, d_u, B, T);
	gpu_download(grad2, d_grad, op.n * 4);
	/* gdn: again recomputing the recurrence's states in the backward */
	int same = 1;
	if (kind == LOP_GDN) {
		float *a3 = (float *)mallocCheck(nu * 4), *du3 = (float *)mallocCheck(nu * 4);
		float *grad3 = (float *)mallocCheck(op.n * 4);
		setenv("DASH_GDN_RECOMPUTE", "1", 1);
		gpu_zero(d_grad, op.n * 4);
		gpu_lop_forward(g, d_a, d_u, B, T);
		gpu_lop_backward(g, d_grad, d_du, d_da, d_u, B, T);
		unsetenv("DASH_GDN_RECOMPUTE");
		gpu_download(a3, d_a, nu * 4), gpu_download(du3, d_du, nu * 4), gpu_download(grad3, d_grad, op.n * 4);
		same = !memcmp(a3, a, nu * 4) && !memcmp(du3, du, nu * 4) && !memcmp(grad3, grad, op.n * 4);
		free(a3), free(du3), free(grad3);
	}

	printf("%s C=%d H=%d G=%d D=%d B=%d T=%d:\n", lop_name(kind), C, H, G, D, B, T);
	double worst = 0;
	int ok = block_ok("a", a, ra, nu, &worst);
	for (int i = 0; i < op.np; i++) {
		const LopParam *p = &op.p[i];
		ok &= block_ok(p->name, grad + p->off, rgrad + p->off, (size_t)p->rows * p->cols, &worst);
	}
	ok &= block_ok("du", du, rdu, nu, &worst);
	double e2 = test_rel_err(grad2, grad, op.n);
	char msg[192];
	snprintf(msg, sizeof msg, "gpu_lop %s C=%d H=%d G=%d D=%d B=%d T=%d: a, every gradient, du within %.0e (worst %.1e)",
	         lop_name(kind), C, H, G, D, B, T, TOL, worst);
	test_cond(msg, ok);
	snprintf(msg, sizeof msg, "gpu_lop %s C=%d H=%d G=%d D=%d B=%d T=%d: gradients without du the same (%.1e)",
	         lop_name(kind), C, H, G, D, B, T, e2);
	test_cond(msg, e2 < 1e-6);
	if (kind == LOP_GDN) {
		snprintf(msg, sizeof msg, "gpu_lop gdn C=%d H=%d G=%d D=%d B=%d T=%d: a, du, gradients as with "
		         "DASH_GDN_RECOMPUTE=1, bit for bit", C, H, G, D, B, T);
		test_cond(msg, same);
	}

	gpu_lop_free(g);
	gpu_free(d_u), gpu_free(d_da), gpu_free(d_a), gpu_free(d_du), gpu_free(d_grad);
	free(u), free(da), free(ra), free(rdu), free(rgrad), free(a), free(du), free(grad), free(grad2);
	lop_free(&op);
}

/* gdn's bf16 path against the CPU (the file's header says what is checked) */
static void check_half(int C, int H, int G, int D, int B, int T)
{
	LinearOp op, op2;
	op_rand(&op, LOP_GDN, C, H, G, D), op_rand(&op2, LOP_GDN, C, H, G, D);
	int n = B * T;
	size_t nu = (size_t)n * C;
	Buf u = buf_rand(nu, 1), da = buf_rand(nu, 1);
	float *ra = (float *)mallocCheck(nu * 4), *rdu = (float *)mallocCheck(nu * 4);
	float *ra2 = (float *)mallocCheck(nu * 4), *rgrad = (float *)callocCheck(op.n, 4);
	lop_forward(&op, ra, u.f, B, T);
	lop_backward(&op, rgrad, rdu, da.f, u.f, B, T);
	lop_forward(&op2, ra2, u.f, B, T);
	GpuLop *g = gpu_lop_new(&op, n, NULL);
	bf16_t *d_a = (bf16_t *)gpu_alloc(nu * 2), *ah = (bf16_t *)mallocCheck(nu * 2);
	float *d_du = (float *)gpu_alloc(nu * 4), *a = (float *)mallocCheck(nu * 4);
	float *du1 = (float *)mallocCheck(nu * 4), *du2 = (float *)mallocCheck(nu * 4);
	gpu_lop_forward_bf16(g, d_a, u.d, NULL, NULL, B, T);
	gpu_lop_backward_bf16(g, d_du, 0.5f, 0, da.d, NULL, NULL, B, T);
	gpu_download(du1, d_du, nu * 4);
	gpu_lop_backward_bf16(g, d_du, 0.25f, 1, da.d, NULL, NULL, B, T);
	gpu_download(du2, d_du, nu * 4);
	gpu_download(ah, d_a, nu * 2);
	for (size_t i = 0; i < nu; i++)
		a[i] = bf16_to_f32(ah[i]), du1[i] *= 2, du2[i] /= 0.75f;
	double ea = test_rel_err(a, ra, nu), edu = test_rel_err(du1, rdu, nu), eacc = test_rel_err(du2, du1, nu);
	/* other parameters, handed in through gpu_lop_params */
	gpu_upload(gpu_lop_params(g), op2.w, op2.n * 4);
	gpu_lop_forward_bf16(g, d_a, u.d, NULL, NULL, B, T);
	gpu_download(ah, d_a, nu * 2);
	for (size_t i = 0; i < nu; i++)
		a[i] = bf16_to_f32(ah[i]);
	double ea2 = test_rel_err(a, ra2, nu);
	char msg[224];
	snprintf(msg, sizeof msg, "gpu_lop gdn bf16 C=%d H=%d G=%d D=%d B=%d T=%d: a %.1e, du %.1e of max (within %.0e)",
	         C, H, G, D, B, T, ea, edu, HALF_TOL);
	test_cond(msg, ea < HALF_TOL && edu < HALF_TOL);
	snprintf(msg, sizeof msg, "gpu_lop gdn bf16 C=%d H=%d G=%d D=%d B=%d T=%d: w scales du, accumulate adds (%.1e)",
	         C, H, G, D, B, T, eacc);
	test_cond(msg, eacc < 1e-5);
	snprintf(msg, sizeof msg, "gpu_lop gdn bf16 C=%d H=%d G=%d D=%d B=%d T=%d: new parameters reach it (a %.1e)",
	         C, H, G, D, B, T, ea2);
	test_cond(msg, ea2 < HALF_TOL);
	gpu_lop_free(g);
	gpu_free(d_a), gpu_free(d_du);
	buf_free(&u), buf_free(&da);
	free(ra), free(rdu), free(ra2), free(rgrad), free(ah), free(a), free(du1), free(du2);
	lop_free(&op), lop_free(&op2);
}

/* gdn's bf16 path with its backward products in e4m3 against the CPU's
 * (the file's header says what is checked) */
static void check_fp8(int C, int H, int G, int D, int B, int T)
{
	LinearOp op, op2;
	op_rand(&op, LOP_GDN, C, H, G, D), op_rand(&op2, LOP_GDN, C, H, G, D);
	int n = B * T;
	size_t nu = (size_t)n * C;
	Buf u = buf_rand(nu, 1), da = buf_rand(nu, 1);
	float *rdu = (float *)mallocCheck(nu * 4), *rdu8 = (float *)mallocCheck(nu * 4);
	float *rdu28 = (float *)mallocCheck(nu * 4), *du = (float *)mallocCheck(nu * 4);
	lop_backward(&op, NULL, rdu, da.f, u.f, B, T);
	lop_backward_fp8(&op, rdu8, da.f, u.f, B, T, LOP_FP8_GRAD);
	lop_backward_fp8(&op2, rdu28, da.f, u.f, B, T, LOP_FP8_GRAD);
	GpuLop *g = gpu_lop_new(&op, n, NULL);
	void *scratch = gpu_alloc(gpu_lop_fp8_scratch_bytes(&op, n));
	gpu_lop_grad_fp8(g, scratch);
	bf16_t *d_a = (bf16_t *)gpu_alloc(nu * 2);
	float *d_du = (float *)gpu_alloc(nu * 4);
	float *du16 = (float *)mallocCheck(nu * 4);
	GpuLop *g16 = gpu_lop_new(&op, n, NULL); /* the bf16 path's du, for comparison */
	gpu_lop_forward_bf16(g16, d_a, u.d, NULL, NULL, B, T);
	gpu_lop_backward_bf16(g16, d_du, 1.0f, 0, da.d, NULL, NULL, B, T);
	gpu_download(du16, d_du, nu * 4);
	gpu_lop_free(g16);
	gpu_lop_forward_bf16(g, d_a, u.d, NULL, NULL, B, T);
	gpu_lop_backward_bf16(g, d_du, 0.5f, 0, da.d, NULL, NULL, B, T);
	gpu_download(du, d_du, nu * 4);
	for (size_t i = 0; i < nu; i++)
		du[i] *= 2;
	double e8 = test_rel_err(du, rdu8, nu), e = test_rel_err(du, rdu, nu), ecpu = test_rel_err(rdu8, rdu, nu);
	double e16 = test_rel_err(du16, rdu, nu), moved = test_rel_err(du, du16, nu);
	/* other parameters, handed in through gpu_lop_params */
	gpu_upload(gpu_lop_params(g), op2.w, op2.n * 4);
	gpu_lop_forward_bf16(g, d_a, u.d, NULL, NULL, B, T);
	gpu_lop_backward_bf16(g, d_du, 1.0f, 0, da.d, NULL, NULL, B, T);
	gpu_download(du, d_du, nu * 4);
	double e2 = test_rel_err(du, rdu28, nu);
	int OC = 2 * H * D + 2 * G * D + 2 * H;
	char msg[256];
	snprintf(msg, sizeof msg,
	         "gpu_lop gdn fp8 C=%d H=%d G=%d D=%d B=%d T=%d (K %d%s): du %.1e of max from the CPU's e4m3 du "
	         "(within %.0e), %.1e from the exact (the CPU's e4m3 %.1e)",
	         C, H, G, D, B, T, OC, OC % 16 ? ", padded" : "", e8, FP8_TOL, e, ecpu);
	test_cond(msg, e8 < FP8_TOL);
	snprintf(msg, sizeof msg,
	         "gpu_lop gdn fp8 C=%d H=%d G=%d D=%d B=%d T=%d: du %.1e of max from the bf16 path's, more than twice "
	         "that path's %.1e from the CPU",
	         C, H, G, D, B, T, moved, e16);
	test_cond(msg, moved > 2 * e16);
	snprintf(msg, sizeof msg,
	         "gpu_lop gdn fp8 C=%d H=%d G=%d D=%d B=%d T=%d: new parameters reach the codes (%.1e)", C, H, G, D, B,
	         T, e2);
	test_cond(msg, e2 < FP8_TOL);
	gpu_lop_free(g);
	gpu_free(scratch), gpu_free(d_a), gpu_free(d_du);
	buf_free(&u), buf_free(&da);
	free(rdu), free(rdu8), free(rdu28), free(du), free(du16);
	lop_free(&op), lop_free(&op2);
}

/* gdn's bf16 path with its forward's products in e4m3 as well (both
 * switches on one scratch) against lop_forward_fp8 and lop_backward_fp8
 * (LOP_FP8_GRAD | LOP_FP8_FWD): a and du within FP8_TOL of their max, and
 * a away from the bf16 path's a by more than twice that path's own
 * distance from lop_forward (the codes were used) */
static void check_fwd8(int C, int H, int G, int D, int B, int T)
{
	LinearOp op;
	op_rand(&op, LOP_GDN, C, H, G, D);
	int n = B * T;
	size_t nu = (size_t)n * C;
	Buf u = buf_rand(nu, 1), da = buf_rand(nu, 1);
	float *ra = (float *)mallocCheck(nu * 4), *ra8 = (float *)mallocCheck(nu * 4);
	float *rdu8 = (float *)mallocCheck(nu * 4), *du = (float *)mallocCheck(nu * 4);
	float *a = (float *)mallocCheck(nu * 4), *a16 = (float *)mallocCheck(nu * 4);
	lop_forward(&op, ra, u.f, B, T);
	lop_forward_fp8(&op, ra8, u.f, B, T);
	lop_backward_fp8(&op, rdu8, da.f, u.f, B, T, LOP_FP8_GRAD | LOP_FP8_FWD);
	bf16_t *d_a = (bf16_t *)gpu_alloc(nu * 2), *ah = (bf16_t *)mallocCheck(nu * 2);
	float *d_du = (float *)gpu_alloc(nu * 4);
	GpuLop *g16 = gpu_lop_new(&op, n, NULL); /* the bf16 path's a, for comparison */
	gpu_lop_forward_bf16(g16, d_a, u.d, NULL, NULL, B, T);
	gpu_download(ah, d_a, nu * 2);
	for (size_t i = 0; i < nu; i++)
		a16[i] = bf16_to_f32(ah[i]);
	gpu_lop_free(g16);
	GpuLop *g = gpu_lop_new(&op, n, NULL);
	void *scratch = gpu_alloc(gpu_lop_fp8_scratch_bytes(&op, n));
	gpu_lop_grad_fp8(g, scratch);
	gpu_lop_forward_fp8(g, scratch);
	gpu_lop_forward_bf16(g, d_a, u.d, NULL, NULL, B, T);
	gpu_lop_backward_bf16(g, d_du, 1.0f, 0, da.d, NULL, NULL, B, T);
	gpu_download(ah, d_a, nu * 2);
	gpu_download(du, d_du, nu * 4);
	for (size_t i = 0; i < nu; i++)
		a[i] = bf16_to_f32(ah[i]);
	double ea = test_rel_err(a, ra8, nu), edu = test_rel_err(du, rdu8, nu), ecpu = test_rel_err(ra8, ra, nu);
	double e16 = test_rel_err(a16, ra, nu), moved = test_rel_err(a, a16, nu);
	int OC = 2 * H * D + 2 * G * D + 2 * H;
	char msg[256];
	snprintf(msg, sizeof msg,
	         "gpu_lop gdn forward fp8 C=%d H=%d G=%d D=%d B=%d T=%d (width %d%s): a %.1e, du %.1e of max from the "
	         "CPU's e4m3 (within %.0e; the CPU's e4m3 a %.1e from its exact)",
	         C, H, G, D, B, T, OC, OC % 16 ? ", padded" : "", ea, edu, FP8_TOL, ecpu);
	test_cond(msg, ea < FP8_TOL && edu < FP8_TOL);
	snprintf(msg, sizeof msg,
	         "gpu_lop gdn forward fp8 C=%d H=%d G=%d D=%d B=%d T=%d: a %.1e of max from the bf16 path's, more than "
	         "twice that path's %.1e from the CPU",
	         C, H, G, D, B, T, moved, e16);
	test_cond(msg, moved > 2 * e16);
	/* a and du once more, u's and da's codes handed in or not: the same
	 * bits as above */
	bf16_t *ah2 = (bf16_t *)mallocCheck(nu * 2);
	float *du2 = (float *)mallocCheck(nu * 4);
	auto again = [&](const char *how, const uint8_t *uq, const float *us, const uint8_t *daq, const float *das) {
		gpu_lop_forward_bf16(g, d_a, u.d, uq, us, B, T);
		gpu_lop_backward_bf16(g, d_du, 1.0f, 0, da.d, daq, das, B, T);
		gpu_download(ah2, d_a, nu * 2);
		gpu_download(du2, d_du, nu * 4);
		snprintf(msg, sizeof msg,
		         "gpu_lop gdn forward fp8 C=%d H=%d G=%d D=%d B=%d T=%d: %s, a and du the same bits", C, H, G,
		         D, B, T, how);
		test_cond(msg, !memcmp(ah2, ah, nu * 2) && !memcmp(du2, du, nu * 4));
	};
	/* as the GpuModel's norms make them */
	uint8_t *d_uq = (uint8_t *)gpu_alloc(nu), *d_daq = (uint8_t *)gpu_alloc(nu);
	float *d_us = (float *)gpu_alloc((size_t)n * 4), *d_das = (float *)gpu_alloc((size_t)n * 4);
	fp8_rows_cuda(d_uq, d_us, u.d, n, C), fp8_rows_cuda(d_daq, d_das, da.d, n, C);
	again("u's and da's codes given", d_uq, d_us, d_daq, d_das);
	/* the output norm straight into y's codes against y in bf16 and
	 * fp8_rows_cuda */
	setenv("DASH_FP8_UNFUSED", "1", 1);
	again("y's codes by fp8_rows, not the output norm (DASH_FP8_UNFUSED=1)", NULL, NULL, NULL, NULL);
	unsetenv("DASH_FP8_UNFUSED");
	gpu_free(d_uq), gpu_free(d_daq), gpu_free(d_us), gpu_free(d_das);
	free(ah2), free(du2);
	gpu_lop_free(g);
	gpu_free(scratch), gpu_free(d_a), gpu_free(d_du);
	buf_free(&u), buf_free(&da);
	free(ra), free(ra8), free(rdu8), free(du), free(a), free(a16), free(ah);
	lop_free(&op);
}

/* a gdn and a gla in one arena, forward + backward one after the other,
 * against each in an arena of its own: the same bits */
static void test_shared(void)
{
	const int C = 96, H = 2, G = 1, D = 32, B = 2, T = 40, n = B * T;
	size_t nu = (size_t)n * C;
	LinearOp op[2];
	op_rand(&op[0], LOP_GDN, C, H, G, D), op_rand(&op[1], LOP_GLA, C, H, G, D);
	float *u = test_rnd(nu, 1), *da = test_rnd(nu, 1);
	float *d_u = dev_f32(u, nu), *d_da = dev_f32(da, nu), *d_a = (float *)gpu_alloc(nu * 4);
	size_t b0 = gpu_lop_arena_bytes(&op[0], n), b1 = gpu_lop_arena_bytes(&op[1], n);
	GpuLopArena *ar = gpu_lop_arena_new(b0 > b1 ? b0 : b1);
	int same = 1;
	float *got[2][2];
	for (int shared = 0; shared < 2; shared++) {
		GpuLop *g[2];
		for (int k = 0; k < 2; k++)
			g[k] = gpu_lop_new(&op[k], n, shared ? ar : NULL);
		for (int k = 0; k < 2; k++) {
			float *d_grad = (float *)gpu_alloc(op[k].n * 4);
			gpu_zero(d_grad, op[k].n * 4);
			gpu_lop_forward(g[k], d_a, d_u, B, T);
			gpu_lop_backward(g[k], d_grad, NULL, d_da, d_u, B, T);
			got[shared][k] = (float *)mallocCheck(op[k].n * 4);
			gpu_download(got[shared][k], d_grad, op[k].n * 4);
			gpu_free(d_grad);
		}
		for (int k = 0; k < 2; k++)
			gpu_lop_free(g[k]);
	}
	for (int k = 0; k < 2; k++) {
		same &= !memcmp(got[0][k], got[1][k], op[k].n * 4);
		free(got[0][k]), free(got[1][k]);
		lop_free(&op[k]);
	}
	test_cond("gpu_lop: a gdn and a gla sharing an arena give their own arenas' gradients bit for bit", same);
	gpu_lop_arena_free(ar);
	gpu_free(d_u), gpu_free(d_da), gpu_free(d_a);
	free(u), free(da);
}

static void bench(int kind)
{
	const int C = 2048, H = 16, G = 2, D = 128, B = 1, T = 4096;
	LinearOp op;
	op_rand(&op, kind, C, H, G, D);
	size_t nu = (size_t)B * T * C;
	float *u = test_rnd(nu, 1), *da = test_rnd(nu, 1);
	GpuLop *g = gpu_lop_new(&op, B * T, NULL);
	float *d_u = dev_f32(u, nu), *d_da = dev_f32(da, nu), *d_a = (float *)gpu_alloc(nu * 4);
	float *d_du = (float *)gpu_alloc(nu * 4), *d_grad = (float *)gpu_alloc(op.n * 4);
	gpu_zero(d_grad, op.n * 4);
	float f = median_ms([&] { gpu_lop_forward(g, d_a, d_u, B, T); });
	float fb = median_ms([&] {
		gpu_lop_forward(g, d_a, d_u, B, T);
		gpu_lop_backward(g, d_grad, d_du, d_da, d_u, B, T);
	});
	printf("bench %s C=%d H=%d G=%d D=%d B=%d T=%d: forward %.3f ms, forward+backward %.3f ms, %.0f tokens/s\n",
	       lop_name(kind), C, H, G, D, B, T, f, fb, B * T / (fb * 1e-3));
	if (kind == LOP_GDN) { /* the backward recomputing the recurrence's states, as before */
		setenv("DASH_GDN_RECOMPUTE", "1", 1);
		float fr = median_ms([&] { gpu_lop_forward(g, d_a, d_u, B, T); });
		float fbr = median_ms([&] {
			gpu_lop_forward(g, d_a, d_u, B, T);
			gpu_lop_backward(g, d_grad, d_du, d_da, d_u, B, T);
		});
		unsetenv("DASH_GDN_RECOMPUTE");
		printf("bench gdn, DASH_GDN_RECOMPUTE=1: forward %.3f ms, forward+backward %.3f ms (%.3f ms more)\n", fr,
		       fbr, fbr - fb);
		/* the bf16 path, no parameter gradients (the search's) */
		Buf ub = buf_rand(nu, 1), dab = buf_rand(nu, 1);
		bf16_t *d_ab = (bf16_t *)gpu_alloc(nu * 2);
		float fh = median_ms([&] { gpu_lop_forward_bf16(g, d_ab, ub.d, NULL, NULL, B, T); });
		float fbh = median_ms([&] {
			gpu_lop_forward_bf16(g, d_ab, ub.d, NULL, NULL, B, T);
			gpu_lop_backward_bf16(g, d_du, 1.0f, 0, dab.d, NULL, NULL, B, T);
		});
		float fbn = median_ms([&] {
			gpu_lop_forward(g, d_a, d_u, B, T);
			gpu_lop_backward(g, NULL, d_du, d_da, d_u, B, T);
		});
		printf("bench gdn bf16 path: forward %.3f ms, forward+backward to du %.3f ms (float32 path to du: %.3f)\n",
		       fh, fbh, fbn);
		if (cuda_cc_major() >= 9) { /* its two backward products in e4m3 */
			void *scratch = gpu_alloc(gpu_lop_fp8_scratch_bytes(&op, B * T));
			gpu_lop_grad_fp8(g, scratch);
			float fb8 = median_ms([&] {
				gpu_lop_forward_bf16(g, d_ab, ub.d, NULL, NULL, B, T);
				gpu_lop_backward_bf16(g, d_du, 1.0f, 0, dab.d, NULL, NULL, B, T);
			});
			printf("bench gdn bf16 path, e4m3 products: forward+backward to du %.3f ms (bf16 %.3f)\n",
			       fb8, fbh);
			gpu_free(scratch);
		}
		buf_free(&ub), buf_free(&dab);
		gpu_free(d_ab);
	}
	gpu_lop_free(g);
	gpu_free(d_u), gpu_free(d_da), gpu_free(d_a), gpu_free(d_du), gpu_free(d_grad);
	free(u), free(da);
	lop_free(&op);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	test_seed(0x3c6ef372fe94f82bULL);
	if (cuda_device_count() == 0) {
		printf("SKIP: no GPU\n");
		return 0;
	}
	for (int kind = LOP_GDN; kind <= LOP_GLA; kind++) {
		check(kind, 64, 4, 2, 16, 2, 37);
		check(kind, 256, 4, 1, 64, 1, 130);
		check(kind, 512, 4, 2, 128, 1, 64);
		check(kind, 96, 2, 1, 32, 3, 64); /* gla's recurrence in groups of 2 and 1 sequences */
	}
	check(LOP_GDN, 96, 2, 1, 32, 3, 40); /* gdn's in groups of 2 and 1: nothing kept */
	check_half(256, 4, 2, 64, 2, 100);
	check_half(512, 4, 2, 128, 1, 64);
	check_half(96, 2, 1, 32, 3, 40); /* in groups: nothing kept */
	if (cuda_cc_major() >= 9) {
		check_fp8(256, 4, 2, 64, 2, 100); /* K 776: padded to 784 */
		check_fp8(256, 8, 2, 32, 1, 128); /* K 656 */
		check_fp8(96, 2, 1, 32, 3, 40);   /* in groups */
		check_fwd8(256, 4, 2, 64, 2, 100); /* the projections' width 776: padded to 784 */
		check_fwd8(256, 8, 2, 32, 1, 128);
		check_fwd8(512, 12, 4, 32, 1, 70); /* two heads a warp in the output norm's codes */
	} else {
		printf("SKIP: gdn's e4m3 products want a Hopper (compute capability 9.0)\n");
	}
	test_shared();
	const char *b = getenv("DASH_BENCH");
	if (b && !strcmp(b, "1")) {
		bench(LOP_GDN);
		bench(LOP_GLA);
	}
	return test_report();
}
