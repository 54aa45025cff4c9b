/* search-logits: the differentiable architecture search (stage 2,
 * DESIGN.md section 3). Every layer of the teacher mixes its operators (fa,
 * and swa, gdn, gla from the candidates) with weights relaxed from the
 * architecture logits alpha (L, K); every other weight is frozen. A step
 * runs the teacher (all fa) and the supernet on the same tokens, takes the
 * KL(teacher || supernet) over the vocabulary plus the budget term,
 * differentiates it with respect to alpha through the whole network and
 * moves alpha by Adam. Writes logits.h5 (format "dash-logits": /alpha, the
 * trajectory, every setting) for derive; keeps OUT.ckpt.h5 so that --resume
 * continues a stopped run. --measure ablate-one|restore-one writes instead
 * the per-layer KL rankings of the selector baselines ("dash-measure").
 * --device cuda (the default with a GPU) runs the teacher and the supernet
 * on the GPU (kernels/gpu_supernet.h); alpha, the relaxation and Adam stay
 * here on the host. */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "device.h"   // defines: device_is_cuda
#include "h5io.h"     // defines: h5_create, h5_write, h5_attr_set_str
#include "hybrid.h"   // defines: ARCH_FA, arch_op_names
#include "model.h"    // defines: model_load, model_forward
#include "supernet.h" // defines: Supernet, Relax, supernet_backward_kl
#include "tokens.h"   // defines: tokens_read, tokens_gather
#include "util.h"     // defines: die, estrtocount
#ifdef DASH_CUDA
#include "gpu.h"          // defines: cuda_device_name
#include "gpu_supernet.h" // defines: GpuSupernet, gpu_supernet_backward_kl, gpu_supernet_kl
#else
typedef struct GpuSupernet GpuSupernet; /* never made without CUDA */
#endif

#define LOGITS_FORMAT "dash-logits"
#define MEASURE_FORMAT "dash-measure"
#define CKPT_FORMAT "dash-search-checkpoint"

static void usage(void)
{
	fprintf(stderr,
	        "usage: search-logits -m MODEL -c CAND_DIR -d TOKENS.h5 (-n N_FA | -r RATIO) -o LOGITS.h5\n"
	        "                     [--ops fa,swa,gdn] [--window W] [--tokens N] [--seq T] [--batch B]\n"
	        "                     [--lr LR] [--lambda L] [--tau A:B] [--relax softmax|gumbel-topk|budget-dist]\n"
	        "                     [--seed S] [--ckpt-every K] [--resume] [--stop-after K] [--device cpu|cuda]\n"
	        "                     [--grad auto|bf16|fp8] [--forward auto|bf16|fp8|fp8-both|fp8-all|fp8-fast]\n"
	        "       search-logits -m MODEL -c CAND_DIR -d TOKENS.h5 --measure ablate-one|restore-one\n"
	        "                     [--linear gdn|gla|swa] [--window W] [--tokens N] [--seq T] [--batch B]\n"
	        "                     [--device cpu|cuda]\n"
	        "                     [--forward auto|bf16|fp8|fp8-both|fp8-all|fp8-fast]\n"
	        "                     -o MEASURE.h5\n");
	exit(2);
}

typedef struct {
	double lr, lambda, tau0, tau1;
	long long steps;
	int relax, nfa, fp8; /* fp8: the backward's products in e4m3 (--grad) */
	int fwd8;            /* --forward: 0 bf16, 1 fp8 (the supernet's products in e4m3), 2 fp8-both (the
	                      * teacher's too), 3 fp8-all (and both sides' logits): Supernet.fwd_fp8; 4
	                      * fp8-fast (fp8-all, the GPU's sums fast: fwd_fp8 3 and Supernet.fwd_fast) */
	uint64_t seed;
} Search;

/* the temperature at step t: geometric from tau0 to tau1 */
static double tau_at(const Search *s, long long t)
{
	return s->steps > 1 ? s->tau0 * pow(s->tau1 / s->tau0, (double)t / (double)(s->steps - 1)) : s->tau1;
}

