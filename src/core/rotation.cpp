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

#include "simd.hpp"

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

#ifdef VIDX_X86
/*
 * fwht for h >= 16 with AVX-512: the stages of length 1, 2, 4 and 8 inside
 * each vector of 16 (lanes swapped, then a + b in the low lane of each pair
 * and a - b in the high one), the longer ones between vectors, the scale
 * with the last stage. Every output is the same sequence of float additions,
 * subtractions and the final multiplication as in fwht, so the rotation is
 * the same to the bit.
 */
#define AVX512 VIDX_TARGET("avx512f")

AVX512 void
fwht_avx512(float *x, int h, float scale)
{
	for (int i = 0; i < h; i += 16)
	{
		__m512 v = _mm512_loadu_ps(x + i);
		__m512 s = _mm512_permute_ps(v, 0xB1); /* pairs swapped */

		v = _mm512_mask_sub_ps(_mm512_add_ps(v, s), 0xAAAA, s, v);
		s = _mm512_permute_ps(v, 0x4E); /* 2 and 2 swapped */
		v = _mm512_mask_sub_ps(_mm512_add_ps(v, s), 0xCCCC, s, v);
		s = _mm512_shuffle_f32x4(v, v, 0xB1); /* 4 and 4 swapped */
		v = _mm512_mask_sub_ps(_mm512_add_ps(v, s), 0xF0F0, s, v);
		s = _mm512_shuffle_f32x4(v, v, 0x4E); /* 8 and 8 swapped */
		v = _mm512_mask_sub_ps(_mm512_add_ps(v, s), 0xFF00, s, v);
		if (h == 16)
			v = _mm512_mul_ps(v, _mm512_set1_ps(scale));
		_mm512_storeu_ps(x + i, v);
	}
	for (int len = 16; len < h; len <<= 1)
	{
		const bool last = 2 * len == h;
		const __m512 sc = _mm512_set1_ps(scale);

		for (int i = 0; i < h; i += 2 * len)
		{
			float *lo = x + i;
			float *hi = x + i + len;

			for (int j = 0; j < len; j += 16)
			{
				__m512 a = _mm512_loadu_ps(lo + j), b = _mm512_loadu_ps(hi + j);
				__m512 sum = _mm512_add_ps(a, b), diff = _mm512_sub_ps(a, b);

				if (last)
				{
					sum = _mm512_mul_ps(sum, sc);
					diff = _mm512_mul_ps(diff, sc);
				}
				_mm512_storeu_ps(lo + j, sum);
				_mm512_storeu_ps(hi + j, diff);
			}
		}
	}
}

bool
fwht_avx512_available()
{
	static const bool ok = (__builtin_cpu_init(), __builtin_cpu_supports("avx512f"));

	return ok;
}
#endif

/* The transform of x[0..h) by the fastest version the CPU has. */
inline void
fwht_any(float *x, int h, float scale)
{
#ifdef VIDX_X86
	if (h >= 16 && fwht_avx512_available())
	{
		fwht_avx512(x, h, scale);
		return;
	}
#endif
	fwht(x, h, scale);
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
		fwht_any(out, h, hdr->scale);
		if (h < dims)
			fwht_any(out + (dims - h), h, hdr->scale);
	}
}
