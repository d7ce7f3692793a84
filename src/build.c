/*
 * build.c: CREATE INDEX (ambuild) and the init fork of unlogged indexes
 * (ambuildempty).
 *
 * The build reads every vector once from the table and writes it, in slot
 * order, to the sidecar; it keeps only the row's heap TID (8 bytes) in memory. Then it reads the
 * vectors back from the sidecar (sequentially, from the page cache) instead of
 * holding them all in memory: a seeded sample, rotated, for the balanced
 * k-means that gives the leaf centroids; then every vector, in batches,
 * rotated, assigned to its exact nearest leaf centroid and encoded
 * (core/build.cpp, on vidx_build_thread_count() threads of the core's
 * pool, on plain memory). The postings stay in memory when they fit in
 * maintenance_work_mem, else they go to a temporary file (PostingStore). The
 * core groups the leaf centroids into the tree,
 * and the pages are written in one pass in block order:
 *
 *   block 0          metapage
 *   blocks 1..T      tree pages (the tree blob, verbatim)
 *   then             the posting chain of leaf 0, of leaf 1, ...
 *
 * The pages are WAL-logged once, as whole pages, after they are written
 * (log_newpage_range), as PostgreSQL's own bulk builds do.
 */
#include "vidx.h"

#include <math.h>
#include <unistd.h>

#include "access/tableam.h"
#include "access/xloginsert.h"
#include "catalog/index.h"
#include "commands/progress.h"
#include "common/pg_prng.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/buffile.h"
#include "storage/smgr.h"
#include "utils/memutils.h"
#include "utils/guc.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#define VIDX_SAMPLE_SEED UINT64CONST(0x76696478) /* "vidx" */
#define VIDX_KMEANS_SEED UINT64CONST(0x6b6d65616e73)

typedef struct VidxBuildState
{
	Relation index;
	VidxMetric metric;
	int dims;
	uint64 build_id;
	int64 ntuples;
	VidxHeapTid *tids; /* heap TID of each slot's row (the sidecar holds only vectors) */
	int64 tids_allocated;
	MemoryContext buildcxt; /* the build's memory, for tids */
	MemoryContext tmpcxt;
} VidxBuildState;

/* Records read back from the sidecar per batch (about 32 MB at 1024 dimensions). */
#define VIDX_BUILD_BATCH 8192

/* ---------- settings ---------- */

static int vidx_build_threads = 0;
static bool debug_build_error = false; /* vidx.debug_build_error */

