/* derive: one operator per layer for a budget of N full-attention layers
 * (stage 3, DESIGN.md section 3). The method picks the N layers that keep
 * fa: dash (the search's architecture logits), the baseline rules
 * (uniform, uniform-end, mse, ablate-one, restore-one, random) or a fixed
 * list; every other layer takes its best linear operator (by the logits,
 * or by the candidates' held-out NMSE) or the one --linear forces. Writes
 * arch.h5 and prints the layout on one line. */
#include <dirent.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cand.h"      // defines: CAND_FORMAT
#include "h5io.h"      // defines: h5_open, h5_read, h5_create
#include "hybrid.h"    // defines: ARCH_FORMAT, ARCH_FA, arch_op_names
#include "linear_op.h" // defines: lop_kind, lop_name
#include "model.h"     // defines: model_load
#include "util.h"      // defines: die, estrtocount

#define LOGITS_FORMAT "dash-logits"
#define MEASURE_FORMAT "dash-measure"
#define MAX_OPS 8

static int op_index(const char *name)
{
	for (int i = 0; i < ARCH_NOPS; i++)
		if (!strcmp(name, arch_op_names[i]))
			return i;
	return -1;
}

static void usage(void)
{
	fprintf(stderr, "usage: derive (-n N_FA | -r RATIO) [--method dash|uniform|uniform-end|mse|ablate-one|restore-one|\n"
	                "              random|fixed:LIST] [--linear gdn|gla|swa] [-c CAND_DIR] [-m MODEL] [-L LAYERS]\n"
	                "              [--seed S] [-o ARCH.h5] [LOGITS_OR_MEASURE.h5]\n");
	exit(2);
}

/* what a logits or measure file says, per layer */
typedef struct {
	const char *path;
	int L, K;
	int ops[MAX_OPS]; /* op_index of each column of alpha */
	float *alpha;     /* (L, K), logits files */
	double *fa_score; /* (L) the fa weight search-logits ranks by, or NULL */
	double *kl;       /* (L), measure files */
	char *measure;    /* "ablate-one" or "restore-one" */
	char fingerprint[17];
} Scores;

