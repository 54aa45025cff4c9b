/* eval-ruler: RULER's long-context tasks (lib/ruler.h) for a teacher and
 * for hybrids of it (arch.h5 of derive). Every model reads the same
 * generated examples (a function of the seed, the task and the sample
 * index), in the teacher's chat template when it has one, decodes
 * greedily with its own decode state (lib/decode.h: fa's KV cache, swa's
 * ring, gdn's and gla's recurrent state) and is scored as RULER scores.
 * Prints one table a length (task x model, the average, and each model's
 * decode state at that length) and writes every prompt, prediction and
 * score to ruler.h5. On the CPU (lib/decode.h) or the GPU
 * (kernels/gpu_decode.h). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"   // defines: Decoder, decoder_init, decoder_greedy, decoder_state_bytes
#include "device.h"   // defines: device_is_cuda
#include "generate.h" // defines: tokenizer_for_model, chat_style_for, generate_stop_ids
#include "h5io.h"     // defines: h5_create, h5_write, h5_attr_set_str
#include "hybrid.h"   // defines: Hybrid, hybrid_load
#include "ruler.h"    // defines: RulerGen, ruler_gen_new, ruler_gen_sample, ruler_score
#include "textio.h"   // defines: Docs, docs_read
#include "util.h"     // defines: die, estrtocount, now_seconds
#ifdef DASH_CUDA
#include "gpu.h"        // defines: cuda_device_name
#include "gpu_decode.h" // defines: GpuDecoder, gpu_decoder_new, gpu_decoder_greedy
#endif

#define RULER_FORMAT "dash-ruler"
#define MAX_MODELS 64
#define MAX_TASKS 16
#define MAX_LENGTHS 16
#define DEFAULT_HAYSTACK "data/text/sotu.jsonl.zst"

static void usage(void)
{
	fprintf(stderr, "usage: eval-ruler -m MODEL [--tokenizer FILE] [-c CAND_DIR] [--arch ARCH.h5 ...] [--window W]\n"
	                "                  [--tasks all|LIST] [--lengths 4096,...] [--samples N] [--seed S]\n"
	                "                  [--haystack FILE ...] [--batch B] [--kv bf16|f32] [--no-teacher] [--raw]\n"
	                "                  [--device cpu|cuda] [-o RULER.h5]\n");
	exit(2);
}

typedef struct {
	char name[256];  /* "teacher" or the arch file's name without .h5 */
	const char *arch; /* NULL: the teacher */
	Hybrid hy;
} EvalModel;

/* a growing byte buffer with offsets: the strings of one dataset pair */
typedef struct {
	char *b;
	size_t n, cap;
	int64_t *off; /* (count + 1) */
	int count, offcap;
} Strings;

static void strings_add(Strings *s, const char *p, size_t n)
{
	if (s->count + 2 > s->offcap) {
		s->offcap = s->offcap ? 2 * s->offcap : 64;
		s->off = reallocCheck(s->off, (size_t)s->offcap * sizeof(int64_t));
	}
	if (s->n + n + 1 > s->cap) {
		s->cap = (s->n + n + 1) * 2;
		s->b = reallocCheck(s->b, s->cap);
	}
	s->off[0] = 0;
	memcpy(s->b + s->n, p, n);
	s->n += n;
	s->off[++s->count] = (int64_t)s->n;
}

static void strings_write(H5File *f, const char *name, const Strings *s)
{
	char path[512];
	int64_t nb = (int64_t)s->n, no = s->count + 1;
	int64_t zero = 0;
	snprintf(path, sizeof path, "%s/bytes", name);
	h5_write(f, path, DT_U8, 1, &nb, s->n ? (const void *)s->b : (const void *)"");
	snprintf(path, sizeof path, "%s/offsets", name);
	h5_write(f, path, DT_I64, 1, &no, s->count ? s->off : &zero);
}

static void strings_free(Strings *s)
{
	free(s->b), free(s->off);
	memset(s, 0, sizeof *s);
}

