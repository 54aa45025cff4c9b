/*
 * stats.h: the median the C benchmarks in bench/ (decode.c, search.c) and
 * tests/test_decode.cu's timing report: x sorted in place; the mean of the two middle values when n is
 * even. (bench.h is the CUDA benchmarks' timing, in C++.)
 */
#ifndef DASH_BENCH_STATS_H
#define DASH_BENCH_STATS_H

#include <stdlib.h>

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *x, int n)
{
	qsort(x, (size_t)n, sizeof *x, cmp_double);
	return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

#endif
