#include <gtest/gtest.h>

#include <cstring>

#include "internal.hpp"
#include "test_util.hpp"

namespace
{

TEST(KMeans, RecoversSeparatedClusters)
{
	const int d = 16, k = 10, n = 2000;
	std::vector<float> centers;
	std::vector<int> labels;
	auto pts = vt::clustered(n, d, k, 1, 0.1f, 10.0f, &labels, &centers);
	std::vector<float> cent((size_t) k * d);
	char err[256] = "";

	ASSERT_EQ(VIDX_OK, vidx_kmeans(pts.data(), n, d, k, 25, 42, cent.data(), vt::THREADS, nullptr,
	                               nullptr, err, sizeof(err)))
	    << err;
	/* every true center has a centroid next to it */
	for (int c = 0; c < k; c++)
	{
		double best = 1e30;
		for (int j = 0; j < k; j++)
			best = std::min(best, vt::l2sq_ref(&centers[(size_t) c * d], &cent[(size_t) j * d], d));
		EXPECT_LT(std::sqrt(best), 0.2) << "cluster " << c;
	}
	/* and assignment is pure */
	std::vector<int32_t> a(n);
	vidx_assign(pts.data(), n, d, cent.data(), k, a.data(), vt::THREADS);
	std::vector<int> map(k, -1);
	for (int i = 0; i < n; i++)
	{
		if (map[labels[i]] < 0)
			map[labels[i]] = a[i];
		EXPECT_EQ(map[labels[i]], a[i]);
	}
}

std::vector<float>
run(const std::vector<float> &pts, int64_t n, int d, int k, int threads, uint64_t seed)
{
	std::vector<float> cent((size_t) k * d);
	EXPECT_EQ(VIDX_OK, vidx_kmeans(pts.data(), n, d, k, 10, seed, cent.data(), threads, nullptr,
	                               nullptr, nullptr, 0));
	return cent;
}

TEST(KMeans, DeterministicAcrossThreadCounts)
{
	/* n > the k-means++ subsample, so the seeded sampling path runs too */
	const int d = 12, k = 40;
	const int64_t n = 12000;
	auto pts = vt::clustered(n, d, 25, 9, 1.0f, 3.0f);
	auto a = run(pts, n, d, k, 1, 7), b = run(pts, n, d, k, 2, 7), c = run(pts, n, d, k, 2, 7);
	auto e = run(pts, n, d, k, 2, 8);

	EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4));
	EXPECT_EQ(0, std::memcmp(b.data(), c.data(), b.size() * 4));
	EXPECT_NE(0, std::memcmp(a.data(), e.data(), a.size() * 4));
}

/*
 * Lloyd skips distances by bounds (Elkan) when it uses the dot-product kernel:
 * every iteration must still give exactly the centroids of a full assignment
 * (vidx_assign) and the means of that assignment, to the bit.
 */
TEST(KMeans, BoundedLloydEqualsFullAssignment)
{
	const int d = 40, k = 24;
	const int64_t n = 3000;
	auto pts = vt::clustered(n, d, 12, 5, 1.0f, 1.5f); /* overlapping: points move for a while */
	std::vector<float> prev((size_t) k * d), cur((size_t) k * d), want((size_t) k * d);
	std::vector<int32_t> a(n);

	ASSERT_EQ(VIDX_OK, vidx_kmeans(pts.data(), n, d, k, 0, 3, prev.data(), vt::THREADS, nullptr,
	                               nullptr, nullptr, 0));
	for (int it = 1; it <= 8; it++)
	{
		ASSERT_EQ(VIDX_OK, vidx_kmeans(pts.data(), n, d, k, it, 3, cur.data(), vt::THREADS, nullptr,
		                               nullptr, nullptr, 0));
		vidx_assign(pts.data(), n, d, prev.data(), k, a.data(), 1);
		want = prev;
		vidx::update_means(pts.data(), n, d, k, a.data(), want.data(), 1);
		EXPECT_EQ(0, std::memcmp(want.data(), cur.data(), want.size() * 4)) << "iteration " << it;
		prev = cur;
	}
}

