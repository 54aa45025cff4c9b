/*
 * decode: prefill and greedy decoding over per-layer states (the contract
 * is in decode.h). One pass runs "groups": ng sequences with T new tokens
 * each, ng * T rows in all. A prefill chunk is one group of T tokens, a
 * step ng groups of one token. Projections and the MLP run on all rows at
 * once (each weight row is read once for all of them); attention and the
 * recurrences run per group, on its sequence's state.
 */
#include "decode.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "linear_attn.h" // defines: gdn_forward_chunked, gla_forward_chunked
#include "ops_cpu.h"     // defines: matmul_forward_cpu, rmsnorm_forward_cpu, embedding_forward_cpu, ...
#include "util.h"        // defines: mallocCheck, BUG, ASSERT

#ifndef PAR_MIN
#define PAR_MIN 65536 /* multiply-adds below which a loop stays on one thread */
#endif

struct DecLayer {
	int op;             /* ARCH_* */
	size_t off;         /* bytes into a sequence's block */
	long long slots;    /* fa: cap; swa: min(W, cap); rows of k (then v) */
	int window;         /* swa: W; fa: 0 */
	int H, G, D;
	const float *inv_freq;
	/* fa: the model's own tensors (so that a later model_unpack is seen);
	 * swa: views of its operator's float32 blocks, in t */
	const Tensor *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo;
	Tensor t[8];
	const LinearOp *lop; /* swa, gdn, gla */
};

/* the activations of up to `rows` rows */
struct DecScratch {
	int rows;
	float *x, *u, *a;          // (R, C) residual stream, operator input, its output
	float *q, *att;            // (R, H*D)
	float *k, *v;              // (R, G*D)
	float *g, *up;             // (R, F)
};

static inline int layer_op(const Hybrid *hy, int l) { return hy ? hy->ops[l] : ARCH_FA; }

// ----------------------------------------------------------------------------
// sizes

size_t decoder_layer_bytes(const Model *m, const Hybrid *hy, int l, long long n, DType kv)
{
	const ModelConfig *c = &m->cfg;
	int op = layer_op(hy, l);
	if (op == ARCH_FA)
		return 2 * (size_t)n * c->G * c->D * dtype_size(kv);
	const LinearOp *lop = &hy->lop[l];
	if (op == ARCH_SWA) {
		long long s = n < lop->window ? n : lop->window;
		return 2 * (size_t)s * lop->G * lop->D * dtype_size(kv);
	}
	return (size_t)lop->H * lop->D * lop->D * sizeof(float);
}

size_t decoder_state_bytes(const Model *m, const Hybrid *hy, long long n, DType kv)
{
	size_t s = 0;
	for (int l = 0; l < m->cfg.L; l++)
		s += decoder_layer_bytes(m, hy, l, n, kv);
	return s;
}

static void scratch_free(struct DecScratch *s)
{
	float **all = &s->x;
	for (size_t i = 0; i < (sizeof *s - offsetof(struct DecScratch, x)) / sizeof(float *); i++)
		free(all[i]), all[i] = NULL;
	s->rows = 0;
}

static void scratch_ensure(Decoder *d, int rows)
{
	struct DecScratch *s = d->scr;
	if (rows <= s->rows)
		return;
	scratch_free(s);
	const ModelConfig *c = &d->m->cfg;
	size_t R = (size_t)rows, HD = (size_t)c->H * c->D, GD = (size_t)c->G * c->D;
#define A(p, n) (s->p = mallocCheck(R * (n) * sizeof(float)))
	A(x, c->C), A(u, c->C), A(a, c->C), A(q, HD), A(att, HD), A(k, GD), A(v, GD), A(g, c->F), A(up, c->F);
#undef A
	s->rows = rows;
}

// ----------------------------------------------------------------------------
// init, free, reset

