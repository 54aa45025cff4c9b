/*
 * h5io: every HDF5 file the stages read and write goes through here.
 * H5LT-shaped: one call per dataset or attribute, by absolute name.
 *
 *   H5File *f = h5_create("logits.h5");           // writes logits.h5.tmp
 *   h5_stamp(f, "dash-logits", 1);                // format, version, tool, command
 *   h5_write(f, "/logits", DT_F32, 2, dims, buf); // chunked, zstd
 *   h5_close(f);                                  // renamed to logits.h5
 *
 * Invariants:
 * - A writer writes NAME.tmp and renames it to NAME in h5_close, so a killed
 *   or failed writer never leaves a file with the final name; die() and
 *   SIGINT/SIGTERM remove the .tmp.
 * - Datasets of 256 elements or more are chunked (about 1 MiB a chunk) and
 *   compressed with zstd through HDF5 filter 32015, which this library
 *   registers itself (unless h5_set_raw); h5py + hdf5plugin read the
 *   files as they are.
 * - bf16 is stored as a 16-bit HDF5 float with an 8-bit exponent (the layout
 *   HDF5 2.0 names bfloat16); f16 as IEEE half. Reads convert to the type
 *   asked for, so any float dataset reads as f32.
 * - Every failure dies with a message naming the file and the dataset
 *   ("missing dataset 'tokens.h5:/doc_offsets'"); HDF5's own error stack is
 *   printed only when DASH_H5_ERRORS=1 is set in the environment.
 * Names are absolute ("/logits", "/trajectory/alpha"); missing groups are
 * created on write.
 */
#ifndef DASH_H5IO_H
#define DASH_H5IO_H

#include <stdint.h>

#include "tensor.h"

#define H5IO_ZSTD_FILTER 32015

typedef struct H5File H5File;

H5File *h5_create(const char *path);
H5File *h5_open(const char *path); /* read-only */
void h5_close(H5File *f);          /* writers: close, then rename NAME.tmp to NAME */
const char *h5_path(const H5File *f);

/* ---------------------------------------------------------------------------
 * datasets */

/* h5_write creates dataset name with the given shape and type t and writes
 * buf (of type t, row-major). */
void h5_write(H5File *f, const char *name, DType t, int rank, const int64_t *dims, const void *buf);
/* h5_create_dataset makes an empty dataset to fill by h5_write_rows, for
 * outputs too large to hold at once. */
void h5_create_dataset(H5File *f, const char *name, DType t, int rank, const int64_t *dims);
void h5_write_rows(H5File *f, const char *name, DType t, int64_t row0, int64_t nrows, const void *buf);

/* h5_set_raw: the datasets f creates from now on are stored contiguous and
 * uncompressed, for files written and read once in a hurry (checkpoints of
 * gigabytes, where zstd's single thread would take most of the time) */
void h5_set_raw(H5File *f);
int h5_exists(H5File *f, const char *name);
/* h5_info dies if the dataset is missing; *stored may be NULL. Returns the rank. */
int h5_info(H5File *f, const char *name, int64_t dims[TENSOR_MAX_DIMS], DType *stored);
/* h5_read returns the whole dataset converted to t, malloc'd; rank and dims
 * may be NULL. */
void *h5_read(H5File *f, const char *name, DType t, int *rank, int64_t dims[TENSOR_MAX_DIMS]);
/* h5_read_rows reads rows [row0, row0 + nrows) along dim 0 into buf. */
void h5_read_rows(H5File *f, const char *name, DType t, int64_t row0, int64_t nrows, void *buf);
/* h5_is_compressed says whether the dataset's chunks go through zstd. */
int h5_is_compressed(H5File *f, const char *name);

/* ---------------------------------------------------------------------------
 * attributes, on the object obj ("/" or a dataset name) */

void h5_attr_set_str(H5File *f, const char *obj, const char *name, const char *v);
void h5_attr_set_i64(H5File *f, const char *obj, const char *name, int64_t v);
void h5_attr_set_f64(H5File *f, const char *obj, const char *name, double v);
int h5_attr_exists(H5File *f, const char *obj, const char *name);
char *h5_attr_get_str(H5File *f, const char *obj, const char *name); /* malloc'd */
int64_t h5_attr_get_i64(H5File *f, const char *obj, const char *name);
double h5_attr_get_f64(H5File *f, const char *obj, const char *name);

/* ---------------------------------------------------------------------------
 * provenance */

/* h5_stamp sets the root attributes format, version, tool, command,
 * dash_version and created (UTC, ISO 8601). */
void h5_stamp(H5File *f, const char *format, int version);
/* h5_expect_format dies unless the file has the given format and version;
 * hint, if not NULL, is printed as "---> HINT: ..." on the next line. */
void h5_expect_format(H5File *f, const char *format, int version, const char *hint);
/* h5_set_input records an input: attributes ROLE (its path) and
 * ROLE_fingerprint. */
void h5_set_input(H5File *f, const char *role, const char *path, const char *fingerprint);

/* ---------------------------------------------------------------------------
 * checkpoints of long stages: a file of the given format whose root holds
 * step, settings (a line of every setting a resumed run must share), the
 * teacher's path and fingerprint and the tokens' fingerprint; raw
 * datasets (h5_set_raw) */
H5File *h5_ckpt_create(const char *path, const char *format, int64_t step, const char *settings,
                       const char *teacher, const char *teacher_fp, const char *tokens_fp);
/* h5_ckpt_open opens the checkpoint at path and dies unless it belongs to
 * this run: its format, teacher and tokens fingerprints and settings;
 * returns the file and its step in *step */
H5File *h5_ckpt_open(const char *path, const char *format, const char *settings, const char *teacher_fp,
                     const char *tokens_fp, int64_t *step);
#endif