TEST(KMeans, FewPointsAndDuplicates)
{
	const int d = 3;
	std::vector<float> pts = {1, 2, 3, 4, 5, 6};
	std::vector<float> cent(5 * d);

	ASSERT_EQ(VIDX_OK, vidx_kmeans(pts.data(), 2, d, 5, 10, 1, cent.data(), vt::THREADS, nullptr,
	                               nullptr, nullptr, 0));
	for (int j = 0; j < 5; j++)
		EXPECT_EQ(0, std::memcmp(&cent[j * d], &pts[(j % 2) * d], d * 4));

	/* 300 points with 3 distinct values, k = 10: empty clusters everywhere */
	std::vector<float> dup(300 * d);
	for (int i = 0; i < 300; i++)
		for (int u = 0; u < d; u++)
			dup[i * d + u] = (float) (i % 3);
	std::vector<float> c2(10 * d);
	ASSERT_EQ(VIDX_OK, vidx_kmeans(dup.data(), 300, d, 10, 10, 1, c2.data(), vt::THREADS, nullptr,
	                               nullptr, nullptr, 0));
	for (float v : c2)
	{
		EXPECT_TRUE(std::isfinite(v));
		EXPECT_TRUE(v == 0.0f || v == 1.0f || v == 2.0f) << v;
	}
}

TEST(KMeans, EmptyClusterIsReseeded)
{
	/* two far blobs, one of them tiny; k = 3 must use all centroids */
	const int d = 4;
	auto pts = vt::clustered(600, d, 2, 4, 0.5f, 20.0f);
	std::vector<float> cent(3 * d);
	ASSERT_EQ(VIDX_OK, vidx_kmeans(pts.data(), 600, d, 3, 20, 3, cent.data(), vt::THREADS, nullptr,
	                               nullptr, nullptr, 0));
	std::vector<int32_t> a(600);
	vidx_assign(pts.data(), 600, d, cent.data(), 3, a.data(), vt::THREADS);
	std::vector<int> cnt(3, 0);
	for (int v : a)
		cnt[v]++;
	for (int j = 0; j < 3; j++)
		EXPECT_GT(cnt[j], 0) << j;
}

int
cancel_after_two(void *arg, int64_t done, int64_t total)
{
	int *calls = static_cast<int *>(arg);
	EXPECT_LE(done, total);
	return ++*calls >= 2;
}

TEST(KMeans, ProgressCancelsAndInvalidArgs)
{
	const int d = 8;
	auto pts = vt::gaussian(1000 * d, 2);
	std::vector<float> cent(16 * d);
	int calls = 0;
	char err[128];

	EXPECT_EQ(VIDX_E_CANCELLED,
	          vidx_kmeans(pts.data(), 1000, d, 16, 50, 1, cent.data(), vt::THREADS,
	                      cancel_after_two, &calls, err, sizeof(err)));
	EXPECT_EQ(calls, 2);
	EXPECT_EQ(VIDX_E_INVALID, vidx_kmeans(pts.data(), 0, d, 16, 5, 1, cent.data(), vt::THREADS,
	                                      nullptr, nullptr, err, sizeof(err)));
	EXPECT_GT(strlen(err), 0u);
	EXPECT_EQ(VIDX_E_INVALID, vidx_kmeans(pts.data(), 10, d, 0, 5, 1, cent.data(), vt::THREADS,
	                                      nullptr, nullptr, err, sizeof(err)));
}

TEST(KMeans, AssignMatchesBruteForce)
{
	for (int d : {1, 5, 17, 130})
	{
		const int n = 777, k = 13;
		auto pts = vt::gaussian((size_t) n * d, 30 + d);
		auto cent = vt::gaussian((size_t) k * d, 40 + d);
		std::vector<int32_t> a(n);

		vidx_assign(pts.data(), n, d, cent.data(), k, a.data(), vt::THREADS);
		for (int i = 0; i < n; i++)
		{
			double best = 1e30;
			int bi = -1;
			for (int j = 0; j < k; j++)
			{
				double dd = vt::l2sq_ref(&pts[(size_t) i * d], &cent[(size_t) j * d], d);
				if (dd < best)
				{
					best = dd;
					bi = j;
				}
			}
			double got = vt::l2sq_ref(&pts[(size_t) i * d], &cent[(size_t) a[i] * d], d);
			EXPECT_NEAR(got, best, 1e-4 * (1 + best)) << "d=" << d << " i=" << i << " " << bi;
		}
	}
}

} // namespace
