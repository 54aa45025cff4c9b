/* supernet: the search's mixture of operators and its relaxations, on the
 * CPU (supernet.h) */
#include "supernet.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "loss.h" // defines: vocab_loss_cpu
#include "util.h"

/* the fields every Supernet has: K columns ops, w uniform, no operator */
static void sn_alloc(Supernet *sn, const Model *m, int K, const int *ops, int maxn)
{
	const ModelConfig *c = &m->cfg;
	if (K < 1 || K > SN_MAX_OPS || ops[0] != ARCH_FA)
		BUG("supernet_init: %d ops, the first %d", K, ops[0]);
	memset(sn, 0, sizeof *sn);
	sn->m = m, sn->L = c->L, sn->K = K, sn->maxn = maxn;
	memcpy(sn->ops, ops, (size_t)K * sizeof(int));
	sn->lop = callocCheck((size_t)c->L * K, sizeof *sn->lop);
	sn->w = mallocCheck((size_t)c->L * K * sizeof(float));
	sn->dw = callocCheck((size_t)c->L * K, sizeof(double));
	for (size_t i = 0; i < (size_t)c->L * K; i++)
		sn->w[i] = 1.0f / K;
}

/* the fingerprint of the operators there are, and the scratch */
static void sn_finish(Supernet *sn)
{
	size_t C = (size_t)sn->m->cfg.C;
	uint64_t h = HASH_INIT;
	for (size_t i = 0; i < (size_t)sn->L * sn->K; i++) {
		const LinearOp *op = &sn->lop[i];
		if (!op->w)
			continue;
		h = hash_bytes(h, op->w, op->n * sizeof(float));
	}
	sn->fingerprint = h;
	sn->out = mallocCheck((size_t)sn->K * sn->maxn * C * sizeof(float));
	sn->dt = mallocCheck((size_t)sn->maxn * C * sizeof(float));
}

void supernet_init(Supernet *sn, const Model *m, int K, const int *ops, const char *cand_dir, int window,
                   int maxn)
{
	sn_alloc(sn, m, K, ops, maxn);
	for (int l = 0; l < sn->L; l++)
		for (int k = 1; k < K; k++) {
			LinearOp *op = &sn->lop[(size_t)l * K + k];
			if (cand_dir || ops[k] == ARCH_SWA) {
				hybrid_op_load(op, ops[k], m, l, cand_dir, window);
			} else { /* untrained candidates, for tests */
				lop_init_teacher(op, ops[k] == ARCH_GDN ? LOP_GDN : LOP_GLA, m, l, 1);
			}
		}
	sn_finish(sn);
}

void supernet_init_hybrid(Supernet *sn, const Model *m, const Hybrid *h, int maxn)
{
	int ops[SN_MAX_OPS] = {ARCH_FA}, K = 1, col[ARCH_NOPS] = {0};
	for (int a = 1; a < ARCH_NOPS; a++) {
		int used = 0;
		for (int l = 0; l < h->L; l++)
			used |= h->ops[l] == a;
		if (used)
			col[a] = K, ops[K++] = a;
	}
	sn_alloc(sn, m, K, ops, maxn);
	sn->borrowed = 1;
	for (int l = 0; l < sn->L; l++) {
		int k = col[h->ops[l]];
		for (int j = 0; j < K; j++)
			sn->w[(size_t)l * K + j] = j == k;
		if (k > 0)
			sn->lop[(size_t)l * K + k] = h->lop[l];
	}
	sn_finish(sn);
}

void supernet_free(Supernet *sn)
{
	for (int l = 0; l < sn->L && !sn->borrowed; l++)
		for (int k = 1; k < sn->K; k++)
			lop_free(&sn->lop[(size_t)l * sn->K + k]);
	free(sn->lop), free(sn->w), free(sn->dw), free(sn->out), free(sn->dt);
	memset(sn, 0, sizeof *sn);
}

/* a = sum_k w_k op_k(u), a holding fa's output on entry. Outside a
 * backward, an op of weight 0 is not run; an empty one (a hybrid's
 * supernet) never, and must have weight 0. */