void
vidx_build_init(void)
{
	DefineCustomIntVariable(
	    "vidx.build_threads", "Threads a vidx index build uses",
	    "0 takes max_parallel_maintenance_workers + 1, PostgreSQL's own bound on a maintenance "
	    "command's parallelism. Never more than the online CPUs.",
	    &vidx_build_threads, 0, 0, VIDX_MAX_THREADS, PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable(
	    "vidx.debug_build_error", "Fault injection for vidx's tests: do not use",
	    "A build raises an ERROR while it copies the tree the core built (test/robust/55).",
	    &debug_build_error, false, PGC_SUSET, GUC_NOT_IN_SAMPLE, NULL, NULL, NULL);
}

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

/* Leaves from the row count: sqrt(N), at least 1. */
static int
default_lists(int64 ntuples)
{
	double l = sqrt((double) ntuples);

	return (int) Max(1.0, Min(l, 1000000.0));
}

static void
build_callback(Relation index, ItemPointer tid, Datum *values, bool *isnull, bool tupleIsAlive,
               void *state)
{
	VidxBuildState *bs = (VidxBuildState *) state;
	MemoryContext old;
	float *v;
	int dims;
	int lbound;

	if (isnull[0])
		return;

	old = MemoryContextSwitchTo(bs->tmpcxt);
	v = vidx_datum_to_vector(index, values[0], InvalidOid, &dims, &lbound, "vector");
	vidx_check_indexable(v, dims, lbound, index);
	if (bs->dims == 0)
	{
		MemoryContextSwitchTo(old);
		vidx_check_posting_fits(index, dims, vidx_index_options(index)->refine_bits);
		bs->dims = dims;
		vidx_sidecar_build_begin(index, dims, bs->build_id);
		MemoryContextSwitchTo(bs->tmpcxt);
	}
	else if (dims != bs->dims)
		ereport(ERROR,
		        (errcode(ERRCODE_DATA_EXCEPTION),
		         errmsg("vector has %d dimensions, but earlier vectors of index \"%s\" have %d",
		                dims, RelationGetRelationName(index), bs->dims)));
	if (bs->metric == VIDX_METRIC_COSINE)
		vidx_check_nonzero(v, dims);
	if (bs->ntuples >= (int64) PG_UINT32_MAX)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
		                errmsg("index \"%s\" cannot hold more than %u vectors",
		                       RelationGetRelationName(index), PG_UINT32_MAX)));

	MemoryContextSwitchTo(old);
	if (bs->ntuples == bs->tids_allocated)
	{
		bs->tids_allocated = Max(bs->tids_allocated * 2, 1024);
		bs->tids =
		    bs->tids == NULL
		        ? MemoryContextAllocHuge(bs->buildcxt, sizeof(VidxHeapTid) * bs->tids_allocated)
		        : repalloc_huge(bs->tids, sizeof(VidxHeapTid) * bs->tids_allocated);
	}
	bs->tids[bs->ntuples].block = ItemPointerGetBlockNumber(tid);
	bs->tids[bs->ntuples].offset = ItemPointerGetOffsetNumber(tid);
	bs->tids[bs->ntuples].pad = 0;
	vidx_sidecar_build_write(bs->ntuples, v);
	bs->ntuples++;

	MemoryContextReset(bs->tmpcxt);
}

/* Called by the core between k-means iterations, on this thread only. */
static int
kmeans_progress(void *arg, int64_t done, int64_t total)
{
	pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_TOTAL, total);
	pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_DONE, done);
	/*
	 * Stop only for a cancel or a termination: other interrupts (a
	 * ProcSignalBarrier, a catch-up) also set InterruptPending, and are served
	 * by the CHECK_FOR_INTERRUPTS after the core returns.
	 */
	return (QueryCancelPending || ProcDiePending) ? 1 : 0;
}

/* ---------- the build's postings: in memory, or in a temporary file ---------- */

/*
 * The encoded postings, in slot order. They stay in memory when they fit in
 * maintenance_work_mem; else they go to a temporary file as each batch is
 * encoded, and the chains are written by reading them back one by one (in
 * leaf order, so ascending slots within a leaf: mostly forward reads of the
 * file's buffer). The temporary file goes with the transaction on error.
 */
typedef struct PostingStore
{
	Size psize;
	char *mem;      /* all postings, or NULL when spilled to file */
	BufFile *file;  /* spilled postings */
	char *batch;    /* the batch being encoded (spilled) */
	int64 file_pos; /* the file's position, in postings */
	char *one;      /* one posting read back from the file */
} PostingStore;

static void
store_init(PostingStore *ps, Relation index, Size psize, int64 n)
{
	memset(ps, 0, sizeof(*ps));
	ps->psize = psize;
	if ((double) psize * n <= (double) maintenance_work_mem * 1024.0)
	{
		ps->mem = MemoryContextAllocHuge(CurrentMemoryContext, psize * n);
		return;
	}
	ereport(DEBUG1,
	        (errmsg("vidx build of \"%s\": %.0f MB of postings exceed "
	                "maintenance_work_mem, they go to a temporary file",
	                RelationGetRelationName(index), (double) psize * n / (1024.0 * 1024.0))));
	ps->file = BufFileCreateTemp(false);
	ps->batch = palloc(psize * VIDX_BUILD_BATCH);
	ps->one = palloc(psize);
}