/* the n layers of largest fa weight, as "3 11 19" */
static void top_layers(char *buf, size_t len, const float *w, int L, int K, int n)
{
	char *used = callocCheck((size_t)L, 1);
	size_t o = 0;
	buf[0] = 0;
	for (int i = 0; i < n && i < L; i++) {
		int best = -1;
		for (int l = 0; l < L; l++)
			if (!used[l] && (best < 0 || w[(size_t)l * K] > w[(size_t)best * K]))
				best = l;
		used[best] = 1;
		o += (size_t)snprintf(buf + o, o < len ? len - o : 0, "%s%d", i ? " " : "", best);
		if (o >= len)
			break;
	}
	free(used);
}

/* the search's state, what a checkpoint holds */
typedef struct {
	int L, K;
	float *alpha;      /* (L, K) */
	double *m, *v;     /* Adam's moments (L, K) */
	float *traj_alpha; /* (steps, L, K) */
	double *traj[4];   /* (steps) kl, budget, n_fa (sum of the fa weights used), tau */
} State;

static const char *const traj_names[4] = {"kl", "budget", "n_fa", "tau"};

static void state_init(State *st, int L, int K, long long steps)
{
	st->L = L, st->K = K;
	size_t lk = (size_t)L * K;
	st->alpha = callocCheck(lk, sizeof(float));
	st->m = callocCheck(lk, sizeof(double)), st->v = callocCheck(lk, sizeof(double));
	st->traj_alpha = callocCheck((size_t)steps * lk, sizeof(float));
	for (int i = 0; i < 4; i++)
		st->traj[i] = callocCheck((size_t)steps, sizeof(double));
}

static void state_free(State *st)
{
	free(st->alpha), free(st->m), free(st->v), free(st->traj_alpha);
	for (int i = 0; i < 4; i++)
		free(st->traj[i]);
}

/* the state's datasets, steps of the trajectory */
static void state_write(H5File *f, const State *st, long long steps)
{
	int64_t lk[2] = {st->L, st->K}, tr[3] = {steps, st->L, st->K}, s1 = steps;
	h5_write(f, "/alpha", DT_F32, 2, lk, st->alpha);
	h5_write(f, "/trajectory/alpha", DT_F32, 3, tr, st->traj_alpha);
	for (int i = 0; i < 4; i++) {
		char name[64];
		snprintf(name, sizeof name, "/trajectory/%s", traj_names[i]);
		h5_write(f, name, DT_F64, 1, &s1, st->traj[i]);
	}
}

/* --grad's and --forward's names, by Search.fp8 and Search.fwd8; settings()
 * adds " grad=NAME" and " forward=NAME" but for bf16 (unnamed: the
 * checkpoints from before these options), which the autos read back */
static const char *const grad_names[2] = {"bf16", "fp8"};
static const char *const forward_names[5] = {"bf16", "fp8", "fp8-both", "fp8-all", "fp8-fast"};

/* the settings a checkpoint must share with the run that resumes it */
static void settings(char *buf, size_t n, const char *ops, int window, int T, int B, const Search *s,
                     uint64_t cand_fp)
{
	snprintf(buf, n,
	         "ops=%s window=%d seq=%d batch=%d steps=%lld n_fa=%d relax=%s lr=%g lambda=%g tau=%g:%g "
	         "seed=%llu candidates=%016llx%s%s%s%s",
	         ops, window, T, B, s->steps, s->nfa, relax_names[s->relax], s->lr, s->lambda, s->tau0, s->tau1,
	         (unsigned long long)s->seed, (unsigned long long)cand_fp, s->fp8 ? " grad=" : "",
	         s->fp8 ? grad_names[s->fp8] : "", s->fwd8 ? " forward=" : "", s->fwd8 ? forward_names[s->fwd8] : "");
}

static void ckpt_write(const char *path, const State *st, long long step, const char *set, const Model *m,
                       const char *tok_fp)
{
	H5File *f = h5_ckpt_create(path, CKPT_FORMAT, step, set, m->path, m->fingerprint, tok_fp);
	state_write(f, st, step);
	int64_t lk = (int64_t)st->L * st->K;
	h5_write(f, "/adam/m", DT_F64, 1, &lk, st->m);
	h5_write(f, "/adam/v", DT_F64, 1, &lk, st->v);
	h5_close(f);
}

/* ckpt_read checks that the checkpoint at path belongs to this run, loads
 * it and returns the step to go on from */
