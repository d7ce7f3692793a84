/*
 * fmnist_pipeline.cpp: the clustering and encoding steps of a vidx build
 * (src/build.c) on Fashion-MNIST, outside PostgreSQL, for timing and for
 * callgrind. It links the core of the working tree:
 *
 *   g++ -O3 -std=c++17 -pthread -Isrc/core bench/results/build_speed/fmnist_pipeline.cpp \
 *       src/core/*.cpp -o /tmp/fmnist_pipeline
 *   /tmp/fmnist_pipeline DIR [threads] [queries] [iterations]
 *
 * DIR holds base.f32 (60,000 x 784 float32), q.f32 (queries x 784) and
 * gt10.i64 (each query's 10 true nearest rows), written from bench/data/fmnist
 * by numpy's tofile. Steps as in the build: rotation; a seeded sample of
 * max(10,000, 64 * lists) rows (SplitMix64 here, pg_prng in the build, so the
 * sample differs from the server's); balanced k-means (vidx_kmeans_balanced,
 * 10 iterations unless given); every row rotated, assigned to its nearest centroid and
 * encoded (vidx_build_encode, batches of 8,192). Prints each step's time,
 * leaf sizes, a hash of the assignment (same hash = same index) and the
 * probe recall: the share of each query's true top 10 whose leaf is among
 * the query's p nearest centroids (what a scan with probes = p can find).
 */
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "internal.hpp"
#include "vidx_core.h"

namespace
{

std::vector<char>
read_file(const std::string &path)
{
	FILE *f = std::fopen(path.c_str(), "rb");

	if (f == nullptr)
	{
		std::perror(path.c_str());
		std::exit(1);
	}
	std::fseek(f, 0, SEEK_END);
	long size = std::ftell(f);
	std::fseek(f, 0, SEEK_SET);
	std::vector<char> buf((size_t) size);
	if (std::fread(buf.data(), 1, buf.size(), f) != buf.size())
		std::exit(1);
	std::fclose(f);
	return buf;
}

double
now_ms()
{
	return std::chrono::duration<double, std::milli>(
	           std::chrono::steady_clock::now().time_since_epoch())
	    .count();
}

} // namespace

