/*
 * vidx.h: declarations shared by the access-method glue (plain C, PostgreSQL
 * headers). The math lives in the core (src/core, C++, no PostgreSQL headers),
 * reached only through src/core/vidx_core.h. See src/README.md for the page
 * layout, locking and WAL rules.
 */
#ifndef VIDX_H
#define VIDX_H

#include "postgres.h"

#include "access/amapi.h"
#include "access/generic_xlog.h"
#include "access/reloptions.h"
#include "access/skey.h"
#include "nodes/pathnodes.h"
#include "storage/bufmgr.h"
#include "utils/array.h"
#include "utils/relcache.h"

#include "core/vidx_core.h"

/* ---------- on-disk format ---------- */

#define VIDX_MAGIC 0x56494458 /* "VIDX" */
#define VIDX_FORMAT_VERSION 2
#define VIDX_METAPAGE_BLKNO 0

/* Page types, in the special space of every page. */
#define VIDX_PAGE_META 1
#define VIDX_PAGE_TREE 2
#define VIDX_PAGE_POSTING 3
#define VIDX_PAGE_FREE 4      /* recycled, in the free space map: may be reused */
#define VIDX_PAGE_GRAVEYARD 5 /* entries for replaced chains (VidxGraveEntry) */
#define VIDX_PAGE_FREESLOTS 6 /* sidecar slots VACUUM freed, for inserts to reuse */

typedef struct VidxPageOpaqueData
{
	BlockNumber next;        /* posting: next page of the chain; tree: next page of the version */
	BlockNumber head;        /* posting: first page of this leaf's chain */
	BlockNumber last;        /* posting head page only: last page of the chain */
	BlockNumber insert_hint; /* posting head page only: first page that may have room */
	uint32 leaf_id;          /* posting: the chain's leaf id; tree: the tree version */
	uint32 npostings;        /* posting head page only: postings in the chain */
	uint16 flags;            /* posting head page only: VIDX_CHAIN_* */
	uint16 page_type;        /* VIDX_PAGE_* */
	uint16 page_id;          /* VIDX_PAGE_ID, so tools can recognize vidx pages */
	uint16 split_refused;    /* posting head page only: 0, or see vidx_split_due (split.c) */
} VidxPageOpaqueData;

/* A split or merge replaced the chain: inserts route again; old scans may still read it. */
#define VIDX_CHAIN_REPLACED 0x0001

typedef VidxPageOpaqueData *VidxPageOpaque;

#define VIDX_PAGE_ID 0xFF8A
#define VidxPageGetOpaque(page) ((VidxPageOpaque) PageGetSpecialPointer(page))

/* Bytes of a vidx page between its header and its special space: what every page type holds. */
#define VIDX_PAGE_CONTENT_SIZE                                                                     \
	(BLCKSZ - MAXALIGN(SizeOfPageHeaderData) - MAXALIGN(sizeof(VidxPageOpaqueData)))

/* A replaced chain waiting to be freed (its pages are linked by next). */
typedef struct VidxGraveEntry
{
	BlockNumber first; /* its head; InvalidBlockNumber: the entry is free */
	uint32 leaf_id;    /* its leaf id: a page reused since has another */
	uint64 safe_xid;   /* FullTransactionId when it was replaced */
} VidxGraveEntry;

/* Entries of a graveyard page, in its contents. */
#define VIDX_GRAVES_PER_PAGE (VIDX_PAGE_CONTENT_SIZE / sizeof(VidxGraveEntry))
#define VidxPageGetGraves(page) ((VidxGraveEntry *) PageGetContents(page))

/*
 * The contents of a free-slot page: uint32 sidecar slots up to pd_lower (so
 * that GenericXLog logs them), at least one, at most VIDX_SLOTS_PER_PAGE.
 * The pages are a stack from the metapage's free_slot_page, linked by next
 * (freeslots.c).
 */
typedef struct VidxFreeSlots
{
	/* WAL past the deletions of the postings whose slots are here: flushed before reuse */
	XLogRecPtr flush_lsn;
	uint32 slots[FLEXIBLE_ARRAY_MEMBER];
} VidxFreeSlots;

#define VIDX_SLOTS_PER_PAGE                                                                        \
	((VIDX_PAGE_CONTENT_SIZE - offsetof(VidxFreeSlots, slots)) / sizeof(uint32))
