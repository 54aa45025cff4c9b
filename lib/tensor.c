/* tensor: element types, conversions and views. */
#include "tensor.h"

#include <math.h>
#include <stdio.h>

#include "util.h"

static const struct { const char *name; size_t size; int is_float; } dtypes[DT_COUNT] = {
	[DT_F32] = {"f32", 4, 1}, [DT_F16] = {"f16", 2, 1}, [DT_BF16] = {"bf16", 2, 1},
	[DT_F64] = {"f64", 8, 1}, [DT_I8] = {"i8", 1, 0}, [DT_U8] = {"u8", 1, 0},
	[DT_I32] = {"i32", 4, 0}, [DT_U32] = {"u32", 4, 0}, [DT_I64] = {"i64", 8, 0},
	[DT_U64] = {"u64", 8, 0},
};

size_t dtype_size(DType t)
{
	ASSERT(t >= 0 && t < DT_COUNT);
	return dtypes[t].size;
}

const char *dtype_name(DType t)
{
	ASSERT(t >= 0 && t < DT_COUNT);
	return dtypes[t].name;
}

int dtype_is_float(DType t)
{
	ASSERT(t >= 0 && t < DT_COUNT);
	return dtypes[t].is_float;
}

int64_t tensor_numel(const Tensor *t)
{
	int64_t n = 1;
	for (int i = 0; i < t->ndim; i++)
		n *= t->shape[i];
	return n;
}

const char *tensor_shape_str(const Tensor *t, char *buf, size_t n)
{
	size_t k = 0;
	k += (size_t)snprintf(buf + k, n - k, "[");
	for (int i = 0; i < t->ndim && k < n; i++)
		k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
	if (k < n)
		snprintf(buf + k, n - k, "]");
	return buf;
}

float f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h >> 15) << 31;
	int exp = (h >> 10) & 0x1f;
	uint32_t man = h & 0x3ff;
	float f;
	if (exp == 0) {
		f = ldexpf((float)man, -24); /* zero or subnormal */
		return sign ? -f : f;
	}
	uint32_t u;
	if (exp == 31)
		u = sign | 0x7f800000u | (man << 13);
	else
		u = sign | ((uint32_t)(exp - 15 + 127) << 23) | (man << 13);
	memcpy(&f, &u, 4);
	return f;
}

uint16_t f32_to_f16(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
	float a = fabsf(f);
	if (isnan(f))
		return sign | 0x7e00;
	if (a >= 65520.0f) /* rounds to infinity */
		return sign | 0x7c00;
	if (a < 6.103515625e-05f) { /* subnormal: units of 2^-24, nearest even */
		float q = a * 16777216.0f;
		return sign | (uint16_t)nearbyintf(q);
	}
	uint32_t ua = u & 0x7fffffffu;
	uint32_t exp = (ua >> 23) - 127 + 15;
	uint32_t man = ua & 0x7fffff;
	uint32_t h = (exp << 10) | (man >> 13);
	uint32_t rest = man & 0x1fff; /* round to nearest even */
	if (rest > 0x1000 || (rest == 0x1000 && (h & 1)))
		h++;
	return sign | (uint16_t)h;
}

void convert_to_f32(float *dst, const void *src, DType t, size_t n)
{
	const uint8_t *s = src;
	uint16_t h;
	switch (t) {
	case DT_F32:
		memcpy(dst, src, n * 4);
		break;
	case DT_BF16:
		for (size_t i = 0; i < n; i++) {
			memcpy(&h, s + 2 * i, 2);
			dst[i] = bf16_to_f32(h);
		}
		break;
	case DT_F16:
		for (size_t i = 0; i < n; i++) {
			memcpy(&h, s + 2 * i, 2);
			dst[i] = f16_to_f32(h);
		}
		break;
	case DT_F64:
		for (size_t i = 0; i < n; i++) {
			double d;
			memcpy(&d, s + 8 * i, 8);
			dst[i] = (float)d;
		}
		break;
	default:
		BUG("convert_to_f32 from %s", dtype_name(t));
	}
}
