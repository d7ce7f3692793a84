/* The build's balanced k-means and batch encoding (core/build.cpp). */
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "test_util.hpp"

namespace
{

struct Leaves
{
	std::vector<float> cent;
};

Leaves
balanced(const std::vector<float> &pts, int64_t n, int d, int k, uint64_t seed,
         int threads = vt::THREADS)
{
	Leaves h;
	char err[256] = "";

	h.cent.resize((size_t) k * d);
	EXPECT_EQ(VIDX_OK, vidx_kmeans_balanced(pts.data(), n, d, k, 10, seed, h.cent.data(), threads,
	                                        nullptr, nullptr, err, sizeof(err)))
	    << err;
	return h;
}

/* Unequal clusters: cluster c holds about (c + 1)^2 shares of the points. */
std::vector<float>
skewed(int64_t n, int d, int clusters, uint64_t seed)
{
	std::mt19937_64 rng(seed);
	std::normal_distribution<float> nd(0.0f, 1.0f);
	std::vector<float> c((size_t) clusters * d), v((size_t) n * d);
	std::vector<double> w(clusters);

	for (auto &x : c)
		x = nd(rng) * 4.0f;
	for (int i = 0; i < clusters; i++)
		w[i] = (double) (i + 1) * (i + 1);
	std::discrete_distribution<int> pick(w.begin(), w.end());
	for (int64_t i = 0; i < n; i++)
	{
		int l = pick(rng);

		for (int u = 0; u < d; u++)
			v[(size_t) i * d + u] = c[(size_t) l * d + u] + nd(rng);
	}
	return v;
}

std::vector<int64_t>
sizes(const std::vector<float> &pts, int64_t n, int d, const Leaves &h, int k)
{
	std::vector<int32_t> a(n);
	std::vector<int64_t> s(k, 0);

	vidx_assign(pts.data(), n, d, h.cent.data(), k, a.data(), vt::THREADS);
	for (int64_t i = 0; i < n; i++)
		s[a[i]]++;
	return s;
}

/* 40% of the points in one tight blob (k-means++ seeds it once or twice), the rest in 60 clusters.
 */
std::vector<float>
one_big_blob(int64_t n, int d, uint64_t seed)
{
	std::mt19937_64 rng(seed);
	std::normal_distribution<float> nd(0.0f, 1.0f);
	const int clusters = 61;
	std::vector<float> c((size_t) clusters * d), v((size_t) n * d);

	for (auto &x : c)
		x = nd(rng) * 6.0f;
	for (int64_t i = 0; i < n; i++)
	{
		int l = i % 10 < 4 ? 0 : 1 + (int) (rng() % (clusters - 1));

		for (int u = 0; u < d; u++)
			v[(size_t) i * d + u] = c[(size_t) l * d + u] + nd(rng) * (l == 0 ? 0.05f : 1.0f);
	}
	return v;
}

TEST(BuildKMeans, LeafSizesAreBounded)
{
	/* Plain k-means seeds the big blob with few centroids: leaves many times the mean. */
	const int d = 16, k = 150;
	const int64_t n = 30000;
	auto pts = one_big_blob(n, d, 5);
	Leaves h = balanced(pts, n, d, k, 13);
	auto s = sizes(pts, n, d, h, k);
	int64_t mx = *std::max_element(s.begin(), s.end());

	EXPECT_LE((double) mx, 3.5 * (double) n / k) << "largest leaf " << mx;

	std::vector<float> flat((size_t) k * d);
	ASSERT_EQ(VIDX_OK, vidx_kmeans(pts.data(), n, d, k, 10, 13, flat.data(), vt::THREADS, nullptr,
	                               nullptr, nullptr, 0));
	Leaves f;
	f.cent = flat;
	auto fs = sizes(pts, n, d, f, k);
	EXPECT_GT((double) *std::max_element(fs.begin(), fs.end()), 3.5 * (double) n / k);
}

int
count_calls(void *arg, int64_t, int64_t)
{
	++*static_cast<int *>(arg);
	return 0;
}

struct CancelAt
{
	int calls = 0, at = 0;
};

int
cancel_at(void *arg, int64_t, int64_t)
{
	CancelAt *c = static_cast<CancelAt *>(arg);

	return ++c->calls >= c->at;
}

TEST(BuildKMeans, BalancingReportsProgressAndCancels)
{
	/* Plain k-means leaves big leaves here (LeafSizesAreBounded): balancing has work to do. */
	const int d = 16, k = 150;
	const int64_t n = 30000;
	auto pts = one_big_blob(n, d, 5);
	std::vector<float> cent((size_t) k * d);
	int kmeans_calls = 0, all_calls = 0;
	char err[128];

	ASSERT_EQ(VIDX_OK, vidx_kmeans(pts.data(), n, d, k, 10, 13, cent.data(), vt::THREADS,
	                               count_calls, &kmeans_calls, err, sizeof(err)));
	ASSERT_EQ(VIDX_OK, vidx_kmeans_balanced(pts.data(), n, d, k, 10, 13, cent.data(), vt::THREADS,
	                                        count_calls, &all_calls, err, sizeof(err)));
	/* The same k-means, then balancing, which reports between its steps. */
	EXPECT_GT(all_calls, kmeans_calls + 1);

	/* A cancel during balancing stops it there. */
	CancelAt c;

	c.at = kmeans_calls + 1;
	EXPECT_EQ(VIDX_E_CANCELLED, vidx_kmeans_balanced(pts.data(), n, d, k, 10, 13, cent.data(),
	                                                 vt::THREADS, cancel_at, &c, err, sizeof(err)));
	EXPECT_EQ(c.at, c.calls);
}

TEST(BuildKMeans, SmallKIsBalanced)
{
	const int d = 8, k = 20;
	const int64_t n = 4000;
	auto pts = one_big_blob(n, d, 7);
	Leaves h = balanced(pts, n, d, k, 1);

	/* Few leaves per natural cluster: the final reassignment may regrow a leaf past the cap. */
	auto s = sizes(pts, n, d, h, k);
	EXPECT_LE((double) *std::max_element(s.begin(), s.end()), 5.0 * (double) n / k);
}

TEST(BuildKMeans, DeterministicAcrossThreadCounts)
{
	const int d = 12, k = 120;
	const int64_t n = 15000;
	auto pts = skewed(n, d, 20, 9);
	Leaves a = balanced(pts, n, d, k, 5, 1), b = balanced(pts, n, d, k, 5, 2),
	       c = balanced(pts, n, d, k, 6, 2);

	EXPECT_EQ(0, std::memcmp(a.cent.data(), b.cent.data(), a.cent.size() * 4));
	EXPECT_NE(0, std::memcmp(a.cent.data(), c.cent.data(), a.cent.size() * 4));
}

TEST(BuildKMeans, FewPoints)
{
	const int d = 4, k = 100;
	const int64_t n = 100;
	auto pts = vt::gaussian((size_t) n * d, 1);
	Leaves h = balanced(pts, n, d, k, 1);

	EXPECT_EQ((size_t) k * d, h.cent.size());
	float c[4];
	char err[128];
	EXPECT_EQ(VIDX_E_INVALID, vidx_kmeans_balanced(pts.data(), 0, d, 1, 10, 1, c, vt::THREADS,
	                                               nullptr, nullptr, err, 128));
}

/* Sidecar records of n vectors. */
std::vector<char>
records(const std::vector<float> &v, int64_t n, int d)
{
	size_t rs = vidx_sidecar_record_size(d);
	std::vector<char> r(rs * n);

	for (int64_t i = 0; i < n; i++)
		vidx_sidecar_record_fill(r.data() + rs * i, d, v.data() + (size_t) i * d);
	return r;
}

/* Heap TIDs of n rows: 7 to a block. */
std::vector<VidxHeapTid>
tids(int64_t n)
{
	std::vector<VidxHeapTid> t(n);

	for (int64_t i = 0; i < n; i++)
		t[i] = {(uint32_t) (i / 7), (uint16_t) (i % 7 + 1), 0};
	return t;
}

TEST(BuildEncode, ExactNearestLeafAndSameCodes)
{
	const int d = 64, k = 100;
	const int64_t n = 6000;
	auto pts = skewed(n, d, 25, 21);
	std::vector<char> rot(vidx_rotation_size(d));
	vidx_rotation_init(rot.data(), d, 99);
	auto recs = records(pts, n, d);
	size_t rs = vidx_sidecar_record_size(d), ps = vidx_posting_size(d);

	/* Rotated points, then the clustering in rotated space. */
	std::vector<float> r((size_t) n * d);
	vidx_build_rotate(recs.data(), n, rs, d, VIDX_METRIC_L2, rot.data(), r.data(), vt::THREADS);
	Leaves h = balanced(r, n, d, k, 3);

	std::vector<float> scratch((size_t) n * d);
	std::vector<char> post(ps * n);
	std::vector<int32_t> a(n);
	char err[256] = "";

	ASSERT_EQ(VIDX_OK, vidx_build_encode(recs.data(), tids(n).data(), n, rs, d, 0, VIDX_METRIC_L2,
	                                     rot.data(), h.cent.data(), k, 1000, scratch.data(),
	                                     post.data(), a.data(), vt::THREADS, err, sizeof(err)))
	    << err;

	std::vector<int32_t> flat(n);
	vidx_assign(r.data(), n, d, h.cent.data(), k, flat.data(), vt::THREADS);
	std::vector<char> want(ps);
	for (int64_t i = 0; i < n; i++)
	{
		/* Same distance as the brute-force nearest (ties may pick either). */
		float da = vidx_l2sq(&r[(size_t) i * d], &h.cent[(size_t) a[i] * d], d);
		float df = vidx_l2sq(&r[(size_t) i * d], &h.cent[(size_t) flat[i] * d], d);
		ASSERT_LE(da, df * (1 + 1e-5f)) << "point " << i;

		const VidxPosting *p = reinterpret_cast<const VidxPosting *>(post.data() + ps * i);
		EXPECT_EQ((uint32_t) (i / 7), p->heap_block);
		EXPECT_EQ((uint16_t) (i % 7 + 1), p->heap_offset);
		EXPECT_EQ(1000u + (uint32_t) i, p->slot);
		EXPECT_EQ(vidx_vector_hash(&pts[(size_t) i * d], d), p->vhash);
		std::memset(want.data(), 0, ps);
		VidxPosting *w = reinterpret_cast<VidxPosting *>(want.data());
		vidx_rabitq_encode(&r[(size_t) i * d], &h.cent[(size_t) a[i] * d], d, w);
		EXPECT_EQ(0, std::memcmp(vidx_posting_code(p), vidx_posting_code(w), ps - sizeof(*w)));
		EXPECT_EQ(p->norm, w->norm);
	}
}

TEST(BuildEncode, CosineNormalizesBeforeRotating)
{
	const int d = 32;
	const int64_t n = 10;
	auto pts = vt::gaussian((size_t) n * d, 4, 3.0f);
	std::vector<char> rot(vidx_rotation_size(d));
	vidx_rotation_init(rot.data(), d, 1);
	auto recs = records(pts, n, d);
	std::vector<float> out((size_t) n * d), want(d);

	vidx_build_rotate(recs.data(), n, vidx_sidecar_record_size(d), d, VIDX_METRIC_COSINE,
	                  rot.data(), out.data(), vt::THREADS);
	for (int64_t i = 0; i < n; i++)
	{
		vidx_normalize(&pts[(size_t) i * d], want.data(), d);
		vidx_rotation_apply(rot.data(), want.data(), want.data());
		EXPECT_EQ(0, std::memcmp(want.data(), &out[(size_t) i * d], 4 * d));
	}
}

TEST(BuildOrder, CountingSortByLeafKeepsSlotOrder)
{
	const int32_t a[] = {2, 0, 2, 1, 0, 2, 3, 0};
	const int k = 5; /* leaf 4 has no posting */
	std::vector<uint32_t> counts(k, 99), order(8, 99);
	char err[128] = "";

	ASSERT_EQ(VIDX_OK, vidx_build_order(a, 8, k, counts.data(), order.data(), err, sizeof(err)))
	    << err;
	EXPECT_EQ((std::vector<uint32_t>{3, 1, 3, 1, 0}), counts);
	EXPECT_EQ((std::vector<uint32_t>{1, 4, 7, 3, 0, 2, 5, 6}), order);
	EXPECT_EQ(VIDX_E_INVALID, vidx_build_order(a, 8, 0, counts.data(), order.data(), err, 128));
}

} // namespace