/* Where the postings of a batch from slot first go (VIDX_BUILD_BATCH at most). */
static char *
store_batch(PostingStore *ps, int64 first)
{
	return ps->mem != NULL ? ps->mem + ps->psize * first : ps->batch;
}

/* After a batch of n postings was encoded into store_batch's buffer. */
static void
store_batch_done(PostingStore *ps, int64 n)
{
	if (ps->mem != NULL)
		return;
	BufFileWrite(ps->file, ps->batch, ps->psize * n);
	ps->file_pos += n;
}

/* The posting of a slot (valid until the next call). */
static const char *
store_get(PostingStore *ps, int64 slot)
{
	size_t got;

	if (ps->mem != NULL)
		return ps->mem + ps->psize * slot;
	if (slot != ps->file_pos &&
	    BufFileSeek(ps->file, 0, (off_t) (slot - ps->file_pos) * (off_t) ps->psize, SEEK_CUR) != 0)
		ereport(ERROR, (errcode_for_file_access(),
		                errmsg("could not seek in the temporary file of a vidx build: %m")));
	got = BufFileRead(ps->file, ps->one, ps->psize);
	if (got != ps->psize)
		ereport(ERROR, (errcode_for_file_access(),
		                errmsg("could not read the temporary file of a vidx build: read %zu of %zu "
		                       "bytes at posting " INT64_FORMAT,
		                       got, ps->psize, slot)));
	ps->file_pos = slot + 1;
	return ps->one;
}

static void
store_free(PostingStore *ps)
{
	if (ps->mem != NULL)
		pfree(ps->mem);
	if (ps->file != NULL)
	{
		BufFileClose(ps->file);
		pfree(ps->batch);
		pfree(ps->one);
	}
}

/* ---------- page writer: main fork through shared buffers, init fork through smgr ---------- */

typedef struct PageWriter
{
	Relation index;
	ForkNumber fork;
	BlockNumber nblocks;
	PGAlignedBlock page;
} PageWriter;

static void
emit_page(PageWriter *w)
{
	Page page = w->page.data;

	if (w->fork == MAIN_FORKNUM)
	{
		Buffer buf = vidx_extend_buffer(w->index);

		if (BufferGetBlockNumber(buf) != w->nblocks)
			elog(ERROR, "vidx: unexpected block %u while building, expected %u",
			     BufferGetBlockNumber(buf), w->nblocks);
		memcpy(BufferGetPage(buf), page, BLCKSZ);
		MarkBufferDirty(buf);
		UnlockReleaseBuffer(buf);
	}
	else
	{
		log_newpage(&RelationGetSmgr(w->index)->smgr_rnode.node, w->fork, w->nblocks, page, true);
		PageSetChecksumInplace(page, w->nblocks);
		smgrextend(RelationGetSmgr(w->index), w->fork, w->nblocks, page, true);
	}
	w->nblocks++;
}

static void
finish_pages(PageWriter *w)
{
	if (w->fork == MAIN_FORKNUM)
	{
		if (RelationNeedsWAL(w->index) && w->nblocks > 0)
			log_newpage_range(w->index, MAIN_FORKNUM, 0, w->nblocks, true);
	}
	else
		smgrimmedsync(RelationGetSmgr(w->index), w->fork);
}

/*
 * Writes the whole index: metapage, tree pages, posting chains. store holds
 * ntuples postings of posting_size bytes in slot order; order lists their
 * slots grouped by leaf in leaf order, counts[l] of them for leaf l.
 */