/* ids (count, each of its own length) as two datasets, values int32 and
 * offsets int64 (count + 1), as strings_write lays out bytes */
static void ids_write(H5File *f, const char *name, int32_t *const *ids, const int *lens, int count)
{
	int64_t *off = mallocCheck((size_t)(count + 1) * sizeof(int64_t));
	off[0] = 0;
	for (int i = 0; i < count; i++)
		off[i + 1] = off[i] + lens[i];
	int32_t *v = mallocCheck((size_t)(off[count] ? off[count] : 1) * sizeof(int32_t));
	for (int i = 0; i < count; i++)
		memcpy(v + off[i], ids[i], (size_t)lens[i] * sizeof(int32_t));
	char path[640];
	int64_t nv = off[count], no = count + 1;
	snprintf(path, sizeof path, "%s/values", name);
	h5_write(f, path, DT_I32, 1, &nv, v);
	snprintf(path, sizeof path, "%s/offsets", name);
	h5_write(f, path, DT_I64, 1, &no, off);
	free(v), free(off);
}

/* the n examples of one task at one length, as every model reads them */
typedef struct {
	RulerSample *smp; /* (n) */
	int32_t **ids;    /* (n) the prompts' tokens */
	int *lens;        /* (n) */
	char ***refs;     /* (n) each sample's answers */
	int *nrefs;       /* (n) */
	int n, maxlen;
} TaskSet;

/* taskset_make generates task's n examples at o->max_seq_length, tokenizes
 * them, and writes the prompts, their ids and the answers to f under
 * /length/task */
static void taskset_make(TaskSet *t, const RulerTask *task, const RulerOpts *o, int n, TokEncoder *enc, H5File *f)
{
	double t0 = now_seconds();
	memset(t, 0, sizeof *t);
	t->n = n;
	t->smp = callocCheck((size_t)n, sizeof *t->smp);
	t->ids = callocCheck((size_t)n, sizeof *t->ids);
	t->lens = callocCheck((size_t)n, sizeof *t->lens);
	t->refs = callocCheck((size_t)n, sizeof *t->refs);
	t->nrefs = callocCheck((size_t)n, sizeof *t->nrefs);
	RulerGen *g = ruler_gen_new(task, o);
	Strings prompts = {0}, answers = {0};
	for (int i = 0; i < n; i++) {
		ruler_gen_sample(g, i, &t->smp[i]);
		IdVec v = {0};
		tokenizer_encode(enc, t->smp[i].prompt, strlen(t->smp[i].prompt), 1, &v);
		t->ids[i] = v.v, t->lens[i] = (int)v.n;
		t->maxlen = t->lens[i] > t->maxlen ? t->lens[i] : t->maxlen;
		t->refs[i] = t->smp[i].answers, t->nrefs[i] = t->smp[i].nanswers;
		strings_add(&prompts, t->smp[i].prompt, strlen(t->smp[i].prompt));
		/* the answers, one string a sample, joined by 0x1f */
		size_t al = 0;
		for (int a = 0; a < t->smp[i].nanswers; a++)
			al += strlen(t->smp[i].answers[a]) + 1;
		char *joined = mallocCheck(al + 1), *p = joined;
		for (int a = 0; a < t->smp[i].nanswers; a++)
			p += sprintf(p, "%s%s", a ? "\x1f" : "", t->smp[i].answers[a]);
		strings_add(&answers, joined, (size_t)(p - joined));
		free(joined);
	}
	fprintf(stderr, "eval-ruler: %s at %d: %d samples of up to %d prompt tokens (haystack %d), made in %.1f s\n",
	        task->name, o->max_seq_length, n, t->maxlen, ruler_gen_haystack(g), now_seconds() - t0);
	char name[512];
	snprintf(name, sizeof name, "/%d/%s/prompts", o->max_seq_length, task->name);
	strings_write(f, name, &prompts);
	snprintf(name, sizeof name, "/%d/%s/prompt_ids", o->max_seq_length, task->name);
	ids_write(f, name, t->ids, t->lens, n);
	snprintf(name, sizeof name, "/%d/%s/answers", o->max_seq_length, task->name);
	strings_write(f, name, &answers);
	snprintf(name, sizeof name, "/%d/%s", o->max_seq_length, task->name);
	h5_attr_set_i64(f, name, "tokens_to_generate", task->tokens_to_generate);
	strings_free(&prompts), strings_free(&answers);
	ruler_gen_free(g);
}

