/* device: GPU discovery for the run-time choice of backend. */
#include "cuda.h"
#include "cuda_common.cuh"

extern "C" int cuda_device_count(void)
{
	int n = 0;
	if (cudaGetDeviceCount(&n) != cudaSuccess) {
		cudaGetLastError(); /* no driver or no device: not an error here */
		return 0;
	}
	return n;
}

extern "C" void cuda_device_name(int i, char *buf, size_t n)
{
	cudaDeviceProp p;
	cudaCheck(cudaGetDeviceProperties(&p, i));
	snprintf(buf, n, "%s (sm_%d%d, %.1f GiB)", p.name, p.major, p.minor,
	         (double)p.totalGlobalMem / (1 << 30));
}
