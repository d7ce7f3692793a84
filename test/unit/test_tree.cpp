#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "internal.hpp"
#include "test_util.hpp"

namespace
{

struct Tree
{
	void *blob = nullptr;
	size_t size = 0;
	~Tree() { vidx_tree_free(blob); }
};

float
leaf_key(VidxMetric m, const float *q, const float *c, int d)
{
	if (m == VIDX_METRIC_IP)
		return -vidx_dot(q, c, d);
	return std::sqrt(vidx_l2sq(q, c, d));
}

void
check_search_order(const Tree &t, const std::vector<float> &leaves, int nleaves, int d,
                   VidxMetric m, uint64_t seed)
{
	std::vector<char> state(vidx_tree_search_size(t.blob));
	for (int qi = 0; qi < 5; qi++)
	{
		auto q = vt::gaussian(d, seed * 100 + qi, 2.0f);
		std::vector<float> brute(nleaves);
		for (int i = 0; i < nleaves; i++)
			brute[i] = leaf_key(m, q.data(), &leaves[(size_t) i * d], d);
		std::vector<float> sorted = brute;
		std::sort(sorted.begin(), sorted.end());

		vidx_tree_search_begin(state.data(), t.blob, m, q.data());
		std::vector<char> seen(nleaves, 0);
		for (int i = 0; i < nleaves; i++)
		{
			float key;
			int32_t node = vidx_tree_search_next(state.data(), t.blob, &key);
			ASSERT_GE(node, 0);
			const VidxTreeNode *n = vidx_tree_node(t.blob, (uint32_t) node);
			ASSERT_EQ(n->nchildren, 0);
			ASSERT_LT(n->leaf_id, (uint32_t) nleaves);
			ASSERT_FALSE(seen[n->leaf_id]);
			seen[n->leaf_id] = 1;
			ASSERT_EQ(0,
			          std::memcmp(vidx_tree_centroid(n), &leaves[(size_t) n->leaf_id * d], 4 * d));
			ASSERT_EQ(key, brute[n->leaf_id]);
			ASSERT_EQ(key, sorted[i]) << "position " << i << " metric " << m;
		}
		float key;
		ASSERT_EQ(-1, vidx_tree_search_next(state.data(), t.blob, &key));
	}
}

TEST(Tree, BuildCheckAndSearchOrder)
{
	struct Case
	{
		int nleaves, dims, fanout;
	} cases[] = {{1, 4, 8},    {5, 4, 8},    {8, 4, 8},      {9, 4, 8},     {100, 8, 4},
	             {300, 16, 8}, {1000, 3, 6}, {2000, 32, 16}, {700, 100, 5}, {64, 2, 2}};
	for (auto cs : cases)
	{
		std::vector<float> leaves = vt::clustered(cs.nleaves, cs.dims, std::max(1, cs.nleaves / 20),
		                                          cs.nleaves, 1.0f, 4.0f);
		Tree t;
		char err[256] = "";
		t.blob = vidx_tree_build(leaves.data(), nullptr, cs.nleaves, cs.dims, cs.fanout, 1, &t.size,
		                         vt::THREADS, err, sizeof(err));
		ASSERT_NE(t.blob, nullptr) << err;
		ASSERT_EQ(t.size, vidx::tree_blob_size(cs.dims, vidx_tree_node(t.blob, 0)
		                                                    ? ((VidxTreeHeader *) t.blob)->nnodes
		                                                    : 0));
		ASSERT_EQ(VIDX_OK, vidx_tree_check(t.blob, t.size, err, sizeof(err))) << err;
		const VidxTreeHeader *h = (const VidxTreeHeader *) t.blob;
		EXPECT_EQ(h->nleaves, (uint32_t) cs.nleaves);
		EXPECT_EQ(h->node_size % 8, 0u);
		EXPECT_EQ(vidx_tree_node(t.blob, 0)->count, (uint32_t) cs.nleaves);
		if (cs.nleaves <= cs.fanout)
		{
			EXPECT_EQ(h->levels, 1u);
			EXPECT_EQ(vidx_tree_node(t.blob, 0)->nchildren, cs.nleaves);
		}
		else
		{
			EXPECT_GE(h->levels, 2u);
			EXPECT_LE(vidx_tree_node(t.blob, 0)->nchildren, cs.fanout);
		}
		/* radius bounds every leaf centroid below each internal node */
		for (uint32_t i = 0; i < h->nnodes; i++)
		{
			const VidxTreeNode *n = vidx_tree_node(t.blob, i);
			std::vector<uint32_t> stack = {i};
			while (!stack.empty())
			{
				const VidxTreeNode *m = vidx_tree_node(t.blob, stack.back());
				stack.pop_back();
				if (m->nchildren == 0)
				{
					double dist = std::sqrt(
					    vt::l2sq_ref(vidx_tree_centroid(n), vidx_tree_centroid(m), cs.dims));
					EXPECT_LE(dist, (double) n->radius);
				}
				for (int c = 0; c < m->nchildren; c++)
					stack.push_back((uint32_t) (m->first_child + c));
			}
		}
		for (VidxMetric m : {VIDX_METRIC_L2, VIDX_METRIC_IP, VIDX_METRIC_COSINE})
			check_search_order(t, leaves, cs.nleaves, cs.dims, m, cs.nleaves + m);
	}
}

TEST(Tree, DeterministicAndWeightedRoot)
{
	const int d = 3;
	std::vector<float> leaves = {0, 0, 0, 4, 0, 0};
	uint32_t counts[2] = {3, 1};
	Tree t;
	t.blob = vidx_tree_build(leaves.data(), counts, 2, d, 8, 1, &t.size, vt::THREADS, nullptr, 0);
	ASSERT_NE(t.blob, nullptr);
	const float *rc = vidx_tree_centroid(vidx_tree_node(t.blob, 0));
	EXPECT_FLOAT_EQ(rc[0], 1.0f);
	EXPECT_FLOAT_EQ(vidx_tree_node(t.blob, 0)->radius, 3.0f);

	auto many = vt::gaussian(500 * 8, 3);
	Tree a, b;
	a.blob = vidx_tree_build(many.data(), nullptr, 500, 8, 10, 5, &a.size, vt::THREADS, nullptr, 0);
	b.blob = vidx_tree_build(many.data(), nullptr, 500, 8, 10, 5, &b.size, vt::THREADS, nullptr, 0);
	ASSERT_EQ(a.size, b.size);
	EXPECT_EQ(0, std::memcmp(a.blob, b.blob, a.size));
}

TEST(Tree, EmptyBuild)
{
	Tree t;
	char err[128];
	t.blob = vidx_tree_build(nullptr, nullptr, 0, 0, 32, 1, &t.size, vt::THREADS, err, sizeof(err));
	ASSERT_NE(t.blob, nullptr) << err;
	const VidxTreeHeader *h = (const VidxTreeHeader *) t.blob;
	EXPECT_EQ(h->dims, 0u);
	EXPECT_EQ(h->nleaves, 1u);
	EXPECT_EQ(h->nnodes, 2u);
	EXPECT_EQ(h->levels, 1u);
	ASSERT_EQ(VIDX_OK, vidx_tree_check(t.blob, t.size, err, sizeof(err))) << err;
	std::vector<char> state(vidx_tree_search_size(t.blob));
	vidx_tree_search_begin(state.data(), t.blob, VIDX_METRIC_L2, nullptr);
	float key = -1;
	EXPECT_EQ(1, vidx_tree_search_next(state.data(), t.blob, &key));
	EXPECT_EQ(key, 0.0f);
	EXPECT_EQ(-1, vidx_tree_search_next(state.data(), t.blob, &key));

	EXPECT_EQ(nullptr, vidx_tree_build(nullptr, nullptr, 5, 4, 8, 1, nullptr, vt::THREADS, err,
	                                   sizeof(err)));
	EXPECT_EQ(nullptr, vidx_tree_build(nullptr, nullptr, 0, 4, 1, 1, nullptr, vt::THREADS, err,
	                                   sizeof(err)));
}

TEST(Tree, CheckRejectsCorruption)
{
	const int d = 5, n = 200;
	auto leaves = vt::gaussian(n * d, 8);
	Tree t;
	t.blob = vidx_tree_build(leaves.data(), nullptr, n, d, 6, 1, &t.size, vt::THREADS, nullptr, 0);
	ASSERT_NE(t.blob, nullptr);
	char err[256];
	ASSERT_EQ(VIDX_OK, vidx_tree_check(t.blob, t.size, err, sizeof(err))) << err;
	const VidxTreeHeader *h0 = (const VidxTreeHeader *) t.blob;
	uint32_t nnodes = h0->nnodes, nsz = h0->node_size;

	auto expect_bad = [&](const char *what, auto mutate, size_t size)
	{
		std::vector<char> copy((char *) t.blob, (char *) t.blob + t.size);
		mutate(copy.data());
		err[0] = 0;
		EXPECT_EQ(VIDX_E_INVALID, vidx_tree_check(copy.data(), size, err, sizeof(err))) << what;
		EXPECT_GT(strlen(err), 0u) << what;
	};
	auto hdr = [](char *b) { return (VidxTreeHeader *) b; };
	auto node = [&](char *b, uint32_t i)
	{ return (VidxTreeNode *) (b + sizeof(VidxTreeHeader) + (size_t) i * nsz); };
	/* find a leaf and an internal non-root node */
	uint32_t leaf = 0, inner = 0;
	for (uint32_t i = 1; i < nnodes; i++)
	{
		if (vidx_tree_node(t.blob, i)->nchildren == 0 && !leaf)
			leaf = i;
		if (vidx_tree_node(t.blob, i)->nchildren > 0 && !inner)
			inner = i;
	}
	ASSERT_TRUE(leaf && inner);

	expect_bad(
	    "magic", [&](char *b) { hdr(b)->magic ^= 1; }, t.size);
	expect_bad(
	    "dims", [&](char *b) { hdr(b)->dims = 9; }, t.size);
	expect_bad(
	    "node_size", [&](char *b) { hdr(b)->node_size += 8; }, t.size);
	expect_bad(
	    "nnodes", [&](char *b) { hdr(b)->nnodes += 1; }, t.size);
	expect_bad(
	    "truncated", [&](char *) {}, t.size - 1);
	expect_bad(
	    "tiny", [&](char *) {}, 4);
	expect_bad(
	    "nleaves", [&](char *b) { hdr(b)->nleaves -= 1; }, t.size);
	expect_bad(
	    "levels", [&](char *b) { hdr(b)->levels += 1; }, t.size);
	expect_bad(
	    "child range", [&](char *b) { node(b, 0)->nchildren = (int32_t) nnodes; }, t.size);
	expect_bad(
	    "child before parent", [&](char *b) { node(b, inner)->first_child = 0; }, t.size);
	expect_bad(
	    "negative children", [&](char *b) { node(b, inner)->nchildren = -3; }, t.size);
	expect_bad(
	    "dup leaf id",
	    [&](char *b)
	    {
		    uint32_t other = leaf + 1;
		    node(b, leaf)->leaf_id = node(b, other)->leaf_id;
	    },
	    t.size);
	expect_bad(
	    "radius",
	    [&](char *b) { node(b, inner)->radius = std::numeric_limits<float>::quiet_NaN(); }, t.size);
	expect_bad(
	    "inf radius", [&](char *b) { node(b, 0)->radius = std::numeric_limits<float>::infinity(); },
	    t.size);
	expect_bad(
	    "leaf with child", [&](char *b) { node(b, leaf)->first_child = 3; }, t.size);
	expect_bad(
	    "root leaf",
	    [&](char *b)
	    {
		    node(b, 0)->nchildren = 0;
		    node(b, 0)->first_child = -1;
	    },
	    t.size);
	expect_bad(
	    "centroid nan",
	    [&](char *b)
	    { ((float *) (node(b, leaf) + 1))[0] = std::numeric_limits<float>::quiet_NaN(); },
	    t.size);
}

} // namespace
