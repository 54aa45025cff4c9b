/* plot-search: one SVG of a search and the layouts derived from it, for
 * people who would rather look than read. Left, a heatmap: per layer (rows)
 * the fa weight over the search's steps (columns), computed from the
 * trajectory of alpha that search-logits keeps, at each step's temperature
 * and without Gumbel noise (gumbel-topk's and budget-dist's soft form);
 * under it the KL to the teacher per step. Right, one column per arch.h5 of
 * derive: each layer's operator. No plotting library: the SVG is written
 * by hand. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5io.h"     // defines: h5_open, h5_read, h5_attr_get_str
#include "hybrid.h"   // defines: ARCH_FORMAT, ARCH_NOPS, arch_op_names
#include "supernet.h" // defines: Relax, relax_weights, relax_kind
#include "util.h"     // defines: die, fopen_check, tmp_register

#define LOGITS_FORMAT "dash-logits"
#define MAX_COLS 240 /* heatmap columns: steps are averaged into at most this many */

/* colours of the operators, by ARCH_* (fa, gdn, gla, swa) */
static const char *const op_colour[ARCH_NOPS] = {"#08306b", "#31a354", "#756bb1", "#fd8d3c"};

static void usage(void)
{
	fprintf(stderr, "usage: plot-search [-o OUT.svg] [-t TITLE] LOGITS.h5 [ARCH.h5 ...]\n");
	exit(2);
}

/* a sequential blue scale: 0 light, 1 dark */
static void blue(double x, char out[8])
{
	static const int stop[5][3] = {{247, 251, 255}, {198, 219, 239}, {107, 174, 214}, {33, 113, 181}, {8, 48, 107}};
	x = x < 0 ? 0 : x > 1 ? 1 : x;
	double s = x * 4;
	int i = s >= 4 ? 3 : (int)s;
	double f = s - i;
	int c[3];
	for (int j = 0; j < 3; j++)
		c[j] = (int)lround(stop[i][j] + f * (stop[i + 1][j] - stop[i][j]));
	snprintf(out, 8, "#%02x%02x%02x", c[0], c[1], c[2]);
}

typedef struct {
	int L, K, nfa, steps;
	float *traj;   /* (steps, L, K) alpha after each step */
	double *tau;   /* (steps) */
	double *kl;    /* (steps) */
	char *relax, *ops;
} Search;

static void read_search(Search *s, const char *path)
{
	H5File *f = h5_open(path);
	h5_expect_format(f, LOGITS_FORMAT, 1, "make it with search-logits");
	int rank;
	int64_t dims[TENSOR_MAX_DIMS];
	s->traj = h5_read(f, "/trajectory/alpha", DT_F32, &rank, dims);
	if (rank != 3 || dims[0] < 1 || dims[1] < 1 || dims[2] < 1)
		die("%s: /trajectory/alpha is not (steps, layers, ops)", path);
	s->steps = (int)dims[0], s->L = (int)dims[1], s->K = (int)dims[2];
	s->tau = h5_read(f, "/trajectory/tau", DT_F64, &rank, dims);
	if (rank != 1 || dims[0] != s->steps)
		die("%s: /trajectory/tau is not one value a step", path);
	s->kl = h5_read(f, "/trajectory/kl", DT_F64, &rank, dims);
	if (rank != 1 || dims[0] != s->steps)
		die("%s: /trajectory/kl is not one value a step", path);
	s->relax = h5_attr_get_str(f, "/", "relax");
	s->ops = h5_attr_get_str(f, "/", "ops");
	s->nfa = (int)h5_attr_get_i64(f, "/", "n_fa");
	if (relax_kind(s->relax) < 0)
		die("%s: unknown relaxation '%s'", path, s->relax);
	h5_close(f);
}

