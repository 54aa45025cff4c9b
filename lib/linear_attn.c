/*
 * linear_attn: Gated DeltaNet and GLA recurrences, recurrent and chunked
 * forward, backward through time (the contract is in linear_attn.h). Each
 * (sequence, head) pair is independent: the loops below take one pair at a
 * time, the pairs run on OpenMP.
 */
#include "linear_attn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define CKPT 64 /* the backwards keep the state every CKPT steps */

/* one (sequence b, head h) pair's view of the (B, T, H, D) arrays: row t of
 * x is x + off(t) * D */
typedef struct {
	int T, H;
	size_t base; /* b * T * H + h */
} Pair;

static inline size_t off(const Pair *p, int t) { return p->base + (size_t)t * p->H; }

static inline double dot(const float *a, const float *b, int n)
{
	double s = 0;
	for (int i = 0; i < n; i++)
		s += (double)a[i] * b[i];
	return s;
}

/* out (Dv) = S^T x (x: Dk), S (Dk, Dv) */
static void st_x(double *out, const float *S, const float *x, int Dk, int Dv)
{
	for (int j = 0; j < Dv; j++)
		out[j] = 0;
	for (int i = 0; i < Dk; i++)
		for (int j = 0; j < Dv; j++)
			out[j] += (double)S[(size_t)i * Dv + j] * x[i];
}

/* dS (Dk, Dv) += s x y^T */
static void outer_add(double *dS, const float *x, const float *y, double s, int Dk, int Dv)
{
	for (int i = 0; i < Dk; i++)
		for (int j = 0; j < Dv; j++)
			dS[(size_t)i * Dv + j] += s * x[i] * y[j];
}

/* out (Dv) = dS^T x (x: Dk), dS double */
static void dst_x(double *out, const double *dS, const float *x, int Dk, int Dv)
{
	for (int j = 0; j < Dv; j++) {
		double s = 0;
		for (int i = 0; i < Dk; i++)
			s += dS[(size_t)i * Dv + j] * x[i];
		out[j] = s;
	}
}

// ----------------------------------------------------------------------------
// Gated DeltaNet

/* one step on S (Dk, Dv): decay, delta update, output; u and w (Dv) keep
 * S~^T k and the update row for a backward */
static void gdn_step(float *o, float *S, const float *q, const float *k, const float *v, float g, float beta, int Dk,
                     int Dv, float scale, double *u, double *w)
{
	float a = expf(g);
	for (size_t i = 0; i < (size_t)Dk * Dv; i++)
		S[i] *= a;
	st_x(u, S, k, Dk, Dv);
	for (int j = 0; j < Dv; j++)
		w[j] = beta * (v[j] - u[j]);
	for (int i = 0; i < Dk; i++)
		for (int j = 0; j < Dv; j++)
			S[(size_t)i * Dv + j] += (float)(k[i] * w[j]);
	st_x(u + Dv, S, q, Dk, Dv); /* scratch: S^T q after u */
	for (int j = 0; j < Dv; j++)
		o[j] = (float)(scale * u[Dv + j]);
}

void gdn_forward_recurrent(float *o, float *S, const float *q, const float *k, const float *v, const float *g,
                           const float *beta, int B, int T, int H, int Dk, int Dv, float scale)
{
	#pragma omp parallel for schedule(dynamic)
	for (int bh = 0; bh < B * H; bh++) {
		Pair p = {T, H, (size_t)(bh / H) * T * H + bh % H};
		float *Sh = S + (size_t)bh * Dk * Dv;
		double *u = mallocCheck(3 * (size_t)Dv * sizeof(double)), *w = u + 2 * Dv;
		for (int t = 0; t < T; t++) {
			size_t r = off(&p, t);
			gdn_step(o + r * Dv, Sh, q + r * Dk, k + r * Dk, v + r * Dv, g[r], beta[r], Dk, Dv, scale, u, w);
		}
		free(u);
	}
}

/* Within a chunk of n steps starting from state S0, with G_i the sum of g
 * over steps 0..i of the chunk:
 *   w_i + sum_{j<i} beta_i exp(G_i - G_j) (k_i . k_j) w_j = beta_i (v_i - exp(G_i) S0^T k_i)
 *   o_i = scale (exp(G_i) S0^T q_i + sum_{j<=i} exp(G_i - G_j) (q_i . k_j) w_j)
 *   S   = exp(G_{n-1}) S0 + sum_j exp(G_{n-1} - G_j) k_j w_j^T */
