/* candcmp: test helper; reads the candidates of layer L from two candidate
 * files through cand_read (which checks them against MODEL) and says whether
 * every parameter is the same bit for bit. usage: candcmp MODEL L A.h5 B.h5
 * Exit 0 when the same, 3 when they differ, 1 on a refused file. */
#include <string.h>

#include "cand.h"
#include "util.h"

int main(int argc, char **argv)
{
	util_init(argc, argv);
	if (argc != 5) {
		fprintf(stderr, "usage: candcmp MODEL L A.h5 B.h5\n");
		return 2;
	}
	Model m;
	model_load(&m, argv[1]);
	int l = (int)estrtocount(argv[2], "L"), differ = 0, nops = 0;
	for (int kind = LOP_GDN; kind <= LOP_GLA; kind++) {
		if (!cand_has_op(argv[3], kind))
			continue;
		LinearOp a, b;
		cand_read(&a, argv[3], kind, &m, l);
		cand_read(&b, argv[4], kind, &m, l);
		nops++;
		if (memcmp(a.w, b.w, a.n * sizeof(float)) != 0) {
			printf("%s differs\n", lop_name(kind));
			differ = 1;
		}
		lop_free(&a), lop_free(&b);
	}
	if (!differ)
		printf("%d operator%s the same\n", nops, nops == 1 ? "" : "s");
	model_free(&m);
	return differ ? 3 : 0;
}
