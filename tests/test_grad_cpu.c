/* test_grad_cpu: every backward of ops_cpu and linear_attn against central finite
 * differences of its forward, on small random inputs, awkward shapes
 * included (T=1, windows, GQA, odd widths). The loss is sum(out * R) for a
 * random R, accumulated in double; R is the dout fed to the backward. */
#include <string.h>

#include "linear_attn.h"
#include "linear_op.h"
#include "ops_cpu.h"
#include "test.h"
#include "util.h"

/* the forward under test: reads its inputs from ctx, writes out */
typedef void (*Fwd)(void *ctx, float *out);

static double loss(Fwd f, void *ctx, float *out, const float *R, size_t nout)
{
	f(ctx, out);
	double l = 0;
	for (size_t i = 0; i < nout; i++)
		l += (double)out[i] * R[i];
	return l;
}

/* the finite-difference step; the candidate operators take a smaller one
 * (their L2 norms of short vectors curve enough that a step of 1e-2 is off
 * by a percent; at 2.5e-3 the difference settles within 0.2%) */
static double fd_h = 1e-2;

/* fd_ok perturbs each element of in (n of them) and compares the central
 * difference of the loss with grad */
static int fd_ok(const char *name, Fwd f, void *ctx, float *in, size_t n, const float *grad, const float *R,
                 size_t nout)
{
	float *out = mallocCheck(nout * sizeof(float));
	const double h = fd_h;
	int bad = 0;
	double maxerr = 0;
	for (size_t i = 0; i < n; i++) {
		float x0 = in[i];
		in[i] = (float)(x0 + h);
		double lp = loss(f, ctx, out, R, nout);
		in[i] = (float)(x0 - h);
		double lm = loss(f, ctx, out, R, nout);
		in[i] = x0;
		double fd = (lp - lm) / (2 * h), err = fabs(fd - grad[i]);
		maxerr = err > maxerr ? err : maxerr;
		if (err > 1e-3 + 1e-2 * fabs(fd)) {
			if (bad < 5)
				printf("  %s[%zu]: finite difference %.6g, backward %.6g\n", name, i, fd, (double)grad[i]);
			bad++;
		}
	}
	printf("  %s: %zu gradients, max error %.2e, %d outside tolerance\n", name, n, maxerr, bad);
	free(out);
	return bad == 0;
}

// ----------------------------------------------------------------------------

typedef struct { float *x; Tensor w, b; int n, IC, OC; } MM;
static void mm_f(void *c, float *out) { MM *m = c; matmul_forward_cpu(out, m->x, &m->w, &m->b, m->n, m->IC, m->OC); }

static void test_matmul(int n, int IC, int OC)
{
	float *w = test_rnd((size_t)OC * IC, 1), *b = test_rnd((size_t)OC, 1);
	MM m = {test_rnd((size_t)n * IC, 1), {DT_F32, 2, {OC, IC}, w}, {DT_F32, 1, {OC}, b}, n, IC, OC};
	float *R = test_rnd((size_t)n * OC, 1), *dx = mallocCheck((size_t)n * IC * sizeof(float));
	matmul_backward_cpu(dx, R, &m.w, n, IC, OC);
	char msg[96];
	snprintf(msg, sizeof msg, "matmul n=%d IC=%d OC=%d: dx", n, IC, OC);
	test_cond(msg, fd_ok("dx", mm_f, &m, m.x, (size_t)n * IC, dx, R, (size_t)n * OC));
	free(w), free(b), free(m.x), free(R), free(dx);
}

typedef struct { float *x; Tensor w; int n, C; } RN;
static void rn_f(void *c, float *out) { RN *r = c; rmsnorm_forward_cpu(out, r->x, &r->w, r->n, r->C, 1e-5f); }

