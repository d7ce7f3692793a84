#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "vidx_core.h"

namespace
{

bool
ordered(const VidxCandidate &a, const VidxCandidate &b)
{
	return a.score < b.score || (a.score == b.score && a.payload < b.payload);
}

std::vector<VidxCandidate>
random_candidates(int n, uint64_t seed)
{
	std::mt19937_64 rng(seed);
	std::vector<VidxCandidate> c(n);
	for (int i = 0; i < n; i++)
	{
		c[i].score = (float) (rng() % 50); /* many ties */
		c[i].lower = c[i].score - 1;
		c[i].payload = rng() % 1000000;
	}
	return c;
}

TEST(TopK, Sort)
{
	for (int n : {0, 1, 2, 10, 1000})
	{
		auto c = random_candidates(n, n);
		auto ref = c;
		std::sort(ref.begin(), ref.end(), ordered);
		vidx_candidates_sort(c.data(), n);
		for (int i = 0; i < n; i++)
		{
			EXPECT_EQ(c[i].score, ref[i].score);
			EXPECT_EQ(c[i].payload, ref[i].payload);
			EXPECT_EQ(c[i].lower, ref[i].lower);
		}
	}
}

TEST(TopK, Select)
{
	for (int n : {1, 5, 100, 5000})
		for (int k : {0, 1, 3, 10, 100, 6000})
		{
			auto c = random_candidates(n, n * 7 + k);
			auto ref = c;
			std::sort(ref.begin(), ref.end(), ordered);
			vidx_candidates_select(c.data(), n, k);
			for (int i = 0; i < std::min(n, k); i++)
			{
				EXPECT_EQ(c[i].score, ref[i].score);
				EXPECT_EQ(c[i].payload, ref[i].payload);
			}
			/* the rest is a permutation of the remaining candidates */
			std::sort(c.begin(), c.end(), ordered);
			for (int i = 0; i < n; i++)
				EXPECT_EQ(c[i].payload, ref[i].payload);
		}
}

TEST(TopK, NaNSortsLast)
{
	std::vector<VidxCandidate> c = {
	    {std::nanf(""), 0, 1}, {2.0f, 0, 2}, {1.0f, 0, 3}, {std::nanf(""), 0, 0}, {-1.0f, 0, 4}};
	vidx_candidates_sort(c.data(), (int64_t) c.size());
	EXPECT_EQ(c[0].payload, 4u);
	EXPECT_EQ(c[1].payload, 3u);
	EXPECT_EQ(c[2].payload, 2u);
	EXPECT_EQ(c[3].payload, 0u);
	EXPECT_EQ(c[4].payload, 1u);
}

} // namespace
