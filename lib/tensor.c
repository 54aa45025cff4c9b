/* tensor: element types, conversions and views. */
#include "tensor.h"

#include <math.h>
#include <stdio.h>

#include "util.h"

/* size: bytes per block; block: values per block */
static const struct { const char *name; size_t size; int is_float; int block; } dtypes[DT_COUNT] = {
	[DT_F32] = {"f32", 4, 1, 1}, [DT_F16] = {"f16", 2, 1, 1}, [DT_BF16] = {"bf16", 2, 1, 1},
	[DT_F64] = {"f64", 8, 1, 1}, [DT_I8] = {"i8", 1, 0, 1}, [DT_U8] = {"u8", 1, 0, 1},
	[DT_I32] = {"i32", 4, 0, 1}, [DT_U32] = {"u32", 4, 0, 1}, [DT_I64] = {"i64", 8, 0, 1},
	[DT_U64] = {"u64", 8, 0, 1},
	[DT_Q4_0] = {"q4_0", 18, 1, 32}, [DT_Q4_1] = {"q4_1", 20, 1, 32},
	[DT_Q5_0] = {"q5_0", 22, 1, 32}, [DT_Q5_1] = {"q5_1", 24, 1, 32},
	[DT_Q8_0] = {"q8_0", 34, 1, 32}, [DT_Q4_K] = {"q4_k", 144, 1, 256},
	[DT_Q5_K] = {"q5_k", 176, 1, 256}, [DT_Q6_K] = {"q6_k", 210, 1, 256},
};

size_t dtype_size(DType t)
{
	ASSERT(t >= 0 && t < DT_COUNT && dtypes[t].block == 1);
	return dtypes[t].size;
}

int dtype_is_quant(DType t)
{
	ASSERT(t >= 0 && t < DT_COUNT);
	return dtypes[t].block > 1;
}

int dtype_block(DType t)
{
	ASSERT(t >= 0 && t < DT_COUNT);
	return dtypes[t].block;
}

size_t dtype_block_bytes(DType t)
{
	ASSERT(t >= 0 && t < DT_COUNT);
	return dtypes[t].size;
}

size_t dtype_row_bytes(DType t, int64_t n)
{
	ASSERT(n % dtype_block(t) == 0);
	return (size_t)(n / dtype_block(t)) * dtypes[t].size;
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

// ----------------------------------------------------------------------------
// GGUF block dequantisation. Each block starts with its scale(s) as f16
// (K-quants: a super-block of 256 values in 8 or 16 sub-blocks with their own
// 6- or 8-bit scales). Written from the format's definition: value =
// d * q (+ m, or - dmin * m for the K-quants).

static float rd16(const uint8_t *p)
{
	return f16_to_f32((uint16_t)(p[0] | p[1] << 8));
}

/* Q4_0: d; 16 bytes of nibbles, low nibbles the first 16 values */
static void deq_q4_0(float *y, const uint8_t *b)
{
	float d = rd16(b);
	for (int j = 0; j < 16; j++) {
		y[j] = d * (float)((b[2 + j] & 15) - 8);
		y[j + 16] = d * (float)((b[2 + j] >> 4) - 8);
	}
}

/* Q4_1: d, m; nibbles, value = d q + m */
static void deq_q4_1(float *y, const uint8_t *b)
{
	float d = rd16(b), m = rd16(b + 2);
	for (int j = 0; j < 16; j++) {
		y[j] = d * (float)(b[4 + j] & 15) + m;
		y[j + 16] = d * (float)(b[4 + j] >> 4) + m;
	}
}

/* Q5_0 / Q5_1: d (, m); 32 fifth bits in a little-endian u32; nibbles */
static void deq_q5(float *y, const uint8_t *b, int has_min)
{
	float d = rd16(b), m = has_min ? rd16(b + 2) : 0;
	const uint8_t *qhp = b + (has_min ? 4 : 2), *qs = qhp + 4;
	uint32_t qh = (uint32_t)qhp[0] | (uint32_t)qhp[1] << 8 | (uint32_t)qhp[2] << 16 | (uint32_t)qhp[3] << 24;
	int off = has_min ? 0 : 16;
	for (int j = 0; j < 16; j++) {
		int lo = (qs[j] & 15) | (int)((qh >> j) & 1) << 4;
		int hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1) << 4;
		y[j] = d * (float)(lo - off) + m;
		y[j + 16] = d * (float)(hi - off) + m;
	}
}

