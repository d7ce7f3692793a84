/*
 * tree.cpp: the hierarchical tree of centroids (build, validation, best-first
 * search in place).
 *
 * Blob layout: VidxTreeHeader, then nnodes nodes of node_size bytes each
 * (VidxTreeNode + dims floats, rounded up to 8). Nodes are laid out breadth
 * first: node 0 is the root, the children of every internal node are
 * contiguous and come after their parent, and every level is contiguous.
 */
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <vector>

#include "internal.hpp"

namespace
{

constexpr uint32_t SEARCH_MAGIC = 0x56535243; /* "VSRC" */
constexpr int KMEANS_ITERATIONS = 20;

size_t
node_size_for(int dims)
{
	return (sizeof(VidxTreeNode) + 4 * (size_t) dims + 7) & ~(size_t) 7;
}

inline VidxTreeNode *
node_at(void *tree, size_t node_size, uint32_t i)
{
	return reinterpret_cast<VidxTreeNode *>(static_cast<char *>(tree) + sizeof(VidxTreeHeader) +
	                                        (size_t) i * node_size);
}

/* A node while building. */
struct BNode
{
	std::vector<float> c;
	double wsum = 0;      /* sum of leaf weights below */
	int64_t nleaf = 0;    /* leaves below (1 for a leaf) */
	int32_t leaf_id = -1; /* leaves only */
	uint32_t count = 0;
	float radius = 0;
	std::vector<int32_t> children; /* indices into the level below */
	uint32_t id = 0;               /* final node index */
};

BNode
make_parent(const std::vector<BNode> &below, std::vector<int32_t> children, int dims)
{
	BNode p;
	std::vector<double> s((size_t) dims, 0.0);

	p.children = std::move(children);
	for (int32_t ch : p.children)
	{
		p.wsum += below[ch].wsum;
		p.nleaf += below[ch].nleaf;
	}
	bool weighted = p.wsum > 0;

	for (int32_t ch : p.children)
	{
		double w = weighted ? below[ch].wsum : (double) below[ch].nleaf;
		const float *c = below[ch].c.data();

		for (int u = 0; u < dims; u++)
			s[u] += w * c[u];
	}
	double total = weighted ? p.wsum : (double) p.nleaf;

	p.c.resize((size_t) dims);
	for (int u = 0; u < dims; u++)
		p.c[u] = (float) (s[u] / total);

	/* Radius from the float centroid as stored, in double, rounded up. */
	double r = 0;

	for (int32_t ch : p.children)
	{
		double dd = 0;
		const float *c = below[ch].c.data();

		for (int u = 0; u < dims; u++)
		{
			double t = (double) p.c[u] - (double) c[u];

			dd += t * t;
		}
		r = std::max(r, std::sqrt(dd) + (double) below[ch].radius);
	}
	p.radius = vidx::round_up_float(r);
	p.count = (uint32_t) std::min<int64_t>(p.nleaf, UINT32_MAX);
	return p;
}

void *
tree_build(const float *leaf_centroids, const uint32_t *counts, int nleaves, int dims, int fanout,
           uint64_t seed, size_t *blob_size, int threads, char *err, size_t errlen)
{
	if (nleaves < 0 || dims < 0 || dims > VIDX_MAX_DIMS || fanout < 2 || nleaves > (1 << 28) ||
	    (nleaves > 0 && dims > 0 && leaf_centroids == nullptr))
	{
		vidx::set_err(err, errlen, "invalid tree build arguments (nleaves=%d, dims=%d, fanout=%d)",
		              nleaves, dims, fanout);
		return nullptr;
	}

	std::vector<std::vector<BNode>> levels(1);
	std::vector<BNode> &leaves = levels[0];

	if (nleaves == 0)
	{
		/* Empty build: one leaf at the origin. */
		leaves.resize(1);
		leaves[0].c.assign((size_t) dims, 0.0f);
		leaves[0].wsum = 0;
		leaves[0].nleaf = 1;
		leaves[0].leaf_id = 0;
	}
	else
	{
		leaves.resize((size_t) nleaves);
		for (int i = 0; i < nleaves; i++)
		{
			BNode &l = leaves[i];

			l.c.assign(leaf_centroids + (size_t) i * dims,
			           leaf_centroids + (size_t) (i + 1) * dims);
			l.wsum = counts ? (double) counts[i] : 1.0;
			l.nleaf = 1;
			l.leaf_id = i;
			l.count = counts ? counts[i] : 0;
		}
	}

	/* Group recursively until at most fanout nodes remain. */
	for (int lvl = 0; levels.back().size() > (size_t) fanout; lvl++)
	{
		const std::vector<BNode> &cur = levels.back();
		int64_t nc = (int64_t) cur.size();
		int k = (int) ((nc + fanout - 1) / fanout);
		std::vector<int32_t> assign((size_t) nc);

		if (dims > 0)
		{
			std::vector<float> pts((size_t) nc * dims), cent((size_t) k * dims);

			for (int64_t i = 0; i < nc; i++)
				std::memcpy(pts.data() + (size_t) i * dims, cur[i].c.data(), 4 * (size_t) dims);
			int rc = vidx::kmeans_run(pts.data(), nc, dims, k, KMEANS_ITERATIONS,
			                          seed + 0x9E3779B97F4A7C15ULL * (uint64_t) (lvl + 1),
			                          cent.data(), threads, nullptr, nullptr, err, errlen);

			if (rc != VIDX_OK)
				return nullptr;
			vidx::assign_points(pts.data(), nc, dims, cent.data(), k, assign.data(), nullptr,
			                    threads);
		}
		else
		{
			for (int64_t i = 0; i < nc; i++)
				assign[i] = (int32_t) (i / fanout);
		}

		std::vector<std::vector<int32_t>> groups((size_t) k);

		for (int64_t i = 0; i < nc; i++)
			groups[assign[i]].push_back((int32_t) i);
		std::vector<BNode> parents;

		for (auto &g : groups)
			if (!g.empty())
				parents.push_back(make_parent(cur, std::move(g), dims));
		levels.push_back(std::move(parents));
	}

	/* The root: the top node itself if it is a single internal node. */
	if (!(levels.size() > 1 && levels.back().size() == 1))
	{
		std::vector<int32_t> all(levels.back().size());

		for (size_t i = 0; i < all.size(); i++)
			all[i] = (int32_t) i;
		std::vector<BNode> top;

		top.push_back(make_parent(levels.back(), std::move(all), dims));
		levels.push_back(std::move(top));
	}

	/* Number nodes breadth first, level by level from the root. */
	uint32_t nnodes = 0;

	for (const auto &lv : levels)
		nnodes += (uint32_t) lv.size();
	const size_t nsize = node_size_for(dims);
	const size_t size = vidx::tree_blob_size(dims, (int) nnodes);
	void *blob = std::calloc(1, size);

	if (blob == nullptr)
	{
		vidx::set_err(err, errlen, "out of memory allocating a tree of %zu bytes", size);
		return nullptr;
	}

	VidxTreeHeader *hdr = static_cast<VidxTreeHeader *>(blob);

	hdr->magic = VIDX_TREE_MAGIC;
	hdr->dims = (uint32_t) dims;
	hdr->nnodes = nnodes;
	hdr->nleaves = (uint32_t) levels[0].size();
	hdr->node_size = (uint32_t) nsize;
	hdr->levels = (uint32_t) (levels.size() - 1);

	uint32_t next = 1;

	levels.back()[0].id = 0;
	for (size_t lv = levels.size() - 1; lv > 0; lv--)
	{
		/* Parents of this level in id order (they are numbered in order). */
		for (BNode &p : levels[lv])
			for (int32_t ch : p.children)
				levels[lv - 1][ch].id = next++;
	}

	for (size_t lv = 0; lv < levels.size(); lv++)
	{
		for (const BNode &b : levels[lv])
		{
			VidxTreeNode *n = node_at(blob, nsize, b.id);

			if (lv == 0)
			{
				n->first_child = -1;
				n->nchildren = 0;
				n->leaf_id = (uint32_t) b.leaf_id;
			}
			else
			{
				n->first_child = (int32_t) levels[lv - 1][b.children[0]].id;
				n->nchildren = (int32_t) b.children.size();
				n->leaf_id = 0;
			}
			n->head_block = 0;
			n->radius = b.radius;
			n->count = b.count;
			if (dims > 0)
				std::memcpy(reinterpret_cast<float *>(n + 1), b.c.data(), 4 * (size_t) dims);
		}
	}
	if (blob_size)
		*blob_size = size;
	return blob;
}

/* ---------- search ---------- */

struct HeapEntry
{
	double key; /* double: inner products of tiny vectors are below float's range */
	double tie; /* orders equal keys (see node_key), then the node index */
	int32_t node;
	int32_t pad;
};

struct SearchHeader
{
	uint32_t magic;
	int32_t metric;
	int32_t dims;
	uint32_t capacity;
	uint32_t size;
	uint32_t pad;
	double qnorm;
	double qsq; /* ||q||^2 */