void gdn_forward_chunked(float *o, float *S, const float *q, const float *k, const float *v, const float *g,
                         const float *beta, int B, int T, int H, int Dk, int Dv, float scale, int chunk)
{
	if (chunk < 1)
		BUG("gdn_forward_chunked: chunk %d", chunk);
	#pragma omp parallel for schedule(dynamic)
	for (int bh = 0; bh < B * H; bh++) {
		Pair p = {T, H, (size_t)(bh / H) * T * H + bh % H};
		float *Sh = S + (size_t)bh * Dk * Dv;
		double *G = mallocCheck((size_t)chunk * sizeof(double));
		double *W = mallocCheck((size_t)chunk * Dv * sizeof(double)), *x = mallocCheck((size_t)Dv * sizeof(double));
		for (int c0 = 0; c0 < T; c0 += chunk) {
			int n = T - c0 < chunk ? T - c0 : chunk;
			for (int i = 0; i < n; i++)
				G[i] = (i ? G[i - 1] : 0) + g[off(&p, c0 + i)];
			for (int i = 0; i < n; i++) {
				size_t ri = off(&p, c0 + i);
				const float *ki = k + ri * Dk;
				double bi = beta[ri], *wi = W + (size_t)i * Dv;
				st_x(x, Sh, ki, Dk, Dv);
				for (int j = 0; j < Dv; j++)
					wi[j] = bi * (v[ri * Dv + j] - exp(G[i]) * x[j]);
				for (int m = 0; m < i; m++) {
					double a = bi * exp(G[i] - G[m]) * dot(ki, k + off(&p, c0 + m) * Dk, Dk);
					for (int j = 0; j < Dv; j++)
						wi[j] -= a * W[(size_t)m * Dv + j];
				}
			}
			for (int i = 0; i < n; i++) {
				size_t ri = off(&p, c0 + i);
				const float *qi = q + ri * Dk;
				st_x(x, Sh, qi, Dk, Dv);
				for (int j = 0; j < Dv; j++)
					x[j] *= exp(G[i]);
				for (int m = 0; m <= i; m++) {
					double a = exp(G[i] - G[m]) * dot(qi, k + off(&p, c0 + m) * Dk, Dk);
					for (int j = 0; j < Dv; j++)
						x[j] += a * W[(size_t)m * Dv + j];
				}
				for (int j = 0; j < Dv; j++)
					o[ri * Dv + j] = (float)(scale * x[j]);
			}
			double last = G[n - 1];
			for (size_t i = 0; i < (size_t)Dk * Dv; i++)
				Sh[i] = (float)(Sh[i] * exp(last));
			for (int m = 0; m < n; m++) {
				const float *km = k + off(&p, c0 + m) * Dk;
				double a = exp(last - G[m]);
				for (int i = 0; i < Dk; i++)
					for (int j = 0; j < Dv; j++)
						Sh[(size_t)i * Dv + j] += (float)(a * km[i] * W[(size_t)m * Dv + j]);
			}
		}
		free(G), free(W), free(x);
	}
}

/* Backward through time, one step (the forward's S~ = exp(g) S_{t-1}, u =
 * S~^T k and w kept), dS the gradient with respect to S_t on entry and to
 * S_{t-1} on return:
 *   dS += scale q do^T;  dq = scale S_t do;  dw = dS^T k;  dk = dS w
 *   dbeta = dw . (v - u);  dv = beta dw;  du = -beta dw
 *   dS~ = dS + k du^T;  dk += S~ du;  dg = <dS~, S~>;  dS_{t-1} = exp(g) dS~ */
void gdn_backward(float *dq, float *dk, float *dv, float *dg, float *dbeta, float *dS0, const float *dout,
                  const float *dSf, const float *q, const float *k, const float *v, const float *g,
                  const float *beta, const float *S0, int B, int T, int H, int Dk, int Dv, float scale)
{
	size_t SS = (size_t)Dk * Dv;
	#pragma omp parallel for schedule(dynamic)
	for (int bh = 0; bh < B * H; bh++) {
		Pair p = {T, H, (size_t)(bh / H) * T * H + bh % H};
		int nck = (T + CKPT - 1) / CKPT;
		float *ck = mallocCheck(((size_t)nck + 1) * SS * sizeof(float));   /* state before each chunk */
		float *St = mallocCheck((size_t)CKPT * SS * sizeof(float));         /* S~ of each step of a chunk */
		double *U = mallocCheck((size_t)CKPT * 2 * Dv * sizeof(double));    /* u, then w, a step */
		double *dS = mallocCheck(SS * sizeof(double)), *dw = mallocCheck((size_t)(2 * Dv + Dk) * sizeof(double));
		double *du = dw + Dv, *tk = du + Dv;
		float *S = mallocCheck(SS * sizeof(float)), *ob = mallocCheck((size_t)Dv * sizeof(float));
		double *uw = mallocCheck(3 * (size_t)Dv * sizeof(double));
		if (S0)
			memcpy(S, S0 + (size_t)bh * SS, SS * sizeof(float));
		else
			memset(S, 0, SS * sizeof(float));
		for (int c = 0; c < nck; c++) {
			memcpy(ck + (size_t)c * SS, S, SS * sizeof(float));
			for (int t = c * CKPT; t < T && t < (c + 1) * CKPT; t++) {
				size_t r = off(&p, t);
				gdn_step(ob, S, q + r * Dk, k + r * Dk, v + r * Dv, g[r], beta[r], Dk, Dv, scale, uw, uw + 2 * Dv);
			}
		}
		for (size_t i = 0; i < SS; i++)
			dS[i] = dSf ? dSf[(size_t)bh * SS + i] : 0;
		for (int c = nck - 1; c >= 0; c--) {
			int t0 = c * CKPT, t1 = T < t0 + CKPT ? T : t0 + CKPT;
			memcpy(S, ck + (size_t)c * SS, SS * sizeof(float));
			for (int t = t0; t < t1; t++) {
				size_t r = off(&p, t);
				float a = expf(g[r]);
				float *Sti = St + (size_t)(t - t0) * SS;
				for (size_t i = 0; i < SS; i++)
					Sti[i] = S[i] * a;
				gdn_step(ob, S, q + r * Dk, k + r * Dk, v + r * Dv, g[r], beta[r], Dk, Dv, scale, uw, uw + 2 * Dv);
				memcpy(U + (size_t)(t - t0) * 2 * Dv, uw, Dv * sizeof(double));
				memcpy(U + (size_t)(t - t0) * 2 * Dv + Dv, uw + 2 * Dv, Dv * sizeof(double));
			}
			for (int t = t1 - 1; t >= t0; t--) {
				size_t r = off(&p, t);
				const float *qt = q + r * Dk, *kt = k + r * Dk, *vt = v + r * Dv, *dot_ = dout + r * Dv;
				const float *Sti = St + (size_t)(t - t0) * SS;
				const double *u = U + (size_t)(t - t0) * 2 * Dv, *w = u + Dv;
				double bt = beta[r];
				/* dq = scale S_t do with S_t = S~ + k w^T */
				for (int i = 0; i < Dk; i++) {
					double s = 0;
					for (int j = 0; j < Dv; j++)
						s += (Sti[(size_t)i * Dv + j] + kt[i] * w[j]) * dot_[j];
					dq[r * Dk + i] = (float)(scale * s);
				}
				outer_add(dS, qt, dot_, scale, Dk, Dv);
				dst_x(dw, dS, kt, Dk, Dv);
				double db = 0;
				for (int j = 0; j < Dv; j++) {
					db += dw[j] * (vt[j] - u[j]);
					dv[r * Dv + j] = (float)(bt * dw[j]);
					du[j] = -bt * dw[j];
				}
				if (dbeta)
					dbeta[r] = (float)db;
				for (int i = 0; i < Dk; i++) {
					double s = 0, s2 = 0;
					for (int j = 0; j < Dv; j++) {
						s += dS[(size_t)i * Dv + j] * w[j];
						s2 += Sti[(size_t)i * Dv + j] * du[j];
					}
					tk[i] = s + s2;
				}
				for (int i = 0; i < Dk; i++)
					dk[r * Dk + i] = (float)tk[i];
				double dgt = 0, a = exp(g[r]);
				for (int i = 0; i < Dk; i++)
					for (int j = 0; j < Dv; j++) {
						double d = dS[(size_t)i * Dv + j] + kt[i] * du[j]; /* dS~ */
						dgt += d * Sti[(size_t)i * Dv + j];
						dS[(size_t)i * Dv + j] = a * d;
					}
				if (dg)
					dg[r] = (float)dgt;
			}
		}
		if (dS0)
			for (size_t i = 0; i < SS; i++)
				dS0[(size_t)bh * SS + i] = (float)dS[i];
		free(ck), free(St), free(U), free(dS), free(dw), free(S), free(ob), free(uw);
	}
}

