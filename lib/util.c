/* util: errors, checked allocation and I/O, number parsing, temporary
 * outputs, hashing and progress. See util.h for the contracts. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char tool_name[64] = "dash";
static char *cmdline;

#define MAX_TMP 64
static char *tmp_paths[MAX_TMP];

static void remove_tmp_files(void)
{
	for (int i = 0; i < MAX_TMP; i++)
		if (tmp_paths[i])
			unlink(tmp_paths[i]);
}

static void on_signal(int sig)
{
	/* unlink is async-signal-safe; the paths were written before the
	 * handler could run */
	remove_tmp_files();
	signal(sig, SIG_DFL);
	raise(sig);
}

void util_init(int argc, char **argv)
{
	const char *base = argc > 0 ? strrchr(argv[0], '/') : NULL;
	base = base ? base + 1 : (argc > 0 ? argv[0] : "dash");
	snprintf(tool_name, sizeof tool_name, "%s", base);

	size_t n = 1;
	for (int i = 0; i < argc; i++)
		n += strlen(argv[i]) + 3;
	cmdline = mallocCheck(n);
	cmdline[0] = '\0';
	for (int i = 0; i < argc; i++) {
		int quote = argv[i][0] == '\0' || strpbrk(argv[i], " \t\n'\"$") != NULL;
		if (i)
			strcat(cmdline, " ");
		if (quote)
			strcat(cmdline, "'");
		strcat(cmdline, i == 0 ? tool_name : argv[i]);
		if (quote)
			strcat(cmdline, "'");
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);
}

const char *util_tool(void) { return tool_name; }
const char *util_cmdline(void) { return cmdline ? cmdline : tool_name; }

void die(const char *fmt, ...)
{
	va_list ap;
	fflush(stdout);
	fprintf(stderr, "%s: ", tool_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	remove_tmp_files();
	exit(1);
}

void warn(const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: warning: ", tool_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void bug_(const char *file, int line, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "%s: BUG at %s:%d: ", tool_name, file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	remove_tmp_files();
	abort();
}

// ----------------------------------------------------------------------------
// checked allocation and I/O

void *malloc_check(size_t n, const char *file, int line)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		die("out of memory allocating %zu bytes at %s:%d", n, file, line);
	return p;
}

void *calloc_check(size_t n, size_t size, const char *file, int line)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		die("out of memory allocating %zu x %zu bytes at %s:%d", n, size, file, line);
	return p;
}

void *realloc_check(void *p, size_t n, const char *file, int line)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		die("out of memory allocating %zu bytes at %s:%d", n, file, line);
	return p;
}

char *strdup_check(const char *s, const char *file, int line)
{
	size_t n = strlen(s) + 1;
	char *p = malloc_check(n, file, line);
	memcpy(p, s, n);
	return p;
}

FILE *fopen_check(const char *path, const char *mode, const char *file, int line)
{
	FILE *f = fopen(path, mode);
	(void)file, (void)line;
	if (!f)
		die("cannot open '%s': %s", path, strerror(errno));
	return f;
}

char *read_file(const char *path, size_t *len)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopenCheck(path, "rb");
	size_t cap = 1 << 16, n = 0;
	char *buf = mallocCheck(cap);
	for (;;) {
		if (n + 1 >= cap)
			buf = reallocCheck(buf, cap *= 2);
		size_t r = fread(buf + n, 1, cap - n - 1, f);
		n += r;
		if (r == 0)
			break;
	}
	if (ferror(f))
		die("cannot read '%s': %s", path, strerror(errno));
	if (f != stdin)
		fclose(f);
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

void map_file(Mapped *m, const char *path)
{
	struct stat st;
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		die("cannot open '%s': %s", path, strerror(errno));
	if (fstat(fd, &st) != 0)
		die("cannot stat '%s': %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		die("not a regular file: '%s'", path);
	m->size = (size_t)st.st_size;
	m->data = NULL;
	if (m->size > 0) {
		void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (p == MAP_FAILED)
			die("cannot map '%s': %s", path, strerror(errno));
		m->data = p;
	}
	close(fd);
	m->path = strdupCheck(path);
}

void unmap_file(Mapped *m)
{
	if (m->data)
		munmap((void *)m->data, m->size);
	free(m->path);
	memset(m, 0, sizeof *m);
}

void fshut(FILE *f, const char *name)
{
	int err = ferror(f);
	if (fflush(f) != 0 || err)
		die("write error on '%s': %s", name, strerror(errno));
	if (f != stdout && f != stderr && fclose(f) != 0)
		die("write error on '%s': %s", name, strerror(errno));
}

int file_exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

char *path_join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *p = mallocCheck(a + b + 2);
	memcpy(p, dir, a);
	p[a] = '/';
	memcpy(p + a + 1, name, b + 1);
	return p;
}

// ----------------------------------------------------------------------------
// numbers

