/* bench/ktrace.so: every kernel, copy and memset the device runs between
 * cudaProfilerStart and cudaProfilerStop, with the device's own start and
 * end times (CUPTI's activity records), one line each:
 *   K|C|M start_ns end_ns stream name
 * Where ncu times each kernel alone (serialised, at its own clocks), this
 * sees the launches as the program makes them: the gaps between kernels
 * and the clocks the card holds under load. No nsys on the device machine;
 * this is what stands in for its timeline.
 * usage: DASH_BENCH_PROFILE=1 KTRACE=out.txt LD_PRELOAD=bench/bin/ktrace.so \
 *            bench/bin/search 1 4096 1
 * (bench/timeline.py reads the file.) */
#include <stdio.h>
#include <stdlib.h>

#include <cupti.h>

#define BUF (8u << 20)

static FILE *out;
static CUpti_SubscriberHandle sub;

static void die_cupti(CUptiResult r, const char *what)
{
	const char *s = "?";
	cuptiGetResultString(r, &s);
	fprintf(stderr, "ktrace: %s: %s\n", what, s);
	exit(1);
}

#define CK(x)                                                                                                          \
	do {                                                                                                           \
		CUptiResult r_ = (x);                                                                                  \
		if (r_ != CUPTI_SUCCESS)                                                                               \
			die_cupti(r_, #x);                                                                             \
	} while (0)

static void CUPTIAPI want(uint8_t **buf, size_t *size, size_t *maxrec)
{
	*buf = aligned_alloc(8, BUF);
	if (!*buf) {
		fprintf(stderr, "ktrace: out of memory\n");
		exit(1);
	}
	*size = BUF;
	*maxrec = 0;
}

static void CUPTIAPI done(CUcontext ctx, uint32_t stream, uint8_t *buf, size_t size, size_t valid)
{
	(void)ctx, (void)stream, (void)size;
	CUpti_Activity *rec = NULL;
	while (cuptiActivityGetNextRecord(buf, valid, &rec) == CUPTI_SUCCESS) {
		if (rec->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || rec->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
			CUpti_ActivityKernel10 *k = (CUpti_ActivityKernel10 *)rec;
			fprintf(out, "K %llu %llu %u %s\n", (unsigned long long)k->start, (unsigned long long)k->end,
			        k->streamId, k->name);
		} else if (rec->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
			CUpti_ActivityMemcpy6 *c = (CUpti_ActivityMemcpy6 *)rec;
			fprintf(out, "C %llu %llu %u copy%u:%llu\n", (unsigned long long)c->start,
			        (unsigned long long)c->end, c->streamId, c->copyKind, (unsigned long long)c->bytes);
		} else if (rec->kind == CUPTI_ACTIVITY_KIND_MEMSET) {
			CUpti_ActivityMemset4 *m = (CUpti_ActivityMemset4 *)rec;
			fprintf(out, "M %llu %llu %u memset:%llu\n", (unsigned long long)m->start,
			        (unsigned long long)m->end, m->streamId, (unsigned long long)m->bytes);
		}
	}
	free(buf);
}

static const CUpti_ActivityKind kinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY,
                                           CUPTI_ACTIVITY_KIND_MEMSET};

static void CUPTIAPI api(void *user, CUpti_CallbackDomain dom, CUpti_CallbackId id, const void *data)
{
	(void)user;
	const CUpti_CallbackData *cb = data;
	if (dom != CUPTI_CB_DOMAIN_RUNTIME_API)
		return;
	if (id == CUPTI_RUNTIME_TRACE_CBID_cudaProfilerStart_v4000 && cb->callbackSite == CUPTI_API_EXIT) {
		for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
			CK(cuptiActivityEnable(kinds[i]));
	} else if (id == CUPTI_RUNTIME_TRACE_CBID_cudaProfilerStop_v4000 && cb->callbackSite == CUPTI_API_ENTER) {
		for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++)
			CK(cuptiActivityDisable(kinds[i]));
		CK(cuptiActivityFlushAll(1));
		fflush(out);
	}
}

__attribute__((constructor)) static void ktrace_init(void)
{
	const char *path = getenv("KTRACE");
	if (!path || !*path)
		return;
	if (!(out = fopen(path, "w"))) {
		fprintf(stderr, "ktrace: %s: cannot open\n", path);
		exit(1);
	}
	CK(cuptiActivityRegisterCallbacks(want, done));
	CK(cuptiSubscribe(&sub, api, NULL));
	CK(cuptiEnableCallback(1, sub, CUPTI_CB_DOMAIN_RUNTIME_API, CUPTI_RUNTIME_TRACE_CBID_cudaProfilerStart_v4000));
	CK(cuptiEnableCallback(1, sub, CUPTI_CB_DOMAIN_RUNTIME_API, CUPTI_RUNTIME_TRACE_CBID_cudaProfilerStop_v4000));
}

__attribute__((destructor)) static void ktrace_fini(void)
{
	if (!out)
		return;
	cuptiActivityFlushAll(1);
	fclose(out);
}
