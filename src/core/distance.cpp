/*
 * distance.cpp: exact distance kernels (float32 in, float accumulators).
 *
 * Each kernel has an AVX-512, an AVX2+FMA and a portable version; the best
 * one the CPU supports is picked once at first use, so the same binary runs
 * everywhere. The kernels never allocate.
 *
 * The per-ISA versions of one kernel repeat each other's shape on purpose
 * (same loop, other intrinsics and widths): a tool that looks for duplicated
 * code lists them, and they stay apart, one function per instruction set.
 */
#include <algorithm>
#include <cmath>
#include <limits>

#include "internal.hpp"

#include "simd.hpp"

namespace
{

/* ---------- portable versions (4 independent accumulators) ---------- */

float
l2sq_scalar(const float *a, const float *b, int n)
{
	float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	int i = 0;

	for (; i + 4 <= n; i += 4)
	{
		float d0 = a[i] - b[i], d1 = a[i + 1] - b[i + 1];
		float d2 = a[i + 2] - b[i + 2], d3 = a[i + 3] - b[i + 3];

		s0 += d0 * d0;
		s1 += d1 * d1;
		s2 += d2 * d2;
		s3 += d3 * d3;
	}
	for (; i < n; i++)
	{
		float d = a[i] - b[i];

		s0 += d * d;
	}
	return (s0 + s1) + (s2 + s3);
}

float
dot_scalar(const float *a, const float *b, int n)
{
	float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	int i = 0;

	for (; i + 4 <= n; i += 4)
	{
		s0 += a[i] * b[i];
		s1 += a[i + 1] * b[i + 1];
		s2 += a[i + 2] * b[i + 2];
		s3 += a[i + 3] * b[i + 3];
	}
	for (; i < n; i++)
		s0 += a[i] * b[i];
	return (s0 + s1) + (s2 + s3);
}

float
norm_sq_scalar(const float *a, int n)
{
	return dot_scalar(a, a, n);
}

void
l2sq_x4_scalar(const float *x, const float *c0, const float *c1, const float *c2, const float *c3,
               int n, float out[4])
{
	out[0] = l2sq_scalar(x, c0, n);
	out[1] = l2sq_scalar(x, c1, n);
	out[2] = l2sq_scalar(x, c2, n);
	out[3] = l2sq_scalar(x, c3, n);
}

#ifdef VIDX_X86

/* ---------- AVX2 + FMA ---------- */

#define AVX2 VIDX_TARGET("avx2,fma")

AVX2 inline float
hsum256(__m256 v)
{
	__m128 lo = _mm256_castps256_ps128(v);
	__m128 hi = _mm256_extractf128_ps(v, 1);

	lo = _mm_add_ps(lo, hi);
	lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
	lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 1));
	return _mm_cvtss_f32(lo);
}

AVX2 float
l2sq_avx2(const float *a, const float *b, int n)
{
	__m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
	__m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
	int i = 0;

	for (; i + 32 <= n; i += 32)
	{
		__m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
		__m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
		__m256 d2 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16));
		__m256 d3 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24));

		s0 = _mm256_fmadd_ps(d0, d0, s0);
		s1 = _mm256_fmadd_ps(d1, d1, s1);
		s2 = _mm256_fmadd_ps(d2, d2, s2);
		s3 = _mm256_fmadd_ps(d3, d3, s3);
	}
	for (; i + 8 <= n; i += 8)
	{
		__m256 d = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));

		s0 = _mm256_fmadd_ps(d, d, s0);
	}
	float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));

	for (; i < n; i++)
	{
		float d = a[i] - b[i];

		s += d * d;
	}
	return s;
}

AVX2 float
dot_avx2(const float *a, const float *b, int n)
{
	__m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
	__m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
	int i = 0;

	for (; i + 32 <= n; i += 32)
	{
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
		s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
		s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
		s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
	}
	for (; i + 8 <= n; i += 8)
		s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
	float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));

	for (; i < n; i++)
		s += a[i] * b[i];
	return s;
}