/* One chunk of n steps (rows c0..c0+n-1 of pair p) from the start state S,
 * in WY form, everything in double; the buffers hold C = the chunk length:
 *   G (n)          chunk-local cumulative sums of g
 *   Ak (n, n)      exp(G_i - G_j) (k_i . k_j) for j < i, else 0; A = diag(beta) Ak
 *   Y (n, Dv + Dk) [U | W] = (I + A)^{-1} [diag(beta) V | diag(beta exp(G)) K]
 *   Wn (n, Dv)     U - W S, the delta rule's update rows */
typedef struct {
	double *G, *Ak, *Y, *Wn;
} GdnChunk;

static void gdn_chunk(GdnChunk *ch, const Pair *p, int c0, int n, const float *k, const float *v, const float *g,
                      const float *beta, const double *S, int Dk, int Dv)
{
	int ny = Dv + Dk;
	for (int i = 0; i < n; i++)
		ch->G[i] = (i ? ch->G[i - 1] : 0) + g[off(p, c0 + i)];
	for (int i = 0; i < n; i++) {
		size_t ri = off(p, c0 + i);
		const float *ki = k + ri * Dk;
		double bi = beta[ri], *yi = ch->Y + (size_t)i * ny;
		for (int j = 0; j < Dv; j++)
			yi[j] = bi * v[ri * Dv + j];
		for (int d = 0; d < Dk; d++)
			yi[Dv + d] = bi * exp(ch->G[i]) * ki[d];
		/* forward substitution: y_i = x_i - sum_{m<i} A_im y_m */
		for (int m = 0; m < n; m++) {
			double a = m < i ? exp(ch->G[i] - ch->G[m]) * dot(ki, k + off(p, c0 + m) * Dk, Dk) : 0;
			ch->Ak[(size_t)i * n + m] = a;
			for (int j = 0; m < i && j < ny; j++)
				yi[j] -= bi * a * ch->Y[(size_t)m * ny + j];
		}
		for (int j = 0; j < Dv; j++) {
			double s = yi[j];
			for (int d = 0; d < Dk; d++)
				s -= yi[Dv + d] * S[(size_t)d * Dv + j];
			ch->Wn[(size_t)i * Dv + j] = s;
		}
	}
}

/* S = exp(G_{n-1}) S + sum_j exp(G_{n-1} - G_j) k_j wn_j^T: the state after
 * the chunk */
static void gdn_chunk_state(double *S, const GdnChunk *ch, const Pair *p, int c0, int n, const float *k, int Dk,
                            int Dv)
{
	double last = ch->G[n - 1];
	for (size_t i = 0; i < (size_t)Dk * Dv; i++)
		S[i] *= exp(last);
	for (int m = 0; m < n; m++) {
		const float *km = k + off(p, c0 + m) * Dk;
		double a = exp(last - ch->G[m]);
		for (int d = 0; d < Dk; d++)
			for (int j = 0; j < Dv; j++)
				S[(size_t)d * Dv + j] += a * km[d] * ch->Wn[(size_t)m * Dv + j];
	}
}

/* Backward chunk by chunk. A forward pass keeps the start state of every
 * chunk (in double); then the chunks run last to first, each from its start
 * state S and dS, the gradient with respect to its end state, which on
 * return is the gradient with respect to S (the previous chunk's end state).
 * Within a chunk (M_ij = exp(G_i - G_j) (q_i . k_j) for j <= i, Kt rows
 * kt_j = exp(G_{n-1} - G_j) k_j, E the decays of M, dO the rows of dout):
 *   dWn = scale M^T dO + Kt dS;  dM = scale dO Wn^T (j <= i)
 *   dQ  = scale diag(exp(G)) dO S^T + (dM o E) K
 *   dK  = (dM o E)^T Q + diag(exp(G_{n-1} - G)) Wn dS^T + ...
 *   dY  = [dWn | -dWn S^T];  dX = (I + A)^{-T} dY;  dA = -(dX Y^T), j < i
 *   dV += diag(beta) dXv;  dK += diag(beta exp(G)) dXk + Z K + Z^T K,
 *   Z_ij = dA_ij beta_i exp(G_i - G_j);  dbeta from X and A
 *   dS  = exp(G_{n-1}) dS + scale Q^T diag(exp(G)) dO - W^T dWn
 * and dG_i, the gradient with respect to G_i, gathers every place G enters
 * (exp(G) Q S, M, X, A, Kt, exp(G_{n-1}) S); dg is its reverse cumulative
 * sum within the chunk. */
