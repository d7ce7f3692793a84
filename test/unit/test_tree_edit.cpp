/* vidx_tree_replace_leaf: the tree an index edits online (splits, merges, re-centring). */
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "test_util.hpp"

namespace
{

struct Blob
{
	std::vector<char> bytes;
	size_t size = 0;
	const void *data() const { return bytes.data(); }
	const VidxTreeHeader *hdr() const { return (const VidxTreeHeader *) bytes.data(); }
};

Blob
build(int nleaves, int dims, int fanout, uint64_t seed)
{
	std::vector<float> c = vt::clustered(nleaves, dims, std::max(1, nleaves / 5), seed, 1.0f, 4.0f);
	std::vector<uint32_t> counts(nleaves);

	for (int i = 0; i < nleaves; i++)
		counts[i] = 10 + (uint32_t) i;
	char err[256] = "";
	size_t size = 0;
	void *b = vidx_tree_build(c.data(), counts.data(), nleaves, dims, fanout, seed, &size, 1, err,
	                          sizeof(err));
	EXPECT_NE(b, nullptr) << err;
	Blob out;
	out.bytes.assign((char *) b, (char *) b + size);
	out.size = size;
	vidx_tree_free(b);
	/* leaf i's chain head is 1000 + i, as a glue would set it */
	for (uint32_t i = 0; i < out.hdr()->nnodes; i++)
	{
		auto *n = (VidxTreeNode *) vidx_tree_node(out.bytes.data(), i);
		if (n->nchildren == 0)
			n->head_block = 1000 + n->leaf_id;
	}
	return out;
}

struct LeafInfo
{
	int32_t node;
	uint32_t head, count;
	std::vector<float> c;
};

std::map<uint32_t, LeafInfo>
leaves_of(const Blob &t)
{
	std::map<uint32_t, LeafInfo> m;
	const int d = (int) t.hdr()->dims;

	for (uint32_t i = 0; i < t.hdr()->nnodes; i++)
	{
		const VidxTreeNode *n = vidx_tree_node(t.data(), i);
		if (n->nchildren == 0)
			m[n->leaf_id] =
			    LeafInfo{(int32_t) i, n->head_block, n->count,
			             std::vector<float>(vidx_tree_centroid(n), vidx_tree_centroid(n) + d)};
	}
	return m;
}

/* Most children of a node (the build's k-means groups may pass fanout a little). */
int
widest(const Blob &t)
{
	int w = 0;

	for (uint32_t i = 0; i < t.hdr()->nnodes; i++)
		w = std::max(w, (int) vidx_tree_node(t.data(), i)->nchildren);
	return w;
}

/*
 * No node has more than `fanout` children (pass the widest node of the built
 * tree when that is more); the search returns every leaf once, in key order.
 */
void
check_tree(const Blob &t, int fanout, uint64_t seed)
{
	char err[256] = "";
	ASSERT_EQ(VIDX_OK, vidx_tree_check(t.data(), t.size, err, sizeof(err))) << err;
	const int d = (int) t.hdr()->dims;
	for (uint32_t i = 0; i < t.hdr()->nnodes; i++)
	{
		const VidxTreeNode *n = vidx_tree_node(t.data(), i);
		ASSERT_LE(n->nchildren, fanout) << "node " << i;
	}
	auto leaves = leaves_of(t);
	std::vector<char> state(vidx_tree_search_size(t.data()));
	for (VidxMetric m : {VIDX_METRIC_L2, VIDX_METRIC_IP})
		for (int qi = 0; qi < 4; qi++)
		{
			auto q = vt::gaussian(d, seed * 31 + qi, 3.0f);
			std::vector<double> brute;
			for (auto &kv : leaves)
				brute.push_back(m == VIDX_METRIC_IP
				                    ? -vt::dot_ref(q.data(), kv.second.c.data(), d)
				                    : std::sqrt(vt::l2sq_ref(q.data(), kv.second.c.data(), d)));
			std::sort(brute.begin(), brute.end());
			vidx_tree_search_begin(state.data(), t.data(), m, q.data());
			std::map<uint32_t, int> seen;
			for (size_t k = 0; k < leaves.size(); k++)
			{
				float key;
				int32_t node = vidx_tree_search_next(state.data(), t.data(), &key);
				ASSERT_GE(node, 0);
				const VidxTreeNode *n = vidx_tree_node(t.data(), (uint32_t) node);
				ASSERT_EQ(0, n->nchildren);
				ASSERT_EQ(0, seen[n->leaf_id]++) << "leaf returned twice";
				ASSERT_NEAR(key, brute[k], 1e-4 * (1 + std::fabs(brute[k])))
				    << "position " << k << " metric " << m;
			}
			float key;
			ASSERT_EQ(-1, vidx_tree_search_next(state.data(), t.data(), &key));
		}
}

/* Replaces the leaf with this id by n leaves; returns the new tree. */
Blob
replace(const Blob &t, uint32_t leaf_id, const std::vector<VidxNewLeaf> &nl, int fanout,
        int expect = VIDX_OK)
{
	auto leaves = leaves_of(t);
	Blob out;
	out.bytes.resize(vidx_tree_replace_bound(t.data()));
	char err[256] = "";
	int rc = vidx_tree_replace_leaf(t.data(), t.size, leaves.at(leaf_id).node, nl.data(),
	                                (int) nl.size(), fanout, out.bytes.data(), out.bytes.size(),
	                                &out.size, err, sizeof(err));
	EXPECT_EQ(expect, rc) << err;
	return out;
}

TEST(TreeEdit, SplitsGrowTheTreeAndKeepSearchExact)
{
	const int d = 12, fanout = 4;
	Blob t = build(6, d, fanout, 7);
	ASSERT_LE(widest(t), fanout);
	std::mt19937_64 rng(99);
	uint32_t next_id = 6;
	uint32_t levels0 = t.hdr()->levels;

	check_tree(t, fanout, 1);
	for (int step = 0; step < 150; step++)
	{
		auto leaves = leaves_of(t);
		auto it = leaves.begin();
		std::advance(it, (long) (rng() % leaves.size()));
		uint32_t victim = it->first;
		auto noise = vt::gaussian(2 * d, 1000 + step, 0.5f);
		std::vector<float> c1(it->second.c), c2(it->second.c);
		for (int u = 0; u < d; u++)
			c1[u] += noise[u], c2[u] -= noise[d + u];
		std::vector<VidxNewLeaf> nl = {{c1.data(), 7, 5000u + 2 * step, next_id},
		                               {c2.data(), 9, 5001u + 2 * step, next_id + 1}};
		next_id += 2;
		Blob n = replace(t, victim, nl, fanout);
		ASSERT_EQ(n.hdr()->nleaves, t.hdr()->nleaves + 1);
		auto after = leaves_of(n);
		ASSERT_EQ(after.count(victim), 0u);
		ASSERT_EQ(after.at(next_id - 2).head, 5000u + 2 * step);
		ASSERT_EQ(after.at(next_id - 1).count, 9u);
		/* every other leaf kept its chain, count and centroid */
		for (auto &kv : leaves)
			if (kv.first != victim)
			{
				ASSERT_EQ(after.at(kv.first).head, kv.second.head);
				ASSERT_EQ(after.at(kv.first).count, kv.second.count);
				ASSERT_EQ(after.at(kv.first).c, kv.second.c);
			}
		t = std::move(n);
		if (step % 10 == 0)
			check_tree(t, fanout, step);
	}
	check_tree(t, fanout, 7);
	EXPECT_EQ(t.hdr()->nleaves, 156u);
	EXPECT_GT(t.hdr()->levels, levels0) << "the root split: the tree gained levels";
	/* a fanout-4 tree of 156 leaves needs at least 4 levels */
	EXPECT_GE(t.hdr()->levels, 4u);
}

TEST(TreeEdit, RemovalsAndRecentring)
{
	const int d = 5;
	Blob t = build(40, d, 3, 3);
	const int fanout = std::max(3, widest(t));
	uint32_t next_id = 40;

	check_tree(t, fanout, 2);
	/* re-centre a leaf: same place in the tree, new centroid and chain */
	{
		auto leaves = leaves_of(t);
		std::vector<float> c(leaves.at(17).c);
		c[0] += 0.25f;
		Blob n = replace(t, 17, {{c.data(), 3, 777, next_id}}, fanout);
		auto after = leaves_of(n);
		ASSERT_EQ(after.count(17), 0u);
		ASSERT_EQ(after.at(next_id).c, c);
		ASSERT_EQ(n.hdr()->nleaves, 40u);
		next_id++;
		t = std::move(n);
		check_tree(t, fanout, 3);
	}
	/* remove leaves one by one down to one */
	while (t.hdr()->nleaves > 1)
	{
		auto leaves = leaves_of(t);
		uint32_t victim = std::next(leaves.begin(), (long) (leaves.size() / 2))->first;
		Blob n = replace(t, victim, {}, fanout);
		ASSERT_EQ(n.hdr()->nleaves, t.hdr()->nleaves - 1);
		t = std::move(n);
		check_tree(t, fanout, t.hdr()->nleaves);
	}
	EXPECT_EQ(t.hdr()->levels, 1u) << "the root handed over as the tree shrank";
	/* the last leaf stays */
	replace(t, leaves_of(t).begin()->first, {}, fanout, VIDX_E_INVALID);
}

TEST(TreeEdit, RejectsBadEdits)
{
	const int d = 4, fanout = 4;
	Blob t = build(10, d, fanout, 5);
	auto leaves = leaves_of(t);
	std::vector<float> c(d, 0.5f), bad(d, std::nanf(""));
	Blob out;
	out.bytes.resize(vidx_tree_replace_bound(t.data()));
	char err[256];

	/* an internal node, the root, out of range */
	for (int32_t node : {0, -1, (int32_t) t.hdr()->nnodes})
		EXPECT_EQ(VIDX_E_INVALID, vidx_tree_replace_leaf(t.data(), t.size, node, nullptr, 0, fanout,
		                                                 out.bytes.data(), out.bytes.size(),
		                                                 &out.size, err, sizeof(err)));
	/* a leaf id already used by another leaf; two new leaves with one id */
	uint32_t other = std::next(leaves.begin())->first;
	replace(t, leaves.begin()->first, {{c.data(), 1, 1, other}}, fanout, VIDX_E_INVALID);
	replace(t, leaves.begin()->first, {{c.data(), 1, 1, 50}, {c.data(), 1, 2, 50}}, fanout,
	        VIDX_E_INVALID);
	/* a non-finite centroid */
	replace(t, leaves.begin()->first, {{bad.data(), 1, 1, 51}}, fanout, VIDX_E_INVALID);
	/* too small an output */
	EXPECT_EQ(VIDX_E_INVALID,
	          vidx_tree_replace_leaf(t.data(), t.size, leaves.begin()->second.node, nullptr, 0,
	                                 fanout, out.bytes.data(), 16, &out.size, err, sizeof(err)));
	/* a corrupted input */
	Blob broken = t;
	((VidxTreeHeader *) broken.bytes.data())->nleaves += 3;
	EXPECT_EQ(VIDX_E_INVALID,
	          vidx_tree_replace_leaf(broken.data(), broken.size, leaves.begin()->second.node,
	                                 nullptr, 0, fanout, out.bytes.data(), out.bytes.size(),
	                                 &out.size, err, sizeof(err)));
}

TEST(TreeEdit, Deterministic)
{
	const int d = 7, fanout = 3;
	std::vector<float> c1(d, 1.0f), c2(d, -1.0f);
	Blob a = build(12, d, fanout, 11), b = build(12, d, fanout, 11);
	for (uint32_t k = 0; k < 12; k++)
	{
		a = replace(a, k, {{c1.data(), 2, 1, 100 + 2 * k}, {c2.data(), 3, 2, 101 + 2 * k}}, fanout);
		b = replace(b, k, {{c1.data(), 2, 1, 100 + 2 * k}, {c2.data(), 3, 2, 101 + 2 * k}}, fanout);
	}
	ASSERT_EQ(a.size, b.size);
	EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size));
	check_tree(a, fanout, 4);
}

TEST(TreeEdit, EmptyTreeGetsDimensionsFromItsFirstSplit)
{
	/* An index built on an empty table: a root and one leaf of 0 dims, widened by the glue. */
	const int d = 6, fanout = 4;
	std::vector<float> zero(d, 0.0f);
	char err[256] = "";
	size_t size = 0;
	void *b = vidx_tree_build(zero.data(), nullptr, 1, d, fanout, 1, &size, 1, err, sizeof(err));
	ASSERT_NE(b, nullptr) << err;
	Blob t;
	t.bytes.assign((char *) b, (char *) b + size);
	t.size = size;
	vidx_tree_free(b);
	std::vector<float> c1(d, 0.5f), c2(d, -0.5f);
	Blob n = replace(t, 0, {{c1.data(), 60, 10, 1}, {c2.data(), 70, 20, 2}}, fanout);
	ASSERT_EQ(n.hdr()->nleaves, 2u);
	check_tree(n, fanout, 9);
}

} // namespace
