/* mktokens: test helper; writes whitespace-separated ids (one document per
 * input line) into a tokens.h5, as tokenize will. usage: mktokens OUT.h5 < ids */
#include <stdlib.h>
#include <string.h>

#include "tokens.h"
#include "util.h"

int main(int argc, char **argv)
{
	util_init(argc, argv);
	if (argc != 2) {
		fprintf(stderr, "usage: mktokens OUT.h5 < ids\n");
		return 2;
	}
	size_t len;
	char *text = read_file("-", &len), *line, *save;
	uint32_t *ids = mallocCheck((len / 2 + 1) * sizeof *ids);
	uint64_t *offs = mallocCheck((len / 2 + 2) * sizeof *offs);
	int64_t n = 0, d = 0;
	offs[0] = 0;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *tok, *s2;
		for (tok = strtok_r(line, " \t", &s2); tok; tok = strtok_r(NULL, " \t", &s2))
			ids[n++] = (uint32_t)estrtoll(tok, "token id");
		offs[++d] = (uint64_t)n;
	}
	TokensMeta meta = {"mktokens", "0000000000000000", -1, "<stdin>"};
	tokens_write(argv[1], ids, n, offs, d, &meta);
	return 0;
}