void gdn_backward_chunked(float *dq, float *dk, float *dv, float *dg, float *dbeta, float *dS0, const float *dout,
                          const float *dSf, const float *q, const float *k, const float *v, const float *g,
                          const float *beta, const float *S0, int B, int T, int H, int Dk, int Dv, float scale,
                          int chunk)
{
	if (chunk < 1)
		BUG("gdn_backward_chunked: chunk %d", chunk);
	size_t SS = (size_t)Dk * Dv;
	int C = chunk, ny = Dv + Dk;
	#pragma omp parallel for schedule(dynamic)
	for (int bh = 0; bh < B * H; bh++) {
		Pair p = {T, H, (size_t)(bh / H) * T * H + bh % H};
		int nck = (T + C - 1) / C;
		double *Sc = mallocCheck((size_t)nck * SS * sizeof(double)); /* start state of each chunk */
		double *S = mallocCheck(SS * sizeof(double)), *dS = mallocCheck(SS * sizeof(double));
		GdnChunk ch = {mallocCheck((size_t)C * sizeof(double)), mallocCheck((size_t)C * C * sizeof(double)),
		               mallocCheck((size_t)C * ny * sizeof(double)), mallocCheck((size_t)C * Dv * sizeof(double))};
		double *M = mallocCheck((size_t)C * C * sizeof(double)), *dM = mallocCheck((size_t)C * C * sizeof(double));
		double *dA = mallocCheck((size_t)C * C * sizeof(double)), *dG = mallocCheck((size_t)C * sizeof(double));
		double *dWn = mallocCheck((size_t)C * Dv * sizeof(double)), *dX = mallocCheck((size_t)C * ny * sizeof(double));
		double *dQ = mallocCheck((size_t)C * Dk * sizeof(double)), *dK = mallocCheck((size_t)C * Dk * sizeof(double));
		for (size_t i = 0; i < SS; i++)
			S[i] = S0 ? S0[(size_t)bh * SS + i] : 0;
		for (int c = 0; c < nck; c++) {
			int c0 = c * C, n = T - c0 < C ? T - c0 : C;
			memcpy(Sc + (size_t)c * SS, S, SS * sizeof(double));
			gdn_chunk(&ch, &p, c0, n, k, v, g, beta, S, Dk, Dv);
			gdn_chunk_state(S, &ch, &p, c0, n, k, Dk, Dv);
		}
		for (size_t i = 0; i < SS; i++)
			dS[i] = dSf ? dSf[(size_t)bh * SS + i] : 0;
		for (int c = nck - 1; c >= 0; c--) {
			int c0 = c * C, n = T - c0 < C ? T - c0 : C;
			const double *Sx = Sc + (size_t)c * SS, *G = ch.G;
			gdn_chunk(&ch, &p, c0, n, k, v, g, beta, Sx, Dk, Dv);
			double last = G[n - 1];
			for (int i = 0; i < n; i++)
				dG[i] = 0;
			/* M, dM = scale dO Wn^T; dQ, dK and dG from the intra-chunk
			 * product M Wn */
			for (int i = 0; i < n; i++) {
				size_t ri = off(&p, c0 + i);
				for (int j = 0; j < n; j++) {
					size_t rj = off(&p, c0 + j);
					double m = 0, dm = 0;
					if (j <= i) {
						m = exp(G[i] - G[j]) * dot(q + ri * Dk, k + rj * Dk, Dk);
						for (int e = 0; e < Dv; e++)
							dm += dout[ri * Dv + e] * ch.Wn[(size_t)j * Dv + e];
						dm *= scale;
					}
					M[(size_t)i * n + j] = m, dM[(size_t)i * n + j] = dm;
				}
			}
			for (int i = 0; i < n * Dk; i++)
				dQ[i] = 0, dK[i] = 0;
			for (int i = 0; i < n; i++) {
				size_t ri = off(&p, c0 + i);
				for (int j = 0; j <= i; j++) {
					size_t rj = off(&p, c0 + j);
					double e = exp(G[i] - G[j]), a = dM[(size_t)i * n + j] * e;
					for (int d = 0; d < Dk; d++) {
						dQ[(size_t)i * Dk + d] += a * k[rj * Dk + d];
						dK[(size_t)j * Dk + d] += a * q[ri * Dk + d];
					}
					double r = dM[(size_t)i * n + j] * M[(size_t)i * n + j];
					dG[i] += r, dG[j] -= r;
				}
			}
			/* the state's share: dQs = scale exp(G_i) S do_i; dWn;
			 * dK += exp(G_{n-1} - G_j) dS wn_j and the decays of Kt */
			for (int i = 0; i < n; i++) {
				size_t ri = off(&p, c0 + i);
				const float *doi = dout + ri * Dv;
				double eg = exp(G[i]), s = 0;
				for (int d = 0; d < Dk; d++) {
					double t = 0;
					for (int e = 0; e < Dv; e++)
						t += Sx[(size_t)d * Dv + e] * doi[e];
					t *= scale * eg;
					dQ[(size_t)i * Dk + d] += t;
					s += q[ri * Dk + d] * t;
				}
				dG[i] += s;
			}
			for (int j = 0; j < n; j++) {
				size_t rj = off(&p, c0 + j);
				const float *kj = k + rj * Dk;
				double a = exp(last - G[j]), s = 0;
				/* dWn_j = scale sum_{i >= j} M_ij do_i + dS^T kt_j */
				for (int e = 0; e < Dv; e++) {
					double t = 0;
					for (int i = j; i < n; i++)
						t += M[(size_t)i * n + j] * dout[off(&p, c0 + i) * Dv + e];
					double u = 0;
					for (int d = 0; d < Dk; d++)
						u += dS[(size_t)d * Dv + e] * kj[d];
					dWn[(size_t)j * Dv + e] = scale * t + a * u;
				}
				for (int d = 0; d < Dk; d++) {
					double t = 0;
					for (int e = 0; e < Dv; e++)
						t += dS[(size_t)d * Dv + e] * ch.Wn[(size_t)j * Dv + e];
					dK[(size_t)j * Dk + d] += a * t;
					s += a * kj[d] * t;
				}
				dG[j] -= s, dG[n - 1] += s;
			}
			double s = 0;
			for (size_t i = 0; i < SS; i++)
				s += dS[i] * Sx[i];
			dG[n - 1] += exp(last) * s;
			/* dY = [dWn | -dWn S^T], then dX by back substitution */
			for (int i = 0; i < n; i++) {
				double *dxi = dX + (size_t)i * ny;
				for (int e = 0; e < Dv; e++)
					dxi[e] = dWn[(size_t)i * Dv + e];
				for (int d = 0; d < Dk; d++) {
					double t = 0;
					for (int e = 0; e < Dv; e++)
						t += Sx[(size_t)d * Dv + e] * dWn[(size_t)i * Dv + e];
					dxi[Dv + d] = -t;
				}
			}
			for (int j = n - 1; j >= 0; j--)
				for (int i = j + 1; i < n; i++) {
					double a = beta[off(&p, c0 + i)] * ch.Ak[(size_t)i * n + j];
					for (int e = 0; e < ny; e++)
						dX[(size_t)j * ny + e] -= a * dX[(size_t)i * ny + e];
				}
			for (int i = 0; i < n; i++)
				for (int j = 0; j < n; j++) {
					double t = 0;
					for (int e = 0; j < i && e < ny; e++)
						t += dX[(size_t)i * ny + e] * ch.Y[(size_t)j * ny + e];
					dA[(size_t)i * n + j] = -t;
				}
			/* X and A: dV, dK, dbeta, dG */
			for (int i = 0; i < n; i++) {
				size_t ri = off(&p, c0 + i);
				const float *ki = k + ri * Dk, *vi = v + ri * Dv;
				const double *dxi = dX + (size_t)i * ny;
				double bi = beta[ri], eg = exp(G[i]), db = 0, sk = 0;
				for (int e = 0; e < Dv; e++) {
					dv[ri * Dv + e] = (float)(bi * dxi[e]);
					db += vi[e] * dxi[e];
				}
				for (int d = 0; d < Dk; d++) {
					dK[(size_t)i * Dk + d] += bi * eg * dxi[Dv + d];
					sk += ki[d] * dxi[Dv + d];
				}
				db += eg * sk;
				dG[i] += bi * eg * sk;
				for (int j = 0; j < i; j++) {
					const float *kj = k + off(&p, c0 + j) * Dk;
					double ak = ch.Ak[(size_t)i * n + j], da = dA[(size_t)i * n + j];
					double z = da * bi * exp(G[i] - G[j]);
					db += da * ak;
					dG[i] += da * bi * ak, dG[j] -= da * bi * ak;
					for (int d = 0; d < Dk; d++) {
						dK[(size_t)i * Dk + d] += z * kj[d];
						dK[(size_t)j * Dk + d] += z * ki[d];
					}
				}
				if (dbeta)
					dbeta[ri] = (float)db;
			}
			for (int i = 0; i < n; i++) {
				size_t ri = off(&p, c0 + i);
				for (int d = 0; d < Dk; d++) {
					dq[ri * Dk + d] = (float)dQ[(size_t)i * Dk + d];
					dk[ri * Dk + d] = (float)dK[(size_t)i * Dk + d];
				}
			}
			for (int i = n - 1; dg && i >= 0; i--) {
				dG[i] += i < n - 1 ? dG[i + 1] : 0;
				dg[off(&p, c0 + i)] = (float)dG[i];
			}
			/* dS = exp(G_{n-1}) dS + scale Q^T diag(exp(G)) dO - W^T dWn */
			for (size_t i = 0; i < SS; i++)
				dS[i] *= exp(last);
			for (int i = 0; i < n; i++) {
				size_t ri = off(&p, c0 + i);
				const float *qi = q + ri * Dk, *doi = dout + ri * Dv;
				const double *wi = ch.Y + (size_t)i * ny + Dv;
				double a = scale * exp(G[i]);
				for (int d = 0; d < Dk; d++)
					for (int e = 0; e < Dv; e++)
						dS[(size_t)d * Dv + e] += a * qi[d] * doi[e] - wi[d] * dWn[(size_t)i * Dv + e];
			}
		}
		if (dS0)
			for (size_t i = 0; i < SS; i++)
				dS0[(size_t)bh * SS + i] = (float)dS[i];
		free(Sc), free(S), free(dS), free(ch.G), free(ch.Ak), free(ch.Y), free(ch.Wn), free(M), free(dM), free(dA);
		free(dG), free(dWn), free(dX), free(dQ), free(dK);
	}
}