void supernet_hook(void *ctx, int l, const float *u, float *a, int B, int T)
{
	Supernet *sn = ctx;
	int K = sn->K;
	size_t nC = (size_t)B * T * sn->m->cfg.C;
	const float *w = sn->w + (size_t)l * K;
	if (B * T > sn->maxn)
		BUG("supernet_hook: %d rows, room for %d", B * T, sn->maxn);
	float *fa = sn->out; /* column 0: the teacher's attention */
	memcpy(fa, a, nC * sizeof(float));
	for (size_t i = 0; i < nC; i++)
		a[i] = w[0] * fa[i];
	for (int k = 1; k < K; k++) {
		const LinearOp *op = &sn->lop[(size_t)l * K + k];
		if (!op->w && w[k] != 0)
			BUG("supernet_hook: layer %d has no %s, of weight %g", l, arch_op_names[sn->ops[k]], w[k]);
		if (!op->w || (w[k] == 0 && !sn->keep))
			continue;
		float *o = sn->out + (size_t)k * nC;
		if (sn->fwd_fp8 && op->kind == LOP_GDN) /* as the GPU's bf16 gdn under --forward fp8 */
			lop_forward_fp8(op, o, u, B, T);
		else
			lop_forward(op, o, u, B, T);
		if (w[k] != 0)
			for (size_t i = 0; i < nC; i++)
				a[i] += w[k] * o[i];
	}
}

/* dL/dw_k = <dL/da, op_k(u)> (the outputs the hook kept for this layer);
 * du = sum_{k>0} w_k J_k^T dL/da; fa's path is the caller's, with w_0 */
float supernet_mix_grad(void *ctx, int l, const float *u, const float *da, float *du, int B, int T)
{
	Supernet *sn = ctx;
	int K = sn->K;
	size_t nC = (size_t)B * T * sn->m->cfg.C;
	const float *w = sn->w + (size_t)l * K;
	memset(du, 0, nC * sizeof(float));
	for (int k = 0; k < K; k++) {
		const float *o = sn->out + (size_t)k * nC;
		double s = 0;
#pragma omp parallel for reduction(+ : s) if (nC > 1 << 16)
		for (size_t i = 0; i < nC; i++)
			s += (double)da[i] * o[i];
		sn->dw[(size_t)l * K + k] += s;
		if (k == 0 || w[k] == 0)
			continue;
		for (size_t i = 0; i < nC; i++)
			sn->dt[i] = w[k] * da[i];
		/* lop_backward writes dL/du into its du (=): dt is scaled dL/da;
		 * no parameter gradients (grad NULL); gdn's products in e4m3
		 * under grad_fp8 and fwd_fp8, as the GPU's bf16 gdn (gla's stay
		 * float32) */
		float *dk = sn->out + (size_t)k * nC; /* op k's output is read already */
		const LinearOp *op = &sn->lop[(size_t)l * K + k];
		int fp8 = (sn->grad_fp8 ? LOP_FP8_GRAD : 0) | (sn->fwd_fp8 ? LOP_FP8_FWD : 0);
		if (fp8 && op->kind == LOP_GDN)
			lop_backward_fp8(op, dk, sn->dt, u, B, T, fp8);
		else
			lop_backward(op, NULL, dk, sn->dt, u, B, T);
		for (size_t i = 0; i < nC; i++)
			du[i] += dk[i];
	}
	return w[0];
}

/* the KL callback of model_backward_hooks: ctx is a KlCtx */
typedef struct {
	const Model *m;
	const float *teacher;
	float *row;
	int fp8; /* dhidden through e4m3 (grad_fp8) */
	int lg8; /* the logits through e4m3 (fwd_fp8 3) */
} KlCtx;

static double kl_loss(void *ctx, const float *hidden, float *dhidden, int n)
{
	KlCtx *k = ctx;
	const ModelConfig *c = &k->m->cfg;
	if (k->lg8)
		return vocab_loss_logits8_cpu(dhidden, k->row, hidden, k->teacher, NULL, &k->m->lm_head, n, c->C, c->V,
		                              1.0f / n, k->fp8);
	return (k->fp8 ? vocab_loss_fp8_cpu : vocab_loss_cpu)(dhidden, k->row, hidden, k->teacher, NULL,
	                                                      &k->m->lm_head, n, c->C, c->V, 1.0f / n);
}

double supernet_kl(Supernet *sn, const int32_t *ids, int B, int T, const float *teacher_hidden, float *row_kl)
{
	const ModelConfig *c = &sn->m->cfg;
	int n = B * T;
	float *hidden = mallocCheck((size_t)n * c->C * sizeof(float));
	(sn->fwd_fp8 ? model_forward_fp8 : model_forward)(sn->m, ids, B, T, hidden, supernet_hook, sn);
	KlCtx k = {sn->m, teacher_hidden, row_kl, 0, sn->fwd_fp8 == 3};
	double kl = kl_loss(&k, hidden, NULL, n);
	free(hidden);
	return kl;
}