#define VidxPageGetFreeSlots(page) ((VidxFreeSlots *) PageGetContents(page))
#define VidxPageGetNSlots(page)                                                                    \
	(((int) ((PageHeader) (page))->pd_lower - (int) MAXALIGN(SizeOfPageHeaderData) -               \
	  (int) offsetof(VidxFreeSlots, slots)) /                                                      \
	 (int) sizeof(uint32))

/* Points of the recall calibration curve in the metapage. */
#define VIDX_CALIB_POINTS 48

/* The metapage, block 0. */
typedef struct VidxMetaPageData
{
	uint32 magic;
	uint32 version;
	uint32 dims;     /* 0 until the first vector arrives (empty build) */
	uint32 metric;   /* VidxMetric */
	uint64 build_id; /* changes at every build; ties tree cache and sidecar */
	uint64 rotation_seed;
	BlockNumber tree_start; /* first tree page of the current version (pages linked by next) */
	uint32 tree_pages;
	uint32 tree_bytes;   /* size of the tree blob spread over the tree pages */
	uint32 tree_version; /* bumped when the tree changes (first-insert dims, splits) */
	uint32 nleaves;
	uint32 levels;
	uint64 next_slot;    /* next sidecar slot to hand out (VIDX_SLOT_NONE: none left) */
	uint64 built_tuples; /* postings written by the build */
	uint32 refine_bits;  /* refinement code bits per dimension (0: none) */
	uint32 next_leaf_id; /* the id the next new chain gets: ids are never reused */
	uint64 npostings;    /* postings in the current chains (inserts add, VACUUM subtracts) */
	uint64 splits;       /* leaves split since the build */
	uint64 merges;       /* leaves merged since the build */
	/*
	 * Chains a split replaced, kept readable for the scans that started
	 * before it, listed in graveyard pages (linked by next) from here: freed
	 * once no snapshot can be older than their safe_xid.
	 */
	BlockNumber graveyard;
	uint32 graves; /* entries in use */
	/*
	 * Sidecar slots VACUUM freed (their postings removed from the current
	 * tree), which inserts take before next_slot: the top free-slot page
	 * (InvalidBlockNumber: none), the pages and the slots listed.
	 */
	BlockNumber free_slot_page;
	uint32 free_slot_pages;
	uint64 free_slots;
	/*
	 * The recall calibration (calibrate.c): recall@calib_k of the index's own
	 * rows as queries (each excluded from its answer) against their exact
	 * answers, at calib_probes[i] probes, for calib_npoints points (0: not
	 * calibrated; all zeros in metapages written before these fields existed,
	 * which lie past their pd_lower). vidx.target_recall picks probes from it.
	 */
	uint32 calib_npoints;
	uint16 calib_k;
	uint16 calib_queries;
	uint64 calib_rows;         /* postings when it was measured */
	int64 calib_time;          /* TimestampTz when it was measured */
	uint32 calib_tree_version; /* the tree version it was measured on */
	uint32 calib_ms;           /* how long it took */
	uint32 calib_probes[VIDX_CALIB_POINTS];
	float calib_recall[VIDX_CALIB_POINTS];
} VidxMetaPageData;

/*
 * The slot of a posting stored without a sidecar record, because the index has
 * handed out all other slots (until REINDEX): scans read its vector from the table.
 */
#define VIDX_SLOT_NONE PG_UINT32_MAX

/* Bytes of one posting of this index. */
#define VidxMetaPostingSize(meta) vidx_posting_size_refined((meta)->dims, (meta)->refine_bits)

typedef VidxMetaPageData *VidxMetaPage;

#define VidxPageGetMeta(page) ((VidxMetaPage) PageGetContents(page))

/* Usable bytes of a tree page for the blob. */
#define VIDX_TREE_PAGE_CAPACITY VIDX_PAGE_CONTENT_SIZE

/* Tree pages that hold a tree blob of size bytes. */
static inline uint32
vidx_tree_pages(Size size)
{
	return (uint32) ((size + VIDX_TREE_PAGE_CAPACITY - 1) / VIDX_TREE_PAGE_CAPACITY);
}

/* Pages of a chain written with n postings, per_page to a page (a chain has at least its head). */
static inline int
vidx_chain_pages(int64 n, int per_page)
{
	return (int) Max(1, (n + per_page - 1) / per_page);
}

/* ---------- options and settings ---------- */

