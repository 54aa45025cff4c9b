/* distill-linear: teacher-aligned linear-attention candidates for every
 * layer (stage 1, DESIGN.md section 3). One teacher forward per batch feeds
 * every requested layer: each layer's candidates (gdn, gla) learn to map
 * the layer's attention input u_l to its output a_l, minimising the
 * normalised error |op(u) - a|^2 / |a|^2 with AdamW (warm-up, cosine decay,
 * gradient clipping). Writes DIR/Lxx.h5 per layer (lib/cand.h); keeps
 * DIR/distill-LLAYERS.ckpt.h5 so that --resume continues a stopped run. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cand.h"       // defines: cand_write_op, CAND_FORMAT
#include "device.h"     // defines: device_is_cuda
#include "h5io.h"       // defines: h5_create, h5_open, h5_write, h5_read
#include "linear_op.h"  // defines: LinearOp, lop_init_teacher, lop_forward, lop_backward
#include "model.h"      // defines: model_load, layer_forward, LayerScratch
#include "ops_cpu.h"    // defines: embedding_forward_cpu
#include "tokens.h"     // defines: tokens_read, tokens_gather
#include "train.h"      // defines: nmse_cpu, adamw_cpu
#include "util.h"       // defines: die, estrtocount, Progress
#ifdef DASH_CUDA
#include "gpu.h"        // defines: cuda_device_name, nmse_cuda, adamw_cuda, bf16_to_f32_cuda
#include "gpu_lop.h"    // defines: GpuLop, gpu_lop_forward, gpu_lop_backward
#include "gpu_model.h"  // defines: GpuModel, gpu_model_forward_layers
#endif

#define CKPT_FORMAT "dash-distill-checkpoint"

static void usage(void)
{
	fprintf(stderr, "usage: distill-linear -m MODEL -d TOKENS.h5 -o DIR [-l LAYERS] [--ops gdn,gla]\n"
	                "                      [--tokens N] [--seq T] [--batch B] [--heldout N] [--lr LR]\n"
	                "                      [--warmup F] [--wd WD] [--clip C] [--seed S] [--ckpt-every K]\n"
	                "                      [--resume] [--stop-after K] [--device cpu|cuda]\n");
	exit(2);
}

/* "0-35", "3,7,11" or "0-3,8" into a mask over L layers */
static void parse_layers(const char *s, int L, char *want)
{
	memset(want, 0, (size_t)L);
	char *dup = strdupCheck(s), *save = NULL;
	for (char *tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *dash = strchr(tok, '-');
		long a, b;
		if (dash) {
			*dash = 0;
			a = estrtocount(tok, "-l"), b = estrtocount(dash + 1, "-l");
		} else {
			a = b = estrtocount(tok, "-l");
		}
		if (a > b || b >= L)
			die("-l: '%s' is not within the teacher's layers 0-%d", s, L - 1);
		for (long i = a; i <= b; i++)
			want[i] = 1;
	}
	free(dup);
}

/* one candidate in training */
typedef struct {
	int layer;
	LinearOp op;
	float *m, *v, *grad; /* (op.n) Adam moments, the gradient; on the CPU only */
	float *curve;        /* the training NMSE of every step */
	double nmse[4];      /* train before, after; held-out before, after */
} Cand;

typedef struct {
	const char *want; /* layers to capture */
	float **U, **A;   /* per layer (n, C), NULL when not wanted */
	size_t nC;
} Capture;

static void capture(void *ctx, int l, const float *u, float *a, int B, int T)
{
	Capture *c = ctx;
	(void)B, (void)T;
	if (c->want[l]) {
		memcpy(c->U[l], u, c->nC * sizeof(float));
		memcpy(c->A[l], a, c->nC * sizeof(float));
	}
}

/* the teacher up to the last requested layer, and its buffers */
typedef struct {
	const Model *m;
	int B, T, last;
	Capture cap;
	LayerScratch s;
	float *x, *y;   /* (B*T, C) the residual stream */
	int32_t *batch; /* (B*T) the ids of a batch */
} Teacher;

/* the teacher's layers 0..last on a batch of seqs (tokens_gather), capturing u and
 * a of the wanted layers */
static void teacher_run(Teacher *tc, const int32_t *seqs, int64_t nseq, int64_t first)
{
	int B = tc->B, T = tc->T;
	tokens_gather(tc->batch, seqs, nseq, first, B, T);
	float *x = tc->x, *y = tc->y;
	embedding_forward_cpu(x, tc->batch, &tc->m->embed, B * T, tc->m->cfg.C);
	for (int l = 0; l <= tc->last; l++) {
		layer_forward(tc->m, l, x, y, &tc->s, B, T, capture, &tc->cap);
		float *t = x;
		x = y, y = t;
	}
}

