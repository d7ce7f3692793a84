/*
 * topk.cpp: ordering of scan candidates by score (ascending), ties by
 * payload. NaN scores sort last, so the comparison stays a strict weak order.
 */
#include <algorithm>
#include <cmath>

#include "internal.hpp"

namespace
{

inline bool
better(const VidxCandidate &a, const VidxCandidate &b)
{
	bool an = std::isnan(a.score), bn = std::isnan(b.score);

	if (an != bn)
		return bn; /* a number beats NaN */
	if (!an && a.score != b.score)
		return a.score < b.score;
	return a.payload < b.payload;
}

} // namespace

extern "C" void
vidx_candidates_sort(VidxCandidate *c, int64_t n) noexcept
{
	if (n > 1)
		std::sort(c, c + n, better);
}

extern "C" void
vidx_candidates_select(VidxCandidate *c, int64_t n, int64_t k) noexcept
{
	if (n <= 1 || k <= 0)
		return;
	if (k >= n)
	{
		std::sort(c, c + n, better);
		return;
	}
	/* nth_element + sort of the head: O(n + k log k). */
	std::nth_element(c, c + k, c + n, better);
	std::sort(c, c + k, better);
}
