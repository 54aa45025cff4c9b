/* bench/search: search-logits' step on the GPU (kernels/gpu_supernet.h) at
 * the Qwen2.5-3B shape with random bf16 weights made in memory (model_load
 * "random:qwen2.5-3b"): columns fa, swa (window 1024), gdn (untrained,
 * lop_init_teacher), every weight 1/3 (the softmax relaxation's start:
 * every column runs both ways). A step is what search-logits does with
 * --device cuda: the teacher's forward, the supernet's forward, the KL
 * over the vocabulary, the backward to dL/dw, and on the host the
 * relaxation's backward and Adam. Wall time per step (it ends by
 * downloading dw), median of N after 2 warm-ups; the phases by CUDA events,
 * medians; the extrapolation to the 12.3M tokens of the default search;
 * the device memory in use at its largest after a step (cudaMemGetInfo:
 * everything is allocated up front, so that is the peak); the card's SM
 * clock and power over the N steps (bench/card.h). Twice: with the
 * gdn columns in arenas of their own (as the 3B shape gets on an 80 GB
 * card), then in one shared arena (DASH_SUPERNET_SHARED=1: each gdn
 * forward runs again in the backward). DASH_BENCH_PROFILE=1: the first
 * way only, its last step between cudaProfilerStart and cudaProfilerStop
 * (for ncu --profile-from-start off). DASH_GRAD=fp8: the backward's
 * products in float8 e4m3 (search-logits --grad fp8); DASH_FORWARD=fp8:
 * the supernet's forward's (--forward fp8), fp8-both: the teacher's too,
 * fp8-all: and both sides' vocabulary logits, fp8-fast: fp8-all with the
 * forwards' e4m3 sums in the tensor cores (search-logits' default there);
 * DASH_GRAD=compare or DASH_FORWARD=compare (compare-both): instead of
 * timing, the KL and dL/dw of one step both ways (the other setting as
 * given), and how far apart; DASH_FORWARD=compare-all: fp8-both against
 * fp8-all; compare-fast: fp8-all against fp8-fast.
 * usage: bench/bin/search [B T [N]]   (default 1 4096 5) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include "card.h"         // defines: CardWatch, card_watch_start, card_watch_stop
#include "gpu.h"          // defines: cuda_device_name
#include "gpu_supernet.h" // defines: GpuSupernet, gpu_supernet_backward_kl
#include "model.h"
#include "stats.h"        // defines: median
#include "supernet.h"     // defines: Supernet, Relax
#include "util.h"

#define SEARCH_TOKENS 12.3e6 /* search-logits' default --tokens */

#define GIB(b) ((double)(b) / (1 << 30))

/* DASH_BENCH_PROFILE set and not 0 */
static int profiling(void)
{
	const char *e = getenv("DASH_BENCH_PROFILE");
	return e && *e && strcmp(e, "0");
}

/* N steps (after 2 warm-ups) of the GpuSupernet made from sn; prints the
 * medians and the memory */
