/* Exact k nearest neighbours of a few queries over a stream (core/recall.cpp). */
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <numeric>

#include "test_util.hpp"

namespace
{

struct Knn
{
	std::vector<double> dist;
	std::vector<int64_t> id;
};

Knn
fresh(int nq, int k)
{
	return {std::vector<double>((size_t) nq * k, std::numeric_limits<double>::infinity()),
	        std::vector<int64_t>((size_t) nq * k, -1)};
}

/* Brute force with vidx_distance, ties by id. */
std::vector<int64_t>
brute(VidxMetric m, const std::vector<float> &data, int64_t n, int d, const float *q, int k,
      int64_t exclude)
{
	std::vector<std::pair<double, int64_t>> all;

	for (int64_t i = 0; i < n; i++)
		if (i != exclude)
			all.push_back({vidx_distance(m, data.data() + i * d, q, d), i});
	std::sort(all.begin(), all.end());
	std::vector<int64_t> out;
	for (int j = 0; j < k && j < (int) all.size(); j++)
		out.push_back(all[j].second);
	return out;
}

class KnnTest : public ::testing::TestWithParam<VidxMetric>
{
};

TEST_P(KnnTest, MatchesBruteForceAndIgnoresBatchesAndThreads)
{
	VidxMetric m = GetParam();
	const int d = 37, k = 10, nq = 21; /* 21: a partial block of 16 */
	const int64_t n = 3000;
	auto data = vt::gaussian((size_t) n * d, 11);
	std::vector<float> queries(data.begin(), data.begin() + (size_t) nq * d); /* rows 0..20 */
	std::vector<int64_t> ids(n), exclude(nq);

	std::iota(ids.begin(), ids.end(), 0);
	std::iota(exclude.begin(), exclude.end(), 0); /* each query is its own row */
	Knn one = fresh(nq, k), batched = fresh(nq, k);
	vidx_knn_update(m, queries.data(), nq, exclude.data(), data.data(), ids.data(), n, d, k,
	                one.dist.data(), one.id.data(), 1);
	for (int64_t b = 0; b < n; b += 700)
	{
		int64_t c = std::min<int64_t>(700, n - b);
		vidx_knn_update(m, queries.data(), nq, exclude.data(), data.data() + b * d, ids.data() + b,
		                c, d, k, batched.dist.data(), batched.id.data(), 3);
	}
	EXPECT_EQ(one.id, batched.id);
	EXPECT_EQ(one.dist, batched.dist);
	for (int q = 0; q < nq; q++)
	{
		auto want = brute(m, data, n, d, queries.data() + (size_t) q * d, k, q);
		std::vector<int64_t> got(one.id.begin() + q * k, one.id.begin() + (q + 1) * k);
		EXPECT_EQ(want, got) << "query " << q;
		for (int j = 0; j < k; j++)
		{
			double exact =
			    vidx_distance(m, data.data() + got[j] * d, queries.data() + (size_t) q * d, d);
			EXPECT_NEAR(one.dist[q * k + j], exact, 1e-5 * std::max(1.0, std::fabs(exact)));
			if (j > 0)
			{
				EXPECT_LE(one.dist[q * k + j - 1], one.dist[q * k + j]);
			}
		}
	}
}

INSTANTIATE_TEST_SUITE_P(Metrics, KnnTest,
                         ::testing::Values(VIDX_METRIC_L2, VIDX_METRIC_IP, VIDX_METRIC_COSINE));

TEST(Knn, FewerRowsThanK)
{
	std::vector<float> data = {0, 0, 1, 0, 5, 5};
	std::vector<int64_t> ids = {0, 1, 2};
	int64_t exclude = 0;
	Knn r = fresh(1, 5);

	vidx_knn_update(VIDX_METRIC_L2, data.data(), 1, &exclude, data.data(), ids.data(), 3, 2, 5,
	                r.dist.data(), r.id.data(), 2);
	EXPECT_EQ(1, r.id[0]);
	EXPECT_EQ(2, r.id[1]);
	EXPECT_EQ(-1, r.id[2]);
	EXPECT_DOUBLE_EQ(1.0, r.dist[0]);
	EXPECT_TRUE(std::isinf(r.dist[2]));
}

/* Equal distances go to the smaller id whatever order the rows come in (the
 * calibration reads them in storage order, not id order). */
TEST(Knn, TiesGoToTheSmallerIdInAnyOrder)
{
	/* rows 10..13 all at distance 1 from the query (0, 0); k = 2 */
	std::vector<float> query = {0, 0};
	std::vector<float> data = {0, 1, 1, 0, 0, -1, -1, 0};
	std::vector<int64_t> order[] = {{10, 11, 12, 13}, {13, 12, 11, 10}, {12, 13, 10, 11}};
	int64_t exclude = -1;

	for (const auto &ids : order)
	{
		Knn r = fresh(1, 2);

		for (int i = 0; i < 4; i++) /* one row per call: batches of one */
			vidx_knn_update(VIDX_METRIC_L2, query.data(), 1, &exclude, data.data() + 2 * i, &ids[i],
			                1, 2, 2, r.dist.data(), r.id.data(), 1);
		EXPECT_EQ(10, r.id[0]);
		EXPECT_EQ(11, r.id[1]);
	}
}

} // namespace
