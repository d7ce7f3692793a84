/*
 * kmeans.cpp: seeded k-means++ initialization, Lloyd iterations (L2) and the
 * nearest-centroid assignment, on the core's threads (threads.cpp).
 *
 * Determinism whatever the thread count: every parallel step computes a
 * per-point (or per-cluster) result that does not depend on how the work is
 * split, and every reduction over points runs in point order (per cluster,
 * in double). Random choices are made on the calling thread only.
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

/* Points per assignment block: keeps a block of points around 256 kB. */
constexpr int MAX_BLOCK = 64;
/* Points per chunk of a k-means++ distance update (one distance each). */
constexpr int64_t SEED_CHUNK = 512;
/* Lloyd keeps a lower bound per point and centroid up to this many pairs (64 MB). */
constexpr double ELKAN_MAX_PAIRS = 16.0 * 1024 * 1024;
/* Bound of the dot-product kernel's float error on a squared distance, per |x|^2 + |c|^2. */
constexpr double DOT_ERR = 2e-5;

int
block_points(int dims)
{
	size_t bytes = (size_t) std::max(dims, 1) * sizeof(float);
	size_t pb = (size_t) (256 * 1024) / bytes;

	return (int) std::min<size_t>(MAX_BLOCK, std::max<size_t>(8, pb));
}

bool
report(VidxProgressFn progress, void *arg, int64_t done, int64_t total)
{
	return progress != nullptr && progress(arg, done, total) != 0;
}

/* s[u] += x[u] in double (one addition per element: the same sums with any vector width). */
VIDX_CLONES void
add_to_double(double *s, const float *x, size_t d)
{
	for (size_t u = 0; u < d; u++)
		s[u] += x[u];
}

} // namespace

void
vidx::means_from_order(const float *points, int dims, int k, const int64_t *count,
                       const int64_t *start, const int64_t *order, float *centroids, int threads)
{
	const size_t d = (size_t) dims;
	const int nt = parallel_threads(threads, k, 4);
	std::vector<double> acc((size_t) nt * d);
	auto mean = [&](int64_t j, int tid) noexcept
	{
		if (count[j] == 0)
			return;
		double *s = acc.data() + (size_t) tid * d;

		std::fill(s, s + d, 0.0);
		for (int64_t t = start[j]; t < start[j + 1]; t++)
			add_to_double(s, points + (size_t) order[t] * d, d);
		double inv = 1.0 / (double) count[j];
		float *cj = centroids + (size_t) j * d;

		for (size_t u = 0; u < d; u++)
			cj[u] = (float) (s[u] * inv);
	};

	parallel_for(nt, k, 4, mean);
}

void
vidx::update_means(const float *points, int64_t n, int dims, int k, const int32_t *assign,
                   float *centroids, int threads)
{
	std::vector<int64_t> count((size_t) k), start((size_t) k + 1), order((size_t) n);

	group_by_cluster(assign, n, k, count.data(), start.data(), order.data());
	means_from_order(points, dims, k, count.data(), start.data(), order.data(), centroids, threads);
}

