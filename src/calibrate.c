/*
 * calibrate.c: the index's recall curve, recall@10 as a function of
 * vidx.probes, measured on the index's own rows and stored in its metapage;
 * vidx.target_recall picks the probes of a scan from it (vidx_scan_probes).
 *
 * A seeded sample of postings are the queries (200; a build drops the
 * last ones, down to 160, 128, 96, 64 or 48, when the pace of its exact
 * search says it would take more than 8% of the build; vidx_calibrate and
 * VACUUM take fewer for big indexes, calib_queries), each
 * excluded from its own answer. Their exact 10 nearest rows come from one
 * pass over every posting's vector (sidecar, else the table), on the build's
 * threads (core: vidx_knn_update). A scan reads the leaves in the order of
 * the tree search and returns the exact best rows of what it read (the codes
 * only decide what is re-scored, and their bounds hold but for a rare
 * probabilistic failure), so a true neighbour is found at p probes exactly
 * when its leaf is among the first p of that order: the curve is the share
 * of true neighbours whose leaf's rank is below p. It costs one tree search
 * per query and no index scan. It assumes the default re-scoring (vidx.rerank
 * = 0); a small re-scoring budget loses more.
 *
 * Measured by the build (after the pages are written, one GenericXLog
 * record), by vidx_calibrate(index), and by VACUUM once the index has twice
 * the postings it was measured on (vidx_calibration_stale). It holds the
 * split lock, so the tree version and its chains hold still.
 */
#include "vidx.h"

#include <math.h>

#include "access/generic_xlog.h"
#include "access/table.h"
#include "access/xlog.h"
#include "catalog/index.h"
#include "common/pg_prng.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "commands/defrem.h"
#include "utils/acl.h"
#include "utils/float.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#define VIDX_CALIB_QUERIES 200
#define VIDX_CALIB_MIN_QUERIES 48
/* vidx_calibrate(index, queries): the sizes one may ask for */
#define VIDX_CALIB_MIN_QUERIES_ASKED 10
#define VIDX_CALIB_MAX_QUERIES 2000
#define VIDX_CALIB_K 10
#define VIDX_CALIB_SEED UINT64CONST(0x63616c6962) /* "calib" */
#define VIDX_CALIB_BATCH 4096
/* An index (re)calibrated by VACUUM: once it has this many postings, and twice its last count. */
#define VIDX_CALIB_MIN_ROWS 1000

/* A posting of the current tree: its header and the tree node of its leaf. */
typedef struct CalibPosting
{
	VidxPosting p;
	int32 node;
} CalibPosting;

/* Every posting of the tree version's chains (share locks, one page at a time). */
static CalibPosting *
collect_postings(Relation index, const void *tree, int64 *n_out)
{
	const VidxTreeHeader *h = (const VidxTreeHeader *) tree;
	int64 n = 0;
	int64 cap = 1024;
	CalibPosting *all = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(CalibPosting) * cap);

	for (uint32 i = 0; i < h->nnodes; i++)
	{
		const VidxTreeNode *node = vidx_tree_node(tree, i);
		BlockNumber blkno = node->head_block;

		if (node->nchildren != 0)
			continue;
		while (BlockNumberIsValid(blkno))
		{
			Buffer buf = ReadBuffer(index, blkno);
			Page page;
			OffsetNumber maxoff;

			LockBuffer(buf, BUFFER_LOCK_SHARE);
			page = BufferGetPage(buf);
			if (!vidx_page_is(page, VIDX_PAGE_POSTING) ||
			    VidxPageGetOpaque(page)->head != node->head_block ||
			    VidxPageGetOpaque(page)->leaf_id != node->leaf_id)
				vidx_version_gone(index, blkno, "posting");
			maxoff = PageGetMaxOffsetNumber(page);
			if (n + maxoff > cap)
			{
				cap = Max(cap * 2, n + maxoff);
				all = repalloc_huge(all, sizeof(CalibPosting) * cap);
			}
			for (OffsetNumber off = FirstOffsetNumber; off <= maxoff; off++)
			{
				ItemId iid = PageGetItemId(page, off);

				if (!ItemIdIsUsed(iid))
					continue;
				memcpy(&all[n].p, PageGetItem(page, iid), sizeof(VidxPosting));
				all[n].node = (int32) i;
				n++;
			}
			blkno = VidxPageGetOpaque(page)->next;
			UnlockReleaseBuffer(buf);
		}
		CHECK_FOR_INTERRUPTS();
	}
	*n_out = n;
	return all;
}