// ----------------------------------------------------------------------------
// GLA

void gla_forward_recurrent(float *o, float *S, const float *q, const float *k, const float *v, const float *gk,
                           int B, int T, int H, int Dk, int Dv, float scale)
{
	#pragma omp parallel for schedule(dynamic)
	for (int bh = 0; bh < B * H; bh++) {
		Pair p = {T, H, (size_t)(bh / H) * T * H + bh % H};
		float *Sh = S + (size_t)bh * Dk * Dv;
		double *x = mallocCheck((size_t)Dv * sizeof(double));
		for (int t = 0; t < T; t++) {
			size_t r = off(&p, t);
			const float *kt = k + r * Dk, *vt = v + r * Dv, *gt = gk + r * Dk;
			for (int i = 0; i < Dk; i++) {
				float a = expf(gt[i]);
				for (int j = 0; j < Dv; j++)
					Sh[(size_t)i * Dv + j] = Sh[(size_t)i * Dv + j] * a + kt[i] * vt[j];
			}
			st_x(x, Sh, q + r * Dk, Dk, Dv);
			for (int j = 0; j < Dv; j++)
				o[r * Dv + j] = (float)(scale * x[j]);
		}
		free(x);
	}
}

/* Within a chunk of n steps from S0, G_i (Dk) the sum of gk over steps 0..i:
 *   o_i = scale (sum_d q_i[d] exp(G_i[d]) S0[d] + sum_{j<=i} (sum_d q_i[d] k_j[d] exp(G_i[d] - G_j[d])) v_j)
 *   S[d] = exp(G_{n-1}[d]) S0[d] + sum_j exp(G_{n-1}[d] - G_j[d]) k_j[d] v_j */
