/* eval-lm: a model's loss and perplexity on token ids, and its logits. */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"   // defines: device_is_cuda
#include "generate.h" // defines: generate_answer
#include "h5io.h"   // defines: h5_create, h5_write_rows, h5_close
#include "hybrid.h" // defines: Hybrid, hybrid_load, hybrid_hook
#include "loss.h"   // defines: vocab_loss_cpu
#include "model.h"  // defines: model_load, model_forward, model_logits
#include "supernet.h" // defines: Supernet, supernet_init_hybrid
#include "tokens.h" // defines: tokens_read, tokens_read_text
#include "util.h"   // defines: die, estrtocount, Progress
#ifdef DASH_CUDA
#include "gpu.h"       // defines: cuda_device_name
#include "gpu_model.h" // defines: gpu_model_new, gpu_model_bytes, gpu_model_forward
#include "gpu_supernet.h" // defines: gpu_supernet_new, gpu_supernet_eval
#endif

#define LOGITS_FORMAT "dash-logits"
#define ROWS 256 /* logits computed this many rows at a time */

static void usage(void)
{
	fprintf(stderr, "usage: eval-lm -m MODEL (--ids FILE | --tokens TOKENS.h5) [--seq T] [-n N]\n"
	                "               [--dump-logits OUT.h5] [--device cpu|cuda]\n"
	                "               [--arch ARCH.h5 [--cand DIR] [--window W]]\n"
	                "       eval-lm -m MODEL --generate PROMPT [--max-new N] [--raw] [--tokenizer FILE]\n"
	                "       eval-lm -m MODEL --info\n");
	exit(2);
}

/* eval_hybrid: the hybrid's KL to the teacher and both models' next-token
 * losses (sums: the KL, the hybrid's, the teacher's), summed over the
 * sequences of T of the n ids, each by the fused vocabulary loss over the
 * final hidden rows; on the GPU (cuda) by a GpuSupernet of the hybrid,
 * else by model_forward with hybrid_hook. Returns the rows predicted. */
static int64_t eval_hybrid(const Model *m, const Hybrid *hy, const int32_t *ids, int64_t n, int T, int cuda,
                           double sums[3])
{
	const ModelConfig *c = &m->cfg;
	int64_t nseq = (n + T - 1) / T, npred = 0;
	int32_t *tg = mallocCheck((size_t)T * sizeof(int32_t));
	float *th = NULL, *hidden = NULL;
#ifdef DASH_CUDA
	Supernet sn;
	GpuSupernet *gs = NULL;
	if (cuda) {
		char name[128];
		size_t mb, rb;
		cuda_device_name(0, name, sizeof name);
		supernet_init_hybrid(&sn, m, hy, T);
		gs = gpu_supernet_new(&sn, T);
		gpu_supernet_bytes(gs, &mb, &rb);
		fprintf(stderr, "eval-lm: device cuda: %s; teacher %.2f GiB, operators and buffers %.2f GiB\n", name,
		        (double)mb / (1 << 30), (double)rb / (1 << 30));
	}
#endif
	if (!cuda) {
		th = mallocCheck((size_t)T * c->C * sizeof(float));
		hidden = mallocCheck((size_t)T * c->C * sizeof(float));
	}
	Progress pr;
	progress_init(&pr, "tokens", n);
	for (int64_t s = 0; s < nseq; s++) {
		int64_t t0 = s * T;
		int len = (int)(n - t0 < T ? n - t0 : T);
		for (int t = 0; t < len; t++)
			tg[t] = t + 1 < len ? ids[t0 + t + 1] : -1;
#ifdef DASH_CUDA
		if (cuda) {
			double kl, nll, tnll;
			gpu_supernet_eval(gs, ids + t0, 1, len, sn.w, tg, &kl, &nll, &tnll);
			sums[0] += kl, sums[1] += nll, sums[2] += tnll;
		} else
#endif
		{
			model_forward(m, ids + t0, 1, len, th, NULL, NULL);
			model_forward(m, ids + t0, 1, len, hidden, hybrid_hook, (void *)hy);
			sums[0] += vocab_loss_cpu(NULL, NULL, hidden, th, NULL, &m->lm_head, len, c->C, c->V, 1);
			sums[1] += vocab_loss_cpu(NULL, NULL, hidden, NULL, tg, &m->lm_head, len, c->C, c->V, 1);
			sums[2] += vocab_loss_cpu(NULL, NULL, th, NULL, tg, &m->lm_head, len, c->C, c->V, 1);
		}
		npred += len - 1;
		progress_update(&pr, t0 + len);
	}
	progress_done(&pr, n);
#ifdef DASH_CUDA
	if (cuda)
		gpu_supernet_free(gs), supernet_free(&sn);
#endif
	free(tg), free(th), free(hidden);
	return npred;
}

