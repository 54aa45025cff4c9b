/* test_h5io: every h5io type round-trips through the zstd filter; rows,
 * attributes, provenance; a killed or failing writer never leaves the final
 * name; bad files fail with one line naming the file. */
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "h5io.h"
#include "tokens.h"
#include "test.h"
#include "util.h"

#define DIR "tests/tmp/h5io"

static uint64_t rng = 88172645463325252ULL;
static uint64_t next(void)
{
	rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
	return rng;
}

/* run fn in a child with stderr captured into err; returns the exit
 * status, or -signal when the child was killed */
static int run_child(void (*fn)(const void *), const void *arg, char *err, size_t n)
{
	int p[2];
	if (pipe(p) != 0)
		BUG("pipe");
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		close(p[0]);
		dup2(p[1], 2);
		fn(arg);
		_exit(0);
	}
	close(p[1]);
	size_t k = 0;
	ssize_t r;
	while (k + 1 < n && (r = read(p[0], err + k, n - 1 - k)) > 0)
		k += (size_t)r;
	err[k] = '\0';
	close(p[0]);
	int st;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

static int one_line(const char *s)
{
	const char *nl = strchr(s, '\n');
	return nl && nl[1] == '\0';
}

static void round_trip(DType t)
{
	char msg[128];
	int64_t dims[2] = {30, 101};
	size_t n = 30 * 101, es = dtype_size(t);
	uint8_t *buf = mallocCheck(n * es), *got;
	for (size_t i = 0; i < n; i++) {
		uint64_t r = next();
		float f = (float)((int64_t)(r % 2000001) - 1000000) / 1000.0f;
		double d = (double)f * 1.000001;
		switch (t) {
		case DT_F32: memcpy(buf + 4 * i, &f, 4); break;
		case DT_F64: memcpy(buf + 8 * i, &d, 8); break;
		case DT_BF16: { uint16_t h = f32_to_bf16(f); memcpy(buf + 2 * i, &h, 2); break; }
		case DT_F16: { uint16_t h = f32_to_f16(f / 20); memcpy(buf + 2 * i, &h, 2); break; }
		default: memcpy(buf + es * i, &r, es); /* integers: the random bits, in range */
		}
	}
	H5File *f = h5_create(DIR "/types.h5");
	h5_write(f, "/group/x", t, 2, dims, buf);
	h5_close(f);
	f = h5_open(DIR "/types.h5");
	int rank;
	int64_t gd[4];
	DType stored;
	h5_info(f, "/group/x", gd, &stored);
	got = h5_read(f, "/group/x", t, &rank, gd);
	snprintf(msg, sizeof msg, "%s round-trips bit for bit through zstd, shape and type kept", dtype_name(t));
	test_cond(msg, h5_is_compressed(f, "/group/x") && stored == t && rank == 2 && gd[0] == 30 &&
	          gd[1] == 101 && memcmp(buf, got, n * es) == 0);
	if (dtype_is_float(t)) {
		float *f32 = h5_read(f, "/group/x", DT_F32, NULL, NULL), *want = mallocCheck(n * 4);
		convert_to_f32(want, buf, t, n);
		snprintf(msg, sizeof msg, "%s reads back as f32 with the right values", dtype_name(t));
		test_cond(msg, memcmp(f32, want, n * 4) == 0);
		free(f32), free(want);
	}
	free(got);
	h5_close(f);
	free(buf);
}

static void write_then_kill(const void *arg)
{
	(void)arg;
	H5File *f = h5_create(DIR "/killed.h5");
	int64_t d = 100000;
	float *x = callocCheck((size_t)d, sizeof(float));
	h5_write(f, "/x", DT_F32, 1, &d, x);
	raise(SIGKILL);
}

static void write_then_die(const void *arg)
{
	(void)arg;
	H5File *f = h5_create(DIR "/died.h5");
	int64_t d = 10;
	float x[10] = {0};
	h5_write(f, "/x", DT_F32, 1, &d, x);
	die("something failed in '%s'", "input");
}

static void open_path(const void *arg) { h5_open(arg); }

static void read_missing(const void *arg)
{
	H5File *f = h5_open(arg);
	h5_read(f, "/nothing/here", DT_F32, NULL, NULL);
}

static void wrong_format(const void *arg)
{
	H5File *f = h5_open(arg);
	h5_expect_format(f, "dash-tokens", 1, "re-run tokenize");
}

