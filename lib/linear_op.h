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
 *
 * All parameters live in one float array (op->w), described by a table of
 * named blocks (op->p), so that the optimizer, checkpoints and candidate
 * files walk one list. lop_backward adds the gradient of every parameter
 * (same layout, +=) and writes dL/du (=) from dL/da; it recomputes the
 * forward it needs.
 */
#ifndef DASH_LINEAR_OP_H
#define DASH_LINEAR_OP_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

enum { LOP_GDN, LOP_GLA };
#define LOP_MAX_PARAMS 16
#define LOP_GLA_RANK 16

typedef struct {
	const char *name;
	int rows, cols; /* a vector has cols 1 */
	size_t off;     /* in floats, into w */
} LopParam;

typedef struct {
	int kind, C, H, G, D, R;
	int np;
	LopParam p[LOP_MAX_PARAMS];
	size_t n; /* floats in w */
	float *w;
} LinearOp;

/* lop_kind returns LOP_GDN or LOP_GLA for "gdn" or "gla", -1 otherwise;
 * lop_name the other way round */
int lop_kind(const char *name);
const char *lop_name(int kind);

/* lop_init lays out the parameters of a kind at a shape, all zero */
void lop_init(LinearOp *op, int kind, int C, int H, int G, int D);
/* lop_init_teacher: Wq, Wk, Wv, Wo and their biases from layer l of m, the
 * new projections small random (uniform +-1/sqrt(fan in), seeded), onorm 1,
 * A_log and dt_bias as fla initialises them */
void lop_init_teacher(LinearOp *op, int kind, const Model *m, int l, uint64_t seed);
void lop_free(LinearOp *op);
/* the parameter block name, or NULL */
const LopParam *lop_param(const LinearOp *op, const char *name);

void lop_forward(const LinearOp *op, float *a, const float *u, int B, int T);
void lop_backward(const LinearOp *op, float *grad, float *du, const float *da, const float *u, int B, int T);

#endif