static void test_rmsnorm(int n, int C)
{
	float *w = test_rnd((size_t)C, 1);
	RN r = {test_rnd((size_t)n * C, 1), {DT_F32, 1, {C}, w}, n, C};
	float *R = test_rnd((size_t)n * C, 1), *dx = mallocCheck((size_t)n * C * sizeof(float));
	rmsnorm_backward_cpu(dx, R, r.x, &r.w, n, C, 1e-5f);
	char msg[96];
	snprintf(msg, sizeof msg, "rmsnorm n=%d C=%d: dx", n, C);
	test_cond(msg, fd_ok("dx", rn_f, &r, r.x, (size_t)n * C, dx, R, (size_t)n * C));
	free(w), free(r.x), free(R), free(dx);
}

typedef struct { float *x; float inv[4]; int B, T, NH, D; } RP;
static void rp_f(void *c, float *out)
{
	RP *r = c;
	memcpy(out, r->x, (size_t)r->B * r->T * r->NH * r->D * sizeof(float));
	rope_forward_cpu(out, r->inv, r->B, r->T, 3, r->NH, r->D);
}

static void test_rope(void)
{
	RP r = {NULL, {1.0f, 0.4f, 0.05f, 0.002f}, 2, 5, 3, 8};
	size_t n = (size_t)r.B * r.T * r.NH * r.D;
	r.x = test_rnd(n, 1);
	float *R = test_rnd(n, 1), *d = mallocCheck(n * sizeof(float));
	memcpy(d, R, n * sizeof(float));
	rope_backward_cpu(d, r.inv, r.B, r.T, 3, r.NH, r.D);
	test_cond("rope B=2 T=5 NH=3 D=8 pos0=3: dx", fd_ok("dx", rp_f, &r, r.x, n, d, R, n));
	free(r.x), free(R), free(d);
}

typedef struct { float *q, *k, *v; int B, T, H, G, D, W; } AT;
static void at_f(void *c, float *out)
{
	AT *a = c;
	attention_forward_cpu(out, a->q, a->k, a->v, a->B, a->T, a->H, a->G, a->D, a->W);
}

static void test_attention(int B, int T, int H, int G, int D, int W)
{
	size_t nq = (size_t)B * T * H * D, nk = (size_t)B * T * G * D;
	AT a = {test_rnd(nq, 1), test_rnd(nk, 1), test_rnd(nk, 1), B, T, H, G, D, W};
	float *R = test_rnd(nq, 1), *dq = mallocCheck(nq * 4), *dk = mallocCheck(nk * 4), *dv = mallocCheck(nk * 4);
	attention_backward_cpu(dq, dk, dv, R, a.q, a.k, a.v, B, T, H, G, D, W);
	char msg[128];
	snprintf(msg, sizeof msg, "attention B=%d T=%d H=%d G=%d D=%d window=%d: dq, dk, dv", B, T, H, G, D, W);
	int ok = fd_ok("dq", at_f, &a, a.q, nq, dq, R, nq);
	ok &= fd_ok("dk", at_f, &a, a.k, nk, dk, R, nq);
	ok &= fd_ok("dv", at_f, &a, a.v, nk, dv, R, nq);
	test_cond(msg, ok);
	free(a.q), free(a.k), free(a.v), free(R), free(dq), free(dk), free(dv);
}

typedef struct { float *g, *u; int n; } SW;
static void sw_f(void *c, float *out) { SW *s = c; swiglu_forward_cpu(out, s->g, s->u, s->n); }

static void test_swiglu(int n)
{
	SW s = {test_rnd((size_t)n, 3), test_rnd((size_t)n, 2), n};
	float *R = test_rnd((size_t)n, 1), *dg = mallocCheck((size_t)n * 4), *du = mallocCheck((size_t)n * 4);
	swiglu_backward_cpu(dg, du, R, s.g, s.u, n);
	test_cond("swiglu: dgate, dup", fd_ok("dgate", sw_f, &s, s.g, (size_t)n, dg, R, (size_t)n) &&
	                                fd_ok("dup", sw_f, &s, s.u, (size_t)n, du, R, (size_t)n));
	free(s.g), free(s.u), free(R), free(dg), free(du);
}

/* the fused twins: several outputs are laid end to end in out (and R) */

