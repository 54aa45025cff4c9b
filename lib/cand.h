/*
 * cand: candidate files, cand/Lxx.h5, one per teacher layer (format
 * "dash-cand" version 1), written by distill-linear and read by every later
 * stage. Root attributes: layer, n_layers, the teacher's path and
 * fingerprint (and the training tokens'), seed, seq, batch, steps, tokens
 * seen, the optimizer's settings. A group per operator (/gdn, /gla):
 *   /OP/NAME          every parameter block of the LinearOp (rows, cols) f32
 *   /OP/loss_curve    the training NMSE of every step (f32)
 *   attributes C, H, G, D, R and nmse_train_before, nmse_train_after,
 *   nmse_heldout_before, nmse_heldout_after
 */
#ifndef DASH_CAND_H
#define DASH_CAND_H

#include "h5io.h"
#include "linear_op.h"
#include "model.h"

#define CAND_FORMAT "dash-cand"

/* cand_write_op stores op (and its curve and NMSEs) as group /NAME */
void cand_write_op(H5File *f, const LinearOp *op, const float *curve, int64_t steps, const double nmse[4]);

/* cand_has_op: whether the file at path holds an operator of that kind */
int cand_has_op(const char *path, int kind);

/* cand_read loads operator kind of layer l from path into op, checking that
 * the file was made for this teacher (fingerprint), this layer and this
 * layer count; dies naming the file otherwise */
void cand_read(LinearOp *op, const char *path, int kind, const Model *m, int l);

#endif