/* the seconds since *t, which becomes now */
static double lap(double *t)
{
	double n = now_seconds(), d = n - *t;
	*t = n;
	return d;
}

/* NMSE of op on (u, a); with grad, its gradient added to grad */
static double nmse(const LinearOp *op, const float *u, const float *a, int B, int T, float *grad, float *ah)
{
	lop_forward(op, ah, u, B, T);
	double e = nmse_cpu(grad ? ah : NULL, ah, a, (size_t)B * T * op->C);
	if (grad)
		lop_backward(op, grad, NULL, ah, u, B, T);
	return e;
}

typedef struct {
	double lr, warmup, wd, clip;
	long long steps;
} Opt;

/* the learning rate at step t: linear warm-up, then cosine to lr / 10 */
static double lr_at(const Opt *o, long long t)
{
	long long w = (long long)(o->warmup * o->steps);
	if (t < w)
		return o->lr * (t + 1) / w;
	double p = o->steps > w ? (double)(t - w) / (double)(o->steps - w) : 1;
	return o->lr * (0.1 + 0.9 * 0.5 * (1 + cos(M_PI * p)));
}

/* AdamW's segments of op: every parameter block, weight decay on the
 * matrices (names w*) only */
static int adam_segs(const LinearOp *op, AdamSeg *segs)
{
	for (int p = 0; p < op->np; p++)
		segs[p] = (AdamSeg){op->p[p].off, (size_t)op->p[p].rows * op->p[p].cols, op->p[p].name[0] == 'w'};
	return op->np;
}

#ifdef DASH_CUDA
/* the GPU side of a run: the teacher, the captures of the wanted layers
 * and every candidate's operator and optimizer state on the device, which
 * stays there (the host sees m and v only in checkpoints) */
typedef struct {
	GpuModel *gm;
	const char *want;
	float **U, **A;             /* device (n, C) float32 per wanted layer */
	GpuLop **lop;               /* per candidate, all in one arena */
	GpuLopArena *arena;
	float **m, **v;             /* per candidate, op.n floats */
	float *grad;                /* max op.n floats: the candidates train one after another */
	float *ah, *dah;            /* (n, C) */
	double *sums, *hsums;       /* (nc, 2) each candidate's last NMSE sums; a host copy */
	float *hm, *hv;             /* max op.n floats: host scratch for a checkpoint, or NULL */
	size_t maxn;
	void *work;
} Gpu;

static void gpu_capture(void *ctx, int l, const uint16_t *d_u, uint16_t *d_a, int n, int C)
{
	Gpu *g = ctx;
	if (g->want[l]) {
		bf16_to_f32_cuda(g->U[l], d_u, (size_t)n * C);
		bf16_to_f32_cuda(g->A[l], d_a, (size_t)n * C);
	}
}
#endif

/* Engine: where the teacher and the candidates run; the CPU's Teacher, or
 * (gpu not NULL) the device's. Cand's host w, m and v are the truth on the
 * CPU; on the GPU the device holds w, m and v, and the host's w is brought
 * up to date by engine_to_host (m and v, for a checkpoint, by
 * engine_state). engine_nmse queues a candidate's error; engine_errors
 * waits for those of all candidates, so that the GPU need not stop after
 * each one. */
typedef struct {
	Teacher tc;
	float *ah;   /* (n, C) the CPU's scratch */
	double *err; /* (nc) the last engine_nmse of every candidate */
#ifdef DASH_CUDA
	Gpu *gpu;
#endif
} Engine;

static void engine_teacher(Engine *e, const int32_t *seqs, int64_t nseq, int64_t first)
{
#ifdef DASH_CUDA
	Gpu *g = e->gpu;
	if (g && g->gm) {
		tokens_gather(e->tc.batch, seqs, nseq, first, e->tc.B, e->tc.T);
		gpu_model_forward_layers(g->gm, e->tc.batch, e->tc.B, e->tc.T, e->tc.last, gpu_capture, g);
		return;
	}
#endif
	teacher_run(&e->tc, seqs, nseq, first);
#ifdef DASH_CUDA
	if (g) /* a teacher on the CPU for candidates on the GPU */
		for (int l = 0; l <= e->tc.last; l++)
			if (g->want[l]) {
				gpu_upload(g->U[l], e->tc.cap.U[l], e->tc.cap.nC * sizeof(float));
				gpu_upload(g->A[l], e->tc.cap.A[l], e->tc.cap.nC * sizeof(float));
			}
#endif
}

/* the NMSE of candidate i on the last teacher batch into e->err[i] (on
 * the GPU once engine_errors has run); with train, its gradient (the
 * CPU's in c->grad, overwritten) for the engine_adamw that follows */