long long estrtoll(const char *s, const char *what)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (end == s || *end != '\0' || errno == ERANGE)
		die("%s: not an integer: '%s'", what, s);
	return v;
}

double estrtod(const char *s, const char *what)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || *end != '\0' || errno == ERANGE || !isfinite(v))
		die("%s: not a real number: '%s'", what, s);
	return v;
}

long long estrtocount(const char *s, const char *what)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	double mult = 1;
	if (end != s && *end) {
		switch (*end) {
		case 'k': case 'K': mult = 1e3; break;
		case 'm': case 'M': mult = 1e6; break;
		case 'g': case 'G': mult = 1e9; break;
		default: mult = 0;
		}
		if (mult != 0)
			end++;
	}
	if (end == s || *end != '\0' || mult == 0 || errno == ERANGE || !isfinite(v) || v < 0)
		die("%s: not a count: '%s'", what, s);
	v = v * mult;
	if (v != floor(v) || v > 9e18)
		die("%s: not a whole count: '%s'", what, s);
	return (long long)v;
}

// ----------------------------------------------------------------------------
// temporary outputs

void tmp_register(const char *path)
{
	for (int i = 0; i < MAX_TMP; i++)
		if (!tmp_paths[i]) {
			tmp_paths[i] = strdupCheck(path);
			return;
		}
	BUG("more than %d temporary outputs", MAX_TMP);
}

void tmp_unregister(const char *path)
{
	for (int i = 0; i < MAX_TMP; i++)
		if (tmp_paths[i] && strcmp(tmp_paths[i], path) == 0) {
			char *p = tmp_paths[i];
			tmp_paths[i] = NULL;
			free(p);
			return;
		}
}

// ----------------------------------------------------------------------------
// hashing

uint64_t hash_bytes(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

uint64_t hash_str(uint64_t h, const char *s)
{
	return hash_bytes(h, s, strlen(s) + 1); /* the NUL separates fields */
}

uint64_t hash_u64(uint64_t h, uint64_t v)
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
	return hash_bytes(h, b, 8);
}

void fingerprint_hex(uint64_t h, char out[17])
{
	snprintf(out, 17, "%016llx", (unsigned long long)h);
}

// ----------------------------------------------------------------------------
// time and progress

double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void progress_init(Progress *p, const char *what, long long total)
{
	p->what = what;
	p->total = total;
	p->t0 = p->last = now_seconds();
	p->tty = isatty(2);
}

static void fmt_eta(double s, char *buf, size_t n)
{
	if (!isfinite(s) || s < 0)
		snprintf(buf, n, "?");
	else if (s < 120)
		snprintf(buf, n, "%.0fs", s);
	else if (s < 7200)
		snprintf(buf, n, "%.0fm%02.0fs", floor(s / 60), fmod(s, 60));
	else
		snprintf(buf, n, "%.0fh%02.0fm", floor(s / 3600), fmod(floor(s / 60), 60));
}

/* a rate as "12 steps/s", or "4.2 s/step" below one a second */
static void fmt_rate(double rate, const char *what, char *buf, size_t n)
{
	if (rate >= 1 || rate <= 0)
		snprintf(buf, n, "%.0f %s/s", rate, what);
	else
		snprintf(buf, n, "%.1f s/%.*s", 1 / rate, (int)(strlen(what) > 1 && what[strlen(what) - 1] == 's' ?
		                                                 strlen(what) - 1 : strlen(what)), what);
}

static void progress_print(Progress *p, long long done)
{
	double t = now_seconds(), el = t - p->t0;
	double rate = el > 0 ? (double)done / el : 0;
	char eta[32], r[64];
	fmt_eta(rate > 0 ? (double)(p->total - done) / rate : NAN, eta, sizeof eta);
	fmt_rate(rate, p->what, r, sizeof r);
	fprintf(stderr, "%s%s: %s %lld/%lld %3.0f%% %s eta %s%s", p->tty ? "\r" : "",
	        util_tool(), p->what, done, p->total,
	        p->total > 0 ? 100.0 * (double)done / (double)p->total : 100.0, r,
	        eta, p->tty ? "\033[K" : "\n");
	p->last = t;
}

void progress_update(Progress *p, long long done)
{
	double t = now_seconds();
	if (t - p->last >= (p->tty ? 0.5 : 10.0))
		progress_print(p, done);
}

void progress_done(Progress *p, long long done)
{
	double el = now_seconds() - p->t0;
	double rate = el > 0 ? (double)done / el : 0;
	char took[32], r[64];
	fmt_eta(el, took, sizeof took);
	fmt_rate(rate, p->what, r, sizeof r);
	fprintf(stderr, "%s%s: %s %lld in %s, %s%s\n", p->tty ? "\r" : "", util_tool(), p->what,
	        done, took, r, p->tty ? "\033[K" : "");
}
