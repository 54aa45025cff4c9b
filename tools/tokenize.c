/* tokenize: text to token ids with a Hugging Face tokenizer.json, into
 * tokens.h5, or ids on stdout; --decode turns ids back into text. */
#include <getopt.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "textio.h"    // defines: docs_read, read_maybe_zst
#include "tokenizer.h" // defines: tokenizer_load, tokenizer_encode, tokenizer_decode
#include "tokens.h"    // defines: tokens_write
#include "util.h"      // defines: die, estrtoll, Progress

#define PIECE (64 << 10) /* documents are cut into pieces of about this many bytes */

static void usage(void)
{
	fprintf(stderr, "usage: tokenize -t TOKENIZER [-o tokens.h5 | --ids | --decode] [--jsonl] [--field NAME]\n"
	                "                [--eos TOKEN] [-j N] [FILE...]\n");
	exit(2);
}

typedef struct {
	size_t doc, off, len;
	IdVec ids;
} Work;

static void decode(const Tokenizer *t, char **files, int nfiles)
{
	const char *stdin_only[] = {"-"};
	char *out = NULL;
	size_t len = 0, cap = 0;
	if (nfiles == 0)
		files = (char **)stdin_only, nfiles = 1;
	for (int f = 0; f < nfiles; f++) {
		int64_t n;
		int32_t *ids = tokens_read_text(files[f], tokenizer_size(t), &n);
		long bad = tokenizer_decode(t, ids, (size_t)n, &out, &len, &cap);
		if (bad >= 0)
			die("token id %d has no text in '%s'", ids[bad], tokenizer_path(t));
		fwrite(out, 1, len, stdout);
		len = 0;
		free(ids);
	}
	free(out);
	fshut(stdout, "<stdout>");
}