static void
write_index(PageWriter *w, VidxMetric metric, int dims, int refine_bits, uint64 build_id,
            void *tree, size_t tree_size, PostingStore *store, const uint32 *order, int64 ntuples,
            const uint32 *counts)
{
	const VidxTreeHeader *th = (const VidxTreeHeader *) tree;
	int nleaves = th->nleaves;
	Size psize = vidx_posting_size_refined(dims, refine_bits);
	int per_page = vidx_postings_per_page(dims, refine_bits);
	uint32 tree_pages = vidx_tree_pages(tree_size);
	BlockNumber *heads = palloc(sizeof(BlockNumber) * nleaves);
	BlockNumber next_head = 1 + tree_pages;
	VidxMetaPage meta;
	int64 next = 0;

	/* Chains are laid out leaf after leaf: their head blocks are known now. */
	for (int l = 0; l < nleaves; l++)
	{
		heads[l] = next_head;
		next_head += vidx_chain_pages(counts[l], per_page);
	}
	for (uint32 i = 0; i < th->nnodes; i++)
	{
		VidxTreeNode *node = (VidxTreeNode *) vidx_tree_node(tree, i);

		if (node->nchildren == 0)
			node->head_block = heads[node->leaf_id];
	}

	/* Metapage. */
	vidx_init_page(w->page.data, VIDX_PAGE_META);
	meta = VidxPageGetMeta(w->page.data);
	memset(meta, 0, sizeof(VidxMetaPageData));
	meta->magic = VIDX_MAGIC;
	meta->version = VIDX_FORMAT_VERSION;
	meta->dims = dims;
	meta->metric = metric;
	meta->build_id = build_id;
	meta->rotation_seed = VIDX_ROTATION_SEED;
	meta->tree_start = 1;
	meta->tree_pages = tree_pages;
	meta->tree_bytes = tree_size;
	meta->tree_version = 1;
	meta->nleaves = nleaves;
	meta->levels = th->levels;
	meta->next_slot = ntuples;
	meta->built_tuples = ntuples;
	meta->refine_bits = refine_bits;
	meta->next_leaf_id = nleaves;
	meta->npostings = ntuples;
	meta->graveyard = InvalidBlockNumber;
	meta->graves = 0;
	meta->free_slot_page = InvalidBlockNumber;
	((PageHeader) w->page.data)->pd_lower =
	    ((char *) meta + sizeof(VidxMetaPageData)) - (char *) w->page.data;
	emit_page(w);

	/* Tree pages. */
	for (uint32 i = 0; i < tree_pages; i++)
	{
		size_t off = (size_t) i * VIDX_TREE_PAGE_CAPACITY;
		size_t n = Min((size_t) VIDX_TREE_PAGE_CAPACITY, tree_size - off);

		vidx_init_page(w->page.data, VIDX_PAGE_TREE);
		VidxPageGetOpaque(w->page.data)->next =
		    i + 1 < tree_pages ? w->nblocks + 1 : InvalidBlockNumber;
		VidxPageGetOpaque(w->page.data)->leaf_id = 1; /* the tree version */
		memcpy(PageGetContents(w->page.data), (char *) tree + off, n);
		((PageHeader) w->page.data)->pd_lower =
		    (PageGetContents(w->page.data) + n) - (char *) w->page.data;
		emit_page(w);
	}

	/* Posting chains. */
	for (int l = 0; l < nleaves; l++)
	{
		int npages = vidx_chain_pages(counts[l], per_page);
		uint32 left = counts[l];

		CHECK_FOR_INTERRUPTS();
		for (int pg = 0; pg < npages; pg++)
		{
			VidxPageOpaque opaque;
			int n = Min((uint32) per_page, left);

			vidx_init_page(w->page.data, VIDX_PAGE_POSTING);
			opaque = VidxPageGetOpaque(w->page.data);
			opaque->head = heads[l];
			opaque->leaf_id = l;
			opaque->next = (pg + 1 < npages) ? w->nblocks + 1 : InvalidBlockNumber;
			if (pg == 0)
			{
				opaque->npostings = counts[l];
				opaque->last = heads[l] + npages - 1;
				/* Inserts start at the last page: the build filled the others. */
				opaque->insert_hint = opaque->last;
			}
			for (int i = 0; i < n; i++)
			{
				const char *p = store_get(store, order[next++]);

				if (PageAddItem(w->page.data, (Item) p, psize, InvalidOffsetNumber, false, false) ==
				    InvalidOffsetNumber)
					elog(ERROR, "vidx: failed to add posting to a new page");
			}
			left -= n;
			emit_page(w);
		}
	}
	finish_pages(w);
	pfree(heads);
}