typedef struct VidxOptions
{
	int32 vl_len_;   /* varlena header (do not touch directly!) */
	int lists;       /* number of leaves; 0 = from the row count */
	int fanout;      /* max children of an internal node; 0 = default */
	int sample_rows; /* k-means sample; 0 = from lists */
	int kmeans_iterations;
	int refine_bits; /* 0, 4 or 8: refinement code bits per dimension */
} VidxOptions;

#define VIDX_DEFAULT_FANOUT 64
#define VIDX_DEFAULT_ITERATIONS 10
#define VIDX_ROTATION_SEED UINT64CONST(0x5eed0f5151dc0de)

/* Settings: each module defines its own in its init function, which _PG_init calls. */
extern int vidx_probes;         /* scan.c */
extern int vidx_rerank;         /* scan.c */
extern int vidx_scan_threads;   /* scan.c */
extern int vidx_iterative_scan; /* scan.c */
extern int vidx_tree_cache_mb;  /* tree_cache.c */
/* The recall@10 scans aim for unless vidx.probes is set (scan.c, calibrate.c) */
#define VIDX_DEFAULT_TARGET_RECALL 0.97
extern double vidx_active_target_recall(void); /* scan.c: 0 = vidx.probes decides */

/* vidx.iterative_scan */
#define VIDX_ITERATIVE_STRICT 0
#define VIDX_ITERATIVE_RELAXED 1

/* vidx.debug_split: fault injection for the tests (split.c) */
extern int vidx_debug_split;
typedef enum VidxDebugSplit
{
	VIDX_DEBUG_SPLIT_OFF,
	VIDX_DEBUG_CRASH_AFTER_CHAINS,  /* kill -9 of the backend after the new chains' records */
	VIDX_DEBUG_CRASH_AFTER_TREE,    /* ... after the new tree pages' records */
	VIDX_DEBUG_CRASH_AFTER_PUBLISH, /* ... after the publication, before the old tree is freed */
	VIDX_DEBUG_WAIT_BEFORE_PUBLISH, /* wait for VIDX_DEBUG_LOCK_KEY after the tree pages */
	VIDX_DEBUG_WAIT_IN_VACUUM,      /* VACUUM waits for it, holding the split lock */
	VIDX_DEBUG_WAIT_AFTER_ROUTE,    /* an insert waits for it between routing and its leaf */
} VidxDebugSplit;
/* pg_advisory_lock(1986618488) ("vidx") holds the waits of vidx.debug_split */
#define VIDX_DEBUG_LOCK_KEY INT64CONST(0x76696478)

/* ---------- vectors (vector.c) ---------- */

/*
 * Converts a real[], double precision[] or numeric[] array into a palloc'd
 * float array of *dims elements. Raises a clear error for NULL elements,
 * NaN/infinity, empty or multi-dimensional arrays, more than VIDX_MAX_DIMS
 * elements, or values out of the range of real. "what" names the operand in
 * messages (e.g. "vector", "query vector").
 */
extern float *vidx_array_to_vector(ArrayType *array, int *dims, const char *what);

/*
 * The vector (palloc'd) of a datum an index stores (typid InvalidOid) or is
 * queried with (typid: the operand's type): arrays directly, other types
 * through the operator class's reader (support function 2, vidx_typeio.h);
 * with the checks of vidx_array_to_vector. *lbound: the first subscript.
 */
extern float *vidx_datum_to_vector(Relation index, Datum datum, Oid typid, int *dims, int *lbound,
                                   const char *what);

/* real[] queries of vidx_search and vidx_recall (vector.c) */
extern void vidx_query_matrix_shape(ArrayType *a, const char *what, int *nqueries, int *dims);
extern ArrayType *vidx_new_query_array(int dims);
extern void vidx_query_scankey(ScanKey key, ArrayType *query);

/* Raises an error if a vector of dims elements does not have expected dims. */
extern void vidx_check_dims(int dims, int expected, Relation index);

/* Raises an error if v is a zero vector (cosine distance is undefined). */
extern void vidx_check_nonzero(const float *v, int dims);

/*
 * Raises an error (numeric_value_out_of_range) if an element of v is beyond
 * VIDX_MAX_ELEMENT in absolute value: such a vector cannot be indexed.
 * lbound is the array's lower bound, for the subscript in the message.
 */
extern void vidx_check_indexable(const float *v, int dims, int lbound, Relation index);

/* ---------- relation helpers (vidx.c, pages.c, tree_cache.c) ---------- */

extern VidxMetric vidx_index_metric(Relation index);
extern VidxOptions *vidx_index_options(Relation index);