static long long ckpt_read(const char *path, State *st, const char *set, const Model *m, const char *tok_fp)
{
	int64_t step;
	H5File *f = h5_ckpt_open(path, CKPT_FORMAT, set, m->fingerprint, tok_fp, &step);
	size_t lk = (size_t)st->L * st->K;
	struct { const char *name; DType t; void *dst; size_t count, size; } x[] = {
		{"/alpha", DT_F32, st->alpha, lk, sizeof(float)},
		{"/adam/m", DT_F64, st->m, lk, sizeof(double)},
		{"/adam/v", DT_F64, st->v, lk, sizeof(double)},
		{"/trajectory/alpha", DT_F32, st->traj_alpha, (size_t)step * lk, sizeof(float)},
		{"/trajectory/kl", DT_F64, st->traj[0], (size_t)step, sizeof(double)},
		{"/trajectory/budget", DT_F64, st->traj[1], (size_t)step, sizeof(double)},
		{"/trajectory/n_fa", DT_F64, st->traj[2], (size_t)step, sizeof(double)},
		{"/trajectory/tau", DT_F64, st->traj[3], (size_t)step, sizeof(double)},
	};
	for (size_t i = 0; i < sizeof x / sizeof x[0]; i++) {
		int rank;
		int64_t dims[TENSOR_MAX_DIMS], count = 1;
		void *buf = h5_read(f, x[i].name, x[i].t, &rank, dims);
		for (int d = 0; d < rank; d++)
			count *= dims[d];
		if ((size_t)count != x[i].count)
			die("%s: %s has %lld values, want %zu", path, x[i].name, (long long)count, x[i].count);
		memcpy(x[i].dst, buf, x[i].count * x[i].size);
		free(buf);
	}
	h5_close(f);
	return step;
}

/* an output file, stamped, with its inputs' paths and fingerprints */
static H5File *out_create(const char *path, const char *format, const Model *m, const char *tokens,
                          const char *tok_fp, const char *cand, const char *cand_fp)
{
	H5File *f = h5_create(path);
	h5_stamp(f, format, 1);
	h5_set_input(f, "teacher", m->path, m->fingerprint);
	h5_set_input(f, "tokens", tokens, tok_fp);
	h5_set_input(f, "cand", cand, cand_fp);
	return f;
}

/* the teacher's final hidden rows of a batch (through e4m3 products under
 * --forward fp8-both and fp8-all): float32 into hidden on the CPU; on the GPU (gs)
 * kept there, and bf16 into hb unless NULL */
static void teacher_hidden(const Supernet *sn, GpuSupernet *gs, const int32_t *batch, int B, int T, float *hidden,
                           uint16_t *hb)
{
#ifdef DASH_CUDA
	if (gs) {
		gpu_supernet_teacher(gs, batch, B, T, hb);
		return;
	}
#else
	(void)gs, (void)hb;
#endif
	(sn->fwd_fp8 >= 2 ? model_forward_fp8 : model_forward)(sn->m, batch, B, T, hidden, NULL, NULL);
}

/* whether the GPU's float8 products take this supernet
 * (gpu_supernet_fp8_fits: a Hopper or newer), what the autos ask */
static int fp8_fits(int cuda, const Supernet *sn)
{
#ifdef DASH_CUDA
	return cuda && gpu_supernet_fp8_fits(sn);
#else
	(void)cuda, (void)sn;
	return 0;
#endif
}

/* --grad auto and --forward auto: a checkpoint that --resume goes on from
 * (old: its settings; NULL without one) keeps the products it was made
 * with, the index in names of what old says after key (" grad=" or
 * " forward="; 0, bf16, without the key); else index fp8 where the GPU
 * takes e4m3 (fits), bf16 elsewhere */
static int fp8_auto(const char *old, int fits, const char *key, const char *const *names, int n, int fp8)
{
	if (!old)
		return fits ? fp8 : 0;
	const char *at = strstr(old, key);
	int got = 0;
	for (int i = 1; at && i < n; i++) {
		size_t len = strlen(names[i]), k = strlen(key);
		if (!strncmp(at + k, names[i], len) && (at[k + len] == ' ' || at[k + len] == 0))
			got = i;
	}
	return got;
}

/* a step's mean KL of the supernet to the teacher on a batch, its
 * gradient with respect to sn->w added to sn->dw; on the GPU when gs */
static double step_kl(Supernet *sn, GpuSupernet *gs, const int32_t *batch, int B, int T, float *th)
{
	teacher_hidden(sn, gs, batch, B, T, th, NULL);
#ifdef DASH_CUDA
	if (gs)
		return gpu_supernet_backward_kl(gs, batch, B, T, sn->w, sn->dw);
#endif
	return supernet_backward_kl(sn, batch, B, T, th);
}