	/* followed by the query (dims floats, padded to 8), then the heap */
};

/* L2 leaves whose squared distance is within this fraction of ||q||^2 (see node_key). */
constexpr double ORIGIN_BAND = 0x1p-20;

size_t
query_bytes(int dims)
{
	return (4 * (size_t) dims + 7) & ~(size_t) 7;
}

inline float *
state_query(SearchHeader *s)
{
	return reinterpret_cast<float *>(s + 1);
}

inline HeapEntry *
state_heap(SearchHeader *s)
{
	return reinterpret_cast<HeapEntry *>(reinterpret_cast<char *>(s + 1) + query_bytes(s->dims));
}

inline bool
before(const HeapEntry &a, const HeapEntry &b)
{
	return a.key < b.key ||
	       (a.key == b.key && (a.tie < b.tie || (a.tie == b.tie && a.node < b.node)));
}

void
heap_push(SearchHeader *s, HeapEntry e)
{
	if (s->size >= s->capacity)
		return; /* cannot happen on a checked tree */
	HeapEntry *h = state_heap(s);
	uint32_t i = s->size++;

	while (i > 0)
	{
		uint32_t parent = (i - 1) / 2;

		if (!before(e, h[parent]))
			break;
		h[i] = h[parent];
		i = parent;
	}
	h[i] = e;
}

HeapEntry
heap_pop(SearchHeader *s)
{
	HeapEntry *h = state_heap(s);
	HeapEntry top = h[0];
	HeapEntry last = h[--s->size];
	uint32_t n = s->size, i = 0;

	while (true)
	{
		uint32_t c = 2 * i + 1;

		if (c >= n)
			break;
		if (c + 1 < n && before(h[c + 1], h[c]))
			c++;
		if (!before(h[c], last))
			break;
		h[i] = h[c];
		i = c;
	}
	if (n > 0)
		h[i] = last;
	return top;
}

/*
 * Key of a node. Leaves: the exact key. Internal nodes: a lower bound of the
 * keys of all leaves below, loosened by a small relative slack so float
 * rounding in the kernels cannot make it exceed a leaf's computed key. The
 * kernels' sums are recomputed in double where they underflowed (tiny
 * vectors), and keys are doubles, so that leaves come out in order at every
 * scale.
 *
 * L2 leaves about as far from the query as the origin is (within
 * ORIGIN_BAND): a long query among short centroids, e.g. a vector near the
 * limit in an index of small ones. Float cannot tell their distances apart,
 * so they share the key ||q|| and are ordered by g = d^2 - ||q||^2 =
 * ||c||^2 - 2 <q, c>, whose error is relative to ||q|| ||c||, not to
 * ||q||^2. (Otherwise an insert would go to an arbitrary one of them, not
 * to the leaf an inner-product search for that vector reads first.) The
 * internal nodes' slack, 1e-4, is far wider than the band.
 */
HeapEntry
node_key(const SearchHeader *s, const VidxTreeNode *n, int32_t id)
{
	const float *q = reinterpret_cast<const float *>(s + 1);
	const float *c = vidx_tree_centroid(n);
	bool leaf = n->nchildren == 0;
	HeapEntry e{0.0, 0.0, id, 0};

	if (s->metric == VIDX_METRIC_IP)
	{
		float fdot = vidx_dot(q, c, s->dims);
		double dot = vidx::float_sum_ok(fdot) ? (double) fdot : vidx::dot_double(q, c, s->dims);

		if (leaf)
			e.key = -dot;
		else
		{
			double cn = std::sqrt((double) vidx_norm_sq(c, s->dims));
			double r = n->radius;

			e.key = -dot - s->qnorm * r - 1e-4 * s->qnorm * (cn + r) - 1e-30;
		}
	}
	else
	{
		float l2 = vidx_l2sq(q, c, s->dims);
		double d2 = vidx::float_sum_ok(l2) ? (double) l2 : vidx::l2sq_double(q, c, s->dims);
		double d = std::sqrt(d2);

		if (!leaf)
		{
			double r = n->radius;

			e.key = std::max(0.0, d - r - 1e-4 * (d + r));
		}
		else if (std::fabs(d2 - s->qsq) <= ORIGIN_BAND * s->qsq && s->qsq > 0)
		{
			float cc = vidx_norm_sq(c, s->dims), qc = vidx_dot(q, c, s->dims);

			e.key = s->qnorm;
			e.tie = (vidx::float_sum_ok(cc) ? (double) cc : vidx::dot_double(c, c, s->dims)) -
			        2.0 * (vidx::float_sum_ok(qc) ? (double) qc : vidx::dot_double(q, c, s->dims));
		}
		else
			e.key = d;
	}
	if (std::isnan(e.key))
		e.key = std::numeric_limits<double>::infinity();
	return e;
}

} // namespace

