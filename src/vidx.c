/*
 * vidx.c: module entry (_PG_init: index options, then each module's own
 * settings and callbacks), access-method handler, operator-class support
 * functions, and the core error bridge.
 */
#include "vidx.h"

#include "access/relscan.h"
#include "catalog/pg_type.h"
#include "commands/progress.h"
#include "commands/vacuum.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

PG_MODULE_MAGIC;

static relopt_kind vidx_relopt_kind;

void _PG_init(void);

void
_PG_init(void)
{
	vidx_relopt_kind = add_reloption_kind();
	add_int_reloption(vidx_relopt_kind, "lists",
	                  "Number of leaves (posting lists); 0 chooses from the row count", 0, 0,
	                  1000000, AccessExclusiveLock);
	add_int_reloption(vidx_relopt_kind, "fanout",
	                  "Maximum children of an internal tree node; 0 chooses the default (64)", 0, 0,
	                  4096, AccessExclusiveLock);
	add_int_reloption(vidx_relopt_kind, "sample_rows",
	                  "Rows sampled for k-means; 0 chooses max(10000, 64 * lists)", 0, 0, 100000000,
	                  AccessExclusiveLock);
	add_int_reloption(vidx_relopt_kind, "refine_bits",
	                  "Bits per dimension of the refinement codes (0 = none, 4 or 8): tighter "
	                  "estimates, fewer full vectors read, a bigger index",
	                  0, 0, 8, AccessExclusiveLock);
	add_int_reloption(vidx_relopt_kind, "kmeans_iterations", "Lloyd iterations of k-means at build",
	                  VIDX_DEFAULT_ITERATIONS, 1, 1000, AccessExclusiveLock);

	/* Each module defines its own settings and callbacks. */
	vidx_scan_init();
	vidx_build_init();
	vidx_tree_cache_init();
	vidx_split_init();
	vidx_sidecar_init();
	vidx_sidecar_gc_init();
	MarkGUCPrefixReserved("vidx");
}

/* ---------- options ---------- */

static bytea *
vidx_options(Datum reloptions, bool validate)
{
	static const relopt_parse_elt tab[] = {
	    {"lists", RELOPT_TYPE_INT, offsetof(VidxOptions, lists)},
	    {"fanout", RELOPT_TYPE_INT, offsetof(VidxOptions, fanout)},
	    {"sample_rows", RELOPT_TYPE_INT, offsetof(VidxOptions, sample_rows)},
	    {"kmeans_iterations", RELOPT_TYPE_INT, offsetof(VidxOptions, kmeans_iterations)},
	    {"refine_bits", RELOPT_TYPE_INT, offsetof(VidxOptions, refine_bits)},
	};
	VidxOptions *opts;

	opts = (VidxOptions *) build_reloptions(reloptions, validate, vidx_relopt_kind,
	                                        sizeof(VidxOptions), tab, lengthof(tab));
	if (validate && opts != NULL && opts->fanout == 1)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		                errmsg("value 1 out of bounds for option \"fanout\""),
		                errdetail("Valid values are 0 (default) and between \"2\" and \"4096\".")));
	if (validate && opts != NULL && !vidx_refine_bits_valid(opts->refine_bits))
		ereport(ERROR,
		        (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
		         errmsg("value %d out of bounds for option \"refine_bits\"", opts->refine_bits),
		         errdetail("Valid values are 0 (none, the default), 4 and 8.")));
	return (bytea *) opts;
}

VidxOptions *
vidx_index_options(Relation index)
{
	static VidxOptions defaults = {0, 0, 0, 0, VIDX_DEFAULT_ITERATIONS, 0};

	if (index->rd_options == NULL)
		return &defaults;
	return (VidxOptions *) index->rd_options;
}

/* ---------- operator-class support: the metric ---------- */

PG_FUNCTION_INFO_V1(vidx_l2_support);
Datum
vidx_l2_support(PG_FUNCTION_ARGS)
{
	PG_RETURN_POINTER((void *) (intptr_t) VIDX_METRIC_L2);
}

PG_FUNCTION_INFO_V1(vidx_ip_support);
Datum
vidx_ip_support(PG_FUNCTION_ARGS)
{
	PG_RETURN_POINTER((void *) (intptr_t) VIDX_METRIC_IP);
}

