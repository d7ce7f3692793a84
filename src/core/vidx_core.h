/*
 * vidx_core.h: the C interface of vidx's core library.
 *
 * The core is plain C++17 and includes no PostgreSQL header. This
 * header is the only thing the PostgreSQL glue (plain C) sees of it. Rules:
 *
 *  - every function here is callable from C and never lets a C++ exception
 *    escape: functions that can fail return an int status (VIDX_OK or a
 *    negative VIDX_E* code) and, where given, write a message into err;
 *  - the core never calls back into PostgreSQL except through the progress
 *    callback, which is only ever called from the calling thread, outside any
 *    parallel loop;
 *  - a function that runs in parallel takes `threads`, the most threads it
 *    may use, the caller's included (1 or less: the calling thread alone);
 *    the core never sizes anything from the machine. The other threads come
 *    from the core's own pool (core/threads.cpp): started once, with every
 *    signal blocked, so signals reach only the caller's thread; a thread
 *    that cannot be started means fewer threads, never an error. Results do
 *    not depend on the thread count;
 *  - objects the glue keeps (rotation, query preparation, tree search state)
 *    live in memory the caller allocates (size from a *_size function), so the
 *    glue can put them in a PostgreSQL memory context and nothing leaks when
 *    ereport longjmps. Big temporaries are owned by the core and freed before
 *    the function returns.
 *
 * Vector space conventions: the index works in a rotated space. Every vector
 * and centroid stored in the index is rotated by the index's fixed random
 * orthogonal rotation (vidx_rotation_*); queries are rotated once per scan.
 * L2 distances and inner products are invariant under the rotation. Under the
 * cosine metric vectors are normalized to unit length before rotation, and the
 * index ranks them by L2 distance (monotone in cosine distance on unit vectors).
 */
