// libFuzzer target: vidx_query_prep_refined with an arbitrary finite query and
// centroid (the glue rejects NaN/infinite queries), then vidx_rabitq_estimate
// over arbitrary postings (corrupt index pages are arbitrary bytes).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../../src/core/vidx_core.h"

static float
finite(float x)
{
	if (!std::isfinite(x))
		return 0.0f;
	return std::fmax(-1e6f, std::fmin(1e6f, x));
}

extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	int dims = (data[0] | (data[1] << 8)) % 700 + 1;
	VidxMetric metric = static_cast<VidxMetric>(1 + data[2] % 3);
	int n = data[3] % 16 + 1;
	data += 4;
	size -= 4;
	std::vector<float> q(dims), c(dims);
	for (int i = 0; i < dims; i++)
	{
		float a = 0, b = 0;
		if ((size_t) (8 * i + 8) <= size)
		{
			std::memcpy(&a, data + 8 * i, 4);
			std::memcpy(&b, data + 8 * i + 4, 4);
		}
		q[i] = finite(a);
		c[i] = finite(b);
	}
	std::vector<uint64_t> prep(vidx_query_prep_size(dims) / 8 + 1);
	vidx_query_prep_refined(prep.data(), metric, q.data(), c.data(), dims, 0);
	size_t ps = vidx_posting_size(dims);
	std::vector<uint64_t> pages(ps * n / 8 + 1);
	size_t used = 8 * (size_t) dims < size ? 8 * (size_t) dims : size;
	size_t rest = size - used;
	std::memcpy(pages.data(), data + used, rest < ps * n ? rest : ps * n);
	std::vector<const VidxPosting *> postings(n);
	for (int i = 0; i < n; i++)
		postings[i] = reinterpret_cast<const VidxPosting *>(
		    reinterpret_cast<const char *>(pages.data()) + ps * i);
	std::vector<float> est(n), lower(n);
	vidx_rabitq_estimate(prep.data(), postings.data(), n, est.data(), lower.data());
	// a real posting of q encoded against c: its estimate must be finite
	std::vector<uint64_t> own(ps / 8 + 1);
	VidxPosting *p = reinterpret_cast<VidxPosting *>(own.data());
	vidx_rabitq_encode(q.data(), c.data(), dims, p);
	const VidxPosting *pp = p;
	vidx_rabitq_estimate(prep.data(), &pp, 1, est.data(), lower.data());
	if (!std::isfinite(est[0]))
		__builtin_trap();
	return 0;
}
