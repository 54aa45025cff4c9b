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
		float *ck = mallocCheck(((size_t)nck + 1) * SS * sizeof(float));
		float *Sp = mallocCheck((size_t)CKPT * SS * sizeof(float)); /* S_{t-1} of each step of a chunk */
		float *S = mallocCheck(SS * sizeof(float));
		double *dS = mallocCheck(SS * sizeof(double)), *dw = mallocCheck((size_t)Dv * sizeof(double));
		if (S0)
			memcpy(S, S0 + (size_t)bh * SS, SS * sizeof(float));
		else
			memset(S, 0, SS * sizeof(float));
		/* the forward's state at each checkpoint */
		for (int t = 0; t < T; t++) {
			if (t % CKPT == 0)
				memcpy(ck + (size_t)(t / CKPT) * SS, S, SS * sizeof(float));
			size_t r = off(&p, t);
			for (int i = 0; i < Dk; i++) {
				float a = expf(gk[r * Dk + i]);
				for (int j = 0; j < Dv; j++)
					S[(size_t)i * Dv + j] = S[(size_t)i * Dv + j] * a + k[r * Dk + i] * v[r * Dv + j];
			}
		}
		for (size_t i = 0; i < SS; i++)
			dS[i] = dSf ? dSf[(size_t)bh * SS + i] : 0;
		for (int c = nck - 1; c >= 0; c--) {
			int t0 = c * CKPT, t1 = T < t0 + CKPT ? T : t0 + CKPT;
			memcpy(S, ck + (size_t)c * SS, SS * sizeof(float));
			for (int t = t0; t < t1; t++) {
				size_t r = off(&p, t);
				memcpy(Sp + (size_t)(t - t0) * SS, S, SS * sizeof(float));
				for (int i = 0; i < Dk; i++) {
					float a = expf(gk[r * Dk + i]);
					for (int j = 0; j < Dv; j++)
						S[(size_t)i * Dv + j] = S[(size_t)i * Dv + j] * a + k[r * Dk + i] * v[r * Dv + j];
				}
			}
			for (int t = t1 - 1; t >= t0; t--) {
				size_t r = off(&p, t);
				const float *qt = q + r * Dk, *kt = k + r * Dk, *vt = v + r * Dv, *dot_ = dout + r * Dv;
				const float *Spt = Sp + (size_t)(t - t0) * SS;
				for (int i = 0; i < Dk; i++) {
					double a = exp(gk[r * Dk + i]), s = 0;
					for (int j = 0; j < Dv; j++)
						s += (a * Spt[(size_t)i * Dv + j] + kt[i] * vt[j]) * dot_[j];
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
