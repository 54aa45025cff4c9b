/*
 * tf32.cuh: products on the tensor cores in TF32 (mma.sync m16n8k8, float32
 * accumulate) from operands in shared memory, one warp a tile: 1xTF32
 * (each operand rounded to TF32, 10-bit mantissa: 2^-11 relative) or
 * 3xTF32 (float32's accuracy for these sums at three times the products).
 * kernels/gla_chunked.cu's forward uses 3xTF32, kernels/gdn_chunked.cu's
 * products 1xTF32 on the search's path.
 */
#ifndef DASH_TF32_CUH
#define DASH_TF32_CUH

/* x rounded to the nearest TF32 */
__device__ __forceinline__ unsigned to_tf32(float x)
{
	unsigned r;
	asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
	return r;
}

/* 3xTF32: x = hi + lo, hi rounded to TF32 and lo = x - hi (the tensor cores
 * read its top 19 bits); a b = hi_a hi_b + hi_a lo_b + lo_a hi_b to about
 * 2^-21 relative, float32's accuracy for these sums */
__device__ __forceinline__ void split_tf32(float x, unsigned &hi, unsigned &lo)
{
	hi = to_tf32(x);
	lo = __float_as_uint(x - __uint_as_float(hi));
}

/* c (16 x 8) += a (16 x 8) b (8 x 8), TF32 in, float32 accumulate */
__device__ __forceinline__ void mma_tf32(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2])
{
	asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
	    "{%0,%1,%2,%3};\n"
	    : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
	    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* A warp's c (16 WM x 8 WN) += A (16 WM x K) B (K x 8 WN) on the tensor
 * cores, in 3xTF32 (X3) or 1xTF32: A's (m, k) at A[m * AM + k * AK], B's
 * (k, n) at B[k * BK + n * BN] (times F[k] when F is given), K a multiple
 * of 8. Lane (g, t) = (lane / 4, lane % 4) holds c[i][j][r] at row 16 i + g
 * + 8 (r / 2), column 8 j + 2 t + r % 2 (mma.m16n8k8's fragments).
 * Fragments are read a row (AK, BK = 1) or a column (AM, BN = 1) at a
 * time: strides = 4 mod 32 for the first, 8 mod 32 for the second keep
 * them free of bank conflicts. NA > 1 sums the k-steps into NA sets of
 * accumulators in turn (K a multiple of 8 NA), added into c at the end:
 * NA chains of products in flight instead of one. */
template <bool X3, int WM, int WN, int AM, int AK, int BK, int BN, int NA = 1>
__device__ __forceinline__ void wmma_tf32(float (&c)[WM][WN][4], const float *A, const float *B, int K,
                                          const float *F = NULL)
{
	const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
	A += g * AM + t * AK, B += t * BK + g * BN;
	if (F)
		F += t;
	/* the products of k-step k into acc */
	auto step = [&](int k, float(&acc)[WM][WN][4]) {
		unsigned ah[WM][4], al[WM][4], bh[WN][2], bl[WN][2];
#pragma unroll
		for (int i = 0; i < WM; i++)
#pragma unroll
			for (int r = 0; r < 4; r++) {
				float x = A[(16 * i + 8 * (r & 1)) * AM + (k + 4 * (r >> 1)) * AK];
				if (X3)
					split_tf32(x, ah[i][r], al[i][r]);
				else
					ah[i][r] = to_tf32(x);
			}
#pragma unroll
		for (int r = 0; r < 2; r++) {
			float f = F ? F[k + 4 * r] : 1.f;
#pragma unroll
			for (int j = 0; j < WN; j++) {
				float x = B[(k + 4 * r) * BK + 8 * j * BN] * f;
				if (X3)
					split_tf32(x, bh[j][r], bl[j][r]);
				else
					bh[j][r] = to_tf32(x);
			}
		}
#pragma unroll
		for (int i = 0; i < WM; i++)
#pragma unroll
			for (int j = 0; j < WN; j++) {
				if (X3) {
					mma_tf32(acc[i][j], al[i], bh[j]);
					mma_tf32(acc[i][j], ah[i], bl[j]);
				}
				mma_tf32(acc[i][j], ah[i], bh[j]);
			}
	};
	if constexpr (NA == 1) {
#pragma unroll 2
		for (int k = 0; k < K; k += 8)
			step(k, c);
	} else {
		float e[NA - 1][WM][WN][4] = {};
#pragma unroll 2
		for (int k = 0; k < K; k += 8 * NA) {
			step(k, c);
#pragma unroll
			for (int a = 1; a < NA; a++)
				step(k + 8 * a, e[a - 1]);
		}
#pragma unroll
		for (int a = 0; a < NA - 1; a++)
#pragma unroll
			for (int i = 0; i < WM; i++)
#pragma unroll
				for (int j = 0; j < WN; j++)
#pragma unroll
					for (int r = 0; r < 4; r++)
						c[i][j][r] += e[a][i][j][r];
	}
}

/* the row and column of c[i][j][r] of a warp's tile of wmma_tf32 at (m0, n0) */
__device__ __forceinline__ int tc_row(int m0, int i, int r) { return m0 + 16 * i + (threadIdx.x & 31) / 4 + 8 * (r >> 1); }
__device__ __forceinline__ int tc_col(int n0, int j, int r) { return n0 + 8 * j + 2 * (threadIdx.x & 3) + (r & 1); }

/* x summed over the lanes that hold one row of a tile (the 4 of a g) or one
 * column (the 8 of a t), in each of them */
__device__ __forceinline__ float tc_row_sum(float x)
{
	x += __shfl_xor_sync(0xffffffffu, x, 1);
	return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
__device__ __forceinline__ float tc_col_sum(float x)
{
	x += __shfl_xor_sync(0xffffffffu, x, 4);
	x += __shfl_xor_sync(0xffffffffu, x, 8);
	return x + __shfl_xor_sync(0xffffffffu, x, 16);
}

#endif