/* the KL alone, forward only, against the teacher rows th (CPU) or hb
 * (the GPU's, bf16) */
static double batch_kl(Supernet *sn, GpuSupernet *gs, const int32_t *batch, int B, int T, const float *th,
                       const uint16_t *hb)
{
#ifdef DASH_CUDA
	if (gs) {
		gpu_supernet_set_teacher(gs, hb, B * T);
		return gpu_supernet_kl(gs, batch, B, T, sn->w);
	}
#else
	(void)gs, (void)hb;
#endif
	return supernet_kl(sn, batch, B, T, th, NULL);
}

/* --measure: per layer, the mean KL to the teacher over nb batches when
 * only that layer is linear (ablate-one) or only it is fa (restore-one);
 * the teacher's rows of every batch are kept on the host (bf16 from the
 * GPU) */
static void measure(Supernet *sn, GpuSupernet *gs, int lin_col, int restore, const int32_t *ids, int64_t nseq,
                    long long nb, int B, int T, double *kl)
{
	int L = sn->L, K = sn->K, n = B * T;
	const ModelConfig *c = &sn->m->cfg;
	size_t nC = (size_t)n * c->C;
	int32_t *batch = mallocCheck((size_t)n * sizeof(int32_t));
	float *th = gs ? NULL : mallocCheck((size_t)nb * nC * sizeof(float));
	uint16_t *hb = gs ? mallocCheck((size_t)nb * nC * sizeof(uint16_t)) : NULL;
	for (long long b = 0; b < nb; b++) {
		tokens_gather(batch, ids, nseq, b * B, B, T);
		teacher_hidden(sn, gs, batch, B, T, th ? th + (size_t)b * nC : NULL, hb ? hb + (size_t)b * nC : NULL);
	}
	Progress pr;
	progress_init(&pr, "layers", L);
	for (int l = 0; l < L; l++) {
		for (int j = 0; j < L; j++) {
			int is_lin = restore ? j != l : j == l;
			for (int k = 0; k < K; k++)
				sn->w[(size_t)j * K + k] = k == (is_lin ? lin_col : 0);
		}
		kl[l] = 0;
		for (long long b = 0; b < nb; b++) {
			tokens_gather(batch, ids, nseq, b * B, B, T);
			kl[l] += batch_kl(sn, gs, batch, B, T, th ? th + (size_t)b * nC : NULL, hb ? hb + (size_t)b * nC : NULL) /
			         (double)nb;
		}
		progress_update(&pr, l + 1);
	}
	progress_done(&pr, L);
	free(batch), free(th), free(hb);
}