extern Buffer vidx_new_buffer(Relation index);
extern Buffer vidx_extend_buffer(Relation index);
extern int vidx_postings_per_page(int dims, int refine_bits);
extern void vidx_init_page(Page page, uint16 page_type);
extern bool vidx_page_is(Page page, uint16 page_type);
extern void vidx_version_gone(Relation index, BlockNumber blkno, const char *what)
    pg_attribute_noreturn();
extern void vidx_read_meta(Relation index, VidxMetaPageData *meta);
/* The error for a metapage that is not a vidx metapage of this format version. */
extern void vidx_bad_meta(Relation index, const VidxMetaPageData *meta) pg_attribute_noreturn();
extern void vidx_check_posting_fits(Relation index, int dims, int refine_bits);
/*
 * Copies the metapage without raising an error: false (and *meta zeroed) if
 * the index has no metapage or one of another format version (for the planner).
 */
extern bool vidx_try_read_meta(Relation index, VidxMetaPageData *meta);

/*
 * Per-backend cache of an index's tree blob and rotation (tree_cache.c), keyed by the index's
 * relfilenode, build_id and tree_version. Valid until the next call for
 * another index or until the index changes; never freed by an error.
 */
typedef struct VidxTreeCache
{
	Oid index_oid;
	RelFileNode node;
	uint64 build_id;
	uint32 tree_version;
	int dims; /* index dims (may exceed the blob's dims of 0) */
	VidxMetric metric;
	void *tree; /* blob, dims = index dims */
	size_t tree_size;
	void *rotation; /* vidx_rotation_* state for dims */
	/*
	 * The shared buffer each index block was last found in (InvalidBuffer:
	 * not yet), for blocks below recent_nblocks: a scan re-pins a chain page
	 * there with ReadRecentBuffer, which checks the buffer still holds the
	 * block, instead of a buffer-table lookup (NULL for temporary indexes).
	 */
	Buffer *recent;
	/*
	 * The chain link each of those blocks had when last read (0: not known;
	 * block 0 is the metapage, never a chain page): a hint to prefetch a
	 * chain's pages before its links are followed, never trusted otherwise.
	 */
	BlockNumber *recent_next;
	BlockNumber recent_nblocks;
} VidxTreeCache;

extern VidxTreeCache *vidx_get_tree(Relation index, VidxMetaPageData *meta);
extern void vidx_tree_pin(VidxTreeCache *c);
extern void vidx_tree_unpin(VidxTreeCache *c);
extern void vidx_tree_unpin_all(void);
/* Defines vidx.tree_cache_mb. */
extern void vidx_tree_cache_init(void);

/* Prepares a vector for the index space: normalize (cosine), then rotate. */
extern void vidx_to_index_space(const VidxTreeCache *cache, const float *v, float *out);

/* ---------- vectors read from the table (table.c) ---------- */

typedef struct VidxTableReader
{
	struct IndexFetchTableData *fetch;
	struct TupleTableSlot *slot;
	struct EState *estate;
	struct IndexInfo *indexInfo;
	Relation index;
} VidxTableReader;

extern VidxTableReader *vidx_table_reader_begin(Relation heap, Relation index);
extern float *vidx_table_reader_vector(VidxTableReader *r, ItemPointer tid, Snapshot snapshot,
                                       int dims);
extern void vidx_table_reader_end(VidxTableReader *r);

/* ---------- sidecar (sidecar.c: file I/O; sidecar_gc.c: removal) ---------- */

/* The sidecar files' directory, under $PGDATA. */
#define VIDX_SIDECAR_DIR "vidx"

/* The sidecar file of an index's storage (spc and db as in its RelFileNode). */
extern char *vidx_sidecar_path_for(Oid spc, Oid db, Oid relfilenode, bool temp);
extern char *vidx_sidecar_path(Relation index);
extern void vidx_sidecar_build_begin(Relation index, int dims, uint64 build_id);
extern void vidx_sidecar_build_write(uint64 slot, const float *v);
extern void vidx_sidecar_build_read(uint64 slot, int64 n, char *buf);
extern void vidx_sidecar_build_end(void);
extern void vidx_sidecar_append(Relation index, const VidxMetaPageData *meta, uint64 slot,
                                const float *v);
/*
 * Replaces the sidecar by a new, empty file for an index that has no record
 * yet (the insert of slot 0, under the metapage lock); returns why it could
 * not, or NULL.
 */