static void run(Supernet *sn, const int32_t *ids, int B, int T, int N)
{
	int L = sn->L, K = sn->K, n = B * T;
	size_t lk = (size_t)L * K;
	GpuSupernet *gs = gpu_supernet_new(sn, n);
	float *alpha = callocCheck(lk, sizeof(float));
	double *dalpha = mallocCheck(lk * sizeof(double)), *mo = callocCheck(lk, sizeof(double));
	double *step = mallocCheck((size_t)N * sizeof(double)), *ph[4];
	for (int p = 0; p < 4; p++)
		ph[p] = mallocCheck((size_t)N * sizeof(double));
	Relax rx;
	relax_init(&rx, RELAX_SOFTMAX, L, K, 9);
	size_t peak = 0, fr, tot;
	double kl = 0;
	int prof = profiling();
	CardWatch card = {0};
	for (int i = 0; i < N + 2; i++) {
		if (i == 2)
			card_watch_start(&card);
		if (prof && i == N + 1)
			cudaProfilerStart();
		double s0 = now_seconds();
		relax_weights(&rx, alpha, NULL, sn->w);
		gpu_supernet_teacher(gs, ids, B, T, NULL);
		memset(sn->dw, 0, lk * sizeof(double));
		kl = gpu_supernet_backward_kl(gs, ids, B, T, sn->w, sn->dw);
		relax_backward(&rx, sn->dw, dalpha);
		for (size_t j = 0; j < lk; j++) /* a stand-in for Adam: as cheap */
			mo[j] = 0.9 * mo[j] + 0.1 * dalpha[j], alpha[j] -= (float)(1e-9 * mo[j]);
		double s1 = now_seconds();
		if (prof && i == N + 1)
			cudaProfilerStop();
		float ms[4];
		gpu_supernet_phases(gs, ms);
		if (cudaMemGetInfo(&fr, &tot) != cudaSuccess)
			die("cudaMemGetInfo failed");
		peak = tot - fr > peak ? tot - fr : peak;
		if (i >= 2) {
			step[i - 2] = 1e3 * (s1 - s0);
			for (int p = 0; p < 4; p++)
				ph[p][i - 2] = ms[p];
		}
	}
	const char *mode = gpu_supernet_shared(gs) ? "one shared gdn arena" : "an arena a gdn layer";
	char pre[64];
	snprintf(pre, sizeof pre, "[%s] ", mode);
	card_watch_stop(&card, pre);
	double ms = median(step, N), tps = n / (ms / 1e3);
	const char *pn[4] = {"teacher forward", "supernet forward", "loss (KL)", "backward"};
	for (int p = 0; p < 4; p++)
		printf("[%s] phase %-16s %7.1f ms\n", mode, pn[p], median(ph[p], N));
	printf("[%s] search step B=%d T=%d: %.1f ms/step (median of %d), %.0f tok/s, KL %.4g; 12.3M tokens: %.1f min\n",
	       mode, B, T, ms, N, tps, kl, SEARCH_TOKENS / tps / 60);
	size_t mb, rb;
	gpu_supernet_bytes(gs, &mb, &rb);
	printf("[%s] memory: GpuModel %.2f GiB, supernet %.2f GiB; device in use at most %.2f of %.2f GiB\n", mode,
	       GIB(mb), GIB(rb), GIB(peak), GIB(tot));
	fflush(stdout);
	relax_free(&rx);
	gpu_supernet_free(gs);
	free(alpha), free(dalpha), free(mo), free(step);
	for (int p = 0; p < 4; p++)
		free(ph[p]);
}

/* dL/dw of one step with the products *flag chooses (sn->grad_fp8,
 * sn->fwd_fp8 or sn->fwd_fast) at *flag off (bf16: 0) and on (e4m3)
 * (DASH_GRAD or DASH_FORWARD=compare...): how far float8 (or the way it is
 * summed) moves the gradient of the mixing weights, column by column */