/* Q8_0: d; 32 signed bytes */
static void deq_q8_0(float *y, const uint8_t *b)
{
	float d = rd16(b);
	for (int j = 0; j < 32; j++)
		y[j] = d * (float)(int8_t)b[2 + j];
}

/* the 6-bit scale and min of sub-block j of a Q4_K/Q5_K super-block: 12
 * bytes hold 8 scales and 8 mins; sub-blocks 4..7 keep their top two bits in
 * the top bits of bytes 0..7 */
static void k_scale_min(const uint8_t *q, int j, int *sc, int *mn)
{
	if (j < 4) {
		*sc = q[j] & 63;
		*mn = q[j + 4] & 63;
	} else {
		*sc = (q[j + 4] & 15) | (q[j - 4] >> 6) << 4;
		*mn = (q[j + 4] >> 4) | (q[j] >> 6) << 4;
	}
}

/* Q4_K / Q5_K: d, dmin, 12 scale bytes, (Q5: 32 bytes of fifth bits), 128
 * bytes of nibbles; each 32 bytes of nibbles hold two sub-blocks: low
 * nibbles the first, high nibbles the second */
static void deq_qk(float *y, const uint8_t *b, int five)
{
	float d = rd16(b), dmin = rd16(b + 2);
	const uint8_t *scales = b + 4, *qh = b + 16, *qs = b + (five ? 48 : 16);
	for (int j = 0; j < 4; j++) {
		int s0, m0, s1, m1;
		k_scale_min(scales, 2 * j, &s0, &m0);
		k_scale_min(scales, 2 * j + 1, &s1, &m1);
		for (int l = 0; l < 32; l++) {
			int lo = qs[32 * j + l] & 15, hi = qs[32 * j + l] >> 4;
			if (five) {
				lo += (qh[l] >> (2 * j) & 1) << 4;
				hi += (qh[l] >> (2 * j + 1) & 1) << 4;
			}
			y[64 * j + l] = d * (float)s0 * (float)lo - dmin * (float)m0;
			y[64 * j + 32 + l] = d * (float)s1 * (float)hi - dmin * (float)m1;
		}
	}
}

/* Q6_K: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed
 * 8-bit scales (one per 16 values), d last. Each half of 128 values: byte l
 * of ql gives values l (low) and l + 64 (high), byte l + 32 gives l + 32
 * and l + 96; qh byte l gives their two top bits in bits 0-1, 2-3, 4-5, 6-7. */
static void deq_q6_k(float *y, const uint8_t *b)
{
	const uint8_t *ql = b, *qh = b + 128;
	const int8_t *sc = (const int8_t *)(b + 192);
	float d = rd16(b + 208);
	for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, y += 128)
		for (int l = 0; l < 32; l++) {
			int is = l / 16;
			int q1 = ((ql[l] & 15) | (qh[l] & 3) << 4) - 32;
			int q2 = ((ql[l + 32] & 15) | (qh[l] >> 2 & 3) << 4) - 32;
			int q3 = ((ql[l] >> 4) | (qh[l] >> 4 & 3) << 4) - 32;
			int q4 = ((ql[l + 32] >> 4) | (qh[l] >> 6 & 3) << 4) - 32;
			y[l] = d * (float)sc[is] * (float)q1;
			y[l + 32] = d * (float)sc[is + 2] * (float)q2;
			y[l + 64] = d * (float)sc[is + 4] * (float)q3;
			y[l + 96] = d * (float)sc[is + 6] * (float)q4;
		}
}

void convert_to_f32(float *dst, const void *src, DType t, size_t n)
{
	if (dtype_is_quant(t)) {
		int bk = dtype_block(t);
		size_t bb = dtype_block_bytes(t);
		ASSERT(n % (size_t)bk == 0);
		const uint8_t *b = src;
		for (size_t i = 0; i < n / (size_t)bk; i++, b += bb, dst += bk) {
			switch (t) {
			case DT_Q4_0: deq_q4_0(dst, b); break;
			case DT_Q4_1: deq_q4_1(dst, b); break;
			case DT_Q5_0: deq_q5(dst, b, 0); break;
			case DT_Q5_1: deq_q5(dst, b, 1); break;
			case DT_Q8_0: deq_q8_0(dst, b); break;
			case DT_Q4_K: deq_qk(dst, b, 0); break;
			case DT_Q5_K: deq_qk(dst, b, 1); break;
			case DT_Q6_K: deq_q6_k(dst, b); break;
			default: BUG("no dequantiser for %s", dtype_name(t));
			}
		}
		return;
	}
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
