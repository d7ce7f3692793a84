/*
 * tree_edit.cpp: a new version of a tree blob with one leaf replaced by zero,
 * one or two leaves (a merge, a re-centring, a split), as an index that grows
 * or shrinks online needs.
 *
 * The blob is decoded into nodes with child lists, edited, and written again
 * breadth first in the layout tree.cpp builds and searches (children of a
 * node contiguous, after their parent). A parent left with more than fanout
 * children is split in two by 2-means over its children's centroids, up to
 * the root, which then gets a new root above it (the tree gains a level); a
 * parent left with none is removed. Every ancestor of a changed node gets
 * its centroid (the mean of its children's, weighted by the rows below them)
 * and its radius (the largest distance to a child's centroid plus that
 * child's radius, in double, rounded up) computed again, so the search's
 * bounds stay exact.
 */
#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>
#include <vector>

#include "internal.hpp"

namespace
{

struct ENode
{
	std::vector<float> c;
	std::vector<int32_t> children;
	int32_t parent = -1;
	bool leaf = false;
	bool removed = false;
	uint32_t leaf_id = 0;
	uint32_t head_block = 0;
	uint32_t count = 0; /* leaf: postings; internal: recomputed as leaves below */
	double rows = 0;    /* postings below (weights of the means) */
	float radius = 0;
};

struct Editor
{
	int dims;
	int fanout;
	uint64_t seed;
	std::vector<ENode> nodes;
	int32_t root = 0;

	/* Rows below every node, from the leaves' counts. */
	double sum_rows(int32_t i)
	{
		ENode &n = nodes[i];

		if (n.leaf)
			return n.rows = (double) n.count;
		double s = 0;

		for (int32_t ch : n.children)
			s += sum_rows(ch);
		return n.rows = s;
	}

	/* Centroid (weighted mean of the children's) and radius of an internal node. */
	void refresh(int32_t i)
	{
		ENode &n = nodes[i];
		std::vector<double> s((size_t) dims, 0.0);
		double total = 0;
		uint32_t leaves = 0;

		for (int32_t ch : n.children)
		{
			const ENode &k = nodes[ch];
			/* a child without rows still counts, a little, so the mean is defined */
			double w = std::max(k.rows, 1e-3);

			for (int u = 0; u < dims; u++)
				s[u] += w * k.c[u];
			total += w;
			leaves += k.leaf ? 1 : k.count;
		}
		n.rows = 0;
		for (int32_t ch : n.children)
			n.rows += nodes[ch].rows;
		n.count = leaves;
		if (total > 0)
			for (int u = 0; u < dims; u++)
				n.c[u] = (float) (s[u] / total);

		double r = 0;

		for (int32_t ch : n.children)
		{
			const ENode &k = nodes[ch];
			double dd = 0;

			for (int u = 0; u < dims; u++)
			{
				double t = (double) n.c[u] - (double) k.c[u];

				dd += t * t;
			}
			r = std::max(r, std::sqrt(dd) + (double) k.radius);
		}
		n.radius = vidx::round_up_float(r);
	}

	int32_t add(ENode n)
	{
		nodes.push_back(std::move(n));
		return (int32_t) nodes.size() - 1;
	}

	/*
	 * Splits the children of an internal node in two groups by 2-means over
	 * their centroids (seeded start: the child farthest from the node's
	 * centroid and the child farthest from that one); returns the new
	 * sibling, which takes the second group.
	 */
	int32_t split_internal(int32_t i)
	{
		std::vector<int32_t> ch = nodes[i].children;
		const size_t m = ch.size();
		auto dist2 = [&](const float *a, const float *b)
		{
			double dd = 0;

			for (int u = 0; u < dims; u++)
			{
				double t = (double) a[u] - (double) b[u];

				dd += t * t;
			}
			return dd;
		};
		size_t a = 0, b = 0;
		double best = -1;

		for (size_t j = 0; j < m; j++)
		{
			double d = dist2(nodes[ch[j]].c.data(), nodes[i].c.data());

			if (d > best)
				best = d, a = j;
		}
		best = -1;
		for (size_t j = 0; j < m; j++)
		{
			double d = dist2(nodes[ch[j]].c.data(), nodes[ch[a]].c.data());

			if (d > best)
				best = d, b = j;
		}
		std::vector<float> ca = nodes[ch[a]].c, cb = nodes[ch[b]].c;
		std::vector<uint8_t> side(m, 0);

		for (int it = 0; it < 10; it++)
		{
			bool changed = false;

			for (size_t j = 0; j < m; j++)
			{
				uint8_t s = dist2(nodes[ch[j]].c.data(), cb.data()) <
				                    dist2(nodes[ch[j]].c.data(), ca.data())
				                ? 1
				                : 0;

				changed |= (s != side[j]) || it == 0;
				side[j] = s;
			}
			if (!changed)
				break;
			for (int g = 0; g < 2; g++)
			{
				std::vector<double> s((size_t) dims, 0.0);
				size_t cnt = 0;

				for (size_t j = 0; j < m; j++)
					if (side[j] == g)
					{
						for (int u = 0; u < dims; u++)
							s[u] += nodes[ch[j]].c[u];
						cnt++;
					}
				if (cnt > 0)
				{
					std::vector<float> &c = g == 0 ? ca : cb;

					for (int u = 0; u < dims; u++)
						c[u] = (float) (s[u] / (double) cnt);
				}
			}
		}
		/* Both groups must be non-empty and at most fanout: else split by position. */
		size_t n1 = (size_t) std::count(side.begin(), side.end(), 1);

		if (n1 == 0 || n1 == m || n1 > (size_t) fanout || m - n1 > (size_t) fanout)
			for (size_t j = 0; j < m; j++)
				side[j] = j >= m / 2 ? 1 : 0;

		ENode sib;

		sib.c.assign((size_t) dims, 0.0f);
		sib.parent = nodes[i].parent;
		nodes[i].children.clear();
		int32_t s = add(std::move(sib));

		for (size_t j = 0; j < m; j++)
		{
			int32_t owner = side[j] ? s : i;

			nodes[owner].children.push_back(ch[j]);
			nodes[ch[j]].parent = owner;
		}
		refresh(i);
		refresh(s);
		return s;
	}