AVX2 float
norm_sq_avx2(const float *a, int n)
{
	__m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
	__m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
	int i = 0;

	for (; i + 32 <= n; i += 32)
	{
		__m256 v0 = _mm256_loadu_ps(a + i), v1 = _mm256_loadu_ps(a + i + 8);
		__m256 v2 = _mm256_loadu_ps(a + i + 16), v3 = _mm256_loadu_ps(a + i + 24);

		s0 = _mm256_fmadd_ps(v0, v0, s0);
		s1 = _mm256_fmadd_ps(v1, v1, s1);
		s2 = _mm256_fmadd_ps(v2, v2, s2);
		s3 = _mm256_fmadd_ps(v3, v3, s3);
	}
	for (; i + 8 <= n; i += 8)
	{
		__m256 v = _mm256_loadu_ps(a + i);

		s0 = _mm256_fmadd_ps(v, v, s0);
	}
	float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));

	for (; i < n; i++)
		s += a[i] * a[i];
	return s;
}

AVX2 void
l2sq_x4_avx2(const float *x, const float *c0, const float *c1, const float *c2, const float *c3,
             int n, float out[4])
{
	__m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
	__m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
	int i = 0;

	for (; i + 8 <= n; i += 8)
	{
		__m256 v = _mm256_loadu_ps(x + i);
		__m256 d0 = _mm256_sub_ps(v, _mm256_loadu_ps(c0 + i));
		__m256 d1 = _mm256_sub_ps(v, _mm256_loadu_ps(c1 + i));
		__m256 d2 = _mm256_sub_ps(v, _mm256_loadu_ps(c2 + i));
		__m256 d3 = _mm256_sub_ps(v, _mm256_loadu_ps(c3 + i));

		s0 = _mm256_fmadd_ps(d0, d0, s0);
		s1 = _mm256_fmadd_ps(d1, d1, s1);
		s2 = _mm256_fmadd_ps(d2, d2, s2);
		s3 = _mm256_fmadd_ps(d3, d3, s3);
	}
	float r0 = hsum256(s0), r1 = hsum256(s1), r2 = hsum256(s2), r3 = hsum256(s3);

	for (; i < n; i++)
	{
		float d0 = x[i] - c0[i], d1 = x[i] - c1[i], d2 = x[i] - c2[i], d3 = x[i] - c3[i];

		r0 += d0 * d0;
		r1 += d1 * d1;
		r2 += d2 * d2;
		r3 += d3 * d3;
	}
	out[0] = r0;
	out[1] = r1;
	out[2] = r2;
	out[3] = r3;
}

/* ---------- AVX-512 (masked tails, no scalar loop) ---------- */

#define AVX512 VIDX_TARGET("avx512f,fma")

AVX512 inline __mmask16
tail_mask(int left)
{
	return (__mmask16) ((1u << left) - 1u);
}

AVX512 float
l2sq_avx512(const float *a, const float *b, int n)
{
	__m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
	__m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
	int i = 0;

	for (; i + 64 <= n; i += 64)
	{
		__m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
		__m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
		__m512 d2 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32));
		__m512 d3 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48));

		s0 = _mm512_fmadd_ps(d0, d0, s0);
		s1 = _mm512_fmadd_ps(d1, d1, s1);
		s2 = _mm512_fmadd_ps(d2, d2, s2);
		s3 = _mm512_fmadd_ps(d3, d3, s3);
	}
	for (; i + 16 <= n; i += 16)
	{
		__m512 d = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));

		s1 = _mm512_fmadd_ps(d, d, s1);
	}
	if (i < n)
	{
		__mmask16 m = tail_mask(n - i);
		__m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));

		s2 = _mm512_fmadd_ps(d, d, s2);
	}
	return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

AVX512 float
dot_avx512(const float *a, const float *b, int n)
{
	__m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
	__m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
	int i = 0;

	for (; i + 64 <= n; i += 64)
	{
		s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
		s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
		s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
		s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
	}
	for (; i + 16 <= n; i += 16)
		s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s1);
	if (i < n)
	{
		__mmask16 m = tail_mask(n - i);

		s2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s2);
	}
	return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

