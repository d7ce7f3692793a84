/* Helpers shared by the core's unit tests. */
#ifndef VIDX_TEST_UTIL_HPP
#define VIDX_TEST_UTIL_HPP

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "vidx_core.h"

namespace vt
{

/* Threads the tests run the core's parallel functions on, unless they vary it. */
constexpr int THREADS = 2;

inline std::vector<float>
gaussian(size_t n, uint64_t seed, float sigma = 1.0f, float mean = 0.0f)
{
	std::mt19937_64 rng(seed);
	std::normal_distribution<float> nd(mean, sigma);
	std::vector<float> v(n);

	for (auto &x : v)
		x = nd(rng);
	return v;
}

/* n points in `clusters` well-separated Gaussian blobs; labels optional. */
inline std::vector<float>
clustered(int64_t n, int dims, int clusters, uint64_t seed, float spread, float sep,
          std::vector<int> *labels = nullptr, std::vector<float> *centers = nullptr)
{
	std::mt19937_64 rng(seed);
	std::normal_distribution<float> nd(0.0f, 1.0f);
	std::vector<float> c((size_t) clusters * dims), v((size_t) n * dims);

	for (auto &x : c)
		x = nd(rng) * sep;
	if (labels)
		labels->resize(n);
	for (int64_t i = 0; i < n; i++)
	{
		int l = (int) (i % clusters);

		if (labels)
			(*labels)[i] = l;
		for (int u = 0; u < dims; u++)
			v[(size_t) i * dims + u] = c[(size_t) l * dims + u] + nd(rng) * spread;
	}
	if (centers)
		*centers = c;
	return v;
}

inline double
l2sq_ref(const float *a, const float *b, int d)
{
	double s = 0;

	for (int i = 0; i < d; i++)
		s += ((double) a[i] - b[i]) * ((double) a[i] - b[i]);
	return s;
}

inline double
dot_ref(const float *a, const float *b, int d)
{
	double s = 0;

	for (int i = 0; i < d; i++)
		s += (double) a[i] * b[i];
	return s;
}

} // namespace vt

#endif