/* a float32 view of block name of op (data NULL when absent) */
static Tensor op_tensor(const LinearOp *op, const char *name)
{
	const LopParam *p = lop_param(op, name);
	if (!p)
		return (Tensor){DT_F32, 1, {0}, NULL};
	if (p->cols == 1)
		return (Tensor){DT_F32, 1, {p->rows}, op->w + p->off};
	return (Tensor){DT_F32, 2, {p->rows, p->cols}, op->w + p->off};
}

void decoder_init(Decoder *d, const Model *m, const Hybrid *hy, int B, int cap, DType kv)
{
	const ModelConfig *c = &m->cfg;
	if (kv != DT_BF16 && kv != DT_F32)
		BUG("decoder_init: cache type %s", dtype_name(kv));
	if (B < 1 || cap < 1)
		BUG("decoder_init: B %d, cap %d", B, cap);
	if (hy && hy->L != c->L)
		BUG("decoder_init: a hybrid of %d layers for a model of %d", hy->L, c->L);
	memset(d, 0, sizeof *d);
	d->m = m, d->hy = hy, d->B = B, d->cap = cap, d->kv = kv, d->chunk = DECODER_CHUNK;
	d->layer = callocCheck((size_t)c->L, sizeof *d->layer);
	size_t off = 0;
	for (int l = 0; l < c->L; l++) {
		struct DecLayer *y = &d->layer[l];
		y->op = layer_op(hy, l), y->off = off;
		off += decoder_layer_bytes(m, hy, l, cap, kv);
		if (y->op == ARCH_FA) {
			const LayerWeights *w = &m->layers[l];
			y->H = c->H, y->G = c->G, y->D = c->D, y->inv_freq = m->inv_freq, y->slots = cap;
			y->wq = &w->wq, y->bq = &w->bq, y->wk = &w->wk, y->bk = &w->bk;
			y->wv = &w->wv, y->bv = &w->bv, y->wo = &w->wo, y->bo = &w->bo;
			continue;
		}
		const LinearOp *op = &hy->lop[l];
		int want = y->op == ARCH_SWA ? LOP_SWA : y->op == ARCH_GDN ? LOP_GDN : LOP_GLA;
		if (y->op < 0 || y->op >= ARCH_NOPS || !op->w || op->kind != want || op->C != c->C)
			BUG("decoder_init: layer %d: operator %d without its parameters", l, y->op);
		y->lop = op, y->H = op->H, y->G = op->G, y->D = op->D;
		if (y->op == ARCH_SWA) {
			if (op->window < 1)
				BUG("decoder_init: layer %d: swa window %d", l, op->window);
			y->window = op->window, y->inv_freq = op->inv_freq;
			y->slots = cap < op->window ? cap : op->window;
			const char *names[8] = {"wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo"};
			for (int i = 0; i < 8; i++)
				y->t[i] = op_tensor(op, names[i]);
			y->wq = &y->t[0], y->bq = &y->t[1], y->wk = &y->t[2], y->bk = &y->t[3];
			y->wv = &y->t[4], y->bv = &y->t[5], y->wo = &y->t[6], y->bo = &y->t[7];
		}
	}
	d->seq_bytes = off;
	ASSERT(off == decoder_state_bytes(m, hy, cap, kv));
	/* calloc: the recurrent states start at zero, and a long cache's pages
	 * are only touched as the context reaches them */
	d->state = callocCheck((size_t)B, off);
	d->pos = callocCheck((size_t)B, sizeof *d->pos);
	d->scr = callocCheck(1, sizeof *d->scr);
}

void decoder_free(Decoder *d)
{
	if (d->scr)
		scratch_free(d->scr);
	free(d->scr), free(d->state), free(d->pos), free(d->layer);
	memset(d, 0, sizeof *d);
}