AVX512 float
norm_sq_avx512(const float *a, int n)
{
	__m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
	__m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
	int i = 0;

	for (; i + 64 <= n; i += 64)
	{
		__m512 v0 = _mm512_loadu_ps(a + i), v1 = _mm512_loadu_ps(a + i + 16);
		__m512 v2 = _mm512_loadu_ps(a + i + 32), v3 = _mm512_loadu_ps(a + i + 48);

		s0 = _mm512_fmadd_ps(v0, v0, s0);
		s1 = _mm512_fmadd_ps(v1, v1, s1);
		s2 = _mm512_fmadd_ps(v2, v2, s2);
		s3 = _mm512_fmadd_ps(v3, v3, s3);
	}
	for (; i + 16 <= n; i += 16)
	{
		__m512 v = _mm512_loadu_ps(a + i);

		s1 = _mm512_fmadd_ps(v, v, s1);
	}
	if (i < n)
	{
		__m512 v = _mm512_maskz_loadu_ps(tail_mask(n - i), a + i);

		s2 = _mm512_fmadd_ps(v, v, s2);
	}
	return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

AVX512 void
l2sq_x4_avx512(const float *x, const float *c0, const float *c1, const float *c2, const float *c3,
               int n, float out[4])
{
	__m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
	__m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
	int i = 0;

	for (; i < n; i += 16)
	{
		__mmask16 m = n - i >= 16 ? (__mmask16) 0xFFFF : tail_mask(n - i);
		__m512 v = _mm512_maskz_loadu_ps(m, x + i);
		__m512 d0 = _mm512_sub_ps(v, _mm512_maskz_loadu_ps(m, c0 + i));
		__m512 d1 = _mm512_sub_ps(v, _mm512_maskz_loadu_ps(m, c1 + i));
		__m512 d2 = _mm512_sub_ps(v, _mm512_maskz_loadu_ps(m, c2 + i));
		__m512 d3 = _mm512_sub_ps(v, _mm512_maskz_loadu_ps(m, c3 + i));

		s0 = _mm512_fmadd_ps(d0, d0, s0);
		s1 = _mm512_fmadd_ps(d1, d1, s1);
		s2 = _mm512_fmadd_ps(d2, d2, s2);
		s3 = _mm512_fmadd_ps(d3, d3, s3);
	}
	out[0] = _mm512_reduce_add_ps(s0);
	out[1] = _mm512_reduce_add_ps(s1);
	out[2] = _mm512_reduce_add_ps(s2);
	out[3] = _mm512_reduce_add_ps(s3);
}

/*
 * Nearest centroid of up to 64 points by dot products in 4 x 6 register
 * tiles (24 accumulators, 10 loads per 24 FMAs, against 5 loads per 4 FMAs
 * for l2sq_x4): d = |x|^2 + |c|^2 - 2 x.c. Every pair's dot product is summed
 * in the same order whatever tile it falls in (tails repeat the last point or
 * centroid), so results do not depend on how points are split.
 */
AVX512 void
dot_tile_4x6(const float *const x[4], const float *const c[6], int n, float out[24])
{
	/*
	 * 24 named accumulators, not an array: GCC 12 keeps an array of vectors
	 * in registers but also stores all of it to the stack on every step
	 * (24 stores per 24 FMAs), which ran this loop at a fraction of its speed.
	 */
#define VIDX_TILE_ROW(q) a0##q = a1##q = a2##q = a3##q = _mm512_setzero_ps()
	__m512 a00, a10, a20, a30, a01, a11, a21, a31, a02, a12, a22, a32;
	__m512 a03, a13, a23, a33, a04, a14, a24, a34, a05, a15, a25, a35;

	VIDX_TILE_ROW(0);
	VIDX_TILE_ROW(1);
	VIDX_TILE_ROW(2);
	VIDX_TILE_ROW(3);
	VIDX_TILE_ROW(4);
	VIDX_TILE_ROW(5);
#undef VIDX_TILE_ROW
	const float *x0 = x[0], *x1 = x[1], *x2 = x[2], *x3 = x[3];
	const float *c0 = c[0], *c1 = c[1], *c2 = c[2], *c3 = c[3], *c4 = c[4], *c5 = c[5];

	for (int i = 0; i < n; i += 16)
	{
		__mmask16 m = n - i >= 16 ? (__mmask16) 0xFFFF : tail_mask(n - i);
		__m512 xv0 = _mm512_maskz_loadu_ps(m, x0 + i);
		__m512 xv1 = _mm512_maskz_loadu_ps(m, x1 + i);
		__m512 xv2 = _mm512_maskz_loadu_ps(m, x2 + i);
		__m512 xv3 = _mm512_maskz_loadu_ps(m, x3 + i);
		__m512 cv;

#define VIDX_TILE_COL(q)                                                                           \
	cv = _mm512_maskz_loadu_ps(m, c##q + i);                                                       \
	a0##q = _mm512_fmadd_ps(xv0, cv, a0##q);                                                       \
	a1##q = _mm512_fmadd_ps(xv1, cv, a1##q);                                                       \
	a2##q = _mm512_fmadd_ps(xv2, cv, a2##q);                                                       \
	a3##q = _mm512_fmadd_ps(xv3, cv, a3##q)
		VIDX_TILE_COL(0);
		VIDX_TILE_COL(1);
		VIDX_TILE_COL(2);
		VIDX_TILE_COL(3);
		VIDX_TILE_COL(4);
		VIDX_TILE_COL(5);
#undef VIDX_TILE_COL
	}
#define VIDX_TILE_OUT(p)                                                                           \
	out[p * 6 + 0] = _mm512_reduce_add_ps(a##p##0);                                                \
	out[p * 6 + 1] = _mm512_reduce_add_ps(a##p##1);                                                \
	out[p * 6 + 2] = _mm512_reduce_add_ps(a##p##2);                                                \
	out[p * 6 + 3] = _mm512_reduce_add_ps(a##p##3);                                                \
	out[p * 6 + 4] = _mm512_reduce_add_ps(a##p##4);                                                \
	out[p * 6 + 5] = _mm512_reduce_add_ps(a##p##5)
	VIDX_TILE_OUT(0);
	VIDX_TILE_OUT(1);
	VIDX_TILE_OUT(2);
	VIDX_TILE_OUT(3);
#undef VIDX_TILE_OUT
}

AVX512 float
self_dot_avx512(const float *a, int n)
{
	const float *x[4] = {a, a, a, a}, *c[6] = {a, a, a, a, a, a};
	float out[24];

	dot_tile_4x6(x, c, n, out);
	return out[0];
}

/* Centroids per chunk kept in L2 while a block of points passes over them. */
constexpr int DOT_CHUNK = 48;

/*
 * A pair's squared distance from its dot product: |x|^2 + |c|^2 - 2 x.c,
 * with one rounding for the last step (what GCC contracted the plain
 * expression to), never negative. Every kernel below uses this, so a pair
 * has the same float distance whichever computes it.
 */
AVX512 inline float
pair_distance(float xn, float cn, float dot)
{
	return std::max(0.0f, std::fma(-2.0f, dot, xn + cn));
}

/*
 * Nearest centroid of up to 64 points given by row pointers; if all is not
 * null, every pair's distance too (all[t * k + j]).
 */
AVX512 void
nearest_rows_avx512(const float *const *rows, int cnt, int dims, const float *cent,
                    const float *cnorm, int k, float *best, int32_t *besti, float *all)
{
	float xn[64];
	float out[24];

	for (int t = 0; t < cnt; t++)
	{
		xn[t] = self_dot_avx512(rows[t], dims);
		best[t] = std::numeric_limits<float>::infinity();
		besti[t] = 0;
	}
	for (int j0 = 0; j0 < k; j0 += DOT_CHUNK)
	{
		int j1 = std::min(k, j0 + DOT_CHUNK);

		for (int t = 0; t < cnt; t += 4)
		{
			const float *x[4];

			for (int p = 0; p < 4; p++)
				x[p] = rows[std::min(t + p, cnt - 1)];
			for (int j = j0; j < j1; j += 6)
			{
				const float *c[6];

				for (int q = 0; q < 6; q++)
					c[q] = cent + (size_t) std::min(j + q, j1 - 1) * dims;
				dot_tile_4x6(x, c, dims, out);
				for (int p = 0; p < 4 && t + p < cnt; p++)
					for (int q = 0; q < 6 && j + q < j1; q++)
					{
						float d = pair_distance(xn[t + p], cnorm[j + q], out[p * 6 + q]);

						if (all)
							all[(size_t) (t + p) * k + j + q] = d;
						if (d < best[t + p])
						{
							best[t + p] = d;
							besti[t + p] = j + q;
						}
					}
			}
		}
	}
}

AVX512 void
nearest_block_avx512(const float *pts, int cnt, int dims, const float *cent, const float *cnorm,
                     int k, float *best, int32_t *besti)
{
	const float *rows[64];

	for (int t = 0; t < cnt; t++)
		rows[t] = pts + (size_t) t * dims;
	nearest_rows_avx512(rows, cnt, dims, cent, cnorm, k, best, besti, nullptr);
}

/*
 * Dot products of one row with 8 centroids: each pair summed exactly as in
 * dot_tile_4x6 (16 lanes, masked tail, then _mm512_reduce_add_ps).
 */
AVX512 void
dot_tile_1x8(const float *x, const float *const c[8], int n, float out[8])
{
	__m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
	const float *c0 = c[0], *c1 = c[1], *c2 = c[2], *c3 = c[3];
	const float *c4 = c[4], *c5 = c[5], *c6 = c[6], *c7 = c[7];

	for (int i = 0; i < n; i += 16)
	{
		__mmask16 m = n - i >= 16 ? (__mmask16) 0xFFFF : tail_mask(n - i);
		__m512 xv = _mm512_maskz_loadu_ps(m, x + i);

		a0 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, c0 + i), a0);
		a1 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, c1 + i), a1);
		a2 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, c2 + i), a2);
		a3 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, c3 + i), a3);
		a4 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, c4 + i), a4);
		a5 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, c5 + i), a5);
		a6 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, c6 + i), a6);
		a7 = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(m, c7 + i), a7);
	}
	out[0] = _mm512_reduce_add_ps(a0);
	out[1] = _mm512_reduce_add_ps(a1);
	out[2] = _mm512_reduce_add_ps(a2);
	out[3] = _mm512_reduce_add_ps(a3);
	out[4] = _mm512_reduce_add_ps(a4);
	out[5] = _mm512_reduce_add_ps(a5);
	out[6] = _mm512_reduce_add_ps(a6);
	out[7] = _mm512_reduce_add_ps(a7);
}

