/*
 * build.cpp: the index build's clustering and batch encoding.
 *
 * Leaves (vidx_kmeans_balanced): Lloyd k-means on the sample, then leaf
 * sizes are bounded: while the largest cluster has more than 3x the mean
 * size, it is split in two by 2-means and the smallest cluster gives up its
 * slot (its points go to their nearest centroid), so k stays exact; then one
 * assignment and mean update. On clustered data this keeps the recall per
 * probe of plain k-means while cutting the largest leaves (see
 * bench/results/build_speed/).
 *
 * Assignment (vidx_build_encode): each vector's exact nearest leaf centroid
 * (the leaf a query's best-first search looks in), with the dot-product
 * kernel of assign_points.
 *
 * Determinism: every parallel loop computes per-point (or per-cluster)
 * results that do not depend on how the work is split, and every reduction
 * runs in a fixed order, so results do not depend on the thread count.
 */
#include <cstring>
#include <new>
#include <vector>

#include "internal.hpp"

namespace
{

/* A leaf may hold at most this multiple of the mean leaf size (on the sample). */
#ifndef VIDX_BALANCE_CAP
#define VIDX_BALANCE_CAP 3.0
#endif
constexpr double BALANCE_CAP = VIDX_BALANCE_CAP;
/* 2-means iterations when a cluster is split. */
constexpr int SPLIT_ITERATIONS = 8;

/*
 * Bounds cluster sizes: while the largest cluster has more than cap points,
 * split it in two with 2-means on its members and give the second half the
 * slot of the smallest cluster, whose members go to their nearest centroid.
 * Then every point is reassigned to its nearest centroid and the centroids
 * become the means of their members. k is unchanged. Before each step it
 * reports (done, total) to progress, and returns VIDX_E_CANCELLED if that
 * asks to stop.
 */
int
balance(const float *points, int64_t n, int dims, int k, float *centroids, int32_t *assign,
        double cap, uint64_t seed, int threads, VidxProgressFn progress, void *progress_arg,
        int64_t done, int64_t total)
{
	const size_t d = (size_t) dims;
	auto cancelled = [&]
	{ return progress != nullptr && progress(progress_arg, done, total) != 0; };

	if (k < 2 || n <= k)
		return VIDX_OK;
	vidx::assign_points(points, n, dims, centroids, k, assign, nullptr, threads);

	std::vector<int64_t> size((size_t) k, 0);

	for (int64_t i = 0; i < n; i++)
		size[assign[i]]++;

	std::vector<int64_t> big_members, small_members;
	std::vector<float> sub, two(2 * d);
	std::vector<int32_t> sub_assign;
	bool changed = false;

	for (int round = 0; round < 2 * k; round++)
	{
		int big = 0, small = -1;

		if (cancelled())
			return VIDX_E_CANCELLED;

		for (int j = 1; j < k; j++)
			if (size[j] > size[big])
				big = j;
		if ((double) size[big] <= cap)
			break;
		for (int j = 0; j < k; j++)
			if (j != big && (small < 0 || size[j] < size[small]))
				small = j;
		/* Moving the smallest cluster's points must leave room for a split half. */
		if (small < 0 || 2 * size[small] >= size[big])
			break;

		big_members.clear();
		small_members.clear();
		for (int64_t i = 0; i < n; i++)
		{
			if (assign[i] == big)
				big_members.push_back(i);
			else if (assign[i] == small)
				small_members.push_back(i);
		}
		const int64_t m = (int64_t) big_members.size();

		sub.resize((size_t) m * d);
		for (int64_t t = 0; t < m; t++)
			std::memcpy(sub.data() + (size_t) t * d, points + (size_t) big_members[t] * d,
			            d * sizeof(float));
		if (vidx::kmeans_run(sub.data(), m, dims, 2, SPLIT_ITERATIONS,
		                     seed + 0x9E3779B97F4A7C15ULL * (uint64_t) (round + 1), two.data(),
		                     threads, nullptr, nullptr, nullptr, 0) != VIDX_OK)
			break;
		std::memcpy(centroids + (size_t) big * d, two.data(), d * sizeof(float));
		std::memcpy(centroids + (size_t) small * d, two.data() + d, d * sizeof(float));

		/* The dissolved cluster's points go to their nearest centroid. */
		const int64_t ms = (int64_t) small_members.size();

		if (ms > 0)
		{
			std::vector<float> sp((size_t) ms * d);

			for (int64_t t = 0; t < ms; t++)
				std::memcpy(sp.data() + (size_t) t * d, points + (size_t) small_members[t] * d,
				            d * sizeof(float));
			sub_assign.resize((size_t) ms);
			vidx::assign_points(sp.data(), ms, dims, centroids, k, sub_assign.data(), nullptr,
			                    threads);
			for (int64_t t = 0; t < ms; t++)
			{
				size[small]--;
				assign[small_members[t]] = sub_assign[t];
				size[sub_assign[t]]++;
			}
		}
		/* The split cluster's points go to the nearer half (as in bisecting k-means). */
		for (int64_t t = 0; t < m; t++)
		{
			const float *x = sub.data() + (size_t) t * d;
			int32_t to =
			    vidx_l2sq(x, two.data() + d, dims) < vidx_l2sq(x, two.data(), dims) ? small : big;

			if (to == small)
			{
				size[big]--;
				size[small]++;
				assign[big_members[t]] = small;
			}
		}
		changed = true;
	}
	if (changed)
	{
		if (cancelled())
			return VIDX_E_CANCELLED;
		vidx::assign_points(points, n, dims, centroids, k, assign, nullptr, threads);
		vidx::update_means(points, n, dims, k, assign, centroids, threads);
	}
	return VIDX_OK;
}

int
kmeans_balanced_run(const float *points, int64_t n, int dims, int k, int iterations, uint64_t seed,
                    float *centroids, int threads, VidxProgressFn progress, void *progress_arg,
                    char *err, size_t errlen)
{
	if (points == nullptr || centroids == nullptr || n <= 0 || k <= 0 || dims <= 0 ||
	    dims > VIDX_MAX_DIMS)
	{
		vidx::set_err(err, errlen, "invalid k-means arguments (n=%lld, dims=%d, k=%d)",
		              (long long) n, dims, k);
		return VIDX_E_INVALID;
	}
	const double cap = BALANCE_CAP * (double) n / (double) k;
	int rc = vidx::kmeans_run(points, n, dims, k, iterations, seed, centroids, threads, progress,
	                          progress_arg, err, errlen);

	if (rc != VIDX_OK)
		return rc;
	std::vector<int32_t> assign((size_t) n);

	/* k-means is done: its last progress report stands while balancing. */
	return balance(points, n, dims, k, centroids, assign.data(), cap, seed ^ 0x62616c616e6365ULL,
	               threads, progress, progress_arg, iterations, iterations);
}

inline const float *
record_vector(const char *records, size_t record_size, int64_t i)
{
	return reinterpret_cast<const float *>(records + (size_t) i * record_size);
}

void
rotate_records(const char *records, int64_t n, size_t record_size, int dims, VidxMetric metric,
               const void *rotation, float *out, int threads)
{
	auto rotate = [&](int64_t i, int) noexcept
	{
		const float *v = record_vector(records, record_size, i);
		float *o = out + (size_t) i * dims;

		if (metric == VIDX_METRIC_COSINE)
		{
			vidx_normalize(v, o, dims);
			vidx_rotation_apply(rotation, o, o);
		}
		else
			vidx_rotation_apply(rotation, v, o);
	};

	vidx::parallel_for(threads, n, 16, rotate);
}

} // namespace