static void taskset_free(TaskSet *t)
{
	for (int i = 0; i < t->n; i++)
		ruler_sample_free(&t->smp[i]), free(t->ids[i]);
	free(t->smp), free(t->ids), free(t->lens), free(t->refs), free(t->nrefs);
	memset(t, 0, sizeof *t);
}

/* Runner: one model's greedy decoding of batches of at most B prompts, on
 * the CPU (a Decoder a batch, lib/decode.h) or on the GPU (one GpuDecoder
 * for all of them, kernels/gpu_decode.h) */
typedef struct {
	int cuda, B, cap;
	const Model *m;
	const Hybrid *hy;
	DType kv;
#ifdef DASH_CUDA
	GpuDecoder *g;
#endif
} Runner;

static void runner_init(Runner *r, int cuda, const Model *m, const Hybrid *hy, int B, int cap, DType kv)
{
	*r = (Runner){.cuda = cuda, .B = B, .cap = cap, .m = m, .hy = hy, .kv = kv};
#ifdef DASH_CUDA
	if (cuda)
		r->g = gpu_decoder_new(m, hy, B, cap);
#endif
}

static void runner_free(Runner *r)
{
#ifdef DASH_CUDA
	if (r->g)
		gpu_decoder_free(r->g);
#endif
	memset(r, 0, sizeof *r);
}

/* greedy answers of the n <= B prompts into out (n, emptied first) */
static void runner_greedy(Runner *r, int n, const int32_t *const *prompts, const int *lens, int max_new,
                          const int32_t *stop, int nstop, IdVec *out)
{
#ifdef DASH_CUDA
	if (r->cuda) {
		gpu_decoder_greedy(r->g, n, prompts, lens, max_new, stop, nstop, out, NULL, NULL);
		return;
	}
#endif
	int need = 0;
	for (int b = 0; b < n; b++)
		need = lens[b] + max_new > need ? lens[b] + max_new : need;
	Decoder d;
	decoder_init(&d, r->m, r->hy, n, need, r->kv);
	decoder_greedy(&d, prompts, lens, max_new, stop, nstop, out, NULL, NULL);
	decoder_free(&d);
}