typedef struct { float *qkv, *b, inv[4]; int B, T, H, G, D; } QR;
static void qr_f(void *c, float *out)
{
	QR *r = c;
	size_t nq = (size_t)r->B * r->T * r->H * r->D, nk = (size_t)r->B * r->T * r->G * r->D;
	Tensor b = {DT_F32, 1, {(r->H + 2 * r->G) * r->D}, r->b};
	qkv_rope_forward_cpu(out, out + nq, out + nq + nk, r->qkv, &b, r->inv, r->B, r->T, 2, r->H, r->G, r->D);
}

static void test_qkv_rope(void)
{
	QR r = {NULL, NULL, {1.0f, 0.4f, 0.05f, 0.002f}, 2, 3, 4, 2, 8};
	size_t n = (size_t)r.B * r.T, W = (size_t)(r.H + 2 * r.G) * r.D;
	size_t nq = n * r.H * r.D, nk = n * r.G * r.D;
	r.qkv = test_rnd(n * W, 1), r.b = test_rnd(W, 1);
	float *R = test_rnd(nq + 2 * nk, 1), *d = mallocCheck(n * W * sizeof(float));
	qkv_rope_backward_cpu(d, R, R + nq, R + nq + nk, r.inv, r.B, r.T, 2, r.H, r.G, r.D);
	test_cond("qkv_rope B=2 T=3 H=4 G=2 D=8 pos0=2: dqkv", fd_ok("dqkv", qr_f, &r, r.qkv, n * W, d, R, nq + 2 * nk));
	free(r.qkv), free(r.b), free(R), free(d);
}

typedef struct { float *gu; int n, F; } SP;
static void sp_f(void *c, float *out) { SP *s = c; swiglu_packed_forward_cpu(out, s->gu, s->n, s->F); }

static void test_swiglu_packed(int n, int F)
{
	SP s = {test_rnd((size_t)n * 2 * F, 3), n, F};
	float *R = test_rnd((size_t)n * F, 1), *d = mallocCheck((size_t)n * 2 * F * sizeof(float));
	swiglu_packed_backward_cpu(d, R, s.gu, n, F);
	char msg[96];
	snprintf(msg, sizeof msg, "swiglu_packed n=%d F=%d: dgu", n, F);
	test_cond(msg, fd_ok("dgu", sp_f, &s, s.gu, (size_t)n * 2 * F, d, R, (size_t)n * F));
	free(s.gu), free(R), free(d);
}

/* out holds h then the normed rows */
typedef struct { float *x, *a; Tensor w; int n, C; } RR;
static void rr_f(void *c, float *out)
{
	RR *r = c;
	residual_rmsnorm_forward_cpu(out, out + (size_t)r->n * r->C, r->x, r->a, &r->w, r->n, r->C, 1e-5f);
}

static void test_residual_rmsnorm(int n, int C)
{
	size_t nC = (size_t)n * C;
	float *w = test_rnd((size_t)C, 1);
	RR r = {test_rnd(nC, 1), test_rnd(nC, 1), {DT_F32, 1, {C}, w}, n, C};
	float *R = test_rnd(2 * nC, 1), *h = mallocCheck(nC * sizeof(float)), *d = mallocCheck(nC * sizeof(float));
	for (size_t i = 0; i < nC; i++)
		h[i] = r.x[i] + r.a[i];
	/* R = dL/dh along the residual, then dL/d(normed rows) */
	residual_rmsnorm_backward_cpu(d, R + nC, R, h, &r.w, n, C, 1e-5f);
	char msg[96];
	snprintf(msg, sizeof msg, "residual_rmsnorm n=%d C=%d: dx, da", n, C);
	test_cond(msg, fd_ok("dx", rr_f, &r, r.x, nC, d, R, 2 * nC) && fd_ok("da", rr_f, &r, r.a, nC, d, R, 2 * nC));
	free(w), free(r.x), free(r.a), free(R), free(h), free(d);
}

/* the linear-attention recurrences: out holds o, then the final state (the
 * forward starts from S0); R is dout, then the final state's gradient */