static void read_scores(Scores *s, const char *path)
{
	memset(s, 0, sizeof *s);
	s->path = path;
	H5File *f = h5_open(path);
	char *fmt = h5_attr_exists(f, "/", "format") ? h5_attr_get_str(f, "/", "format") : strdupCheck("");
	int rank;
	int64_t dims[TENSOR_MAX_DIMS];
	if (!strcmp(fmt, LOGITS_FORMAT)) {
		h5_expect_format(f, LOGITS_FORMAT, 1, "make it with search-logits");
		s->alpha = h5_read(f, "/alpha", DT_F32, &rank, dims);
		char *ops = h5_attr_get_str(f, "/", "ops"), *save = NULL;
		if (rank != 2 || dims[0] < 1 || dims[1] < 1 || dims[1] > MAX_OPS)
			die("%s: /alpha is not (layers, ops)", path);
		s->L = (int)dims[0];
		for (char *t = strtok_r(ops, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			if (s->K == dims[1] || op_index(t) < 0)
				die("%s: the ops attribute '%s' does not name /alpha's %lld columns", path, ops, (long long)dims[1]);
			s->ops[s->K++] = op_index(t);
		}
		if (s->K != dims[1] || s->ops[0] != ARCH_FA)
			die("%s: the ops attribute must name /alpha's %lld columns, fa first", path, (long long)dims[1]);
		free(ops);
		if (h5_exists(f, "/fa_score")) {
			s->fa_score = h5_read(f, "/fa_score", DT_F64, &rank, dims);
			if (rank != 1 || dims[0] != s->L)
				die("%s: /fa_score is not one value a layer of /alpha", path);
		}
	} else if (!strcmp(fmt, MEASURE_FORMAT)) {
		h5_expect_format(f, MEASURE_FORMAT, 1, "make it with search-logits --measure");
		s->kl = h5_read(f, "/kl", DT_F64, &rank, dims);
		if (rank != 1 || dims[0] < 1)
			die("%s: /kl is not one value a layer", path);
		s->L = (int)dims[0];
		s->measure = h5_attr_get_str(f, "/", "measure");
		if (strcmp(s->measure, "ablate-one") && strcmp(s->measure, "restore-one"))
			die("%s: measure '%s' is neither ablate-one nor restore-one", path, s->measure);
	} else {
		die("%s: neither a logits file (%s) nor a measure file (%s) of search-logits", path, LOGITS_FORMAT,
		    MEASURE_FORMAT);
	}
	char *fp = h5_attr_get_str(f, "/", "teacher_fingerprint");
	snprintf(s->fingerprint, sizeof s->fingerprint, "%s", fp);
	free(fp), free(fmt);
	h5_close(f);
}

/* per layer and linear op, the candidates' held-out NMSE after training
 * (INFINITY for an op a layer's file lacks); every layer must have its
 * file. The layer count in *L (checked against a count already known,
 * > 0); the teacher's fingerprint in fingerprint (17 bytes). */
static double *read_cands(const char *dir, int *L, char *fingerprint)
{
	double *nm = NULL;
	int n = 0;
	for (int l = 0; n == 0 || l < n; l++) {
		char path[4200];
		snprintf(path, sizeof path, "%s/L%02d.h5", dir, l);
		if (!file_exists(path))
			die("%s: no candidates of layer %d (distill-linear writes them)", path, l);
		H5File *f = h5_open(path);
		h5_expect_format(f, CAND_FORMAT, 1, "make it with distill-linear");
		if (n == 0) {
			n = (int)h5_attr_get_i64(f, "/", "n_layers");
			if (n < 1 || (*L > 0 && n != *L))
				die("%s: candidates of a %d-layer teacher, not %d", path, n, *L);
			nm = mallocCheck((size_t)n * ARCH_NOPS * sizeof(double));
			char *fp = h5_attr_get_str(f, "/", "teacher_fingerprint");
			snprintf(fingerprint, 17, "%s", fp);
			free(fp);
		}
		for (int k = ARCH_GDN; k <= ARCH_GLA; k++) {
			char grp[8];
			snprintf(grp, sizeof grp, "/%s", arch_op_names[k]);
			nm[(size_t)l * ARCH_NOPS + k] = h5_exists(f, grp) ? h5_attr_get_f64(f, grp, "nmse_heldout_after") : INFINITY;
		}
		h5_close(f);
	}
	*L = n;
	return nm;
}

/* splitmix64's finaliser */
static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* the indices of the n largest of score[0..L) into pick (ties: the lower
 * layer first) */
static void top_n(int *pick, const double *score, int L, int n)
{
	char *used = callocCheck((size_t)L, 1);
	for (int i = 0; i < n; i++) {
		int best = -1;
		for (int l = 0; l < L; l++)
			if (!used[l] && (best < 0 || score[l] > score[best]))
				best = l;
		used[best] = 1, pick[i] = best;
	}
	free(used);
}

/* uniform placement: a stride of ceil(L / n) from layer 0 (uniform) or
 * down from the last (uniform-end) when n of them fit, else floor(i L / n) */
static void uniform(int *pick, int L, int n, int end)
{
	int s = (L + n - 1) / n;
	for (int i = 0; i < n; i++) {
		int l = (n - 1) * s <= L - 1 ? i * s : (int)((long long)i * L / n);
		pick[i] = end ? L - 1 - l : l;
	}
}

int main(int argc, char **argv)
{
	const char *method = "dash", *linear = NULL, *cand_dir = NULL, *model_path = NULL, *out = "arch.h5";
	long long n_fa = -1, L_arg = 0;
	double ratio = -1;
	unsigned long long seed = 1;
	static const struct option opts[] = {
		{"n-fa", required_argument, NULL, 'n'}, {"ratio", required_argument, NULL, 'r'},
		{"method", required_argument, NULL, 'M'}, {"linear", required_argument, NULL, 'k'},
		{"cand", required_argument, NULL, 'c'}, {"model", required_argument, NULL, 'm'},
		{"layers", required_argument, NULL, 'L'}, {"seed", required_argument, NULL, 'S'},
		{"out", required_argument, NULL, 'o'}, {NULL, 0, NULL, 0},
	};
	util_init(argc, argv);
	int ch;
	while ((ch = getopt_long(argc, argv, "n:r:c:m:L:o:", opts, NULL)) != -1) {
		switch (ch) {
		case 'n': n_fa = estrtocount(optarg, "-n"); break;
		case 'r': ratio = estrtod(optarg, "-r"); break;
		case 'M': method = optarg; break;
		case 'k': linear = optarg; break;
		case 'c': cand_dir = optarg; break;
		case 'm': model_path = optarg; break;
		case 'L': L_arg = estrtocount(optarg, "-L"); break;
		case 'S': seed = (unsigned long long)estrtocount(optarg, "--seed"); break;
		case 'o': out = optarg; break;
		default: usage();
		}
	}
	if (optind + 1 < argc || (n_fa < 0) == (ratio < 0))
		usage();
	const char *scores_path = optind < argc ? argv[optind] : NULL;
	int is_fixed = !strncmp(method, "fixed:", 6);
	static const char *methods[] = {"dash", "uniform", "uniform-end", "mse", "ablate-one", "restore-one", "random"};
	int mi = -1;
	for (int i = 0; i < (int)(sizeof methods / sizeof methods[0]); i++)
		if (!strcmp(method, methods[i]))
			mi = i;
	if (mi < 0 && !is_fixed)
		die("--method: unknown '%s' (dash, uniform, uniform-end, mse, ablate-one, restore-one, random, fixed:LIST)",
		    method);
	int lin = -1;
	if (linear && ((lin = op_index(linear)) < 0 || lin == ARCH_FA))
		die("--linear: not a linear operator: '%s' (gdn, gla, swa)", linear);
	if (ratio >= 0 && !(ratio <= 1))
		die("-r: the ratio of fa layers must be in [0, 1], not %g", ratio);

	/* the inputs, each checked; the layer count from whichever is there */
	Scores sc = {0};
	int L = (int)L_arg;
	char teacher_fp[17] = "";
	if (scores_path) {
		read_scores(&sc, scores_path);
		if (L && L != sc.L)
			die("%s: %d layers, not %d", scores_path, sc.L, L);
		L = sc.L;
		snprintf(teacher_fp, sizeof teacher_fp, "%s", sc.fingerprint);
	}
	double *nmse = NULL;
	if (cand_dir) {
		char fp[17];
		nmse = read_cands(cand_dir, &L, fp);
		if (teacher_fp[0] && strcmp(fp, teacher_fp))
			die("%s: candidates of another teacher (fingerprint %s) than %s's (%s)", cand_dir, fp, scores_path,
			    teacher_fp);
		snprintf(teacher_fp, sizeof teacher_fp, "%s", fp);
	}
	if (model_path) {
		Model m;
		model_load(&m, model_path);
		if (L && L != m.cfg.L)
			die("%s: %d layers, not %d", model_path, m.cfg.L, L);
		if (teacher_fp[0] && strcmp(m.fingerprint, teacher_fp))
			die("%s: another teacher (fingerprint %s) than the inputs' (%s)", model_path, m.fingerprint, teacher_fp);
		L = m.cfg.L;
		snprintf(teacher_fp, sizeof teacher_fp, "%s", m.fingerprint);
		model_free(&m);
	}
	if (L < 1)
		die("the layer count: give a logits file, -c CAND_DIR, -m MODEL or -L LAYERS");
	int n = n_fa >= 0 ? (int)n_fa : (int)ceil(ratio * L - 1e-9);
	if (n > L)
		die("-n %d: more fa layers than the teacher's %d", n, L);
	if (mi == 0 && !sc.alpha)
		die("--method dash needs the logits file of search-logits");
	if ((mi == 4 || mi == 5) && (!sc.measure || strcmp(sc.measure, method)))
		die("--method %s needs the %s measure file of search-logits --measure %s", method, method, method);
	if (mi == 3 && !nmse)
		die("--method mse needs the candidates (-c CAND_DIR)");

	/* the fa layers */
	int *pick = mallocCheck((size_t)(L + 1) * sizeof(int));
	double *score = mallocCheck((size_t)L * sizeof(double));
	if (is_fixed) {
		char *dup = strdupCheck(method + 6), *save = NULL;
		int cnt = 0;
		char *seen = callocCheck((size_t)L, 1);
		for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			long long l = estrtocount(t, "--method fixed:");
			if (l >= L || seen[l])
				die("--method %s: layer %lld %s", method, l, l >= L ? "is beyond the teacher's layers" : "twice");
			if (cnt == L)
				break;
			seen[l] = 1, pick[cnt++] = (int)l;
		}
		if (cnt != n)
			die("--method %s: %d layers, but the budget is %d", method, cnt, n);
		free(dup), free(seen);
	} else if (mi == 1 || mi == 2) {
		if (n > 0)
			uniform(pick, L, n, mi == 2);
	} else if (mi == 6) {
		uint64_t s = mix64(seed);
		for (int l = 0; l < L; l++) /* splitmix64 keys, the n largest */
			score[l] = (double)(mix64(s += 0x9e3779b97f4a7c15ULL) >> 11);
		top_n(pick, score, L, n);
	} else {
		for (int l = 0; l < L; l++) {
			if (mi == 0 && sc.fa_score) { /* the relaxation's own fa weight */
				score[l] = sc.fa_score[l];
			} else if (mi == 0) { /* w_fa = softmax(alpha)_fa */
				const float *a = sc.alpha + (size_t)l * sc.K;
				double mx = a[0], z = 0;
				for (int k = 1; k < sc.K; k++)
					mx = a[k] > mx ? a[k] : mx;
				for (int k = 0; k < sc.K; k++)
					z += exp(a[k] - mx);
				score[l] = exp(a[0] - mx) / z;
			} else if (mi == 3) { /* the layers the linear ops imitate worst */
				double best = INFINITY;
				for (int k = ARCH_GDN; k <= ARCH_GLA; k++)
					if (lin < 0 || lin == ARCH_SWA || k == lin) /* swa: no NMSE of its own */
						best = nmse[(size_t)l * ARCH_NOPS + k] < best ? nmse[(size_t)l * ARCH_NOPS + k] : best;
				score[l] = best;
			} else { /* ablate-one: the largest KL alone; restore-one: the smallest */
				score[l] = mi == 4 ? sc.kl[l] : -sc.kl[l];
			}
		}
		top_n(pick, score, L, n);
	}

	/* every layer's op */
	int32_t *ops = mallocCheck((size_t)L * sizeof(int32_t));
	for (int l = 0; l < L; l++) {
		int best = lin >= 0 ? lin : ARCH_GDN;
		if (lin < 0 && sc.alpha) { /* the largest logit among the linear ops */
			const float *a = sc.alpha + (size_t)l * sc.K;
			for (int k = 1, bk = -1; k < sc.K; k++)
				if (bk < 0 || a[k] > a[bk])
					bk = k, best = sc.ops[k];
		} else if (lin < 0 && nmse) { /* the lowest held-out NMSE */
			for (int k = ARCH_GDN; k <= ARCH_GLA; k++)
				if (nmse[(size_t)l * ARCH_NOPS + k] < nmse[(size_t)l * ARCH_NOPS + best])
					best = k;
		}
		ops[l] = best;
	}
	for (int i = 0; i < n; i++)
		ops[pick[i]] = ARCH_FA;

	H5File *f = h5_create(out);
	h5_stamp(f, ARCH_FORMAT, 1);
	int64_t dl = L;
	h5_write(f, "/ops", DT_I32, 1, &dl, ops);
	h5_attr_set_str(f, "/", "op_names", "fa,gdn,gla,swa");
	h5_attr_set_str(f, "/", "method", method);
	h5_attr_set_i64(f, "/", "n_fa", n), h5_attr_set_i64(f, "/", "n_layers", L);
	h5_attr_set_i64(f, "/", "seed", (int64_t)seed);
	h5_attr_set_str(f, "/", "linear", linear ? linear : "best");
	h5_attr_set_str(f, "/", "teacher_fingerprint", teacher_fp);
	h5_attr_set_str(f, "/", "scores", scores_path ? scores_path : "");
	h5_attr_set_str(f, "/", "cand", cand_dir ? cand_dir : "");
	/* the layout, fa first in rank order, then each linear op by layer */
	printf("%s n_fa %d:", method, n);
	for (int k = 0, first = 1; k < ARCH_NOPS; k++) {
		int any = 0;
		for (int l = 0; l < L; l++)
			any |= ops[l] == k;
		if (!any)
			continue;
		printf("%s %s:", first ? "" : " |", arch_op_names[k]);
		first = 0;
		if (k == ARCH_FA)
			for (int i = 0; i < n; i++)
				printf(" %d", pick[i]);
		else
			for (int l = 0; l < L; l++)
				if (ops[l] == k)
					printf(" %d", l);
	}
	printf("\n");
	fshut(stdout, "<stdout>");
	h5_close(f);
	free(pick), free(score), free(ops), free(nmse), free(sc.alpha), free(sc.fa_score), free(sc.kl), free(sc.measure);
	return 0;
}