AVX512 void
row_distances_avx512(const float *row, float xn, int dims, const float *cent, const float *cnorm,
                     const int32_t *js, int cnt, float *out)
{
	float dot[8];

	for (int t = 0; t < cnt; t += 8)
	{
		const float *c[8];

		for (int q = 0; q < 8; q++)
			c[q] = cent + (size_t) js[std::min(t + q, cnt - 1)] * dims;
		dot_tile_1x8(row, c, dims, dot);
		for (int q = 0; q < 8 && t + q < cnt; q++)
			out[t + q] = pair_distance(xn, cnorm[js[t + q]], dot[q]);
	}
}

#endif /* VIDX_X86 */

struct Kernels
{
	float (*l2sq)(const float *, const float *, int);
	float (*dot)(const float *, const float *, int);
	float (*norm_sq)(const float *, int);
	void (*l2sq_x4)(const float *, const float *, const float *, const float *, const float *, int,
	                float *);
};

Kernels
pick_kernels()
{
#ifdef VIDX_X86
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f"))
		return {l2sq_avx512, dot_avx512, norm_sq_avx512, l2sq_x4_avx512};
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return {l2sq_avx2, dot_avx2, norm_sq_avx2, l2sq_x4_avx2};
#endif
	return {l2sq_scalar, dot_scalar, norm_sq_scalar, l2sq_x4_scalar};
}