	/* Restores the shape above a node whose children changed. */
	void fix_up(int32_t i)
	{
		while (i >= 0)
		{
			ENode &n = nodes[i];
			int32_t parent = n.parent;

			if (n.children.empty())
			{
				/* (the caller never empties the root) */
				n.removed = true;
				auto &pc = nodes[parent].children;

				pc.erase(std::find(pc.begin(), pc.end(), i));
				i = parent;
				continue;
			}
			refresh(i);
			if (n.children.size() > (size_t) fanout)
			{
				int32_t sib = split_internal(i);

				if (parent < 0)
				{
					ENode r;

					r.c.assign((size_t) dims, 0.0f);
					r.children = {i, sib};
					int32_t nr = add(std::move(r));

					nodes[i].parent = nodes[sib].parent = nr;
					root = nr;
					refresh(nr);
					return;
				}
				nodes[parent].children.push_back(sib);
			}
			i = parent;
		}
	}

	/* A root with a single internal child hands the root over to it. */
	void collapse_root()
	{
		while (nodes[root].children.size() == 1 && !nodes[nodes[root].children[0]].leaf)
		{
			int32_t only = nodes[root].children[0];

			nodes[root].removed = true;
			nodes[only].parent = -1;
			root = only;
		}
	}
};

/* Decodes a checked blob. */
void
decode(const void *blob, Editor &ed)
{
	const VidxTreeHeader *h = static_cast<const VidxTreeHeader *>(blob);

	ed.nodes.resize(h->nnodes);
	for (uint32_t i = 0; i < h->nnodes; i++)
	{
		const VidxTreeNode *n = vidx_tree_node(blob, i);
		ENode &e = ed.nodes[i];

		e.c.assign(vidx_tree_centroid(n), vidx_tree_centroid(n) + h->dims);
		e.leaf = n->nchildren == 0;
		e.leaf_id = n->leaf_id;
		e.head_block = n->head_block;
		e.count = n->count;
		e.radius = e.leaf ? 0.0f : n->radius;
		for (int32_t k = 0; k < n->nchildren; k++)
		{
			e.children.push_back(n->first_child + k);
			ed.nodes[n->first_child + k].parent = (int32_t) i;
		}
	}
	ed.root = 0;
	ed.sum_rows(0);
}

/* Writes the tree breadth first; returns the bytes written. */
size_t
encode(const Editor &ed, void *out)
{
	const int dims = ed.dims;
	const size_t nsize = vidx::tree_blob_size(dims, 1) - sizeof(VidxTreeHeader);
	std::vector<int32_t> order{ed.root};
	std::vector<uint32_t> depth{0};
	uint32_t leaves = 0, levels = 0;

	for (size_t k = 0; k < order.size(); k++)
		for (int32_t ch : ed.nodes[order[k]].children)
		{
			order.push_back(ch);
			depth.push_back(depth[k] + 1);
		}
	std::vector<uint32_t> id(ed.nodes.size(), 0);

	for (size_t k = 0; k < order.size(); k++)
		id[order[k]] = (uint32_t) k;

	const size_t size = vidx::tree_blob_size(dims, (int) order.size());

	std::memset(out, 0, size);
	VidxTreeHeader *hdr = static_cast<VidxTreeHeader *>(out);

	for (size_t k = 0; k < order.size(); k++)
	{
		const ENode &e = ed.nodes[order[k]];
		VidxTreeNode *n = reinterpret_cast<VidxTreeNode *>(static_cast<char *>(out) +
		                                                   sizeof(VidxTreeHeader) + k * nsize);

		if (e.leaf)
		{
			n->first_child = -1;
			n->nchildren = 0;
			n->leaf_id = e.leaf_id;
			n->head_block = e.head_block;
			n->radius = 0;
			leaves++;
			levels = std::max(levels, depth[k]);
		}
		else
		{
			n->first_child = (int32_t) id[e.children[0]];
			n->nchildren = (int32_t) e.children.size();
			n->leaf_id = 0;
			n->head_block = 0;
			n->radius = e.radius;
		}
		n->count = e.count;
		if (dims > 0)
			std::memcpy(reinterpret_cast<float *>(n + 1), e.c.data(), 4 * (size_t) dims);
	}
	hdr->magic = VIDX_TREE_MAGIC;
	hdr->dims = (uint32_t) dims;
	hdr->nnodes = (uint32_t) order.size();
	hdr->nleaves = leaves;
	hdr->node_size = (uint32_t) nsize;
	hdr->levels = levels;
	return size;
}

/* The children of every node are contiguous in id order only if written as above. */
int
replace_leaf(const void *tree, size_t tree_size, int32_t leaf, const VidxNewLeaf *leaves, int n,
             int fanout, void *out, size_t out_size, size_t *written, char *err, size_t errlen)
{
	if (vidx_tree_check(tree, tree_size, err, errlen) != VIDX_OK)
		return VIDX_E_INVALID;
	const VidxTreeHeader *h = static_cast<const VidxTreeHeader *>(tree);

	if (leaf <= 0 || (uint32_t) leaf >= h->nnodes || vidx_tree_node(tree, leaf)->nchildren != 0 ||
	    n < 0 || n > 2 || fanout < 2 || (n > 0 && leaves == nullptr))
	{
		vidx::set_err(err, errlen, "invalid leaf replacement (node %d, %d new leaves, fanout %d)",
		              leaf, n, fanout);
		return VIDX_E_INVALID;
	}
	if (n == 0 && h->nleaves == 1)
	{
		vidx::set_err(err, errlen, "the last leaf of a tree cannot be removed");
		return VIDX_E_INVALID;
	}
	if (out_size < vidx_tree_replace_bound(tree))
	{
		vidx::set_err(err, errlen, "output of %zu bytes is too small for the new tree", out_size);
		return VIDX_E_INVALID;
	}

	Editor ed;

	ed.dims = (int) h->dims;
	ed.fanout = fanout;
	decode(tree, ed);

	/* New leaf ids must not clash with the ids kept. */
	for (int k = 0; k < n; k++)
		for (uint32_t i = 0; i < h->nnodes; i++)
		{
			const VidxTreeNode *t = vidx_tree_node(tree, i);

			if (t->nchildren == 0 && (int32_t) i != leaf && t->leaf_id == leaves[k].leaf_id)
			{
				vidx::set_err(err, errlen, "leaf id %u is already in the tree", leaves[k].leaf_id);
				return VIDX_E_INVALID;
			}
		}
	if (n == 2 && leaves[0].leaf_id == leaves[1].leaf_id)
	{
		vidx::set_err(err, errlen, "the new leaves share leaf id %u", leaves[0].leaf_id);
		return VIDX_E_INVALID;
	}
	for (int k = 0; k < n; k++)
		for (int u = 0; u < ed.dims; u++)
			if (!std::isfinite(leaves[k].centroid[u]))
			{
				vidx::set_err(err, errlen, "new leaf %d has a non-finite centroid", k);
				return VIDX_E_INVALID;
			}

	int32_t parent = ed.nodes[leaf].parent;
	auto &pc = ed.nodes[parent].children;

	ed.nodes[leaf].removed = true;
	pc.erase(std::find(pc.begin(), pc.end(), leaf));
	for (int k = 0; k < n; k++)
	{
		ENode e;

		e.leaf = true;
		e.c.assign(leaves[k].centroid, leaves[k].centroid + ed.dims);
		e.leaf_id = leaves[k].leaf_id;
		e.head_block = leaves[k].head_block;
		e.count = leaves[k].count;
		e.rows = (double) leaves[k].count;
		e.parent = parent;
		int32_t id = ed.add(std::move(e));

		ed.nodes[parent].children.push_back(id);
	}
	ed.fix_up(parent);
	ed.collapse_root();
	*written = encode(ed, out);
	return VIDX_OK;
}

} // namespace

extern "C" size_t
vidx_tree_replace_bound(const void *tree) noexcept
{
	const VidxTreeHeader *h = static_cast<const VidxTreeHeader *>(tree);

	/* one more leaf, one sibling per level split, a new root */
	return vidx::tree_blob_size((int) h->dims, (int) h->nnodes + (int) h->levels + 3);
}

extern "C" int
vidx_tree_replace_leaf(const void *tree, size_t tree_size, int32_t leaf, const VidxNewLeaf *leaves,
                       int n, int fanout, void *out, size_t out_size, size_t *written, char *err,
                       size_t errlen) noexcept
{
	try
	{
		return replace_leaf(tree, tree_size, leaf, leaves, n, fanout, out, out_size, written, err,
		                    errlen);
	}
	catch (const std::bad_alloc &)
	{
		vidx::set_err(err, errlen, "out of memory editing the tree");
		return VIDX_E_NOMEM;
	}
	catch (...)
	{
		vidx::set_err(err, errlen, "internal error editing the tree");
		return VIDX_E_INTERNAL;
	}
}