/*
 * Moves a tree blob that the core built (malloc'd) into the current memory
 * context. The blob is freed on every path out, also when the allocation of
 * the copy raises an ERROR: it would stay for the backend's life otherwise.
 */
static void *
tree_to_context(void *blob, size_t size)
{
	void *volatile copy = NULL;

	PG_TRY();
	{
		copy = MemoryContextAllocHuge(CurrentMemoryContext, size);
		memcpy(copy, blob, size);
		if (debug_build_error)
			elog(ERROR, "vidx: error injected while copying the tree (vidx.debug_build_error)");
	}
	PG_FINALLY();
	{
		vidx_tree_free(blob);
	}
	PG_END_TRY();
	return copy;
}

/* The tree of an index with no vector yet: a root and one leaf, no dims. */
static void *
empty_tree(size_t *size)
{
	char err[256];
	float dummy = 0;
	void *blob = vidx_tree_build(&dummy, NULL, 1, 0, VIDX_DEFAULT_FANOUT, VIDX_KMEANS_SEED, size, 1,
	                             err, sizeof(err));

	if (blob == NULL)
		vidx_core_check(VIDX_E_INTERNAL, "tree build", err);
	return tree_to_context(blob, *size);
}

static uint64
new_build_id(void)
{
	return (uint64) GetCurrentTimestamp() ^ ((uint64) MyProcPid << 48);
}

/* Comparator for the sampled slots. */
static int
cmp_int64(const void *a, const void *b)
{
	int64 x = *(const int64 *) a, y = *(const int64 *) b;

	return (x > y) - (x < y);
}

/*
 * Chooses the sample rows (seeded partial Fisher-Yates over the slots), reads
 * them back from the sidecar in slot order and rotates them into a new array.
 */
static float *
sample_vectors(const VidxBuildState *bs, const void *rotation, int64 nsample, int threads)
{
	Size rsize = vidx_sidecar_record_size(bs->dims);
	float *sample;
	int64 *perm;
	char *buf;
	pg_prng_state rng;

	perm = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int64) * bs->ntuples);
	for (int64 i = 0; i < bs->ntuples; i++)
		perm[i] = i;
	if (nsample < bs->ntuples)
	{
		pg_prng_seed(&rng, VIDX_SAMPLE_SEED);
		for (int64 i = 0; i < nsample; i++)
		{
			int64 j = i + (int64) pg_prng_uint64_range(&rng, 0, bs->ntuples - 1 - i);
			int64 t = perm[i];

			perm[i] = perm[j];
			perm[j] = t;
		}
		qsort(perm, nsample, sizeof(int64), cmp_int64);
	}
	sample = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(float) * bs->dims * nsample);
	buf = MemoryContextAllocHuge(CurrentMemoryContext, rsize * VIDX_BUILD_BATCH);
	for (int64 i = 0; i < nsample;)
	{
		int64 n = 0;

		/* A run of consecutive slots is one read. */
		while (n < VIDX_BUILD_BATCH && i + n < nsample)
		{
			int64 run = 1;

			while (n + run < VIDX_BUILD_BATCH && i + n + run < nsample &&
			       perm[i + n + run] == perm[i + n] + run)
				run++;
			vidx_sidecar_build_read(perm[i + n], run, buf + rsize * n);
			n += run;
		}
		vidx_build_rotate(buf, n, rsize, bs->dims, bs->metric, rotation,
		                  sample + (Size) i * bs->dims, threads);
		i += n;
		CHECK_FOR_INTERRUPTS();
	}
	pfree(buf);
	pfree(perm);
	return sample;
}

