/*
 * matmul: the linear layers through cuBLAS, bf16 operands, float32
 * accumulation. Our matrices are row-major and cuBLAS is column-major: a
 * row-major (R, C) matrix is a column-major (C, R) one, so
 *   out (n, OC) = x (n, IC) w^T   is   out^T = op_T(w^T) x^T   in cuBLAS terms,
 *   dx (n, IC) = dout (n, OC) w   is   dx^T = w^T dout^T.
 * Twin of matmul_forward_cpu / matmul_backward_cpu. gemm_bf16 is the one
 * entry point of kernels/ for bf16 products (the vocabulary loss's too).
 *
 * version 1: cublasGemmEx with the default algorithm and a separate bias
 * kernel.
 * version 2: cuBLASLt (cublasLtMatmul) with one plan per shape, pointer
 * alignment and leading dimensions: descriptors made once, the algorithm
 * chosen once (DASH_GEMM, below). Split-K reductions stay in float32 in
 * both paths (the Makefile links -lcublasLt).
 *
 * DASH_GEMM in the environment, read once: unset or "lt" cuBLASLt, the
 * heuristic rank of the table `ranked` below for the shapes it lists, the
 * first elsewhere; "ex" cublasGemmEx (version 1); "tune" the fastest of
 * cuBLASLt's first LT_CANDIDATES heuristics, timed on the first call of each
 * plan, every candidate printed to stderr (not the same from run to run:
 * for measurements, to fill the table).
 */
#include <string.h>

#include <cublasLt.h>

#include "cuda_common.cuh"
#include "gpu.h"

/* one handle; split-K reductions stay in float32 (cuBLAS by default may
 * reduce bf16 outputs in bf16, which costs the backward a percent) */
