/*
 * tensor: element types and non-owning tensor views.
 *
 * A Tensor points into memory owned elsewhere (a memory-mapped checkpoint, a
 * buffer of the caller's); it never frees. Row-major, shape[0] outermost.
 * bf16 and f16 are stored as uint16_t bit patterns; convert_to_f32 turns a
 * run of any floating type into float32, which is what the CPU reference
 * computes in.
 */
#ifndef DASH_TENSOR_H
#define DASH_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum {
	DT_F32, DT_F16, DT_BF16, DT_F64,
	DT_I8, DT_U8, DT_I32, DT_U32, DT_I64, DT_U64,
	/* GGUF block quantisations: a block of dtype_block(t) values takes
	 * dtype_block_bytes(t) bytes; rows are whole blocks */
	DT_Q4_0, DT_Q4_1, DT_Q5_0, DT_Q5_1, DT_Q8_0, DT_Q4_K, DT_Q5_K, DT_Q6_K,
	DT_COUNT
} DType;

/* dtype_size is the size of one element; not defined for quantised types */
size_t dtype_size(DType t);
const char *dtype_name(DType t); /* "f32", "bf16", "u64", "q4_k", ... */
int dtype_is_float(DType t);     /* quantised types are floats */
int dtype_is_quant(DType t);
int dtype_block(DType t);          /* values per block: 1, 32 or 256 */
size_t dtype_block_bytes(DType t); /* bytes per block */
/* dtype_row_bytes: bytes of n consecutive values; n a multiple of the block */
size_t dtype_row_bytes(DType t, int64_t n);

#define TENSOR_MAX_DIMS 4
typedef struct {
	DType dtype;
	int ndim;
	int64_t shape[TENSOR_MAX_DIMS];
	const void *data;
} Tensor;

int64_t tensor_numel(const Tensor *t);
/* tensor_shape_str writes "[2048, 151936]" into buf. */
const char *tensor_shape_str(const Tensor *t, char *buf, size_t n);

static inline float bf16_to_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

/* round to nearest even; NaN stays NaN */
static inline uint16_t f32_to_bf16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fffu + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

/* convert_to_f32 converts n elements of type t starting at src (any
 * alignment) to float32. t must be a floating type; for a quantised type src
 * starts a block and n is a multiple of the block. */
void convert_to_f32(float *dst, const void *src, DType t, size_t n);

#endif