extern "C" void *
vidx_tree_build(const float *leaf_centroids, const uint32_t *counts, int nleaves, int dims,
                int fanout, uint64_t seed, size_t *blob_size, int threads, char *err,
                size_t errlen) noexcept
{
	try
	{
		return tree_build(leaf_centroids, counts, nleaves, dims, fanout, seed, blob_size, threads,
		                  err, errlen);
	}
	catch (const std::bad_alloc &)
	{
		vidx::set_err(err, errlen, "out of memory building the tree (%d leaves, dims %d)", nleaves,
		              dims);
		return nullptr;
	}
	catch (...)
	{
		vidx::set_err(err, errlen, "internal error building the tree");
		return nullptr;
	}
}

extern "C" void
vidx_tree_free(void *blob) noexcept
{
	std::free(blob);
}

size_t
vidx::tree_blob_size(int dims, int nnodes) noexcept
{
	if (dims < 0)
		dims = 0;
	if (nnodes < 0)
		nnodes = 0;
	return sizeof(VidxTreeHeader) + (size_t) nnodes * node_size_for(dims);
}

extern "C" int
vidx_tree_check(const void *blob, size_t size, char *err, size_t errlen) noexcept
{
	try
	{
		if (blob == nullptr || size < sizeof(VidxTreeHeader))
		{
			vidx::set_err(err, errlen, "tree blob too small (%zu bytes)", size);
			return VIDX_E_INVALID;
		}
		const VidxTreeHeader *h = static_cast<const VidxTreeHeader *>(blob);

		if (h->magic != VIDX_TREE_MAGIC)
		{
			vidx::set_err(err, errlen, "bad tree magic 0x%08x", h->magic);
			return VIDX_E_INVALID;
		}
		if (h->dims > VIDX_MAX_DIMS)
		{
			vidx::set_err(err, errlen, "tree dims %u out of range", h->dims);
			return VIDX_E_INVALID;
		}
		const int dims = (int) h->dims;

		if (h->node_size != node_size_for(dims))
		{
			vidx::set_err(err, errlen, "tree node size %u != %zu for dims %d", h->node_size,
			              node_size_for(dims), dims);
			return VIDX_E_INVALID;
		}
		if (h->nnodes < 2 || h->nnodes > (size - sizeof(VidxTreeHeader)) / h->node_size)
		{
			vidx::set_err(err, errlen, "tree has %u nodes of %u bytes, inconsistent with %zu bytes",
			              h->nnodes, h->node_size, size);
			return VIDX_E_INVALID;
		}
		const uint32_t nnodes = h->nnodes;

		if (h->nleaves < 1 || h->nleaves >= nnodes)
		{
			vidx::set_err(err, errlen, "tree has %u leaves for %u nodes", h->nleaves, nnodes);
			return VIDX_E_INVALID;
		}
		if (h->levels < 1 || h->levels >= nnodes)
		{
			vidx::set_err(err, errlen, "tree has %u levels for %u nodes", h->levels, nnodes);
			return VIDX_E_INVALID;
		}

		std::vector<uint32_t> depth(nnodes, 0);
		std::vector<uint8_t> has_parent(nnodes, 0);
		std::vector<uint32_t> leaf_ids;
		uint32_t leaves = 0, max_depth = 0;

		for (uint32_t i = 0; i < nnodes; i++)
		{
			const VidxTreeNode *n = vidx_tree_node(blob, i);

			if (i > 0 && !has_parent[i])
			{
				vidx::set_err(err, errlen, "tree node %u is not the child of an earlier node", i);
				return VIDX_E_INVALID;
			}
			if (!std::isfinite(n->radius) || n->radius < 0)
			{
				vidx::set_err(err, errlen, "tree node %u has a bad radius", i);
				return VIDX_E_INVALID;
			}
			const float *c = vidx_tree_centroid(n);

			for (int u = 0; u < dims; u++)
				if (!std::isfinite(c[u]))
				{
					vidx::set_err(err, errlen, "tree node %u has a non-finite centroid", i);
					return VIDX_E_INVALID;
				}
			if (n->nchildren == 0)
			{
				if (i == 0)
				{
					vidx::set_err(err, errlen, "tree root is a leaf");
					return VIDX_E_INVALID;
				}
				if (n->first_child != -1)
				{
					vidx::set_err(err, errlen, "tree leaf %u has first_child %d", i,
					              n->first_child);
					return VIDX_E_INVALID;
				}
				leaf_ids.push_back(n->leaf_id);
				leaves++;
				max_depth = std::max(max_depth, depth[i]);
			}
			else
			{
				int64_t first = n->first_child, cnt = n->nchildren;

				if (cnt < 0 || first <= (int64_t) i || first + cnt > (int64_t) nnodes)
				{
					vidx::set_err(err, errlen, "tree node %u has bad children [%d, +%d)", i,
					              n->first_child, n->nchildren);
					return VIDX_E_INVALID;
				}
				for (int64_t ch = first; ch < first + cnt; ch++)
				{
					if (has_parent[ch])
					{
						vidx::set_err(err, errlen, "tree node %lld has two parents",
						              (long long) ch);
						return VIDX_E_INVALID;
					}
					has_parent[ch] = 1;
					depth[ch] = depth[i] + 1;
				}
			}
		}
		std::sort(leaf_ids.begin(), leaf_ids.end());
		if (std::adjacent_find(leaf_ids.begin(), leaf_ids.end()) != leaf_ids.end())
		{
			vidx::set_err(err, errlen, "tree has two leaves with leaf_id %u",
			              *std::adjacent_find(leaf_ids.begin(), leaf_ids.end()));
			return VIDX_E_INVALID;
		}
		if (leaves != h->nleaves)
		{
			vidx::set_err(err, errlen, "tree has %u leaf nodes, header says %u", leaves,
			              h->nleaves);
			return VIDX_E_INVALID;
		}
		if (max_depth != h->levels)
		{
			vidx::set_err(err, errlen, "tree depth %u != header levels %u", max_depth, h->levels);
			return VIDX_E_INVALID;
		}
		return VIDX_OK;
	}
	catch (const std::bad_alloc &)
	{
		vidx::set_err(err, errlen, "out of memory checking the tree");
		return VIDX_E_NOMEM;
	}
	catch (...)
	{
		vidx::set_err(err, errlen, "internal error checking the tree");
		return VIDX_E_INTERNAL;
	}
}