extern "C" int
vidx_kmeans_balanced(const float *points, int64_t n, int dims, int k, int iterations, uint64_t seed,
                     float *centroids, int threads, VidxProgressFn progress, void *progress_arg,
                     char *err, size_t errlen) noexcept
{
	try
	{
		return kmeans_balanced_run(points, n, dims, k, iterations, seed, centroids, threads,
		                           progress, progress_arg, err, errlen);
	}
	catch (const std::bad_alloc &)
	{
		vidx::set_err(err, errlen, "out of memory in k-means (n=%lld, dims=%d, k=%d)",
		              (long long) n, dims, k);
		return VIDX_E_NOMEM;
	}
	catch (...)
	{
		vidx::set_err(err, errlen, "internal error in k-means");
		return VIDX_E_INTERNAL;
	}
}

extern "C" int
vidx_build_order(const int32_t *assignment, int64_t n, int nleaves, uint32_t *counts,
                 uint32_t *order, char *err, size_t errlen) noexcept
{
	try
	{
		if (n < 0 || nleaves < 1 || (n > 0 && (assignment == nullptr || order == nullptr)) ||
		    counts == nullptr)
		{
			vidx::set_err(err, errlen, "invalid build order arguments (n=%lld, nleaves=%d)",
			              (long long) n, nleaves);
			return VIDX_E_INVALID;
		}
		std::vector<int64_t> start((size_t) nleaves + 1);

		vidx::group_by_cluster(assignment, n, nleaves, counts, start.data(), order);
		return VIDX_OK;
	}
	catch (const std::bad_alloc &)
	{
		/* the only exception the counting sort can throw (its k positions) */
		vidx::set_err(err, errlen, "out of memory ordering %lld postings by leaf", (long long) n);
		return VIDX_E_NOMEM;
	}
}

