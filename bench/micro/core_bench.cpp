/*
 * Micro-benchmarks of the core's hot paths: exact distances, the RaBitQ
 * popcount estimator, the rotation and k-means.
 */
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "vidx_core.h"

namespace
{

std::vector<float>
gaussian(size_t n, uint64_t seed)
{
	std::mt19937_64 rng(seed);
	std::normal_distribution<float> nd(0.0f, 1.0f);
	std::vector<float> v(n);

	for (auto &x : v)
		x = nd(rng);
	return v;
}

void
BM_l2sq(benchmark::State &st)
{
	int d = (int) st.range(0);
	auto a = gaussian(d, 1), b = gaussian(d, 2);

	for (auto _ : st)
		benchmark::DoNotOptimize(vidx_l2sq(a.data(), b.data(), d));
	st.SetBytesProcessed((int64_t) st.iterations() * d * 8);
}
BENCHMARK(BM_l2sq)->Arg(128)->Arg(784)->Arg(1536)->Arg(16000);

void
BM_dot(benchmark::State &st)
{
	int d = (int) st.range(0);
	auto a = gaussian(d, 1), b = gaussian(d, 2);

	for (auto _ : st)
		benchmark::DoNotOptimize(vidx_dot(a.data(), b.data(), d));
	st.SetBytesProcessed((int64_t) st.iterations() * d * 8);
}
BENCHMARK(BM_dot)->Arg(128)->Arg(1536);

void
BM_estimate(benchmark::State &st)
{
	int d = (int) st.range(0);
	const int n = 4096;
	size_t ps = vidx_posting_size(d);
	std::vector<uint64_t> buf(ps * n / 8 + 1);
	std::vector<const VidxPosting *> ptrs(n);
	auto xs = gaussian((size_t) n * d, 3), c = gaussian(d, 4), q = gaussian(d, 5);

	for (int i = 0; i < n; i++)
	{
		VidxPosting *p = (VidxPosting *) ((char *) buf.data() + ps * i);

		vidx_rabitq_encode(xs.data() + (size_t) i * d, c.data(), d, p);
		ptrs[i] = p;
	}
	std::vector<char> prep(vidx_query_prep_size(d));
	std::vector<float> est(n), lower(n);

	vidx_query_prep(prep.data(), VIDX_METRIC_L2, q.data(), c.data(), d);
	for (auto _ : st)
	{
		vidx_rabitq_estimate(prep.data(), ptrs.data(), n, est.data(), lower.data());
		benchmark::DoNotOptimize(est.data());
	}
	st.SetItemsProcessed((int64_t) st.iterations() * n); /* codes/s */
	st.SetBytesProcessed((int64_t) st.iterations() * n * (int64_t) ps);
}
BENCHMARK(BM_estimate)->Arg(128)->Arg(784)->Arg(1536);

void
BM_query_prep(benchmark::State &st)
{
	int d = (int) st.range(0);
	auto c = gaussian(d, 4), q = gaussian(d, 5);
	std::vector<char> prep(vidx_query_prep_size(d));

	for (auto _ : st)
	{
		vidx_query_prep(prep.data(), VIDX_METRIC_L2, q.data(), c.data(), d);
		benchmark::DoNotOptimize(prep.data());
	}
}
BENCHMARK(BM_query_prep)->Arg(128)->Arg(1536);

void
BM_rotation(benchmark::State &st)
{
	int d = (int) st.range(0);
	std::vector<char> rot(vidx_rotation_size(d));
	auto x = gaussian(d, 6);
	std::vector<float> y(d);

	vidx_rotation_init(rot.data(), d, 1);
	for (auto _ : st)
	{
		vidx_rotation_apply(rot.data(), x.data(), y.data());
		benchmark::DoNotOptimize(y.data());
	}
}
BENCHMARK(BM_rotation)->Arg(128)->Arg(784)->Arg(1536)->Arg(16000);

void
BM_kmeans(benchmark::State &st)
{
	int d = (int) st.range(0), k = (int) st.range(1);
	int64_t n = st.range(2);
	auto pts = gaussian((size_t) n * d, 7);
	std::vector<float> cent((size_t) k * d);

	for (auto _ : st)
		vidx_kmeans(pts.data(), n, d, k, 5, 1, cent.data(), nullptr, nullptr, nullptr, 0);
	st.SetItemsProcessed((int64_t) st.iterations() * n * k * 5); /* distance evals (approx) */
}
BENCHMARK(BM_kmeans)->Args({128, 256, 50000})->Unit(benchmark::kMillisecond);

void
BM_assign(benchmark::State &st)
{
	int d = (int) st.range(0), k = (int) st.range(1);
	int64_t n = st.range(2);
	auto pts = gaussian((size_t) n * d, 7), cent = gaussian((size_t) k * d, 8);
	std::vector<int32_t> a(n);

	for (auto _ : st)
		vidx_assign(pts.data(), n, d, cent.data(), k, a.data());
	st.SetItemsProcessed((int64_t) st.iterations() * n * k);
}
BENCHMARK(BM_assign)
    ->Args({128, 1024, 20000})
    ->Args({1536, 256, 5000})
    ->Unit(benchmark::kMillisecond);

} // namespace

BENCHMARK_MAIN();
