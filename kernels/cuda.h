/*
 * cuda: the C interface of kernels/ (built into kernels/libdash_cuda.a when
 * nvcc is found). Only device discovery so far; the kernels and their
 * launchers arrive with the CUDA backend, each beside its CPU twin in
 * lib/ops_cpu.c.
 */
#ifndef DASH_CUDA_H
#define DASH_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* cuda_device_count returns the number of usable GPUs, 0 when there is no
 * driver or no device (never an error). */
int cuda_device_count(void);
/* cuda_device_name writes "NVIDIA H100 80GB HBM3 (sm_90, 79.2 GiB)" for
 * device i into buf. */
void cuda_device_name(int i, char *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif
