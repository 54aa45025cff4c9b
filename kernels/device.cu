/* device: GPU discovery and memory, for the run-time choice of backend. */
#include "cuda_common.cuh"
#include "gpu.h"

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

int cuda_cc_major(void)
{
	static int major = -1;
	if (major < 0) {
		int dev;
		cudaCheck(cudaGetDevice(&dev));
		cudaCheck(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
	}
	return major;
}

extern "C" void *gpu_alloc(size_t bytes)
{
	void *d = NULL;
	cudaCheck(cudaMalloc(&d, bytes ? bytes : 1));
	return d;
}

extern "C" void gpu_free(void *d) { cudaCheck(cudaFree(d)); }
extern "C" void gpu_upload(void *d, const void *h, size_t bytes) { cudaCheck(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice)); }
extern "C" void gpu_download(void *h, const void *d, size_t bytes) { cudaCheck(cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost)); }
extern "C" void gpu_zero(void *d, size_t bytes) { cudaCheck(cudaMemset(d, 0, bytes)); }
extern "C" void gpu_sync(void) { cudaCheck(cudaDeviceSynchronize()); }