static void compare(Supernet *sn, int *flag, int off, int on, const char *what, const int32_t *ids, int B, int T)
{
	int L = sn->L, K = sn->K;
	size_t lk = (size_t)L * K;
	double *dw[2], kl[2];
	float *alpha = callocCheck(lk, sizeof(float));
	Relax rx;
	relax_init(&rx, RELAX_SOFTMAX, L, K, 9);
	relax_weights(&rx, alpha, NULL, sn->w);
	for (int f = 0; f < 2; f++) {
		*flag = f ? on : off;
		GpuSupernet *gs = gpu_supernet_new(sn, B * T);
		gpu_supernet_teacher(gs, ids, B, T, NULL);
		dw[f] = callocCheck(lk, sizeof(double));
		kl[f] = gpu_supernet_backward_kl(gs, ids, B, T, sn->w, dw[f]);
		gpu_supernet_free(gs);
	}
	*flag = 0;
	printf("%s compare (one step, w uniform): KL %.6g (%d) %.6g (%d)\n", what, kl[0], off, kl[1], on);
	for (int k = 0; k < K; k++) {
		double e = 0, r = 0, m = 0, d = 0;
		for (int l = 0; l < L; l++) {
			double a = dw[0][(size_t)l * K + k], b = dw[1][(size_t)l * K + k];
			e += (b - a) * (b - a), r += a * a, m = fmax(m, fabs(a)), d = fmax(d, fabs(b - a));
		}
		printf("  column %d (%s): |dw8 - dw| / |dw| = %.2e, max |dw8 - dw| / max |dw| = %.2e\n", k,
		       arch_op_names[sn->ops[k]], sqrt(e / r), d / m);
	}
	printf("  layer:");
	for (int l = 0; l < L; l++)
		printf(" %d:%.3g/%.3g", l, dw[0][(size_t)l * K], dw[1][(size_t)l * K]);
	printf("  (fa's dw, %d/%d)\n", off, on);
	relax_free(&rx);
	free(alpha), free(dw[0]), free(dw[1]);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	if (argc != 1 && argc != 3 && argc != 4) {
		fprintf(stderr, "usage: bench/bin/search [B T [N]]\n");
		return 2;
	}
	long long B = 1, T = 4096, N = 5;
	if (argc >= 3)
		B = estrtocount(argv[1], "B"), T = estrtocount(argv[2], "T");
	if (argc == 4)
		N = estrtocount(argv[3], "N");
	if (B < 1 || T < 1 || B * T > 1 << 20 || N < 1 || N > 1000)
		die("B and T must be at least 1, B*T at most 1048576, N 1 to 1000");
	int n = (int)(B * T);
	double t0 = now_seconds();
	Model m;
	model_load(&m, "random:qwen2.5-3b");
	const ModelConfig *c = &m.cfg;
	int ops[3] = {ARCH_FA, ARCH_SWA, ARCH_GDN};
	Supernet sn;
	supernet_init(&sn, &m, 3, ops, NULL, 1024, n);
	char name[128];
	cuda_device_name(0, name, sizeof name);
	fprintf(stderr, "bench/search: %s, random Qwen2.5-3B shape, ops fa,swa,gdn, window 1024, ready in %.1fs\n", name,
	        now_seconds() - t0);
	int32_t *ids = mallocCheck((size_t)n * sizeof *ids);
	for (int i = 0; i < n; i++)
		ids[i] = (int32_t)((i * 2654435761u) % (unsigned)c->V);
	const char *grad = getenv("DASH_GRAD"), *fwd = getenv("DASH_FORWARD");
	sn.grad_fp8 = grad && !strcmp(grad, "fp8");
	sn.fwd_fp8 = !fwd                       ? 0
	             : !strcmp(fwd, "fp8")      ? 1
	             : !strcmp(fwd, "fp8-both") ? 2
	             : !strcmp(fwd, "fp8-all")  ? 3
	             : !strcmp(fwd, "fp8-fast") ? 3
	                                        : 0;
	sn.fwd_fast = fwd && !strcmp(fwd, "fp8-fast");
	if (sn.grad_fp8)
		printf("the backward's products in float8 e4m3 (DASH_GRAD=fp8)\n");
	if (sn.fwd_fp8)
		printf("the supernet's forward's products in float8 e4m3%s (DASH_FORWARD=%s)\n",
		       sn.fwd_fast       ? ", the teacher's and both logits, fast sums"
		       : sn.fwd_fp8 == 3 ? ", the teacher's and both logits"
		       : sn.fwd_fp8 == 2 ? ", and the teacher's"
		                         : "",
		       fwd);
	int gc = grad && !strcmp(grad, "compare"), fc = fwd && !strncmp(fwd, "compare", 7);
	if (fc && !strcmp(fwd, "compare-fast")) { /* fp8-all's sums against fp8-fast's */
		sn.fwd_fp8 = 3;
		compare(&sn, &sn.fwd_fast, 0, 1, "forward fp8-all, fp8-fast", ids, (int)B, (int)T);
	} else if (gc || fc) {
		int all = fc && !strcmp(fwd, "compare-all"), on = gc || strcmp(fwd, "compare-both") ? 1 : 2;
		compare(&sn, gc ? &sn.grad_fp8 : &sn.fwd_fp8, all ? 2 : 0, all ? 3 : on, gc ? "grad" : "forward", ids,
		        (int)B, (int)T);
	}
	if (gc || fc) {
		supernet_free(&sn), free(ids), model_free(&m);
		return 0;
	}
	unsetenv("DASH_SUPERNET_SHARED");
	run(&sn, ids, (int)B, (int)T, (int)N);
	if (!profiling()) {
		setenv("DASH_SUPERNET_SHARED", "1", 1);
		run(&sn, ids, (int)B, (int)T, (int)N);
	}
	supernet_free(&sn);
	free(ids);
	model_free(&m);
	return 0;
}
