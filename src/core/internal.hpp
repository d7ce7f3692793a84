/*
 * internal.hpp: helpers shared by the core's translation units. Not part of
 * the C interface (see vidx_core.h for that). No PostgreSQL headers here.
 */
#ifndef VIDX_CORE_INTERNAL_HPP
#define VIDX_CORE_INTERNAL_HPP

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cmath>
#include <cstdio>
#include <limits>
#include <vector>

#include "vidx_core.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define VIDX_X86 1
#define VIDX_TARGET(s) __attribute__((target(s)))
#if defined(__clang__)
#define VIDX_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VIDX_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
#else
#define VIDX_TARGET(s)
#define VIDX_CLONES
#endif

namespace vidx
{

/* Writes a message into err (if any); never fails. */
inline void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

inline void
set_err(char *err, size_t errlen, const char *fmt, ...)
{
	if (err == nullptr || errlen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* splitmix64: small, fast, well-mixed seeded generator. */
struct SplitMix64
{
	uint64_t state;

	explicit SplitMix64(uint64_t seed) : state(seed) {}

	uint64_t next()
	{
		uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
		z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
		return z ^ (z >> 31);
	}

	/* Uniform in [0, 1). */
	double uniform() { return (double) (next() >> 11) * (1.0 / 9007199254740992.0); }

	/* Uniform in [0, n), n > 0 (negligible modulo bias for our n). */
	uint64_t below(uint64_t n) { return next() % n; }
};

/*
 * Squared L2 distances of x to four centroids at once (shares the loads of
 * x). Dispatched to AVX-512 / AVX2 / scalar at run time.
 */
void l2sq_x4(const float *x, const float *c0, const float *c1, const float *c2, const float *c3,
             int dims, float out[4]);

/*
 * A float kernel's sum of squares or products is accurate unless it
 * overflowed or is so small that its terms below FLT_MIN (kept to an
 * absolute 2^-150 only) matter: below FLOAT_SUM_MIN = 2^-100 (8e-31; 16,000
 * such errors are 1e-41) recompute it in double, as after an overflow.
 */
constexpr float FLOAT_SUM_MIN = 0x1p-100f;

inline bool
float_sum_ok(float s)
{
	float a = std::fabs(s);

	return a >= FLOAT_SUM_MIN && a <= std::numeric_limits<float>::max(); /* false for NaN */
}

/* The kernels' sums in double, for where float_sum_ok fails. */
double l2sq_double(const float *a, const float *b, int dims);
double dot_double(const float *a, const float *b, int dims);

/*
 * The dot-product (GEMM-like) nearest-centroid kernel, AVX-512 only: for cnt
 * <= 64 points, the nearest of k centroids whose squared norms (self_dot_fast)
 * are in cnorm, by |x|^2 + |c|^2 - 2 x.c. Use only if nearest_block_fast_available().
 */
bool nearest_block_fast_available();
float self_dot_fast(const float *a, int dims);
void nearest_block_fast(const float *pts, int cnt, int dims, const float *cent, const float *cnorm,
                        int k, float *best, int32_t *besti);
/*
 * The same for up to 64 points given by row pointers; if all is not null it
 * receives every pair's distance (all[t * k + j]). row_distances_fast: the
 * distances of one row (xn = self_dot_fast(row)) to the cnt centroids js.
 * A pair's distance is the same float whichever of the three computes it.
 */
void nearest_rows_fast(const float *const *rows, int cnt, int dims, const float *cent,
                       const float *cnorm, int k, float *best, int32_t *besti, float *all);
void row_distances_fast(const float *row, float xn, int dims, const float *cent, const float *cnorm,
                        const int32_t *js, int cnt, float *out);

/*
 * Parallel loops on the core's own thread pool (threads.cpp; its workers have
 * every signal blocked). parallel_run runs body(ctx, begin, end, tid) over
 * the items [0, n) in chunks of `chunk` items handed out dynamically, on the
 * calling thread (tid 0) and at most parallel_threads(threads, n, chunk) - 1
 * workers (fewer if they cannot be started), and returns when every item is
 * done. A body must not throw, and its results must not depend on which
 * thread runs which chunk. Never throws.
 */
using LoopBody = void (*)(void *ctx, int64_t begin, int64_t end, int tid) noexcept;

/* Threads a loop can use (>= 1, <= threads and the chunks): every tid is below it. */
int parallel_threads(int threads, int64_t n, int64_t chunk) noexcept;
void parallel_run(int threads, int64_t n, int64_t chunk, LoopBody body, void *ctx) noexcept;

/* parallel_run calling f(i, tid) for every item i. */
template <class F>
inline void
parallel_for(int threads, int64_t n, int64_t chunk, const F &f) noexcept
{
	LoopBody body = [](void *c, int64_t b, int64_t e, int tid) noexcept
	{
		const F &fn = *static_cast<const F *>(c);

		for (int64_t i = b; i < e; i++)
			fn(i, tid);
	};

	parallel_run(threads, n, chunk, body, const_cast<F *>(&f));
}

/*
 * Nearest centroid (L2) of each point on up to `threads` threads,
 * deterministic. dist (may be null) receives the squared distance to that
 * centroid. Uses the dot-product kernel where AVX-512 is available (k floats
 * of temporary memory; without them, or without AVX-512, the l2sq_x4
 * kernel). Never throws.
 */
void assign_points(const float *points, int64_t n, int dims, const float *centroids, int k,
                   int32_t *assignment, float *dist, int threads);

/* Smallest float >= x (x >= 0): a radius rounded so that it still bounds. */
inline float
round_up_float(double x)
{
	float f = (float) x;

	if ((double) f < x)
		f = std::nextafter(f, std::numeric_limits<float>::infinity());
	return f;
}

/*
 * Counting sort of points by cluster, in point order: count[k] (members of
 * each cluster), start[k+1] (where each cluster's members begin in order),
 * order[n] (the points of cluster 0, then of cluster 1, ...). The build's
 * postings (Index = uint32_t) and k-means (int64_t) share it. May throw
 * std::bad_alloc.
 */
template <class Count, class Index>
void
group_by_cluster(const int32_t *assign, int64_t n, int k, Count *count, int64_t *start,
                 Index *order)
{
	for (int j = 0; j < k; j++)
		count[j] = 0;
	for (int64_t i = 0; i < n; i++)
		count[assign[i]]++;
	start[0] = 0;
	for (int j = 0; j < k; j++)
		start[j + 1] = start[j] + (int64_t) count[j];
	std::vector<int64_t> pos(start, start + k);

	for (int64_t i = 0; i < n; i++)
		order[pos[assign[i]]++] = (Index) i;
}

/*
 * Centroid of each cluster: the mean of its members, summed in double in point
 * order (so the result does not depend on the thread count); clusters without
 * members keep their centroid. means_from_order takes the points grouped by
 * cluster (group_by_cluster: start[j]..start[j+1] in order).
 */
void means_from_order(const float *points, int dims, int k, const int64_t *count,
                      const int64_t *start, const int64_t *order, float *centroids, int threads);
void update_means(const float *points, int64_t n, int dims, int k, const int32_t *assign,
                  float *centroids, int threads);

/* Bytes of a tree blob of nnodes nodes of dims dimensions (header included). */
size_t tree_blob_size(int dims, int nnodes) noexcept;

/*
 * The k-means driver behind vidx_kmeans, on up to `threads` threads; throws
 * std::bad_alloc on OOM. Returns a VIDX status; err gets a message on error.
 */
int kmeans_run(const float *points, int64_t n, int dims, int k, int iterations, uint64_t seed,
               float *centroids, int threads, VidxProgressFn progress, void *progress_arg,
               char *err, size_t errlen);

} // namespace vidx

#endif /* VIDX_CORE_INTERNAL_HPP */