const Kernels &
kernels()
{
	static const Kernels k = pick_kernels();

	return k;
}

} // namespace

void
vidx::l2sq_x4(const float *x, const float *c0, const float *c1, const float *c2, const float *c3,
              int dims, float out[4])
{
	kernels().l2sq_x4(x, c0, c1, c2, c3, dims, out);
}

extern "C" float
vidx_l2sq(const float *a, const float *b, int dims) noexcept
{
	if (dims <= 0)
		return 0.0f;
	return kernels().l2sq(a, b, dims);
}

extern "C" float
vidx_dot(const float *a, const float *b, int dims) noexcept
{
	if (dims <= 0)
		return 0.0f;
	return kernels().dot(a, b, dims);
}

extern "C" float
vidx_norm_sq(const float *a, int dims) noexcept
{
	if (dims <= 0)
		return 0.0f;
	return kernels().norm_sq(a, dims);
}

double
vidx::l2sq_double(const float *a, const float *b, int dims)
{
	double s = 0;

	for (int i = 0; i < dims; i++)
	{
		double d = (double) a[i] - (double) b[i];

		s += d * d;
	}
	return s;
}

double
vidx::dot_double(const float *a, const float *b, int dims)
{
	double s = 0;

	for (int i = 0; i < dims; i++)
		s += (double) a[i] * (double) b[i];
	return s;
}

/* cos -> 1 - cos, cos clamped to [-1, 1]; NaN stays NaN (a zero vector). */
static double
cosine_distance(double ab, double aa, double bb)
{
	double c = ab / (std::sqrt(aa) * std::sqrt(bb));

	return std::isnan(c) ? c : 1.0 - std::min(1.0, std::max(-1.0, c));
}

