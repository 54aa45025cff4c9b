/*
 * test.h: the smallest harness (after antirez/sds testhelp.h). Each check
 * prints "PASS: what" or "FAIL: what"; tests/run counts those lines across
 * every test program and shell test. check_tensor compares arrays the way
 * llm.c's validate_result does: |got - ref| <= atol + rtol * |ref|, printing
 * the first mismatches and the max difference.
 */
#ifndef DASH_TEST_H
#define DASH_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static int test_passed, test_failed;

#define test_cond(descr, cond) do { \
	if (cond) { test_passed++; printf("PASS: %s\n", (descr)); } \
	else { test_failed++; printf("FAIL: %s (%s:%d)\n", (descr), __FILE__, __LINE__); } \
	fflush(stdout); \
} while (0)

static inline int test_report(void)
{
	printf("# %d ok, %d not ok\n", test_passed, test_failed);
	return test_failed ? 1 : 0;
}

/* check_tensor returns 1 when every element is within atol + rtol*|ref| */
static inline int check_tensor(const char *name, const float *got, const double *ref, size_t n,
                               double atol, double rtol)
{
	double maxdiff = 0;
	int bad = 0;
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)got[i] - ref[i]);
		if (d > maxdiff || isnan(d))
			maxdiff = isnan(d) ? INFINITY : d;
		if (!(d <= atol + rtol * fabs(ref[i]))) {
			if (bad < 5)
				printf("  %s[%zu]: got %.8g ref %.8g\n", name, i, (double)got[i], ref[i]);
			bad++;
		}
	}
	printf("  %s %s maxdiff=%.3e (%zu values, %d outside tolerance)\n", bad ? "TENSOR BAD" : "TENSOR OK",
	       name, maxdiff, n, bad);
	return bad == 0;
}

/* test_frand: uniform in [-1, 1) from a xorshift64 generator; each test
 * program seeds it (test_seed) so that its inputs are fixed */
static uint64_t test_rng = 0x853c49e6748fea9bULL;
static inline void test_seed(uint64_t s) { test_rng = s; }
static inline float test_frand(void)
{
	test_rng ^= test_rng << 13, test_rng ^= test_rng >> 7, test_rng ^= test_rng << 17;
	return (float)((double)(test_rng >> 11) / 9007199254740992.0 * 2 - 1);
}

/* n floats scale * test_frand(), malloc'd */
static inline float *test_rnd(size_t n, float scale)
{
	float *x = (float *)malloc(n * sizeof(float));
	if (!x)
		abort();
	for (size_t i = 0; i < n; i++)
		x[i] = scale * test_frand();
	return x;
}

/* max |a - b| over n, relative to max |b| (at least 1) */
static inline double test_rel_err(const float *a, const float *b, size_t n)
{
	double m = 1, d = 0;
	for (size_t i = 0; i < n; i++) {
		m = fabs(b[i]) > m ? fabs(b[i]) : m;
		d = fabs((double)a[i] - b[i]) > d ? fabs((double)a[i] - b[i]) : d;
	}
	return d / m;
}

static inline double max_abs(const double *x, size_t n)
{
	double m = 0;
	for (size_t i = 0; i < n; i++)
		m = fabs(x[i]) > m ? fabs(x[i]) : m;
	return m;
}

/* test_argmax: the index of the largest of x (V), the first of equal ones */
static inline int test_argmax(const float *x, int V)
{
	int best = 0;
	for (int v = 1; v < V; v++)
		if (x[v] > x[best])
			best = v;
	return best;
}

/* test_margin: the gap between the two largest of x (V) */
static inline float test_margin(const float *x, int V)
{
	int a = test_argmax(x, V);
	float second = -INFINITY;
	for (int v = 0; v < V; v++)
		if (v != a && x[v] > second)
			second = x[v];
	return x[a] - second;
}

#endif
