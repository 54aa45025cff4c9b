/*
 * gpu_test.h: what the GPU twin tests share: Buf, a host tensor rounded to
 * bf16 with the same values in float32 and a device copy; float32 copies
 * to the device and back; op_rand, a gdn/gla/swa operator with random
 * parameters.
 */
#ifndef DASH_GPU_TEST_H
#define DASH_GPU_TEST_H

#include <string.h>

#include "gpu.h"
extern "C" {
#include "linear_op.h"
#include "tensor.h"
#include "test.h"
#include "util.h"
}

/* a host tensor in bf16 and the same values in float32 */
typedef struct {
	float *f;
	bf16_t *h;
	bf16_t *d;
	size_t n;
} Buf;

static inline Buf buf_rand(size_t n, float scale)
{
	Buf b = {(float *)mallocCheck(n * 4), (bf16_t *)mallocCheck(n * 2), (bf16_t *)gpu_alloc(n * 2), n};
	for (size_t i = 0; i < n; i++) {
		b.h[i] = f32_to_bf16(scale * test_frand());
		b.f[i] = bf16_to_f32(b.h[i]);
	}
	gpu_upload(b.d, b.h, n * 2);
	return b;
}

/* float32 host values to a new device copy (NULL stays NULL), and back */
static inline float *dev_f32(const float *h, size_t n)
{
	if (!h)
		return NULL;
	float *d = (float *)gpu_alloc(n * sizeof(float));
	gpu_upload(d, h, n * sizeof(float));
	return d;
}

static inline float *host_f32(const float *d, size_t n)
{
	float *h = (float *)mallocCheck(n * sizeof(float));
	gpu_download(h, d, n * sizeof(float));
	return h;
}

/* n bf16 values of the device as float32 on the host */
static inline float *host_bf16(const bf16_t *d, size_t n)
{
	bf16_t *t = (bf16_t *)mallocCheck(n * sizeof(bf16_t));
	float *h = (float *)mallocCheck(n * sizeof(float));
	gpu_download(t, d, n * sizeof(bf16_t));
	for (size_t i = 0; i < n; i++)
		h[i] = bf16_to_f32(t[i]);
	free(t);
	return h;
}

static inline void buf_free(Buf *b)
{
	free(b->f), free(b->h);
	gpu_free(b->d);
}

/* op_rand: an operator of kind at a shape with random parameters: test_rnd
 * 0.4 as tests/test_grad_cpu.c (at fan in 10) for the vectors, A_log and
 * dt_bias included, and 0.4 sqrt(10 / fan in) for the matrices, so that the
 * activations have the CPU test's size at every C */
static inline void op_rand(LinearOp *op, int kind, int C, int H, int G, int D)
{
	lop_init(op, kind, C, H, G, D);
	for (int i = 0; i < op->np; i++) {
		const LopParam *p = &op->p[i];
		size_t m = (size_t)p->rows * p->cols;
		float *x = test_rnd(m, p->cols > 1 ? 0.4f * sqrtf(10.0f / p->cols) : 0.4f);
		memcpy(op->w + p->off, x, m * sizeof(float));
		free(x);
	}
}

#endif