void
vidx::assign_points(const float *points, int64_t n, int dims, const float *centroids, int k,
                    int32_t *assignment, float *dist, int threads)
{
	if (n <= 0 || k <= 0)
		return;
	const int pb = block_points(dims);
	const int64_t nblocks = (n + pb - 1) / pb;

	/* Many points and centroids: the dot-product kernel (about 3x fewer instructions). */
	if (vidx::nearest_block_fast_available() && k >= 6 && n >= 64)
	{
		std::vector<float> cnorm;

		try
		{
			cnorm.resize((size_t) k);
		}
		catch (const std::bad_alloc &)
		{
			goto slow; /* the l2sq_x4 path needs no memory */
		}
		for (int j = 0; j < k; j++)
			cnorm[j] = vidx::self_dot_fast(centroids + (size_t) j * dims, dims);
		auto fast_block = [&](int64_t b, int) noexcept
		{
			int64_t i0 = b * pb;
			int cnt = (int) std::min<int64_t>(pb, n - i0);
			float best[MAX_BLOCK];
			int32_t besti[MAX_BLOCK];

			vidx::nearest_block_fast(points + (size_t) i0 * dims, cnt, dims, centroids,
			                         cnorm.data(), k, best, besti);
			for (int t = 0; t < cnt; t++)
			{
				assignment[i0 + t] = besti[t];
				if (dist)
					dist[i0 + t] = best[t];
			}
		};

		vidx::parallel_for(threads, nblocks, 1, fast_block);
		return;
	}

slow:
	auto slow_block = [&](int64_t b, int) noexcept
	{
		int64_t i0 = b * pb;
		int cnt = (int) std::min<int64_t>(pb, n - i0);
		float best[MAX_BLOCK];
		int32_t besti[MAX_BLOCK];

		for (int t = 0; t < cnt; t++)
		{
			best[t] = std::numeric_limits<float>::infinity();
			besti[t] = 0;
		}
		for (int j = 0; j < k; j += 4)
		{
			int jn = std::min(4, k - j);
			const float *c0 = centroids + (size_t) j * dims;
			const float *c1 = jn > 1 ? c0 + dims : c0;
			const float *c2 = jn > 2 ? c0 + 2 * (size_t) dims : c0;
			const float *c3 = jn > 3 ? c0 + 3 * (size_t) dims : c0;

			for (int t = 0; t < cnt; t++)
			{
				float d[4];

				vidx::l2sq_x4(points + (size_t) (i0 + t) * dims, c0, c1, c2, c3, dims, d);
				for (int u = 0; u < jn; u++)
				{
					if (d[u] < best[t])
					{
						best[t] = d[u];
						besti[t] = j + u;
					}
				}
			}
		}
		for (int t = 0; t < cnt; t++)
		{
			assignment[i0 + t] = besti[t];
			if (dist)
				dist[i0 + t] = best[t];
		}
	};

	vidx::parallel_for(threads, nblocks, 1, slow_block);
}

