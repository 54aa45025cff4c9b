/* h5io: HDF5 datasets and attributes, the zstd filter, provenance.
 * See h5io.h for the invariants. */
#include "h5io.h"

#include <errno.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "util.h"

struct H5File {
	hid_t id;
	char *path; /* the name the user sees */
	char *tmp;  /* writers: path.tmp, renamed on close */
	int raw;    /* h5_set_raw: new datasets contiguous, not compressed */
};

#define ZSTD_LEVEL 3
#define CHUNK_BYTES (1 << 20)
#define MIN_CHUNKED 256

// ----------------------------------------------------------------------------
// the zstd filter (id 32015, as registered with The HDF Group and used by
// hdf5plugin): cd_values[0] is the compression level.

static size_t zstd_filter(unsigned flags, size_t cd_nelmts, const unsigned cd_values[],
                          size_t nbytes, size_t *buf_size, void **buf)
{
	void *out;
	size_t n;
	if (flags & H5Z_FLAG_REVERSE) {
		unsigned long long sz = ZSTD_getFrameContentSize(*buf, nbytes);
		if (sz == ZSTD_CONTENTSIZE_ERROR)
			return 0;
		if (sz == ZSTD_CONTENTSIZE_UNKNOWN) {
			/* a frame written without its size: stream it */
			ZSTD_DStream *ds = ZSTD_createDStream();
			size_t cap = nbytes * 4 + 4096;
			out = H5allocate_memory(cap, 0);
			ZSTD_inBuffer in = {*buf, nbytes, 0};
			ZSTD_outBuffer ob = {out, cap, 0};
			size_t r;
			while ((r = ZSTD_decompressStream(ds, &ob, &in)) != 0) {
				if (ZSTD_isError(r) || (in.pos == in.size && ob.pos < ob.size)) {
					ZSTD_freeDStream(ds);
					H5free_memory(out);
					return 0;
				}
				if (ob.pos == ob.size) {
					void *bigger = H5resize_memory(out, cap * 2);
					if (!bigger) {
						ZSTD_freeDStream(ds);
						H5free_memory(out);
						return 0;
					}
					out = bigger;
					ob.dst = out;
					ob.size = cap *= 2;
				}
			}
			ZSTD_freeDStream(ds);
			n = ob.pos;
			H5free_memory(*buf);
			*buf = out;
			*buf_size = cap;
			return n;
		}
		out = H5allocate_memory(sz ? sz : 1, 0);
		if (!out)
			return 0;
		n = ZSTD_decompress(out, sz, *buf, nbytes);
		if (ZSTD_isError(n) || n != sz) {
			H5free_memory(out);
			return 0;
		}
		H5free_memory(*buf);
		*buf = out;
		*buf_size = sz ? sz : 1;
		return n;
	}
	int level = cd_nelmts > 0 ? (int)cd_values[0] : ZSTD_LEVEL;
	size_t cap = ZSTD_compressBound(nbytes);
	out = H5allocate_memory(cap, 0);
	if (!out)
		return 0;
	n = ZSTD_compress(out, cap, *buf, nbytes, level);
	if (ZSTD_isError(n)) {
		H5free_memory(out);
		return 0;
	}
	H5free_memory(*buf);
	*buf = out;
	*buf_size = cap;
	return n;
}

static const H5Z_class2_t zstd_class = {
	H5Z_CLASS_T_VERS, (H5Z_filter_t)H5IO_ZSTD_FILTER, 1, 1, "zstd", NULL, NULL, zstd_filter,
};

static void h5io_init(void)
{
	static int done;
	if (done)
		return;
	done = 1;
	const char *e = getenv("DASH_H5_ERRORS");
	if (!e || strcmp(e, "1") != 0)
		H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
	if (H5Zregister(&zstd_class) < 0)
		die("cannot register the HDF5 zstd filter %d", H5IO_ZSTD_FILTER);
}

// ----------------------------------------------------------------------------
// types

