/* train: the normalised error and AdamW, CPU reference (train.h) */
#include "train.h"

#include <math.h>

#include "util.h"

double nmse_cpu(float *dah, const float *ah, const float *a, size_t n)
{
	double num = 0, den = 0;
	for (size_t i = 0; i < n; i++) {
		double d = (double)ah[i] - a[i];
		num += d * d, den += (double)a[i] * a[i];
	}
	den = den > 0 ? den : 1;
	if (dah)
		for (size_t i = 0; i < n; i++)
			dah[i] = (float)(2 * ((double)ah[i] - a[i]) / den);
	return num / den;
}

void adamw_cpu(float *w, float *m, float *v, const float *grad, size_t n, const AdamSeg *segs, int nseg,
               const AdamStep *st)
{
	double norm = 0;
	for (size_t i = 0; i < n; i++)
		norm += (double)grad[i] * grad[i];
	norm = sqrt(norm);
	double k = norm > st->clip ? st->clip / norm : 1;
	const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
	double c1 = 1 - pow(b1, (double)(st->t + 1)), c2 = 1 - pow(b2, (double)(st->t + 1));
	for (int s = 0; s < nseg; s++) {
		if (segs[s].off + segs[s].len > n)
			BUG("adamw_cpu: segment %d beyond %zu values", s, n);
		for (size_t i = segs[s].off; i < segs[s].off + segs[s].len; i++) {
			double g = grad[i] * k;
			m[i] = (float)(b1 * m[i] + (1 - b1) * g);
			v[i] = (float)(b2 * v[i] + (1 - b2) * g * g);
			double upd = (m[i] / c1) / (sqrt(v[i] / c2) + eps) + (segs[s].decay ? st->wd * w[i] : 0);
			w[i] = (float)(w[i] - st->lr * upd);
		}
	}
}
