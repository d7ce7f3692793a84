/*
 * vidx.c: module entry, access-method handler, index options, settings,
 * operator-class support functions, and the core error bridge.
 */
#include "vidx.h"

#include <unistd.h>

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

int vidx_probes = 10;
int vidx_rerank = 0;
int vidx_scan_threads = 1;
int vidx_tree_cache_mb = 0;
int vidx_iterative_scan = VIDX_ITERATIVE_STRICT;

static const struct config_enum_entry iterative_scan_options[] = {
    {"strict_order", VIDX_ITERATIVE_STRICT, false},
    {"relaxed_order", VIDX_ITERATIVE_RELAXED, false},
    {NULL, 0, false},
};

static const struct config_enum_entry debug_split_options[] = {
    {"off", VIDX_DEBUG_SPLIT_OFF, false},
    {"crash_after_chains", VIDX_DEBUG_CRASH_AFTER_CHAINS, false},
    {"crash_after_tree", VIDX_DEBUG_CRASH_AFTER_TREE, false},
    {"crash_after_publish", VIDX_DEBUG_CRASH_AFTER_PUBLISH, false},
    {"wait_before_publish", VIDX_DEBUG_WAIT_BEFORE_PUBLISH, false},
    {"wait_in_vacuum", VIDX_DEBUG_WAIT_IN_VACUUM, false},
    {"wait_after_route", VIDX_DEBUG_WAIT_AFTER_ROUTE, false},
    {NULL, 0, false},
};

static int vidx_max_scan_threads = 4;
static int vidx_build_threads = 0;
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

	DefineCustomIntVariable("vidx.probes",
	                        "Number of leaves a vidx scan reads before it returns rows",
	                        "More probes: higher recall, slower queries.", &vidx_probes, 10, 1,
	                        1000000, PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable(
	    "vidx.rerank", "Re-scoring budget of a vidx scan, beyond the rows it returned (0 = none)",
	    "Candidates are re-scored with their full vectors, lowest lower bound first; a row "
	    "is returned once no candidate left can beat it by its error bound. With a budget, "
	    "once this many more candidates than rows returned were re-scored, a row is "
	    "returned once no candidate left is expected to beat it by its estimate.",
	    &vidx_rerank, 0, 0, 1000000, PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable(
	    "vidx.iterative_scan", "Order of the rows a vidx scan returns past its first leaves",
	    "strict_order (the default): rows always come in order of distance; a row found "
	    "later that is closer than one already returned is skipped. relaxed_order: no row "
	    "found is skipped, but such rows come out of order (re-sort them in the query).",
	    &vidx_iterative_scan, VIDX_ITERATIVE_STRICT, iterative_scan_options, PGC_USERSET, 0, NULL,
	    NULL, NULL);
	DefineCustomIntVariable(
	    "vidx.scan_threads", "Threads a vidx scan may use to estimate a large group of postings",
	    "Each backend starts its own threads: with many concurrent queries, keep the product "
	    "of clients and threads at or below the number of cores.",
	    &vidx_scan_threads, 1, 1, 64, PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("vidx.max_scan_threads",
	                        "Most threads any vidx scan uses, whatever vidx.scan_threads says",
	                        "A scan uses min(vidx.scan_threads, vidx.max_scan_threads) threads.",
	                        &vidx_max_scan_threads, 4, 1, 64, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable(
	    "vidx.build_threads", "Threads a vidx index build uses",
	    "0 takes max_parallel_maintenance_workers + 1, PostgreSQL's own bound on a maintenance "
	    "command's parallelism. Never more than the online CPUs.",
	    &vidx_build_threads, 0, 0, VIDX_MAX_THREADS, PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable(
	    "vidx.tree_cache_mb", "Memory for the vidx trees (centroids) a backend keeps cached",
	    "0 derives it from the machine: a quarter of the RAM divided by max_connections, "
	    "between 64 MB and 1 GB. The tree a query needs is always loaded.",
	    &vidx_tree_cache_mb, 0, 0, INT_MAX / 2, PGC_USERSET, GUC_UNIT_MB, NULL, NULL, NULL);
	DefineCustomEnumVariable(
	    "vidx.debug_split", "Fault injection for vidx's tests: do not use",
	    "crash_after_chains, crash_after_tree, crash_after_publish: the next split of this "
	    "session kills its backend (SIGKILL, after flushing the WAL) at that point, so the server "
	    "goes through crash recovery. wait_before_publish: a split waits for "
	    "pg_advisory_lock(1986618488) before its publication, holding the leaf; "
	    "wait_in_vacuum: VACUUM waits for it holding the split lock; wait_after_route: an "
	    "insert waits for it after choosing its leaf.",
	    &vidx_debug_split, VIDX_DEBUG_SPLIT_OFF, debug_split_options, PGC_SUSET, GUC_NOT_IN_SAMPLE,
	    NULL, NULL, NULL);
	MarkGUCPrefixReserved("vidx");

	vidx_sidecar_init();
	vidx_sidecar_gc_init();
	vidx_scan_init();
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

/* ---------- thread counts for the core ---------- */

int
vidx_build_thread_count(void)
{
	int threads =
	    vidx_build_threads > 0 ? vidx_build_threads : max_parallel_maintenance_workers + 1;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	if (cpus > 0 && threads > cpus)
		threads = (int) cpus;
	return threads;
}

int
vidx_scan_thread_count(void)
{
	return Min(vidx_scan_threads, vidx_max_scan_threads);
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
	amroutine->amsupport = 1;
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