int
vidx::kmeans_run(const float *points, int64_t n, int dims, int k, int iterations, uint64_t seed,
                 float *centroids, int threads, VidxProgressFn progress, void *progress_arg,
                 char *err, size_t errlen)
{
	const size_t d = (size_t) dims;

	if (points == nullptr || centroids == nullptr || n <= 0 || k <= 0 || dims <= 0 ||
	    dims > VIDX_MAX_DIMS)
	{
		set_err(err, errlen, "invalid k-means arguments (n=%lld, dims=%d, k=%d)", (long long) n,
		        dims, k);
		return VIDX_E_INVALID;
	}
	if (iterations < 0)
		iterations = 0;

	/* Fewer points than centroids: duplicate points. */
	if (n <= k)
	{
		for (int j = 0; j < k; j++)
			std::memcpy(centroids + j * d, points + (size_t) (j % n) * d, d * sizeof(float));
		return report(progress, progress_arg, iterations, iterations) ? VIDX_E_CANCELLED : VIDX_OK;
	}

	SplitMix64 rng(seed ^ 0x6b6d65616e73ULL);

	/* ---- k-means++ on a seeded subsample ---- */
	int64_t m = std::min<int64_t>(n, std::max<int64_t>((int64_t) k * 4, 8192));
	std::vector<int64_t> sample;

	if (m == n)
	{
		sample.resize(n);
		for (int64_t i = 0; i < n; i++)
			sample[i] = i;
	}
	else
	{
		/* Floyd's algorithm would avoid the n-sized array, but n is modest. */
		std::vector<int64_t> idx(n);

		for (int64_t i = 0; i < n; i++)
			idx[i] = i;
		for (int64_t i = 0; i < m; i++)
		{
			int64_t j = i + (int64_t) rng.below((uint64_t) (n - i));

			std::swap(idx[i], idx[j]);
		}
		sample.assign(idx.begin(), idx.begin() + m);
		std::sort(sample.begin(), sample.end());
	}

	std::vector<float> mind(m);
	std::vector<int32_t> near(m, 0);
	std::vector<float> cc(k);
	std::vector<char> chosen(m, 0);
	int64_t first = (int64_t) rng.below((uint64_t) m);
	float *cent = centroids; /* the latest centroid */
	int latest = 0;
	/*
	 * mind: each sample point's squared distance to its nearest centroid so
	 * far, near: that centroid. cc[j]: squared distance from the latest
	 * centroid to centroid j. By the triangle inequality a point whose
	 * nearest centroid j has cc[j] >= (2 + 1/40)^2 mind cannot be nearer the
	 * latest one: |x - latest| >= 1.025 sqrt(mind), a margin far beyond float
	 * rounding, so the float distance would not have been smaller either and
	 * skipping it changes nothing. Most points are skipped once there are a
	 * few dozen centroids.
	 */
	auto first_dist = [&](int64_t i, int) noexcept
	{ mind[i] = vidx_l2sq(points + (size_t) sample[i] * d, cent, dims); };
	auto nearer = [&](int64_t i, int) noexcept
	{
		if (cc[near[i]] >= 4.1f * mind[i])
			return;
		float dd = vidx_l2sq(points + (size_t) sample[i] * d, cent, dims);

		if (dd < mind[i])
		{
			mind[i] = dd;
			near[i] = latest;
		}
	};

	std::memcpy(cent, points + (size_t) sample[first] * d, d * sizeof(float));
	chosen[first] = 1;
	parallel_for(threads, m, SEED_CHUNK, first_dist);

	for (int c = 1; c < k; c++)
	{
		if ((c & 255) == 0 && report(progress, progress_arg, 0, iterations))
			return VIDX_E_CANCELLED;

		double total = 0;

		for (int64_t i = 0; i < m; i++)
			total += mind[i];
		int64_t pick = -1;

		if (total > 0 && std::isfinite(total))
		{
			double r = rng.uniform() * total, acc = 0;

			for (int64_t i = 0; i < m; i++)
			{
				acc += mind[i];
				if (acc > r && mind[i] > 0)
				{
					pick = i;
					break;
				}
			}
			if (pick < 0) /* rounding at the end: last positive weight */
				for (int64_t i = m - 1; i >= 0 && pick < 0; i--)
					if (mind[i] > 0)
						pick = i;
		}
		if (pick < 0)
		{
			/* All remaining weight is zero (duplicates): any unchosen point. */
			int64_t start = (int64_t) rng.below((uint64_t) m);

			for (int64_t t = 0; t < m && pick < 0; t++)
				if (!chosen[(start + t) % m])
					pick = (start + t) % m;
			if (pick < 0)
				pick = start;
		}
		chosen[pick] = 1;
		cent = centroids + (size_t) c * d;
		std::memcpy(cent, points + (size_t) sample[pick] * d, d * sizeof(float));
		latest = c;
		for (int j = 0; j < c; j++)
			cc[j] = vidx_l2sq(cent, centroids + (size_t) j * d, dims);
		parallel_for(threads, m, SEED_CHUNK, nearer);
	}
	std::vector<float>().swap(mind);
	std::vector<int32_t>().swap(near);
	std::vector<char>().swap(chosen);
	std::vector<int64_t>().swap(sample);

	/* ---- Lloyd ---- */
	std::vector<int32_t> assign(n, -1), prev(n, -1);
	std::vector<float> dist(n);
	std::vector<int64_t> count(k), start(k + 1), order(n);
	/*
	 * With the dot-product kernel and at most ELKAN_MAX_PAIRS point-centroid
	 * pairs, Elkan's bounds skip the distances that cannot change a point's
	 * nearest centroid: ub[i] bounds the distance from point i to its
	 * centroid, lb[i k + j] the distance to centroid j (moved by the
	 * centroids' drifts after each update). Distance j of point i is computed
	 * unless lb^2 - ub^2 exceeds twice the kernel's worst float error for the
	 * point (DOT_ERR (|x|^2 + max |c|^2)); a skipped centroid's float distance
	 * is then surely above the nearest one's, and every computed distance is
	 * the float the kernel computes for the pair (distance.cpp), so the
	 * assignments, and the centroids, are exactly those of computing every
	 * distance. A skipped point's dist (used only to reseed an empty cluster)
	 * is computed when needed (stamp: the iteration it was computed in).
	 */
	const bool bounded = nearest_block_fast_available() && k >= 6 && n >= 64 &&
	                     (double) n * (double) k <= ELKAN_MAX_PAIRS;
	std::vector<float> lb, xn, cnorm, old;
	std::vector<double> ub;
	std::vector<int32_t> stamp;
	const int pb = block_points(dims);
	double cnmax = 0;

	if (bounded)
	{
		lb.resize((size_t) n * k);
		ub.assign(n, 0.0);
		xn.resize(n);
		cnorm.resize(k);
		old.resize((size_t) k * d);
		stamp.assign(n, -1);
		parallel_for(threads, n, 256,
		             [&](int64_t i, int) noexcept
		             { xn[i] = self_dot_fast(points + (size_t) i * d, dims); });
	}
	auto err_of = [&](int64_t i) noexcept { return DOT_ERR * ((double) xn[i] + cnmax); };
	/* First iteration: every distance, by blocks of points. */
	auto full_block = [&](int64_t b, int) noexcept
	{
		int64_t i0 = b * pb;
		int cnt = (int) std::min<int64_t>(pb, n - i0);
		const float *rows[MAX_BLOCK];
		float best[MAX_BLOCK];
		int32_t besti[MAX_BLOCK];

		for (int t = 0; t < cnt; t++)
			rows[t] = points + (size_t) (i0 + t) * d;
		nearest_rows_fast(rows, cnt, dims, centroids, cnorm.data(), k, best, besti,
		                  lb.data() + (size_t) i0 * k);
		for (int t = 0; t < cnt; t++)
		{
			int64_t i = i0 + t;
			double e = err_of(i);
			float *l = lb.data() + (size_t) i * k;

			for (int j = 0; j < k; j++)
				l[j] = (float) std::sqrt(std::max(0.0, (double) l[j] - e));
			assign[i] = besti[t];
			dist[i] = best[t];
			ub[i] = std::sqrt((double) best[t] + e);
		}
	};
	/* Later iterations: the distances the bounds do not rule out, point by point. */
	auto bounded_point = [&](int64_t i, int it, int32_t *js, float *dd) noexcept
	{
		const float *row = points + (size_t) i * d;
		float *l = lb.data() + (size_t) i * k;
		const double e = err_of(i);
		int a = prev[i];
		int nj = 0;

		if (a >= 0)
		{
			double u2 = ub[i] * ub[i] + 2 * e;
			bool skip = true;

			for (int j = 0; j < k && skip; j++)
				if (j != a && (double) l[j] * (double) l[j] <= u2)
					skip = false;
			if (skip)
			{
				assign[i] = a;
				return;
			}
			/* The distance to its own centroid first: it tightens ub. */
			row_distances_fast(row, xn[i], dims, centroids, cnorm.data(), &a, 1, dd);
			ub[i] = std::sqrt((double) dd[0] + e);
			l[a] = (float) std::sqrt(std::max(0.0, (double) dd[0] - e));
			u2 = ub[i] * ub[i] + 2 * e;
			for (int j = 0; j < k; j++)
				if (j != a && (double) l[j] * (double) l[j] <= u2)
					js[nj++] = j;
			float best = dd[0];
			int32_t besti = a;

			row_distances_fast(row, xn[i], dims, centroids, cnorm.data(), js, nj, dd);
			for (int t = 0; t < nj; t++)
			{
				int j = js[t];

				l[j] = (float) std::sqrt(std::max(0.0, (double) dd[t] - e));
				if (dd[t] < best || (dd[t] == best && j < besti))
				{
					best = dd[t];
					besti = j;
				}
			}
			assign[i] = besti;
			dist[i] = best;
			ub[i] = std::sqrt((double) best + e);
		}
		else
		{
			/* A reseeded point: every distance. */
			for (int j = 0; j < k; j++)
				js[nj++] = j;
			row_distances_fast(row, xn[i], dims, centroids, cnorm.data(), js, nj, dd);
			float best = std::numeric_limits<float>::infinity();
			int32_t besti = 0;

			for (int j = 0; j < k; j++)
			{
				l[j] = (float) std::sqrt(std::max(0.0, (double) dd[j] - e));
				if (dd[j] < best)
				{
					best = dd[j];
					besti = j;
				}
			}
			assign[i] = besti;
			dist[i] = best;
			ub[i] = std::sqrt((double) best + e);
		}
		stamp[i] = it;
	};

	for (int it = 0; it < iterations; it++)
	{
		if (!bounded)
			assign_points(points, n, dims, centroids, k, assign.data(), dist.data(), threads);
		else
		{
			cnmax = 0;
			for (int j = 0; j < k; j++)
			{
				cnorm[j] = self_dot_fast(centroids + (size_t) j * d, dims);
				cnmax = std::max(cnmax, (double) cnorm[j]);
			}
			if (it == 0)
			{
				parallel_for(threads, (n + pb - 1) / pb, 1, full_block);
				std::fill(stamp.begin(), stamp.end(), 0);
			}
			else
			{
				const int nt = parallel_threads(threads, n, 64);
				std::vector<int32_t> js((size_t) nt * k);
				std::vector<float> dd((size_t) nt * k);

				parallel_for(nt, n, 64,
				             [&](int64_t i, int tid) noexcept {
					             bounded_point(i, it, js.data() + (size_t) tid * k,
					                           dd.data() + (size_t) tid * k);
				             });
			}
			std::memcpy(old.data(), centroids, (size_t) k * d * sizeof(float));
		}

		int64_t changed = 0;

		for (int64_t i = 0; i < n; i++)
			changed += assign[i] != prev[i];
		std::swap(assign, prev); /* prev = current assignment */
		const int32_t *cur = prev.data();

		group_by_cluster(cur, n, k, count.data(), start.data(), order.data());
		means_from_order(points, dims, k, count.data(), start.data(), order.data(), centroids,
		                 threads);

		/*
		 * Empty clusters: split the largest cluster by moving its farthest
		 * point (from the centroid it was assigned to) into the empty one.
		 */
		bool reseeded = false;

		for (int j = 0; j < k; j++)
		{
			if (count[j] != 0)
				continue;
			int big = 0;

			for (int u = 1; u < k; u++)
				if (count[u] > count[big])
					big = u;
			if (count[big] <= 1)
				break;
			int64_t far = -1;

			for (int64_t t = start[big]; t < start[big + 1]; t++)
			{
				int64_t i = order[t];

				if (bounded && stamp[i] != it)
				{
					/* its distance to the centroid it had in this iteration's assignment */
					row_distances_fast(points + (size_t) i * d, xn[i], dims, old.data(),
					                   cnorm.data(), &big, 1, &dist[i]);
					stamp[i] = it;
				}
				if (dist[i] >= 0 && (far < 0 || dist[i] > dist[far]))
					far = i;
			}
			if (far < 0)
				break;
			dist[far] = -1.0f; /* not picked twice */
			count[big]--;
			count[j] = 1;
			std::memcpy(centroids + (size_t) j * d, points + (size_t) far * d, d * sizeof(float));
			prev[far] = -1; /* counts as changed at the next iteration */
			reseeded = true;
		}

		if (bounded)
		{
			/* Each centroid's drift, rounded up; the bounds follow. */
			std::vector<float> drift(k);

			for (int j = 0; j < k; j++)
				drift[j] = (float) (std::sqrt(l2sq_double(old.data() + (size_t) j * d,
				                                          centroids + (size_t) j * d, dims)) *
				                        (1.0 + 1e-6) +
				                    1e-30);
			parallel_for(threads, n, 256,
			             [&](int64_t i, int) noexcept
			             {
				             float *l = lb.data() + (size_t) i * k;

				             for (int j = 0; j < k; j++)
					             l[j] = std::max(0.0f, l[j] - drift[j]);
				             if (prev[i] >= 0)
					             ub[i] += (double) drift[prev[i]];
			             });
		}

		if (report(progress, progress_arg, it + 1, iterations))
			return VIDX_E_CANCELLED;
		if (changed == 0 && !reseeded)
			break;
	}
	return VIDX_OK;
}

extern "C" int
vidx_kmeans(const float *points, int64_t n, int dims, int k, int iterations, uint64_t seed,
            float *centroids, int threads, VidxProgressFn progress, void *progress_arg, char *err,
            size_t errlen) noexcept
{
	try
	{
		return vidx::kmeans_run(points, n, dims, k, iterations, seed, centroids, threads, progress,
		                        progress_arg, err, errlen);
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
vidx_assign(const float *points, int64_t n, int dims, const float *centroids, int k,
            int32_t *assignment, int threads) noexcept
{
	if (n <= 0 || k <= 0 || dims < 0)
		return;
	vidx::assign_points(points, n, dims, centroids, k, assignment, nullptr, threads);
}
