/*
 * recall.cpp: exact k nearest neighbours of a few queries over a stream of
 * vectors, for vidx_recall() and the index's recall calibration
 * (src/recall.c, src/calibrate.c).
 */
#include <cmath>
#include <limits>
#include <vector>

#include "internal.hpp"
#include "vidx_core.h"

namespace
{

/* Queries a task compares with each vector while the vector is in L1. */
constexpr int QBLOCK = 16;

/*
 * The distance from a score: L2 and COSINE compare squared L2 distances (of
 * normalized vectors under COSINE: 2 (1 - cos)), IP the negative dot product.
 */
inline double
score_to_distance(VidxMetric metric, double s)
{
	switch (metric)
	{
	case VIDX_METRIC_L2:
		return std::sqrt(std::max(s, 0.0));
	case VIDX_METRIC_COSINE:
		return s / 2.0;
	default:
		return s;
	}
}

inline void
push(double d, int64_t id, double *dist, int64_t *ids, int k)
{
	int j;

	/*
	 * Ties go to the smaller id: the result depends neither on batch
	 * boundaries nor on the order the vectors come in (storage order).
	 */
	if (!(d < dist[k - 1] || (d == dist[k - 1] && id < ids[k - 1])))
		return;
	for (j = k - 1; j > 0 && (d < dist[j - 1] || (d == dist[j - 1] && id < ids[j - 1])); j--)
	{
		dist[j] = dist[j - 1];
		ids[j] = ids[j - 1];
	}
	dist[j] = d;
	ids[j] = id;
}

} // namespace

extern "C" void
vidx_knn_update(VidxMetric metric, const float *queries, int nq, const int64_t *exclude,
                const float *data, const int64_t *ids, int64_t n, int dims, int k, double *top_dist,
                int64_t *top_id, int threads) noexcept
{
	int64_t nblocks = (nq + QBLOCK - 1) / QBLOCK;

	auto block = [&](int64_t b, int) noexcept
	{
		int q0 = (int) (b * QBLOCK);
		int m = std::min(QBLOCK, nq - q0);
		/* (the pool's tasks own no memory that matters if this throws: none of it is shared) */
		std::vector<float> qn, xn;
		const float *qs[QBLOCK];

		try
		{
			if (metric == VIDX_METRIC_COSINE)
			{
				qn.resize((size_t) m * dims);
				xn.resize(dims);
			}
		}
		catch (...)
		{
			return; /* out of memory: the caller sees no neighbour for these queries */
		}
		for (int i = 0; i < QBLOCK; i++)
		{
			int q = q0 + std::min(i, m - 1); /* (padding repeats the last query) */

			qs[i] = queries + (size_t) q * dims;
			if (metric == VIDX_METRIC_COSINE && i < m)
			{
				vidx_normalize(qs[i], qn.data() + (size_t) i * dims, dims);
				qs[i] = qn.data() + (size_t) i * dims;
			}
			else if (metric == VIDX_METRIC_COSINE)
				qs[i] = qs[m - 1];
		}
		for (int64_t v = 0; v < n; v++)
		{
			const float *x = data + (size_t) v * dims;
			float s[QBLOCK];

			if (metric == VIDX_METRIC_IP)
			{
				for (int i = 0; i < m; i++)
					s[i] = -vidx_dot(x, qs[i], dims);
			}
			else
			{
				if (metric == VIDX_METRIC_COSINE)
				{
					vidx_normalize(x, xn.data(), dims);
					x = xn.data();
				}
				for (int i = 0; i < m; i += 4)
					vidx::l2sq_x4(x, qs[i], qs[i + 1], qs[i + 2], qs[i + 3], dims, s + i);
			}
			for (int i = 0; i < m; i++)
			{
				int q = q0 + i;
				double d = s[i];

				if (exclude != nullptr && ids[v] == exclude[q])
					continue;
				if (!vidx::float_sum_ok(s[i])) /* overflow or tiny: in double */
					d = metric == VIDX_METRIC_IP ? -vidx::dot_double(x, qs[i], dims)
					                             : vidx::l2sq_double(x, qs[i], dims);
				push(score_to_distance(metric, d), ids[v], top_dist + (size_t) q * k,
				     top_id + (size_t) q * k, k);
			}
		}
	};

	vidx::parallel_for(threads, nblocks, 1, block);
}
