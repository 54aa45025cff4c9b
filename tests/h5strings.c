/* h5strings: test helper; prints the strings of a list that eval-ruler
 * writes (NAME/bytes uint8 and NAME/offsets int64), one a line, with
 * newlines inside a string shown as \n. usage: h5strings FILE.h5 NAME */
#include <stdio.h>
#include <stdlib.h>

#include "h5io.h"
#include "util.h"

int main(int argc, char **argv)
{
	util_init(argc, argv);
	if (argc != 3) {
		fprintf(stderr, "usage: h5strings FILE.h5 NAME\n");
		return 2;
	}
	H5File *f = h5_open(argv[1]);
	char path[1024];
	int rank;
	int64_t db[TENSOR_MAX_DIMS], dofs[TENSOR_MAX_DIMS];
	snprintf(path, sizeof path, "%s/bytes", argv[2]);
	uint8_t *b = h5_read(f, path, DT_U8, &rank, db);
	snprintf(path, sizeof path, "%s/offsets", argv[2]);
	int64_t *o = h5_read(f, path, DT_I64, &rank, dofs);
	for (int64_t i = 0; i + 1 < dofs[0]; i++) {
		if (o[i] < 0 || o[i + 1] < o[i] || o[i + 1] > db[0])
			die("%s: %s/offsets is not a list of strings of %s/bytes", argv[1], argv[2], argv[2]);
		for (int64_t j = o[i]; j < o[i + 1]; j++)
			if (b[j] == '\n')
				fputs("\\n", stdout);
			else
				putchar(b[j]);
		putchar('\n');
	}
	fshut(stdout, "<stdout>");
	free(b), free(o);
	h5_close(f);
	return 0;
}