PG_FUNCTION_INFO_V1(vidx_cosine_support);
Datum
vidx_cosine_support(PG_FUNCTION_ARGS)
{
	PG_RETURN_POINTER((void *) (intptr_t) VIDX_METRIC_COSINE);
}

VidxMetric
vidx_index_metric(Relation index)
{
	FmgrInfo *proc = index_getprocinfo(index, 1, 1);
	intptr_t m = (intptr_t) DatumGetPointer(FunctionCall1(proc, PointerGetDatum(NULL)));

	if (m != VIDX_METRIC_L2 && m != VIDX_METRIC_IP && m != VIDX_METRIC_COSINE)
		elog(ERROR, "vidx: unknown metric %d from support function", (int) m);
	return (VidxMetric) m;
}

static bool
vidx_validate(Oid opclassoid)
{
	return true;
}

static char *
vidx_buildphasename(int64 phasenum)
{
	switch (phasenum)
	{
	case PROGRESS_CREATEIDX_SUBPHASE_INITIALIZE:
		return "initializing";
	case VIDX_PHASE_LOAD:
		return "loading tuples";
	case VIDX_PHASE_KMEANS:
		return "performing k-means";
	case VIDX_PHASE_ASSIGN:
		return "assigning and encoding tuples";
	case VIDX_PHASE_WRITE:
		return "writing index pages";
	default:
		return NULL;
	}
}

/* ---------- core error bridge ---------- */

void
vidx_core_check(int status, const char *what, const char *msg)
{
	if (status == VIDX_OK)
		return;
	if (status == VIDX_E_NOMEM)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory in vidx %s", what),
		                msg && msg[0] ? errdetail("%s", msg) : 0));
	if (status == VIDX_E_CANCELLED)
	{
		CHECK_FOR_INTERRUPTS();
		ereport(ERROR, (errcode(ERRCODE_QUERY_CANCELED), errmsg("vidx %s was cancelled", what)));
	}
	ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
	                errmsg("vidx %s failed: %s", what, msg && msg[0] ? msg : "unknown error")));
}

/* ---------- handler ---------- */

PG_FUNCTION_INFO_V1(vidx_handler);
Datum
vidx_handler(PG_FUNCTION_ARGS)
{
	IndexAmRoutine *amroutine = makeNode(IndexAmRoutine);

	amroutine->amstrategies = 0;
	amroutine->amsupport = 2; /* 1: metric; 2: vector reader (optional, vidx_typeio.h) */
	amroutine->amoptsprocnum = 0;
	amroutine->amcanorder = false;
	amroutine->amcanorderbyop = true;
	amroutine->amcanbackward = false;
	amroutine->amcanunique = false;
	amroutine->amcanmulticol = false;
	amroutine->amoptionalkey = true;
	amroutine->amsearcharray = false;
	amroutine->amsearchnulls = false;
	amroutine->amstorage = false;
	amroutine->amclusterable = false;
	amroutine->ampredlocks = false;
	amroutine->amcanparallel = false;
	amroutine->amcaninclude = false;
	amroutine->amusemaintenanceworkmem = false;
	amroutine->amparallelvacuumoptions = VACUUM_OPTION_PARALLEL_BULKDEL;
	amroutine->amkeytype = InvalidOid;

	amroutine->ambuild = vidx_build;
	amroutine->ambuildempty = vidx_buildempty;
	amroutine->aminsert = vidx_insert;
	amroutine->ambulkdelete = vidx_bulkdelete;
	amroutine->amvacuumcleanup = vidx_vacuumcleanup;
	amroutine->amcanreturn = NULL;
	amroutine->amcostestimate = vidx_costestimate;
	amroutine->amoptions = vidx_options;
	amroutine->amproperty = NULL;
	amroutine->ambuildphasename = vidx_buildphasename;
	amroutine->amvalidate = vidx_validate;
	amroutine->amadjustmembers = NULL;
	amroutine->ambeginscan = vidx_beginscan;
	amroutine->amrescan = vidx_rescan;
	amroutine->amgettuple = vidx_gettuple;
	amroutine->amgetbitmap = NULL;
	amroutine->amendscan = vidx_endscan;
	amroutine->ammarkpos = NULL;
	amroutine->amrestrpos = NULL;
	amroutine->amestimateparallelscan = NULL;
	amroutine->aminitparallelscan = NULL;
	amroutine->amparallelrescan = NULL;

	PG_RETURN_POINTER(amroutine);
}