int
main(int argc, char **argv)
{
	if (argc < 2)
	{
		std::fprintf(stderr, "usage: %s DIR [threads] [queries] [iterations]\n", argv[0]);
		return 2;
	}
	const std::string dir = argv[1];
	const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
	const int dims = 784;
	auto base_raw = read_file(dir + "/base.f32");
	auto q_raw = read_file(dir + "/q.f32");
	auto gt_raw = read_file(dir + "/gt10.i64");
	const float *base = reinterpret_cast<const float *>(base_raw.data());
	const int64_t n = (int64_t) (base_raw.size() / (sizeof(float) * dims));
	int nq = (int) (q_raw.size() / (sizeof(float) * dims));
	if (argc > 3)
		nq = std::min(nq, std::atoi(argv[3]));
	const int iterations = argc > 4 ? std::atoi(argv[4]) : 10;
	const float *queries = reinterpret_cast<const float *>(q_raw.data());
	const int64_t *gt = reinterpret_cast<const int64_t *>(gt_raw.data());
	const int nleaves = (int) std::sqrt((double) n);
	const int64_t nsample = std::min<int64_t>(n, std::max<int64_t>(10000, (int64_t) nleaves * 64));
	const size_t rsize = vidx_sidecar_record_size(dims);
	const size_t psize = vidx_posting_size_refined(dims, 0);
	char err[256] = "";

	/* The sidecar's records, as the build reads them back. */
	std::vector<char> records((size_t) n * rsize);
	for (int64_t i = 0; i < n; i++)
		vidx_sidecar_record_fill(records.data() + (size_t) i * rsize, dims, (uint32_t) (i / 100),
		                         (uint16_t) (i % 100 + 1), base + (size_t) i * dims);
	std::vector<char> rotation(vidx_rotation_size(dims));
	vidx_rotation_init(rotation.data(), dims, 0x5eed0f5151dc0deULL);

	double t0 = now_ms();
	/* Sample: seeded partial Fisher-Yates, in slot order. */
	std::vector<int64_t> perm((size_t) n);
	for (int64_t i = 0; i < n; i++)
		perm[i] = i;
	vidx::SplitMix64 rng(0x76696478);
	for (int64_t i = 0; i < nsample; i++)
		std::swap(perm[i], perm[i + (int64_t) rng.below((uint64_t) (n - i))]);
	std::sort(perm.begin(), perm.begin() + nsample);
	std::vector<char> srec((size_t) nsample * rsize);
	for (int64_t i = 0; i < nsample; i++)
		std::memcpy(srec.data() + (size_t) i * rsize, records.data() + (size_t) perm[i] * rsize,
		            rsize);
	std::vector<float> sample((size_t) nsample * dims);
	vidx_build_rotate(srec.data(), nsample, rsize, dims, VIDX_METRIC_L2, rotation.data(),
	                  sample.data(), threads);
	double t1 = now_ms();

	std::vector<float> centroids((size_t) nleaves * dims);
	if (vidx_kmeans_balanced(sample.data(), nsample, dims, nleaves, iterations, 0x6b6d65616e73ULL,
	                         centroids.data(), threads, nullptr, nullptr, err,
	                         sizeof(err)) != VIDX_OK)
	{
		std::fprintf(stderr, "k-means: %s\n", err);
		return 1;
	}
	double t2 = now_ms();

	std::vector<int32_t> assign((size_t) n);
	std::vector<char> postings((size_t) n * psize);
	std::vector<float> scratch((size_t) 8192 * dims);
	for (int64_t i = 0; i < n; i += 8192)
	{
		int64_t m = std::min<int64_t>(8192, n - i);

		if (vidx_build_encode(records.data() + (size_t) i * rsize, m, rsize, dims, 0,
		                      VIDX_METRIC_L2, rotation.data(), centroids.data(), nleaves,
		                      (uint32_t) i, scratch.data(), postings.data() + (size_t) i * psize,
		                      assign.data() + i, threads, err, sizeof(err)) != VIDX_OK)
		{
			std::fprintf(stderr, "encode: %s\n", err);
			return 1;
		}
	}
	double t3 = now_ms();

	std::printf("n %lld, leaves %d, sample %lld, threads %d\n", (long long) n, nleaves,
	            (long long) nsample, threads);
	std::printf("time ms: sample+rotate %.0f, k-means %.0f, assign+encode %.0f, total %.0f\n",
	            t1 - t0, t2 - t1, t3 - t2, t3 - t0);

	std::vector<int64_t> size((size_t) nleaves, 0);
	uint64_t hash = 1469598103934665603ULL;
	for (int64_t i = 0; i < n; i++)
	{
		size[assign[i]]++;
		hash = (hash ^ (uint64_t) assign[i]) * 1099511628211ULL;
	}
	std::sort(size.begin(), size.end());
	std::printf("leaf sizes min %lld p50 %lld max %lld; assignment hash %016llx\n",
	            (long long) size[0], (long long) size[nleaves / 2], (long long) size[nleaves - 1],
	            (unsigned long long) hash);

	/* Probe recall at p = 1, 2, 5, 10, 20 (and rows read at each). */
	const int ps[] = {1, 2, 5, 10, 20};
	std::vector<int64_t> lsize((size_t) nleaves, 0);
	for (int64_t i = 0; i < n; i++)
		lsize[assign[i]]++;
	double found[5] = {0, 0, 0, 0, 0}, rows[5] = {0, 0, 0, 0, 0};
	std::vector<float> qr(dims);
	std::vector<std::pair<float, int>> order((size_t) nleaves);
	std::vector<int> rank((size_t) nleaves);
	for (int q = 0; q < nq; q++)
	{
		vidx_rotation_apply(rotation.data(), queries + (size_t) q * dims, qr.data());
		for (int j = 0; j < nleaves; j++)
			order[j] = {vidx_l2sq(qr.data(), centroids.data() + (size_t) j * dims, dims), j};
		std::sort(order.begin(), order.end());
		for (int r = 0; r < nleaves; r++)
			rank[order[r].second] = r;
		for (int t = 0; t < 5; t++)
		{
			for (int r = 0; r < ps[t]; r++)
				rows[t] += (double) lsize[order[r].second];
			for (int j = 0; j < 10; j++)
				found[t] += rank[assign[gt[(size_t) q * 10 + j]]] < ps[t] ? 1 : 0;
		}
	}
	std::printf("probe recall@10 (%d queries):", nq);
	for (int t = 0; t < 5; t++)
		std::printf("  p%d %.4f (%.0f rows)", ps[t], found[t] / (10.0 * nq), rows[t] / nq);
	std::printf("\n");
	return 0;
}