#ifndef VIDX_CORE_H
#define VIDX_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C"
{
#endif

/* Every function here is noexcept to C++ callers (and to the compiler). */
#ifdef __cplusplus
#define VIDX_NOEXCEPT noexcept
#else
#define VIDX_NOEXCEPT
#endif

#define VIDX_MAX_DIMS 16000
/* A `threads` argument above this counts as this. */
#define VIDX_MAX_THREADS 256

/*
 * The largest absolute value of an element of a vector the index accepts.
 * The index works in float32 (rotated vectors, centroids, posting factors,
 * estimates), so every quantity it squares must stay far from FLT_MAX
 * (3.4e38). With |x_i| <= L and D <= 16,000: every vector and centroid (a
 * mean of vectors) has a norm of at most sqrt(D) L = 1.3e17, in the rotated
 * space too, and the partial sums of the rotation at most D L; residuals and
 * query residuals at most 2 sqrt(D) L, so squared distances, norms and the
 * factors <c, r> at most 4 D L^2 = 6.4e34; the largest estimator term,
 * 2 ||r|| ||qr|| / dot with dot >= 1/sqrt(D), is 8 D^1.5 L^2 = 1.6e37. So
 * 1e15 leaves a margin of 20 under FLT_MAX, and 1e16 would not.
 * Under cosine the index holds normalized vectors, but the limit is the same
 * for every metric (one rule; the exact distances work for any finite input).
 */
#define VIDX_MAX_ELEMENT 1e15f

/* Status codes. */
#define VIDX_OK 0
#define VIDX_E_NOMEM (-1)
#define VIDX_E_INVALID (-2)
#define VIDX_E_CANCELLED (-3)
#define VIDX_E_INTERNAL (-4)

	typedef enum VidxMetric
	{
		VIDX_METRIC_L2 = 1,    /* <->  Euclidean distance */
		VIDX_METRIC_IP = 2,    /* <#>  negative inner product */
		VIDX_METRIC_COSINE = 3 /* <=>  cosine distance */
	} VidxMetric;

	/* ---------- distance kernels (exact, float32 in, float accumulators) ---------- */

	float vidx_l2sq(const float *a, const float *b, int dims) VIDX_NOEXCEPT;
	float vidx_dot(const float *a, const float *b, int dims) VIDX_NOEXCEPT;
	float vidx_norm_sq(const float *a, int dims) VIDX_NOEXCEPT;

	/*
	 * The value the SQL operator returns for the metric on the original vectors:
	 * L2 -> sqrt(l2sq), IP -> -dot, COSINE -> 1 - cos (cos clamped to [-1, 1]).
	 * For COSINE a zero vector gives NaN; callers reject zero vectors first.
	 * Finite and accurate for every finite input: the float kernels' sums are
	 * recomputed in double where they overflow or are small enough for
	 * underflowed terms to matter (below 2^-100).
	 */
	double vidx_distance(VidxMetric metric, const float *a, const float *b, int dims) VIDX_NOEXCEPT;

	/* out = v / ||v|| (norm in double if float overflows or underflows); v must be nonzero. */
	void vidx_normalize(const float *v, float *out, int dims) VIDX_NOEXCEPT;

	/*
	 * VIDX_OK if every element of v is at most VIDX_MAX_ELEMENT in absolute
	 * value (so finite), else VIDX_E_INVALID with *bad_index (if not NULL) the
	 * 0-based position of the first element that is not. The glue calls it
	 * wherever a vector enters the index.
	 */
	int vidx_vector_check_indexable(const float *v, int dims, int *bad_index) VIDX_NOEXCEPT;

	/* ---------- rotation: fixed, seeded, orthogonal, O(D log D) ---------- */

	size_t vidx_rotation_size(int dims) VIDX_NOEXCEPT;
	/* Initializes a rotation in caller memory (vidx_rotation_size bytes). Deterministic in (dims,
	 * seed). */
	void vidx_rotation_init(void *rotation, int dims, uint64_t seed) VIDX_NOEXCEPT;
	/* out = R * in; in and out may alias. */
	void vidx_rotation_apply(const void *rotation, const float *in, float *out) VIDX_NOEXCEPT;

	/* ---------- RaBitQ 1-bit codes ---------- */

	/* A posting as stored in an index page: fixed 32-byte header, then the code. */
	typedef struct VidxPosting
	{
		uint32_t heap_block; /* heap TID */
		uint16_t heap_offset;
		uint16_t flags; /* 0: no flag is in use */
		uint32_t slot;  /* sidecar slot */
		uint32_t vhash; /* vidx_vector_hash of the original vector */
		float norm;     /* ||r||, r = x_rot - c_rot (residual to leaf centroid) */
		float dot;      /* <xbar, r/||r||>, xbar = sign(r)/sqrt(D); 1 when r = 0 */
		float cdot;     /* <c_rot, r> (used by the inner-product metric) */
		uint32_t reserved;
		/* followed by vidx_code_words(dims) uint64_t: bit i = (r_i > 0) */
	} VidxPosting;

	int vidx_code_words(int dims) VIDX_NOEXCEPT;      /* ceil(dims / 64) */
	size_t vidx_posting_size(int dims) VIDX_NOEXCEPT; /* sizeof(VidxPosting) + 8 * words */
	static inline const uint64_t *vidx_posting_code(const VidxPosting *p) VIDX_NOEXCEPT
	{
		return (const uint64_t *) (p + 1);
	}

	/* Fills norm, dot, cdot and the code of p from a rotated vector and its leaf centroid. */
	void vidx_rabitq_encode(const float *x_rot, const float *c_rot, int dims,
	                        VidxPosting *p) VIDX_NOEXCEPT;

	/*
	 * Refinement codes (index option refine_bits, 0 = none): after the sign
	 * code, a posting may carry the residual quantized to 4 or 8 bits per
	 * dimension (uniform, midrise, step scaled to the residual's spread) with
	 * the step and the exact norm of its quantization error. The estimator
	 * then works from it: about 10x (4 bits) or 100x (8 bits) tighter bounds
	 * than the sign code's, so far fewer candidates need their full vector.
	 */
	bool vidx_refine_bits_valid(int refine_bits) VIDX_NOEXCEPT; /* 0, 4 or 8 */
	size_t vidx_posting_size_refined(int dims, int refine_bits) VIDX_NOEXCEPT;
	void vidx_rabitq_encode_refined(const float *x_rot, const float *c_rot, int dims,
	                                int refine_bits, VidxPosting *p) VIDX_NOEXCEPT;

	/*
	 * Per-leaf query preparation: the rotated query's residual to the leaf
	 * centroid, quantized to 4 bits per dimension (bit planes), plus the scalars
	 * the estimator needs, for postings that carry refinement codes of
	 * refine_bits (0: none). Caller memory of vidx_query_prep_size(dims) bytes.
	 */
	size_t vidx_query_prep_size(int dims) VIDX_NOEXCEPT;
	void vidx_query_prep_refined(void *prep, VidxMetric metric, const float *q_rot,
	                             const float *c_rot, int dims, int refine_bits) VIDX_NOEXCEPT;

	/*
	 * Makes the lower bounds of a prepared query hold always (Cauchy-Schwarz
	 * instead of the probabilistic RaBitQ bound, with a margin for float
	 * rounding): for a search that must be exact, at the price of more
	 * candidates re-scored. Call after each vidx_query_prep_refined.
	 */
	void vidx_query_prep_exact_bounds(void *prep) VIDX_NOEXCEPT;

	/*
	 * Estimated score of each posting (lower is better) and a lower bound of the
	 * true score that holds with high probability (3 standard deviations of the
	 * estimate's error: RaBitQ's term and the query's rounding, in quadrature).
	 * Score: L2 and COSINE -> squared L2 distance in the (normalized, rotated)
	 * space; IP -> negative inner product.
	 */
	void vidx_rabitq_estimate(const void *prep, const VidxPosting *const *postings, int n,
	                          float *est, float *lower) VIDX_NOEXCEPT;

	/*
	 * (est, lower) of a posting from its refinement code (prep from
	 * vidx_query_prep_refined with the index's refine_bits; a no-op without).
	 * vidx_rabitq_estimate uses the sign code only: refine the candidates
	 * that can still matter.
	 */
	void vidx_rabitq_refine(const void *prep, const VidxPosting *posting, float *est,
	                        float *lower) VIDX_NOEXCEPT;

	/*
	 * A posting as a scan's candidate: its estimate and lower bound, and what
	 * re-scoring it needs from its header (heap TID, sidecar slot, hash).
	 */
	typedef struct VidxCandidate
	{
		float est;   /* estimated score */
		float lower; /* lower bound of its score */
		uint32_t heap_block;
		uint16_t heap_offset;
		uint8_t rescored; /* the scan's: 0 when made */
		uint8_t reserved;
		uint32_t slot;  /* sidecar slot */
		uint32_t vhash; /* hash of the full vector */
	} VidxCandidate;

	static inline void vidx_candidate_set(VidxCandidate *c, const VidxPosting *p, float est,
	                                      float lower) VIDX_NOEXCEPT
	{
		c->est = est;
		c->lower = lower;
		c->heap_block = p->heap_block;
		c->heap_offset = p->heap_offset;
		c->rescored = 0;
		c->reserved = 0;
		c->slot = p->slot;
		c->vhash = p->vhash;
	}

	/*
	 * One run of postings that share a query preparation, estimated into
	 * out[0 .. n-1] (vidx_candidate_set with vidx_rabitq_estimate's est and
	 * lower): whichever thread estimates a posting copies its header while
	 * it is in that thread's cache.
	 */
	typedef struct VidxEstimateTask
	{
		const void *prep;
		const VidxPosting *const *postings;
		int n;
		VidxCandidate *out;
	} VidxEstimateTask;

	/*
	 * Runs the tasks on up to `threads` threads (1: in the calling
	 * thread). Pure arithmetic over caller memory: no allocation, cannot fail.
	 */
	void vidx_rabitq_estimate_tasks(const VidxEstimateTask *tasks, int ntasks,
	                                int threads) VIDX_NOEXCEPT;

	/* ---------- k-means and tree ---------- */

	/*
	 * Progress callback: called from the calling thread only, between phases or
	 * iterations, never inside a parallel loop. A nonzero return cancels the
	 * operation, which then returns VIDX_E_CANCELLED.
	 */
	typedef int (*VidxProgressFn)(void *arg, int64_t done, int64_t total);

	/*
	 * Lloyd k-means with seeded k-means++ initialization on n x dims points (L2).
	 * Writes k x dims centroids. Empty clusters are re-seeded deterministically.
	 * If n < k, duplicates points so that k centroids are always written.
	 * Deterministic for a given seed whatever the thread count.
	 */
	int vidx_kmeans(const float *points, int64_t n, int dims, int k, int iterations, uint64_t seed,
	                float *centroids, int threads, VidxProgressFn progress, void *progress_arg,
	                char *err, size_t errlen) VIDX_NOEXCEPT;

	/* Nearest centroid (L2) of each point. */
	void vidx_assign(const float *points, int64_t n, int dims, const float *centroids, int k,
	                 int32_t *assignment, int threads) VIDX_NOEXCEPT;

	/* ---------- the index build (core/build.cpp) ---------- */

	/*
	 * The leaves: k-means on the sample with bounded leaf sizes (clusters
	 * above 3x the mean size are split with 2-means while the smallest
	 * cluster gives up its slot; k stays exact). Writes k centroids.
	 * Deterministic for a seed, whatever the thread count.
	 */
	int vidx_kmeans_balanced(const float *points, int64_t n, int dims, int k, int iterations,
	                         uint64_t seed, float *centroids, int threads, VidxProgressFn progress,
	                         void *progress_arg, char *err, size_t errlen) VIDX_NOEXCEPT;

	/*
	 * The vectors of n sidecar records (record_size bytes apart), normalized
	 * under COSINE and rotated, into out (n x dims).
	 */
	void vidx_build_rotate(const void *records, int64_t n, size_t record_size, int dims,
	                       VidxMetric metric, const void *rotation, float *out,
	                       int threads) VIDX_NOEXCEPT;

	/* A row's heap TID, as the build hands it to vidx_build_encode. */
	typedef struct VidxHeapTid
	{
		uint32_t block;
		uint16_t offset;
		uint16_t pad;
	} VidxHeapTid;

	/*
	 * Encodes a batch of n sidecar records (slots first_slot ..) of the rows
	 * at tids[0 .. n-1]: rotates them into scratch (n x dims), assigns each to
	 * its exact nearest of the nleaves leaf centroids into assignment, and
	 * writes n postings of vidx_posting_size_refined(dims, refine_bits) bytes
	 * (the vector's hash computed from the record). The results do not depend
	 * on the thread count.
	 */
	int vidx_build_encode(const void *records, const VidxHeapTid *tids, int64_t n,
	                      size_t record_size, int dims, int refine_bits, VidxMetric metric,
	                      const void *rotation, const float *centroids, int nleaves,
	                      uint32_t first_slot, float *scratch, void *postings, int32_t *assignment,
	                      int threads, char *err, size_t errlen) VIDX_NOEXCEPT;

	/*
	 * The build's postings in leaf order, a counting sort of assignment (n
	 * leaves below nleaves): counts[nleaves] (postings per leaf) and order[n]
	 * (the indexes of leaf 0's postings, then leaf 1's, ..., each in index
	 * order). n must be below 2^32.
	 */
	int vidx_build_order(const int32_t *assignment, int64_t n, int nleaves, uint32_t *counts,
	                     uint32_t *order, char *err, size_t errlen) VIDX_NOEXCEPT;

	/*
	 * Tree blob: the serialized hierarchical tree of centroids, stored verbatim in
	 * the index's tree pages and searched in place. Node 0 is the root. The
	 * children of an internal node are contiguous. Leaves carry leaf_id (0..nleaves-1,
	 * the order of the leaf centroids given to vidx_tree_build) and the block
	 * number of the first page of their posting chain (set by the glue).
	 */
	typedef struct VidxTreeHeader
	{
		uint32_t magic; /* VIDX_TREE_MAGIC */
		uint32_t dims;  /* dims of the centroids (0 for an empty build) */
		uint32_t nnodes;
		uint32_t nleaves;
		uint32_t node_size; /* bytes per node, multiple of 8 */
		uint32_t levels;    /* 1 = the root is the only internal level */
	} VidxTreeHeader;

#define VIDX_TREE_MAGIC 0x56545245 /* "VTRE" */

	typedef struct VidxTreeNode
	{
		int32_t first_child; /* internal: index of first child; leaf: -1 */
		int32_t nchildren;   /* internal: > 0; leaf: 0 */
		uint32_t leaf_id;    /* leaf: 0..nleaves-1 */
		uint32_t head_block; /* leaf: first posting page */
		float radius;        /* max distance from centroid to any leaf centroid below */
		uint32_t count;      /* leaf: postings at build time; internal: leaves below */
		                     /* followed by dims floats: the centroid (rotated space) */
	} VidxTreeNode;

	static inline const VidxTreeNode *vidx_tree_node(const void *tree, uint32_t i) VIDX_NOEXCEPT
	{
		const VidxTreeHeader *h = (const VidxTreeHeader *) tree;

		return (const VidxTreeNode *) ((const char *) tree + sizeof(VidxTreeHeader) +
		                               (size_t) i * h->node_size);
	}

	static inline const float *vidx_tree_centroid(const VidxTreeNode *node) VIDX_NOEXCEPT
	{
		return (const float *) (node + 1);
	}

	/*
	 * Builds a tree over nleaves leaf centroids: when nleaves > fanout, the
	 * centroids are grouped by k-means into parents, recursively, until the root
	 * has at most fanout children. Returns a malloc'd blob (free with
	 * vidx_tree_free) or NULL with err set. counts[i] (may be NULL) is the number
	 * of postings of leaf i. head_block is left 0.
	 */
	void *vidx_tree_build(const float *leaf_centroids, const uint32_t *counts, int nleaves,
	                      int dims, int fanout, uint64_t seed, size_t *blob_size, int threads,
	                      char *err, size_t errlen) VIDX_NOEXCEPT;
	void vidx_tree_free(void *blob) VIDX_NOEXCEPT;
	/*
	 * A leaf for vidx_tree_replace_leaf. Leaf ids are labels, unique within a
	 * tree (an index never gives the same id to two chains), not positions.
	 */
	typedef struct VidxNewLeaf
	{
		const float *centroid; /* dims floats, in the tree's (rotated) space */
		uint32_t count;        /* its postings */
		uint32_t head_block;   /* first page of its chain */
		uint32_t leaf_id;
	} VidxNewLeaf;

	/* Bytes a tree edited by vidx_tree_replace_leaf may need (tree must be checked). */
	size_t vidx_tree_replace_bound(const void *tree) VIDX_NOEXCEPT;

	/*
	 * Writes into out (at least vidx_tree_replace_bound bytes) the tree with
	 * leaf node `leaf` replaced by the n (0, 1 or 2) given leaves: a merge, a
	 * re-centring, a split. A parent left with more than fanout children is
	 * split in two by 2-means over its children's centroids, up to the root
	 * (which then gets a new root: the tree gains a level); a parent left with
	 * none is removed; the root hands over to a single internal child. The
	 * centroids and radii of the changed nodes' ancestors are computed again,
	 * so searches stay exact. The last leaf cannot be removed. Deterministic.
	 */
	int vidx_tree_replace_leaf(const void *tree, size_t tree_size, int32_t leaf,
	                           const VidxNewLeaf *leaves, int n, int fanout, void *out,
	                           size_t out_size, size_t *written, char *err,
	                           size_t errlen) VIDX_NOEXCEPT;

	/* Validates a blob read back from pages (magic, sizes, child ranges, unique leaf ids). */
	int vidx_tree_check(const void *blob, size_t size, char *err, size_t errlen) VIDX_NOEXCEPT;

	/*
	 * Best-first search: yields leaves in order of increasing key, where a
	 * leaf's key is its centroid's distance to the query (L2: Euclidean distance,
	 * IP: negative inner product) and an internal node's key is a lower bound of
	 * the keys of all leaves below it (from its radius), so leaves come out in
	 * exact centroid order whatever the tree's shape. State lives in caller memory.
	 */
	size_t vidx_tree_search_size(const void *tree) VIDX_NOEXCEPT;
	void vidx_tree_search_begin(void *state, const void *tree, VidxMetric metric,
	                            const float *q_rot) VIDX_NOEXCEPT;
	/* Index of the next nearest leaf node, or -1 when all leaves were returned. */
	int32_t vidx_tree_search_next(void *state, const void *tree, float *key) VIDX_NOEXCEPT;

	/* ---------- exact k nearest neighbours (core/recall.cpp) ---------- */

	/*
	 * Merges n vectors (data, n x dims, named by ids) into the k nearest so
	 * far of each of nq queries (queries, nq x dims): top_dist and top_id
	 * (nq x k each, ascending; start at +infinity and -1). Distances are the
	 * SQL operator's (as vidx_distance), from the float kernels (to about
	 * 1e-6 relative; under COSINE 1e-7 absolute). A vector whose id is
	 * exclude[q] (exclude may be NULL) is not a neighbour of query q. Ties
	 * keep the first id seen. On threads threads, 16 queries to a task.
	 */
	void vidx_knn_update(VidxMetric metric, const float *queries, int nq, const int64_t *exclude,
	                     const float *data, const int64_t *ids, int64_t n, int dims, int k,
	                     double *top_dist, int64_t *top_id, int threads) VIDX_NOEXCEPT;

/* ---------- sidecar file format ---------- */

/*
 * The sidecar is a flat file: a 4096-byte header, then one fixed-size record
 * per slot, the original float32 vector zero-padded to a multiple of 16 bytes
 * (format 2; format 1 records began with a 16-byte heap TID and hash, so a
 * 1024-d record straddled two 4 kB pages). Record i starts at
 * VIDX_SIDECAR_HEADER_SIZE + i * record_size: at 1024 dimensions each record
 * is one page. A record is used only if its vector hashes to the hash of the
 * posting that points at it: the vector the posting was encoded from, whatever
 * row wrote the slot (a row with the same vector gives the same distance).
 */
#define VIDX_SIDECAR_MAGIC 0x5649445853494443ULL /* "VIDXSIDC" */
#define VIDX_SIDECAR_VERSION 2
#define VIDX_SIDECAR_HEADER_SIZE 4096

	typedef struct VidxSidecarHeader
	{
		uint64_t magic;
		uint32_t version;
		uint32_t dims;
		uint32_t record_size;
		uint32_t db_oid;
		uint32_t index_oid;
		uint32_t relfilenode;
		uint64_t build_id; /* matches the metapage's build_id */
		uint32_t checksum; /* vidx_hash32 of the bytes before this field */
		uint32_t pad;
	} VidxSidecarHeader;

	uint32_t vidx_hash32(const void *data, size_t len) VIDX_NOEXCEPT;
	uint32_t vidx_vector_hash(const float *v, int dims) VIDX_NOEXCEPT;
	size_t vidx_sidecar_record_size(int dims) VIDX_NOEXCEPT; /* multiple of 16 */
	/* Fills a header (magic, version, record_size, checksum). */
	void vidx_sidecar_header_init(VidxSidecarHeader *h, int dims, uint32_t db_oid,
	                              uint32_t index_oid, uint32_t relfilenode,
	                              uint64_t build_id) VIDX_NOEXCEPT;
	/* VIDX_OK if h is a valid header for these identifiers, else VIDX_E_INVALID with err set. */
	int vidx_sidecar_header_check(const VidxSidecarHeader *h, int dims, uint32_t db_oid,
	                              uint32_t index_oid, uint32_t relfilenode, uint64_t build_id,
	                              char *err, size_t errlen) VIDX_NOEXCEPT;
	/* Formats a record (record_size bytes at rec) for a vector. */
	void vidx_sidecar_record_fill(void *rec, int dims, const float *v) VIDX_NOEXCEPT;
	/* The record's vector if it hashes to vhash (the posting's hash), else NULL. */
	const float *vidx_sidecar_record_vector(const void *rec, int dims,
	                                        uint32_t vhash) VIDX_NOEXCEPT;

#ifdef __cplusplus
}
#endif

#endif /* VIDX_CORE_H */