void decoder_reset(Decoder *d, int b)
{
	ASSERT(b >= 0 && b < d->B);
	d->pos[b] = 0;
	uint8_t *blk = d->state + (size_t)b * d->seq_bytes;
	for (int l = 0; l < d->m->cfg.L; l++) {
		const struct DecLayer *y = &d->layer[l];
		if (y->op == ARCH_GDN || y->op == ARCH_GLA)
			memset(blk + y->off, 0, (size_t)y->H * y->D * y->D * sizeof(float));
	}
}

// ----------------------------------------------------------------------------
// softmax attention over cached keys and values (fa, swa)

/* n values of src (float32) into dst of type t */
static void kv_put(uint8_t *dst, const float *src, size_t n, DType t)
{
	if (t == DT_F32) {
		memcpy(dst, src, n * sizeof(float));
		return;
	}
	uint16_t *h = (uint16_t *)dst;
	for (size_t i = 0; i < n; i++)
		h[i] = f32_to_bf16(src[i]);
}

static inline float kv_dot(const float *q, const uint8_t *k, int D, DType t)
{
	float s = 0;
	if (t == DT_F32) {
		const float *kf = (const float *)k;
		for (int i = 0; i < D; i++)
			s += q[i] * kf[i];
	} else {
		const uint16_t *kh = (const uint16_t *)k;
		for (int i = 0; i < D; i++)
			s += q[i] * bf16_to_f32(kh[i]);
	}
	return s;
}

/* out (D) += w v */
static inline void kv_axpy(float *out, float w, const uint8_t *v, int D, DType t)
{
	if (t == DT_F32) {
		const float *vf = (const float *)v;
		for (int i = 0; i < D; i++)
			out[i] += w * vf[i];
	} else {
		const uint16_t *vh = (const uint16_t *)v;
		for (int i = 0; i < D; i++)
			out[i] += w * bf16_to_f32(vh[i]);
	}
}

/* what a query row sees: positions lo..hi-1, position p at row p % slots of
 * k and v (rows of G D values of the cache type) */
typedef struct {
	const uint8_t *k, *v;
	long long lo, hi, slots;
} KvView;

/* attend_rows: out (n, H, D) for the queries q (n, H, D), query row i
 * against view[i]; query head h reads kv head h / (H / G); scale
 * 1/sqrt(D). The arithmetic of ops_cpu's attention, in its order. */
static void attend_rows(float *out, const float *q, const KvView *view, int n, int H, int G, int D, DType t)
{
	float scale = 1.0f / sqrtf((float)D);
	int rep = H / G;
	size_t es = dtype_size(t), row = (size_t)G * D * es;
	long long most = 1;
	double work = 0;
	for (int i = 0; i < n; i++) {
		long long len = view[i].hi - view[i].lo;
		most = len > most ? len : most;
		work += (double)len * H * D * 2;
	}
	#pragma omp parallel if (work > PAR_MIN)
	{
		float *p = mallocCheck((size_t)most * sizeof(float));
		#pragma omp for collapse(2) schedule(dynamic)
		for (int i = 0; i < n; i++)
			for (int h = 0; h < H; h++) {
				const KvView *w = &view[i];
				size_t ho = (size_t)(h / rep) * D * es;
				const float *qh = q + ((size_t)i * H + h) * D;
				float *oh = out + ((size_t)i * H + h) * D, mx = -INFINITY;
				for (long long s = w->lo; s < w->hi; s++) {
					float dot = kv_dot(qh, w->k + (size_t)(s % w->slots) * row + ho, D, t);
					p[s - w->lo] = dot * scale;
					mx = p[s - w->lo] > mx ? p[s - w->lo] : mx;
				}
				double sum = 0;
				for (long long s = 0; s < w->hi - w->lo; s++) {
					p[s] = expf(p[s] - mx);
					sum += p[s];
				}
				for (int j = 0; j < D; j++)
					oh[j] = 0;
				for (long long s = w->lo; s < w->hi; s++)
					kv_axpy(oh, (float)(p[s - w->lo] / sum), w->v + (size_t)(s % w->slots) * row + ho, D, t);
			}
		free(p);
	}
}

