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
 * version 3: matmul_forward_residual_cuda, out = res + x w^T in the GEMM
 * (beta 1, the residual as cuBLASLt's C): the teacher's o and down
 * projections write the residual stream h directly, so the pass that added
 * a to x (a written, then read with x) is gone; 2 x 16.8 MB a layer at
 * 4096 tokens of the Qwen2.5-3B shape (the teacher's forward 0.9 ms
 * faster, H100). Tuning times each candidate hot (GEMM_HOT_MS of unmeasured
 * runs, then as long again measured): the card runs at its power limit in
 * the teacher's step. (Picks made so, table `ranked_hot`, did not make the
 * step faster: see there.)
 *
 * DASH_GEMM in the environment, read once: unset or "lt" cuBLASLt, the
 * heuristic rank of the table `ranked` below for the shapes it lists, the
 * first elsewhere; "ex" cublasGemmEx (version 1); "tune" the fastest of
 * cuBLASLt's first LT_CANDIDATES heuristics, timed hot on the first call of
 * each plan, every candidate printed to stderr (not the same from run to
 * run: for measurements, to fill the table); "lt0" cuBLASLt's first
 * heuristic everywhere (the table ignored, for comparisons); "hot" the
 * table `ranked_hot` instead of `ranked` (picks timed hot; rank -1 there:
 * cublasGemmEx for that shape).
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

enum { GEMM_EX, GEMM_LT, GEMM_TUNE, GEMM_LT0, GEMM_HOT };

/* the Lt handle and its workspace, made once */
static void lt_open(void)
{
	if (lt.h)
		return;
	cublasCheck(cublasLtCreate(&lt.h));
	cudaCheck(cudaMalloc(&lt.ws, LT_WORKSPACE));
}

/* the path DASH_GEMM names: lt (the default), ex, tune, lt0 or hot */
static int gemm_mode(void)
{
	static int mode = -1;
	if (mode >= 0)
		return mode;
	const char *e = getenv("DASH_GEMM");
	mode = e && strcmp(e, "ex") == 0     ? GEMM_EX
	       : e && strcmp(e, "tune") == 0 ? GEMM_TUNE
	       : e && strcmp(e, "lt0") == 0  ? GEMM_LT0
	       : e && strcmp(e, "hot") == 0  ? GEMM_HOT
	                                     : GEMM_LT;
	if (mode != GEMM_EX)
		lt_open();
	return mode;
}

