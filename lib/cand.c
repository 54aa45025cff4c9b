/*
 * cand: candidate files (the layout is in cand.h).
 */
#include "cand.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

void cand_write_op(H5File *f, const LinearOp *op, const float *curve, int64_t steps, const double nmse[4])
{
	char name[96], grp[16];
	snprintf(grp, sizeof grp, "/%s", lop_name(op->kind));
	for (int i = 0; i < op->np; i++) {
		const LopParam *p = &op->p[i];
		int64_t dims[2] = {p->rows, p->cols};
		snprintf(name, sizeof name, "%s/%s", grp, p->name);
		h5_write(f, name, DT_F32, p->cols == 1 ? 1 : 2, dims, op->w + p->off);
	}
	snprintf(name, sizeof name, "%s/loss_curve", grp);
	h5_write(f, name, DT_F32, 1, &steps, curve);
	h5_attr_set_i64(f, grp, "C", op->C), h5_attr_set_i64(f, grp, "H", op->H);
	h5_attr_set_i64(f, grp, "G", op->G), h5_attr_set_i64(f, grp, "D", op->D);
	h5_attr_set_i64(f, grp, "R", op->R);
	const char *keys[4] = {"nmse_train_before", "nmse_train_after", "nmse_heldout_before", "nmse_heldout_after"};
	for (int i = 0; i < 4; i++)
		h5_attr_set_f64(f, grp, keys[i], nmse[i]);
}

int cand_has_op(const char *path, int kind)
{
	H5File *f = h5_open(path);
	char grp[16];
	snprintf(grp, sizeof grp, "/%s", lop_name(kind));
	int has = h5_exists(f, grp);
	h5_close(f);
	return has;
}

void cand_read(LinearOp *op, const char *path, int kind, const Model *m, int l)
{
	const ModelConfig *c = &m->cfg;
	H5File *f = h5_open(path);
	h5_expect_format(f, CAND_FORMAT, 1, "make it again with distill-linear");
	char *fp = h5_attr_get_str(f, "/", "teacher_fingerprint");
	if (strcmp(fp, m->fingerprint) != 0)
		die("%s: candidates for another teacher (fingerprint %s, %s is %s): make them again with distill-linear",
		    path, fp, m->path, m->fingerprint);
	free(fp);
	int64_t L = h5_attr_get_i64(f, "/", "n_layers"), layer = h5_attr_get_i64(f, "/", "layer");
	if (L != c->L)
		die("%s: candidates for a teacher of %lld layers, this one has %d", path, (long long)L, c->L);
	if (layer != l)
		die("%s: candidates of layer %lld, not layer %d", path, (long long)layer, l);
	char grp[16], name[96];
	snprintf(grp, sizeof grp, "/%s", lop_name(kind));
	if (!h5_exists(f, grp))
		die("%s: no %s candidate in this file", path, lop_name(kind));
	lop_init(op, kind, c->C, c->H, c->G, c->D);
	for (int i = 0; i < op->np; i++) {
		const LopParam *p = &op->p[i];
		int rank;
		int64_t dims[TENSOR_MAX_DIMS];
		snprintf(name, sizeof name, "%s/%s", grp, p->name);
		float *x = h5_read(f, name, DT_F32, &rank, dims);
		if ((rank == 1 && (p->cols != 1 || dims[0] != p->rows)) ||
		    (rank == 2 && (dims[0] != p->rows || dims[1] != p->cols)) || rank > 2)
			die("%s: %s has the wrong shape for this teacher", path, name);
		memcpy(op->w + p->off, x, (size_t)p->rows * p->cols * sizeof(float));
		free(x);
	}
	h5_close(f);
}