/* the heatmap's values: (L, ncol) fa weights, steps averaged per column */
static double *fa_weights(const Search *s, int ncol)
{
	Relax rx;
	relax_init(&rx, relax_kind(s->relax), s->L, s->K, s->nfa);
	float *w = mallocCheck((size_t)s->L * s->K * sizeof(float));
	double *h = callocCheck((size_t)s->L * ncol, sizeof(double));
	int *n = callocCheck((size_t)ncol, sizeof(int));
	for (int t = 0; t < s->steps; t++) {
		int c = (int)((long long)t * ncol / s->steps);
		rx.tau = s->tau[t];
		relax_weights(&rx, s->traj + (size_t)t * s->L * s->K, NULL, w);
		for (int l = 0; l < s->L; l++)
			h[(size_t)l * ncol + c] += rx.kind == RELAX_SOFTMAX ? w[(size_t)l * s->K] : rx.p[l];
		n[c]++;
	}
	for (int l = 0; l < s->L; l++)
		for (int c = 0; c < ncol; c++)
			h[(size_t)l * ncol + c] /= n[c] ? n[c] : 1;
	free(w), free(n);
	relax_free(&rx);
	return h;
}

typedef struct {
	int32_t *ops; /* (L) ARCH_* */
	char *label;  /* "dash 3 fa" */
} Layout;

static void read_layout(Layout *a, const char *path, int L)
{
	H5File *f = h5_open(path);
	h5_expect_format(f, ARCH_FORMAT, 1, "make it with derive");
	int rank;
	int64_t dims[TENSOR_MAX_DIMS];
	a->ops = h5_read(f, "/ops", DT_I32, &rank, dims);
	if (rank != 1 || dims[0] != L)
		die("%s: /ops has not one operator for each of the search's %d layers", path, L);
	for (int l = 0; l < L; l++)
		if (a->ops[l] < 0 || a->ops[l] >= ARCH_NOPS)
			die("%s: layer %d has no known operator (%d)", path, l, a->ops[l]);
	char *method = h5_attr_get_str(f, "/", "method");
	size_t n = strlen(method) + 32;
	a->label = mallocCheck(n);
	snprintf(a->label, n, "%s %lld", method, (long long)h5_attr_get_i64(f, "/", "n_fa"));
	free(method);
	h5_close(f);
}

