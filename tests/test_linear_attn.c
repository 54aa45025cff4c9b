/* test_linear_attn: the Gated DeltaNet and GLA recurrences of
 * lib/linear_attn.c against fla's own naive references (fixtures in
 * tests/data/linear, made by tests/make_fla_ref.py from fla-core 0.6.0), the
 * chunked forms against the recurrent ones (chunk 16 and 64; T 1, one short
 * of a chunk, a chunk, one past, several; with an initial state), the
 * decoding step (T = 1 calls, state carried) against one call, and a
 * sequence split over two calls against one; the operators' initialisation
 * from a teacher layer; swa with a window of T against the teacher layer's
 * own attention; every operator (gdn, gla, swa) decoded a token at a time
 * (lop_decode) against its forward. The backwards are checked by finite
 * differences in test_grad_cpu. */
#include <string.h>

#include "h5io.h"
#include "linear_attn.h"
#include "linear_op.h"
#include "model.h"
#include "test.h"
#include "util.h"

static float *get(H5File *f, const char *name, size_t want)
{
	int rank;
	int64_t dims[TENSOR_MAX_DIMS], n = 1;
	float *x = h5_read(f, name, DT_F32, &rank, dims);
	for (int i = 0; i < rank; i++)
		n *= dims[i];
	if ((size_t)n != want)
		die("%s: %s has %lld values, want %zu", h5_path(f), name, (long long)n, want);
	return x;
}

/* ours, recurrent and chunked, on fla's inputs, against fla's outputs */
static void test_fla(int gla)
{
	const char *path = gla ? "tests/data/linear/gla.h5" : "tests/data/linear/gdn.h5";
	const int B = 2, T = 37, H = 3, Dk = 8, Dv = 6;
	size_t nk = (size_t)B * T * H * Dk, nv = (size_t)B * T * H * Dv, nh = (size_t)B * T * H;
	size_t nS = (size_t)B * H * Dk * Dv;
	H5File *f = h5_open(path);
	float *q = get(f, "/q", nk), *k = get(f, "/k", nk), *v = get(f, "/v", nv), *S0 = get(f, "/S0", nS);
	float *g = get(f, gla ? "/gk" : "/g", gla ? nk : nh), *beta = gla ? NULL : get(f, "/beta", nh);
	float *ro = get(f, "/o", nv), *rS = get(f, "/S", nS);
	float *o = mallocCheck(nv * 4), *S = mallocCheck(nS * 4);
	float scale = 1 / sqrtf((float)Dk);
	for (int chunk = 0; chunk <= 64; chunk += chunk ? 48 : 16) { /* 0 (recurrent), 16, 64 */
		memcpy(S, S0, nS * 4);
		if (gla && chunk)
			gla_forward_chunked(o, S, q, k, v, g, B, T, H, Dk, Dv, scale, chunk);
		else if (gla)
			gla_forward_recurrent(o, S, q, k, v, g, B, T, H, Dk, Dv, scale);
		else if (chunk)
			gdn_forward_chunked(o, S, q, k, v, g, beta, B, T, H, Dk, Dv, scale, chunk);
		else
			gdn_forward_recurrent(o, S, q, k, v, g, beta, B, T, H, Dk, Dv, scale);
		double eo = test_rel_err(o, ro, nv), es = test_rel_err(S, rS, nS);
		char msg[160];
		snprintf(msg, sizeof msg, "%s %s%s equals fla's naive recurrent reference (o %.1e, final state %.1e)",
		         gla ? "gla" : "gdn", chunk ? "chunked, chunk " : "recurrent", chunk ? (chunk == 16 ? "16" : "64") : "",
		         eo, es);
		test_cond(msg, eo < 2e-6 && es < 2e-6);
	}
	h5_close(f);
	free(q), free(k), free(v), free(S0), free(g), free(beta), free(ro), free(rS), free(o), free(S);
}

typedef struct {
	int B, T, H, Dk, Dv, gla;
	float *q, *k, *v, *g, *beta, *S0;
} Case;