static cublasHandle_t handle(void)
{
	static cublasHandle_t h;
	if (!h) {
		cublasCheck(cublasCreate(&h));
		cublasCheck(cublasSetMathMode(h, (cublasMath_t)(CUBLAS_DEFAULT_MATH |
		                                                CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
	}
	return h;
}

cublasHandle_t cublas_handle(void)
{
	return handle();
}

// ----------------------------------------------------------------------------
// cuBLASLt

static struct {
	cublasLtHandle_t h;
	void *ws; /* LT_WORKSPACE bytes of device scratch for split-K */
} lt;

#define LT_WORKSPACE (32u << 20)
#define LT_CANDIDATES 32

enum { GEMM_EX, GEMM_LT, GEMM_TUNE };

/* the path DASH_GEMM names: lt (the default), ex or tune */
static int gemm_mode(void)
{
	static int mode = -1;
	if (mode >= 0)
		return mode;
	const char *e = getenv("DASH_GEMM");
	mode = e && strcmp(e, "ex") == 0 ? GEMM_EX : e && strcmp(e, "tune") == 0 ? GEMM_TUNE : GEMM_LT;
	if (mode != GEMM_EX) {
		cublasCheck(cublasLtCreate(&lt.h));
		cudaCheck(cudaMalloc(&lt.ws, LT_WORKSPACE));
	}
	return mode;
}

/* a product's shape, layout and alignment, and what cuBLASLt runs for it */
typedef struct {
	int ta, m, n, k, lda, ldb, ldc, ctype, align; /* the key */
	cublasLtMatmulDesc_t op;
	cublasLtMatrixLayout_t a, b, c;
	cublasLtMatmulAlgo_t algo;
	size_t ws;
	int ok; /* 0: no algorithm, cublasGemmEx instead */
} Plan;

static Plan *plans;
static int nplans, cap_plans;

/* the largest power of two up to 256 that divides p */
static unsigned align_of(const void *p)
{
	uintptr_t a = (uintptr_t)p | 256;
	return (unsigned)(a & -a);
}

static void algo_print(const char *what, int i, const cublasLtMatmulHeuristicResult_t *r, float us)
{
	static const cublasLtMatmulAlgoConfigAttributes_t at[] = {
		CUBLASLT_ALGO_CONFIG_ID,          CUBLASLT_ALGO_CONFIG_TILE_ID,       CUBLASLT_ALGO_CONFIG_STAGES_ID,
		CUBLASLT_ALGO_CONFIG_SPLITK_NUM,  CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING,
		CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID,
	};
	fprintf(stderr, "  %s [%2d] %9.1f us  ws %zu waves %.2f  algo", what, i, us, r->workspaceSize, r->wavesCount);
	for (size_t j = 0; j < sizeof at / sizeof at[0]; j++) {
		uint64_t v = 0;
		size_t got;
		if (cublasLtMatmulAlgoConfigGetAttribute(&r->algo, at[j], &v, sizeof v, &got) != CUBLAS_STATUS_SUCCESS)
			v = ~0ull;
		fprintf(stderr, " %llu", (unsigned long long)v);
	}
	fprintf(stderr, "\n");
}

static void gemm_ex(const Plan *p, const void *A, const void *B, void *C)
{
	const float one = 1, zero = 0;
	cublasCheck(cublasGemmEx(handle(), (cublasOperation_t)p->ta, CUBLAS_OP_N, p->m, p->n, p->k, &one, A, CUDA_R_16BF,
	                         p->lda, B, CUDA_R_16BF, p->ldb, &zero, C, (cudaDataType_t)p->ctype, p->ldc,
	                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

static cublasStatus_t gemm_lt(const Plan *p, const cublasLtMatmulAlgo_t *algo, const void *A, const void *B, void *C)
{
	const float one = 1, zero = 0;
	return cublasLtMatmul(lt.h, p->op, &one, A, p->a, B, p->b, &zero, C, p->c, C, p->c, algo, lt.ws, LT_WORKSPACE,
	                         0);
}

/* the mean time of reps runs of f, in microseconds */
template <typename F> static float time_us(F f, int reps)
{
	cudaEvent_t e0, e1;
	cudaCheck(cudaEventCreate(&e0));
	cudaCheck(cudaEventCreate(&e1));
	f();
	cudaCheck(cudaEventRecord(e0, 0));
	for (int i = 0; i < reps; i++)
		f();
	cudaCheck(cudaEventRecord(e1, 0));
	cudaCheck(cudaEventSynchronize(e1));
	float ms;
	cudaCheck(cudaEventElapsedTime(&ms, e0, e1));
	cudaCheck(cudaEventDestroy(e0));
	cudaCheck(cudaEventDestroy(e1));
	return ms * 1000 / reps;
}

/* The heuristic ranks that measured fastest at the teacher's shapes
 * (Qwen2.5-3B, 4096 rows; DASH_GEMM=tune in bench/teacher and bench/loss on
 * an H100, cuBLAS 13.0; the time of the rank against cublasGemmEx's): any
 * other product takes cuBLASLt's first. A fixed rank, not a timing, picks
 * the algorithm, so a run's products are the same bits as the last run's. */
static const struct {
	char op;
	int m, n, k, f32, rank;
} ranked[] = {
	{'T', 22016, 4096, 2048, 0, 6},  /* gate | up forward: 449.5 us, cublasGemmEx 474.5 */
	{'N', 11008, 4096, 2048, 0, 4},  /* down backward: 233.3, 242.9 */
	{'N', 2048, 4096, 2048, 0, 3},   /* o backward: 53.4, 55.7 */
	{'T', 151936, 4096, 2048, 0, 5}, /* bf16 logits (bench/teacher's forward): 3263.8, 3532.9 */
	{'T', 151936, 2048, 2048, 1, 5}, /* the loss's float32 logits, 2048 rows: 1713.8, 1810.0 */
	{'T', 151936, 1024, 2048, 1, 6}, /* 1024 rows (a KL chunk): 937.5, 1016.6 */
	{'N', 2048, 1024, 151936, 0, 1}, /* its dhidden: 778.9, 910.3 */
};

/* make p's descriptors and choose its algorithm (A, B, C: the first call's
 * buffers, which tuning runs on) */
static void plan_init(Plan *p, int mode, const void *A, const void *B, void *C)
{
	cudaDataType_t ct = (cudaDataType_t)p->ctype;
	cublasOperation_t ta = (cublasOperation_t)p->ta;
	cublasCheck(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
	cublasCheck(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
	int ar = ta == CUBLAS_OP_T ? p->k : p->m, ac = ta == CUBLAS_OP_T ? p->m : p->k;
	cublasCheck(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, ar, ac, p->lda));
	cublasCheck(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, p->k, p->n, p->ldb));
	cublasCheck(cublasLtMatrixLayoutCreate(&p->c, ct, p->m, p->n, p->ldc));
	cublasLtMatmulPreference_t pref;
	cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
	uint64_t ws = LT_WORKSPACE;
	uint32_t red = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE; /* and none: float32 split-K sums only */
	uint32_t al[3] = {align_of(A), align_of(B), align_of(C)};
	cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
	cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red,
	                                                    sizeof red));
	cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al[0],
	                                                    sizeof al[0]));
	cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al[1],
	                                                    sizeof al[1]));
	cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al[2],
	                                                    sizeof al[2]));
	cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al[2],
	                                                    sizeof al[2]));
	cublasLtMatmulHeuristicResult_t r[LT_CANDIDATES];
	int nr = 0;
	if (cublasLtMatmulAlgoGetHeuristic(lt.h, p->op, p->a, p->b, p->c, p->c, pref, LT_CANDIDATES, r, &nr) !=
	    CUBLAS_STATUS_SUCCESS)
		nr = 0;
	cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
	p->ok = nr > 0 && r[0].state == CUBLAS_STATUS_SUCCESS;
	if (!p->ok)
		return;
	int pick = 0;
	for (size_t i = 0; i < sizeof ranked / sizeof ranked[0]; i++)
		if (ranked[i].op == (ta == CUBLAS_OP_T ? 'T' : 'N') && ranked[i].m == p->m && ranked[i].n == p->n &&
		    ranked[i].k == p->k && ranked[i].f32 == (ct == CUDA_R_32F) && ranked[i].rank < nr &&
		    r[ranked[i].rank].state == CUBLAS_STATUS_SUCCESS)
			pick = ranked[i].rank;
	p->algo = r[pick].algo, p->ws = r[pick].workspaceSize;
	if (mode != GEMM_TUNE)
		return;
	fprintf(stderr, "gemm tune: op %c m %d n %d k %d lda %d ldb %d ldc %d out %s align %u %u %u\n",
	        ta == CUBLAS_OP_T ? 'T' : 'N', p->m, p->n, p->k, p->lda, p->ldb, p->ldc,
	        ct == CUDA_R_32F ? "f32" : "bf16", al[0], al[1], al[2]);
	int reps = 10;
	float ex = time_us([&] { gemm_ex(p, A, B, C); }, reps), best = 1e30f;
	fprintf(stderr, "  cublasGemmEx   %9.1f us\n", ex);
	int bi = 0;
	for (int i = 0; i < nr; i++) {
		if (r[i].state != CUBLAS_STATUS_SUCCESS)
			continue;
		if (gemm_lt(p, &r[i].algo, A, B, C) != CUBLAS_STATUS_SUCCESS) {
			fprintf(stderr, "  lt [%2d] does not run\n", i);
			continue;
		}
		float us = time_us([&] { cublasCheck(gemm_lt(p, &r[i].algo, A, B, C)); }, reps);
		algo_print("lt", i, &r[i], us);
		if (us < best)
			best = us, bi = i;
	}
	p->algo = r[bi].algo, p->ws = r[bi].workspaceSize;
	fprintf(stderr, "  best: [%d] %.1f us, heuristic [0] vs cublasGemmEx %.1f us: %.3fx\n", bi, best, ex,
	        ex / best);
}

