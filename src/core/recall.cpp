/*
 * recall.cpp: exact k nearest neighbours of a few queries over a stream of
 * vectors, for vidx_recall() and the index's recall calibration
 * (src/recall.c, src/calibrate.c).
 */
#include "internal.hpp"
#include "vidx_core.h"

extern "C" void
vidx_knn_update(VidxMetric metric, const float *queries, int nq, const int64_t *exclude,
                const float *data, const int64_t *ids, int64_t n, int dims, int k, double *top_dist,
                int64_t *top_id, int threads) noexcept
{
	auto one = [&](int64_t q, int) noexcept
	{
		const float *qv = queries + (size_t) q * dims;
		double *dist = top_dist + (size_t) q * k;
		int64_t *id = top_id + (size_t) q * k;

		for (int64_t i = 0; i < n; i++)
		{
			double d;
			int j;

			if (exclude != nullptr && ids[i] == exclude[q])
				continue;
			d = vidx_distance(metric, data + (size_t) i * dims, qv,
			                  dims); /* (as a scan computes it) */
			/* ties keep the earlier id: the result does not depend on batch boundaries */
			if (!(d < dist[k - 1]))
				continue;
			for (j = k - 1; j > 0 && d < dist[j - 1]; j--)
			{
				dist[j] = dist[j - 1];
				id[j] = id[j - 1];
			}
			dist[j] = d;
			id[j] = ids[i];
		}
	};

	vidx::parallel_for(threads, nq, 1, one);
}