IndexBuildResult *
vidx_build(Relation heap, Relation index, IndexInfo *indexInfo)
{
	IndexBuildResult *result = palloc0(sizeof(IndexBuildResult));
	VidxOptions *opts = vidx_index_options(index);
	VidxBuildState bs;
	PageWriter *w = palloc0(sizeof(PageWriter));
	double reltuples;
	void *tree;
	size_t tree_size;
	uint32 *counts;
	PostingStore postings;
	uint32 *order;
	int nleaves;
	char err[256];

	TimestampTz build_start = GetCurrentTimestamp();
	TimestampTz t_load = 0, t_kmeans = 0, t_assign = 0, t_write = 0;

	if (RelationGetNumberOfBlocks(index) != 0)
		elog(ERROR, "index \"%s\" already contains data", RelationGetRelationName(index));

	memset(&bs, 0, sizeof(bs));
	bs.index = index;
	bs.metric = vidx_index_metric(index);
	bs.build_id = new_build_id();
	bs.buildcxt = CurrentMemoryContext;
	bs.tmpcxt =
	    AllocSetContextCreate(CurrentMemoryContext, "vidx build tuple", ALLOCSET_DEFAULT_SIZES);

	pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, VIDX_PHASE_LOAD);
	reltuples =
	    table_index_build_scan(heap, index, indexInfo, true, true, build_callback, &bs, NULL);
	t_load = GetCurrentTimestamp();

	w->index = index;
	w->fork = MAIN_FORKNUM;

	if (bs.ntuples == 0)
	{
		uint32 zero = 0;

		/* Nothing to cluster: one leaf; the first insert fixes the dimensions. */
		if (bs.dims > 0)
			vidx_sidecar_build_end();
		pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, VIDX_PHASE_WRITE);
		tree = empty_tree(&tree_size);
		write_index(w, bs.metric, 0, opts->refine_bits, bs.build_id, tree, tree_size, NULL, NULL, 0,
		            &zero);
		vidx_sidecar_sweep(index);
		result->heap_tuples = reltuples;
		result->index_tuples = 0;
		return result;
	}

	/* Leaves: balanced k-means on a sample. */
	{
		int64 nsample;
		float *sample;
		float *centroids;
		int32 *assignment;
		int fanout = opts->fanout > 0 ? opts->fanout : VIDX_DEFAULT_FANOUT;
		Size psize = vidx_posting_size_refined(bs.dims, opts->refine_bits);
		Size rsize = vidx_sidecar_record_size(bs.dims);
		void *rotation;
		char *records;
		float *scratch;
		int threads = vidx_build_thread_count();

		nleaves = opts->lists > 0 ? opts->lists : default_lists(bs.ntuples);
		nleaves = (int) Min((int64) nleaves, bs.ntuples);
		nsample = opts->sample_rows > 0 ? opts->sample_rows : Max(10000, (int64) nleaves * 64);
		nsample = Min(Max(nsample, (int64) nleaves), bs.ntuples);

		rotation = palloc(vidx_rotation_size(bs.dims));
		vidx_rotation_init(rotation, bs.dims, VIDX_ROTATION_SEED);

		pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, VIDX_PHASE_KMEANS);
		sample = sample_vectors(&bs, rotation, nsample, threads);
		centroids = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(float) * bs.dims * nleaves);
		vidx_core_check(vidx_kmeans_balanced(sample, nsample, bs.dims, nleaves,
		                                     opts->kmeans_iterations, VIDX_KMEANS_SEED, centroids,
		                                     threads, kmeans_progress, NULL, err, sizeof(err)),
		                "k-means", err);
		pfree(sample);
		CHECK_FOR_INTERRUPTS();
		t_kmeans = GetCurrentTimestamp();

		/* Assign and encode every vector, read back from the sidecar in batches. */
		pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, VIDX_PHASE_ASSIGN);
		pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_TOTAL, bs.ntuples);
		pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_DONE, 0);
		assignment = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int32) * bs.ntuples);
		store_init(&postings, index, psize, bs.ntuples);
		records = MemoryContextAllocHuge(CurrentMemoryContext, rsize * VIDX_BUILD_BATCH);
		scratch = MemoryContextAllocHuge(CurrentMemoryContext,
		                                 sizeof(float) * bs.dims * VIDX_BUILD_BATCH);
		for (int64 i = 0; i < bs.ntuples; i += VIDX_BUILD_BATCH)
		{
			int64 n = Min((int64) VIDX_BUILD_BATCH, bs.ntuples - i);

			vidx_sidecar_build_read(i, n, records);
			vidx_core_check(vidx_build_encode(records, bs.tids + i, n, rsize, bs.dims,
			                                  opts->refine_bits, bs.metric, rotation, centroids,
			                                  nleaves, (uint32) i, scratch,
			                                  store_batch(&postings, i), assignment + i, threads,
			                                  err, sizeof(err)),
			                "encoding", err);
			store_batch_done(&postings, n);
			pgstat_progress_update_param(PROGRESS_CREATEIDX_TUPLES_DONE, i + n);
			CHECK_FOR_INTERRUPTS();
		}
		vidx_sidecar_build_end();
		pfree(records);
		pfree(bs.tids);
		pfree(scratch);
		elog(DEBUG1, "vidx build: %d leaves, %d threads", nleaves, threads);

		/* Postings in leaf order (a counting sort of the slots; postings stay in place). */
		counts = palloc(sizeof(uint32) * nleaves);
		order = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(uint32) * bs.ntuples);
		vidx_core_check(
		    vidx_build_order(assignment, bs.ntuples, nleaves, counts, order, err, sizeof(err)),
		    "ordering", err);
		pfree(assignment);

		{
			void *blob = vidx_tree_build(centroids, counts, nleaves, bs.dims, fanout,
			                             VIDX_KMEANS_SEED, &tree_size, threads, err, sizeof(err));

			if (blob == NULL)
				vidx_core_check(VIDX_E_NOMEM, "tree build", err);
			tree = tree_to_context(blob, tree_size);
		}
		CHECK_FOR_INTERRUPTS();
		t_assign = GetCurrentTimestamp();

		pfree(centroids);
		pfree(rotation);
	}

	pgstat_progress_update_param(PROGRESS_CREATEIDX_SUBPHASE, VIDX_PHASE_WRITE);
	write_index(w, bs.metric, bs.dims, opts->refine_bits, bs.build_id, tree, tree_size, &postings,
	            order, bs.ntuples, counts);
	store_free(&postings);
	pfree(order);
	t_write = GetCurrentTimestamp();
	/*
	 * The recall curve for vidx.target_recall (calibrate.c), in the metapage:
	 * its exact search may take 8% of the build so far.
	 */
	{
		long secs;
		int usecs;

		TimestampDifference(build_start, GetCurrentTimestamp(), &secs, &usecs);
		vidx_calibrate_index(index, heap, Max(1.0, 0.08 * (secs * 1000.0 + usecs / 1000.0)), 0);
	}
	vidx_sidecar_sweep(index);
	{
		TimestampTz t_end = GetCurrentTimestamp();

		elog(DEBUG1,
		     "vidx build: load %.0f ms, k-means %.0f ms, assign and encode %.0f ms, write %.0f ms, "
		     "calibration %.0f ms",
		     (t_load - build_start) / 1000.0, (t_kmeans - t_load) / 1000.0,
		     (t_assign - t_kmeans) / 1000.0, (t_write - t_assign) / 1000.0,
		     (t_end - t_write) / 1000.0);
	}

	result->heap_tuples = reltuples;
	result->index_tuples = bs.ntuples;
	return result;
}

void
vidx_buildempty(Relation index)
{
	PageWriter *w = palloc0(sizeof(PageWriter));
	size_t tree_size;
	void *tree = empty_tree(&tree_size);
	uint32 zero = 0;

	w->index = index;
	w->fork = INIT_FORKNUM;
	write_index(w, vidx_index_metric(index), 0, vidx_index_options(index)->refine_bits,
	            new_build_id(), tree, tree_size, NULL, NULL, 0, &zero);
}