/*
 * The vectors of n postings into out (n x dims): from the sidecar, else from
 * the table (reader not NULL) as the snapshot sees them; found[i] says which.
 */
static void
read_vectors(Relation index, const VidxMetaPageData *meta, VidxTableReader *reader,
             Snapshot snapshot, CalibPosting *const *ps, int n, float *out, bool *found)
{
	const VidxPosting **ptrs = palloc(sizeof(VidxPosting *) * Max(n, 1));

	for (int i = 0; i < n; i++)
		ptrs[i] = &ps[i]->p;
	vidx_sidecar_read_vectors(index, meta, ptrs, n, out, found);
	for (int i = 0; i < n && reader != NULL; i++)
	{
		ItemPointerData tid;
		float *v;

		if (found[i])
			continue;
		ItemPointerSet(&tid, ps[i]->p.heap_block, ps[i]->p.heap_offset);
		v = vidx_table_reader_vector(reader, &tid, snapshot, meta->dims);
		if (v != NULL)
		{
			memcpy(out + (Size) i * meta->dims, v, sizeof(float) * meta->dims);
			found[i] = true;
			pfree(v);
		}
	}
	pfree(ptrs);
}

/* Storage order of two postings: sidecar slot, then heap TID (rows without a record). */
static int
cmp_storage_order(const void *a, const void *b, void *arg)
{
	const CalibPosting *all = (const CalibPosting *) arg;
	const VidxPosting *x = &all[*(const int64 *) a].p;
	const VidxPosting *y = &all[*(const int64 *) b].p;

	if (x->slot != y->slot)
		return x->slot < y->slot ? -1 : 1;
	if (x->heap_block != y->heap_block)
		return x->heap_block < y->heap_block ? -1 : 1;
	return (x->heap_offset > y->heap_offset) - (x->heap_offset < y->heap_offset);
}

/*
 * Queries of a calibration: VIDX_CALIB_QUERIES up to 2 x 10^7 row dimensions
 * (N x D), then fewer, as 1 / sqrt(N x D), down to 48: the exact search costs
 * queries x N x D and must stay within about a tenth of the build (k-means
 * and assignment; Fashion-MNIST, 60,000 x 784: 130 queries, about 0.9 s of a
 * 10 s build on 2 cores; 10^6 x 1024: 48 queries).
 */
static int
calib_queries(int64 n, int dims)
{
	double nd = (double) n * dims;
	double q = nd <= 2e7 ? VIDX_CALIB_QUERIES : VIDX_CALIB_QUERIES * sqrt(2e7 / nd);

	return (int) Min((double) n, Max((double) VIDX_CALIB_MIN_QUERIES, floor(q)));
}

/* Probes of the curve's points: 1 to 16, then 15% apart, the last one every leaf. */
static int
curve_grid(uint32 nleaves, uint32 *probes)
{
	int n = 0;
	uint32 p = 1;

	while (p < nleaves && n < VIDX_CALIB_POINTS - 1)
	{
		probes[n++] = p;
		p = p < 16 ? p + 1 : Max(p + 1, (uint32) ceil(p * 1.15));
	}
	probes[n++] = Max(nleaves, 1);
	return n;
}