typedef struct { float *q, *k, *v, *g, *beta, *S0; int B, T, H, Dk, Dv, gla; } LA;
static void la_f(void *c, float *out)
{
	LA *l = c;
	size_t no = (size_t)l->B * l->T * l->H * l->Dv;
	memcpy(out + no, l->S0, (size_t)l->B * l->H * l->Dk * l->Dv * sizeof(float));
	float scale = 1 / sqrtf((float)l->Dk);
	if (l->gla)
		gla_forward_recurrent(out, out + no, l->q, l->k, l->v, l->g, l->B, l->T, l->H, l->Dk, l->Dv, scale);
	else
		gdn_forward_recurrent(out, out + no, l->q, l->k, l->v, l->g, l->beta, l->B, l->T, l->H, l->Dk, l->Dv,
		                      scale);
}

/* n values in [lo, hi) */
static float *uniform(size_t n, float lo, float hi)
{
	float *x = test_rnd(n, 1);
	for (size_t i = 0; i < n; i++)
		x[i] = lo + (x[i] + 1) / 2 * (hi - lo);
	return x;
}

static void test_linear_attn(int gla, int B, int T, int H, int Dk, int Dv)
{
	size_t nk = (size_t)B * T * H * Dk, nv = (size_t)B * T * H * Dv, nh = (size_t)B * T * H;
	size_t nS = (size_t)B * H * Dk * Dv;
	/* keys of norm about 1 as after the operator's L2 normalisation; decays
	 * exp(g) in (0.6, 0.95); beta in (0.1, 0.9) */
	LA l = {test_rnd(nk, 1), test_rnd(nk, 1.0f / sqrtf((float)Dk)), test_rnd(nv, 1),
	        uniform(gla ? nk : nh, -0.5f, -0.05f), uniform(nh, 0.1f, 0.9f), test_rnd(nS, 0.5f),
	        B, T, H, Dk, Dv, gla};
	float *R = test_rnd(nv + nS, 1);
	float *dq = mallocCheck(nk * 4), *dk = mallocCheck(nk * 4), *dv = mallocCheck(nv * 4);
	float *dg = mallocCheck((gla ? nk : nh) * 4), *db = mallocCheck(nh * 4), *dS0 = mallocCheck(nS * 4);
	float scale = 1 / sqrtf((float)Dk);
	if (gla)
		gla_backward(dq, dk, dv, dg, dS0, R, R + nv, l.q, l.k, l.v, l.g, l.S0, B, T, H, Dk, Dv, scale);
	else
		gdn_backward(dq, dk, dv, dg, db, dS0, R, R + nv, l.q, l.k, l.v, l.g, l.beta, l.S0, B, T, H, Dk, Dv, scale);
	size_t no = nv + nS;
	int ok = fd_ok("dq", la_f, &l, l.q, nk, dq, R, no) & fd_ok("dk", la_f, &l, l.k, nk, dk, R, no) &
	         fd_ok("dv", la_f, &l, l.v, nv, dv, R, no) & fd_ok("dS0", la_f, &l, l.S0, nS, dS0, R, no) &
	         fd_ok(gla ? "dgk" : "dg", la_f, &l, l.g, gla ? nk : nh, dg, R, no);
	if (!gla)
		ok &= fd_ok("dbeta", la_f, &l, l.beta, nh, db, R, no);
	char msg[128];
	snprintf(msg, sizeof msg, "%s backward B=%d T=%d H=%d Dk=%d Dv=%d: dq, dk, dv, %s, dS0", gla ? "gla" : "gdn",
	         B, T, H, Dk, Dv, gla ? "dgk" : "dg, dbeta");
	test_cond(msg, ok);
	free(l.q), free(l.k), free(l.v), free(l.g), free(l.beta), free(l.S0), free(R);
	free(dq), free(dk), free(dv), free(dg), free(db), free(dS0);
}

/* the whole candidate operators: every parameter and the input */
typedef struct { LinearOp *op; float *u; int B, T; } LO;
static void lo_f(void *c, float *out) { LO *l = c; lop_forward(l->op, out, l->u, l->B, l->T); }

