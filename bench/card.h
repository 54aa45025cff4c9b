/*
 * card.h: what the card did while a benchmark ran (bench/search.c): NVML,
 * opened at run time (the driver's libnvidia-ml.so.1; nothing is reported
 * where it is missing), sampled every 10 ms by a thread between
 * card_watch_start and card_watch_stop: the mean SM clock against the
 * card's maximum, the mean power the driver
 * reports against its enforced limit, and the share of samples in which the
 * clocks were held down by the power cap (NVML's SW power cap reason).
 * Why: a search step on an H200 runs at its 700 W limit with the SM clocks
 * at 1.6-1.85 GHz of 1.98 (bench/RESULTS.md, version 10), so its time
 * follows its energy, and two calls on two cards differ by what the cards
 * were allowed to draw.
 */
#ifndef DASH_BENCH_CARD_H
#define DASH_BENCH_CARD_H

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include <cuda_runtime.h>

typedef struct CardWatch {
	void *dev; /* nvmlDevice_t */
	int (*clock)(void *, int, unsigned *);
	int (*power)(void *, unsigned *);
	int (*reasons)(void *, unsigned long long *);
	unsigned max_mhz, limit_mw;
	pthread_t th;
	volatile int run;
	double mhz, mw;
	long n, capped;
} CardWatch;

#define NVML_CLOCK_SM 1
#define NVML_REASON_SW_POWER_CAP 0x4ULL

static void *card_sample(void *arg)
{
	CardWatch *w = arg;
	struct timespec ts = {0, 10 * 1000 * 1000};
	while (w->run) {
		unsigned c = 0, p = 0;
		unsigned long long r = 0;
		if (w->clock(w->dev, NVML_CLOCK_SM, &c) == 0 && w->power(w->dev, &p) == 0) {
			w->mhz += c, w->mw += p, w->n++;
			if (w->reasons(w->dev, &r) == 0 && (r & NVML_REASON_SW_POWER_CAP))
				w->capped++;
		}
		nanosleep(&ts, NULL);
	}
	return NULL;
}

/* starts sampling the current CUDA device; 0 when NVML is not there */
static int card_watch_start(CardWatch *w)
{
	static void *lib;
	static int (*by_bus)(const char *, void **), (*max_clock)(void *, int, unsigned *), (*limit)(void *, unsigned *);
	static CardWatch proto;
	if (!lib) {
		int (*init)(void);
		if (!(lib = dlopen("libnvidia-ml.so.1", RTLD_NOW)) || !(init = (int (*)(void))dlsym(lib, "nvmlInit_v2")) ||
		    init() != 0)
			return 0;
		*(void **)&by_bus = dlsym(lib, "nvmlDeviceGetHandleByPciBusId_v2");
		*(void **)&max_clock = dlsym(lib, "nvmlDeviceGetMaxClockInfo");
		*(void **)&limit = dlsym(lib, "nvmlDeviceGetEnforcedPowerLimit");
		*(void **)&proto.clock = dlsym(lib, "nvmlDeviceGetClockInfo");
		*(void **)&proto.power = dlsym(lib, "nvmlDeviceGetPowerUsage");
		*(void **)&proto.reasons = dlsym(lib, "nvmlDeviceGetCurrentClocksEventReasons");
		if (!proto.reasons)
			*(void **)&proto.reasons = dlsym(lib, "nvmlDeviceGetCurrentClocksThrottleReasons");
	}
	if (!by_bus || !max_clock || !limit || !proto.clock || !proto.power || !proto.reasons)
		return 0;
	*w = proto;
	char bus[32];
	int dev;
	if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetPCIBusId(bus, sizeof bus, dev) != cudaSuccess ||
	    by_bus(bus, &w->dev) != 0 || max_clock(w->dev, NVML_CLOCK_SM, &w->max_mhz) != 0 ||
	    limit(w->dev, &w->limit_mw) != 0)
		return 0;
	w->run = 1;
	if (pthread_create(&w->th, NULL, card_sample, w) != 0)
		return w->run = 0, 0;
	return 1;
}

/* stops sampling; prints one line after prefix, when there were samples */
static void card_watch_stop(CardWatch *w, const char *prefix)
{
	if (!w->run)
		return;
	w->run = 0;
	pthread_join(w->th, NULL);
	if (w->n)
		printf("%scard: SM clock %.0f MHz on average (at most %u), power %.0f W (limit %.0f), held down by the "
		       "power cap in %.0f%% of %ld samples\n",
		       prefix, w->mhz / w->n, w->max_mhz, w->mw / w->n / 1e3, w->limit_mw / 1e3, 100.0 * w->capped / w->n,
		       w->n);
}

#endif
