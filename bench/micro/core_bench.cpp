/*
 * Micro-benchmarks of the core's hot paths: exact distances, the RaBitQ
 * popcount estimator (code scan), the rotation and k-means, plus a memory
 * read-bandwidth reference (BM_memread) so that the code scan's bytes per
 * second read as a fraction of what the machine can stream.
 *
 * Run: bench/micro.sh (builds with CMake in Release, writes JSON + markdown
 * under bench/results/micro/).
 */
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

#include "vidx_core.h"

namespace
{

/* Threads for k-means and assignment: $VIDX_THREADS, else every core. */
int
bench_threads()
{
	const char *env = std::getenv("VIDX_THREADS");
	int n = env ? std::atoi(env) : (int) std::thread::hardware_concurrency();

	return n > 0 ? n : 1;
}

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
BENCHMARK(BM_l2sq)->Arg(128)->Arg(784)->Arg(1024)->Arg(1536)->Arg(16000);

void
BM_dot(benchmark::State &st)
{
	int d = (int) st.range(0);
	auto a = gaussian(d, 1), b = gaussian(d, 2);

	for (auto _ : st)
		benchmark::DoNotOptimize(vidx_dot(a.data(), b.data(), d));
	st.SetBytesProcessed((int64_t) st.iterations() * d * 8);
}
BENCHMARK(BM_dot)->Arg(128)->Arg(1024)->Arg(1536);

/* Memory read bandwidth of one core: sum of 64-bit words over a buffer far
 * larger than the caches (256 MiB), the reference for the code scan. */
void
BM_memread(benchmark::State &st)
{
	size_t bytes = (size_t) st.range(0) << 20;
	std::vector<uint64_t> buf(bytes / 8);

	for (size_t i = 0; i < buf.size(); i++)
		buf[i] = i * 0x9E3779B97F4A7C15ull;
	for (auto _ : st)
	{
		uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;

		for (size_t i = 0; i + 4 <= buf.size(); i += 4)
		{
			s0 += buf[i];
			s1 += buf[i + 1];
			s2 += buf[i + 2];
			s3 += buf[i + 3];
		}
		benchmark::DoNotOptimize(s0 + s1 + s2 + s3);
	}
	st.SetBytesProcessed((int64_t) st.iterations() * (int64_t) bytes);
}
BENCHMARK(BM_memread)->Arg(256)->Unit(benchmark::kMillisecond);

/* Code scan: estimate n postings' distances from their 1-bit codes. Args:
 * dims, n. n = 4096 stays in cache; n = 1M (160 MB of postings at 1024
 * dims) streams from memory like a scan of many large leaves. */
void
BM_estimate(benchmark::State &st)
{
	int d = (int) st.range(0);
	int n = (int) st.range(1);
	const int distinct = 4096;
	size_t ps = vidx_posting_size(d);
	std::vector<uint64_t> buf(ps * (size_t) n / 8 + 1);
	std::vector<const VidxPosting *> ptrs(n);
	auto xs = gaussian((size_t) distinct * d, 3), c = gaussian(d, 4), q = gaussian(d, 5);

	for (int i = 0; i < n; i++)
	{
		VidxPosting *p = (VidxPosting *) ((char *) buf.data() + ps * (size_t) i);

		vidx_rabitq_encode(xs.data() + (size_t) (i % distinct) * d, c.data(), d, p);
		ptrs[i] = p;
	}
	std::vector<char> prep(vidx_query_prep_size(d));
	std::vector<float> est(n), lower(n);

	vidx_query_prep_refined(prep.data(), VIDX_METRIC_L2, q.data(), c.data(), d, 0);
	for (auto _ : st)
	{
		vidx_rabitq_estimate(prep.data(), ptrs.data(), n, est.data(), lower.data());
		benchmark::DoNotOptimize(est.data());
	}
	st.SetItemsProcessed((int64_t) st.iterations() * n); /* codes/s */
	st.SetBytesProcessed((int64_t) st.iterations() * n * (int64_t) ps);
}
BENCHMARK(BM_estimate)
    ->Args({128, 4096})
    ->Args({784, 4096})
    ->Args({1024, 4096})
    ->Args({1536, 4096})
    ->Args({128, 1 << 20})
    ->Args({1024, 1 << 20})
    ->Unit(benchmark::kMicrosecond);

/* The scan's parallel estimate: `tasks` leaves of n postings each (one query
 * preparation per leaf), spread over `threads` threads. Args: dims, n, tasks,
 * threads. Measures what a scan pays to hand a group to the threads. */
void
BM_estimate_tasks(benchmark::State &st)
{
	int d = (int) st.range(0), n = (int) st.range(1), ntasks = (int) st.range(2);
	int threads = (int) st.range(3);
	size_t ps = vidx_posting_size(d);
	int total = n * ntasks;
	std::vector<uint64_t> buf(ps * (size_t) total / 8 + 1);
	std::vector<const VidxPosting *> ptrs(total);
	auto xs = gaussian((size_t) total * d, 3), c = gaussian(d, 4), q = gaussian(d, 5);

	for (int i = 0; i < total; i++)
	{
		VidxPosting *p = (VidxPosting *) ((char *) buf.data() + ps * (size_t) i);

		vidx_rabitq_encode(xs.data() + (size_t) i * d, c.data(), d, p);
		ptrs[i] = p;
	}
	std::vector<char> prep(vidx_query_prep_size(d));
	std::vector<VidxCandidate> cands(total);
	std::vector<VidxEstimateTask> tasks(ntasks);

	vidx_query_prep_refined(prep.data(), VIDX_METRIC_L2, q.data(), c.data(), d, 0);
	for (int t = 0; t < ntasks; t++)
		tasks[t] = VidxEstimateTask{prep.data(), ptrs.data() + (size_t) t * n, n,
		                            cands.data() + (size_t) t * n};
	for (auto _ : st)
	{
		vidx_rabitq_estimate_tasks(tasks.data(), ntasks, threads);
		benchmark::DoNotOptimize(cands.data());
	}
	st.SetItemsProcessed((int64_t) st.iterations() * total); /* codes/s */
}
BENCHMARK(BM_estimate_tasks)
    ->Args({784, 256, 8, 1})
    ->Args({784, 256, 8, 2})
    ->Args({1024, 512, 16, 1})
    ->Args({1024, 512, 16, 2})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

void
BM_query_prep(benchmark::State &st)
{
	int d = (int) st.range(0);
	auto c = gaussian(d, 4), q = gaussian(d, 5);
	std::vector<char> prep(vidx_query_prep_size(d));

	for (auto _ : st)
	{
		vidx_query_prep_refined(prep.data(), VIDX_METRIC_L2, q.data(), c.data(), d, 0);
		benchmark::DoNotOptimize(prep.data());
	}
}
BENCHMARK(BM_query_prep)->Arg(128)->Arg(1024)->Arg(1536);

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
BENCHMARK(BM_rotation)->Arg(128)->Arg(784)->Arg(1024)->Arg(1536)->Arg(16000);

void
BM_kmeans(benchmark::State &st)
{
	int d = (int) st.range(0), k = (int) st.range(1);
	int64_t n = st.range(2);
	auto pts = gaussian((size_t) n * d, 7);
	std::vector<float> cent((size_t) k * d);

	for (auto _ : st)
		vidx_kmeans(pts.data(), n, d, k, 5, 1, cent.data(), bench_threads(), nullptr, nullptr,
		            nullptr, 0);
	st.SetItemsProcessed((int64_t) st.iterations() * n * k * 5); /* distance evals (approx) */
}
BENCHMARK(BM_kmeans)
    ->Args({128, 256, 50000})
    ->Args({1024, 1000, 64000}) /* the 1M x 1024 build's default: lists 1000, sample 64,000 */
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1);

void
BM_assign(benchmark::State &st)
{
	int d = (int) st.range(0), k = (int) st.range(1);
	int64_t n = st.range(2);
	auto pts = gaussian((size_t) n * d, 7), cent = gaussian((size_t) k * d, 8);
	std::vector<int32_t> a(n);

	for (auto _ : st)
		vidx_assign(pts.data(), n, d, cent.data(), k, a.data(), bench_threads());
	st.SetItemsProcessed((int64_t) st.iterations() * n * k);
}
BENCHMARK(BM_assign)
    ->Args({128, 1024, 20000})
    ->Args({1536, 256, 5000})
    ->Args({1024, 1000, 20000})
    ->Unit(benchmark::kMillisecond);

} // namespace

BENCHMARK_MAIN();