extern const char *vidx_sidecar_start(Relation index, const VidxMetaPageData *meta);
/*
 * Exact distance of the query to the posting's vector, from its sidecar
 * record; false if the record is missing, short, stale or bad.
 */
extern bool vidx_sidecar_distance(Relation index, const VidxMetaPageData *meta, uint32 slot,
                                  uint32 vhash, const float *query, double *distance);
/* The vectors of n postings from their sidecar records (found[i]: valid; out may be NULL). */
extern void vidx_sidecar_read_vectors(Relation index, const VidxMetaPageData *meta,
                                      const VidxPosting *const *postings, int n, float *out,
                                      bool *found);
/*
 * Loads the sidecar (as much as fits in memory, from the start) into the page
 * cache and this backend's mapping; returns the bytes.
 */
extern int64 vidx_sidecar_prewarm(Relation index, const VidxMetaPageData *meta);
/* Hints the CPU to fetch the record of a slot about to be read (never faults). */
extern void vidx_sidecar_prefetch(Relation index, const VidxMetaPageData *meta, uint32 slot);
/* Whether a slot's record is in the page cache; starting its read from disk without waiting. */
extern bool vidx_sidecar_resident(Relation index, const VidxMetaPageData *meta, uint32 slot);
extern void vidx_sidecar_willneed(Relation index, const VidxMetaPageData *meta, uint32 slot);
/* Whether the posting has a valid sidecar record. */
extern bool vidx_sidecar_check(Relation index, const VidxMetaPageData *meta, const VidxPosting *p);
/* Says once per backend and index that the sidecar cannot be used, and how to repair it. */
extern void vidx_sidecar_warn(Relation index, const char *why);
/* Says once per backend and index that the sidecar slots ran out (VIDX_SLOT_NONE). */
extern void vidx_sidecar_warn_full(Relation index);
/*
 * For vidx_stats: maps the whole sidecar and returns why it cannot be used
 * (NULL if its header is good); *records is the number of whole records in it.
 */
extern const char *vidx_sidecar_state(Relation index, const VidxMetaPageData *meta,
                                      uint64 *records);
/* Maps (or remaps) the index's sidecar for a scan; warns once if it is unusable. */
extern void vidx_sidecar_refresh(Relation index, const VidxMetaPageData *meta);
/* Installs the SIGBUS guard of the read-only mappings. */
extern void vidx_sidecar_init(void);
/* Registers the callbacks that remove sidecars of dropped or rebuilt indexes (sidecar_gc.c). */
extern void vidx_sidecar_gc_init(void);
/*
 * Unlinks path when the transaction ends: at commit if at_commit, else at
 * abort (a subtransaction abort settles its own entries).
 */
extern void vidx_sidecar_schedule_unlink(const char *path, bool at_commit);
/* The first use of a sidecar in a backend sweeps once (not during recovery). */
extern void vidx_sidecar_sweep_once(void);
/*
 * Called by a build: schedules the files of the index's earlier relfilenodes
 * for removal at commit and removes files no index uses any more (see sidecar_gc.c).
 */
extern void vidx_sidecar_sweep(Relation index);
/* vidx_sweep_sidecars(): the same sweep on demand; returns the files removed. */
extern int vidx_sidecar_sweep_all(void);

/* ---------- free sidecar slots (freeslots.c) ---------- */

/*
 * Lists the slots of postings VACUUM removed from the current tree's chains
 * for reuse: those whose sidecar record is still valid for the posting (the
 * header of each, VidxPosting, is what is read). Takes the metapage lock:
 * call it holding no buffer lock.
 */
extern void vidx_free_slots(Relation index, const VidxPosting *postings, int n);
/*
 * For an insert holding the metapage exclusively, registered in state as
 * *meta: takes the top free slot, registering its page in state. *fbuf is
 * that page (locked; give it to vidx_take_free_slot_done after
 * GenericXLogFinish), *flush_lsn the WAL position to flush before the
 * slot's record is overwritten.
 */
extern uint32 vidx_take_free_slot(Relation index, GenericXLogState *state, VidxMetaPage meta,
                                  Buffer *fbuf, XLogRecPtr *flush_lsn);
extern void vidx_take_free_slot_done(Relation index, Buffer fbuf);

/* ---------- access-method callbacks ---------- */

