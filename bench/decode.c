/* bench/decode: decoding speed and memory of a teacher and of its hybrids on
 * the GPU (kernels/gpu_decode.h), what eval-ruler's answers cost. For each
 * model: B sequences each prefilled with the same N ids (the first N of a
 * tokens.h5, or random ids without one), then S steps of all B together,
 * each feeding every sequence the token 0 (decoding speed does not depend on
 * the ids). Prints a row a model: the median prefill of one sequence (ms,
 * tokens/s), the median step (ms) and the decoded tokens/s of the batch
 * (B / step), the decode state at context N (MiB a sequence, the formula
 * of lib/decode.h) and the device memory the decoder allocated (GiB:
 * weights, states, the rest).
 * usage: bench/bin/decode -m MODEL [-c CAND] [--arch A.h5 ...] [-d TOKENS.h5]
 *                         [--context N] [--batch B] [--steps S] [--window W] */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"     // defines: decoder_state_bytes
#include "gpu.h"        // defines: cuda_device_name, gpu_sync
#include "gpu_decode.h" // defines: GpuDecoder, gpu_decoder_new, gpu_decoder_prefill, gpu_decoder_step
#include "hybrid.h"     // defines: Hybrid, hybrid_load
#include "model.h"
#include "stats.h"  // defines: median
#include "tokens.h" // defines: tokens_read
#include "util.h"

#define MAX_ARCH 16

#define MIB(b) ((double)(b) / (1 << 20))
#define GIB(b) ((double)(b) / (1 << 30))

static void run(const char *name, const Model *m, const Hybrid *hy, const int32_t *ids, int N, int B, int S)
{
	GpuDecoder *d = gpu_decoder_new(m, hy, B, N + S);
	double *pre = mallocCheck((size_t)B * sizeof(double)), *step = mallocCheck((size_t)S * sizeof(double));
	for (int b = 0; b < B; b++) {
		double t0 = now_seconds();
		gpu_decoder_prefill(d, b, ids, N, NULL);
		gpu_sync();
		pre[b] = now_seconds() - t0;
	}
	int *seq = mallocCheck((size_t)B * sizeof(int));
	int32_t *tok = callocCheck((size_t)B, sizeof(int32_t));
	for (int b = 0; b < B; b++)
		seq[b] = b;
	for (int s = 0; s < S; s++) {
		double t0 = now_seconds();
		gpu_decoder_step(d, seq, tok, B, NULL);
		gpu_sync();
		step[s] = now_seconds() - t0;
	}
	/* the first prefill and step warm up cuBLAS and the caches: left out
	 * when there are others */
	double p = B > 1 ? median(pre + 1, B - 1) : pre[0], st = S > 1 ? median(step + 1, S - 1) : step[0];
	size_t w, sb, rest;
	gpu_decoder_bytes(d, &w, &sb, &rest);
	printf("%s\t%d\t%d\t%.2f\t%.0f\t%.3f\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\n", name, N, B, 1e3 * p, N / p, 1e3 * st,
	       B / st, MIB(decoder_state_bytes(m, hy, N, DT_BF16)), GIB(w), GIB(sb), GIB(rest));
	fflush(stdout);
	free(pre), free(step), free(seq), free(tok);
	gpu_decoder_free(d);
}

static void usage(void)
{
	fprintf(stderr, "usage: bench/bin/decode -m MODEL [-c CAND] [--arch A.h5 ...] [-d TOKENS.h5] [--context N]\n"
	                "                        [--batch B] [--steps S] [--window W] [--no-teacher]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	const char *model_path = NULL, *cand = NULL, *tokens = NULL, *arch[MAX_ARCH];
	int narch = 0, no_teacher = 0;
	long long N = 4096, B = 32, S = 32, W = LOP_SWA_WINDOW;
	static const struct option lo[] = {
		{"model", required_argument, NULL, 'm'}, {"cand", required_argument, NULL, 'c'},
		{"arch", required_argument, NULL, 'A'}, {"data", required_argument, NULL, 'd'},
		{"context", required_argument, NULL, 'n'}, {"batch", required_argument, NULL, 'b'},
		{"steps", required_argument, NULL, 's'}, {"window", required_argument, NULL, 'W'},
		{"no-teacher", no_argument, NULL, 'N'}, {NULL, 0, NULL, 0}};
	int c;
	while ((c = getopt_long(argc, argv, "m:c:d:", lo, NULL)) != -1)
		switch (c) {
		case 'm': model_path = optarg; break;
		case 'c': cand = optarg; break;
		case 'A':
			if (narch == MAX_ARCH)
				die("--arch: at most %d", MAX_ARCH);
			arch[narch++] = optarg;
			break;
		case 'd': tokens = optarg; break;
		case 'n': N = estrtocount(optarg, "--context"); break;
		case 'b': B = estrtocount(optarg, "--batch"); break;
		case 's': S = estrtocount(optarg, "--steps"); break;
		case 'W': W = estrtocount(optarg, "--window"); break;
		case 'N': no_teacher = 1; break;
		default: usage();
		}
	if (!model_path || optind != argc || N < 1 || N > 1 << 22 || B < 1 || B > 4096 || S < 1 || W < 1)
		usage();
	Model m;
	model_load(&m, model_path);
	int32_t *ids;
	if (tokens) {
		int64_t got;
		char fp[17];
		ids = tokens_read(tokens, N, -1, &got, fp);
		if (got < N)
			die("%s: %lld ids, fewer than --context %lld", tokens, (long long)got, N);
	} else {
		ids = mallocCheck((size_t)N * sizeof(int32_t));
		uint64_t s = 0x9e3779b97f4a7c15ull;
		for (long long i = 0; i < N; i++)
			s = s * 6364136223846793005ull + 1442695040888963407ull, ids[i] = (int32_t)((s >> 33) % m.cfg.V);
	}
	char dev[256];
	cuda_device_name(0, dev, sizeof dev);
	printf("# bench/decode on %s: %s, context %lld, batch %lld, %lld steps (medians)\n", dev, model_path, N, B, S);
	printf("model\tcontext\tbatch\tprefill_ms\tprefill_tok_s\tstep_ms\tdecode_tok_s\tstate_MiB_seq\t"
	       "weights_GiB\tstates_GiB\trest_GiB\n");
	if (!no_teacher)
		run("teacher", &m, NULL, ids, (int)N, (int)B, (int)S);
	for (int i = 0; i < narch; i++) {
		Hybrid hy;
		hybrid_load(&hy, arch[i], &m, cand, (int)W);
		const char *base = strrchr(arch[i], '/') ? strrchr(arch[i], '/') + 1 : arch[i];
		run(base, &m, &hy, ids, (int)N, (int)B, (int)S);
		hybrid_free(&hy);
	}
	free(ids);
	model_free(&m);
	return 0;
}
