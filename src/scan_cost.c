/*
 * scan_cost.c: planner costs of a vidx index scan (amcostestimate).
 */
#include "scan.h"

#include "access/genam.h"
#include "optimizer/optimizer.h"
#include "utils/float.h"
#include "utils/selfuncs.h"

void
vidx_costestimate(PlannerInfo *root, IndexPath *path, double loop_count, Cost *indexStartupCost,
                  Cost *indexTotalCost, Selectivity *indexSelectivity, double *indexCorrelation,
                  double *indexPages)
{
	GenericCosts costs;
	IndexOptInfo *index = path->indexinfo;
	double ratio = 1.0;
	int nleaves = 1;
	Relation rel;
	VidxMetaPageData meta;

	/* The index only serves ORDER BY distance: never a plain or filtered scan. */
	if (path->indexorderbys == NIL)
	{
		*indexStartupCost = get_float8_infinity();
		*indexTotalCost = get_float8_infinity();
		*indexSelectivity = 0;
		*indexCorrelation = 0;
		*indexPages = 0;
		return;
	}

	/*
	 * Planning must not fail on an index that scans cannot read (another
	 * format version, a bad metapage): then cost it as reading every page, so
	 * that another plan wins; a scan of it still raises the error.
	 */
	rel = index_open(index->indexoid, NoLock);
	if (!vidx_try_read_meta(rel, &meta))
		meta.nleaves = 1;
	index_close(rel, NoLock);
	if (meta.nleaves > 0)
		nleaves = meta.nleaves;
	ratio = Min(1.0, (double) vidx_scan_probes(&meta) / nleaves);

	MemSet(&costs, 0, sizeof(costs));
	costs.numIndexTuples = Max(1.0, index->tuples * ratio);
	genericcostestimate(root, path, loop_count, &costs);

	/* Every probed page is read before the first row comes out. */
	costs.numIndexPages = Max(1.0, index->pages * ratio);
	/* Exact re-scoring: at most the budget, and never more rows than there are. */
	*indexStartupCost =
	    costs.indexTotalCost + Min((double) (vidx_rerank > 0 ? vidx_rerank : VIDX_TYPICAL_RESCORED),
	                               costs.numIndexTuples) *
	                               cpu_operator_cost * Max(1, meta.dims / 16);
	*indexTotalCost = *indexStartupCost;
	*indexSelectivity = costs.indexSelectivity;
	*indexCorrelation = 0;
	*indexPages = costs.numIndexPages;
}
