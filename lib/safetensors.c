/* safetensors: header parsing and validation over mmap. */
#include "safetensors.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

static int st_dtype(const char *s)
{
	static const struct { const char *name; DType t; } map[] = {
		{"F32", DT_F32}, {"F16", DT_F16}, {"BF16", DT_BF16}, {"F64", DT_F64},
		{"I8", DT_I8}, {"U8", DT_U8}, {"I32", DT_I32}, {"U32", DT_U32},
		{"I64", DT_I64}, {"U64", DT_U64},
	};
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (strcmp(s, map[i].name) == 0)
			return (int)map[i].t;
	return -1;
}

/* element sizes of the dtypes the format defines that we do not compute with */
static size_t st_other_size(const char *s)
{
	if (!strcmp(s, "BOOL") || !strncmp(s, "F8_", 3))
		return 1;
	if (!strcmp(s, "I16") || !strcmp(s, "U16"))
		return 2;
	return 0;
}

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const StEntry *)a)->name, ((const StEntry *)b)->name);
}

void st_open_file(SafeTensors *st, const char *path)
{
	st->files = reallocCheck(st->files, (size_t)(st->nfiles + 1) * sizeof *st->files);
	Mapped *m = &st->files[st->nfiles];
	map_file(m, path);
	if (m->size < 8)
		die("truncated safetensors file: '%s' (%zu bytes)", path, m->size);
	uint64_t hlen = 0;
	for (int i = 0; i < 8; i++)
		hlen |= (uint64_t)m->data[i] << (8 * i);
	if (hlen > m->size - 8)
		die("truncated safetensors file: '%s' (header of %llu bytes, file of %zu)", path,
		    (unsigned long long)hlen, m->size);
	const uint8_t *base = m->data + 8 + hlen;
	size_t dsize = m->size - 8 - hlen;
	cJSON *h = cJSON_ParseWithLength((const char *)m->data + 8, hlen);
	if (!h || !cJSON_IsObject(h))
		die("malformed safetensors header: '%s': not a JSON object", path);

	size_t maxend = 0;
	const char *overrun = NULL;
	for (cJSON *e = h->child; e; e = e->next) {
		if (strcmp(e->string, "__metadata__") == 0)
			continue;
		cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
		cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
		cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
		if (!cJSON_IsString(dt) || !cJSON_IsArray(sh) || !cJSON_IsArray(off) ||
		    cJSON_GetArraySize(off) != 2 || cJSON_GetArraySize(sh) > TENSOR_MAX_DIMS)
			die("malformed safetensors header: '%s': entry '%s'", path, e->string);
		st->entries = reallocCheck(st->entries, (size_t)(st->n + 1) * sizeof *st->entries);
		StEntry *t = &st->entries[st->n++];
		memset(t, 0, sizeof *t);
		t->name = strdupCheck(e->string);
		t->dtype = st_dtype(dt->valuestring);
		snprintf(t->dtype_str, sizeof t->dtype_str, "%s", dt->valuestring);
		t->ndim = cJSON_GetArraySize(sh);
		t->file = st->nfiles;
		double numel = 1;
		for (int i = 0; i < t->ndim; i++) {
			cJSON *d = cJSON_GetArrayItem(sh, i);
			if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > 1e15)
				die("malformed safetensors header: '%s': shape of '%s'", path, e->string);
			t->shape[i] = (int64_t)d->valuedouble;
			numel *= d->valuedouble;
		}
		cJSON *b = cJSON_GetArrayItem(off, 0), *en = cJSON_GetArrayItem(off, 1);
		if (!cJSON_IsNumber(b) || !cJSON_IsNumber(en) || b->valuedouble < 0 ||
		    en->valuedouble < b->valuedouble || en->valuedouble > 1e15)
			die("malformed safetensors header: '%s': data_offsets of '%s'", path, e->string);
		size_t bo = (size_t)b->valuedouble, eo = (size_t)en->valuedouble;
		size_t esize = t->dtype >= 0 ? dtype_size((DType)t->dtype) : st_other_size(t->dtype_str);
		if (esize && (double)(eo - bo) != numel * (double)esize)
			die("tensor '%s' in '%s' has %zu bytes, but its shape and dtype %s need %.0f",
			    e->string, path, eo - bo, t->dtype_str, numel * (double)esize);
		if (eo > maxend) {
			maxend = eo;
			overrun = t->name;
		}
		t->data = base + bo;
		t->nbytes = eo - bo;
	}
	if (maxend > dsize)
		die("truncated safetensors file: '%s' (tensor '%s' ends at byte %zu of %zu)", path,
		    overrun, maxend, dsize);
	cJSON_Delete(h);
	st->nfiles++;
	qsort(st->entries, (size_t)st->n, sizeof *st->entries, cmp_entry);
	for (int i = 1; i < st->n; i++)
		if (strcmp(st->entries[i - 1].name, st->entries[i].name) == 0)
			die("tensor '%s' appears twice (second time in '%s')", st->entries[i].name, path);
}