static void engine_nmse(Engine *e, Cand *c, int i, int train)
{
	int B = e->tc.B, T = e->tc.T, l = c->layer;
#ifdef DASH_CUDA
	Gpu *g = e->gpu;
	if (g) {
		size_t n = (size_t)B * T * c->op.C;
		gpu_lop_forward(g->lop[i], g->ah, g->U[l], B, T);
		nmse_cuda(g->sums + 2 * i, train ? g->dah : NULL, g->ah, g->A[l], n, g->work);
		if (train) {
			gpu_zero(g->grad, c->op.n * sizeof(float));
			gpu_lop_backward(g->lop[i], g->grad, NULL, g->dah, g->U[l], B, T);
		}
		return;
	}
#endif
	if (train)
		memset(c->grad, 0, c->op.n * sizeof(float));
	e->err[i] = nmse(&c->op, e->tc.cap.U[l], e->tc.cap.A[l], B, T, train ? c->grad : NULL, e->ah);
}

/* e->err of the nc candidates, once their last engine_nmse is done */
static const double *engine_errors(Engine *e, int nc)
{
#ifdef DASH_CUDA
	Gpu *g = e->gpu;
	if (g) {
		gpu_download(g->hsums, g->sums, 2 * (size_t)nc * sizeof(double));
		for (int i = 0; i < nc; i++)
			e->err[i] = g->hsums[2 * i] / (g->hsums[2 * i + 1] > 0 ? g->hsums[2 * i + 1] : 1);
	}
#else
	(void)nc;
#endif
	return e->err;
}

static void engine_adamw(Engine *e, Cand *c, int i, const Opt *o, long long t)
{
	AdamSeg segs[LOP_MAX_PARAMS];
	int ns = adam_segs(&c->op, segs);
	AdamStep st = {t, (float)lr_at(o, t), (float)o->wd, (float)o->clip};
#ifdef DASH_CUDA
	Gpu *g = e->gpu;
	if (g) {
		adamw_cuda(gpu_lop_params(g->lop[i]), g->m[i], g->v[i], g->grad, c->op.n, segs, ns, &st, g->work);
		return;
	}
#else
	(void)e, (void)i;
#endif
	adamw_cpu(c->op.w, c->m, c->v, c->grad, c->op.n, segs, ns, &st);
}

/* nmse[slot] of every candidate: the mean over the nh held-out sequences,
 * B at a time (the last batch wraps round to the first) */
static void heldout_nmse(Engine *e, const int32_t *held, int64_t nh, Cand *cands, int nc, int slot)
{
	int64_t nb = (nh + e->tc.B - 1) / e->tc.B;
	for (int i = 0; i < nc; i++)
		cands[i].nmse[slot] = 0;
	for (int64_t bi = 0; bi < nb; bi++) {
		engine_teacher(e, held, nh, bi * e->tc.B);
		for (int i = 0; i < nc; i++)
			engine_nmse(e, &cands[i], i, 0);
		const double *err = engine_errors(e, nc);
		for (int i = 0; i < nc; i++)
			cands[i].nmse[slot] += err[i];
	}
	for (int i = 0; i < nc; i++)
		cands[i].nmse[slot] /= nb;
}

#ifdef DASH_CUDA
/* the device side of a run whose candidates (host, as initialised) are
 * cands, their optimizer state zero; B*T tokens a batch; the teacher too
 * unless cpu_teacher */
static Gpu *gpu_new(const Model *m, const char *want, const Cand *cands, int nc, int B, int T, int cpu_teacher)
{
	const ModelConfig *c = &m->cfg;
	Gpu *g = callocCheck(1, sizeof *g);
	size_t nC = (size_t)B * T * c->C;
	g->gm = cpu_teacher ? NULL : gpu_model_new(m, B * T, 0);
	g->want = want;
	g->U = callocCheck((size_t)c->L, sizeof(float *)), g->A = callocCheck((size_t)c->L, sizeof(float *));
	for (int l = 0; l < c->L; l++)
		if (want[l])
			g->U[l] = gpu_alloc(nC * sizeof(float)), g->A[l] = gpu_alloc(nC * sizeof(float));
	g->lop = callocCheck((size_t)nc, sizeof(GpuLop *));
	g->m = callocCheck((size_t)nc, sizeof(float *)), g->v = callocCheck((size_t)nc, sizeof(float *));
	size_t ab = 0; /* the candidates train one after another: one arena serves all */
	for (int i = 0; i < nc; i++) {
		size_t b = gpu_lop_arena_bytes(&cands[i].op, B * T);
		ab = b > ab ? b : ab;
		g->maxn = cands[i].op.n > g->maxn ? cands[i].op.n : g->maxn;
	}
	g->arena = gpu_lop_arena_new(ab);
	for (int i = 0; i < nc; i++) {
		const LinearOp *op = &cands[i].op;
		size_t nb = op->n * sizeof(float);
		g->lop[i] = gpu_lop_new(op, B * T, g->arena);
		g->m[i] = gpu_alloc(nb), g->v[i] = gpu_alloc(nb);
		gpu_zero(g->m[i], nb), gpu_zero(g->v[i], nb);
	}
	g->grad = gpu_alloc(g->maxn * sizeof(float));
	g->ah = gpu_alloc(nC * sizeof(float)), g->dah = gpu_alloc(nC * sizeof(float));
	g->sums = gpu_alloc(2 * (size_t)nc * sizeof(double));
	g->hsums = mallocCheck(2 * (size_t)nc * sizeof(double));
	g->work = gpu_alloc(train_work());
	return g;
}