int main(int argc, char **argv)
{
	const char *tok_path = NULL, *out = NULL, *field = "text", *eos_name = NULL;
	int ids_mode = 0, decode_mode = 0, force_jsonl = 0, threads = 0, c;
	static const struct option opts[] = {
		{"tokenizer", required_argument, NULL, 't'}, {"output", required_argument, NULL, 'o'},
		{"ids", no_argument, NULL, 'I'}, {"decode", no_argument, NULL, 'D'},
		{"jsonl", no_argument, NULL, 'J'}, {"field", required_argument, NULL, 'F'},
		{"eos", required_argument, NULL, 'E'}, {"threads", required_argument, NULL, 'j'},
		{NULL, 0, NULL, 0},
	};
	util_init(argc, argv);
	while ((c = getopt_long(argc, argv, "t:o:j:", opts, NULL)) != -1) {
		switch (c) {
		case 't': tok_path = optarg; break;
		case 'o': out = optarg; break;
		case 'I': ids_mode = 1; break;
		case 'D': decode_mode = 1; break;
		case 'J': force_jsonl = 1; break;
		case 'F': field = optarg; break;
		case 'E': eos_name = optarg; break;
		case 'j': threads = (int)estrtoll(optarg, "-j"); break;
		default: usage();
		}
	}
	if (!tok_path || (out != NULL) + ids_mode + decode_mode > 1)
		usage();
	if (threads < 0 || threads > 1024)
		die("-j: not a thread count: %d", threads);
	if (threads)
		omp_set_num_threads(threads);
	if (!out && !ids_mode && !decode_mode)
		out = "tokens.h5";
	char **files = argv + optind;
	int nfiles = argc - optind;

	Tokenizer *t = tokenizer_load(tok_path);
	if (decode_mode) {
		decode(t, files, nfiles);
		tokenizer_free(t);
		return 0;
	}
	int eos = eos_name ? tokenizer_token_id(t, eos_name) : tokenizer_default_eos(t);
	if (eos < 0 && eos_name)
		die("no token '%s' in '%s'", eos_name, tok_path);
	if (eos < 0)
		die("'%s' has no end-of-text token; name one with --eos", tok_path);

	/* read everything first: a bad input fails before any output */
	Docs d = {0};
	size_t srclen = 1;
	if (nfiles == 0)
		docs_read(&d, "-", field, force_jsonl);
	for (int f = 0; f < nfiles; f++) {
		docs_read(&d, files[f], field, force_jsonl);
		srclen += strlen(files[f]) + 1;
	}
	char *sources = callocCheck(srclen + 8, 1);
	for (int f = 0; f < nfiles; f++)
		strcat(strcat(sources, f ? " " : ""), files[f]);
	if (nfiles == 0)
		strcpy(sources, "<stdin>");

	/* cut documents into pieces that encode independently */
	size_t nw = 0, wcap = d.n + d.bytes / PIECE + 16;
	Work *w = callocCheck(wcap, sizeof *w);
	size_t *cuts = mallocCheck((d.bytes / PIECE + 2) * sizeof *cuts);
	for (size_t i = 0; i < d.n; i++) {
		size_t nc = tokenizer_split_points(t, d.text[i], d.len[i], PIECE, cuts, d.len[i] / PIECE + 1);
		size_t a = 0;
		for (size_t k = 0; k <= nc; k++) {
			size_t b = k < nc ? cuts[k] : d.len[i];
			if (nw == wcap)
				w = reallocCheck(w, (wcap *= 2) * sizeof *w);
			w[nw++] = (Work){i, a, b - a, {0}};
			a = b;
		}
	}
	free(cuts);

	Progress pr;
	progress_init(&pr, "bytes", (long long)d.bytes);
	long long done = 0;
	double t0 = now_seconds();
	#pragma omp parallel
	{
		TokEncoder *e = tok_encoder_new(t);
		#pragma omp for schedule(dynamic, 1)
		for (size_t i = 0; i < nw; i++) {
			tokenizer_encode(e, d.text[w[i].doc] + w[i].off, w[i].len, 0, &w[i].ids);
			#pragma omp atomic
			done += (long long)w[i].len;
			if (omp_get_thread_num() == 0 && d.bytes > (32u << 20))
				progress_update(&pr, done);
		}
		tok_encoder_free(e);
	}
	double secs = now_seconds() - t0;

	/* assemble: per document the template's prefix, its pieces, the
	 * template's suffix; then EOS after each (tokens.h5) or between them (--ids) */
	IdVec all = {0};
	uint64_t *offs = mallocCheck((d.n + 1) * sizeof *offs);
	const int32_t *prefix, *suffix;
	int np, ns;
	tokenizer_template(t, &prefix, &np, &suffix, &ns);
	for (size_t i = 0, k = 0; i < d.n; i++) {
		if (ids_mode && i > 0)
			idvec_push(&all, eos);
		offs[i] = all.n;
		for (int j = 0; j < np; j++)
			idvec_push(&all, prefix[j]);
		for (; k < nw && w[k].doc == i; k++) {
			for (size_t j = 0; j < w[k].ids.n; j++)
				idvec_push(&all, w[k].ids.v[j]);
			idvec_free(&w[k].ids);
		}
		for (int j = 0; j < ns; j++)
			idvec_push(&all, suffix[j]);
		if (!ids_mode)
			idvec_push(&all, eos);
	}
	offs[d.n] = all.n;
	fprintf(stderr, "tokenize: %zu documents, %zu bytes, %zu tokens in %.2fs (%.1f MB/s)\n", d.n, d.bytes,
	        all.n, secs, secs > 0 ? (double)d.bytes / secs / 1e6 : 0);
	if (ids_mode) {
		for (size_t i = 0; i < all.n; i++)
			printf("%d\n", all.v[i]);
		fshut(stdout, "<stdout>");
	} else {
		TokensMeta meta = {tok_path, tokenizer_fingerprint(t), eos, sources};
		tokens_write(out, (const uint32_t *)all.v, (int64_t)all.n, offs, (int64_t)d.n, &meta);
	}
	idvec_free(&all);
	free(offs), free(w), free(sources);
	docs_free(&d);
	tokenizer_free(t);
	return 0;
}
