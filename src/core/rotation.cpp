/*
 * rotation.cpp: a fixed, seeded, orthogonal rotation in O(D log D) for any D.
 *
 * Let h be the largest power of two <= D. The rotation is ROUNDS rounds of:
 * multiply by seeded random signs (+-1), apply the normalized fast
 * Walsh-Hadamard transform to x[0..h), then (if h < D) to x[D-h..D). Every
 * step is orthogonal, so the product is; since h > D/2 the two transforms
 * overlap and mix all coordinates.
 *
 * State (caller memory): a small header, then ROUNDS * D signs stored as
 * floats (so applying them is a plain vectorized multiply).
 */
#include <cmath>
#include <cstring>

#include "internal.hpp"

namespace
{

constexpr int ROUNDS = 4;
constexpr uint32_t ROTATION_MAGIC = 0x56524f54; /* "VROT" */

struct RotationHeader
{
	uint32_t magic;
	int32_t dims;
	int32_t h;
	int32_t rounds;
	float scale; /* 1/sqrt(h) */
	uint32_t pad[3];
};
static_assert(sizeof(RotationHeader) % 16 == 0, "header keeps the signs aligned");

inline const float *
signs_of(const RotationHeader *hdr)
{
	return reinterpret_cast<const float *>(hdr + 1);
}

VIDX_CLONES void
mul_signs(float *x, const float *s, int n)
{
	for (int i = 0; i < n; i++)
		x[i] *= s[i];
}

/* In-place normalized fast Walsh-Hadamard transform of x[0..h), h a power of 2. */
VIDX_CLONES void
fwht(float *x, int h, float scale)
{
	int len = 1;

	/* First three stages fused on blocks of 8 (short strides vectorize badly). */
	if (h >= 8)
	{
		for (int i = 0; i < h; i += 8)
		{
			float *v = x + i;
			float a0 = v[0] + v[1], a1 = v[0] - v[1];
			float a2 = v[2] + v[3], a3 = v[2] - v[3];
			float a4 = v[4] + v[5], a5 = v[4] - v[5];
			float a6 = v[6] + v[7], a7 = v[6] - v[7];
			float b0 = a0 + a2, b2 = a0 - a2, b1 = a1 + a3, b3 = a1 - a3;
			float b4 = a4 + a6, b6 = a4 - a6, b5 = a5 + a7, b7 = a5 - a7;

			v[0] = b0 + b4;
			v[4] = b0 - b4;
			v[1] = b1 + b5;
			v[5] = b1 - b5;
			v[2] = b2 + b6;
			v[6] = b2 - b6;
			v[3] = b3 + b7;
			v[7] = b3 - b7;
		}
		len = 8;
	}
	for (; len < h; len <<= 1)
	{
		for (int i = 0; i < h; i += 2 * len)
		{
			float *lo = x + i;
			float *hi = x + i + len;

			for (int j = 0; j < len; j++)
			{
				float a = lo[j], b = hi[j];

				lo[j] = a + b;
				hi[j] = a - b;
			}
		}
	}
	for (int i = 0; i < h; i++)
		x[i] *= scale;
}

} // namespace

extern "C" size_t
vidx_rotation_size(int dims) noexcept
{
	if (dims < 0)
		dims = 0;
	return sizeof(RotationHeader) + (size_t) ROUNDS * (size_t) dims * sizeof(float);
}

extern "C" void
vidx_rotation_init(void *rotation, int dims, uint64_t seed) noexcept
{
	RotationHeader *hdr = static_cast<RotationHeader *>(rotation);

	if (dims < 0)
		dims = 0;
	std::memset(hdr, 0, sizeof(*hdr));
	hdr->magic = ROTATION_MAGIC;
	hdr->dims = dims;
	hdr->rounds = ROUNDS;
	int h = 1;

	while (dims > 0 && h * 2 <= dims)
		h *= 2;
	hdr->h = dims > 0 ? h : 0;
	hdr->scale = dims > 0 ? (float) (1.0 / std::sqrt((double) h)) : 1.0f;

	float *signs = reinterpret_cast<float *>(hdr + 1);
	vidx::SplitMix64 rng(seed ^ (0x726f746174696f6eULL + (uint64_t) dims));
	size_t total = (size_t) ROUNDS * (size_t) dims;

	for (size_t i = 0; i < total; i += 64)
	{
		uint64_t bits = rng.next();

		for (size_t j = i; j < total && j < i + 64; j++)
			signs[j] = ((bits >> (j - i)) & 1) ? -1.0f : 1.0f;
	}
}

extern "C" void
vidx_rotation_apply(const void *rotation, const float *in, float *out) noexcept
{
	const RotationHeader *hdr = static_cast<const RotationHeader *>(rotation);
	int dims = hdr->dims;
	int h = hdr->h;

	if (dims <= 0)
		return;
	if (in != out)
		std::memmove(out, in, (size_t) dims * sizeof(float));
	const float *signs = signs_of(hdr);

	for (int r = 0; r < hdr->rounds; r++)
	{
		mul_signs(out, signs + (size_t) r * dims, dims);
		fwht(out, h, hdr->scale);
		if (h < dims)
			fwht(out + (dims - h), h, hdr->scale);
	}
}
