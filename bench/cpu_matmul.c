/* bench/cpu_matmul: matmul_forward_cpu and matmul_backward_cpu (lib/ops_cpu.c,
 * the blocked GEMM) against the implementation they replaced, kept below as
 * matmul_forward_old / matmul_backward_old, at the teacher's shapes
 * (Qwen2.5-Coder-0.5B: C 896, qkv 1152, F 4864, gate|up 9728, V 151936) with
 * random weights of one dtype made in memory. Each repetition times old then
 * new (wall clock); the table gives the best and the median GFLOP/s of each
 * (2 n IC OC flops a call) and the largest difference between the two
 * results relative to the largest |value|. Threads: OMP_NUM_THREADS.
 * usage: bench/bin/cpu_matmul [-r reps] [-w dtype] [-d fwd|bwd|both] [n,IC,OC ...]
 * (default 5 repetitions, q5_0, both directions, the shapes listed in main) */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops_cpu.h" // defines: matmul_forward_cpu, matmul_backward_cpu
#include "tensor.h"  // defines: Tensor, convert_to_f32, dtype_row_bytes
#include "util.h"    // defines: mallocCheck, now_seconds, die, estrtol

// ----------------------------------------------------------------------------
// the old implementation (lib/ops_cpu.c before the blocked GEMM), verbatim

#define MM_ROWS 4   /* output rows converted to f32 together */
#define MM_TILE 64  /* input rows per pass, so that they stay in cache */

/* dot products of x (IC) with 4 rows of w (4, IC): 8 partial sums a row,
 * added in a fixed order, so every path gives the same bits */
__attribute__((target_clones("arch=x86-64-v3", "default")))
static void dot4(float out[4], const float *x, const float *w, int IC)
{
	float acc[4][8] = {{0}};
	int i = 0;
	for (; i + 8 <= IC; i += 8)
		for (int r = 0; r < 4; r++)
			for (int j = 0; j < 8; j++)
				acc[r][j] += x[i + j] * w[(size_t)r * IC + i + j];
	for (int r = 0; r < 4; r++) {
		float s = 0;
		for (int j = 0; j < 8; j++)
			s += acc[r][j];
		for (int ii = i; ii < IC; ii++)
			s += x[ii] * w[(size_t)r * IC + ii];
		out[r] = s;
	}
}

/* the same for two input rows x0, x1 at once: each weight load serves two
 * tokens (out0, out1 equal what dot4 gives for each) */
__attribute__((target_clones("arch=x86-64-v3", "default")))
static void dot4x2(float out0[4], float out1[4], const float *x0, const float *x1, const float *w, int IC)
{
	float a0[4][8] = {{0}}, a1[4][8] = {{0}};
	int i = 0;
	for (; i + 8 <= IC; i += 8)
		for (int r = 0; r < 4; r++)
			for (int j = 0; j < 8; j++) {
				float wv = w[(size_t)r * IC + i + j];
				a0[r][j] += x0[i + j] * wv;
				a1[r][j] += x1[i + j] * wv;
			}
	for (int r = 0; r < 4; r++) {
		float s0 = 0, s1 = 0;
		for (int j = 0; j < 8; j++)
			s0 += a0[r][j], s1 += a1[r][j];
		for (int ii = i; ii < IC; ii++) {
			s0 += x0[ii] * w[(size_t)r * IC + ii];
			s1 += x1[ii] * w[(size_t)r * IC + ii];
		}
		out0[r] = s0, out1[r] = s1;
	}
}

static void matmul_forward_old(float *out, const float *x, const Tensor *w, const Tensor *b,
                               int n, int IC, int OC)
{
	int nblk = (OC + MM_ROWS - 1) / MM_ROWS;
	size_t rowb = dtype_row_bytes(w->dtype, IC);
	const uint8_t *wd = w->data;
	#pragma omp parallel
	{
		float *wrow = callocCheck((size_t)MM_ROWS * IC, sizeof(float));
		float *bias = callocCheck(MM_ROWS, sizeof(float));
		for (int t0 = 0; t0 < n; t0 += MM_TILE) {
			int t1 = t0 + MM_TILE < n ? t0 + MM_TILE : n;
			#pragma omp for schedule(static)
			for (int blk = 0; blk < nblk; blk++) {
				int o0 = blk * MM_ROWS;
				int no = OC - o0 < MM_ROWS ? OC - o0 : MM_ROWS;
				convert_to_f32(wrow, wd + (size_t)o0 * rowb, w->dtype, (size_t)no * IC);
				if (b && b->data)
					convert_to_f32(bias, (const uint8_t *)b->data + dtype_row_bytes(b->dtype, o0),
					               b->dtype, (size_t)no);
				int t = t0;
				for (; t + 1 < t1; t += 2) {
					float r0[4], r1[4];
					dot4x2(r0, r1, x + (size_t)t * IC, x + (size_t)(t + 1) * IC, wrow, IC);
					for (int j = 0; j < no; j++) {
						out[(size_t)t * OC + o0 + j] = r0[j] + bias[j];
						out[(size_t)(t + 1) * OC + o0 + j] = r1[j] + bias[j];
					}
				}
				for (; t < t1; t++) {
					float r[4];
					dot4(r, x + (size_t)t * IC, wrow, IC);
					for (int j = 0; j < no; j++)
						out[(size_t)t * OC + o0 + j] = r[j] + bias[j];
				}
			}
		}
		free(wrow);
		free(bias);
	}
}

