/*
 * util: the small things every tool needs. Errors and their exits, checked
 * allocation and I/O, number parsing that refuses junk, hashing for input
 * fingerprints, temporary files that never outlive a failed run, and a
 * progress line on stderr.
 *
 * Failure kinds (DESIGN.md section 6):
 *   die(...)    bad input or data: "tool: message" on stderr, exit 1
 *   usage_die   misuse of a tool: its usage() prints the synopsis, exit 2
 *   BUG(...)    a broken invariant: file:line, abort()
 * Before exiting, die() removes every file registered with tmp_register(),
 * so a failed stage leaves no partial output. SIGINT and SIGTERM do the same.
 */
#ifndef DASH_UTIL_H
#define DASH_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define DASH_VERSION "0.1.0"

/* ---------------------------------------------------------------------------
 * errors */

/* util_init records the tool name (basename of argv[0]) and the full command
 * line for provenance attributes, and installs the signal handlers that
 * remove registered temporary files. Call it first in every main. */
void util_init(int argc, char **argv);
const char *util_tool(void);    /* "eval-lm" */
const char *util_cmdline(void); /* "eval-lm -m model --ids x.txt" */

void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void bug_(const char *file, int line, const char *fmt, ...)
	__attribute__((noreturn, format(printf, 3, 4)));
#define BUG(...) bug_(__FILE__, __LINE__, __VA_ARGS__)
#define ASSERT(x) do { if (!(x)) BUG("assertion failed: %s", #x); } while (0)

/* ---------------------------------------------------------------------------
 * checked allocation and I/O */

void *malloc_check(size_t n, const char *file, int line);
void *calloc_check(size_t n, size_t size, const char *file, int line);
void *realloc_check(void *p, size_t n, const char *file, int line);
char *strdup_check(const char *s, const char *file, int line);
FILE *fopen_check(const char *path, const char *mode, const char *file, int line);
#define mallocCheck(n) malloc_check((n), __FILE__, __LINE__)
#define callocCheck(n, s) calloc_check((n), (s), __FILE__, __LINE__)
#define reallocCheck(p, n) realloc_check((p), (n), __FILE__, __LINE__)
#define strdupCheck(s) strdup_check((s), __FILE__, __LINE__)
#define fopenCheck(path, mode) fopen_check((path), (mode), __FILE__, __LINE__)

/* read_file returns the whole file, NUL-terminated (the NUL is not counted
 * in *len), or dies naming the path. "-" reads stdin. */
char *read_file(const char *path, size_t *len);

/* A read-only memory map of a whole file. Dies naming the path. */
typedef struct {
	const uint8_t *data;
	size_t size;
	char *path;
} Mapped;
void map_file(Mapped *m, const char *path);
void unmap_file(Mapped *m);

/* fshut flushes and closes a stream and dies if anything written to it was
 * lost (a full disk, a closed pipe). */
void fshut(FILE *f, const char *name);

int file_exists(const char *path);
/* path_join returns "dir/name" in a new string. */
char *path_join(const char *dir, const char *name);

/* ---------------------------------------------------------------------------
 * numbers: each dies with "'s': not a ..." on empty input or trailing junk */

long long estrtoll(const char *s, const char *what);
double estrtod(const char *s, const char *what);
/* estrtocount accepts 12300000, 12.3M, 64K, 2G (decimal multipliers). */
long long estrtocount(const char *s, const char *what);

/* ---------------------------------------------------------------------------
 * temporary outputs: removed by die() and on SIGINT/SIGTERM */

void tmp_register(const char *path);
void tmp_unregister(const char *path);

/* ---------------------------------------------------------------------------
 * hashing: 64-bit FNV-1a, for cheap input fingerprints (not cryptographic) */

#define HASH_INIT 0xcbf29ce484222325ULL
uint64_t hash_bytes(uint64_t h, const void *p, size_t n);
uint64_t hash_str(uint64_t h, const char *s);
uint64_t hash_u64(uint64_t h, uint64_t v);
/* fingerprint_hex writes the 16 hex digits of h and a NUL into out[17]. */
void fingerprint_hex(uint64_t h, char out[17]);

/* ---------------------------------------------------------------------------
 * time and progress */

double now_seconds(void); /* monotonic */

/* A progress line on stderr, rewritten in place when stderr is a terminal
 * and printed at most every few seconds otherwise:
 *   "eval-lm: tokens 4096/16384 25% 812 tok/s eta 15s". */
typedef struct {
	const char *what; /* "tokens" */
	long long total;
	double t0, last;
	int tty;
} Progress;
void progress_init(Progress *p, const char *what, long long total);
void progress_update(Progress *p, long long done);
void progress_done(Progress *p, long long done);

#endif