void st_open_dir(SafeTensors *st, const char *dir)
{
	memset(st, 0, sizeof *st);
	char *single = path_join(dir, "model.safetensors");
	char *index = path_join(dir, "model.safetensors.index.json");
	if (file_exists(single)) {
		st_open_file(st, single);
	} else if (file_exists(index)) {
		char *text = read_file(index, NULL);
		cJSON *j = cJSON_Parse(text);
		cJSON *wm = j ? cJSON_GetObjectItemCaseSensitive(j, "weight_map") : NULL;
		if (!cJSON_IsObject(wm))
			die("malformed index: '%s': no weight_map object", index);
		/* open each shard once, in order of first mention */
		char **seen = NULL;
		int nseen = 0;
		for (cJSON *e = wm->child; e; e = e->next) {
			if (!cJSON_IsString(e) || strchr(e->valuestring, '/'))
				die("malformed index: '%s': entry '%s'", index, e->string);
			int found = 0;
			for (int i = 0; i < nseen && !found; i++)
				found = strcmp(seen[i], e->valuestring) == 0;
			if (found)
				continue;
			seen = reallocCheck(seen, (size_t)(nseen + 1) * sizeof *seen);
			seen[nseen++] = e->valuestring;
			char *p = path_join(dir, e->valuestring);
			st_open_file(st, p);
			free(p);
		}
		/* every tensor the index promises must be where it says */
		for (cJSON *e = wm->child; e; e = e->next) {
			const StEntry *t = st_find(st, e->string);
			if (!t || strcmp(strrchr(st->files[t->file].path, '/') + 1, e->valuestring) != 0)
				die("tensor '%s' listed in '%s' is not in '%s'", e->string, index, e->valuestring);
		}
		free(seen);
		cJSON_Delete(j);
		free(text);
	} else {
		die("no model.safetensors or model.safetensors.index.json in '%s'", dir);
	}
	st->source = strdupCheck(file_exists(single) ? single : index);
	free(single);
	free(index);
}

const StEntry *st_find(const SafeTensors *st, const char *name)
{
	StEntry key = {.name = (char *)name};
	return bsearch(&key, st->entries, (size_t)st->n, sizeof key, cmp_entry);
}

Tensor st_get(const SafeTensors *st, const char *name, int ndim, const int64_t *shape)
{
	const StEntry *e = st_find(st, name);
	if (!e)
		die("missing tensor '%s' in '%s'", name, st->source ? st->source : st->files[0].path);
	const char *file = st->files[e->file].path;
	if (e->dtype < 0 || !dtype_is_float((DType)e->dtype))
		die("tensor '%s' in '%s' has dtype '%s'; expected BF16, F16, F32 or F64", name, file,
		    e->dtype_str);
	int ok = e->ndim == ndim;
	for (int i = 0; ok && i < ndim; i++)
		ok = e->shape[i] == shape[i];
	if (!ok) {
		char got[96], want[96];
		Tensor g = {.ndim = e->ndim}, w = {.ndim = ndim};
		memcpy(g.shape, e->shape, sizeof g.shape);
		memcpy(w.shape, shape, (size_t)ndim * sizeof *shape);
		die("tensor '%s' in '%s' has shape %s, the config says %s", name, file,
		    tensor_shape_str(&g, got, sizeof got), tensor_shape_str(&w, want, sizeof want));
	}
	Tensor t = {.dtype = (DType)e->dtype, .ndim = ndim, .data = e->data};
	memcpy(t.shape, shape, (size_t)ndim * sizeof *shape);
	return t;
}

void st_close(SafeTensors *st)
{
	for (int i = 0; i < st->n; i++)
		free(st->entries[i].name);
	for (int i = 0; i < st->nfiles; i++)
		unmap_file(&st->files[i]);
	free(st->entries);
	free(st->files);
	free(st->source);
	memset(st, 0, sizeof *st);
}