/* comma-separated list into items (at most max); returns the count */
static int split_list(char *s, char **items, int max, const char *what)
{
	int n = 0;
	char *save = NULL;
	for (char *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (n == max)
			die("%s: more than %d items", what, max);
		items[n++] = t;
	}
	if (n == 0)
		die("%s: an empty list", what);
	return n;
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	const char *model_path = NULL, *tok_path = NULL, *cand_dir = NULL, *out = "ruler.h5", *device = NULL;
	const char *arch[MAX_MODELS], *haystack[16];
	int narch = 0, nhay = 0, no_teacher = 0, raw = 0;
	char *tasks_arg = strdupCheck("all"), *lengths_arg = strdupCheck("4096");
	long long samples = 100, seed = 42, batch = 0, window = LOP_SWA_WINDOW;
	DType kv = DECODER_KV;
	int kv_set = 0;
	static const struct option lo[] = {
		{"model", required_argument, NULL, 'm'}, {"tokenizer", required_argument, NULL, 'T'},
		{"cand", required_argument, NULL, 'c'}, {"arch", required_argument, NULL, 'A'},
		{"window", required_argument, NULL, 'W'}, {"tasks", required_argument, NULL, 't'},
		{"lengths", required_argument, NULL, 'L'}, {"samples", required_argument, NULL, 'n'},
		{"seed", required_argument, NULL, 's'}, {"haystack", required_argument, NULL, 'H'},
		{"batch", required_argument, NULL, 'b'}, {"kv", required_argument, NULL, 'k'},
		{"no-teacher", no_argument, NULL, 'N'}, {"raw", no_argument, NULL, 'R'},
		{"device", required_argument, NULL, 'D'},
		{"output", required_argument, NULL, 'o'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
	int c;
	while ((c = getopt_long(argc, argv, "m:c:t:n:s:b:o:h", lo, NULL)) != -1)
		switch (c) {
		case 'm': model_path = optarg; break;
		case 'T': tok_path = optarg; break;
		case 'c': cand_dir = optarg; break;
		case 'A':
			if (narch == MAX_MODELS - 1)
				die("--arch: at most %d hybrids", MAX_MODELS - 1);
			arch[narch++] = optarg;
			break;
		case 'W': window = estrtocount(optarg, "--window"); break;
		case 't': free(tasks_arg), tasks_arg = strdupCheck(optarg); break;
		case 'L': free(lengths_arg), lengths_arg = strdupCheck(optarg); break;
		case 'n': samples = estrtocount(optarg, "--samples"); break;
		case 's': seed = estrtoll(optarg, "--seed"); break;
		case 'H':
			if (nhay == 16)
				die("--haystack: at most 16 files");
			haystack[nhay++] = optarg;
			break;
		case 'b': batch = estrtocount(optarg, "--batch"); break;
		case 'k':
			if (!strcmp(optarg, "bf16"))
				kv = DT_BF16;
			else if (!strcmp(optarg, "f32"))
				kv = DT_F32;
			else
				die("--kv: '%s' is neither bf16 nor f32", optarg);
			kv_set = 1;
			break;
		case 'D': device = optarg; break;
		case 'N': no_teacher = 1; break;
		case 'R': raw = 1; break;
		case 'o': out = optarg; break;
		default: usage();
		}
	if (!model_path || optind != argc)
		usage();
	if (samples < 1 || samples > 1 << 20)
		die("--samples must be 1 to 1048576");
	if (batch != 0 && (batch < 1 || batch > 1024))
		die("--batch must be 1 to 1024");
	if (window < 1 || window > 1 << 24)
		die("--window must be 1 to 16777216");
	if (no_teacher && narch == 0)
		die("--no-teacher leaves no model: name an --arch");
	/* the GPU decoder keeps its cache in bf16: --kv f32 means the CPU */
	if (kv_set && kv != DT_BF16 && device && !strcmp(device, "cuda"))
		die("--kv f32: the GPU decoder keeps its cache in bf16 (--device cpu)");
	int cuda = kv_set && kv != DT_BF16 ? device_is_cuda("cpu") : device_is_cuda(device);
	if (batch == 0)
		batch = cuda ? 32 : 8;

	/* the tasks and lengths */
	const RulerTask *tasks[MAX_TASKS];
	int ntask = 0;
	if (!strcmp(tasks_arg, "all")) {
		for (int i = 0; i < ruler_ntasks; i++)
			if (ruler_tasks[i].runnable)
				tasks[ntask++] = &ruler_tasks[i];
	} else {
		char *items[MAX_TASKS];
		int n = split_list(tasks_arg, items, MAX_TASKS, "--tasks");
		for (int i = 0; i < n; i++) {
			const RulerTask *t = ruler_task(items[i]);
			if (!t)
				die("--tasks: no RULER task '%s'", items[i]);
			if (!t->runnable)
				die("--tasks: %s needs a dataset that is not available here", items[i]);
			tasks[ntask++] = t;
		}
	}
	int lengths[MAX_LENGTHS], nlen;
	{
		char *items[MAX_LENGTHS];
		nlen = split_list(lengths_arg, items, MAX_LENGTHS, "--lengths");
		for (int i = 0; i < nlen; i++) {
			long long v = estrtocount(items[i], "--lengths");
			if (v < 256 || v > 1 << 22)
				die("--lengths: %lld is not within 256 to 4194304 tokens", v);
			lengths[i] = (int)v;
		}
	}

	/* inputs, all checked before any work */
	Model m;
	model_load(&m, model_path);
	Tokenizer *tok = tok_path ? tokenizer_load(tok_path) : tokenizer_for_model(model_path);
	EvalModel *models = callocCheck(MAX_MODELS, sizeof(EvalModel));
	int nmod = 0;
	if (!no_teacher)
		snprintf(models[nmod++].name, sizeof models[0].name, "teacher");
	for (int i = 0; i < narch; i++) {
		EvalModel *e = &models[nmod++];
		const char *base = strrchr(arch[i], '/') ? strrchr(arch[i], '/') + 1 : arch[i];
		snprintf(e->name, sizeof e->name, "%.*s", (int)(strlen(base) > 3 && !strcmp(base + strlen(base) - 3, ".h5")
		                                                     ? strlen(base) - 3 : strlen(base)), base);
		for (int j = 0; j < nmod - 1; j++)
			if (!strcmp(models[j].name, e->name))
				die("%s: a second model called '%s'", arch[i], e->name);
		e->arch = arch[i];
		hybrid_load(&e->hy, arch[i], &m, cand_dir, (int)window);
	}
	Docs docs = {0};
	if (nhay == 0) {
		if (!file_exists(DEFAULT_HAYSTACK))
			die("%s: the default essay haystack is missing; name one with --haystack", DEFAULT_HAYSTACK);
		haystack[nhay++] = DEFAULT_HAYSTACK;
	}
	for (int i = 0; i < nhay; i++)
		docs_read(&docs, haystack[i], "text", 0);
	char *essay = mallocCheck(docs.bytes + 2 * docs.n + 1);
	size_t essay_len = 0;
	for (size_t i = 0; i < docs.n; i++) {
		if (i)
			memcpy(essay + essay_len, "\n\n", 2), essay_len += 2;
		memcpy(essay + essay_len, docs.text[i], docs.len[i]);
		essay_len += docs.len[i];
	}
	essay[essay_len] = 0;
	int style = raw ? -1 : chat_style_for(&m, tok);
	/* no system prompt: RULER rewrites the whole template to the singular for
	 * one-value tasks, which would turn Qwen's default one into "You is Qwen" */
	char *templ = style >= 0 ? chat_prompt((ChatStyle)style, "", "{task_template}") : NULL;
	int32_t stop[GENERATE_MAX_STOP];
	int nstop = generate_stop_ids(&m, tok, stop);

	for (int i = 0; !strcmp(tasks_arg, "all") && i < ruler_ntasks; i++)
		if (!ruler_tasks[i].runnable)
			fprintf(stderr, "eval-ruler: %s: not run (its dataset is not available here)\n", ruler_tasks[i].name);
	fprintf(stderr, "eval-ruler: model %s: ", model_path);
	model_describe(&m, stderr);
	for (int i = 0; i < nmod; i++)
		if (models[i].arch) {
			fprintf(stderr, "eval-ruler: %s (%d fa): ", models[i].name, models[i].hy.n_fa);
			hybrid_describe(&models[i].hy, stderr);
		}
	fprintf(stderr, "eval-ruler: %d task%s x %d length%s x %lld samples, %d model%s, %s, batch %lld, kv %s\n", ntask,
	        ntask == 1 ? "" : "s", nlen, nlen == 1 ? "" : "s", samples, nmod, nmod == 1 ? "" : "s",
	        templ ? "chat template" : "no chat template", batch, kv == DT_BF16 ? "bf16" : "f32");
	if (cuda) {
#ifdef DASH_CUDA
		char name[256];
		cuda_device_name(0, name, sizeof name);
		fprintf(stderr, "eval-ruler: device cuda: %s\n", name);
#endif
	} else {
		model_unpack(&m); /* float32 weights: the CPU's fast path */
	}

	H5File *f = h5_create(out);
	h5_set_raw(f); /* small, and plain h5py reads it without hdf5plugin */
	h5_stamp(f, RULER_FORMAT, 1);
	h5_set_input(f, "teacher", model_path, m.fingerprint);
	h5_attr_set_i64(f, "/", "seed", seed), h5_attr_set_i64(f, "/", "samples", samples);
	h5_attr_set_str(f, "/", "kv", kv == DT_BF16 ? "bf16" : "f32");
	h5_attr_set_str(f, "/", "device", cuda ? "cuda" : "cpu");
	{
		char list[512] = "";
		for (int i = 0; i < nstop; i++)
			snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", i ? "," : "", stop[i]);
		h5_attr_set_str(f, "/", "stop_ids", list);
	}
	h5_attr_set_str(f, "/", "template", templ ? templ : "");
	{
		char list[4096] = "";
		for (int i = 0; i < nmod; i++)
			snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? "," : "", models[i].name);
		h5_attr_set_str(f, "/", "models", list);
		list[0] = 0;
		for (int i = 0; i < ntask; i++)
			snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? "," : "", tasks[i]->name);
		h5_attr_set_str(f, "/", "tasks", list);
		list[0] = 0;
		for (int i = 0; i < nlen; i++)
			snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", i ? "," : "", lengths[i]);
		h5_attr_set_str(f, "/", "lengths", list);
	}

	/* scores (lengths, tasks, models); each length's examples are made
	 * first, then every model answers all of them with one decoder */
	double *score = callocCheck((size_t)nlen * ntask * nmod, sizeof(double));
	double *gen_s = callocCheck((size_t)nmod, sizeof(double));     /* seconds decoding */
	long long *gen_n = callocCheck((size_t)nmod, sizeof(long long)); /* tokens generated */
	long long *pre_n = callocCheck((size_t)nmod, sizeof(long long)); /* prompt tokens */
	int n = (int)samples;
	TaskSet *ts = callocCheck((size_t)ntask, sizeof(TaskSet));
	char **pred = callocCheck((size_t)n, sizeof(char *));
	double *one = callocCheck((size_t)n, sizeof(double));
	IdVec *outs = callocCheck((size_t)batch, sizeof(IdVec));
	TokEncoder *enc = tok_encoder_new(tok);
	for (int li = 0; li < nlen; li++) {
		int cap = 0;
		for (int ti = 0; ti < ntask; ti++) {
			RulerOpts o = {.tok = tok, .max_seq_length = lengths[li], .seed = (uint64_t)seed,
			               .model_template = templ, .essay = essay, .essay_len = essay_len};
			taskset_make(&ts[ti], tasks[ti], &o, n, enc, f);
			cap = ts[ti].maxlen + tasks[ti]->tokens_to_generate > cap ? ts[ti].maxlen + tasks[ti]->tokens_to_generate
			                                                          : cap;
		}
		for (int mi = 0; mi < nmod; mi++) {
			EvalModel *e = &models[mi];
			Runner r;
			runner_init(&r, cuda, &m, e->arch ? &e->hy : NULL, (int)batch, cap, kv);
			for (int ti = 0; ti < ntask; ti++) {
				const RulerTask *task = tasks[ti];
				const TaskSet *t = &ts[ti];
				double t1 = now_seconds();
				long long gen = 0;
				Strings preds = {0};
				for (int b0 = 0; b0 < n; b0 += (int)batch) {
					int nb = n - b0 < batch ? n - b0 : (int)batch;
					for (int b = 0; b < nb; b++)
						outs[b].n = 0, pre_n[mi] += t->lens[b0 + b];
					runner_greedy(&r, nb, (const int32_t *const *)(t->ids + b0), t->lens + b0,
					              task->tokens_to_generate, stop, nstop, outs);
					for (int b = 0; b < nb; b++) {
						char *buf = NULL;
						size_t len = 0, bcap = 0;
						tokenizer_decode(tok, outs[b].v, outs[b].n, &buf, &len, &bcap);
						buf = reallocCheck(buf, len + 1);
						buf[len] = 0;
						pred[b0 + b] = ruler_postprocess(buf);
						strings_add(&preds, buf, len);
						free(buf);
						gen += (long long)outs[b].n;
					}
				}
				for (int i = 0; i < n; i++)
					one[i] = 100 * ruler_score_one(task->metric, pred[i], t->refs[i], t->nrefs[i]);
				double s = ruler_score(task->metric, (const char *const *)pred, (char *const *const *)t->refs,
				                       t->nrefs, n);
				score[((size_t)li * ntask + ti) * nmod + mi] = s;
				char name[512];
				snprintf(name, sizeof name, "/%d/%s/%s/predictions", lengths[li], task->name, e->name);
				strings_write(f, name, &preds);
				snprintf(name, sizeof name, "/%d/%s/%s/scores", lengths[li], task->name, e->name);
				int64_t dn = n;
				h5_write(f, name, DT_F64, 1, &dn, one);
				double dt = now_seconds() - t1;
				gen_s[mi] += dt, gen_n[mi] += gen;
				fprintf(stderr, "eval-ruler: %s at %d, %s: %.2f (%lld tokens generated in %.1f s)\n", task->name,
				        lengths[li], e->name, s, gen, dt);
				strings_free(&preds);
				for (int i = 0; i < n; i++)
					free(pred[i]), pred[i] = NULL;
			}
			runner_free(&r);
		}
		for (int ti = 0; ti < ntask; ti++)
			taskset_free(&ts[ti]);
	}
	for (int mi = 0; mi < nmod; mi++)
		fprintf(stderr, "eval-ruler: %s: %lld prompt tokens and %lld generated in %.1f s\n", models[mi].name,
		        pre_n[mi], gen_n[mi], gen_s[mi]);
	int64_t sd[3] = {nlen, ntask, nmod};
	h5_write(f, "/score", DT_F64, 3, sd, score);

	/* the table, one a length */
	for (int li = 0; li < nlen; li++) {
		printf("RULER %d\t", lengths[li]);
		for (int mi = 0; mi < nmod; mi++)
			printf("%s%s", models[mi].name, mi + 1 < nmod ? "\t" : "\n");
		for (int ti = 0; ti <= ntask + 1; ti++) {
			printf("%s\t", ti < ntask ? tasks[ti]->name : ti == ntask ? "average" : "decode_MiB");
			for (int mi = 0; mi < nmod; mi++) {
				double v = 0;
				if (ti < ntask)
					v = score[((size_t)li * ntask + ti) * nmod + mi];
				else if (ti == ntask)
					for (int k = 0; k < ntask; k++)
						v += score[((size_t)li * ntask + k) * nmod + mi] / ntask;
				else
					v = (double)decoder_state_bytes(&m, models[mi].arch ? &models[mi].hy : NULL, lengths[li], kv) /
					    (1 << 20);
				printf(ti <= ntask ? "%.2f%s" : "%.1f%s", v, mi + 1 < nmod ? "\t" : "\n");
			}
		}
	}
	fshut(stdout, "<stdout>");
	h5_close(f);

	tok_encoder_free(enc);
	for (int i = 0; i < nmod; i++)
		if (models[i].arch)
			hybrid_free(&models[i].hy);
	for (int b = 0; b < batch; b++)
		idvec_free(&outs[b]);
	free(outs), free(one), free(pred), free(ts), free(score), free(gen_s), free(gen_n), free(pre_n);
	free(models), free(essay), free(templ), free(tasks_arg), free(lengths_arg);
	docs_free(&docs);
	tokenizer_free(tok);
	model_free(&m);
	return 0;
}
