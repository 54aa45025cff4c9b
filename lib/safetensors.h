/*
 * safetensors: memory-mapped Hugging Face safetensors files, single or
 * sharded (model.safetensors.index.json).
 *
 * File layout: u64 little-endian header size N, N bytes of JSON
 *   {"name": {"dtype": "BF16", "shape": [V, C], "data_offsets": [b, e]}, ...}
 * then the data; a tensor's bytes are data[b, e). Opening checks the header
 * against the file (offsets inside the data, byte counts that match shape
 * and dtype) and dies naming the file, so later reads need no checks.
 * Tensors of dtypes we cannot compute with (F8, BOOL, ...) may sit in a file;
 * st_get refuses them by name.
 */
#ifndef DASH_SAFETENSORS_H
#define DASH_SAFETENSORS_H

#include "tensor.h"
#include "util.h"

typedef struct {
	char *name;
	int dtype;          /* a DType, or -1 for a type we do not compute with */
	char dtype_str[16]; /* as written in the file: "BF16" */
	int ndim;
	int64_t shape[TENSOR_MAX_DIMS];
	const uint8_t *data;
	size_t nbytes;
	int file; /* index into SafeTensors.files */
} StEntry;

typedef struct {
	Mapped *files;
	int nfiles;
	StEntry *entries; /* sorted by name */
	int n;
	char *source; /* what errors name: the single file or the index */
} SafeTensors;

/* st_open_dir opens dir/model.safetensors, or the shards listed in
 * dir/model.safetensors.index.json. */
void st_open_dir(SafeTensors *st, const char *dir);
/* st_open_file adds one .safetensors file. */
void st_open_file(SafeTensors *st, const char *path);
const StEntry *st_find(const SafeTensors *st, const char *name);
/* st_get returns a view of a tensor of a floating dtype, checking its shape
 * (ndim dims in shape[]); it dies naming the tensor and its file when the
 * tensor is missing, of another dtype class, or of another shape. */
Tensor st_get(const SafeTensors *st, const char *name, int ndim, const int64_t *shape);
void st_close(SafeTensors *st);

#endif