int main(int argc, char **argv)
{
	util_init(argc, argv);
	mkdir("tests/tmp", 0755);
	if (system("rm -rf " DIR) != 0)
		BUG("cannot clean " DIR);
	mkdir(DIR, 0755);
	char err[1024];

	for (int t = 0; t < DT_COUNT; t++)
		if (!dtype_is_quant((DType)t))
			round_trip((DType)t);

	/* rows, scalars, empty datasets */
	H5File *f = h5_create(DIR "/rows.h5");
	int64_t dims[2] = {100, 7}, zero = 0;
	int32_t all[700], part[700];
	for (int i = 0; i < 700; i++)
		all[i] = i * 3 - 5;
	h5_create_dataset(f, "/r", DT_I32, 2, dims);
	h5_write_rows(f, "/r", DT_I32, 0, 40, all);
	h5_write_rows(f, "/r", DT_I32, 40, 1, all + 280);
	h5_write_rows(f, "/r", DT_I32, 41, 59, all + 287);
	double pi = 3.14159;
	h5_write(f, "/scalar", DT_F64, 0, NULL, &pi);
	h5_write(f, "/empty", DT_F32, 1, &zero, NULL);
	h5_attr_set_str(f, "/", "s", "first");
	h5_attr_set_str(f, "/", "s", "héllo, wörld");
	h5_attr_set_i64(f, "/r", "i", -1234567890123LL);
	h5_attr_set_f64(f, "/r", "x", 0.1);
	h5_stamp(f, "dash-test", 3);
	h5_set_input(f, "teacher", "models/x", "0123456789abcdef");
	test_cond("a file being written does not have its final name yet",
	          !file_exists(DIR "/rows.h5") && file_exists(DIR "/rows.h5.tmp"));
	h5_close(f);
	test_cond("h5_close renames NAME.tmp to NAME", file_exists(DIR "/rows.h5") && !file_exists(DIR "/rows.h5.tmp"));
	f = h5_open(DIR "/rows.h5");
	h5_read_rows(f, "/r", DT_I32, 10, 50, part);
	test_cond("rows written in pieces read back, in part", memcmp(part, all + 70, 50 * 7 * 4) == 0);
	double *sc = h5_read(f, "/scalar", DT_F64, NULL, NULL);
	int rank;
	int64_t ed[4];
	float *em = h5_read(f, "/empty", DT_F32, &rank, ed);
	test_cond("a scalar and an empty dataset round-trip", *sc == pi && rank == 1 && ed[0] == 0);
	free(sc), free(em);
	char *s = h5_attr_get_str(f, "/", "s"), *fmt = h5_attr_get_str(f, "/", "format");
	char *tool = h5_attr_get_str(f, "/", "tool"), *fp = h5_attr_get_str(f, "/", "teacher_fingerprint");
	test_cond("string attributes round-trip (UTF-8, overwritten)", strcmp(s, "héllo, wörld") == 0);
	test_cond("integer and float attributes round-trip on a dataset",
	          h5_attr_get_i64(f, "/r", "i") == -1234567890123LL && h5_attr_get_f64(f, "/r", "x") == 0.1);
	test_cond("provenance: format, version, tool, input fingerprint",
	          strcmp(fmt, "dash-test") == 0 && h5_attr_get_i64(f, "/", "version") == 3 &&
	          strcmp(tool, "test_h5io") == 0 && strcmp(fp, "0123456789abcdef") == 0 &&
	          h5_attr_exists(f, "/", "command") && !h5_attr_exists(f, "/", "nope"));
	free(s), free(fmt), free(tool), free(fp);
	h5_close(f);

	/* tokens.h5 */
	uint32_t ids[1000];
	uint64_t offs[3] = {0, 400, 1000};
	for (int i = 0; i < 1000; i++)
		ids[i] = (uint32_t)(next() % 151936);
	TokensMeta meta = {"tok.json", "feedfeedfeedfeed", 2, "a.txt b.txt"};
	tokens_write(DIR "/tokens.h5", ids, 1000, offs, 2, &meta);
	int64_t n;
	char tfp[17], want[17];
	int32_t *back = tokens_read(DIR "/tokens.h5", 600, 151936, &n, tfp);
	tokens_fingerprint(ids, 1000, want);
	test_cond("tokens.h5 round-trips, the first N on request, with its fingerprint",
	          n == 600 && memcmp(back, ids, 600 * 4) == 0 && strcmp(tfp, want) == 0);
	free(back);

	/* failures */
	unlink(DIR "/killed.h5");
	int st = run_child(write_then_kill, NULL, err, sizeof err);
	test_cond("a writer killed mid-write never leaves the final name",
	          st == -SIGKILL && !file_exists(DIR "/killed.h5"));
	st = run_child(write_then_die, NULL, err, sizeof err);
	test_cond("a writer that dies leaves neither the final name nor the .tmp",
	          st == 1 && !file_exists(DIR "/died.h5") && !file_exists(DIR "/died.h5.tmp"));

	FILE *junk = fopenCheck(DIR "/junk.h5", "w");
	fputs("this is not HDF5\n", junk);
	fclose(junk);
	st = run_child(open_path, DIR "/junk.h5", err, sizeof err);
	test_cond("a file that is not HDF5: exit 1, one line naming it",
	          st == 1 && one_line(err) && strstr(err, "'" DIR "/junk.h5'"));
	truncate(DIR "/rows.h5", 3000);
	st = run_child(read_missing, DIR "/rows.h5", err, sizeof err);
	test_cond("a truncated HDF5 file: exit 1, one line naming it",
	          st == 1 && one_line(err) && strstr(err, DIR "/rows.h5"));
	st = run_child(open_path, DIR "/nonexistent.h5", err, sizeof err);
	test_cond("a missing file: exit 1, one line naming it",
	          st == 1 && one_line(err) && strstr(err, "'" DIR "/nonexistent.h5'"));
	st = run_child(read_missing, DIR "/tokens.h5", err, sizeof err);
	test_cond("a missing dataset: exit 1, one line naming file:/dataset",
	          st == 1 && one_line(err) && strstr(err, "'" DIR "/tokens.h5:/nothing/here'"));
	st = run_child(wrong_format, DIR "/types.h5", err, sizeof err);
	test_cond("a file of another format is refused with a hint",
	          st == 1 && one_line(err) && strstr(err, DIR "/types.h5") && strstr(err, "HINT"));
	return test_report();
}