/* a product's shape, layout and alignment, and what cuBLASLt runs for it */
typedef struct {
	int ta, m, n, k, lda, ldb, ldc, ctype, align, acc, fp8, fast; /* the key; acc: beta 1, C added; fp8: e4m3 A, B;
	                                                                fast: e4m3 with fast accumulation */
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

/* D = op(A) B, or Cin + op(A) B when Cin is not NULL (Cin may be D; both
 * of the plan's C layout) */
static void gemm_ex(const Plan *p, const void *A, const void *B, const void *Cin, void *D)
{
	const float one = 1, zero = 0;
	if (Cin && Cin != D) {
		size_t es = p->ctype == CUDA_R_32F ? 4 : 2;
		cudaCheck(cudaMemcpy2DAsync(D, (size_t)p->ldc * es, Cin, (size_t)p->ldc * es, (size_t)p->m * es,
		                            (size_t)p->n, cudaMemcpyDeviceToDevice, 0));
	}
	cublasCheck(cublasGemmEx(handle(), (cublasOperation_t)p->ta, CUBLAS_OP_N, p->m, p->n, p->k, &one, A, CUDA_R_16BF,
	                         p->lda, B, CUDA_R_16BF, p->ldb, Cin ? &one : &zero, D, (cudaDataType_t)p->ctype, p->ldc,
	                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

static cublasStatus_t gemm_lt(const Plan *p, const cublasLtMatmulAlgo_t *algo, const void *A, const void *B,
                              const void *Cin, void *D)
{
	const float one = 1, zero = 0;
	return cublasLtMatmul(lt.h, p->op, &one, A, p->a, B, p->b, Cin ? &one : &zero, Cin ? Cin : D, p->c, D, p->c, algo,
	                      lt.ws, LT_WORKSPACE, 0);
}

/* the mean time of reps runs of f, in microseconds; reps 0: hot, as many
 * runs as fill GEMM_HOT_MS unmeasured (the card at its power limit, as in
 * the teacher's step), then as many again measured */
#define GEMM_HOT_MS 25.0f
template <typename F> static float time_us(F f, int reps)
{
	cudaEvent_t e0, e1;
	cudaCheck(cudaEventCreate(&e0));
	cudaCheck(cudaEventCreate(&e1));
	f();
	if (reps == 0) {
		cudaCheck(cudaEventRecord(e0, 0));
		f();
		cudaCheck(cudaEventRecord(e1, 0));
		cudaCheck(cudaEventSynchronize(e1));
		float one;
		cudaCheck(cudaEventElapsedTime(&one, e0, e1));
		reps = (int)(GEMM_HOT_MS / (one > 1e-3f ? one : 1e-3f)) + 1;
		for (int i = 0; i < reps; i++)
			f();
	}
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
	int m, n, k, f32, acc, rank;
} ranked[] = {
	{'T', 22016, 4096, 2048, 0, 0, 6},  /* gate | up forward: 449.5 us, cublasGemmEx 474.5 */
	{'N', 11008, 4096, 2048, 0, 0, 4},  /* down backward: 233.3, 242.9 */
	{'N', 2048, 4096, 2048, 0, 0, 3},   /* o backward: 53.4, 55.7 */
	{'T', 151936, 4096, 2048, 0, 0, 5}, /* bf16 logits (bench/teacher's forward): 3263.8, 3532.9 */
	{'T', 151936, 2048, 2048, 1, 0, 5}, /* the loss's float32 logits, 2048 rows: 1713.8, 1810.0 */
	{'T', 151936, 1024, 2048, 1, 0, 6}, /* 1024 rows (a KL chunk): 937.5, 1016.6 */
	{'N', 2048, 1024, 151936, 0, 0, 1}, /* its dhidden: 778.9, 910.3 */
};

/* The fastest hot (DASH_GEMM=tune, each candidate after 25 ms of itself:
 * the card at its power limit, 1400-1700 MHz), H100, cuBLAS 13.0, in one
 * bench/teacher 1 4096 call; rank -1 is cublasGemmEx. Times: the pick, then
 * the table `ranked`'s. Used with DASH_GEMM=hot. Not the default: in the
 * whole step these picks were slower, not faster (forward + backward 115.1
 * ms against 114.7 with `ranked`, medians of 6 alternated runs, H100; the
 * backward 0.6 ms slower), so a GEMM timed alone, even hot, does not rank
 * algorithms for the step (kernels/NOTES.md, version 4). */
static const struct {
	char op;
	int m, n, k, f32, acc, rank;
} ranked_hot[] = {
	{'T', 2560, 4096, 2048, 0, 0, -1},  /* q | k | v forward: 57.4 us, 62.4 */
	{'T', 22016, 4096, 2048, 0, 0, 5},  /* gate | up forward: 505.7, 534.7 */
	{'T', 2048, 4096, 2048, 0, 1, 0},   /* o forward adding the residual: 53.0 (cublasGemmEx 74.8) */
	{'T', 2048, 4096, 11008, 0, 1, 0},  /* down forward adding the residual: 259.4 (286.7) */
	{'T', 151936, 4096, 2048, 0, 0, 2}, /* bf16 logits: 3449.5, 3595.8 */
	{'T', 151936, 2048, 2048, 1, 0, 5}, /* the loss's float32 logits: 1837.9, the same */
	{'N', 2048, 2048, 151936, 0, 0, 1}, /* their dhidden: 1472.5, 1521.1 */
	{'N', 11008, 4096, 2048, 0, 0, 4},  /* down backward: 253.4, the same */
	{'N', 2048, 4096, 22016, 0, 0, 0},  /* gate | up backward: 522.1, the same */
	{'N', 2048, 4096, 2048, 0, 0, -1},  /* o backward: 50.7, 53.6 */
	{'N', 2048, 4096, 2560, 0, 0, -1},  /* q | k | v backward: 60.5, 73.1 */
	{'T', 151936, 1024, 2048, 1, 0, 6}, /* as `ranked` (not timed hot) */
	{'N', 2048, 1024, 151936, 0, 0, 1},
};

/* the plan of key's product: the one made before, or a new one (*fresh 1)
 * holding the key, for the caller to make */
static Plan *plan_slot(const Plan *key, int *fresh)
{
	for (int i = 0; i < nplans; i++) {
		const Plan *q = &plans[i];
		if (q->ta == key->ta && q->m == key->m && q->n == key->n && q->k == key->k && q->lda == key->lda &&
		    q->ldb == key->ldb && q->ldc == key->ldc && q->ctype == key->ctype && q->align == key->align &&
		    q->acc == key->acc && q->fp8 == key->fp8 && q->fast == key->fast)
			return *fresh = 0, (Plan *)q;
	}
	if (nplans == cap_plans) {
		cap_plans = cap_plans ? 2 * cap_plans : 32;
		plans = (Plan *)realloc(plans, (size_t)cap_plans * sizeof *plans);
		if (!plans)
			fprintf(stderr, "gemm_bf16: out of memory\n"), exit(1);
	}
	plans[nplans] = *key;
	*fresh = 1;
	return &plans[nplans++];
}

/* DASH_GEMM=tune: every candidate of r hot, printed; the fastest's index
 * (best its time, table the time of candidate pick) */
static int lt_fastest(const Plan *p, const cublasLtMatmulHeuristicResult_t *r, int nr, int pick, const void *A,
                      const void *B, const void *Cin, void *C, float *best, float *table)
{
	int bi = 0;
	*best = 1e30f, *table = 0;
	for (int i = 0; i < nr; i++) {
		if (r[i].state != CUBLAS_STATUS_SUCCESS)
			continue;
		if (gemm_lt(p, &r[i].algo, A, B, Cin, C) != CUBLAS_STATUS_SUCCESS) {
			fprintf(stderr, "  lt [%2d] does not run\n", i);
			continue;
		}
		float us = time_us([&] { cublasCheck(gemm_lt(p, &r[i].algo, A, B, Cin, C)); }, 0);
		algo_print("lt", i, &r[i], us);
		if (i == pick)
			*table = us;
		if (us < *best)
			*best = us, bi = i;
	}
	return bi;
}

/* make p's descriptors and choose its algorithm (A, B, Cin, C: the first
 * call's buffers, which tuning runs on; Cin NULL or, for an accumulating
 * plan, the addend) */
static void plan_init(Plan *p, int mode, const void *A, const void *B, const void *Cin, void *C)
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
	uint32_t al[3] = {align_of(A), align_of(B), align_of((const void *)((uintptr_t)C | (uintptr_t)Cin))};
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
	for (size_t i = 0; mode != GEMM_LT0 && mode != GEMM_HOT && i < sizeof ranked / sizeof ranked[0]; i++)
		if (ranked[i].op == (ta == CUBLAS_OP_T ? 'T' : 'N') && ranked[i].m == p->m && ranked[i].n == p->n &&
		    ranked[i].k == p->k && ranked[i].f32 == (ct == CUDA_R_32F) && ranked[i].acc == p->acc &&
		    ranked[i].rank < nr && r[ranked[i].rank].state == CUBLAS_STATUS_SUCCESS)
			pick = ranked[i].rank;
	for (size_t i = 0; mode == GEMM_HOT && i < sizeof ranked_hot / sizeof ranked_hot[0]; i++)
		if (ranked_hot[i].op == (ta == CUBLAS_OP_T ? 'T' : 'N') && ranked_hot[i].m == p->m &&
		    ranked_hot[i].n == p->n && ranked_hot[i].k == p->k && ranked_hot[i].f32 == (ct == CUDA_R_32F) &&
		    ranked_hot[i].acc == p->acc && ranked_hot[i].rank < nr &&
		    (ranked_hot[i].rank < 0 || r[ranked_hot[i].rank].state == CUBLAS_STATUS_SUCCESS))
			pick = ranked_hot[i].rank;
	if (pick < 0) { /* cublasGemmEx for this shape */
		p->ok = 0;
		return;
	}
	p->algo = r[pick].algo, p->ws = r[pick].workspaceSize;
	/* an accumulation in place changes its output with every run: not tuned */
	if (mode != GEMM_TUNE || (Cin && Cin == C))
		return;
	fprintf(stderr, "gemm tune: op %c m %d n %d k %d lda %d ldb %d ldc %d out %s%s align %u %u %u\n",
	        ta == CUBLAS_OP_T ? 'T' : 'N', p->m, p->n, p->k, p->lda, p->ldb, p->ldc,
	        ct == CUDA_R_32F ? "f32" : "bf16", Cin ? " +C" : "", al[0], al[1], al[2]);
	float ex = time_us([&] { gemm_ex(p, A, B, Cin, C); }, 0), best, table;
	fprintf(stderr, "  cublasGemmEx   %9.1f us (hot)\n", ex);
	int bi = lt_fastest(p, r, nr, pick, A, B, Cin, C, &best, &table);
	p->algo = r[bi].algo, p->ws = r[bi].workspaceSize;
	fprintf(stderr, "  best: [%d] %.1f us, table's [%d] %.1f us (%.3fx), cublasGemmEx %.1f us (%.3fx)\n", bi, best,
	        pick, table, table / best, ex, ex / best);
}

/* C = op(A) B (Cin NULL) or Cin + op(A) B, as gemm_bf16 */
static void gemm_run(cublasOperation_t ta, int m, int n, int k, const void *A, int lda, const void *B, int ldb,
                     const void *Cin, void *C, cudaDataType_t ctype, int ldc)
{
	int mode = gemm_mode();
	Plan key = {};
	key.ta = ta, key.m = m, key.n = n, key.k = k, key.lda = lda, key.ldb = ldb, key.ldc = ldc, key.ctype = ctype;
	key.acc = Cin != NULL;
	key.align = (int)(align_of(A) | align_of(B) << 9 | align_of((const void *)((uintptr_t)C | (uintptr_t)Cin)) << 18);
	if (mode == GEMM_EX || m == 0 || n == 0 || k == 0) {
		if (m && n)
			gemm_ex(&key, A, B, Cin, C);
		return;
	}
	int fresh;
	Plan *p = plan_slot(&key, &fresh);
	if (fresh)
		plan_init(p, mode, A, B, Cin, C);
	if (p->ok)
		cublasCheck(gemm_lt(p, &p->algo, A, B, Cin, C));
	else
		gemm_ex(p, A, B, Cin, C);
}

void gemm_bf16(cublasOperation_t ta, int m, int n, int k, const void *A, int lda, const void *B, int ldb, void *C,
               cudaDataType_t ctype, int ldc)
{
	gemm_run(ta, m, n, k, A, lda, B, ldb, NULL, C, ctype, ldc);
}

void gemm_bf16_acc(cublasOperation_t ta, int m, int n, int k, const void *A, int lda, const void *B, int ldb,
                   const void *Cin, void *C, cudaDataType_t ctype, int ldc)
{
	gemm_run(ta, m, n, k, A, lda, B, ldb, Cin, C, ctype, ldc);
}

// ----------------------------------------------------------------------------
// the products in float8 (kernels/fp8.cu, lib/fp8.h): the backward's, and
// the supernet's forward's under search-logits --forward fp8. e4m3 codes, a
// float32 scale a row of each side (cuBLASLt's outer-vector scaling,
// Hopper).
//
// Accumulation. Hopper's tensor cores add e4m3 products into an accumulator
// narrower than float32. cuBLASLt's default moves the sums into float32
// registers every few k-steps (split accumulation), and with outer-vector
// scales it then has one kernel: 128 x 128 tiles, no clusters. Its fast
// accumulation (CUBLASLT_MATMUL_DESC_FAST_ACCUM) keeps the sum in the
// tensor cores and runs a 2 x 1 cluster kernel: every e4m3 product of the
// step fast, 66.6 -> 57.2 ms of them a step (H200, bench/RESULTS.md
// version 18). The narrow sums truncate: float32 products at k 2048 off by
// 1.1e-3 of their value (split: 1e-4), and against bf16 products of the
// same operands the rms relative error 3.75e-2 (the codes' own) at k 2048
// to 11008, 3.76e-2 at 22016, 3.91e-2 at 151936 (split: 3.75e-2
// throughout; bench/bin/gemm8). So matmul_fp8_fast(1) sums fast only up
// to FP8_FAST_K terms (every layer's product; the vocabulary's dhidden,
// k = V, stays split), 2 at any k (benchmarks), 0 (the start) nowhere.
// The GpuSupernet sets it: the backward's products fast, the forwards'
// under --forward fp8-fast (kernels/supernet.cu).

#define FP8_FAST_K 65536

static int fp8_fast_mode;

void matmul_fp8_fast(int mode) { fp8_fast_mode = mode; }

/* fast accumulation for a sum of k e4m3 products */
static int fp8_fast(int k) { return fp8_fast_mode == 2 || (fp8_fast_mode == 1 && k <= FP8_FAST_K); }

/* make p's descriptors (A scaled by sa a row of op(A), B by sb a column)
 * and choose its algorithm: cuBLASLt's first, or with DASH_GEMM=tune the
 * fastest hot (not for an accumulation, whose output each run changes) */
static void plan8_init(Plan *p, const float *sa, const float *sb, const void *A, const void *B, void *D)
{
	cublasOperation_t T = CUBLAS_OP_T, N = CUBLAS_OP_N;
	int32_t vec = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
	int8_t fast = p->fast;
	lt_open();
	cublasCheck(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
	cublasCheck(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &T, sizeof T));
	cublasCheck(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &N, sizeof N));
	cublasCheck(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &vec, sizeof vec));
	cublasCheck(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &vec, sizeof vec));
	cublasCheck(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof fast));
	/* the heuristic answers nothing before the scale pointers are set */
	cublasCheck(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof sa));
	cublasCheck(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof sb));
	cublasCheck(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_8F_E4M3, p->k, p->m, p->lda));
	cublasCheck(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_8F_E4M3, p->k, p->n, p->ldb));
	cublasCheck(cublasLtMatrixLayoutCreate(&p->c, (cudaDataType_t)p->ctype, p->m, p->n, p->ldc));
	cublasLtMatmulPreference_t pref;
	cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
	uint64_t ws = LT_WORKSPACE;
	uint32_t red = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE; /* and none: split-K sums in float32, never bf16 */
	cublasCheck(
	        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
	cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &red,
	                                                 sizeof red));
	cublasLtMatmulHeuristicResult_t r[LT_CANDIDATES];
	int nr = 0;
	if (cublasLtMatmulAlgoGetHeuristic(lt.h, p->op, p->a, p->b, p->c, p->c, pref, LT_CANDIDATES, r, &nr) !=
	            CUBLAS_STATUS_SUCCESS ||
	    nr == 0 || r[0].state != CUBLAS_STATUS_SUCCESS)
		fprintf(stderr, "gemm: cuBLASLt has no e4m3 product of %d x %d x %d on this device\n", p->m, p->n,
		        p->k),
		        exit(1);
	cublasCheck(cublasLtMatmulPreferenceDestroy(pref));
	p->algo = r[0].algo, p->ws = r[0].workspaceSize, p->ok = 1;
	if (gemm_mode() != GEMM_TUNE || p->acc)
		return;
	fprintf(stderr, "gemm tune: e4m3 m %d n %d k %d out %s\n", p->m, p->n, p->k,
	        p->ctype == CUDA_R_32F ? "f32" : "bf16");
	float best, first;
	int bi = lt_fastest(p, r, nr, 0, A, B, NULL, D, &best, &first);
	p->algo = r[bi].algo, p->ws = r[bi].workspaceSize;
	fprintf(stderr, "  best: [%d] %.1f us, cuBLASLt's first %.1f us (%.3fx)\n", bi, best, first, first / best);
}