int main(int argc, char **argv)
{
	const char *model_path = NULL, *cand_dir = NULL, *tokens_path = NULL, *out = NULL, *ops_arg = "fa,swa,gdn";
	const char *device = NULL, *measure_arg = NULL, *linear_arg = NULL, *relax_arg = "softmax", *grad_arg = "auto";
	const char *forward_arg = "auto";
	long long ntok = 12300000, seq = 4096, batch = 1, nfa = -1, ckpt_every = 50, stop_after = -1, window = 1024;
	double ratio = -1;
	int resume = 0;
	Search s = {.lr = 0.02, .lambda = 1, .tau0 = 1, .tau1 = 0.2, .seed = 1};
	static const struct option opts[] = {
		{"model", required_argument, NULL, 'm'}, {"cand", required_argument, NULL, 'c'},
		{"tokens-file", required_argument, NULL, 'd'}, {"fa", required_argument, NULL, 'n'},
		{"ratio", required_argument, NULL, 'r'}, {"out", required_argument, NULL, 'o'},
		{"ops", required_argument, NULL, 'O'}, {"window", required_argument, NULL, 'W'},
		{"tokens", required_argument, NULL, 'N'}, {"seq", required_argument, NULL, 's'},
		{"batch", required_argument, NULL, 'b'}, {"lr", required_argument, NULL, 'l'},
		{"lambda", required_argument, NULL, 'L'}, {"tau", required_argument, NULL, 't'},
		{"relax", required_argument, NULL, 'X'}, {"seed", required_argument, NULL, 'S'},
		{"ckpt-every", required_argument, NULL, 'k'}, {"resume", no_argument, NULL, 'R'},
		{"stop-after", required_argument, NULL, 'x'}, {"device", required_argument, NULL, 'D'},
		{"measure", required_argument, NULL, 'M'}, {"linear", required_argument, NULL, 'i'},
		{"grad", required_argument, NULL, 'g'}, {"forward", required_argument, NULL, 'F'},
		{NULL, 0, NULL, 0},
	};
	util_init(argc, argv);
	int ch;
	while ((ch = getopt_long(argc, argv, "m:c:d:n:r:o:", opts, NULL)) != -1) {
		switch (ch) {
		case 'm': model_path = optarg; break;
		case 'c': cand_dir = optarg; break;
		case 'd': tokens_path = optarg; break;
		case 'n': nfa = estrtocount(optarg, "-n"); break;
		case 'r': ratio = estrtod(optarg, "-r"); break;
		case 'o': out = optarg; break;
		case 'O': ops_arg = optarg; break;
		case 'W': window = estrtocount(optarg, "--window"); break;
		case 'N': ntok = estrtocount(optarg, "--tokens"); break;
		case 's': seq = estrtocount(optarg, "--seq"); break;
		case 'b': batch = estrtocount(optarg, "--batch"); break;
		case 'l': s.lr = estrtod(optarg, "--lr"); break;
		case 'L': s.lambda = estrtod(optarg, "--lambda"); break;
		case 't': {
			char *colon = strchr(optarg, ':');
			if (!colon) {
				s.tau0 = s.tau1 = estrtod(optarg, "--tau");
			} else {
				*colon = 0;
				s.tau0 = estrtod(optarg, "--tau"), s.tau1 = estrtod(colon + 1, "--tau");
			}
			break;
		}
		case 'X': relax_arg = optarg; break;
		case 'S': s.seed = (uint64_t)estrtocount(optarg, "--seed"); break;
		case 'k': ckpt_every = estrtocount(optarg, "--ckpt-every"); break;
		case 'R': resume = 1; break;
		case 'x': stop_after = estrtocount(optarg, "--stop-after"); break;
		case 'D': device = optarg; break;
		case 'M': measure_arg = optarg; break;
		case 'i': linear_arg = optarg; break;
		case 'g': grad_arg = optarg; break;
		case 'F': forward_arg = optarg; break;
		default: usage();
		}
	}
	if (optind != argc || !model_path || !cand_dir || !tokens_path || !out)
		usage();
	int restore = 0;
	if (measure_arg) {
		if (strcmp(measure_arg, "ablate-one") && strcmp(measure_arg, "restore-one"))
			die("--measure: '%s' is neither ablate-one nor restore-one", measure_arg);
		restore = measure_arg[0] == 'r';
	} else if ((nfa < 0) == (ratio < 0)) {
		die("give the budget as -n N_FA or -r RATIO (one of them)");
	}
	int cuda = device_is_cuda(device);
	s.relax = relax_kind(relax_arg);
	if (s.relax < 0)
		die("--relax: '%s' is not softmax, gumbel-topk or budget-dist", relax_arg);
	if (strcmp(grad_arg, "auto") && strcmp(grad_arg, "bf16") && strcmp(grad_arg, "fp8"))
		die("--grad: '%s' is not auto, bf16 or fp8", grad_arg);
	s.fwd8 = -1;
	for (int i = 0; i < 5; i++)
		if (!strcmp(forward_arg, forward_names[i]))
			s.fwd8 = i;
	if (s.fwd8 < 0 && strcmp(forward_arg, "auto"))
		die("--forward: '%s' is not auto, bf16, fp8, fp8-both, fp8-all or fp8-fast", forward_arg);
	if (seq < 1 || seq > 1 << 16 || batch < 1 || batch > 1024 || ntok < 1 || window < 1)
		die("--seq must be 1 to 65536, --batch 1 to 1024, --tokens and --window at least 1");
	if (!(s.lr > 0) || !(s.lambda >= 0) || !(s.tau0 > 0) || !(s.tau1 > 0) || ckpt_every < 1)
		die("--lr and --tau must be > 0, --lambda >= 0, --ckpt-every >= 1");

	/* the operators: fa first, each once */
	int ops[SN_MAX_OPS], K = 0, lin_col = -1;
	{
		char *dup = strdupCheck(measure_arg ? "fa" : ops_arg), *save = NULL;
		for (char *tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			int k = -1;
			for (int j = 0; j < ARCH_NOPS; j++)
				if (!strcmp(tok, arch_op_names[j]))
					k = j;
			if (k < 0)
				die("--ops: unknown operator '%s' (fa, swa, gdn, gla)", tok);
			for (int j = 0; j < K; j++)
				if (ops[j] == k)
					die("--ops: '%s' names %s twice", ops_arg, tok);
			ops[K++] = k;
		}
		free(dup);
		if (ops[0] != ARCH_FA || K < 2 - !!measure_arg)
			die("--ops: '%s' must start with fa and name at least one other operator", ops_arg);
		if (measure_arg) { /* the linear op of the measure */
			const char *lin = linear_arg ? linear_arg : "gdn";
			for (int j = 1; j < ARCH_NOPS; j++)
				if (!strcmp(lin, arch_op_names[j]))
					ops[K] = j, lin_col = K++;
			if (lin_col < 0)
				die("--linear: '%s' is not gdn, gla or swa", lin);
		}
	}

	/* inputs, all checked before any work */
	Model m;
	model_load(&m, model_path);
	const ModelConfig *c = &m.cfg;
	int L = c->L, T = (int)seq, B = (int)batch;
	if (!measure_arg) {
		if (ratio >= 0) {
			if (ratio > 1)
				die("-r %g: a ratio of layers, 0 to 1", ratio);
			nfa = (long long)ceil(ratio * L - 1e-9);
		}
		if (nfa > L)
			die("-n %lld: more fa layers than the teacher's %d", nfa, L);
		s.nfa = (int)nfa;
	}
	int64_t n;
	char tok_fp[17];
	int32_t *ids = tokens_read(tokens_path, -1, c->V, &n, tok_fp);
	if (n < T)
		die("%s: %lld tokens, fewer than one sequence of %d", tokens_path, (long long)n, T);
	int64_t nseq = n / T;
	s.steps = (ntok + (long long)B * T - 1) / ((long long)B * T);
	if (cuda && !device && c->D != 64 && c->D != 128)
		cuda = 0; /* the GPU's attention has head dims 64 and 128 */
	if (!cuda)
		model_unpack(&m); /* float32 weights: the CPU forward's fast path */
	Supernet sn;
	supernet_init(&sn, &m, K, ops, cand_dir, (int)window, B * T);
	char ckpt[4200];
	snprintf(ckpt, sizeof ckpt, "%s.ckpt.h5", out);
	char *old = NULL; /* the settings of the checkpoint --resume goes on from, for the autos */
	if (resume && access(ckpt, F_OK) == 0) {
		H5File *f = h5_open(ckpt);
		old = h5_attr_get_str(f, "/", "settings");
		h5_close(f);
	}
	int fits = fp8_fits(cuda, &sn);
	if (!strcmp(grad_arg, "auto"))
		s.fp8 = !measure_arg && fp8_auto(old, fits, " grad=", grad_names, 2, 1);
	else
		s.fp8 = grad_arg[0] == 'f';
	if (s.fwd8 < 0) /* auto: fp8-fast where the GPU takes it (the search; the measures bf16) */
		s.fwd8 = measure_arg ? 0 : fp8_auto(old, fits, " forward=", forward_names, 5, 4);
	free(old);
	sn.grad_fp8 = s.fp8, sn.fwd_fp8 = s.fwd8 == 4 ? 3 : s.fwd8, sn.fwd_fast = s.fwd8 == 4;
	char cand_fp[17];
	fingerprint_hex(sn.fingerprint, cand_fp);
	GpuSupernet *gs = NULL;
#ifdef DASH_CUDA
	if (cuda) {
		char name[128];
		cuda_device_name(0, name, sizeof name);
		fprintf(stderr, "search-logits: device %s\n", name);
		gs = gpu_supernet_new(&sn, B * T);
	}
#endif
	if (measure_arg) {
		fprintf(stderr, "search-logits: model %s: ", model_path);
		model_describe(&m, stderr);
		long long nb = s.steps;
		fprintf(stderr, "search-logits: %s with %s, %lld batch%s of %d x %d tokens a layer\n", measure_arg,
		        arch_op_names[ops[lin_col]], nb, nb == 1 ? "" : "es", B, T);
		double *kl = mallocCheck((size_t)L * sizeof(double));
		measure(&sn, gs, lin_col, restore, ids, nseq, nb, B, T, kl);
		H5File *f = out_create(out, MEASURE_FORMAT, &m, tokens_path, tok_fp, cand_dir, cand_fp);
		h5_attr_set_str(f, "/", "measure", measure_arg);
		h5_attr_set_str(f, "/", "linear", arch_op_names[ops[lin_col]]);
		h5_attr_set_str(f, "/", "forward", forward_names[s.fwd8]);
		h5_attr_set_i64(f, "/", "window", window), h5_attr_set_i64(f, "/", "tokens", nb * B * T);
		h5_attr_set_i64(f, "/", "seq", T), h5_attr_set_i64(f, "/", "batch", B);
		int64_t dl = L;
		h5_write(f, "/kl", DT_F64, 1, &dl, kl);
		h5_close(f);
		printf("layer\tkl_%s\n", measure_arg);
		for (int l = 0; l < L; l++)
			printf("%d\t%.6g\n", l, kl[l]);
		fshut(stdout, "<stdout>");
		free(kl);
#ifdef DASH_CUDA
		gpu_supernet_free(gs);
#endif
		supernet_free(&sn), free(ids), model_free(&m);
		return 0;
	}

	char set[1024];
	settings(set, sizeof set, ops_arg, (int)window, T, B, &s, sn.fingerprint);
	State st;
	state_init(&st, L, K, s.steps);
	long long step0 = 0;
	if (resume && access(ckpt, F_OK) == 0) {
		step0 = ckpt_read(ckpt, &st, set, &m, tok_fp);
		fprintf(stderr, "search-logits: resuming %s at step %lld\n", ckpt, step0);
	}
	fprintf(stderr, "search-logits: model %s: ", model_path);
	model_describe(&m, stderr);
	fprintf(stderr,
	        "search-logits: %d layers x ops %s, budget %d fa, relax %s, %lld steps of %d x %d tokens, "
	        "lr %g, lambda %g, tau %g -> %g, grad %s%s, forward %s%s\n",
	        L, ops_arg, s.nfa, relax_names[s.relax], s.steps, B, T, s.lr, s.lambda, s.tau0, s.tau1,
	        grad_names[s.fp8], strcmp(grad_arg, "auto") ? "" : " (auto)", forward_names[s.fwd8],
	        strcmp(forward_arg, "auto") ? "" : " (auto)");

	Relax rx;
	relax_init(&rx, s.relax, L, K, s.nfa);
	size_t lk = (size_t)L * K;
	int32_t *bids = mallocCheck((size_t)B * T * sizeof(int32_t));
	float *th = mallocCheck((size_t)B * T * c->C * sizeof(float)), *noise = mallocCheck((size_t)L * sizeof(float));
	double *dalpha = mallocCheck(lk * sizeof(double));
	const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
	double t0 = now_seconds(), last = -1;
	long long t = step0, ran = 0;
	for (; t < s.steps; t++) {
		if (stop_after >= 0 && ran == stop_after)
			break;
		rx.tau = tau_at(&s, t);
		if (s.relax == RELAX_GUMBEL_TOPK)
			gumbel_noise(s.seed, t, L, noise);
		relax_weights(&rx, st.alpha, s.relax == RELAX_GUMBEL_TOPK ? noise : NULL, sn.w);
		tokens_gather(bids, ids, nseq, t * B, B, T);
		memset(sn.dw, 0, lk * sizeof(double));
		double kl = step_kl(&sn, gs, bids, B, T, th);
		/* the budget: lambda (sum_l w_l,fa - N)^2 / L (softmax; the other
		 * relaxations keep sum = N themselves) */
		double nf = 0, budget = 0;
		for (int l = 0; l < L; l++)
			nf += sn.w[(size_t)l * K];
		if (s.relax == RELAX_SOFTMAX) {
			budget = s.lambda * (nf - s.nfa) * (nf - s.nfa) / L;
			for (int l = 0; l < L; l++)
				sn.dw[(size_t)l * K] += 2 * s.lambda * (nf - s.nfa) / L;
		}
		relax_backward(&rx, sn.dw, dalpha);
		/* Adam on alpha */
		double c1 = 1 - pow(b1, (double)(t + 1)), c2 = 1 - pow(b2, (double)(t + 1));
		for (size_t i = 0; i < lk; i++) {
			st.m[i] = b1 * st.m[i] + (1 - b1) * dalpha[i];
			st.v[i] = b2 * st.v[i] + (1 - b2) * dalpha[i] * dalpha[i];
			st.alpha[i] -= (float)(s.lr * (st.m[i] / c1) / (sqrt(st.v[i] / c2) + eps));
		}
		memcpy(st.traj_alpha + (size_t)t * lk, st.alpha, lk * sizeof(float));
		st.traj[0][t] = kl, st.traj[1][t] = budget, st.traj[2][t] = nf, st.traj[3][t] = rx.tau;
		ran++;
		double now = now_seconds();
		if (now - last >= 2 || t + 1 == s.steps) {
			char top[256];
			top_layers(top, sizeof top, sn.w, L, K, s.nfa);
			double rate = (double)ran * B * T / (now - t0);
			fprintf(stderr, "search-logits: step %lld/%lld kl %.4g budget %.3g n_fa %.2f fa: %s | %.0f tok/s eta %.0fs\n",
			        t + 1, s.steps, kl, budget, nf, top, rate, (double)(s.steps - t - 1) * B * T / rate);
			last = now;
		}
		if ((t + 1) % ckpt_every == 0 && t + 1 < s.steps)
			ckpt_write(ckpt, &st, t + 1, set, &m, tok_fp);
	}
	if (t < s.steps) {
		ckpt_write(ckpt, &st, t, set, &m, tok_fp);
		fprintf(stderr, "search-logits: stopped after step %lld of %lld; --resume goes on from %s\n", t, s.steps,
		        ckpt);
		return 0;
	}
	double secs = now_seconds() - t0;
	fprintf(stderr, "search-logits: %lld steps in %.1f s: %.0f tok/s\n", ran, secs,
	        secs > 0 ? (double)ran * B * T / secs : 0);

	/* the fa score derive ranks by: the fa weight without noise at the
	 * final temperature */
	rx.tau = s.tau1;
	relax_weights(&rx, st.alpha, NULL, sn.w);
	double *score = mallocCheck((size_t)L * sizeof(double));
	for (int l = 0; l < L; l++)
		score[l] = s.relax == RELAX_SOFTMAX ? sn.w[(size_t)l * K] : st.alpha[(size_t)l * K];
	H5File *f = out_create(out, LOGITS_FORMAT, &m, tokens_path, tok_fp, cand_dir, cand_fp);
	h5_attr_set_str(f, "/", "ops", ops_arg);
	h5_attr_set_str(f, "/", "relax", relax_names[s.relax]);
	h5_attr_set_str(f, "/", "grad", grad_names[s.fp8]);
	h5_attr_set_str(f, "/", "forward", forward_names[s.fwd8]);
	h5_attr_set_i64(f, "/", "n_fa", s.nfa), h5_attr_set_i64(f, "/", "n_layers", L);
	h5_attr_set_i64(f, "/", "window", window), h5_attr_set_i64(f, "/", "seq", T);
	h5_attr_set_i64(f, "/", "batch", B), h5_attr_set_i64(f, "/", "steps", s.steps);
	h5_attr_set_i64(f, "/", "tokens", s.steps * B * T), h5_attr_set_i64(f, "/", "seed", (int64_t)s.seed);
	h5_attr_set_f64(f, "/", "lr", s.lr), h5_attr_set_f64(f, "/", "lambda", s.lambda);
	h5_attr_set_f64(f, "/", "tau0", s.tau0), h5_attr_set_f64(f, "/", "tau1", s.tau1);
	state_write(f, &st, s.steps);
	int64_t lkd[2] = {L, K}, dl = L;
	h5_write(f, "/w", DT_F32, 2, lkd, sn.w);
	h5_write(f, "/fa_score", DT_F64, 1, &dl, score);
	h5_close(f);
	unlink(ckpt);
	/* the result on stdout: each layer's weights */
	printf("layer");
	for (int k = 0; k < K; k++)
		printf("\tw_%s", arch_op_names[ops[k]]);
	printf("\n");
	for (int l = 0; l < L; l++) {
		printf("%d", l);
		for (int k = 0; k < K; k++)
			printf("\t%.4f", sn.w[(size_t)l * K + k]);
		printf("\n");
	}
	fshut(stdout, "<stdout>");
	free(score), free(bids), free(th), free(noise), free(dalpha);
#ifdef DASH_CUDA
	gpu_supernet_free(gs);
#endif
	relax_free(&rx), state_free(&st), supernet_free(&sn), free(ids), model_free(&m);
	return 0;
}