void gla_forward_chunked(float *o, float *S, const float *q, const float *k, const float *v, const float *gk,
                         int B, int T, int H, int Dk, int Dv, float scale, int chunk)
{
	if (chunk < 1)
		BUG("gla_forward_chunked: chunk %d", chunk);
	#pragma omp parallel for schedule(dynamic)
	for (int bh = 0; bh < B * H; bh++) {
		Pair p = {T, H, (size_t)(bh / H) * T * H + bh % H};
		float *Sh = S + (size_t)bh * Dk * Dv;
		double *G = mallocCheck((size_t)chunk * Dk * sizeof(double)), *x = mallocCheck((size_t)Dv * sizeof(double));
		for (int c0 = 0; c0 < T; c0 += chunk) {
			int n = T - c0 < chunk ? T - c0 : chunk;
			for (int i = 0; i < n; i++)
				for (int d = 0; d < Dk; d++)
					G[(size_t)i * Dk + d] = (i ? G[(size_t)(i - 1) * Dk + d] : 0) + gk[off(&p, c0 + i) * Dk + d];
			for (int i = 0; i < n; i++) {
				size_t ri = off(&p, c0 + i);
				const float *qi = q + ri * Dk;
				const double *Gi = G + (size_t)i * Dk;
				for (int j = 0; j < Dv; j++)
					x[j] = 0;
				for (int d = 0; d < Dk; d++) {
					double a = qi[d] * exp(Gi[d]);
					for (int j = 0; j < Dv; j++)
						x[j] += a * Sh[(size_t)d * Dv + j];
				}
				for (int m = 0; m <= i; m++) {
					size_t rm = off(&p, c0 + m);
					const float *km = k + rm * Dk;
					const double *Gm = G + (size_t)m * Dk;
					double a = 0;
					for (int d = 0; d < Dk; d++)
						a += (double)qi[d] * km[d] * exp(Gi[d] - Gm[d]);
					for (int j = 0; j < Dv; j++)
						x[j] += a * v[rm * Dv + j];
				}
				for (int j = 0; j < Dv; j++)
					o[ri * Dv + j] = (float)(scale * x[j]);
			}
			const double *Gl = G + (size_t)(n - 1) * Dk;
			for (int d = 0; d < Dk; d++)
				for (int j = 0; j < Dv; j++)
					Sh[(size_t)d * Dv + j] = (float)(Sh[(size_t)d * Dv + j] * exp(Gl[d]));
			for (int m = 0; m < n; m++) {
				size_t rm = off(&p, c0 + m);
				const double *Gm = G + (size_t)m * Dk;
				for (int d = 0; d < Dk; d++) {
					double a = exp(Gl[d] - Gm[d]) * k[rm * Dk + d];
					for (int j = 0; j < Dv; j++)
						Sh[(size_t)d * Dv + j] += (float)(a * v[rm * Dv + j]);
				}
			}
		}
		free(G), free(x);
	}
}

/* Backward through time, one step (S_{t-1} kept), dS the gradient with
 * respect to S_t on entry and to S_{t-1} on return, a = exp(gk_t):
 *   dS += scale q do^T;  dq = scale S_t do;  dk = dS v;  dv = dS^T k
 *   dgk[d] = a[d] <dS[d], S_{t-1}[d]>;  dS_{t-1} = diag(a) dS */