/* text with the five characters XML reserves escaped */
static void xml_text(FILE *o, const char *s)
{
	for (; *s; s++)
		switch (*s) {
		case '<': fputs("&lt;", o); break;
		case '>': fputs("&gt;", o); break;
		case '&': fputs("&amp;", o); break;
		case '"': fputs("&quot;", o); break;
		case '\'': fputs("&apos;", o); break;
		default: fputc(*s, o);
		}
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	const char *out = "search.svg", *title = NULL;
	static const struct option lo[] = {{"output", required_argument, NULL, 'o'},
	                                   {"title", required_argument, NULL, 't'},
	                                   {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
	int c;
	while ((c = getopt_long(argc, argv, "o:t:h", lo, NULL)) != -1)
		switch (c) {
		case 'o': out = optarg; break;
		case 't': title = optarg; break;
		default: usage();
		}
	if (optind >= argc)
		usage();

	Search s;
	read_search(&s, argv[optind]);
	int na = argc - optind - 1;
	Layout *lay = callocCheck((size_t)(na > 0 ? na : 1), sizeof(Layout));
	for (int i = 0; i < na; i++)
		read_layout(&lay[i], argv[optind + 1 + i], s.L);
	int ncol = s.steps < MAX_COLS ? s.steps : MAX_COLS;
	double *h = fa_weights(&s, ncol);

	/* geometry: the heatmap at (x0, y0), cells cw x ch; the KL under it;
	 * the layouts right of the colour bar */
	double ch = 540.0 / s.L;
	ch = ch > 18 ? (s.L * 18 < 120 ? 120.0 / s.L : 18) : ch < 6 ? 6 : ch;
	double cw = 480.0 / ncol, x0 = 56, y0 = na > 0 ? 120 : 64, hw = cw * ncol, hh = ch * s.L;
	double ky = y0 + hh + 44, kh = 90;
	double bx = x0 + hw + 14, lx = bx + 70, lw = 30, lgap = 8;
	double width = lx + (na > 0 ? na * (lw + lgap) : 0) + 40, height = ky + kh + 60;
	if (na > 0 && width < lx + 260)
		width = lx + 260;

	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s.tmp", out);
	FILE *o = fopenCheck(tmp, "w");
	tmp_register(tmp);
	fprintf(o, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
	        "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"11\">\n", width, height);
	fprintf(o, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
	fprintf(o, "<text x=\"%.0f\" y=\"22\" font-size=\"14\" font-weight=\"bold\">", x0);
	xml_text(o, title ? title : "DASH search: the fa weight of every layer");
	fprintf(o, "</text>\n<text x=\"%.0f\" y=\"40\" fill=\"#555\">%d layers, ops ", x0, s.L);
	xml_text(o, s.ops);
	fprintf(o, ", budget %d fa, relax ", s.nfa);
	xml_text(o, s.relax);
	fprintf(o, ", %d steps, tau %g to %g</text>\n", s.steps, s.tau[0], s.tau[s.steps - 1]);

	/* heatmap */
	fprintf(o, "<g shape-rendering=\"crispEdges\">\n");
	for (int l = 0; l < s.L; l++)
		for (int k = 0, k1; k < ncol; k = k1) { /* a run of cells of one colour, one rect */
			char col[8], next[8];
			blue(h[(size_t)l * ncol + k], col);
			for (k1 = k + 1; k1 < ncol; k1++) {
				blue(h[(size_t)l * ncol + k1], next);
				if (strcmp(next, col))
					break;
			}
			fprintf(o, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\"/>\n", x0 + k * cw,
			        y0 + l * ch, (k1 - k) * cw + 0.05, ch + 0.05, col);
		}
	fprintf(o, "</g>\n<rect x=\"%.0f\" y=\"%.0f\" width=\"%.2f\" height=\"%.2f\" fill=\"none\" stroke=\"#333\"/>\n",
	        x0, y0, hw, hh);
	int every = s.L > 40 ? 8 : s.L > 16 ? 4 : 1;
	for (int l = 0; l < s.L; l += every)
		fprintf(o, "<text x=\"%.0f\" y=\"%.2f\" text-anchor=\"end\" dominant-baseline=\"middle\">%d</text>\n",
		        x0 - 6, y0 + (l + 0.5) * ch, l);
	fprintf(o, "<text transform=\"translate(16 %.0f) rotate(-90)\" text-anchor=\"middle\">layer</text>\n",
	        y0 + hh / 2);
	for (int i = 0; i <= 4; i++)
		fprintf(o, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%lld</text>\n", x0 + hw * i / 4,
		        y0 + hh + 14, (long long)s.steps * i / 4);
	fprintf(o, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">step</text>\n", x0 + hw / 2, y0 + hh + 28);

	/* colour bar */
	for (int i = 0; i < 50; i++) {
		char col[8];
		blue(1 - i / 49.0, col);
		fprintf(o, "<rect x=\"%.0f\" y=\"%.2f\" width=\"12\" height=\"%.2f\" fill=\"%s\"/>\n", bx,
		        y0 + i * hh / 50, hh / 50 + 0.05, col);
	}
	fprintf(o, "<rect x=\"%.0f\" y=\"%.0f\" width=\"12\" height=\"%.2f\" fill=\"none\" stroke=\"#333\"/>\n", bx, y0,
	        hh);
	fprintf(o, "<text x=\"%.0f\" y=\"%.0f\" dominant-baseline=\"middle\">1</text>\n", bx + 16, y0 + 4);
	fprintf(o, "<text x=\"%.0f\" y=\"%.0f\" dominant-baseline=\"middle\">0</text>\n", bx + 16, y0 + hh - 4);
	fprintf(o, "<text transform=\"translate(%.0f %.0f) rotate(-90)\" text-anchor=\"middle\">fa weight</text>\n",
	        bx + 40, y0 + hh / 2);

	/* the KL per step */
	double kmin = INFINITY, kmax = -INFINITY;
	for (int t = 0; t < s.steps; t++)
		if (isfinite(s.kl[t]))
			kmin = fmin(kmin, s.kl[t]), kmax = fmax(kmax, s.kl[t]);
	if (!isfinite(kmin))
		kmin = 0, kmax = 1;
	if (kmax <= kmin)
		kmax = kmin + 1e-9;
	fprintf(o, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.2f\" height=\"%.0f\" fill=\"none\" stroke=\"#333\"/>\n", x0, ky,
	        hw, kh);
	fprintf(o, "<polyline fill=\"none\" stroke=\"#c0392b\" stroke-width=\"1.2\" points=\"");
	for (int t = 0; t < s.steps; t++)
		if (isfinite(s.kl[t]))
			fprintf(o, "%.1f,%.1f ", x0 + hw * (t + 0.5) / s.steps, ky + kh - kh * (s.kl[t] - kmin) / (kmax - kmin));
	fprintf(o, "\"/>\n");
	fprintf(o, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">%.3g</text>\n", x0 - 6, ky + 8, kmax);
	fprintf(o, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">%.3g</text>\n", x0 - 6, ky + kh, kmin);
	fprintf(o, "<text x=\"%.0f\" y=\"%.0f\">KL(teacher || supernet) per step</text>\n", x0 + 4, ky - 6);

	/* the layouts */
	if (na > 0) {
		fprintf(o, "<text x=\"%.0f\" y=\"%.0f\" font-weight=\"bold\">layouts</text>\n", lx, 62.0);
		for (int i = 0; i < na; i++) {
			double x = lx + i * (lw + lgap);
			fprintf(o, "<text transform=\"translate(%.1f %.0f) rotate(-40)\">", x + 4, y0 - 6);
			xml_text(o, lay[i].label);
			fprintf(o, "</text>\n<g shape-rendering=\"crispEdges\">\n");
			for (int l = 0; l < s.L; l++)
				fprintf(o, "<rect x=\"%.1f\" y=\"%.2f\" width=\"%.0f\" height=\"%.2f\" fill=\"%s\" stroke=\"white\" "
				        "stroke-width=\"0.5\"><title>layer %d: %s</title></rect>\n", x, y0 + l * ch, lw, ch,
				        op_colour[lay[i].ops[l]], l, arch_op_names[lay[i].ops[l]]);
			fprintf(o, "</g>\n");
		}
		for (int k = 0; k < ARCH_NOPS; k++) {
			double x = lx + k * 62, y = y0 + hh + 12;
			fprintf(o, "<rect x=\"%.0f\" y=\"%.0f\" width=\"12\" height=\"12\" fill=\"%s\"/>\n", x, y, op_colour[k]);
			fprintf(o, "<text x=\"%.0f\" y=\"%.0f\">%s</text>\n", x + 16, y + 10, arch_op_names[k]);
		}
	}
	fprintf(o, "</svg>\n");
	fshut(o, tmp);
	if (rename(tmp, out) != 0)
		die("cannot rename '%s' to '%s': %s", tmp, out, strerror(errno));
	tmp_unregister(tmp);
	fprintf(stderr, "plot-search: %s: %d layers x %d steps, %d layout%s\n", out, s.L, s.steps, na,
	        na == 1 ? "" : "s");

	for (int i = 0; i < na; i++)
		free(lay[i].ops), free(lay[i].label);
	free(lay), free(h), free(s.traj), free(s.tau), free(s.kl), free(s.relax), free(s.ops);
	return 0;
}