/* rope_rows rotates x (n, NH, D) in place as rope_forward_cpu does, row i
 * at position pos0[i / T] + i % T: the rows of ng groups in one loop (a
 * step's rows are at different positions), threaded only when it pays */
static void rope_rows(float *x, const float *inv_freq, const long long *pos0, int ng, int T, int NH, int D)
{
	int half = D / 2, n = ng * T;
	#pragma omp parallel for if ((size_t)n * NH * D > PAR_MIN)
	for (int r = 0; r < n; r++) {
		float pos = (float)(pos0[r / T] + r % T);
		for (int i = 0; i < half; i++) {
			float ang = pos * inv_freq[i];
			float c = (float)cos((double)ang), s = (float)sin((double)ang);
			for (int h = 0; h < NH; h++) {
				float *xh = x + ((size_t)r * NH + h) * D;
				float x1 = xh[i], x2 = xh[i + half];
				xh[i] = x1 * c - x2 * s;
				xh[i + half] = x2 * c + x1 * s;
			}
		}
	}
}

/* fa and swa on the rows of ng groups of T: u (ng*T, C) -> a (ng*T, C),
 * appending each group's keys and values to its sequence's cache or ring */
static void attn_layer(Decoder *d, const struct DecLayer *y, const float *u, float *a, const int *seq, int ng,
                       int T)
{
	struct DecScratch *s = d->scr;
	int n = ng * T, C = d->m->cfg.C, H = y->H, G = y->G, D = y->D, HD = H * D, GD = G * D;
	size_t es = dtype_size(d->kv), row = (size_t)GD * es;
	matmul_forward_cpu(s->q, u, y->wq, y->bq, n, C, HD);
	matmul_forward_cpu(s->k, u, y->wk, y->bk, n, C, GD);
	matmul_forward_cpu(s->v, u, y->wv, y->bv, n, C, GD);
	KvView *view = mallocCheck((size_t)n * sizeof *view);
	long long *pos0 = mallocCheck((size_t)ng * sizeof *pos0);
	for (int j = 0; j < ng; j++)
		pos0[j] = d->pos[seq[j]];
	rope_rows(s->q, y->inv_freq, pos0, ng, T, H, D);
	rope_rows(s->k, y->inv_freq, pos0, ng, T, G, D);
	uint8_t *lk = NULL, *lv = NULL; /* swa's chunk buffer */
	for (int j = 0; j < ng; j++) {
		long long p0 = pos0[j];
		size_t r0 = (size_t)j * T;
		uint8_t *kc = d->state + (size_t)seq[j] * d->seq_bytes + y->off, *vc = kc + (size_t)y->slots * row;
		if (y->op == ARCH_FA || T == 1 || p0 + T <= y->slots) {
			/* the new rows go to their slots first; no row overwrites
			 * one that a query of the group still reads */
			for (int t = 0; t < T; t++) {
				size_t slot = (size_t)((p0 + t) % y->slots);
				kv_put(kc + slot * row, s->k + (r0 + t) * GD, GD, d->kv);
				kv_put(vc + slot * row, s->v + (r0 + t) * GD, GD, d->kv);
			}
			for (int t = 0; t < T; t++) {
				long long hi = p0 + t + 1, lo = y->window && hi - y->window > 0 ? hi - y->window : 0;
				view[r0 + t] = (KvView){kc, vc, lo, hi, y->slots};
			}
			continue;
		}
		/* swa, a chunk that wraps the ring: the last W - 1 positions before
		 * it and the chunk, in time order, in a buffer; then the chunk's
		 * last rows go to the ring */
		ASSERT(ng == 1);
		long long hist = p0 < y->window - 1 ? p0 : y->window - 1, nb = hist + T;
		lk = mallocCheck((size_t)nb * row), lv = mallocCheck((size_t)nb * row);
		for (long long i = 0; i < hist; i++) {
			size_t slot = (size_t)((p0 - hist + i) % y->slots);
			memcpy(lk + (size_t)i * row, kc + slot * row, row);
			memcpy(lv + (size_t)i * row, vc + slot * row, row);
		}
		kv_put(lk + (size_t)hist * row, s->k + r0 * GD, (size_t)T * GD, d->kv);
		kv_put(lv + (size_t)hist * row, s->v + r0 * GD, (size_t)T * GD, d->kv);
		for (int t = 0; t < T; t++) {
			long long hi = hist + t + 1, lo = hi - y->window > 0 ? hi - y->window : 0;
			view[r0 + t] = (KvView){lk, lv, lo, hi, nb};
		}
		for (long long p = p0 + T - y->slots; p < p0 + T; p++) {
			size_t slot = (size_t)(p % y->slots), i = (size_t)(hist + p - p0);
			memcpy(kc + slot * row, lk + i * row, row);
			memcpy(vc + slot * row, lv + i * row, row);
		}
	}
	attend_rows(s->att, s->q, view, n, H, G, D, d->kv);
	matmul_forward_cpu(a, s->att, y->wo, y->bo, n, HD, C);
	free(view), free(pos0), free(lk), free(lv);
}

