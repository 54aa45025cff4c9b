/*
 * linear_op: the linear-attention candidates as whole operators (DESIGN.md
 * section 2): u_l (n, C), the input of layer l's attention, to a_l (n, C),
 * what the candidate imitates. CPU reference, float32 parameters.
 *
 * gdn (Gated DeltaNet, fla conventions):
 *   q = l2norm(silu(Wq u + bq)), k = l2norm(silu(Wk u + bk)), v = silu(Wv u + bv)
 *   (per head; k and v repeated from G to H heads), beta = sigmoid(Wb u),
 *   g = -exp(A_log) softplus(Wa u + dt_bias), o = the gated delta rule
 * gla:
 *   q = Wq u + bq, k = Wk u + bk, v = Wv u + bv (k, v repeated likewise),
 *   gk = logsigmoid(Wgk2 (Wgk1 u) + bgk) / 16 (rank R = 16), o = the GLA rule
 * both, with scale 1/sqrt(D), from a zero state:
 *   a = Wo (rmsnorm_D(o) * onorm * silu(Wg u)) + bo
 * swa (the teacher's own attention limited to a sliding window; nothing to
 * train, it takes the teacher's weights as they are):
 *   q, k = rope(Wq u + bq), rope(Wk u + bk), v = Wv u + bv,
 *   a = Wo attention_window(q, k, v) + bo
 *
 * All parameters live in one float array (op->w), described by a table of
 * named blocks (op->p), so that the optimizer, checkpoints and candidate
 * files walk one list. lop_backward adds the gradient of every parameter
 * (same layout, +=) and writes dL/du (=) from dL/da; it recomputes the
 * forward it needs. grad NULL: dL/du alone (what a search through frozen
 * operators wants; the parameter gradients' GEMMs skipped).
 */
#ifndef DASH_LINEAR_OP_H
#define DASH_LINEAR_OP_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

enum { LOP_GDN, LOP_GLA, LOP_SWA };
#define LOP_MAX_PARAMS 16
#define LOP_GLA_RANK 16
#define LOP_SWA_WINDOW 1024 /* DESIGN.md's default W */

typedef struct {
	const char *name;
	int rows, cols; /* a vector has cols 1 */
	size_t off;     /* in floats, into w */
} LopParam;

typedef struct {
	int kind, C, H, G, D, R;
	int window;      /* swa: W >= 1 positions, its own included */
	float *inv_freq; /* swa: RoPE's (D/2) */
	int np;
	LopParam p[LOP_MAX_PARAMS];
	size_t n; /* floats in w */
	float *w;
} LinearOp;

/* lop_kind returns LOP_GDN, LOP_GLA or LOP_SWA for "gdn", "gla" or "swa",
 * -1 otherwise; lop_name the other way round */
int lop_kind(const char *name);
const char *lop_name(int kind);

/* lop_init lays out the parameters of a kind at a shape, all zero (swa:
 * window LOP_SWA_WINDOW, RoPE base 10000) */
void lop_init(LinearOp *op, int kind, int C, int H, int G, int D);
/* lop_init_teacher: Wq, Wk, Wv, Wo and their biases from layer l of m, the
 * new projections small random (uniform +-1/sqrt(fan in), seeded), onorm 1,
 * A_log and dt_bias as fla initialises them; swa: the teacher's RoPE */
void lop_init_teacher(LinearOp *op, int kind, const Model *m, int l, uint64_t seed);
void lop_free(LinearOp *op);
/* the parameter block name, or NULL */
const LopParam *lop_param(const LinearOp *op, const char *name);

void lop_forward(const LinearOp *op, float *a, const float *u, int B, int T);
/* lop_forward_state: the same for gdn and gla from given states: S (B, H,
 * D, D) holds each sequence's recurrent state before its T tokens in, and
 * after them out (what a decoder carries from chunk to chunk) */
void lop_forward_state(const LinearOp *op, float *a, const float *u, int B, int T, float *S);
void lop_backward(const LinearOp *op, float *grad, float *du, const float *da, const float *u, int B, int T);
/* lop_forward_fp8: gdn's forward with its products through float8 e4m3
 * (lib/fp8.h, matmul_forward_fp8_cpu), as gpu_lop_forward_bf16 runs them
 * after gpu_lop_forward_fp8 (search-logits --forward fp8): the six input
 * projections from u's codes (by rows), Wo from y's, each weight by its
 * rows, the biases added in float32 after */
void lop_forward_fp8(const LinearOp *op, float *a, const float *u, int B, int T);
/* lop_backward_fp8: gdn's du alone (no parameter gradients) with e4m3 where
 * fp8 says: LOP_FP8_GRAD, its two backward products, as
 * gpu_lop_backward_bf16 runs them after gpu_lop_grad_fp8 (search-logits
 * --grad fp8): dy = da Wo, and du = [dpq dpk dpv dza dzb dzg] [Wq; Wk; Wv;
 * Wa; Wb; Wg], the six gradients quantised as one row and the stacked
 * weights' columns as one; LOP_FP8_FWD, the forward it makes again is
 * lop_forward_fp8's (as the GPU's kept activations are after
 * gpu_lop_forward_fp8) */
#define LOP_FP8_GRAD 1
#define LOP_FP8_FWD 2
void lop_backward_fp8(const LinearOp *op, float *du, const float *da, const float *u, int B, int T, int fp8);

/* Decoding, a token at a time: a LopState holds what the operator carries
 * from one token to the next for B sequences (gdn, gla: the recurrence's
 * state, H D^2 floats a sequence; swa: the last W positions' k and v, a
 * ring of 2 W G D floats), starting empty. lop_decode turns the next token's
 * u (B, C) into a (B, C) and advances the state; a sequence decoded this way
 * gives what lop_forward gives for all of it at once. */
typedef struct {
	int B;
	long long pos; /* tokens decoded so far */
	float *S;      /* gdn, gla: (B, H, D, D) */
	float *kc, *vc; /* swa: (B, W, G, D), position p in slot p % W */
} LopState;
void lop_state_init(LopState *s, const LinearOp *op, int B);
void lop_state_free(LopState *s);
void lop_decode(const LinearOp *op, LopState *s, float *a, const float *u);

#endif
