/*
 * cuda_common: error checks and small helpers shared by every kernel file.
 * Every CUDA call is wrapped in cudaCheck and every launch is followed by
 * cudaCheck(cudaGetLastError()); failures name the file and line.
 */
#ifndef DASH_CUDA_COMMON_CUH
#define DASH_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define WARP_SIZE 32
#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

static inline void cuda_check_(cudaError_t err, const char *file, int line)
{
	if (err != cudaSuccess) {
		fprintf(stderr, "[CUDA ERROR] at file %s:%d: %s\n", file, line, cudaGetErrorString(err));
		exit(1);
	}
}
#define cudaCheck(err) cuda_check_((err), __FILE__, __LINE__)

#endif