static void gpu_free_all(Gpu *g, int L, int nc)
{
	for (int l = 0; l < L; l++)
		if (g->want[l])
			gpu_free(g->U[l]), gpu_free(g->A[l]);
	for (int i = 0; i < nc; i++)
		gpu_lop_free(g->lop[i]), gpu_free(g->m[i]), gpu_free(g->v[i]);
	gpu_lop_arena_free(g->arena);
	gpu_free(g->grad), gpu_free(g->ah), gpu_free(g->dah), gpu_free(g->sums), gpu_free(g->work);
	if (g->gm)
		gpu_model_free(g->gm);
	free(g->U), free(g->A), free(g->lop), free(g->m), free(g->v), free(g->hsums), free(g->hm), free(g->hv);
	free(g);
}
#endif

/* brings the host w of the candidates up to date (before the candidate
 * files) */
static void engine_to_host(Engine *e, Cand *cands, int nc)
{
#ifdef DASH_CUDA
	if (e->gpu)
		for (int i = 0; i < nc; i++)
			gpu_lop_download(e->gpu->lop[i], &cands[i].op);
#else
	(void)e, (void)cands, (void)nc;
#endif
}

/* candidate i's w, m and v on the host into w, m, v (for a checkpoint;
 * valid until the next call): on the GPU, w downloaded into the host's
 * op.w, m and v into scratch */
static void engine_state(Engine *e, Cand *cands, int i, const float **w, const float **m, const float **v)
{
	Cand *c = &cands[i];
#ifdef DASH_CUDA
	Gpu *g = e->gpu;
	if (g) {
		if (!g->hm)
			g->hm = mallocCheck(g->maxn * sizeof(float)), g->hv = mallocCheck(g->maxn * sizeof(float));
		gpu_lop_download(g->lop[i], &c->op);
		gpu_download(g->hm, g->m[i], c->op.n * sizeof(float));
		gpu_download(g->hv, g->v[i], c->op.n * sizeof(float));
		*w = c->op.w, *m = g->hm, *v = g->hv;
		return;
	}
#else
	(void)e;
#endif
	*w = c->op.w, *m = c->m, *v = c->v;
}

/* candidate i's w, m and v (op.n each) from a checkpoint into the engine
 * (and the host's op.w) */
static void engine_load(Engine *e, Cand *cands, int i, const float *w, const float *m, const float *v)
{
	Cand *c = &cands[i];
	size_t nb = c->op.n * sizeof(float);
	memcpy(c->op.w, w, nb);
#ifdef DASH_CUDA
	Gpu *g = e->gpu;
	if (g) {
		gpu_upload(gpu_lop_params(g->lop[i]), w, nb);
		gpu_upload(g->m[i], m, nb), gpu_upload(g->v[i], v, nb);
		return;
	}
#else
	(void)e;
#endif
	memcpy(c->m, m, nb), memcpy(c->v, v, nb);
}

static void ckpt_name(char *buf, size_t n, const Cand *c, const char *what)
{
	snprintf(buf, n, "/L%02d/%s/%s", c->layer, lop_name(c->op.kind), what);
}

/* the settings a checkpoint must share with the run that resumes it */
static void settings(char *buf, size_t n, const char *layers, const char *ops, long long steps, int T, int B,
                     long long heldout, const Opt *o, uint64_t seed)
{
	snprintf(buf, n, "layers=%s ops=%s steps=%lld seq=%d batch=%d heldout=%lld lr=%g warmup=%g wd=%g clip=%g seed=%llu",
	         layers, ops, steps, T, B, heldout, o->lr, o->warmup, o->wd, o->clip, (unsigned long long)seed);
}