/* the hooks of one backward: the supernet's, with the KL as the loss */
typedef struct {
	Supernet *sn;
	KlCtx kl;
} BackCtx;

static void back_hook(void *ctx, int l, const float *u, float *a, int B, int T)
{
	supernet_hook(((BackCtx *)ctx)->sn, l, u, a, B, T);
}

static float back_mix(void *ctx, int l, const float *u, const float *da, float *du, int B, int T)
{
	return supernet_mix_grad(((BackCtx *)ctx)->sn, l, u, da, du, B, T);
}

/* called between the forward that keeps each layer's input and the
 * layers' recomputation: from here on every op runs and keeps its output
 * (the first forward skips the ops of weight 0) */
static double back_loss(void *ctx, const float *hidden, float *dhidden, int n)
{
	BackCtx *bc = ctx;
	bc->sn->keep = 1;
	return kl_loss(&bc->kl, hidden, dhidden, n);
}

double supernet_backward_kl(Supernet *sn, const int32_t *ids, int B, int T, const float *teacher_hidden)
{
	if (sn->borrowed)
		BUG("supernet_backward_kl: a hybrid's supernet runs forwards only");
	BackCtx bc = {sn, {sn->m, teacher_hidden, NULL, sn->grad_fp8, sn->fwd_fp8 == 3}};
	BackwardHooks h = {.forward = back_hook, .mix = back_mix, .loss = back_loss, .ctx = &bc,
	                   .fp8 = sn->grad_fp8, .fwd8 = sn->fwd_fp8};
	double kl = model_backward_hooks(sn->m, ids, B, T, NULL, &h, NULL);
	sn->keep = 0;
	return kl;
}

/* ---------------------------------------------------------------------------
 * relaxations */

const char *const relax_names[RELAX_COUNT] = {"softmax", "gumbel-topk", "budget-dist"};

int relax_kind(const char *name)
{
	for (int i = 0; i < RELAX_COUNT; i++)
		if (!strcmp(name, relax_names[i]))
			return i;
	return -1;
}

void relax_init(Relax *r, RelaxKind kind, int L, int K, int nfa)
{
	memset(r, 0, sizeof *r);
	r->kind = kind, r->L = L, r->K = K, r->nfa = nfa, r->tau = 1;
	r->p = callocCheck((size_t)L, sizeof(double));
	r->q = callocCheck((size_t)L * K, sizeof(double));
}

void relax_free(Relax *r)
{
	free(r->p), free(r->q);
	memset(r, 0, sizeof *r);
}

static double sigmoid(double x)
{
	return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x));
}

/* q[k0..K) = softmax(a[k0..K) / tau) */
static void softmax_from(double *q, const float *a, int k0, int K, double tau)
{
	double mx = -INFINITY, z = 0;
	for (int k = k0; k < K; k++)
		mx = a[k] / tau > mx ? a[k] / tau : mx;
	for (int k = k0; k < K; k++)
		z += q[k] = exp(a[k] / tau - mx);
	for (int k = k0; k < K; k++)
		q[k] /= z;
}

/* the t that makes sum_l sigmoid((z_l - t) / tau) = n, 0 < n < L */
static double solve_threshold(const double *z, int L, double n, double tau)
{
	double lo = z[0], hi = z[0];
	for (int l = 1; l < L; l++)
		lo = z[l] < lo ? z[l] : lo, hi = z[l] > hi ? z[l] : hi;
	lo -= 60 * tau, hi += 60 * tau; /* the sum is L at lo and 0 at hi, to double precision */
	for (int it = 0; it < 200 && hi - lo > 1e-15 * (1 + fabs(lo) + fabs(hi)); it++) {
		double t = 0.5 * (lo + hi), s = 0;
		for (int l = 0; l < L; l++)
			s += sigmoid((z[l] - t) / tau);
		if (s > n)
			lo = t;
		else
			hi = t;
	}
	return 0.5 * (lo + hi);
}

static int cmp_desc(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? 1 : x > y ? -1 : 0;
}

