/* hybrid: arch.h5 and the operators it names, on the CPU (hybrid.h) */
#include "hybrid.h"

#include <stdlib.h>
#include <string.h>

#include "cand.h"
#include "h5io.h"
#include "util.h"

const char *const arch_op_names[ARCH_NOPS] = {"fa", "gdn", "gla", "swa"};

void hybrid_op_load(LinearOp *lop, int op, const Model *m, int l, const char *dir, int window)
{
	if (op == ARCH_SWA) {
		lop_init_teacher(lop, LOP_SWA, m, l, 0);
		lop->window = window;
	} else if (op == ARCH_GDN || op == ARCH_GLA) {
		char path[4200];
		snprintf(path, sizeof path, "%s/L%02d.h5", dir, l);
		cand_read(lop, path, op == ARCH_GDN ? LOP_GDN : LOP_GLA, m, l);
	} else {
		BUG("hybrid_op_load: operator %d", op);
	}
}

void hybrid_load(Hybrid *h, const char *arch_path, const Model *m, const char *cand_dir, int window)
{
	memset(h, 0, sizeof *h);
	H5File *f = h5_open(arch_path);
	h5_expect_format(f, ARCH_FORMAT, 1, "make it with derive");
	char *names = h5_attr_get_str(f, "/", "op_names"), *fp = h5_attr_get_str(f, "/", "teacher_fingerprint");
	if (strcmp(names, "fa,gdn,gla,swa") != 0)
		die("%s: operators '%s', this tool knows fa,gdn,gla,swa", arch_path, names);
	if (fp[0] && strcmp(fp, m->fingerprint) != 0)
		die("%s: a hybrid of another teacher (fingerprint %s, this one %s)", arch_path, fp, m->fingerprint);
	int rank;
	int64_t dims[TENSOR_MAX_DIMS];
	h->ops = h5_read(f, "/ops", DT_I32, &rank, dims);
	if (rank != 1 || dims[0] != m->cfg.L)
		die("%s: /ops has %lld layers, the teacher %d", arch_path, (long long)dims[0], m->cfg.L);
	h->L = m->cfg.L;
	h->method = h5_attr_get_str(f, "/", "method");
	h->n_fa = (int)h5_attr_get_i64(f, "/", "n_fa");
	char *dir = cand_dir ? strdupCheck(cand_dir) : h5_attr_get_str(f, "/", "cand");
	h5_close(f);
	h->lop = callocCheck((size_t)h->L, sizeof *h->lop);
	for (int l = 0; l < h->L; l++) {
		int op = h->ops[l];
		if (op < 0 || op >= ARCH_NOPS)
			die("%s: layer %d has operator %d, not one of 0..%d", arch_path, l, op, ARCH_NOPS - 1);
		if ((op == ARCH_GDN || op == ARCH_GLA) && !dir[0])
			die("%s: layer %d is %s, and no candidate directory is known (-c)", arch_path, l, arch_op_names[op]);
		if (op != ARCH_FA)
			hybrid_op_load(&h->lop[l], op, m, l, dir, window);
	}
	free(names), free(fp), free(dir);
}

void hybrid_free(Hybrid *h)
{
	for (int l = 0; l < h->L; l++)
		if (h->lop[l].w)
			lop_free(&h->lop[l]);
	free(h->lop), free(h->ops), free(h->method);
	memset(h, 0, sizeof *h);
}

void hybrid_describe(const Hybrid *h, FILE *f)
{
	for (int k = 0, first = 1; k < ARCH_NOPS; k++) {
		int any = 0;
		for (int l = 0; l < h->L; l++)
			any |= h->ops[l] == k;
		if (!any)
			continue;
		fprintf(f, "%s%s:", first ? "" : " | ", arch_op_names[k]);
		first = 0;
		for (int l = 0; l < h->L; l++)
			if (h->ops[l] == k)
				fprintf(f, " %d", l);
	}
	fputc('\n', f);
}

void hybrid_hook(void *ctx, int l, const float *u, float *a, int B, int T)
{
	const Hybrid *h = ctx;
	if (h->ops[l] != ARCH_FA)
		lop_forward(&h->lop[l], a, u, B, T);
}