static void ckpt_write(const char *path, Engine *e, Cand *cands, int nc, long long step, const char *set,
                       const Model *m, const char *tok_fp)
{
	H5File *f = h5_ckpt_create(path, CKPT_FORMAT, step, set, m->path, m->fingerprint, tok_fp);
	for (int i = 0; i < nc; i++) {
		Cand *c = &cands[i];
		char name[64];
		int64_t nw = (int64_t)c->op.n, ns = step, four = 4;
		const float *w, *mo, *v;
		engine_state(e, cands, i, &w, &mo, &v);
		ckpt_name(name, sizeof name, c, "w"), h5_write(f, name, DT_F32, 1, &nw, w);
		ckpt_name(name, sizeof name, c, "m"), h5_write(f, name, DT_F32, 1, &nw, mo);
		ckpt_name(name, sizeof name, c, "v"), h5_write(f, name, DT_F32, 1, &nw, v);
		ckpt_name(name, sizeof name, c, "curve"), h5_write(f, name, DT_F32, 1, &ns, c->curve);
		ckpt_name(name, sizeof name, c, "nmse"), h5_write(f, name, DT_F64, 1, &four, c->nmse);
	}
	h5_close(f);
}

/* ckpt_check dies unless the checkpoint at path belongs to this run */
static void ckpt_check(const char *path, const char *set, const Model *m, const char *tok_fp)
{
	int64_t step;
	h5_close(h5_ckpt_open(path, CKPT_FORMAT, set, m->fingerprint, tok_fp, &step));
}

static long long ckpt_read(const char *path, Engine *e, Cand *cands, int nc)
{
	H5File *f = h5_open(path);
	long long step = h5_attr_get_i64(f, "/", "step");
	for (int i = 0; i < nc; i++) {
		Cand *c = &cands[i];
		char name[64];
		int rank;
		int64_t dims[TENSOR_MAX_DIMS];
		float *x[4];
		const char *what[4] = {"w", "m", "v", "curve"};
		for (int j = 0; j < 4; j++) {
			ckpt_name(name, sizeof name, c, what[j]);
			x[j] = h5_read(f, name, DT_F32, &rank, dims);
			if (dims[0] != (j < 3 ? (int64_t)c->op.n : step))
				die("%s: %s has %lld values, want %lld", path, name, (long long)dims[0],
				    (long long)(j < 3 ? (int64_t)c->op.n : step));
		}
		engine_load(e, cands, i, x[0], x[1], x[2]);
		memcpy(c->curve, x[3], (size_t)step * sizeof(float));
		for (int j = 0; j < 4; j++)
			free(x[j]);
		ckpt_name(name, sizeof name, c, "nmse");
		double *nm = h5_read(f, name, DT_F64, &rank, dims);
		memcpy(c->nmse, nm, sizeof c->nmse);
		free(nm);
	}
	h5_close(f);
	return step;
}