static Case case_new(int gla, int B, int T, int H, int Dk, int Dv)
{
	size_t nk = (size_t)B * T * H * Dk, nh = (size_t)B * T * H;
	Case c = {B, T, H, Dk, Dv, gla, test_rnd(nk, 1), test_rnd(nk, 1 / sqrtf((float)Dk)),
	          test_rnd((size_t)B * T * H * Dv, 1), test_rnd(gla ? nk : nh, 1), test_rnd(nh, 1),
	          test_rnd((size_t)B * H * Dk * Dv, 0.5f)};
	for (size_t i = 0; i < (gla ? nk : nh); i++)
		c.g[i] = -0.3f * (c.g[i] + 1.05f); /* log decays in (-0.6, 0) */
	for (size_t i = 0; i < nh; i++)
		c.beta[i] = 0.5f + 0.45f * c.beta[i];
	return c;
}

static void case_free(Case *c)
{
	free(c->q), free(c->k), free(c->v), free(c->g), free(c->beta), free(c->S0);
}

/* positions t0..t1 of the case (every sequence), from state S; chunk 0 is
 * the recurrent form */
static void run(const Case *c, int t0, int t1, int chunk, float *o, float *S)
{
	int B = c->B, T = c->T, H = c->H, Dk = c->Dk, Dv = c->Dv, n = t1 - t0;
	float scale = 1 / sqrtf((float)Dk);
	/* the slice (B, n, H, .) of each input */
	float *q = mallocCheck((size_t)B * n * H * Dk * 4), *k = mallocCheck((size_t)B * n * H * Dk * 4);
	float *v = mallocCheck((size_t)B * n * H * Dv * 4), *g = mallocCheck((size_t)B * n * H * Dk * 4);
	float *be = mallocCheck((size_t)B * n * H * 4), *os = mallocCheck((size_t)B * n * H * Dv * 4);
	int G = c->gla ? Dk : 1;
	for (int b = 0; b < B; b++) {
		size_t src = ((size_t)b * T + t0) * H, dst = (size_t)b * n * H, rows = (size_t)n * H;
		memcpy(q + dst * Dk, c->q + src * Dk, rows * Dk * 4);
		memcpy(k + dst * Dk, c->k + src * Dk, rows * Dk * 4);
		memcpy(v + dst * Dv, c->v + src * Dv, rows * Dv * 4);
		memcpy(g + dst * G, c->g + src * G, rows * G * 4);
		memcpy(be + dst, c->beta + src, rows * 4);
	}
	if (c->gla && chunk)
		gla_forward_chunked(os, S, q, k, v, g, B, n, H, Dk, Dv, scale, chunk);
	else if (c->gla)
		gla_forward_recurrent(os, S, q, k, v, g, B, n, H, Dk, Dv, scale);
	else if (chunk)
		gdn_forward_chunked(os, S, q, k, v, g, be, B, n, H, Dk, Dv, scale, chunk);
	else
		gdn_forward_recurrent(os, S, q, k, v, g, be, B, n, H, Dk, Dv, scale);
	for (int b = 0; b < B; b++)
		memcpy(o + (((size_t)b * T + t0) * H) * Dv, os + (size_t)b * n * H * Dv, (size_t)n * H * Dv * 4);
	free(q), free(k), free(v), free(g), free(be), free(os);
}