static void matmul_backward_old(float *dx, const float *dout, const Tensor *w, int n, int IC, int OC)
{
	/* the weight in float32 once, then each row of dx is a sum of weight rows */
	float *wf = mallocCheck((size_t)OC * IC * sizeof(float));
	size_t rowb = dtype_row_bytes(w->dtype, IC);
	#pragma omp parallel for
	for (int o = 0; o < OC; o++)
		convert_to_f32(wf + (size_t)o * IC, (const uint8_t *)w->data + (size_t)o * rowb, w->dtype, (size_t)IC);
	#pragma omp parallel for
	for (int t = 0; t < n; t++) {
		float *dxt = dx + (size_t)t * IC;
		const float *dot = dout + (size_t)t * OC;
		for (int i = 0; i < IC; i++)
			dxt[i] = 0;
		for (int o = 0; o < OC; o++) {
			float g = dot[o];
			const float *wo = wf + (size_t)o * IC;
			for (int i = 0; i < IC; i++)
				dxt[i] += g * wo[i];
		}
	}
	free(wf);
}

// ----------------------------------------------------------------------------
// inputs

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static float frand(void) /* uniform in [-1, 1) */
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return (float)((double)(rng >> 11) / 9007199254740992.0 * 2 - 1);
}

/* random_weights: n values of type t (n a multiple of its block) in a new
 * buffer: floats uniform in [-1, 1); quantised blocks random bytes with sane
 * f16 scales (the fields at the offsets below) */
static void *random_weights(DType t, size_t n)
{
	size_t bytes = dtype_row_bytes(t, (int64_t)n);
	uint8_t *p = mallocCheck(bytes);
	if (!dtype_is_quant(t)) {
		float *f = mallocCheck(n * sizeof(float));
		for (size_t i = 0; i < n; i++)
			f[i] = frand();
		for (size_t i = 0; i < n; i++) {
			uint16_t h = t == DT_BF16 ? f32_to_bf16(f[i]) : f32_to_f16(f[i]);
			double d = f[i];
			switch (t) {
			case DT_F32: memcpy(p + 4 * i, &f[i], 4); break;
			case DT_F64: memcpy(p + 8 * i, &d, 8); break;
			default: memcpy(p + 2 * i, &h, 2); break;
			}
		}
		free(f);
		return p;
	}
	for (size_t i = 0; i < bytes; i++)
		p[i] = (uint8_t)(frand() * 128 + 128);
	int f0 = t == DT_Q6_K ? 208 : 0;
	int f1 = t == DT_Q4_1 || t == DT_Q5_1 || t == DT_Q4_K || t == DT_Q5_K ? 2 : -1;
	for (size_t b = 0; b < bytes / dtype_block_bytes(t); b++) {
		uint8_t *blk = p + b * dtype_block_bytes(t);
		uint16_t d = f32_to_f16(0.01f * (1.5f + frand())), m = f32_to_f16(0.01f * frand());
		memcpy(blk + f0, &d, 2);
		if (f1 >= 0)
			memcpy(blk + f1, &m, 2);
	}
	return p;
}

static DType parse_dtype(const char *s)
{
	for (int t = 0; t < DT_COUNT; t++)
		if (dtype_is_float((DType)t) && !strcmp(dtype_name((DType)t), s))
			return (DType)t;
	die("cpu_matmul: unknown weight dtype '%s'", s);
}

// ----------------------------------------------------------------------------
// timing

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double max_rel_diff(const float *a, const float *b, size_t n)
{
	double md = 0, mx = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)a[i] - b[i]);
		md = d > md || isnan(d) ? d : md;
		mx = fabs((double)b[i]) > mx ? fabs((double)b[i]) : mx;
	}
	return md / (mx > 0 ? mx : 1);
}

