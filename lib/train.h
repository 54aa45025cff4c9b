/*
 * train: the pieces of training candidates that are not the operators
 * (distill-linear), CPU reference; kernels/train.cu has the GPU twins.
 */
#ifndef DASH_TRAIN_H
#define DASH_TRAIN_H

#include <stddef.h>

/* nmse_cpu returns |ah - a|^2 / |a|^2 over n values (the denominator 1
 * when a is all zero); with dah (which may be ah itself), writes its
 * gradient 2 (ah - a) / |a|^2. Sums in double. */
double nmse_cpu(float *dah, const float *ah, const float *a, size_t n);

/* One AdamW step (beta 0.9, 0.999, eps 1e-8, bias-corrected) of step t (0
 * first) with learning rate lr on w from grad, the gradient first scaled
 * to norm clip when its norm is above; the values [off, off + len) of a
 * segment with decay take decoupled weight decay wd. The segments cover
 * what is trained; the gradient's norm is over all n values. */
typedef struct {
	size_t off, len;
	int decay;
} AdamSeg;
typedef struct {
	long long t;
	float lr, wd, clip;
} AdamStep;
void adamw_cpu(float *w, float *m, float *v, const float *grad, size_t n, const AdamSeg *segs, int nseg,
               const AdamStep *st);

#endif
