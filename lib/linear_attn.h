/*
 * linear_attn: the recurrences at the heart of the linear-attention
 * candidates (DESIGN.md section 2), CPU reference, in fla's conventions:
 *   q, k (B, T, H, Dk), v (B, T, H, Dv), o (B, T, H, Dv), state S
 *   (B, H, Dk, Dv); per time step and head, with scale usually 1/sqrt(Dk):
 *
 * Gated DeltaNet (fla's gated delta rule; g (B, T, H) log decay, beta
 * (B, T, H) in (0, 1)):
 *   S~ = exp(g_t) S_{t-1};  w_t = beta_t (v_t - S~^T k_t);
 *   S_t = S~ + k_t w_t^T;   o_t = scale S_t^T q_t
 *
 * GLA (gk (B, T, H, Dk) log decay per key dimension):
 *   S_t = diag(exp(gk_t)) S_{t-1} + k_t v_t^T;  o_t = scale S_t^T q_t
 *
 * S is the initial state on entry (zeros for none) and the final state on
 * return, so that a call with T = 1 is the decoding step and consecutive
 * calls continue a sequence. The recurrent form is the specification; the
 * chunked form (chunks of `chunk` steps, the shape the GPU kernels take)
 * gives the same result up to rounding: within a chunk, GDN's w solve a
 * unit lower-triangular system (forward substitution) and both outputs are
 * an intra-chunk product plus the chunk's initial state's share.
 *
 * The backwards give the gradients to every input and to the initial state
 * from dout and the gradient of the final state (dSf, NULL for none); they
 * keep the state at every 64th step and recompute the steps between. Any
 * gradient pointer may be NULL when not wanted except dq, dk, dv. Sums are
 * in double where they run over Dk or Dv; loops over (b, h) run on OpenMP.
 */
#ifndef DASH_LINEAR_ATTN_H
#define DASH_LINEAR_ATTN_H

void gdn_forward_recurrent(float *o, float *S, const float *q, const float *k, const float *v, const float *g,
                           const float *beta, int B, int T, int H, int Dk, int Dv, float scale);
void gdn_forward_chunked(float *o, float *S, const float *q, const float *k, const float *v, const float *g,
                         const float *beta, int B, int T, int H, int Dk, int Dv, float scale, int chunk);
/* S0: the initial state the forward started from (NULL: zeros) */
void gdn_backward(float *dq, float *dk, float *dv, float *dg, float *dbeta, float *dS0, const float *dout,
                  const float *dSf, const float *q, const float *k, const float *v, const float *g,
                  const float *beta, const float *S0, int B, int T, int H, int Dk, int Dv, float scale);
/* the same gradients computed chunk by chunk (chunks of `chunk` steps, the
 * GPU kernels' shape), from the start state of every chunk */
void gdn_backward_chunked(float *dq, float *dk, float *dv, float *dg, float *dbeta, float *dS0, const float *dout,
                          const float *dSf, const float *q, const float *k, const float *v, const float *g,
                          const float *beta, const float *S0, int B, int T, int H, int Dk, int Dv, float scale,
                          int chunk);

void gla_forward_recurrent(float *o, float *S, const float *q, const float *k, const float *v, const float *gk,
                           int B, int T, int H, int Dk, int Dv, float scale);
void gla_forward_chunked(float *o, float *S, const float *q, const float *k, const float *v, const float *gk,
                         int B, int T, int H, int Dk, int Dv, float scale, int chunk);
void gla_backward(float *dq, float *dk, float *dv, float *dgk, float *dS0, const float *dout, const float *dSf,
                  const float *q, const float *k, const float *v, const float *gk, const float *S0, int B, int T,
                  int H, int Dk, int Dv, float scale);
/* the same gradients computed chunk by chunk (chunks of `chunk` steps, the
 * GPU kernels' shape), from the start state of every chunk */
void gla_backward_chunked(float *dq, float *dk, float *dv, float *dgk, float *dS0, const float *dout,
                          const float *dSf, const float *q, const float *k, const float *v, const float *gk,
                          const float *S0, int B, int T, int H, int Dk, int Dv, float scale, int chunk);

#endif