extern "C" void
vidx_build_rotate(const void *records, int64_t n, size_t record_size, int dims, VidxMetric metric,
                  const void *rotation, float *out, int threads) noexcept
{
	if (n <= 0 || dims <= 0)
		return;
	rotate_records(static_cast<const char *>(records), n, record_size, dims, metric, rotation, out,
	               threads);
}

extern "C" int
vidx_build_encode(const void *records, const VidxHeapTid *tids, int64_t n, size_t record_size,
                  int dims, int refine_bits, VidxMetric metric, const void *rotation,
                  const float *centroids, int nleaves, uint32_t first_slot, float *scratch,
                  void *postings, int32_t *assignment, int threads, char *err,
                  size_t errlen) noexcept
{
	try
	{
		if (n <= 0)
			return VIDX_OK;
		if (records == nullptr || tids == nullptr || centroids == nullptr || nleaves < 1 ||
		    dims <= 0 || !vidx_refine_bits_valid(refine_bits) || scratch == nullptr ||
		    postings == nullptr || assignment == nullptr)
		{
			vidx::set_err(err, errlen, "invalid build encode arguments (n=%lld, dims=%d)",
			              (long long) n, dims);
			return VIDX_E_INVALID;
		}
		const char *recs = static_cast<const char *>(records);
		const size_t d = (size_t) dims;
		const size_t psize = vidx_posting_size_refined(dims, refine_bits);

		rotate_records(recs, n, record_size, dims, metric, rotation, scratch, threads);
		vidx::assign_points(scratch, n, dims, centroids, nleaves, assignment, nullptr, threads);

		auto encode = [&](int64_t i, int) noexcept
		{
			VidxPosting *p =
			    reinterpret_cast<VidxPosting *>(static_cast<char *>(postings) + (size_t) i * psize);

			std::memset(p, 0, psize);
			vidx_rabitq_encode_refined(scratch + (size_t) i * d,
			                           centroids + (size_t) assignment[i] * d, dims, refine_bits,
			                           p);
			p->heap_block = tids[i].block;
			p->heap_offset = tids[i].offset;
			p->slot = first_slot + (uint32_t) i;
			p->vhash = vidx_vector_hash(record_vector(recs, record_size, i), dims);
		};

		vidx::parallel_for(threads, n, 64, encode);
		return VIDX_OK;
	}
	catch (const std::bad_alloc &)
	{
		vidx::set_err(err, errlen, "out of memory encoding a batch of %lld vectors", (long long) n);
		return VIDX_E_NOMEM;
	}
	catch (...)
	{
		vidx::set_err(err, errlen, "internal error encoding vectors");
		return VIDX_E_INTERNAL;
	}
}
