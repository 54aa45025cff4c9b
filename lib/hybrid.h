/*
 * hybrid: a teacher whose layers each run the operator an arch.h5 (of
 * derive) gives them: fa, the teacher's own attention, or a candidate of
 * cand/Lxx.h5 (gdn, gla), or swa, the teacher's attention in a window.
 * CPU reference: hybrid_hook, handed to model_forward, replaces each
 * non-fa layer's attention output by its operator's.
 */
#ifndef DASH_HYBRID_H
#define DASH_HYBRID_H

#include "linear_op.h"
#include "model.h"

#define ARCH_FORMAT "dash-arch"

/* the operators of arch.h5's /ops, by index (its op_names attribute) */
enum { ARCH_FA, ARCH_GDN, ARCH_GLA, ARCH_SWA, ARCH_NOPS };
extern const char *const arch_op_names[ARCH_NOPS];

typedef struct {
	int L;
	int32_t *ops;  /* (L) ARCH_* */
	LinearOp *lop; /* (L) the operator of each non-fa layer */
	char *method;  /* derive's */
	int n_fa;
} Hybrid;

/* hybrid_load reads arch_path for teacher m (its fingerprint and layer
 * count must match) and each non-fa layer's operator: gdn and gla from
 * cand_dir (NULL: the directory the arch file names), swa from the
 * teacher with the given window. Dies naming the file on any mismatch. */
void hybrid_load(Hybrid *h, const char *arch_path, const Model *m, const char *cand_dir, int window);
void hybrid_free(Hybrid *h);
/* hybrid_op_load: layer l's operator op (gdn, gla: from dir/Lxx.h5; swa:
 * the teacher's attention with the window) into lop */
void hybrid_op_load(LinearOp *lop, int op, const Model *m, int l, const char *dir, int window);
/* hybrid_describe prints "fa: 0 8 | gdn: 1 2 ..." */
void hybrid_describe(const Hybrid *h, FILE *f);
/* the LayerHook: ctx is the Hybrid */
void hybrid_hook(void *ctx, int l, const float *u, float *a, int B, int T);

#endif
