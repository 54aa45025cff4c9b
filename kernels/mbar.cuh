/*
 * mbar.cuh: mbarriers and bulk copies (PTX; the bulk copies built for sm_90
 * only, DASH_HAVE_BULK): what attention.cu's Hopper kernels and
 * gdn_chunked.cu's state pass share; tensor-map copies (tma_load4) for the
 * attention forward's producer. Barrier and shared-memory addresses
 * are 32-bit shared addresses (smem_addr).
 */
#ifndef DASH_MBAR_CUH
#define DASH_MBAR_CUH

#include <stdint.h>

__device__ __forceinline__ uint32_t smem_addr(const void *p)
{
	return (uint32_t)__cvta_generic_to_shared(p);
}

/* mbarriers (shared, 8 bytes each): init with the count of arrivals a
 * phase; an arrival; this thread's cp.async copies so far as one arrival
 * when they land; a wait for the phase of the given parity to complete */
__device__ __forceinline__ void mbar_init(uint32_t bar, unsigned count)
{
	asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar)
{
	asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void cp_async_mbar_arrive(uint32_t bar)
{
	asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, int parity)
{
	uint32_t done;
	do
		asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
		             "selp.u32 %0, 1, 0, p;\n}\n"
		             : "=r"(done)
		             : "r"(bar), "r"(parity & 1)
		             : "memory");
	while (!done);
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define DASH_HAVE_BULK 1 /* built for sm_90: the bulk copies below */

/* the barriers' inits made visible to the copy engine (before the block's
 * barrier that precedes the first copy) */
__device__ __forceinline__ void mbar_init_fence(void)
{
	asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
/* an arrival that also expects bytes more of bulk copies this phase */
__device__ __forceinline__ void mbar_arrive_tx(uint32_t bar, unsigned bytes)
{
	asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
/* bytes (a multiple of 16, both addresses 16-aligned) from global src to
 * this block's shared dst by the copy engine, completing them on bar */
__device__ __forceinline__ void bulk_copy(uint32_t dst, const void *src, unsigned bytes, uint32_t bar)
{
	asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
	             :
	             : "r"(dst), "l"(src), "r"(bytes), "r"(bar)
	             : "memory");
}
/* a box of a 4-d tensor map (map: the kernel's __grid_constant__
 * CUtensorMap parameter; coordinates innermost first, elements) to shared
 * dst by the copy engine, completing on bar; the box's elements outside
 * the tensor come in as zeros */
__device__ __forceinline__ void tma_load4(uint32_t dst, const void *map, int c0, int c1, int c2, int c3, uint32_t bar)
{
	asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, "
	             "%3, %4, %5}], [%6];\n"
	             :
	             : "r"(dst), "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
	             : "memory");
}
#endif

#endif
