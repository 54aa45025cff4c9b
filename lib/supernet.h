/*
 * supernet: the network search-logits differentiates (DESIGN.md section 3).
 * Every layer mixes K operators on its attention input u_l:
 *
 *   a_l = sum_k w_lk op_k(u_l),   op_0 = fa, the teacher's own attention
 *
 * and the other columns are swa (the teacher's attention in a window), or
 * the layer's gdn or gla candidate (cand/Lxx.h5). Every weight is frozen;
 * only the mixing weights w (L, K) move, and they come from the
 * architecture logits alpha (L, K) by a relaxation:
 *
 *   softmax      w_l = softmax(alpha_l / tau) over all K ops; the budget is
 *                a penalty, lambda (sum_l w_l0 - N)^2 / L, added by the caller
 *   budget-dist  w_l0 = p_l = sigmoid((alpha_l0 - t) / tau), with t solved so
 *                that sum_l p_l = N exactly (t differentiated implicitly);
 *                w_lk = (1 - p_l) softmax_{k>0}(alpha_lk / tau)
 *   gumbel-topk  z_l = alpha_l0 + g_l (g_l Gumbel noise, one draw a layer a
 *                step); the N largest z keep fa outright (w_l0 = 1, the rest
 *                0), every other layer w_lk = softmax_{k>0}(alpha_lk / tau);
 *                the backward is straight-through: it differentiates the
 *                soft p_l = sigmoid((z_l - t) / tau), t halfway between the
 *                N-th and (N+1)-th largest z, held constant, in place of the
 *                hard choice
 *
 * The backward (supernet_backward_kl) gives dL/dw through the whole network
 * (lib/backward.c's model_backward_hooks: activations only), and
 * relax_backward turns dL/dw into dL/dalpha. CPU reference, float32
 * activations; the KL over the vocabulary in double (lib/loss.h).
 */
#ifndef DASH_SUPERNET_H
#define DASH_SUPERNET_H

#include <stdint.h>

#include "hybrid.h"    // defines: ARCH_FA, ARCH_SWA, arch_op_names
#include "linear_op.h" // defines: LinearOp
#include "model.h"     // defines: Model

#define SN_MAX_OPS ARCH_NOPS

typedef struct {
	const Model *m;
	int L, K;
	int ops[SN_MAX_OPS]; /* ARCH_* of each column, ops[0] == ARCH_FA */
	LinearOp *lop;       /* (L, K) column k > 0's operator at each layer; empty
	                      * (w NULL) where a hybrid's layer lacks it */
	int borrowed;        /* the operators are a Hybrid's, not freed here */
	float *w;            /* (L, K) the weights every forward mixes with */
	double *dw;          /* (L, K) dL/dw, added to by supernet_backward_kl */
	uint64_t fingerprint; /* of every operator's parameters */
	int grad_fp8;         /* 1: the backward's products through float8 e4m3
	                       * (lib/fp8.h; search-logits --grad fp8): the
	                       * teacher's four a layer, the vocabulary's
	                       * (vocab_loss_fp8_cpu) and gdn's two
	                       * (lop_backward_fp8); gla's stay float32 */
	int fwd_fp8;          /* 1: the supernet's forward takes the teacher's
	                       * four products a layer through e4m3 too
	                       * (model_forward_fp8; search-logits --forward
	                       * fp8), and gdn's two (lop_forward_fp8), the
	                       * teacher's own forward not; 2
	                       * (--forward fp8-both): the teacher's forward
	                       * too, whose rows the caller then makes by
	                       * model_forward_fp8 (gpu_supernet_teacher does);
	                       * 3 (--forward fp8-all): as 2, and both sides'
	                       * vocabulary logits through e4m3
	                       * (vocab_loss_logits8_cpu) */
	int fwd_fast;         /* with fwd_fp8 3 on the GPU (search-logits
	                       * --forward fp8-fast): the forwards' e4m3
	                       * products sum in the tensor cores' own
	                       * accumulator (kernels/matmul.cu); the CPU's
	                       * sums are float32 either way */
	/* scratch */
	int keep;  /* in a backward: every op runs and its output is kept */
	int maxn;  /* rows the scratch holds */
	float *out; /* (K, maxn, C) the ops' outputs at the last layer hooked */
	float *dt;  /* (maxn, C) */
} Supernet;

/* supernet_init: the operators of every layer for columns ops[1..K-1]
 * (ops[0] must be ARCH_FA), gdn and gla from cand_dir/Lxx.h5, swa from the
 * teacher with the window; maxn rows (B*T) at most a call. w starts
 * uniform. Dies naming the file on a missing or foreign candidate.
 * cand_dir NULL makes untrained candidates (lop_init_teacher, seed 1), for
 * tests. */
void supernet_init(Supernet *sn, const Model *m, int K, const int *ops, const char *cand_dir, int window,
                   int maxn);
/* supernet_init_hybrid: the supernet that is hybrid h (hybrid_load) of
 * teacher m, for forwards only (supernet_kl, gpu_supernet_kl,
 * gpu_supernet_eval): columns fa and the operators h uses, in ARCH_*
 * order; each layer holds its own operator alone (borrowed from h, which
 * must outlive the Supernet), the other columns' stay empty and must keep
 * weight 0; w is one-hot on each layer's operator. */
void supernet_init_hybrid(Supernet *sn, const Model *m, const Hybrid *h, int maxn);
void supernet_free(Supernet *sn);

/* the LayerHook and LayerMixGrad of the supernet (ctx: the Supernet) */
void supernet_hook(void *ctx, int l, const float *u, float *a, int B, int T);
float supernet_mix_grad(void *ctx, int l, const float *u, const float *da, float *du, int B, int T);

/* supernet_kl: the forward of B sequences of T ids mixed by w, and the
 * mean over rows of KL(teacher || supernet) given the teacher's final
 * hidden rows (B*T, C); row_kl (B*T) or NULL. */
double supernet_kl(Supernet *sn, const int32_t *ids, int B, int T, const float *teacher_hidden, float *row_kl);
/* supernet_backward_kl: the same mean KL, and its gradient with respect to
 * w added to sn->dw */
double supernet_backward_kl(Supernet *sn, const int32_t *ids, int B, int T, const float *teacher_hidden);

/* ---------------------------------------------------------------------------
 * relaxations: alpha (L, K) to w (L, K) and back */
typedef enum { RELAX_SOFTMAX, RELAX_GUMBEL_TOPK, RELAX_BUDGET_DIST, RELAX_COUNT } RelaxKind;
extern const char *const relax_names[RELAX_COUNT]; /* "softmax", "gumbel-topk", "budget-dist" */
int relax_kind(const char *name);                  /* -1 if unknown */

typedef struct {
	RelaxKind kind;
	int L, K, nfa;
	double tau;
	/* what relax_weights keeps for relax_backward */
	double *p;    /* (L) the fa weight's soft form */
	double *q;    /* (L, K) softmax over all ops (softmax) or over k > 0 */
	double t;     /* the threshold (budget-dist, gumbel-topk) */
} Relax;

void relax_init(Relax *r, RelaxKind kind, int L, int K, int nfa);
void relax_free(Relax *r);
/* relax_weights: w (L, K) from alpha at temperature r->tau; noise (L), the
 * Gumbel draws of gumbel-topk (NULL elsewhere) */
void relax_weights(Relax *r, const float *alpha, const float *noise, float *w);
/* relax_backward: dalpha (L, K) (=) from dw (L, K), for the last
 * relax_weights */
void relax_backward(const Relax *r, const double *dw, double *dalpha);
/* gumbel_noise: L standard Gumbel draws for a step, a pure function of
 * (seed, step), so a resumed run draws what an uninterrupted one would */
void gumbel_noise(uint64_t seed, int64_t step, int L, float *g);

#endif