/*
 * The float kernels first (the re-scoring's common case), in double where
 * their sums overflowed or underflowed (see vidx::float_sum_ok). Products of
 * floats are exact in double and sums of up to 16,000 of them cannot
 * overflow it, so the result is finite for every finite input.
 */
extern "C" double
vidx_distance(VidxMetric metric, const float *a, const float *b, int dims) noexcept
{
	switch (metric)
	{
	case VIDX_METRIC_L2:
	{
		float s = vidx_l2sq(a, b, dims);

		return std::sqrt(vidx::float_sum_ok(s) ? (double) s : vidx::l2sq_double(a, b, dims));
	}
	case VIDX_METRIC_IP:
	{
		float s = vidx_dot(a, b, dims);

		/* a small dot of large vectors is only rounding: recomputed too */
		return -(vidx::float_sum_ok(s) ? (double) s : vidx::dot_double(a, b, dims));
	}
	case VIDX_METRIC_COSINE:
	{
		/* ab's underflow errors are negligible against ||a|| ||b|| when the norms are fine */
		float ab = vidx_dot(a, b, dims), aa = vidx_norm_sq(a, dims), bb = vidx_norm_sq(b, dims);

		if (vidx::float_sum_ok(aa) && vidx::float_sum_ok(bb) && std::isfinite(ab))
			return cosine_distance(ab, aa, bb);
		return cosine_distance(vidx::dot_double(a, b, dims), vidx::dot_double(a, a, dims),
		                       vidx::dot_double(b, b, dims));
	}
	}
	return std::nan("");
}

extern "C" void
vidx_normalize(const float *v, float *out, int dims) noexcept
{
	float nsq = vidx_norm_sq(v, dims);
	double norm = std::sqrt(vidx::float_sum_ok(nsq) ? (double) nsq : vidx::dot_double(v, v, dims));

	for (int i = 0; i < dims; i++)
		out[i] = (float) (v[i] / norm);
}

extern "C" int
vidx_vector_check_indexable(const float *v, int dims, int *bad_index) noexcept
{
	bool ok = true;

	/* One pass the compiler vectorizes; the culprit is looked for only on failure. */
	for (int i = 0; i < dims; i++)
		ok &= std::fabs(v[i]) <= VIDX_MAX_ELEMENT; /* false for NaN */
	if (ok)
		return VIDX_OK;
	for (int i = 0; i < dims; i++)
		if (!(std::fabs(v[i]) <= VIDX_MAX_ELEMENT))
		{
			if (bad_index)
				*bad_index = i;
			break;
		}
	return VIDX_E_INVALID;
}

bool
vidx::nearest_block_fast_available()
{
#ifdef VIDX_X86
	static const bool ok = (__builtin_cpu_init(), __builtin_cpu_supports("avx512f"));

	return ok;
#else
	return false;
#endif
}

float
vidx::self_dot_fast(const float *a, int dims)
{
#ifdef VIDX_X86
	return self_dot_avx512(a, dims);
#else
	return vidx_norm_sq(a, dims);
#endif
}

void
vidx::nearest_rows_fast(const float *const *rows, int cnt, int dims, const float *cent,
                        const float *cnorm, int k, float *best, int32_t *besti, float *all)
{
#ifdef VIDX_X86
	nearest_rows_avx512(rows, cnt, dims, cent, cnorm, k, best, besti, all);
#else
	(void) rows, (void) cnt, (void) dims, (void) cent, (void) cnorm, (void) k, (void) best,
	    (void) besti, (void) all;
#endif
}

void
vidx::row_distances_fast(const float *row, float xn, int dims, const float *cent,
                         const float *cnorm, const int32_t *js, int cnt, float *out)
{
#ifdef VIDX_X86
	row_distances_avx512(row, xn, dims, cent, cnorm, js, cnt, out);
#else
	(void) row, (void) xn, (void) dims, (void) cent, (void) cnorm, (void) js, (void) cnt,
	    (void) out;
#endif
}

void
vidx::nearest_block_fast(const float *pts, int cnt, int dims, const float *cent, const float *cnorm,
                         int k, float *best, int32_t *besti)
{
#ifdef VIDX_X86
	nearest_block_avx512(pts, cnt, dims, cent, cnorm, k, best, besti);
#else
	(void) pts, (void) cnt, (void) dims, (void) cent, (void) cnorm, (void) k, (void) best,
	    (void) besti;
#endif
}