// ----------------------------------------------------------------------------
// gdn and gla: linear_op.c's forward, from each group's state

static void linear_layer(Decoder *d, const struct DecLayer *y, const float *u, float *a, const int *seq, int ng,
                         int T)
{
	const LinearOp *op = y->lop;
	size_t sn = (size_t)op->H * op->D * op->D; /* floats of a sequence's state */
	float *S = mallocCheck((size_t)ng * sn * sizeof(float));
	for (int j = 0; j < ng; j++)
		memcpy(S + j * sn, d->state + (size_t)seq[j] * d->seq_bytes + y->off, sn * sizeof(float));
	lop_forward_state(op, a, u, ng, T, S);
	for (int j = 0; j < ng; j++)
		memcpy(d->state + (size_t)seq[j] * d->seq_bytes + y->off, S + j * sn, sn * sizeof(float));
	free(S);
}

// ----------------------------------------------------------------------------
// a pass: ng groups of T tokens through every layer

/* run ids (ng*T), group j the next T tokens of sequence seq[j]; logits
 * (ng*T, V) of every row, or (V) of the last row when last_only, or NULL */
static void run_pass(Decoder *d, const int *seq, int ng, int T, const int32_t *ids, float *logits, int last_only)
{
	const Model *m = d->m;
	const ModelConfig *c = &m->cfg;
	int n = ng * T, C = c->C, F = c->F;
	for (int j = 0; j < ng; j++)
		if (d->pos[seq[j]] + T > d->cap)
			BUG("decode: sequence %d of %lld tokens takes %d more, beyond its %d", seq[j], d->pos[seq[j]], T,
			    d->cap);
	scratch_ensure(d, n);
	struct DecScratch *s = d->scr;
	embedding_forward_cpu(s->x, ids, &m->embed, n, C);
	for (int l = 0; l < c->L; l++) {
		const LayerWeights *w = &m->layers[l];
		const struct DecLayer *y = &d->layer[l];
		/* u = norm(x); a = the layer's operator on u; x += a */
		rmsnorm_forward_cpu(s->u, s->x, &w->ln1, n, C, c->eps);
		if (y->op == ARCH_FA || y->op == ARCH_SWA)
			attn_layer(d, y, s->u, s->a, seq, ng, T);
		else
			linear_layer(d, y, s->u, s->a, seq, ng, T);
		residual_forward_cpu(s->x, s->a, (int64_t)n * C);
		/* x += Wdown(silu(Wgate u) * Wup u), u = norm(x) */
		rmsnorm_forward_cpu(s->u, s->x, &w->ln2, n, C, c->eps);
		matmul_forward_cpu(s->g, s->u, &w->wgate, &w->bgate, n, C, F);
		matmul_forward_cpu(s->up, s->u, &w->wup, &w->bup, n, C, F);
		swiglu_forward_cpu(s->g, s->g, s->up, (int64_t)n * F);
		matmul_forward_cpu(s->a, s->g, &w->wdown, &w->bdown, n, F, C);
		residual_forward_cpu(s->x, s->a, (int64_t)n * C);
	}
	for (int j = 0; j < ng; j++)
		d->pos[seq[j]] += T;
	if (!logits)
		return;
	const float *x = last_only ? s->x + (size_t)(n - 1) * C : s->x;
	int nl = last_only ? 1 : n;
	rmsnorm_forward_cpu(s->u, x, &m->norm, nl, C, c->eps);
	model_logits(m, s->u, nl, logits);
}