static void test_linear_op(int kind, int B, int T, int C, int H, int G, int D)
{
	LinearOp op;
	lop_init(&op, kind, C, H, G, D);
	op.window = 3; /* swa: shorter than T */
	float *w0 = test_rnd(op.n, 0.4f);
	memcpy(op.w, w0, op.n * sizeof(float));
	size_t n = (size_t)B * T * C;
	LO l = {&op, test_rnd(n, 1), B, T};
	float *R = test_rnd(n, 1), *grad = callocCheck(op.n, sizeof(float)), *du = mallocCheck(n * sizeof(float));
	lop_backward(&op, grad, du, R, l.u, B, T);
	fd_h = 2.5e-3;
	int ok = 1;
	for (int i = 0; i < op.np; i++) {
		const LopParam *p = &op.p[i];
		ok &= fd_ok(p->name, lo_f, &l, op.w + p->off, (size_t)p->rows * p->cols, grad + p->off, R, n);
	}
	ok &= fd_ok("du", lo_f, &l, l.u, n, du, R, n);
	fd_h = 1e-2;
	char msg[128];
	snprintf(msg, sizeof msg, "%s operator B=%d T=%d C=%d H=%d G=%d D=%d: every parameter and du", lop_name(kind), B,
	         T, C, H, G, D);
	test_cond(msg, ok);
	/* grad NULL: the same du, bit for bit, without the parameter gradients */
	float *du0 = mallocCheck(n * sizeof(float));
	lop_backward(&op, NULL, du0, R, l.u, B, T);
	snprintf(msg, sizeof msg, "%s operator: du without parameter gradients (grad NULL) is the same du", lop_name(kind));
	test_cond(msg, memcmp(du0, du, n * sizeof(float)) == 0);
	if (kind == LOP_GDN) { /* its two products through e4m3: du within their noise of the checked one */
		lop_backward_fp8(&op, du0, R, l.u, B, T, LOP_FP8_GRAD);
		double e = test_rel_err(du0, du, n);
		snprintf(msg, sizeof msg, "gdn operator, e4m3 products (lop_backward_fp8): du %.2e of max off, in (0, 0.1]",
		         e);
		test_cond(msg, e > 0 && e <= 0.1);
		/* and the forward's (lop_forward_fp8): a, and du from that forward */
		float *a = mallocCheck(n * sizeof(float)), *a8 = mallocCheck(n * sizeof(float));
		lop_forward(&op, a, l.u, B, T);
		lop_forward_fp8(&op, a8, l.u, B, T);
		double ea = test_rel_err(a8, a, n);
		lop_backward_fp8(&op, du0, R, l.u, B, T, LOP_FP8_GRAD | LOP_FP8_FWD);
		double e2 = test_rel_err(du0, du, n);
		snprintf(msg, sizeof msg,
		         "gdn operator, e4m3 forward (lop_forward_fp8): a %.2e, du %.2e of max off, in (0, 0.1]", ea,
		         e2);
		test_cond(msg, ea > 0 && ea <= 0.1 && e2 > 0 && e2 <= 0.1);
		free(a), free(a8);
	}
	free(du0);
	lop_free(&op);
	free(w0), free(l.u), free(R), free(grad), free(du);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	test_seed(0x2545f4914f6cdd1dULL);
	test_matmul(1, 3, 2);
	test_matmul(5, 13, 7);
	test_rmsnorm(3, 17);
	test_rope();
	test_attention(1, 1, 2, 1, 4, 0);
	test_attention(2, 7, 4, 2, 6, 0);
	test_attention(1, 9, 4, 1, 8, 3);
	test_attention(2, 6, 3, 3, 4, 20);
	test_swiglu(64);
	test_qkv_rope();
	test_swiglu_packed(3, 5);
	test_residual_rmsnorm(3, 17);
	for (int gla = 0; gla < 2; gla++) {
		test_linear_attn(gla, 1, 1, 1, 4, 3);
		test_linear_attn(gla, 2, 9, 2, 4, 3);
		test_linear_attn(gla, 1, 70, 1, 3, 2); /* across the backward's 64-step checkpoint */
		test_linear_op(gla ? LOP_GLA : LOP_GDN, 2, 5, 10, 2, 1, 4);
	}
	test_linear_op(LOP_SWA, 2, 5, 10, 2, 1, 4);
	return test_report();
}