void gla_backward(float *dq, float *dk, float *dv, float *dgk, float *dS0, const float *dout, const float *dSf,
                  const float *q, const float *k, const float *v, const float *gk, const float *S0, int B, int T,
                  int H, int Dk, int Dv, float scale)
{
	size_t SS = (size_t)Dk * Dv;
	#pragma omp parallel for schedule(dynamic)
	for (int bh = 0; bh < B * H; bh++) {
		Pair p = {T, H, (size_t)(bh / H) * T * H + bh % H};
		int nck = (T + CKPT - 1) / CKPT;
		/* the states in double, as gla_backward_chunked keeps them */
		double *ck = mallocCheck(((size_t)nck + 1) * SS * sizeof(double));
		double *Sp = mallocCheck((size_t)CKPT * SS * sizeof(double)); /* S_{t-1} of each step of a chunk */
		double *S = mallocCheck(SS * sizeof(double));
		double *dS = mallocCheck(SS * sizeof(double)), *dw = mallocCheck((size_t)Dv * sizeof(double));
		for (size_t i = 0; i < SS; i++)
			S[i] = S0 ? S0[(size_t)bh * SS + i] : 0;
		/* the forward's state at each checkpoint */
		for (int t = 0; t < T; t++) {
			if (t % CKPT == 0)
				memcpy(ck + (size_t)(t / CKPT) * SS, S, SS * sizeof(double));
			size_t r = off(&p, t);
			for (int i = 0; i < Dk; i++) {
				double a = exp(gk[r * Dk + i]);
				for (int j = 0; j < Dv; j++)
					S[(size_t)i * Dv + j] = S[(size_t)i * Dv + j] * a + (double)k[r * Dk + i] * v[r * Dv + j];
			}
		}
		for (size_t i = 0; i < SS; i++)
			dS[i] = dSf ? dSf[(size_t)bh * SS + i] : 0;
		for (int c = nck - 1; c >= 0; c--) {
			int t0 = c * CKPT, t1 = T < t0 + CKPT ? T : t0 + CKPT;
			memcpy(S, ck + (size_t)c * SS, SS * sizeof(double));
			for (int t = t0; t < t1; t++) {
				size_t r = off(&p, t);
				memcpy(Sp + (size_t)(t - t0) * SS, S, SS * sizeof(double));
				for (int i = 0; i < Dk; i++) {
					double a = exp(gk[r * Dk + i]);
					for (int j = 0; j < Dv; j++)
						S[(size_t)i * Dv + j] = S[(size_t)i * Dv + j] * a + (double)k[r * Dk + i] * v[r * Dv + j];
				}
			}
			for (int t = t1 - 1; t >= t0; t--) {
				size_t r = off(&p, t);
				const float *qt = q + r * Dk, *kt = k + r * Dk, *vt = v + r * Dv, *dot_ = dout + r * Dv;
				const double *Spt = Sp + (size_t)(t - t0) * SS;
				for (int i = 0; i < Dk; i++) {
					double a = exp(gk[r * Dk + i]), s = 0;
					for (int j = 0; j < Dv; j++)
						s += (a * Spt[(size_t)i * Dv + j] + (double)kt[i] * vt[j]) * dot_[j];
					dq[r * Dk + i] = (float)(scale * s);
				}
				outer_add(dS, qt, dot_, scale, Dk, Dv);
				dst_x(dw, dS, kt, Dk, Dv);
				for (int j = 0; j < Dv; j++)
					dv[r * Dv + j] = (float)dw[j];
				for (int i = 0; i < Dk; i++) {
					double a = exp(gk[r * Dk + i]), sk = 0, sg = 0;
					for (int j = 0; j < Dv; j++) {
						sk += dS[(size_t)i * Dv + j] * vt[j];
						sg += dS[(size_t)i * Dv + j] * Spt[(size_t)i * Dv + j];
						dS[(size_t)i * Dv + j] *= a;
					}
					dk[r * Dk + i] = (float)sk;
					if (dgk)
						dgk[r * Dk + i] = (float)(a * sg);
				}
			}
		}
		if (dS0)
			for (size_t i = 0; i < SS; i++)
				dS0[(size_t)bh * SS + i] = (float)dS[i];
		free(ck), free(Sp), free(S), free(dS), free(dw);
	}
}

/* G (n, Dk): the sums of gk over steps 0..i of the chunk at c0 */
static void gla_cumsum(double *G, const Pair *p, int c0, int n, const float *gk, int Dk)
{
	for (int i = 0; i < n; i++)
		for (int d = 0; d < Dk; d++)
			G[(size_t)i * Dk + d] = (i ? G[(size_t)(i - 1) * Dk + d] : 0) + gk[off(p, c0 + i) * Dk + d];
}

/* Backward chunk by chunk (the GPU kernels' shape). A forward pass keeps the
 * start state of every chunk and the final state (in double); then the
 * chunks run last to first carrying dS, the gradient with respect to the
 * chunk's end state S' (dSf for the last chunk). Within a chunk of n steps
 * from S, G_i (Dk) the sums of gk over steps 0..i, E_ij = exp(G_i - G_j),
 * A_ij = sum_d q_i[d] k_j[d] E_ij[d] and dP_ij = scale do_i . v_j for j <= i,
 * kt_j = exp(G_{n-1} - G_j) o k_j:
 *   dq_i = scale exp(G_i) o (S do_i) + sum_{j<=i} dP_ij E_ij o k_j
 *   dk_j = sum_{i>=j} dP_ij E_ij o q_i + exp(G_{n-1} - G_j) o (dS v_j)
 *   dv_j = scale sum_{i>=j} A_ij do_i + dS^T kt_j
 *   dG_i = q_i o dq_i - k_i o dk_i, plus sum_e dS[., e] o S'[., e] at i = n-1
 *   dgk_t = sum_{i>=t} dG_i within the chunk
 *   dS <- diag(exp(G_{n-1})) dS + scale sum_i (exp(G_i) o q_i) do_i^T */