int main(int argc, char **argv)
{
	const char *model_path = NULL, *tokens_path = NULL, *dir = NULL, *layers_arg = NULL, *ops_arg = "gdn,gla";
	const char *device = NULL;
	long long ntok = 1 << 20, seq = 512, batch = 1, heldout = 4096, ckpt_every = 100, stop_after = -1;
	unsigned long long seed = 1;
	int resume = 0;
	Opt o = {1e-3, 0.05, 0.01, 1.0, 0};
	static const struct option opts[] = {
		{"model", required_argument, NULL, 'm'}, {"tokens-file", required_argument, NULL, 'd'},
		{"out", required_argument, NULL, 'o'}, {"layers", required_argument, NULL, 'l'},
		{"ops", required_argument, NULL, 'O'}, {"tokens", required_argument, NULL, 'n'},
		{"seq", required_argument, NULL, 's'}, {"batch", required_argument, NULL, 'b'},
		{"heldout", required_argument, NULL, 'H'}, {"lr", required_argument, NULL, 'r'},
		{"warmup", required_argument, NULL, 'w'}, {"wd", required_argument, NULL, 'W'},
		{"clip", required_argument, NULL, 'c'}, {"seed", required_argument, NULL, 'S'},
		{"ckpt-every", required_argument, NULL, 'k'}, {"resume", no_argument, NULL, 'R'},
		{"stop-after", required_argument, NULL, 'x'}, {"device", required_argument, NULL, 'D'},
		{NULL, 0, NULL, 0},
	};
	util_init(argc, argv);
	int ch;
	while ((ch = getopt_long(argc, argv, "m:d:o:l:", opts, NULL)) != -1) {
		switch (ch) {
		case 'm': model_path = optarg; break;
		case 'd': tokens_path = optarg; break;
		case 'o': dir = optarg; break;
		case 'l': layers_arg = optarg; break;
		case 'O': ops_arg = optarg; break;
		case 'n': ntok = estrtocount(optarg, "--tokens"); break;
		case 's': seq = estrtocount(optarg, "--seq"); break;
		case 'b': batch = estrtocount(optarg, "--batch"); break;
		case 'H': heldout = estrtocount(optarg, "--heldout"); break;
		case 'r': o.lr = estrtod(optarg, "--lr"); break;
		case 'w': o.warmup = estrtod(optarg, "--warmup"); break;
		case 'W': o.wd = estrtod(optarg, "--wd"); break;
		case 'c': o.clip = estrtod(optarg, "--clip"); break;
		case 'S': seed = (unsigned long long)estrtocount(optarg, "--seed"); break;
		case 'k': ckpt_every = estrtocount(optarg, "--ckpt-every"); break;
		case 'R': resume = 1; break;
		case 'x': stop_after = estrtocount(optarg, "--stop-after"); break;
		case 'D': device = optarg; break;
		default: usage();
		}
	}
	if (optind != argc || !model_path || !tokens_path || !dir)
		usage();
	int cuda = device_is_cuda(device);
	if (seq < 1 || seq > 1 << 16 || batch < 1 || batch > 1024 || ntok < 1 || heldout < 1)
		die("--seq must be 1 to 65536, --batch 1 to 1024, --tokens and --heldout at least 1");
	if (!(o.lr > 0) || !(o.warmup >= 0 && o.warmup < 1) || !(o.wd >= 0) || !(o.clip > 0) || ckpt_every < 1)
		die("--lr and --clip must be > 0, --warmup in [0, 1), --wd >= 0, --ckpt-every >= 1");
	int kinds[2], nk = 0;
	{
		char *dup = strdupCheck(ops_arg), *save = NULL;
		for (char *tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			int k = lop_kind(tok);
			if (k < 0)
				die("--ops: unknown operator '%s' (gdn, gla)", tok);
			if (k == LOP_SWA)
				die("--ops: swa is the teacher's own attention in a window and needs no candidate (gdn, gla)");
			if (nk == 2 || (nk == 1 && kinds[0] == k))
				die("--ops: '%s' names an operator twice", ops_arg);
			kinds[nk++] = k;
		}
		free(dup);
		if (!nk)
			die("--ops: no operator named");
	}

	/* inputs, all checked before any work; the set-up's phases timed */
	double tl = now_seconds(), t_model, t_cands, t_dev = 0, t_held = 0;
	Model m;
	model_load(&m, model_path);
	t_model = lap(&tl);
	const ModelConfig *c = &m.cfg;
	char *want = mallocCheck((size_t)c->L);
	if (layers_arg)
		parse_layers(layers_arg, c->L, want);
	else
		memset(want, 1, (size_t)c->L);
	int last = -1, nl = 0;
	for (int l = 0; l < c->L; l++)
		if (want[l])
			last = l, nl++;
	int64_t n;
	char tok_fp[17];
	int32_t *ids = tokens_read(tokens_path, -1, c->V, &n, tok_fp);
	int T = (int)seq, B = (int)batch;
	int64_t nh = (heldout + T - 1) / T; /* held-out sequences, from the end */
	if (n < (nh + 1) * T)
		die("%s: %lld tokens, fewer than %lld held-out sequences of %d and one to train on", tokens_path,
		    (long long)n, (long long)nh, T);
	int64_t ntrain = n - nh * T;
	o.steps = (ntok + (long long)B * T - 1) / ((long long)B * T);
	char ckpt[4096], set[1024];
	/* one checkpoint per layer set, so that runs on other layers of the
	 * same directory (make -j) keep out of each other's way */
	snprintf(ckpt, sizeof ckpt, "%s/distill-L%s.ckpt.h5", dir, layers_arg ? layers_arg : "all");
	settings(set, sizeof set, layers_arg ? layers_arg : "all", ops_arg, o.steps, T, B, heldout, &o, seed);
	resume = resume && access(ckpt, F_OK) == 0;
	if (resume)
		ckpt_check(ckpt, set, &m, tok_fp);
	if (mkdir(dir, 0777) != 0 && errno != EEXIST)
		die("%s: cannot make the directory: %s", dir, strerror(errno));
	fprintf(stderr, "distill-linear: model %s: ", model_path);
	model_describe(&m, stderr);
	fprintf(stderr, "distill-linear: %d layer%s x %d op%s, %lld steps of %d x %d tokens (%lld tokens from a training "
	                "split of %lld; %lld held out), lr %g\n", nl, nl == 1 ? "" : "s", nk, nk == 1 ? "" : "s", o.steps,
	        B, T, (long long)(o.steps * B * T), (long long)ntrain, (long long)(nh * T), o.lr);
	if (cuda && c->D > 128)
		die("%s: head dim %d: the CUDA kernels of gdn and gla take up to 128; use --device cpu", model_path, c->D);

	/* the candidates, nk a wanted layer, each initialised from its layer
	 * and the seed alone: in parallel, the same whatever the threads */
	int nc = nl * nk;
	Cand *cands = callocCheck((size_t)nc, sizeof *cands);
	for (int l = 0, i = 0; l < c->L; l++)
		for (int k = 0; want[l] && k < nk; k++, i++)
			cands[i].layer = l;
	#pragma omp parallel for schedule(dynamic)
	for (int i = 0; i < nc; i++)
		lop_init_teacher(&cands[i].op, kinds[i % nk], &m, cands[i].layer, seed);
	for (int i = 0; i < nc; i++) {
		Cand *cd = &cands[i];
		if (!cuda) { /* on the GPU the optimizer's state lives on the device */
			cd->m = callocCheck(cd->op.n, sizeof(float));
			cd->v = callocCheck(cd->op.n, sizeof(float));
			cd->grad = mallocCheck(cd->op.n * sizeof(float));
		}
		cd->curve = callocCheck((size_t)o.steps, sizeof(float));
	}
	t_cands = lap(&tl);

	size_t nC = (size_t)B * T * c->C;
	Engine e = {0};
	e.err = callocCheck((size_t)nc, sizeof(double));
	e.tc.m = &m, e.tc.B = B, e.tc.T = T, e.tc.last = last;
	e.tc.cap.want = want, e.tc.cap.nC = nC;
	e.tc.batch = mallocCheck((size_t)B * T * sizeof(int32_t));
	/* the CUDA attention takes head dims 64 and 128: a teacher with others
	 * (the tiny test fixtures) runs on the CPU, its candidates on the GPU */
	int cpu_teacher = !cuda || (c->D != 64 && c->D != 128);
#ifdef DASH_CUDA
	if (cuda) {
		char name[256];
		cuda_device_name(0, name, sizeof name);
		e.gpu = gpu_new(&m, want, cands, nc, B, T, cpu_teacher);
		gpu_sync();
		t_dev = lap(&tl);
		fprintf(stderr, "distill-linear: device cuda: %s%s\n", name,
		        cpu_teacher ? "; the teacher on the CPU (no CUDA attention for its head dim)" : "");
	}
#endif
	long long step0 = 0;
	if (resume) {
		step0 = ckpt_read(ckpt, &e, cands, nc);
		fprintf(stderr, "distill-linear: resuming %s at step %lld\n", ckpt, step0);
	}
	t_cands += lap(&tl);
	if (cpu_teacher) {
		/* float32 weights, the CPU forward's fast path, of the layers it
		 * runs (the embedding converts its rows as it reads them) */
		for (int l = 0; l <= last; l++) {
			Tensor *lt = (Tensor *)&m.layers[l];
			for (size_t j = 0; j < sizeof(LayerWeights) / sizeof(Tensor); j++)
				unpack_tensor(&m, &lt[j]);
		}
		Teacher *tc = &e.tc;
		tc->cap.U = callocCheck((size_t)c->L, sizeof(float *)), tc->cap.A = callocCheck((size_t)c->L, sizeof(float *));
		for (int l = 0; l < c->L; l++)
			if (want[l])
				tc->cap.U[l] = mallocCheck(nC * sizeof(float)), tc->cap.A[l] = mallocCheck(nC * sizeof(float));
		tc->x = mallocCheck(nC * sizeof(float)), tc->y = mallocCheck(nC * sizeof(float));
		layer_scratch_init(&tc->s, c, B * T);
		e.ah = mallocCheck(nC * sizeof(float));
	}

	t_dev += lap(&tl);
	if (step0 == 0) {
		heldout_nmse(&e, ids + ntrain, nh, cands, nc, 2);
		t_held = lap(&tl);
	}
	fprintf(stderr, "distill-linear: set up in %.1f s: model %.1f s, %d candidates %.1f s, %s %.1f s, held-out "
	        "NMSE %.1f s\n", t_model + t_cands + t_dev + t_held, t_model, nc, t_cands, cuda ? "device" : "teacher",
	        t_dev, t_held);

	Progress pr;
	progress_init(&pr, "steps", o.steps);
	long long t = step0, ran = 0;
	double t0 = now_seconds(), t_first = 0, t_ckpt = 0;
	for (; t < o.steps; t++) {
		if (stop_after >= 0 && ran == stop_after)
			break;
		/* batch t: sequences t B .. t B + B - 1 of the training tokens, wrapping */
		engine_teacher(&e, ids, ntrain / T, t * B);
		for (int i = 0; i < nc; i++) {
			engine_nmse(&e, &cands[i], i, 1);
			engine_adamw(&e, &cands[i], i, &o, t);
		}
		const double *err = engine_errors(&e, nc);
		for (int i = 0; i < nc; i++) {
			cands[i].curve[t] = (float)err[i];
			if (t == 0)
				cands[i].nmse[0] = err[i];
		}
		if (ran++ == 0)
			t_first = now_seconds() - t0;
		progress_update(&pr, t + 1);
		if ((t + 1) % ckpt_every == 0 && t + 1 < o.steps) {
			double tc = now_seconds();
			ckpt_write(ckpt, &e, cands, nc, t + 1, set, &m, tok_fp);
			t_ckpt += now_seconds() - tc;
		}
	}
	if (t < o.steps) {
		ckpt_write(ckpt, &e, cands, nc, t, set, &m, tok_fp);
		fprintf(stderr, "\ndistill-linear: stopped after step %lld of %lld; --resume goes on from %s\n", t, o.steps,
		        ckpt);
		return 0;
	}
	progress_done(&pr, o.steps);
	/* the rate in steps after the first (which pays for the GPU's first
	 * calls) and outside checkpoints: the steady state */
	double secs = now_seconds() - t0, steady = secs - t_first - t_ckpt;
	fprintf(stderr, "distill-linear: %lld steps in %.1f s (the first %.2f s, checkpoints %.1f s): %.0f tok/s through "
	        "the teacher and %d candidate%s, %.0f tok/s after the first step outside checkpoints\n", ran, secs, t_first,
	        t_ckpt, secs > 0 ? (double)ran * B * T / secs : 0, nc, nc == 1 ? "" : "s",
	        ran > 1 && steady > 0 ? (double)(ran - 1) * B * T / steady : 0);
	tl = now_seconds();
	heldout_nmse(&e, ids + ntrain, nh, cands, nc, 3);
	engine_to_host(&e, cands, nc);
	double t_after = lap(&tl);

	/* the training NMSE after: the mean of the last tenth of the steps */
	long long tail = o.steps / 10 > 0 ? o.steps / 10 : 1;
	for (int i = 0; i < nc; i++) {
		double sum = 0;
		for (long long j = o.steps - tail; j < o.steps; j++)
			sum += cands[i].curve[j];
		cands[i].nmse[1] = sum / tail;
	}
	printf("layer\top\tnmse_train_before\tnmse_train_after\tnmse_heldout_before\tnmse_heldout_after\n");
	for (int l = 0, i = 0; l < c->L; l++) {
		if (!want[l])
			continue;
		char path[4200];
		snprintf(path, sizeof path, "%s/L%02d.h5", dir, l);
		H5File *f = h5_create(path);
		h5_stamp(f, CAND_FORMAT, 1);
		h5_set_input(f, "teacher", model_path, m.fingerprint);
		h5_set_input(f, "tokens", tokens_path, tok_fp);
		h5_attr_set_i64(f, "/", "layer", l), h5_attr_set_i64(f, "/", "n_layers", c->L);
		h5_attr_set_i64(f, "/", "seed", (int64_t)seed), h5_attr_set_i64(f, "/", "seq", T);
		h5_attr_set_i64(f, "/", "batch", B), h5_attr_set_i64(f, "/", "steps", o.steps);
		h5_attr_set_i64(f, "/", "tokens_seen", o.steps * B * T);
		h5_attr_set_i64(f, "/", "heldout_tokens", nh * T);
		h5_attr_set_f64(f, "/", "lr", o.lr), h5_attr_set_f64(f, "/", "warmup", o.warmup);
		h5_attr_set_f64(f, "/", "weight_decay", o.wd), h5_attr_set_f64(f, "/", "clip", o.clip);
		for (int k = 0; k < nk; k++, i++) {
			Cand *cd = &cands[i];
			cand_write_op(f, &cd->op, cd->curve, o.steps, cd->nmse);
			printf("%d\t%s\t%.4f\t%.4f\t%.4f\t%.4f\n", l, lop_name(cd->op.kind), cd->nmse[0], cd->nmse[1],
			       cd->nmse[2], cd->nmse[3]);
		}
		h5_close(f);
	}
	fshut(stdout, "<stdout>");
	fprintf(stderr, "distill-linear: held-out NMSE after and the download %.1f s, candidate files %.1f s\n", t_after,
	        lap(&tl));
	unlink(ckpt);
	for (int i = 0; i < nc; i++) {
		lop_free(&cands[i].op);
		free(cands[i].m), free(cands[i].v), free(cands[i].grad), free(cands[i].curve);
	}
#ifdef DASH_CUDA
	if (e.gpu)
		gpu_free_all(e.gpu, c->L, nc);
#endif
	if (cpu_teacher) {
		Teacher *tc = &e.tc;
		for (int l = 0; l < c->L; l++)
			free(tc->cap.U[l]), free(tc->cap.A[l]);
		free(tc->cap.U), free(tc->cap.A), free(tc->x), free(tc->y);
		layer_scratch_free(&tc->s);
	}
	free(e.tc.batch), free(e.ah), free(e.err);
	free(cands), free(want), free(ids);
	model_free(&m);
	return 0;
}