int main(int argc, char **argv)
{
	const char *model_path = NULL, *ids_path = NULL, *tokens_path = NULL, *dump = NULL;
	const char *prompt = NULL, *tok_path = NULL, *device = NULL, *arch = NULL, *cand_dir = NULL;
	long long seq = 0, max = -1, max_new = 64, window = LOP_SWA_WINDOW;
	int raw = 0, info = 0;
	static const struct option opts[] = {
		{"model", required_argument, NULL, 'm'},
		{"ids", required_argument, NULL, 'i'},
		{"tokens", required_argument, NULL, 't'},
		{"seq", required_argument, NULL, 's'},
		{"max-tokens", required_argument, NULL, 'n'},
		{"dump-logits", required_argument, NULL, 'd'},
		{"generate", required_argument, NULL, 'g'},
		{"max-new", required_argument, NULL, 'M'},
		{"raw", no_argument, NULL, 'r'},
		{"info", no_argument, NULL, 'I'},
		{"tokenizer", required_argument, NULL, 'T'},
		{"device", required_argument, NULL, 'D'},
		{"arch", required_argument, NULL, 'A'},
		{"cand", required_argument, NULL, 'c'},
		{"window", required_argument, NULL, 'W'},
		{NULL, 0, NULL, 0},
	};
	util_init(argc, argv);
	int c;
	while ((c = getopt_long(argc, argv, "m:n:", opts, NULL)) != -1) {
		switch (c) {
		case 'm': model_path = optarg; break;
		case 'i': ids_path = optarg; break;
		case 't': tokens_path = optarg; break;
		case 's': seq = estrtocount(optarg, "--seq"); break;
		case 'n': max = estrtocount(optarg, "-n"); break;
		case 'd': dump = optarg; break;
		case 'g': prompt = optarg; break;
		case 'M': max_new = estrtocount(optarg, "--max-new"); break;
		case 'r': raw = 1; break;
		case 'I': info = 1; break;
		case 'T': tok_path = optarg; break;
		case 'D': device = optarg; break;
		case 'A': arch = optarg; break;
		case 'c': cand_dir = optarg; break;
		case 'W': window = estrtocount(optarg, "--window"); break;
		default: usage();
		}
	}
	if (optind != argc || !model_path || (!!ids_path + !!tokens_path + !!prompt + info) != 1)
		usage();
	if (info) {
		/* the model's shape, one "key value" a line, for scripts */
		Model m;
		model_load(&m, model_path);
		const ModelConfig *c = &m.cfg;
		printf("arch %s\nlayers %d\nwidth %d\nheads %d\nkv_heads %d\nhead_dim %d\nmlp %d\nvocab %d\n"
		       "fingerprint %s\n", c->arch == ARCH_QWEN2 ? "qwen2" : "llama", c->L, c->C, c->H, c->G, c->D, c->F,
		       c->V, m.fingerprint);
		fshut(stdout, "<stdout>");
		model_free(&m);
		return 0;
	}
	if (arch && (prompt || dump))
		die("--arch evaluates held-out tokens (--ids or --tokens), without --dump-logits so far");
	if (window < 1 || window > 1 << 24)
		die("--window must be 1 to 16777216");
	/* the backend: cuda when built with it and a GPU is there, unless
	 * told (and the model's head dim is one the GPU has, below) */
	int cuda = device_is_cuda(device);
	if (prompt) {
		if (max_new < 1 || max_new > 1 << 16)
			die("--max-new must be 1 to 65536");
		Model m;
		model_load(&m, model_path);
		generate_answer(&m, tok_path, prompt, (int)max_new, raw, stdout);
		fshut(stdout, "<stdout>");
		model_free(&m);
		return 0;
	}
	if ((seq < 0 || seq > 1 << 20) || (max == 0))
		die("--seq must be 1 to 1048576 and -n at least 1");

	/* inputs: all checked before any work or output */
	Model m;
	model_load(&m, model_path);
	if (cuda && !device && m.cfg.D != 64 && m.cfg.D != 128) {
		fprintf(stderr, "eval-lm: head dim %d: the GPU's attention has 64 and 128; running on the CPU\n", m.cfg.D);
		cuda = 0;
	}
	Hybrid hy = {0};
	if (arch)
		hybrid_load(&hy, arch, &m, cand_dir, (int)window);
	int64_t n;
	char tok_fp[17] = "";
	int32_t *ids;
	const char *src = ids_path ? ids_path : tokens_path;
	if (ids_path) {
		ids = tokens_read_text(ids_path, m.cfg.V, &n);
		if (max > 0 && max < n)
			n = max;
		tokens_fingerprint((const uint32_t *)ids, n, tok_fp);
	} else {
		ids = tokens_read(tokens_path, max, m.cfg.V, &n, tok_fp);
		if (seq == 0)
			seq = 1024;
	}
	if (n == 0)
		die("no token ids in '%s'", src);
	fprintf(stderr, "eval-lm: model %s: ", model_path);
	model_describe(&m, stderr);
	if (arch) {
		fprintf(stderr, "eval-lm: hybrid %s (%s, %d fa): ", arch, hy.method, hy.n_fa);
		hybrid_describe(&hy, stderr);
	}
	int T = seq > 0 && seq < n ? (int)seq : (int)n;
	int64_t nseq = (n + T - 1) / T;
	fprintf(stderr, "eval-lm: %lld tokens from %s, %lld sequence%s of up to %d\n", (long long)n, src,
	        (long long)nseq, nseq == 1 ? "" : "s", T);

	H5File *out = NULL;
	if (dump) {
		out = h5_create(dump);
		h5_stamp(out, LOGITS_FORMAT, 1);
		int64_t dims[2] = {n, m.cfg.V};
		h5_create_dataset(out, "/logits", DT_F32, 2, dims);
		h5_write(out, "/ids", DT_I32, 1, &n, ids);
		h5_set_input(out, "teacher", model_path, m.fingerprint);
		h5_set_input(out, "tokens", src, tok_fp);
		h5_attr_set_i64(out, "/", "seq", T);
		h5_attr_set_str(out, "/", "device", cuda ? "cuda" : "cpu");
	}

	if (arch) {
		double sums[3] = {0, 0, 0};
		int64_t npred = eval_hybrid(&m, &hy, ids, n, T, cuda, sums);
		if (!npred)
			die("%s: no next-token predictions in sequences of 1 token", src);
		printf("loss %.6f ppl %.4f kl %.6f teacher_loss %.6f tokens %lld\n", sums[1] / npred,
		       exp(sums[1] / npred), sums[0] / n, sums[2] / npred, (long long)npred);
		fshut(stdout, "<stdout>");
		hybrid_free(&hy), free(ids), model_free(&m);
		return 0;
	}

	/* each sequence: forward, then logits and the next-token loss by rows
	 * (on the GPU all of a sequence's logits come back at once) */
	int rows_per = cuda ? T : ROWS;
	float *hidden = mallocCheck((size_t)T * m.cfg.C * sizeof(float));
	float *logits = mallocCheck((size_t)rows_per * m.cfg.V * sizeof(float));
	double nll = 0;
	int64_t npred = 0;
#ifdef DASH_CUDA
	GpuModel *gm = NULL;
	if (cuda) {
		char name[128];
		size_t wb, ab;
		cuda_device_name(0, name, sizeof name);
		gm = gpu_model_new(&m, T, 0);
		gpu_model_bytes(gm, &wb, &ab);
		fprintf(stderr, "eval-lm: device cuda: %s; weights %.2f GiB, activations %.2f GiB\n", name,
		        (double)wb / (1 << 30), (double)ab / (1 << 30));
	}
#endif
	Progress pr;
	progress_init(&pr, "tokens", n);
	for (int64_t s = 0; s < nseq; s++) {
		int64_t t0 = s * T;
		int len = (int)(n - t0 < T ? n - t0 : T);
#ifdef DASH_CUDA
		if (cuda)
			gpu_model_forward(gm, ids + t0, 1, len, logits);
		else
#endif
			model_forward(&m, ids + t0, 1, len, hidden, NULL, NULL);
		for (int r0 = 0; r0 < len; r0 += rows_per) {
			int rows = len - r0 < rows_per ? len - r0 : rows_per;
			if (!cuda)
				model_logits(&m, hidden + (size_t)r0 * m.cfg.C, rows, logits);
			if (out)
				h5_write_rows(out, "/logits", DT_F32, t0 + r0, rows, logits);
			for (int r = 0; r < rows && r0 + r + 1 < len; r++) {
				const float *lr = logits + (size_t)r * m.cfg.V;
				double mx = -INFINITY, z = 0;
				for (int v = 0; v < m.cfg.V; v++)
					mx = lr[v] > mx ? lr[v] : mx;
				for (int v = 0; v < m.cfg.V; v++)
					z += exp(lr[v] - mx);
				nll += mx + log(z) - lr[ids[t0 + r0 + r + 1]];
				npred++;
			}
		}
		progress_update(&pr, t0 + len);
	}
#ifdef DASH_CUDA
	gpu_model_free(gm);
#endif
	progress_done(&pr, n);

	double loss = npred ? nll / (double)npred : NAN;
	if (out) {
		h5_attr_set_f64(out, "/", "loss", loss);
		h5_attr_set_i64(out, "/", "predicted", npred);
		h5_close(out);
	}
	if (npred)
		printf("loss %.6f ppl %.4f tokens %lld\n", loss, exp(loss), (long long)npred);
	else
		warn("no next-token predictions in sequences of 1 token; no loss to report");
	fshut(stdout, "<stdout>");
	free(hidden), free(logits), free(ids);
	model_free(&m);
	return 0;
}