static hid_t float16_type(int bf16)
{
	hid_t t = H5Tcopy(H5T_IEEE_F32LE);
	if (bf16)
		H5Tset_fields(t, 15, 7, 8, 0, 7);
	else
		H5Tset_fields(t, 15, 10, 5, 0, 10);
	H5Tset_precision(t, 16);
	H5Tset_size(t, 2);
	H5Tset_ebias(t, bf16 ? 127 : 15);
	return t;
}

/* mem_type returns a type the caller must H5Tclose. */
static hid_t mem_type(DType t)
{
	switch (t) {
	case DT_F32: return H5Tcopy(H5T_NATIVE_FLOAT);
	case DT_F64: return H5Tcopy(H5T_NATIVE_DOUBLE);
	case DT_F16: return float16_type(0);
	case DT_BF16: return float16_type(1);
	case DT_I8: return H5Tcopy(H5T_NATIVE_INT8);
	case DT_U8: return H5Tcopy(H5T_NATIVE_UINT8);
	case DT_I32: return H5Tcopy(H5T_NATIVE_INT32);
	case DT_U32: return H5Tcopy(H5T_NATIVE_UINT32);
	case DT_I64: return H5Tcopy(H5T_NATIVE_INT64);
	case DT_U64: return H5Tcopy(H5T_NATIVE_UINT64);
	default: BUG("bad dtype %d", (int)t);
	}
}

/* file_dtype maps a stored HDF5 type to ours, or returns -1. */
static int file_dtype(hid_t t)
{
	H5T_class_t c = H5Tget_class(t);
	size_t size = H5Tget_size(t);
	if (c == H5T_FLOAT) {
		size_t spos, epos, esize, mpos, msize;
		H5Tget_fields(t, &spos, &epos, &esize, &mpos, &msize);
		if (size == 4)
			return DT_F32;
		if (size == 8)
			return DT_F64;
		if (size == 2)
			return esize == 8 ? DT_BF16 : DT_F16;
		return -1;
	}
	if (c == H5T_INTEGER) {
		int sgn = H5Tget_sign(t) == H5T_SGN_2;
		switch (size) {
		case 1: return sgn ? DT_I8 : DT_U8;
		case 4: return sgn ? DT_I32 : DT_U32;
		case 8: return sgn ? DT_I64 : DT_U64;
		}
	}
	return -1;
}

// ----------------------------------------------------------------------------
// files

