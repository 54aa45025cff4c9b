/*
 * bench.h: the timing every GPU benchmark in bench/ uses: median_ms(fn)
 * runs fn 23 times on the default stream and returns the median of the last
 * 20 (3 warm-ups) in milliseconds, timed by CUDA events, every call checked.
 */
#ifndef DASH_BENCH_H
#define DASH_BENCH_H

#include <algorithm>

#include "cuda_common.cuh"

template <typename F>
static float median_ms(F fn)
{
	cudaEvent_t e0, e1;
	cudaCheck(cudaEventCreate(&e0)), cudaCheck(cudaEventCreate(&e1));
	float ms[20];
	for (int i = 0; i < 23; i++) {
		cudaCheck(cudaEventRecord(e0));
		fn();
		cudaCheck(cudaEventRecord(e1));
		cudaCheck(cudaEventSynchronize(e1));
		if (i >= 3)
			cudaCheck(cudaEventElapsedTime(&ms[i - 3], e0, e1));
	}
	std::sort(ms, ms + 20);
	cudaCheck(cudaEventDestroy(e0)), cudaCheck(cudaEventDestroy(e1));
	return ms[10];
}

#endif
