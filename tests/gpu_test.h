/*
 * gpu_test.h: what the GPU twin tests share: Buf, a host tensor rounded to
 * bf16 with the same values in float32 and a device copy. Include after
 * gpu.h, test.h and util.h.
 */
#ifndef DASH_GPU_TEST_H
#define DASH_GPU_TEST_H

/* a host tensor in bf16 and the same values in float32 */
typedef struct {
	float *f;
	bf16_t *h;
	bf16_t *d;
	size_t n;
} Buf;

static Buf buf_rand(size_t n, float scale)
{
	Buf b = {(float *)mallocCheck(n * 4), (bf16_t *)mallocCheck(n * 2), (bf16_t *)gpu_alloc(n * 2), n};
	for (size_t i = 0; i < n; i++) {
		b.h[i] = f32_to_bf16(scale * test_frand());
		b.f[i] = bf16_to_f32(b.h[i]);
	}
	gpu_upload(b.d, b.h, n * 2);
	return b;
}

static void buf_free(Buf *b)
{
	free(b->f), free(b->h);
	gpu_free(b->d);
}

#endif