H5File *h5_create(const char *path)
{
	h5io_init();
	H5File *f = callocCheck(1, sizeof *f);
	f->path = strdupCheck(path);
	f->tmp = mallocCheck(strlen(path) + 5);
	sprintf(f->tmp, "%s.tmp", path);
	tmp_register(f->tmp);
	f->id = H5Fcreate(f->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
	if (f->id < 0)
		die("cannot create '%s': %s", f->tmp, errno ? strerror(errno) : "HDF5 error");
	return f;
}

H5File *h5_open(const char *path)
{
	h5io_init();
	if (access(path, R_OK) != 0)
		die("cannot open '%s': %s", path, strerror(errno));
	if (H5Fis_hdf5(path) <= 0)
		die("not an HDF5 file: '%s'", path);
	H5File *f = callocCheck(1, sizeof *f);
	f->path = strdupCheck(path);
	f->id = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
	if (f->id < 0)
		die("cannot open '%s': damaged HDF5 file", path);
	return f;
}

void h5_close(H5File *f)
{
	if (!f)
		return;
	if (f->tmp && H5Fflush(f->id, H5F_SCOPE_GLOBAL) < 0)
		die("cannot write '%s'", f->tmp);
	if (H5Fclose(f->id) < 0)
		die("cannot close '%s'", f->tmp ? f->tmp : f->path);
	if (f->tmp) {
		if (rename(f->tmp, f->path) != 0)
			die("cannot rename '%s' to '%s': %s", f->tmp, f->path, strerror(errno));
		tmp_unregister(f->tmp);
		free(f->tmp);
	}
	free(f->path);
	free(f);
}

const char *h5_path(const H5File *f) { return f->path; }

// ----------------------------------------------------------------------------
// datasets

static hid_t open_dataset(H5File *f, const char *name)
{
	if (!h5_exists(f, name))
		die("missing dataset '%s:%s'", f->path, name);
	hid_t d = H5Dopen2(f->id, name, H5P_DEFAULT);
	if (d < 0)
		die("cannot open dataset '%s:%s'", f->path, name);
	return d;
}

void h5_set_raw(H5File *f)
{
	f->raw = 1;
}

void h5_create_dataset(H5File *f, const char *name, DType t, int rank, const int64_t *dims)
{
	ASSERT(f->tmp && rank >= 0 && rank <= TENSOR_MAX_DIMS);
	hsize_t hd[TENSOR_MAX_DIMS] = {0}, chunk[TENSOR_MAX_DIMS];
	int64_t numel = 1;
	for (int i = 0; i < rank; i++) {
		if (dims[i] < 0)
			BUG("negative dimension for '%s'", name);
		hd[i] = (hsize_t)dims[i];
		numel *= dims[i];
	}
	hid_t space = rank ? H5Screate_simple(rank, hd, NULL) : H5Screate(H5S_SCALAR);
	hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
	H5Pset_create_intermediate_group(lcpl, 1);
	hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
	if (rank > 0 && numel >= MIN_CHUNKED && !f->raw) {
		/* fill chunks from the innermost dimension outwards, ~1 MiB each */
		int64_t bytes = (int64_t)dtype_size(t);
		for (int i = rank - 1; i >= 0; i--) {
			int64_t fit = CHUNK_BYTES / bytes;
			int64_t c = dims[i] < fit ? dims[i] : (fit > 0 ? fit : 1);
			chunk[i] = (hsize_t)c;
			bytes *= c;
		}
		unsigned level = ZSTD_LEVEL;
		H5Pset_chunk(dcpl, rank, chunk);
		H5Pset_filter(dcpl, (H5Z_filter_t)H5IO_ZSTD_FILTER, H5Z_FLAG_OPTIONAL, 1, &level);
	}
	hid_t ft = mem_type(t);
	hid_t d = H5Dcreate2(f->id, name, ft, space, lcpl, dcpl, H5P_DEFAULT);
	if (d < 0)
		die("cannot create dataset '%s:%s'", f->tmp, name);
	H5Tclose(ft);
	H5Dclose(d);
	H5Pclose(dcpl);
	H5Pclose(lcpl);
	H5Sclose(space);
}

/* rows_io reads or writes rows [row0, row0 + nrows) along dim 0. */
static void rows_io(H5File *f, const char *name, DType t, int64_t row0, int64_t nrows, void *buf, int write)
{
	hid_t d = open_dataset(f, name);
	hid_t space = H5Dget_space(d);
	int rank = H5Sget_simple_extent_ndims(space);
	hsize_t dims[TENSOR_MAX_DIMS], start[TENSOR_MAX_DIMS] = {0};
	if (rank < 1 || rank > TENSOR_MAX_DIMS)
		die("'%s:%s' has rank %d, expected 1 to %d", f->path, name, rank, TENSOR_MAX_DIMS);
	H5Sget_simple_extent_dims(space, dims, NULL);
	if (row0 < 0 || nrows < 0 || (hsize_t)(row0 + nrows) > dims[0])
		die("rows %lld..%lld out of range for '%s:%s' (%llu rows)", (long long)row0,
		    (long long)(row0 + nrows), f->path, name, (unsigned long long)dims[0]);
	if (nrows == 0)
		goto out;
	start[0] = (hsize_t)row0;
	dims[0] = (hsize_t)nrows;
	H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, dims, NULL);
	hid_t mspace = H5Screate_simple(rank, dims, NULL);
	hid_t mt = mem_type(t);
	herr_t r = write ? H5Dwrite(d, mt, mspace, space, H5P_DEFAULT, buf)
	                 : H5Dread(d, mt, mspace, space, H5P_DEFAULT, buf);
	if (r < 0)
		die("cannot %s '%s:%s'%s", write ? "write" : "read", f->path, name,
		    write ? "" : ": damaged data or a type that does not convert");
	H5Tclose(mt);
	H5Sclose(mspace);
out:
	H5Sclose(space);
	H5Dclose(d);
}

