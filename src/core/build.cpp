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
 * A two-level variant (k-means into about sqrt(k) groups, then each group's
 * points into leaves) is compiled in below VIDX_HIER_MIN_LEAVES leaves; it
 * is off by default because it lost recall per probe on the 1M x 1024 set
 * (recall@10 0.943 instead of 0.988 at 3 probes), and its exact assignment
 * down the groups pruned little in 1024 dimensions (21 of 32 groups scanned).
 *
 * Assignment (vidx_build_encode): each vector's exact nearest leaf centroid
 * (the leaf a query's best-first search looks in), with the dot-product
 * kernel of assign_points.
 *
 * Determinism: every parallel loop computes per-point (or per-cluster)
 * results that do not depend on how the work is split, and every reduction
 * runs in a fixed order, so results do not depend on the thread count.
 */
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <vector>

#include "internal.hpp"

namespace
{

/* Leaves at or below this count are clustered flat (one group). */
#ifndef VIDX_HIER_MIN_LEAVES
#define VIDX_HIER_MIN_LEAVES 1000000000
#endif
constexpr int HIER_MIN_LEAVES = VIDX_HIER_MIN_LEAVES;
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

/* Leaves per group: proportional to its points (largest remainder), >= 1 and <= its points. */
std::vector<int>
share_leaves(const std::vector<int64_t> &npts, int k)
{
	const int g = (int) npts.size();
	int64_t n = 0;

	for (int64_t c : npts)
		n += c;
	std::vector<int> share((size_t) g, 0);
	std::vector<double> rem((size_t) g, 0);
	int64_t sum = 0;

	for (int i = 0; i < g; i++)
	{
		if (npts[i] == 0)
			continue;
		double exact = (double) k * (double) npts[i] / (double) n;

		share[i] = std::max(1, (int) std::floor(exact));
		share[i] = (int) std::min<int64_t>(share[i], npts[i]);
		rem[i] = exact - std::floor(exact);
		sum += share[i];
	}
	/* Too many (the minimum of one): take from the largest shares. */
	while (sum > k)
	{
		int best = -1;

		for (int i = 0; i < g; i++)
			if (share[i] > 1 && (best < 0 || share[i] > share[best]))
				best = i;
		if (best < 0)
			break;
		share[best]--;
		sum--;
	}
	/* Too few: give to the largest remainders, then to the most points per leaf. */
	while (sum < k)
	{
		int best = -1;

		for (int i = 0; i < g; i++)
		{
			if (share[i] >= npts[i])
				continue;
			if (best < 0 || rem[i] > rem[best] ||
			    (rem[i] == rem[best] &&
			     (double) npts[i] / share[i] > (double) npts[best] / std::max(1, share[best])))
				best = i;
		}
		if (best < 0)
			break;
		share[best]++;
		rem[best] = -1.0; /* once per group by remainder */
		sum++;
	}
	return share;
}

int
kmeans_hier_run(const float *points, int64_t n, int dims, int k, int iterations, uint64_t seed,
                float *centroids, int32_t *group_start, int *ngroups_out, int threads,
                VidxProgressFn progress, void *progress_arg, char *err, size_t errlen)
{
	const size_t d = (size_t) dims;

	if (points == nullptr || centroids == nullptr || group_start == nullptr || n <= 0 || k <= 0 ||
	    dims <= 0 || dims > VIDX_MAX_DIMS)
	{
		vidx::set_err(err, errlen, "invalid k-means arguments (n=%lld, dims=%d, k=%d)",
		              (long long) n, dims, k);
		return VIDX_E_INVALID;
	}
	const double cap = BALANCE_CAP * (double) n / (double) k;

	if (k <= HIER_MIN_LEAVES || n <= k)
	{
		int rc = vidx::kmeans_run(points, n, dims, k, iterations, seed, centroids, threads,
		                          progress, progress_arg, err, errlen);

		if (rc != VIDX_OK)
			return rc;
		std::vector<int32_t> assign((size_t) n);

		/* k-means is done: its last progress report stands while balancing. */
		rc = balance(points, n, dims, k, centroids, assign.data(), cap, seed ^ 0x62616c616e6365ULL,
		             threads, progress, progress_arg, iterations, iterations);
		if (rc != VIDX_OK)
			return rc;
		group_start[0] = 0;
		group_start[1] = k;
		*ngroups_out = 1;
		return VIDX_OK;
	}

	/* Top level: about sqrt(k) groups. */
	int g = (int) std::lround(std::sqrt((double) k));
	std::vector<float> top((size_t) g * d);
	int rc = vidx::kmeans_run(points, n, dims, g, iterations, seed ^ 0x746f70ULL, top.data(),
	                          threads, nullptr, nullptr, err, errlen);

	if (rc != VIDX_OK)
		return rc;
	if (progress && progress(progress_arg, 0, g) != 0)
		return VIDX_E_CANCELLED;
	std::vector<int32_t> gassign((size_t) n);

	vidx::assign_points(points, n, dims, top.data(), g, gassign.data(), nullptr, threads);
	std::vector<int64_t> npts((size_t) g, 0);

	for (int64_t i = 0; i < n; i++)
		npts[gassign[i]]++;
	std::vector<int> share = share_leaves(npts, k);

	/* Points of each group, contiguous, in point order. */
	std::vector<int64_t> gbeg((size_t) g + 1, 0), order((size_t) n);

	for (int j = 0; j < g; j++)
		gbeg[j + 1] = gbeg[j] + npts[j];
	{
		std::vector<int64_t> pos(gbeg.begin(), gbeg.end() - 1);

		for (int64_t i = 0; i < n; i++)
			order[pos[gassign[i]]++] = i;
	}
	std::vector<float> sub;
	std::vector<int32_t> sub_assign;
	int next = 0, ng = 0;

	for (int j = 0; j < g; j++)
	{
		if (share[j] == 0)
			continue;
		const int64_t m = npts[j];

		sub.resize((size_t) m * d);
		for (int64_t t = 0; t < m; t++)
			std::memcpy(sub.data() + (size_t) t * d, points + (size_t) order[gbeg[j] + t] * d,
			            d * sizeof(float));
		float *cj = centroids + (size_t) next * d;

		rc = vidx::kmeans_run(sub.data(), m, dims, share[j], iterations,
		                      seed + 0x9E3779B97F4A7C15ULL * (uint64_t) (j + 1), cj, threads,
		                      nullptr, nullptr, err, errlen);
		if (rc != VIDX_OK)
			return rc;
		sub_assign.resize((size_t) m);
		rc = balance(sub.data(), m, dims, share[j], cj, sub_assign.data(), cap,
		             seed ^ (0x62616c616e6365ULL + (uint64_t) j), threads, progress, progress_arg,
		             j, g);
		if (rc != VIDX_OK)
			return rc;
		group_start[ng++] = next;
		next += share[j];
		if (progress && progress(progress_arg, j + 1, g) != 0)
			return VIDX_E_CANCELLED;
	}
	/* share_leaves gives k in all when the groups have k points or more (n > k). */
	if (next != k)
	{
		vidx::set_err(err, errlen, "internal error: %d leaves shared instead of %d", next, k);
		return VIDX_E_INTERNAL;
	}
	group_start[ng] = k;
	*ngroups_out = ng;
	return VIDX_OK;
}

/* Group centres (means of their leaf centroids) and radii (max distance to a leaf centroid). */
void
group_bounds(const float *centroids, int dims, const int32_t *group_start, int ngroups, float *gc,
             float *grad)
{
	const size_t d = (size_t) dims;

	for (int g = 0; g < ngroups; g++)
	{
		std::vector<double> s(d, 0.0);
		int cnt = group_start[g + 1] - group_start[g];

		for (int j = group_start[g]; j < group_start[g + 1]; j++)
			for (size_t u = 0; u < d; u++)
				s[u] += centroids[(size_t) j * d + u];
		for (size_t u = 0; u < d; u++)
			gc[(size_t) g * d + u] = (float) (s[u] / std::max(1, cnt));
		double r = 0;

		for (int j = group_start[g]; j < group_start[g + 1]; j++)
		{
			double dd = 0;

			for (size_t u = 0; u < d; u++)
			{
				double t = (double) gc[(size_t) g * d + u] - (double) centroids[(size_t) j * d + u];

				dd += t * t;
			}
			r = std::max(r, std::sqrt(dd));
		}
		grad[g] = vidx::round_up_float(r);
	}
}

/*
 * Exact nearest leaf centroid of each point (ties to the lowest leaf), visiting
 * groups nearest first and skipping those whose lower bound cannot win.
 * Returns the number of groups whose leaves were scanned, summed over points.
 */
int64_t
assign_hier(const float *points, int64_t n, int dims, const float *centroids,
            const int32_t *group_start, int ngroups, const float *gc, const float *grad,
            int32_t *assignment, int threads)
{
	const size_t d = (size_t) dims;
	constexpr int64_t CHUNK = 32;
	const int nt = vidx::parallel_threads(threads, n, CHUNK);
	const int gpad = (ngroups + 3) & ~3;
	std::vector<float> dgbuf((size_t) nt * gpad);
	std::vector<int32_t> ordbuf((size_t) nt * gpad);
	std::vector<int64_t> visited((size_t) nt * 8, 0); /* a cache line per thread */

	{
		auto nearest = [&](int64_t i, int tid) noexcept
		{
			float *dg = dgbuf.data() + (size_t) tid * gpad;
			int32_t *ord = ordbuf.data() + (size_t) tid * gpad;
			const float *x = points + (size_t) i * d;
			float best = std::numeric_limits<float>::infinity();
			int32_t bestj = group_start[0];

			if (ngroups == 1)
				ord[0] = 0;
			else
			{
				for (int g = 0; g < ngroups; g += 4)
				{
					float o[4];
					const float *c0 = gc + (size_t) g * d;
					const float *c1 = g + 1 < ngroups ? c0 + d : c0;
					const float *c2 = g + 2 < ngroups ? c0 + 2 * d : c0;
					const float *c3 = g + 3 < ngroups ? c0 + 3 * d : c0;

					vidx::l2sq_x4(x, c0, c1, c2, c3, dims, o);
					for (int u = 0; u < 4 && g + u < ngroups; u++)
						dg[g + u] = std::sqrt(o[u]);
				}
				for (int g = 0; g < ngroups; g++)
					ord[g] = g;
				std::sort(ord, ord + ngroups,
				          [dg](int32_t a, int32_t b)
				          { return dg[a] < dg[b] || (dg[a] == dg[b] && a < b); });
			}
			for (int t = 0; t < ngroups; t++)
			{
				int g = ord[t];

				if (ngroups > 1 && best < std::numeric_limits<float>::infinity())
				{
					float lb = dg[g] - grad[g];

					lb -= 1e-4f * (dg[g] + grad[g]) + 1e-30f;
					if (lb > 0 && lb * lb > best)
						break;
				}
				visited[(size_t) tid * 8]++;
				const int j0 = group_start[g], j1 = group_start[g + 1];

				for (int j = j0; j < j1; j += 4)
				{
					float o[4];
					const float *c0 = centroids + (size_t) j * d;
					const float *c1 = j + 1 < j1 ? c0 + d : c0;
					const float *c2 = j + 2 < j1 ? c0 + 2 * d : c0;
					const float *c3 = j + 3 < j1 ? c0 + 3 * d : c0;

					vidx::l2sq_x4(x, c0, c1, c2, c3, dims, o);
					for (int u = 0; u < 4 && j + u < j1; u++)
						if (o[u] < best || (o[u] == best && j + u < bestj))
						{
							best = o[u];
							bestj = j + u;
						}
				}
			}
			assignment[i] = bestj;
		};

		vidx::parallel_for(nt, n, CHUNK, nearest);
	}
	int64_t total = 0;

	for (int64_t v : visited)
		total += v;
	return total;
}

inline const float *
record_vector(const char *records, size_t record_size, int64_t i)
{
	return reinterpret_cast<const float *>(records + (size_t) i * record_size +
	                                       sizeof(VidxSidecarRecord));
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
                     float *centroids, int32_t *group_start, int *ngroups, int threads,
                     VidxProgressFn progress, void *progress_arg, char *err, size_t errlen) noexcept
{
	try
	{
		return kmeans_hier_run(points, n, dims, k, iterations, seed, centroids, group_start,
		                       ngroups, threads, progress, progress_arg, err, errlen);
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
vidx_build_encode(const void *records, int64_t n, size_t record_size, int dims, int refine_bits,
                  VidxMetric metric, const void *rotation, const float *centroids,
                  const int32_t *group_start, int ngroups, uint32_t first_slot, float *scratch,
                  void *postings, int32_t *assignment, int64_t *groups_visited, int threads,
                  char *err, size_t errlen) noexcept
{
	try
	{
		if (n <= 0)
			return VIDX_OK;
		if (records == nullptr || centroids == nullptr || group_start == nullptr || ngroups < 1 ||
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
		std::vector<float> gc, grad;

		if (ngroups > 1)
		{
			gc.resize((size_t) ngroups * d);
			grad.resize((size_t) ngroups);
			group_bounds(centroids, dims, group_start, ngroups, gc.data(), grad.data());
		}
		rotate_records(recs, n, record_size, dims, metric, rotation, scratch, threads);
		int64_t visited = n;

		if (ngroups == 1)
			vidx::assign_points(scratch, n, dims, centroids, group_start[1], assignment, nullptr,
			                    threads);
		else
			visited = assign_hier(scratch, n, dims, centroids, group_start, ngroups, gc.data(),
			                      grad.data(), assignment, threads);

		if (groups_visited)
			*groups_visited += visited;
		auto encode = [&](int64_t i, int) noexcept
		{
			const VidxSidecarRecord *r =
			    reinterpret_cast<const VidxSidecarRecord *>(recs + (size_t) i * record_size);
			VidxPosting *p =
			    reinterpret_cast<VidxPosting *>(static_cast<char *>(postings) + (size_t) i * psize);

			std::memset(p, 0, psize);
			vidx_rabitq_encode_refined(scratch + (size_t) i * d,
			                           centroids + (size_t) assignment[i] * d, dims, refine_bits,
			                           p);
			p->heap_block = r->heap_block;
			p->heap_offset = r->heap_offset;
			p->slot = first_slot + (uint32_t) i;
			p->vhash = r->vhash;
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