void decoder_prefill(Decoder *d, int b, const int32_t *ids, int n, float *logits)
{
	ASSERT(b >= 0 && b < d->B && n >= 1 && d->chunk >= 1);
	for (int t0 = 0; t0 < n; t0 += d->chunk) {
		int T = n - t0 < d->chunk ? n - t0 : d->chunk;
		run_pass(d, &b, 1, T, ids + t0, t0 + T == n ? logits : NULL, 1);
	}
}

void decoder_step(Decoder *d, const int *seq, const int32_t *ids, int n, float *logits)
{
	ASSERT(n >= 1 && n <= d->B);
	uint8_t *seen = callocCheck((size_t)d->B, 1);
	for (int i = 0; i < n; i++) {
		if (seq[i] < 0 || seq[i] >= d->B || seen[seq[i]])
			BUG("decoder_step: sequence %d out of range or repeated", seq[i]);
		seen[seq[i]] = 1;
	}
	free(seen);
	run_pass(d, seq, n, 1, ids, logits, 0);
}

// ----------------------------------------------------------------------------
// greedy decoding

int decoder_accept(const int32_t *best, int live, int *seq, int32_t *next, int k, int max_new, const int32_t *stop,
                   int nstop, IdVec *out, DecodeTokenFn on_token, void *ctx)
{
	int nn = 0;
	for (int i = 0; i < live; i++) {
		int stopped = 0;
		for (int j = 0; j < nstop; j++)
			stopped |= best[i] == stop[j];
		if (stopped)
			continue;
		idvec_push(&out[seq[i]], best[i]);
		if (on_token)
			on_token(ctx, seq[i], best[i]);
		if (k + 1 < max_new) /* seq[nn] is read already: nn <= i */
			seq[nn] = seq[i], next[nn++] = best[i];
	}
	return nn;
}

void decoder_greedy(Decoder *d, const int32_t *const *prompts, const int *lens, int max_new, const int32_t *stop,
                    int nstop, IdVec *out, DecodeTokenFn on_token, void *ctx)
{
	int B = d->B, V = d->m->cfg.V;
	float *logits = mallocCheck((size_t)B * V * sizeof(float)); // (B, V) row i: sequence seq[i]
	int *seq = mallocCheck((size_t)B * sizeof(int));
	int32_t *next = mallocCheck((size_t)B * sizeof(int32_t)), *best = mallocCheck((size_t)B * sizeof(int32_t));
	for (int b = 0; b < B; b++) {
		decoder_reset(d, b);
		decoder_prefill(d, b, prompts[b], lens[b], logits + (size_t)b * V);
		seq[b] = b;
	}
	int live = B;
	for (int k = 0; k < max_new && live > 0; k++) {
		for (int i = 0; i < live; i++) {
			const float *lg = logits + (size_t)i * V;
			best[i] = 0;
			for (int v = 1; v < V; v++)
				if (lg[v] > lg[best[i]])
					best[i] = v;
		}
		live = decoder_accept(best, live, seq, next, k, max_new, stop, nstop, out, on_token, ctx);
		if (live > 0)
			decoder_step(d, seq, next, live, logits);
	}
	free(logits), free(seq), free(next), free(best);
}