extern "C" size_t
vidx_tree_search_size(const void *tree) noexcept
{
	const VidxTreeHeader *h = static_cast<const VidxTreeHeader *>(tree);

	return sizeof(SearchHeader) + query_bytes((int) h->dims) +
	       sizeof(HeapEntry) * (size_t) h->nnodes;
}

extern "C" void
vidx_tree_search_begin(void *state, const void *tree, VidxMetric metric,
                       const float *q_rot) noexcept
{
	const VidxTreeHeader *h = static_cast<const VidxTreeHeader *>(tree);
	SearchHeader *s = static_cast<SearchHeader *>(state);

	std::memset(s, 0, sizeof(*s));
	s->magic = SEARCH_MAGIC;
	s->metric = (int32_t) metric;
	s->dims = (int32_t) h->dims;
	s->capacity = h->nnodes;
	s->size = 0;
	if (h->dims > 0)
		std::memcpy(state_query(s), q_rot, 4 * (size_t) h->dims);
	float qsq = vidx_norm_sq(state_query(s), s->dims);

	s->qsq = vidx::float_sum_ok(qsq) ? (double) qsq
	                                 : vidx::dot_double(state_query(s), state_query(s), s->dims);
	s->qnorm = std::sqrt(s->qsq);
	if (h->nnodes == 0)
		return;

	heap_push(s, node_key(s, vidx_tree_node(tree, 0), 0));
}

extern "C" int32_t
vidx_tree_search_next(void *state, const void *tree, float *key) noexcept
{
	SearchHeader *s = static_cast<SearchHeader *>(state);
	const VidxTreeHeader *h = static_cast<const VidxTreeHeader *>(tree);

	while (s->size > 0)
	{
		HeapEntry e = heap_pop(s);
		const VidxTreeNode *n = vidx_tree_node(tree, (uint32_t) e.node);

		if (n->nchildren <= 0)
		{
			if (key)
				*key = (float) e.key;
			return e.node;
		}
		int64_t first = n->first_child;
		int64_t end = first + n->nchildren;

		if (first <= e.node || end > (int64_t) h->nnodes)
			continue; /* corrupted: skip rather than crash */
		for (int64_t ch = first; ch < end; ch++)
			heap_push(s, node_key(s, vidx_tree_node(tree, (uint32_t) ch), (int32_t) ch));
	}
	return -1;
}