/* D (n, m) = [Cin +] (a's codes (n, k) scaled by sa) (b's (m, k) by sb)^T:
 * the product of both fp8 entries, whose k is the codes' row length */
static void product8(const char *who, void *D, int f32, const void *Cin, const uint8_t *aq, const float *sa,
                     const uint8_t *bq, const float *sb, int n, int m, int k)
{
	if (n == 0 || m == 0)
		return;
	if (m % 16 || k % 16 || ((uintptr_t)aq | (uintptr_t)bq) & 15)
		fprintf(stderr, "%s: n %d, widths %d and %d: e4m3 products want multiples of 16\n", who, n, m, k),
		        abort();
	Plan key = {};
	key.ta = CUBLAS_OP_T, key.m = m, key.n = n, key.k = k, key.lda = k, key.ldb = k, key.ldc = m;
	key.ctype = f32 ? CUDA_R_32F : CUDA_R_16BF, key.acc = Cin != NULL, key.fp8 = 1, key.fast = fp8_fast(k);
	int fresh;
	Plan *p = plan_slot(&key, &fresh);
	if (fresh)
		plan8_init(p, sb, sa, bq, aq, D);
	cublasCheck(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sb, sizeof sb));
	cublasCheck(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sa, sizeof sa));
	cublasCheck(gemm_lt(p, &p->algo, bq, aq, Cin, D));
}