void relax_weights(Relax *r, const float *alpha, const float *noise, float *w)
{
	int L = r->L, K = r->K, N = r->nfa;
	double tau = r->tau;
	if (r->kind == RELAX_SOFTMAX) {
		for (int l = 0; l < L; l++) {
			softmax_from(r->q + (size_t)l * K, alpha + (size_t)l * K, 0, K, tau);
			for (int k = 0; k < K; k++)
				w[(size_t)l * K + k] = (float)r->q[(size_t)l * K + k];
		}
		return;
	}
	/* budget-dist and gumbel-topk: the fa weight, then the rest shared by
	 * a softmax over the other ops */
	double *z = mallocCheck((size_t)L * sizeof(double)), *sorted = mallocCheck((size_t)L * sizeof(double));
	for (int l = 0; l < L; l++)
		z[l] = alpha[(size_t)l * K] + (r->kind == RELAX_GUMBEL_TOPK && noise ? noise[l] : 0);
	if (N <= 0 || N >= L) {
		r->t = N <= 0 ? INFINITY : -INFINITY;
		for (int l = 0; l < L; l++)
			r->p[l] = N <= 0 ? 0 : 1;
	} else if (r->kind == RELAX_BUDGET_DIST) {
		r->t = solve_threshold(z, L, N, tau);
		for (int l = 0; l < L; l++)
			r->p[l] = sigmoid((z[l] - r->t) / tau);
	} else {
		memcpy(sorted, z, (size_t)L * sizeof(double));
		qsort(sorted, (size_t)L, sizeof(double), cmp_desc);
		r->t = 0.5 * (sorted[N - 1] + sorted[N]);
		for (int l = 0; l < L; l++)
			r->p[l] = sigmoid((z[l] - r->t) / tau);
	}
	/* gumbel-topk's forward: the N largest z exactly (ties by layer order) */
	int chosen = 0;
	for (int l = 0; l < L; l++) {
		double fa = r->p[l];
		if (r->kind == RELAX_GUMBEL_TOPK) {
			fa = N >= L || (N > 0 && z[l] > r->t && chosen < N);
			chosen += fa != 0;
		}
		double *q = r->q + (size_t)l * K;
		q[0] = 0;
		if (K > 1)
			softmax_from(q, alpha + (size_t)l * K, 1, K, tau);
		w[(size_t)l * K] = (float)fa;
		for (int k = 1; k < K; k++)
			w[(size_t)l * K + k] = (float)((1 - fa) * q[k]);
	}
	free(z), free(sorted);
}

void relax_backward(const Relax *r, const double *dw, double *dalpha)
{
	int L = r->L, K = r->K;
	double tau = r->tau;
	if (r->kind == RELAX_SOFTMAX) {
		for (int l = 0; l < L; l++) {
			const double *q = r->q + (size_t)l * K, *g = dw + (size_t)l * K;
			double dot = 0;
			for (int k = 0; k < K; k++)
				dot += q[k] * g[k];
			for (int k = 0; k < K; k++)
				dalpha[(size_t)l * K + k] = q[k] * (g[k] - dot) / tau;
		}
		return;
	}
	/* w_l0 = p_l, w_lk = (1 - p_l) q_lk: dp_l and the softmax's part */
	double *dp = mallocCheck((size_t)L * sizeof(double)), *sl = mallocCheck((size_t)L * sizeof(double));
	double ss = 0, sg = 0;
	for (int l = 0; l < L; l++) {
		const double *q = r->q + (size_t)l * K, *g = dw + (size_t)l * K;
		double p = r->p[l], dot = 0;
		dp[l] = g[0];
		for (int k = 1; k < K; k++)
			dp[l] -= q[k] * g[k], dot += q[k] * (1 - p) * g[k];
		for (int k = 1; k < K; k++)
			dalpha[(size_t)l * K + k] = q[k] * ((1 - p) * g[k] - dot) / tau;
		sl[l] = p * (1 - p) / tau; /* dp_l / dz_l */
		ss += sl[l], sg += sl[l] * dp[l];
	}
	/* budget-dist: t moves with every z so that sum p = N:
	 * dt/dz_j = s_j / sum s; gumbel-topk holds t constant */
	double shift = r->kind == RELAX_BUDGET_DIST && ss > 0 ? sg / ss : 0;
	for (int l = 0; l < L; l++)
		dalpha[(size_t)l * K] = sl[l] * (dp[l] - shift);
	free(dp), free(sl);
}

void gumbel_noise(uint64_t seed, int64_t step, int L, float *g)
{
	for (int l = 0; l < L; l++) {
		uint64_t x = hash_u64(hash_u64(hash_u64(HASH_INIT, seed), (uint64_t)step), (uint64_t)l);
		x ^= x >> 33, x *= 0xff51afd7ed558ccdULL, x ^= x >> 33; /* FNV's low bits are weak: mix */
		double u = ((double)(x >> 11) + 0.5) / 9007199254740992.0; /* in (0, 1) */
		g[l] = (float)-log(-log(u));
	}
}