void h5_write_rows(H5File *f, const char *name, DType t, int64_t row0, int64_t nrows, const void *buf)
{
	rows_io(f, name, t, row0, nrows, (void *)buf, 1);
}

void h5_read_rows(H5File *f, const char *name, DType t, int64_t row0, int64_t nrows, void *buf)
{
	rows_io(f, name, t, row0, nrows, buf, 0);
}

void h5_write(H5File *f, const char *name, DType t, int rank, const int64_t *dims, const void *buf)
{
	h5_create_dataset(f, name, t, rank, dims);
	int64_t numel = 1;
	for (int i = 0; i < rank; i++)
		numel *= dims[i];
	if (numel == 0)
		return;
	hid_t d = open_dataset(f, name);
	hid_t mt = mem_type(t);
	if (H5Dwrite(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
		die("cannot write '%s:%s'", f->tmp, name);
	H5Tclose(mt);
	H5Dclose(d);
}

int h5_exists(H5File *f, const char *name)
{
	/* check each link on the path, as H5Lexists requires */
	char *p = strdupCheck(name);
	int ok = 1;
	for (char *s = p + 1; ok; s++) {
		if (*s == '/' || *s == '\0') {
			char c = *s;
			*s = '\0';
			ok = H5Lexists(f->id, p, H5P_DEFAULT) > 0;
			*s = c;
			if (c == '\0')
				break;
		}
	}
	free(p);
	return ok && name[0] == '/' && name[1] != '\0';
}

int h5_info(H5File *f, const char *name, int64_t dims[TENSOR_MAX_DIMS], DType *stored)
{
	hid_t d = open_dataset(f, name);
	hid_t space = H5Dget_space(d);
	int rank = H5Sget_simple_extent_ndims(space);
	if (rank < 0 || rank > TENSOR_MAX_DIMS)
		die("'%s:%s' has rank %d, more than %d", f->path, name, rank, TENSOR_MAX_DIMS);
	hsize_t hd[TENSOR_MAX_DIMS];
	H5Sget_simple_extent_dims(space, hd, NULL);
	for (int i = 0; i < rank; i++)
		dims[i] = (int64_t)hd[i];
	if (stored) {
		hid_t t = H5Dget_type(d);
		int dt = file_dtype(t);
		H5Tclose(t);
		if (dt < 0)
			die("'%s:%s' has an element type this tool does not read", f->path, name);
		*stored = (DType)dt;
	}
	H5Sclose(space);
	H5Dclose(d);
	return rank;
}

void *h5_read(H5File *f, const char *name, DType t, int *rankp, int64_t dimsp[TENSOR_MAX_DIMS])
{
	int64_t dims[TENSOR_MAX_DIMS];
	DType stored;
	int rank = h5_info(f, name, dims, &stored);
	if (dtype_is_float(t) != dtype_is_float(stored))
		die("'%s:%s' holds %s, expected %s", f->path, name, dtype_name(stored),
		    dtype_is_float(t) ? "floats" : "integers");
	int64_t numel = 1;
	for (int i = 0; i < rank; i++)
		numel *= dims[i];
	void *buf = mallocCheck((size_t)numel * dtype_size(t));
	if (numel > 0) {
		hid_t d = open_dataset(f, name);
		hid_t mt = mem_type(t);
		if (H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
			die("cannot read '%s:%s': damaged data", f->path, name);
		H5Tclose(mt);
		H5Dclose(d);
	}
	if (rankp)
		*rankp = rank;
	if (dimsp)
		memcpy(dimsp, dims, sizeof dims);
	return buf;
}

int h5_is_compressed(H5File *f, const char *name)
{
	hid_t d = open_dataset(f, name);
	hid_t dcpl = H5Dget_create_plist(d);
	int n = H5Pget_nfilters(dcpl), found = 0;
	for (int i = 0; i < n; i++) {
		unsigned flags, cd[4];
		size_t ncd = 4;
		char fname[32];
		H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &ncd, cd, sizeof fname, fname, NULL);
		if (id == H5IO_ZSTD_FILTER)
			found = 1;
	}
	H5Pclose(dcpl);
	H5Dclose(d);
	return found;
}

// ----------------------------------------------------------------------------
// attributes

static hid_t open_object(H5File *f, const char *obj)
{
	hid_t o = H5Oopen(f->id, obj, H5P_DEFAULT);
	if (o < 0)
		die("missing object '%s:%s'", f->path, obj);
	return o;
}

static void attr_write(H5File *f, const char *obj, const char *name, hid_t type, const void *v)
{
	hid_t o = open_object(f, obj);
	if (H5Aexists(o, name) > 0)
		H5Adelete(o, name);
	hid_t space = H5Screate(H5S_SCALAR);
	hid_t a = H5Acreate2(o, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
	if (a < 0 || H5Awrite(a, type, v) < 0)
		die("cannot write attribute '%s' of '%s:%s'", name, f->tmp ? f->tmp : f->path, obj);
	H5Aclose(a);
	H5Sclose(space);
	H5Oclose(o);
}

void h5_attr_set_str(H5File *f, const char *obj, const char *name, const char *v)
{
	hid_t t = H5Tcopy(H5T_C_S1);
	H5Tset_size(t, H5T_VARIABLE);
	H5Tset_cset(t, H5T_CSET_UTF8);
	attr_write(f, obj, name, t, &v);
	H5Tclose(t);
}

void h5_attr_set_i64(H5File *f, const char *obj, const char *name, int64_t v)
{
	attr_write(f, obj, name, H5T_NATIVE_INT64, &v);
}

void h5_attr_set_f64(H5File *f, const char *obj, const char *name, double v)
{
	attr_write(f, obj, name, H5T_NATIVE_DOUBLE, &v);
}

int h5_attr_exists(H5File *f, const char *obj, const char *name)
{
	if (strcmp(obj, "/") != 0 && !h5_exists(f, obj))
		return 0;
	return H5Aexists_by_name(f->id, obj, name, H5P_DEFAULT) > 0;
}

static hid_t attr_open(H5File *f, const char *obj, const char *name)
{
	if (!h5_attr_exists(f, obj, name))
		die("missing attribute '%s' of '%s:%s'", name, f->path, obj);
	hid_t a = H5Aopen_by_name(f->id, obj, name, H5P_DEFAULT, H5P_DEFAULT);
	if (a < 0)
		die("cannot read attribute '%s' of '%s:%s'", name, f->path, obj);
	return a;
}

char *h5_attr_get_str(H5File *f, const char *obj, const char *name)
{
	hid_t a = attr_open(f, obj, name);
	hid_t t = H5Aget_type(a);
	char *out = NULL;
	if (H5Tget_class(t) != H5T_STRING)
		die("attribute '%s' of '%s:%s' is not a string", name, f->path, obj);
	if (H5Tis_variable_str(t) > 0) {
		char *s = NULL;
		hid_t mt = H5Tcopy(H5T_C_S1);
		H5Tset_size(mt, H5T_VARIABLE);
		H5Tset_cset(mt, H5Tget_cset(t));
		if (H5Aread(a, mt, &s) < 0)
			die("cannot read attribute '%s' of '%s:%s'", name, f->path, obj);
		out = strdupCheck(s ? s : "");
		H5free_memory(s);
		H5Tclose(mt);
	} else {
		size_t n = H5Tget_size(t);
		out = callocCheck(n + 1, 1);
		hid_t mt = H5Tcopy(t);
		if (H5Aread(a, mt, out) < 0)
			die("cannot read attribute '%s' of '%s:%s'", name, f->path, obj);
		H5Tclose(mt);
	}
	H5Tclose(t);
	H5Aclose(a);
	return out;
}

static void attr_read_num(H5File *f, const char *obj, const char *name, hid_t mt, void *v)
{
	hid_t a = attr_open(f, obj, name);
	hid_t t = H5Aget_type(a);
	H5T_class_t c = H5Tget_class(t);
	hid_t space = H5Aget_space(a);
	if ((c != H5T_INTEGER && c != H5T_FLOAT) || H5Sget_simple_extent_npoints(space) != 1)
		die("attribute '%s' of '%s:%s' is not a number", name, f->path, obj);
	if (H5Aread(a, mt, v) < 0)
		die("cannot read attribute '%s' of '%s:%s'", name, f->path, obj);
	H5Sclose(space);
	H5Tclose(t);
	H5Aclose(a);
}

int64_t h5_attr_get_i64(H5File *f, const char *obj, const char *name)
{
	int64_t v;
	attr_read_num(f, obj, name, H5T_NATIVE_INT64, &v);
	return v;
}

double h5_attr_get_f64(H5File *f, const char *obj, const char *name)
{
	double v;
	attr_read_num(f, obj, name, H5T_NATIVE_DOUBLE, &v);
	return v;
}

// ----------------------------------------------------------------------------
// provenance

void h5_stamp(H5File *f, const char *format, int version)
{
	char date[32];
	time_t t = time(NULL);
	strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
	h5_attr_set_str(f, "/", "format", format);
	h5_attr_set_i64(f, "/", "version", version);
	h5_attr_set_str(f, "/", "tool", util_tool());
	h5_attr_set_str(f, "/", "command", util_cmdline());
	h5_attr_set_str(f, "/", "dash_version", DASH_VERSION);
	h5_attr_set_str(f, "/", "created", date);
}

void h5_expect_format(H5File *f, const char *format, int version, const char *hint)
{
	const char *sep = hint ? " ---> HINT: " : "";
	if (!h5_attr_exists(f, "/", "format"))
		die("'%s' is not a %s file: no format attribute%s%s", f->path, format, sep, hint ? hint : "");
	char *got = h5_attr_get_str(f, "/", "format");
	if (strcmp(got, format) != 0)
		die("'%s' is a %s file, expected %s%s%s", f->path, got, format, sep, hint ? hint : "");
	int64_t v = h5_attr_exists(f, "/", "version") ? h5_attr_get_i64(f, "/", "version") : -1;
	if (v != version)
		die("'%s' is %s version %lld, this tool reads version %d%s%s", f->path, format,
		    (long long)v, version, sep, hint ? hint : "");
	free(got);
}

void h5_set_input(H5File *f, const char *role, const char *path, const char *fingerprint)
{
	char name[128];
	h5_attr_set_str(f, "/", role, path);
	snprintf(name, sizeof name, "%s_fingerprint", role);
	h5_attr_set_str(f, "/", name, fingerprint);
}

// ----------------------------------------------------------------------------
// checkpoints

H5File *h5_ckpt_create(const char *path, const char *format, int64_t step, const char *settings,
                       const char *teacher, const char *teacher_fp, const char *tokens_fp)
{
	H5File *f = h5_create(path);
	h5_stamp(f, format, 1);
	h5_set_raw(f); /* written and read once: no compression */
	h5_attr_set_i64(f, "/", "step", step);
	h5_attr_set_str(f, "/", "settings", settings);
	h5_set_input(f, "teacher", teacher, teacher_fp);
	h5_attr_set_str(f, "/", "tokens_fingerprint", tokens_fp);
	return f;
}

H5File *h5_ckpt_open(const char *path, const char *format, const char *settings, const char *teacher_fp,
                     const char *tokens_fp, int64_t *step)
{
	H5File *f = h5_open(path);
	h5_expect_format(f, format, 1, "remove it to start afresh");
	char *s = h5_attr_get_str(f, "/", "settings"), *tfp = h5_attr_get_str(f, "/", "teacher_fingerprint");
	char *kfp = h5_attr_get_str(f, "/", "tokens_fingerprint");
	if (strcmp(tfp, teacher_fp) != 0)
		die("%s: a checkpoint of another teacher (fingerprint %s, this one %s)", path, tfp, teacher_fp);
	if (strcmp(kfp, tokens_fp) != 0)
		die("%s: a checkpoint made on other tokens (fingerprint %s, these %s)", path, kfp, tokens_fp);
	if (strcmp(s, settings) != 0)
		die("%s: a checkpoint made with other settings (%s; now %s): remove it or run as it was", path, s,
		    settings);
	free(s), free(tfp), free(kfp);
	*step = h5_attr_get_i64(f, "/", "step");
	return f;
}