extern "C" void matmul_backward_fp8_cuda(void *d_dx, int f32, int acc, const uint8_t *d_dq, const float *d_sd,
                                         const uint8_t *d_wq, const float *d_sw, int n, int IC, int OC)
{
	product8("matmul_backward_fp8", d_dx, f32, acc ? d_dx : NULL, d_dq, d_sd, d_wq, d_sw, n, IC, OC);
}

extern "C" void matmul_forward_fp8_cuda(bf16_t *d_out, const bf16_t *d_res, const uint8_t *d_xq, const float *d_sx,
                                        const uint8_t *d_wq, const float *d_sw, int n, int IC, int OC)
{
	product8("matmul_forward_fp8", d_out, 0, d_res, d_xq, d_sx, d_wq, d_sw, n, OC, IC);
}

extern "C" void matmul_forward_fp8_f32_cuda(float *d_out, const uint8_t *d_xq, const float *d_sx, const uint8_t *d_wq,
                                            const float *d_sw, int n, int IC, int OC)
{
	product8("matmul_forward_fp8_f32", d_out, 1, NULL, d_xq, d_sx, d_wq, d_sw, n, OC, IC);
}

// ----------------------------------------------------------------------------
// the layers

/* out (n, OC) += s b (OC): VEC values a thread (8: OC % 8 == 0 and both
 * 16-byte aligned) */