void gla_backward_chunked(float *dq, float *dk, float *dv, float *dgk, float *dS0, const float *dout,
                          const float *dSf, const float *q, const float *k, const float *v, const float *gk,
                          const float *S0, int B, int T, int H, int Dk, int Dv, float scale, int chunk)
{
	if (chunk < 1)
		BUG("gla_backward_chunked: chunk %d", chunk);
	size_t SS = (size_t)Dk * Dv;
	int C = chunk;
	#pragma omp parallel for schedule(dynamic)
	for (int bh = 0; bh < B * H; bh++) {
		Pair p = {T, H, (size_t)(bh / H) * T * H + bh % H};
		int nck = (T + C - 1) / C;
		double *Sc = mallocCheck(((size_t)nck + 1) * SS * sizeof(double)); /* each chunk's start, then the end */
		double *dS = mallocCheck(SS * sizeof(double)), *G = mallocCheck((size_t)C * Dk * sizeof(double));
		double *A = mallocCheck((size_t)C * C * sizeof(double)), *P = mallocCheck((size_t)C * C * sizeof(double));
		double *dQ = mallocCheck((size_t)C * Dk * sizeof(double)), *dK = mallocCheck((size_t)C * Dk * sizeof(double));
		double *acc = mallocCheck((size_t)Dk * sizeof(double)), *x = mallocCheck((size_t)Dk * sizeof(double));
		for (size_t i = 0; i < SS; i++)
			Sc[i] = S0 ? S0[(size_t)bh * SS + i] : 0;
		for (int c = 0; c < nck; c++) {
			int c0 = c * C, n = T - c0 < C ? T - c0 : C;
			const double *S = Sc + (size_t)c * SS, *Gl = G + (size_t)(n - 1) * Dk;
			double *Sn = Sc + (size_t)(c + 1) * SS;
			gla_cumsum(G, &p, c0, n, gk, Dk);
			for (int d = 0; d < Dk; d++)
				for (int e = 0; e < Dv; e++)
					Sn[(size_t)d * Dv + e] = exp(Gl[d]) * S[(size_t)d * Dv + e];
			for (int m = 0; m < n; m++) {
				size_t rm = off(&p, c0 + m);
				for (int d = 0; d < Dk; d++) {
					double a = exp(Gl[d] - G[(size_t)m * Dk + d]) * k[rm * Dk + d];
					for (int e = 0; e < Dv; e++)
						Sn[(size_t)d * Dv + e] += a * v[rm * Dv + e];
				}
			}
		}
		for (size_t i = 0; i < SS; i++)
			dS[i] = dSf ? dSf[(size_t)bh * SS + i] : 0;
		for (int c = nck - 1; c >= 0; c--) {
			int c0 = c * C, n = T - c0 < C ? T - c0 : C;
			const double *S = Sc + (size_t)c * SS, *Se = Sc + (size_t)(c + 1) * SS, *Gl = G + (size_t)(n - 1) * Dk;
			gla_cumsum(G, &p, c0, n, gk, Dk);
			/* A and dP, lower triangles */
			for (int i = 0; i < n; i++) {
				size_t ri = off(&p, c0 + i);
				for (int j = 0; j <= i; j++) {
					size_t rj = off(&p, c0 + j);
					double a = 0;
					for (int d = 0; d < Dk; d++)
						a += (double)q[ri * Dk + d] * k[rj * Dk + d] *
						     exp(G[(size_t)i * Dk + d] - G[(size_t)j * Dk + d]);
					A[(size_t)i * C + j] = a;
					P[(size_t)i * C + j] = scale * dot(dout + ri * Dv, v + rj * Dv, Dv);
				}
			}
			/* dq: the start state's share, then the chunk's */
			for (int i = 0; i < n; i++) {
				size_t ri = off(&p, c0 + i);
				const double *Gi = G + (size_t)i * Dk;
				for (int d = 0; d < Dk; d++) {
					double s = 0;
					for (int e = 0; e < Dv; e++)
						s += S[(size_t)d * Dv + e] * dout[ri * Dv + e];
					s *= scale * exp(Gi[d]);
					for (int j = 0; j <= i; j++)
						s += P[(size_t)i * C + j] * k[off(&p, c0 + j) * Dk + d] * exp(Gi[d] - G[(size_t)j * Dk + d]);
					dQ[(size_t)i * Dk + d] = s;
				}
			}
			/* dk: the end state's share, then the chunk's */
			for (int j = 0; j < n; j++) {
				size_t rj = off(&p, c0 + j);
				const double *Gj = G + (size_t)j * Dk;
				for (int d = 0; d < Dk; d++) {
					double s = 0;
					for (int e = 0; e < Dv; e++)
						s += dS[(size_t)d * Dv + e] * v[rj * Dv + e];
					s *= exp(Gl[d] - Gj[d]);
					for (int i = j; i < n; i++)
						s += P[(size_t)i * C + j] * q[off(&p, c0 + i) * Dk + d] * exp(G[(size_t)i * Dk + d] - Gj[d]);
					dK[(size_t)j * Dk + d] = s;
				}
			}
			/* dv = scale A^T dO + Kt dS */
			for (int j = 0; j < n; j++) {
				size_t rj = off(&p, c0 + j);
				for (int d = 0; d < Dk; d++)
					x[d] = exp(Gl[d] - G[(size_t)j * Dk + d]) * k[rj * Dk + d];
				for (int e = 0; e < Dv; e++) {
					double s = 0, t = 0;
					for (int i = j; i < n; i++)
						s += A[(size_t)i * C + j] * dout[off(&p, c0 + i) * Dv + e];
					for (int d = 0; d < Dk; d++)
						t += dS[(size_t)d * Dv + e] * x[d];
					dv[rj * Dv + e] = (float)(scale * s + t);
				}
			}
			/* dG, summed from the chunk's end: dgk */
			for (int d = 0; d < Dk; d++) {
				double s = 0;
				for (int e = 0; e < Dv; e++)
					s += dS[(size_t)d * Dv + e] * Se[(size_t)d * Dv + e];
				acc[d] = s;
			}
			for (int i = n - 1; i >= 0; i--) {
				size_t ri = off(&p, c0 + i);
				for (int d = 0; d < Dk; d++) {
					acc[d] += q[ri * Dk + d] * dQ[(size_t)i * Dk + d] - k[ri * Dk + d] * dK[(size_t)i * Dk + d];
					dq[ri * Dk + d] = (float)dQ[(size_t)i * Dk + d];
					dk[ri * Dk + d] = (float)dK[(size_t)i * Dk + d];
					if (dgk)
						dgk[ri * Dk + d] = (float)acc[d];
				}
			}
			/* dS: to the chunk's start state */
			for (int d = 0; d < Dk; d++) {
				double *dSd = dS + (size_t)d * Dv, a = exp(Gl[d]);
				for (int e = 0; e < Dv; e++)
					dSd[e] *= a;
				for (int i = 0; i < n; i++) {
					size_t ri = off(&p, c0 + i);
					double b = scale * exp(G[(size_t)i * Dk + d]) * q[ri * Dk + d];
					for (int e = 0; e < Dv; e++)
						dSd[e] += b * dout[ri * Dv + e];
				}
			}
		}
		if (dS0)
			for (size_t i = 0; i < SS; i++)
				dS0[(size_t)bh * SS + i] = (float)dS[i];
		free(Sc), free(dS), free(G), free(A), free(P), free(dQ), free(dK), free(acc), free(x);
	}
}