void gemm_bf16(cublasOperation_t ta, int m, int n, int k, const void *A, int lda, const void *B, int ldb, void *C,
               cudaDataType_t ctype, int ldc)
{
	int mode = gemm_mode();
	Plan key = {};
	key.ta = ta, key.m = m, key.n = n, key.k = k, key.lda = lda, key.ldb = ldb, key.ldc = ldc, key.ctype = ctype;
	key.align = (int)(align_of(A) | align_of(B) << 9 | align_of(C) << 18);
	if (mode == GEMM_EX || m == 0 || n == 0 || k == 0) {
		if (m && n)
			gemm_ex(&key, A, B, C);
		return;
	}
	Plan *p = NULL;
	for (int i = 0; i < nplans && !p; i++)
		if (plans[i].ta == key.ta && plans[i].m == m && plans[i].n == n && plans[i].k == k &&
		    plans[i].lda == lda && plans[i].ldb == ldb && plans[i].ldc == ldc && plans[i].ctype == key.ctype &&
		    plans[i].align == key.align)
			p = &plans[i];
	if (!p) {
		if (nplans == cap_plans) {
			cap_plans = cap_plans ? 2 * cap_plans : 32;
			plans = (Plan *)realloc(plans, (size_t)cap_plans * sizeof *plans);
			if (!plans)
				fprintf(stderr, "gemm_bf16: out of memory\n"), exit(1);
		}
		p = &plans[nplans++];
		*p = key;
		plan_init(p, mode, A, B, C);
	}
	if (p->ok)
		cublasCheck(gemm_lt(p, &p->algo, A, B, C));
	else
		gemm_ex(p, A, B, C);
}

// ----------------------------------------------------------------------------
// the layers

__global__ void add_bias_kernel(bf16 *out, const bf16 *b, int n, int OC)
{
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < (int64_t)n * OC)
		out[i] = __float2bfloat16(__bfloat162float(out[i]) + __bfloat162float(b[i % OC]));
}

extern "C" void matmul_forward_cuda(bf16_t *d_out, const bf16_t *d_x, const bf16_t *d_w, const bf16_t *d_b, int n,
                                    int IC, int OC)
{
	gemm_bf16(CUBLAS_OP_T, OC, n, IC, d_w, IC, d_x, IC, d_out, CUDA_R_16BF, OC);
	if (d_b) {
		add_bias_kernel<<<(unsigned)CEIL_DIV((int64_t)n * OC, 256), 256>>>((bf16 *)d_out, (const bf16 *)d_b, n, OC);
		cudaCheck(cudaGetLastError());
	}
}

extern "C" void matmul_backward_cuda(bf16_t *d_dx, const bf16_t *d_dout, const bf16_t *d_w, int n, int IC, int OC)
{
	gemm_bf16(CUBLAS_OP_N, IC, n, OC, d_w, IC, d_dout, OC, d_dx, CUDA_R_16BF, IC);
}