/* run: times direction bwd (0: forward) at n, IC, OC, old and new */
static void run(int bwd, DType t, int n, int IC, int OC, int reps)
{
	int in = bwd ? OC : IC, on = bwd ? IC : OC; /* widths of the input and output rows */
	if (IC % dtype_block(t)) {
		printf("%-4s %-5s %5d %6d %6d | skipped: IC is not a multiple of the %d-value block\n", bwd ? "bwd" : "fwd",
		       dtype_name(t), n, IC, OC, dtype_block(t));
		return;
	}
	float *x = mallocCheck((size_t)n * in * sizeof(float));
	float *o_old = mallocCheck((size_t)n * on * sizeof(float)), *o_new = mallocCheck((size_t)n * on * sizeof(float));
	for (size_t i = 0; i < (size_t)n * in; i++)
		x[i] = frand();
	void *wd = random_weights(t, (size_t)OC * IC), *bd = random_weights(DT_F32, (size_t)OC);
	Tensor w = {.dtype = t, .ndim = 2, .shape = {OC, IC}, .data = wd};
	Tensor b = {.dtype = DT_F32, .ndim = 1, .shape = {OC}, .data = bd};
	double *ts_old = mallocCheck((size_t)reps * sizeof(double)), *ts_new = mallocCheck((size_t)reps * sizeof(double));
	for (int r = 0; r < reps; r++) {
		double t0 = now_seconds();
		if (bwd)
			matmul_backward_old(o_old, x, &w, n, IC, OC);
		else
			matmul_forward_old(o_old, x, &w, &b, n, IC, OC);
		double t1 = now_seconds();
		if (bwd)
			matmul_backward_cpu(o_new, x, &w, n, IC, OC);
		else
			matmul_forward_cpu(o_new, x, &w, &b, n, IC, OC);
		ts_old[r] = t1 - t0, ts_new[r] = now_seconds() - t1;
	}
	qsort(ts_old, (size_t)reps, sizeof(double), cmp_double);
	qsort(ts_new, (size_t)reps, sizeof(double), cmp_double);
	double gf = 2.0 * n * IC * OC / 1e9;
	printf("%-4s %-5s %5d %6d %6d | %7.2f %7.2f | %7.2f %7.2f | %5.2fx | %.1e\n", bwd ? "bwd" : "fwd",
	       dtype_name(t), n, IC, OC, gf / ts_old[0], gf / ts_old[reps / 2], gf / ts_new[0],
	       gf / ts_new[reps / 2], ts_old[0] / ts_new[0], max_rel_diff(o_new, o_old, (size_t)n * on));
	fflush(stdout);
	free(x), free(o_old), free(o_new), free(wd), free(bd), free(ts_old), free(ts_new);
}

static void usage(void)
{
	fprintf(stderr, "usage: bench/bin/cpu_matmul [-r reps] [-w dtype] [-d fwd|bwd|both] [n,IC,OC ...]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int reps = 5, dirs = 3, c;
	DType t = DT_Q5_0;
	while ((c = getopt(argc, argv, "r:w:d:")) != -1)
		switch (c) {
		case 'r': reps = (int)estrtoll(optarg, "-r"); break;
		case 'w': t = parse_dtype(optarg); break;
		case 'd': dirs = !strcmp(optarg, "fwd") ? 1 : !strcmp(optarg, "bwd") ? 2 : !strcmp(optarg, "both") ? 3 : 0; break;
		default: usage();
		}
	if (reps < 1 || !dirs)
		usage();
	/* n, IC, OC: the teacher's projections at a few row counts */
	static const int defaults[][3] = {
		{1, 896, 4864}, {8, 896, 896},
		{128, 896, 1152}, {128, 896, 896}, {128, 896, 4864}, {128, 4864, 896}, {128, 896, 9728},
		{128, 896, 151936},
		{512, 896, 1152}, {512, 896, 4864}, {512, 4864, 896},
		{4096, 896, 896},
	};
	int nshape = optind < argc ? argc - optind : (int)(sizeof defaults / sizeof defaults[0]);
	int (*shapes)[3] = mallocCheck((size_t)nshape * sizeof *shapes);
	for (int i = 0; i < nshape; i++) {
		if (optind < argc) {
			if (sscanf(argv[optind + i], "%d,%d,%d", &shapes[i][0], &shapes[i][1], &shapes[i][2]) != 3 ||
			    shapes[i][0] < 1 || shapes[i][1] < 1 || shapes[i][2] < 1)
				die("cpu_matmul: bad shape '%s' (want n,IC,OC)", argv[optind + i]);
		} else
			memcpy(shapes[i], defaults[i], sizeof shapes[i]);
	}
	const char *th = getenv("OMP_NUM_THREADS");
	printf("# cpu_matmul: weights %s, %d repetitions, OMP_NUM_THREADS=%s; GFLOP/s best and median\n",
	       dtype_name(t), reps, th ? th : "(unset)");
	printf("%-4s %-5s %5s %6s %6s | %-15s | %-15s | %-6s | %s\n", "dir", "w", "n", "IC", "OC", "old best   med",
	       "new best   med", "speed", "max rel diff");
	for (int d = 0; d < 2; d++)
		for (int i = 0; dirs & (1 << d) && i < nshape; i++)
			run(d, t, shapes[i][0], shapes[i][1], shapes[i][2], reps);
	free(shapes);
	return 0;
}
