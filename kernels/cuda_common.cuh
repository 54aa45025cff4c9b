/*
 * cuda_common: error checks and small helpers shared by every kernel file.
 * Every CUDA call is wrapped in cudaCheck (cuBLAS calls in cublasCheck) and
 * every launch is followed by cudaCheck(cudaGetLastError()); failures name
 * the file and line and exit 1.
 */
#ifndef DASH_CUDA_COMMON_CUH
#define DASH_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#define WARP_SIZE 32
#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

static inline void cuda_check_(cudaError_t err, const char *file, int line)
{
	if (err != cudaSuccess) {
		fprintf(stderr, "[CUDA ERROR] at file %s:%d: %s\n", file, line, cudaGetErrorString(err));
		exit(1);
	}
}
#define cudaCheck(err) cuda_check_((err), __FILE__, __LINE__)

static inline void cublas_check_(cublasStatus_t st, const char *file, int line)
{
	if (st != CUBLAS_STATUS_SUCCESS) {
		fprintf(stderr, "[cuBLAS ERROR] at file %s:%d: %s\n", file, line, cublasGetStatusString(st));
		exit(1);
	}
}
#define cublasCheck(st) cublas_check_((st), __FILE__, __LINE__)

/* an environment switch (the kernels' variants for tests and benches): set
 * and not "0" */
static inline bool env_flag(const char *name)
{
	const char *e = getenv(name);
	return e && *e && strcmp(e, "0") != 0;
}

typedef __nv_bfloat16 bf16;

/* allows kernel k bytes of dynamic shared memory (past the default 48 KB);
 * with done, the caller's flag for k, only the first time */
template <typename K>
static inline void smem_allow(K k, size_t bytes, bool *done = NULL)
{
	if (done && *done)
		return;
	cudaCheck(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
	if (done)
		*done = true;
}

/* the one cuBLAS handle of kernels/ (made in matmul.cu on first use), with
 * reduced-precision split-K reductions disallowed */
cublasHandle_t cublas_handle(void);

/* cuda_cc_major (kernels/device.cu): the current device's compute
 * capability major number (9 on a Hopper), asked once */
int cuda_cc_major(void);

/* gemm_bf16 (kernels/matmul.cu): C (m, n) = op(A) B in cuBLAS's
 * column-major terms, alpha 1 and beta 0, float32 accumulation: A bf16, (k,
 * m) with lda when ta is CUBLAS_OP_T, else (m, k); B bf16 (k, n) with ldb; C
 * of ctype (CUDA_R_16BF or CUDA_R_32F) with ldc. Split-K sums in float32. */
void gemm_bf16(cublasOperation_t ta, int m, int n, int k, const void *A, int lda, const void *B, int ldb, void *C,
               cudaDataType_t ctype, int ldc);
/* gemm_bf16_acc: the same with C = Cin + op(A) B (beta 1; Cin may be C) */
void gemm_bf16_acc(cublasOperation_t ta, int m, int n, int k, const void *A, int lda, const void *B, int ldb,
                   const void *Cin, void *C, cudaDataType_t ctype, int ldc);

/* A Carver places buffers one after another in an arena: a layout function
 * calls CARVE for each, once from base 0 to size the arena, then again on
 * the allocation. Every buffer starts on ARENA_ALIGN bytes. */
#define ARENA_ALIGN 256
typedef struct {
	uintptr_t base;
	size_t off;
} Carver;

static inline void *carve(Carver *c, size_t bytes)
{
	c->off = (c->off + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
	void *p = (void *)(c->base + c->off);
	c->off += bytes;
	return p;
}
/* p = the next count elements of p's type */
#define CARVE(c, p, count) \
	((p) = (std::remove_reference<decltype(p)>::type)carve((c), (size_t)(count) * sizeof *(p)))

/* sigmoid(x) and silu(x) = x sigmoid(x) through the SFU's approximate
 * exp and reciprocal (__expf, __fdividef: a few ulp, far below the bf16
 * rounding that follows; 0 below x = -87, where 1 + e^-x passes 2^126).
 * The SwiGLU kernels take one a value and are bound by their instructions,
 * most of which expf's range reduction and IEEE division were. */
__device__ __forceinline__ float sigmoid_fast(float x) { return __fdividef(1.0f, 1.0f + __expf(-x)); }
__device__ __forceinline__ float silu_fast(float x) { return x * sigmoid_fast(x); }

/* the sum of v over the warp, in every lane */
__device__ __forceinline__ float warp_sum(float v)
{
	for (int o = WARP_SIZE / 2; o > 0; o /= 2)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

/* the sum of v over a block of NT threads (a multiple of WARP_SIZE), in
 * every thread, in a fixed order; a barrier first, so that calls may
 * follow one another */
template <int NT>
__device__ __forceinline__ double block_sum_double(double v)
{
	__shared__ double part[NT / WARP_SIZE];
	for (int o = WARP_SIZE / 2; o > 0; o /= 2)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	__syncthreads();
	if (threadIdx.x % WARP_SIZE == 0)
		part[threadIdx.x / WARP_SIZE] = v;
	__syncthreads();
	double s = 0;
	for (int w = 0; w < NT / WARP_SIZE; w++)
		s += part[w];
	return s;
}

/* 8 values from element 8 i of p, float32 (f32) or bf16, into x: one or
 * two 16-byte loads, so p must be 16-byte aligned */
__device__ __forceinline__ void load8(float *x, const void *p, int f32, int64_t i)
{
	if (f32) {
		float4 a = ((const float4 *)p)[2 * i], b = ((const float4 *)p)[2 * i + 1];
		x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
	} else {
		uint4 v = ((const uint4 *)p)[i];
		const __nv_bfloat162 *h = (const __nv_bfloat162 *)&v;
#pragma unroll
		for (int j = 0; j < 4; j++) {
			float2 f = __bfloat1622float2(h[j]);
			x[2 * j] = f.x, x[2 * j + 1] = f.y;
		}
	}
}

/* x (8 values) in bf16 into element 8 i of p, one 16-byte store */
__device__ __forceinline__ void store8_bf16(void *p, const float *x, int64_t i)
{
	uint4 v;
	__nv_bfloat162 *h = (__nv_bfloat162 *)&v;
#pragma unroll
	for (int j = 0; j < 4; j++)
		h[j] = __floats2bfloat162_rn(x[2 * j], x[2 * j + 1]);
	((uint4 *)p)[i] = v;
}

/* whether n values at each of these pointers go 8 at a time (load8) */
static inline int vec8_ok(int64_t n, const void *a, const void *b = NULL, const void *c = NULL)
{
	return n % 8 == 0 && (((uintptr_t)a | (uintptr_t)b | (uintptr_t)c) & 15) == 0;
}

#endif