static void test_forms(int gla, int B, int T, int H, int Dk, int Dv)
{
	Case c = case_new(gla, B, T, H, Dk, Dv);
	size_t no = (size_t)B * T * H * Dv, nS = (size_t)B * H * Dk * Dv;
	float *ro = mallocCheck(no * 4), *rS = mallocCheck(nS * 4), *o = mallocCheck(no * 4), *S = mallocCheck(nS * 4);
	memcpy(rS, c.S0, nS * 4);
	run(&c, 0, T, 0, ro, rS);
	const char *op = gla ? "gla" : "gdn";
	char msg[160];
	for (int chunk = 16; chunk <= 64; chunk *= 4) {
		memcpy(S, c.S0, nS * 4);
		run(&c, 0, T, chunk, o, S);
		double eo = test_rel_err(o, ro, no), es = test_rel_err(S, rS, nS);
		snprintf(msg, sizeof msg, "%s chunked (chunk %d) equals recurrent, B=%d T=%d H=%d Dk=%d Dv=%d (%.1e, %.1e)",
		         op, chunk, B, T, H, Dk, Dv, eo, es);
		test_cond(msg, eo < 1e-5 && es < 1e-5);
	}
	/* decoding: one position a call, the state carried */
	memcpy(S, c.S0, nS * 4);
	for (int t = 0; t < T; t++)
		run(&c, t, t + 1, 0, o, S);
	snprintf(msg, sizeof msg, "%s decoding one step at a time equals one call, T=%d (bit for bit)", op, T);
	test_cond(msg, memcmp(o, ro, no * 4) == 0 && memcmp(S, rS, nS * 4) == 0);
	/* a sequence in two calls, chunked */
	memcpy(S, c.S0, nS * 4);
	run(&c, 0, T / 2, 16, o, S);
	run(&c, T / 2, T, 16, o, S);
	snprintf(msg, sizeof msg, "%s chunked over two calls (%d + %d) equals one recurrent call", op, T / 2, T - T / 2);
	test_cond(msg, test_rel_err(o, ro, no) < 1e-5 && test_rel_err(S, rS, nS) < 1e-5);
	case_free(&c);
	free(ro), free(rS), free(o), free(S);
}

/* a candidate made from layer 1 of the tiny Qwen2 fixture: the teacher's
 * q, k, v, o weights and biases copied, fla's ranges for A_log and dt_bias,
 * and a finite output */
static void test_init_teacher(int kind)
{
	Model m;
	model_load(&m, "tests/data/tiny-qwen2");
	const ModelConfig *c = &m.cfg;
	LinearOp op;
	lop_init_teacher(&op, kind, &m, 1, 7);
	int ok = 1, HD = c->H * c->D;
	float *row = mallocCheck((size_t)c->C * sizeof(float));
	const LopParam *wq = lop_param(&op, "wq"), *bq = lop_param(&op, "bq");
	for (int r = 0; r < HD; r += 7) {
		convert_to_f32(row, (const uint8_t *)m.layers[1].wq.data + (size_t)r * dtype_row_bytes(m.layers[1].wq.dtype, c->C),
		               m.layers[1].wq.dtype, (size_t)c->C);
		ok &= memcmp(row, op.w + wq->off + (size_t)r * c->C, (size_t)c->C * sizeof(float)) == 0;
	}
	float b0;
	convert_to_f32(&b0, m.layers[1].bq.data, m.layers[1].bq.dtype, 1);
	ok &= b0 == op.w[bq->off];
	if (kind == LOP_SWA)
		ok &= memcmp(op.inv_freq, m.inv_freq, (size_t)(c->D / 2) * sizeof(float)) == 0;
	if (kind == LOP_GDN)
		for (int h = 0; h < c->H; h++) {
			float A = op.w[lop_param(&op, "A_log")->off + h], dt = op.w[lop_param(&op, "dt_bias")->off + h];
			double sp = log1p(exp(dt)); /* softplus(dt_bias) is fla's dt */
			ok &= A < logf(16) && sp >= 0.99e-4 && sp <= 0.1001;
		}
	int B = 2, T = 9, n = B * T;
	float *u = test_rnd((size_t)n * c->C, 1), *a = mallocCheck((size_t)n * c->C * sizeof(float));
	lop_forward(&op, a, u, B, T);
	for (size_t i = 0; i < (size_t)n * c->C; i++)
		ok &= isfinite(a[i]);
	char msg[128];
	snprintf(msg, sizeof msg, "%s from layer 1 of tiny-qwen2: teacher weights copied, %s, finite output", lop_name(kind),
	         kind == LOP_SWA ? "its RoPE" : "gates in fla's ranges");
	test_cond(msg, ok);
	lop_free(&op);
	free(row), free(u), free(a);
	model_free(&m);
}

/* swa from a teacher layer with a window of at least T is that layer's own
 * attention: the a its forward hands to the hook */
typedef struct { float *u, *a; } Seen;
static void seen(void *ctx, int l, const float *u, float *a, int B, int T)
{
	Seen *s = ctx;
	if (l == 1) {
		size_t n = (size_t)B * T * 64;
		s->u = mallocCheck(n * sizeof(float)), s->a = mallocCheck(n * sizeof(float));
		memcpy(s->u, u, n * sizeof(float)), memcpy(s->a, a, n * sizeof(float));
	}
}

