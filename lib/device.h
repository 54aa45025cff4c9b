/*
 * device.h: the --device flag of the tools with a GPU path (eval-lm,
 * distill-linear). Header only: under DASH_CUDA it calls the CUDA library,
 * which the tools link and lib/ does not.
 */
#ifndef DASH_DEVICE_H
#define DASH_DEVICE_H

#include <string.h>

#include "util.h" // defines: die
#ifdef DASH_CUDA
#include "gpu.h" // defines: cuda_device_count
#endif

/* device_is_cuda: 1 to run on the GPU, 0 on the CPU, from the flag's
 * value (NULL: the GPU when there is one); dies on a bad value, on cuda
 * without a GPU and on cuda in a build without CUDA */
static inline int device_is_cuda(const char *device)
{
	if (device && strcmp(device, "cuda") != 0 && strcmp(device, "cpu") != 0)
		die("--device: not cpu or cuda: '%s'", device);
#ifdef DASH_CUDA
	int cuda = device ? strcmp(device, "cuda") == 0 : cuda_device_count() > 0;
	if (cuda && cuda_device_count() == 0)
		die("--device cuda: no GPU found");
	return cuda;
#else
	if (device && strcmp(device, "cuda") == 0)
		die("--device cuda: built without CUDA (no nvcc at build time)");
	return 0;
#endif
}

#endif