void
vidx_calibrate_index(Relation index, Relation heap, double budget_ms, int asked)
{
	TimestampTz t0 = GetCurrentTimestamp();
	MemoryContext cxt =
	    AllocSetContextCreate(CurrentMemoryContext, "vidx calibrate", ALLOCSET_DEFAULT_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	VidxMetaPageData meta;
	VidxTreeCache *cache;
	const VidxTreeHeader *h;
	CalibPosting *all;
	CalibPosting **batch;
	int64 n;
	int64 *pick;
	int nq = 0;
	int k;
	int dims;
	int threads = vidx_build_thread_count();
	float *queries;
	int64 *qid;
	double *top_dist;
	int64 *top_id;
	float *vecs;
	int64 *ids;
	bool *found;
	int64 *hist;
	int64 total = 0;
	int64 *order;
	uint32 probes[VIDX_CALIB_POINTS];
	float recall[VIDX_CALIB_POINTS];
	int npoints;
	VidxTableReader *reader = NULL;
	Snapshot snapshot = NULL;
	pg_prng_state rng;
	TimestampTz pass_start;
	bool paced = false;

	LockPage(index, VIDX_METAPAGE_BLKNO, ExclusiveLock);
	vidx_read_meta(index, &meta);
	dims = (int) meta.dims;
	if (dims == 0)
		goto done; /* nothing was ever inserted */
	cache = vidx_get_tree(index, &meta);
	vidx_tree_pin(cache);
	h = (const VidxTreeHeader *) cache->tree;
	all = collect_postings(index, cache->tree, &n);
	if (n < 2)
	{
		vidx_tree_unpin(cache);
		goto done;
	}
	if (heap != NULL && ActiveSnapshotSet())
	{
		snapshot = GetActiveSnapshot();
		reader = vidx_table_reader_begin(heap, index);
	}
	k = (int) Min((int64) VIDX_CALIB_K, n - 1);

	/* The queries: a seeded sample of the postings (partial Fisher-Yates). */
	nq = asked > 0       ? (int) Min((int64) asked, n)
	     : budget_ms > 0 ? (int) Min((int64) VIDX_CALIB_QUERIES, n)
	                     : calib_queries(n, dims);
	pick = MemoryContextAllocHuge(cxt, sizeof(int64) * n);
	for (int64 i = 0; i < n; i++)
		pick[i] = i;
	pg_prng_seed(&rng, VIDX_CALIB_SEED);
	for (int i = 0; i < nq; i++)
	{
		int64 j = i + (int64) pg_prng_uint64_range(&rng, 0, n - 1 - i);
		int64 t = pick[i];

		pick[i] = pick[j];
		pick[j] = t;
	}
	batch = palloc(sizeof(CalibPosting *) * VIDX_CALIB_BATCH);
	vecs = MemoryContextAllocHuge(cxt, sizeof(float) * dims * VIDX_CALIB_BATCH);
	ids = palloc(sizeof(int64) * VIDX_CALIB_BATCH);
	found = palloc(sizeof(bool) * VIDX_CALIB_BATCH);
	queries = palloc(sizeof(float) * dims * nq);
	qid = palloc(sizeof(int64) * nq);
	for (int i = 0; i < nq; i++)
		batch[i] = &all[pick[i]];
	read_vectors(index, &meta, reader, snapshot, batch, nq, queries, found);
	{
		int m = 0;

		for (int i = 0; i < nq; i++)
			if (found[i])
			{
				memmove(queries + (Size) m * dims, queries + (Size) i * dims, sizeof(float) * dims);
				qid[m++] = pick[i];
			}
		nq = m;
	}
	if (nq == 0)
	{
		vidx_tree_unpin(cache);
		goto done;
	}

	/* Their exact k nearest postings: one pass over every posting's vector. */
	top_dist = palloc(sizeof(double) * nq * k);
	top_id = palloc(sizeof(int64) * nq * k);
	for (int i = 0; i < nq * k; i++)
	{
		top_dist[i] = get_float8_infinity();
		top_id[i] = -1;
	}
	/*
	 * The pass reads the vectors in storage order (sidecar slots, then heap
	 * TIDs), not in the chains' leaf order: the same vectors, but a sequential
	 * read of the sidecar. In leaf order each record was a random read, and
	 * when the sidecar does not fit in memory (10M x 384 in a 4 GB cgroup),
	 * each pulled a readahead window from disk: 74 GB read in 10 minutes.
	 */
	order = MemoryContextAllocHuge(cxt, sizeof(int64) * n);
	for (int64 i = 0; i < n; i++)
		order[i] = i;
	qsort_arg(order, n, sizeof(int64), cmp_storage_order, all);
	pass_start = GetCurrentTimestamp();
	for (int64 b = 0; b < n; b += VIDX_CALIB_BATCH)
	{
		int m = (int) Min((int64) VIDX_CALIB_BATCH, n - b);
		int got = 0;

		/*
		 * Under a time budget (a build's): once a twentieth of the postings
		 * is done, the pass's pace says what it will cost; if over budget,
		 * the last queries of the (random) sample are dropped.
		 */
		if (budget_ms > 0 && !paced && b >= n / 20 && b > 0)
		{
			long secs;
			int usecs;
			double est;

			TimestampDifference(pass_start, GetCurrentTimestamp(), &secs, &usecs);
			est = (secs * 1000.0 + usecs / 1000.0) * (double) n / (double) b;
			if (est > budget_ms)
			{
				/* one of a few sizes, so that builds at about the same pace agree */
				static const int sizes[] = {160, 128, 96, 64, VIDX_CALIB_MIN_QUERIES};
				int want = (int) floor(nq * budget_ms / est);
				int i = 0;

				while (i < (int) lengthof(sizes) - 1 && sizes[i] > want)
					i++;
				nq = Min(nq, sizes[i]);
			}
			paced = true;
		}

		for (int i = 0; i < m; i++)
			batch[i] = &all[order[b + i]];
		read_vectors(index, &meta, reader, snapshot, batch, m, vecs, found);
		for (int i = 0; i < m; i++)
			if (found[i])
			{
				if (got != i)
					memcpy(vecs + (Size) got * dims, vecs + (Size) i * dims, sizeof(float) * dims);
				ids[got++] = order[b + i];
			}
		vidx_knn_update((VidxMetric) meta.metric, queries, nq, qid, vecs, ids, got, dims, k,
		                top_dist, top_id, threads);
		CHECK_FOR_INTERRUPTS();
	}

	/* The rank, in the tree search's order, of each true neighbour's leaf. */
	{
		void *search = palloc(vidx_tree_search_size(cache->tree));
		float *qrot = palloc(sizeof(float) * dims);

		hist = palloc0(sizeof(int64) * (h->nleaves + 1));
		for (int q = 0; q < nq; q++)
		{
			int32 nodes[VIDX_CALIB_K];
			int left = 0;
			int rank = 0;

			for (int j = 0; j < k; j++)
				if (top_id[q * k + j] >= 0)
					nodes[left++] = all[top_id[q * k + j]].node;
			total += left;
			vidx_to_index_space(cache, queries + (Size) q * dims, qrot);
			vidx_tree_search_begin(search, cache->tree, (VidxMetric) meta.metric, qrot);
			while (left > 0)
			{
				float key;
				int32 leaf = vidx_tree_search_next(search, cache->tree, &key);

				if (leaf < 0)
					break;
				for (int j = 0; j < left; j++)
					if (nodes[j] == leaf)
					{
						hist[Min(rank, (int) h->nleaves)]++;
						nodes[j--] = nodes[--left];
					}
				rank++;
			}
		}
	}
	vidx_tree_unpin(cache);
	if (total == 0)
		goto done;

	/* The curve: the share of true neighbours whose leaf is among the first p. */
	npoints = curve_grid(h->nleaves, probes);
	{
		int64 cum = 0;
		uint32 r = 0;

		for (int i = 0; i < npoints; i++)
		{
			while (r < probes[i] && r <= h->nleaves)
				cum += hist[r++];
			recall[i] = (float) ((double) cum / (double) total);
			if (cum == total)
			{
				npoints = i + 1; /* the rest would all be 1 */
				break;
			}
		}
	}

	/* Into the metapage: one WAL record. */
	{
		Buffer buf = ReadBuffer(index, VIDX_METAPAGE_BLKNO);
		GenericXLogState *state;
		Page page;
		VidxMetaPage m;
		XLogRecPtr lsn;
		long secs;
		int usecs;

		LockBuffer(buf, BUFFER_LOCK_EXCLUSIVE);
		state = GenericXLogStart(index);
		page = GenericXLogRegisterBuffer(state, buf, 0);
		m = VidxPageGetMeta(page);
		TimestampDifference(t0, GetCurrentTimestamp(), &secs, &usecs);
		m->calib_npoints = npoints;
		m->calib_k = k;
		m->calib_queries = nq;
		m->calib_rows = n;
		m->calib_time = GetCurrentTimestamp();
		m->calib_tree_version = meta.tree_version;
		m->calib_ms = (uint32) Min(secs * 1000 + usecs / 1000, (long) PG_UINT32_MAX);
		memset(m->calib_probes, 0, sizeof(m->calib_probes));
		memset(m->calib_recall, 0, sizeof(m->calib_recall));
		memcpy(m->calib_probes, probes, sizeof(uint32) * npoints);
		memcpy(m->calib_recall, recall, sizeof(float) * npoints);
		/* (metapages written before the calibration fields end before them) */
		((PageHeader) page)->pd_lower =
		    Max(((PageHeader) page)->pd_lower,
		        (LocationIndex) (((char *) m - (char *) page) + sizeof(VidxMetaPageData)));
		lsn = GenericXLogFinish(state);
		UnlockReleaseBuffer(buf);
		/*
		 * Durable when the caller returns: vidx_calibrate() and VACUUM may
		 * commit without a transaction id, so without a WAL flush of their own.
		 */
		if (RelationNeedsWAL(index))
			XLogFlush(lsn);
	}
	elog(DEBUG1, "vidx calibration of \"%s\": %d queries over " INT64_FORMAT " rows, %d points",
	     RelationGetRelationName(index), nq, n, npoints);

done:
	if (reader != NULL)
		vidx_table_reader_end(reader);
	UnlockPage(index, VIDX_METAPAGE_BLKNO, ExclusiveLock);
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}

bool
vidx_calibration_stale(const VidxMetaPageData *meta)
{
	return meta->dims > 0 && meta->npostings >= VIDX_CALIB_MIN_ROWS &&
	       meta->npostings >= 2 * meta->calib_rows;
}

/*
 * The probes for vidx.target_recall, fractional: where the curve
 * (interpolated linearly between its points) reaches the target plus one
 * standard error of the curve, sqrt(t (1 - t) / (queries x k)) (a curve
 * measured on a sample errs both ways, and a target is a floor). A scan reads
 * its floor or its ceiling (vidx_probes_for_query), so that on average the
 * recall is the interpolated one, also where one more leaf is a big step.
 *
 * An index that grew since its curve was measured has more leaves of the same
 * size, and the same probes read a smaller share of it: the neighbours of a
 * query spread over more leaves, and recall at fixed probes falls (measured:
 * 0.68 at the probes a 6,000-row curve gave, once the index held 60,000).
 * Until VACUUM measures again (at twice the rows), the probes scale with the
 * rows, which keeps the share of the index read: an upper bound of what the
 * grown index needs, at most about twice it when VACUUM keeps up.
 */
double
vidx_scan_probes(const VidxMetaPageData *meta)
{
	double t = vidx_active_target_recall();
	uint32 n = Min(meta->calib_npoints, VIDX_CALIB_POINTS);
	double p = -1;
	double growth;

	if (t <= 0 || n == 0)
		return vidx_probes;
	t = Min(t + sqrt(t * (1 - t) / Max(1, meta->calib_queries * meta->calib_k)), 0.9999);
	for (uint32 i = 0; i < n && p < 0; i++)
	{
		double r1 = meta->calib_recall[i];

		if (r1 < t)
			continue;
		if (i == 0)
			p = Max(meta->calib_probes[0], 1);
		else
		{
			double p0 = meta->calib_probes[i - 1];
			double r0 = meta->calib_recall[i - 1];

			p = Min(p0 + (t - r0) / Max(r1 - r0, 1e-9) * (meta->calib_probes[i] - p0),
			        (double) meta->calib_probes[i]);
		}
	}
	if (p < 0) /* the curve never reaches the target: every leaf */
		return Max(meta->nleaves, meta->calib_probes[n - 1]);
	growth = meta->calib_rows > 0 ? (double) meta->npostings / meta->calib_rows : 1;
	if (growth > 1)
		p = Min(p * growth, Max((double) meta->nleaves, p));
	return p;
}

/*
 * The whole probes of one query's scan: the floor of p, or its ceiling for
 * a share of the queries equal to p's fraction, chosen by a hash of the query
 * vector (the same query always reads the same leaves).
 */
int
vidx_probes_for_query(double p, const float *query, int dims)
{
	double whole = floor(p);
	double u;

	if (p == whole) /* vidx.probes, or a whole number of the curve: no hash needed */
		return (int) Max(1.0, Min(whole, (double) INT_MAX));
	u = (double) vidx_hash32(query, sizeof(float) * (size_t) dims) / 4294967296.0;
	return (int) Max(1.0, Min(whole + (u < p - whole ? 1 : 0), (double) INT_MAX));
}

/*
 * vidx_calibrate(index, queries): measures the curve again now (the index's
 * owner), with queries sampled rows (NULL: the size rule, calib_queries).
 * Returns the points stored.
 */
PG_FUNCTION_INFO_V1(vidx_calibrate);
Datum
vidx_calibrate(PG_FUNCTION_ARGS)
{
	Oid indexoid;
	Oid heapoid;
	Oid am = get_index_am_oid("vidx", false);
	int queries = 0;
	Relation heap;
	Relation index;
	VidxMetaPageData meta;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	indexoid = PG_GETARG_OID(0);
	if (!PG_ARGISNULL(1))
	{
		queries = PG_GETARG_INT32(1);
		if (queries < VIDX_CALIB_MIN_QUERIES_ASKED || queries > VIDX_CALIB_MAX_QUERIES)
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			                errmsg("queries must be between %d and %d",
			                       VIDX_CALIB_MIN_QUERIES_ASKED, VIDX_CALIB_MAX_QUERIES)));
	}
	heapoid = IndexGetRelation(indexoid, true);
	if (!OidIsValid(heapoid))
		ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
		                errmsg("\"%s\" is not an index",
		                       get_rel_name(indexoid) ? get_rel_name(indexoid) : "(unknown)")));
	if (!pg_class_ownercheck(indexoid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, OBJECT_INDEX, get_rel_name(indexoid));
	heap = table_open(heapoid, AccessShareLock);
	index = index_open(indexoid, RowExclusiveLock);
	if (index->rd_rel->relam != am)
		ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
		                errmsg("\"%s\" is not a vidx index", RelationGetRelationName(index))));
	if (RecoveryInProgress())
		ereport(ERROR, (errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
		                errmsg("vidx_calibrate cannot run during recovery"),
		                errhint("Run it on the primary: the curve reaches standbys through WAL.")));
	vidx_calibrate_index(index, heap, 0, queries);
	vidx_read_meta(index, &meta);
	index_close(index, RowExclusiveLock);
	table_close(heap, AccessShareLock);
	PG_RETURN_INT32((int32) meta.calib_npoints);
}