static void test_swa_is_teacher(void)
{
	Model m;
	model_load(&m, "tests/data/tiny-qwen2");
	const ModelConfig *c = &m.cfg;
	if (c->C != 64)
		BUG("tiny-qwen2: C %d, the test assumes 64", c->C);
	int B = 2, T = 13, n = B * T;
	float *x = test_rnd((size_t)n * c->C, 1), *y = mallocCheck((size_t)n * c->C * sizeof(float));
	LayerScratch ls;
	layer_scratch_init(&ls, c, n);
	Seen sn = {0};
	layer_forward(&m, 1, x, y, &ls, B, T, seen, &sn);
	LinearOp op;
	lop_init_teacher(&op, LOP_SWA, &m, 1, 7);
	float *a = mallocCheck((size_t)n * c->C * sizeof(float));
	op.window = T;
	lop_forward(&op, a, sn.u, B, T);
	double e = test_rel_err(a, sn.a, (size_t)n * c->C);
	op.window = 4;
	lop_forward(&op, a, sn.u, B, T);
	double e4 = test_rel_err(a, sn.a, (size_t)n * c->C);
	char msg[160];
	snprintf(msg, sizeof msg, "swa of layer 1, window T: the teacher's attention output (%.1e); window 4 differs (%.1e)",
	         e, e4);
	test_cond(msg, e < 1e-5 && e4 > 1e-3);
	lop_free(&op), layer_scratch_free(&ls);
	free(x), free(y), free(a), free(sn.u), free(sn.a);
	model_free(&m);
}

/* every operator decoded a token at a time equals its forward over the
 * whole sequences (swa with a window shorter than T, so the ring wraps) */
static void test_decode(int kind)
{
	int B = 2, T = 11, C = 24, H = 4, G = 2, D = 8;
	LinearOp op;
	lop_init(&op, kind, C, H, G, D);
	float *w = test_rnd(op.n, 0.4f);
	memcpy(op.w, w, op.n * sizeof(float));
	op.window = 4;
	size_t n = (size_t)B * T * C;
	float *u = test_rnd(n, 1), *a = mallocCheck(n * sizeof(float)), *ad = mallocCheck(n * sizeof(float));
	float *ut = mallocCheck((size_t)B * C * sizeof(float)), *at = mallocCheck((size_t)B * C * sizeof(float));
	lop_forward(&op, a, u, B, T);
	LopState st;
	lop_state_init(&st, &op, B);
	for (int t = 0; t < T; t++) {
		for (int b = 0; b < B; b++)
			memcpy(ut + (size_t)b * C, u + ((size_t)b * T + t) * C, C * sizeof(float));
		lop_decode(&op, &st, at, ut);
		for (int b = 0; b < B; b++)
			memcpy(ad + ((size_t)b * T + t) * C, at + (size_t)b * C, C * sizeof(float));
	}
	double e = test_rel_err(ad, a, n);
	char msg[128];
	snprintf(msg, sizeof msg, "%s decoded a token at a time = its forward (B=%d T=%d%s): %.1e", lop_name(kind), B, T,
	         kind == LOP_SWA ? " window 4" : "", e);
	test_cond(msg, e < 1e-5 && st.pos == T);
	lop_state_free(&st), lop_free(&op);
	free(w), free(u), free(a), free(ad), free(ut), free(at);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	test_seed(0x6a09e667f3bcc908ULL);
	for (int gla = 0; gla < 2; gla++) {
		test_fla(gla);
		test_forms(gla, 1, 1, 1, 8, 8);
		test_forms(gla, 2, 63, 3, 16, 8);
		test_forms(gla, 1, 64, 2, 8, 16);
		test_forms(gla, 2, 65, 2, 8, 8);
		test_forms(gla, 1, 150, 4, 32, 32);
		test_init_teacher(gla ? LOP_GLA : LOP_GDN);
	}
	test_init_teacher(LOP_SWA);
	test_swa_is_teacher();
	for (int kind = LOP_GDN; kind <= LOP_SWA; kind++)
		test_decode(kind);
	return test_report();
}