extern IndexBuildResult *vidx_build(Relation heap, Relation index, struct IndexInfo *indexInfo);
extern void vidx_buildempty(Relation index);
extern bool vidx_insert(Relation index, Datum *values, bool *isnull, ItemPointer heap_tid,
                        Relation heap, IndexUniqueCheck checkUnique, bool indexUnchanged,
                        struct IndexInfo *indexInfo);
extern IndexBulkDeleteResult *vidx_bulkdelete(IndexVacuumInfo *info, IndexBulkDeleteResult *stats,
                                              IndexBulkDeleteCallback callback,
                                              void *callback_state);
extern IndexBulkDeleteResult *vidx_vacuumcleanup(IndexVacuumInfo *info,
                                                 IndexBulkDeleteResult *stats);
extern void vidx_costestimate(PlannerInfo *root, IndexPath *path, double loop_count,
                              Cost *indexStartupCost, Cost *indexTotalCost,
                              Selectivity *indexSelectivity, double *indexCorrelation,
                              double *indexPages);
extern IndexScanDesc vidx_beginscan(Relation index, int nkeys, int norderbys);
extern void vidx_rescan(IndexScanDesc scan, ScanKey keys, int nkeys, ScanKey orderbys,
                        int norderbys);
extern bool vidx_gettuple(IndexScanDesc scan, ScanDirection dir);
extern void vidx_endscan(IndexScanDesc scan);
/* Defines the scan settings (vidx.probes, vidx.rerank, ...); registers the scratch callback. */
extern void vidx_scan_init(void);

/* split.c */
extern int64 vidx_target_leaf_size(Relation index, const VidxMetaPageData *meta);
extern bool vidx_leaf_needs_split(Relation index, const VidxMetaPageData *meta, uint32 npostings);
extern bool vidx_split_due(Relation index, const VidxMetaPageData *meta, uint32 npostings,
                           uint16 split_refused);
extern uint16 vidx_split_refused_after_vacuum(uint16 split_refused, uint32 npostings);
extern void vidx_maybe_split(Relation index, Relation heap, BlockNumber head);
extern int vidx_merge_small_leaves(Relation index, Relation heap);
extern int vidx_recycle_graveyard(Relation index);
extern int vidx_graveyard_heads(Relation index, BlockNumber **heads);
extern void vidx_free_page(Relation index, Buffer buf);
extern void vidx_debug_split_point(VidxDebugSplit point);
/* Defines vidx.debug_split. */
extern void vidx_split_init(void);

/* Build progress subphases (pg_stat_progress_create_index). */
#define VIDX_PHASE_LOAD 2
#define VIDX_PHASE_KMEANS 3
#define VIDX_PHASE_ASSIGN 4
#define VIDX_PHASE_WRITE 5

/* ---------- thread counts for the core (build.c, scan.c) ---------- */

/* A build's: vidx.build_threads, else max_parallel_maintenance_workers + 1; at most the CPUs. */
extern int vidx_build_thread_count(void);
/* Defines vidx.build_threads. */
extern void vidx_build_init(void);
/* A scan's (for a large group of postings): min(vidx.scan_threads, vidx.max_scan_threads). */
extern int vidx_scan_thread_count(void);

/* ---------- recall (recall.c, calibrate.c) ---------- */

/*
 * Opens a vidx index and its table for a function that reads the table
 * through it (vidx_search, vidx_prewarm, vidx_recall): SELECT on the indexed
 * column, no row-level security (batch.c).
 */
extern void vidx_open_for_read(Oid indexoid, const char *what, Relation *heap_out,
                               Relation *index_out);
/*
 * Measures the recall curve of the index (heap may be NULL: rows the sidecar
 * cannot vouch for are then left out) and stores it in the metapage. With
 * budget_ms > 0 (a build), fewer queries once its pace says it would take
 * longer; queries > 0 (vidx_calibrate's) takes that many.
 */
extern void vidx_calibrate_index(Relation index, Relation heap, double budget_ms, int queries);
/* Whether the index has grown enough since its calibration to measure it again. */
extern bool vidx_calibration_stale(const VidxMetaPageData *meta);
/*
 * The probes a scan uses: from vidx.target_recall and the curve if both are
 * there (fractional), else vidx.probes; and a query's share of them (whole).
 */
extern double vidx_scan_probes(const VidxMetaPageData *meta);
extern int vidx_probes_for_query(double p, const float *query, int dims);

/* ---------- core error reporting ---------- */

/* Turns a core status code into ereport(ERROR) with the core's message. */
extern void vidx_core_check(int status, const char *what, const char *msg);

#endif /* VIDX_H */