template <int VEC>
__global__ void add_bias_kernel(bf16 *out, const bf16 *b, float s, int n, int OC)
{
	int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * VEC;
	if (i >= (int64_t)n * OC)
		return;
	if (VEC == 8) {
		float x[8], y[8];
		load8(x, out, 0, i / 8);
		load8(y, b, 0, i % OC / 8);
#pragma unroll
		for (int j = 0; j < 8; j++)
			x[j] += s * y[j];
		store8_bf16(out, x, i / 8);
	} else {
		out[i] = __float2bfloat16(__bfloat162float(out[i]) + s * __bfloat162float(b[i % OC]));
	}
}

extern "C" void add_bias_cuda(bf16_t *d_out, const bf16_t *d_b, float s, int n, int OC)
{
	int64_t nv = (int64_t)n * OC;
	if (OC % 8 == 0 && vec8_ok(nv, d_out, d_b))
		add_bias_kernel<8><<<(unsigned)CEIL_DIV(nv / 8, 256), 256>>>((bf16 *)d_out, (const bf16 *)d_b, s, n, OC);
	else
		add_bias_kernel<1><<<(unsigned)CEIL_DIV(nv, 256), 256>>>((bf16 *)d_out, (const bf16 *)d_b, s, n, OC);
	cudaCheck(cudaGetLastError());
}

extern "C" void matmul_forward_cuda(bf16_t *d_out, const bf16_t *d_x, const bf16_t *d_w, const bf16_t *d_b, int n,
                                    int IC, int OC)
{
	gemm_bf16(CUBLAS_OP_T, OC, n, IC, d_w, IC, d_x, IC, d_out, CUDA_R_16BF, OC);
	if (d_b)
		add_bias_cuda(d_out, d_b, 1.f, n, OC);
}

extern "C" void matmul_backward_cuda(bf16_t *d_dx, const bf16_t *d_dout, const bf16_t *d_w, int n, int IC, int OC)
{
	gemm_bf16(CUBLAS_OP_N, IC, n, OC, d_w, IC, d_dout, OC, d_dx, CUDA_R_16BF, IC);
}

extern "C" void matmul_forward_residual_cuda(bf16_t *d_out, const bf16_t *d_x, const bf16_t *d_w, const bf16_t *d_res,
                                             int n, int IC, int OC)
{
	gemm_run(CUBLAS_OP_T, OC, n, IC, d_w, IC, d_x, IC, d_res, d_out, CUDA_R_16BF, OC);
}
