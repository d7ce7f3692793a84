/*
 * rabitq.cpp: RaBitQ 1-bit codes of residuals, per-leaf query preparation and
 * the popcount estimator.
 *
 * Code of r = x_rot - c_rot: bit i = (r_i > 0), i.e. the unit vector
 * xbar = sign(r)/sqrt(D). The estimator approximates <r/||r||, qr>
 * (qr = q_rot - c_rot) by <xbar, qr> / <xbar, r/||r||>. The query residual
 * is quantized to 4 bits per dimension, qr_i ~ lo + delta*qq_i, kept as 4 bit
 * planes, so that
 *   sum_{b_i=1} qq_i = sum_j 2^j popcount(code & plane_j)
 *   <xbar, qr> = (2*(lo*popcount(code) + delta*that) - (lo*D + delta*sum(qq))) / sqrt(D).
 * Padding bits beyond D are zero in codes and planes.
 *
 * Inner product: <q, x> = <q, c> + <c, r> + <qr, r> with the estimate of
 * <u, qr>, or = <q, c> + <q, r> with the same estimator applied to q itself
 * (u = r/||r||); the error is proportional to the norm of the vector used, so
 * the preparation takes the shorter of qr and q. (A query much shorter than
 * the centroids, e.g. a tiny vector, would otherwise get the tiny <q, x> as
 * the difference of large terms, lost to rounding.)
 */
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "internal.hpp"

#include "simd.hpp"

namespace
{

constexpr uint32_t PREP_MAGIC = 0x56505250; /* "VPRP" */
#ifndef VIDX_EPS0
#define VIDX_EPS0 3.0f
#endif
/*
 * Standard deviations of the estimator's error a lower bound allows for (the
 * RaBitQ paper's confidence parameter eps0).
 */
constexpr float EPS0 = VIDX_EPS0;
/*
 * Below this many dimensions the RaBitQ bound (a concentration result) is not
 * trustworthy: use the deterministic one, <u, qr> <= ||qr|| (Cauchy-Schwarz),
 * which re-scores more candidates but never misses one. Low dims are cheap.
 */
constexpr int MIN_DIMS_FOR_PROBABILISTIC_BOUND = 64;
/*
 * With exact bounds, the float rounding of a bound's terms (a few ulps of the
 * largest of them) is allowed for as well.
 */
constexpr float EXACT_SLACK = 1e-5f;

struct PrepHeader
{
	uint32_t magic;
	int32_t metric;
	int32_t dims;
	int32_t words;
	double lo;           /* quantization offset */
	double delta;        /* quantization step */
	double const_term;   /* lo*D + delta*sum(qq) */
	double qr_norm_sq;   /* ||qr||^2 */
	double qc;           /* <q_rot, c_rot> (IP) */
	float inv_sqrt_d;    /* 1/sqrt(D) */
	float qr_norm;       /* ||qr|| */
	float err_coef;      /* eps0 * ||qr|| / sqrt(max(D-1, 1)) */
	float quant_sq;      /* (||qr - dequant(qq)|| / sqrt(D) over ||qr|| / sqrt(D-1))^2 */
	int32_t refine_bits; /* 0, 4 or 8: postings carry refinement codes */
	float sum_qr;        /* sum of qr's coordinates (refinement) */
	float refine_coef;   /* bound of <qr, e> per unit of ||e||, e a refinement error */
	float cw;            /* 1: qr = q - c; 0 (inner product only): qr stands for q itself */
	float qr_norm_sq_f;  /* qr_norm_sq and qc as floats, for the 1-bit estimator */
	float qc_f;
	int32_t exact_bounds; /* lower bounds that always hold (vidx_query_prep_exact_bounds) */
	int32_t pad_;
	/*
	 * followed by 4 * words uint64_t bit planes, plane j at j*words, then
	 * qr itself (dims floats) for the refinement codes
	 */
};
static_assert(sizeof(PrepHeader) % 8 == 0, "planes must be 8-byte aligned");

inline const uint64_t *
planes_of(const PrepHeader *p)
{
	return reinterpret_cast<const uint64_t *>(p + 1);
}

inline const float *
qr_of(const PrepHeader *p)
{
	return reinterpret_cast<const float *>(planes_of(p) + 4 * (size_t) p->words);
}

/*
 * Sigmas of a refinement error allowed for: <qr, e> with e the rounding of a
 * rotated residual behaves like a sum of D independent terms; 5 sigmas.
 */
constexpr float EPS_REFINE = 5.0f;

/* Refinement section of a posting, after its sign code. */
struct RefineHeader
{
	float step; /* quantization step */
	float err;  /* ||r - dequant(code)||, exact */
};

inline size_t
refine_code_bytes(int dims, int bits)
{
	return (((size_t) dims * bits + 7) / 8 + 7) & ~(size_t) 7;
}

inline const RefineHeader *
refine_of(const VidxPosting *p, int words)
{
	return reinterpret_cast<const RefineHeader *>(vidx_posting_code(p) + words);
}

/* Clip point of the quantizer, in standard deviations of the residual's coordinates. */
inline double
refine_clip_sigmas(int bits)
{
	return bits == 4 ? 2.7 : 4.3;
}

/*
 * sum_i qr[i] * code[i]. 8 bits: one code byte per dimension, qr as is. 4
 * bits: byte k holds dimension 2k (low nibble) and 2k+1 (high nibble); the
 * query preparation stores qr de-interleaved (even dimensions, then odd ones,
 * half = ceil(D/2) each, zero-padded) so both halves are contiguous loads.
 */
typedef float (*RefineDotFn)(const float *q, const uint8_t *code, int dims, int bits);

float
refine_dot_default(const float *q, const uint8_t *code, int dims, int bits)
{
	float sum = 0;

	if (bits == 8)
	{
		for (int i = 0; i < dims; i++)
			sum += q[i] * (float) code[i];
		return sum;
	}
	const int half = (dims + 1) / 2;
	const float *qe = q, *qo = q + half;

	for (int k = 0; k < half; k++)
		sum += qe[k] * (float) (code[k] & 15) + qo[k] * (float) (code[k] >> 4);
	return sum;
}

#ifdef VIDX_X86

VIDX_TARGET("avx2,fma")
float
refine_dot_avx2(const float *q, const uint8_t *code, int dims, int bits)
{
	__m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
	const __m256i nib = _mm256_set1_epi32(15);
	int k = 0;
	float sum;

	if (bits == 8)
	{
		for (; k + 8 <= dims; k += 8)
		{
			__m256i w = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *) (code + k)));
			acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + k), _mm256_cvtepi32_ps(w), acc0);
		}
		__m128 r = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
		r = _mm_hadd_ps(r, r);
		r = _mm_hadd_ps(r, r);
		sum = _mm_cvtss_f32(r);
		for (; k < dims; k++)
			sum += q[k] * (float) code[k];
		return sum;
	}
	const int half = (dims + 1) / 2;
	const float *qe = q, *qo = q + half;

	for (; k + 8 <= half; k += 8)
	{
		__m256i w = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *) (code + k)));
		acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(qe + k),
		                       _mm256_cvtepi32_ps(_mm256_and_si256(w, nib)), acc0);
		acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(qo + k), _mm256_cvtepi32_ps(_mm256_srli_epi32(w, 4)),
		                       acc1);
	}
	acc0 = _mm256_add_ps(acc0, acc1);
	__m128 r = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
	r = _mm_hadd_ps(r, r);
	r = _mm_hadd_ps(r, r);
	sum = _mm_cvtss_f32(r);
	for (; k < half; k++)
		sum += qe[k] * (float) (code[k] & 15) + qo[k] * (float) (code[k] >> 4);
	return sum;
}

VIDX_TARGET("avx512f")
float
refine_dot_avx512(const float *q, const uint8_t *code, int dims, int bits)
{
	__m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
	const __m512i nib = _mm512_set1_epi32(15);
	int k = 0;
	float sum;

	if (bits == 8)
	{
		for (; k + 16 <= dims; k += 16)
		{
			__m512i w = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *) (code + k)));
			acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(q + k), _mm512_cvtepi32_ps(w), acc0);
		}
		sum = _mm512_reduce_add_ps(acc0);
		for (; k < dims; k++)
			sum += q[k] * (float) code[k];
		return sum;
	}
	const int half = (dims + 1) / 2;
	const float *qe = q, *qo = q + half;

	for (; k + 16 <= half; k += 16)
	{
		__m512i w = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *) (code + k)));
		acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(qe + k),
		                       _mm512_cvtepi32_ps(_mm512_and_si512(w, nib)), acc0);
		acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(qo + k), _mm512_cvtepi32_ps(_mm512_srli_epi32(w, 4)),
		                       acc1);
	}
	sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
	for (; k < half; k++)
		sum += qe[k] * (float) (code[k] & 15) + qo[k] * (float) (code[k] >> 4);
	return sum;
}

#endif /* VIDX_X86 */

RefineDotFn
pick_refine_dot()
{
#ifdef VIDX_X86
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f"))
		return refine_dot_avx512;
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return refine_dot_avx2;
#endif
	return refine_dot_default;
}

inline float
refine_dot(const float *q, const uint8_t *code, int dims, int bits)
{
	static const RefineDotFn fn = pick_refine_dot();

	return fn(q, code, dims, bits);
}

struct PopSums
{
	uint32_t pop;  /* popcount(code) */
	uint32_t wsum; /* sum_j 2^j popcount(code & plane_j) */
};

/*
 * The allowance for <u, qr> above its estimate, eps0 standard deviations of
 * the estimator's error, dot being <xbar, r/||r||>: the RaBitQ term (the
 * code's own error, standard deviation ||qr|| sqrt(1 - dot^2) / (dot
 * sqrt(D - 1))) and the query's rounding (||e|| / (dot sqrt(D))). Both are
 * sums over the code's independent signs, so their variances add: the
 * allowance is the root of the sum of squares, not the sum (which bounded
 * about 20% looser at 1024 dimensions and re-scored 1.5x the candidates).
 * Factored by err_coef, so that no square of a tiny norm underflows.
 */
inline float
bound_error(const PrepHeader *h, float dot)
{
	return h->err_coef * std::sqrt(std::max(0.0f, 1.0f - dot * dot) + h->quant_sq) / dot;
}

/* Turns popcounts into (est, lower) for one posting. */
inline void
finish(const PrepHeader *h, const VidxPosting *p, PopSums ps, float *est, float *lower)
{
	/* In double: lo*D and the popcount sums nearly cancel. */
	float ip_xq =
	    (float) ((2.0 * (h->lo * ps.pop + h->delta * ps.wsum) - h->const_term) * h->inv_sqrt_d);
	float dot = p->dot;
	float norm = p->norm;

	if (!(dot > 1e-6f)) /* corrupted or degenerate: keep it finite */
		dot = 1e-6f;
	else if (dot > 1.0f)
		dot = 1.0f;
	float est_ip = ip_xq / dot;
	float err = bound_error(h, dot);
	/*
	 * The largest <u, qr> can be: never more than ||qr||, u being a unit
	 * vector; never below the estimate itself, so that lower <= est.
	 */
	float ip_high = h->dims < MIN_DIMS_FOR_PROBABILISTIC_BOUND || h->exact_bounds
	                    ? h->qr_norm
	                    : std::min(est_ip + err, h->qr_norm);
	ip_high = std::max(ip_high, est_ip);
	/*
	 * In float (double costs 10% of the scan): for norms below 1e-19 the
	 * products underflow, but so would the float result.
	 */
	float score;
	float low;

	if (h->metric == VIDX_METRIC_IP)
	{
		float base = h->qc_f + h->cw * p->cdot;

		score = -(base + norm * est_ip);
		low = -(base + norm * ip_high);
		if (h->exact_bounds)
			low -= EXACT_SLACK * (std::fabs(base) + norm * h->qr_norm);
	}
	else
	{
		float base = norm * norm + h->qr_norm_sq_f;

		score = base - 2.0f * norm * est_ip;
		low = base - 2.0f * norm * ip_high;
		if (h->exact_bounds)
			low -= EXACT_SLACK * base;
	}
	est[0] = score;
	if (lower)
		lower[0] = low;
}

/* (est, lower) of one posting from its refinement code. */
void
refine_one(const PrepHeader *h, const VidxPosting *p, float *est, float *lower)
{
	/* <qr, r> from the refinement code: r = step * (code + 1/2) - R + e. */
	const RefineHeader *rh = refine_of(p, h->words);
	const uint8_t *code = reinterpret_cast<const uint8_t *>(rh + 1);
	/* Products of a query and a posting quantity in double (see finish). */
	double norm = p->norm;
	double step = rh->step;
	double half_range = step * (double) (1 << (h->refine_bits - 1));
	double ip = step * refine_dot(qr_of(h), code, h->dims, h->refine_bits) +
	            (0.5 * step - half_range) * h->sum_qr;
	double high = std::min(ip + (double) h->refine_coef * rh->err, (double) h->qr_norm * norm);

	high = std::max(high, ip);
	if (h->metric == VIDX_METRIC_IP)
	{
		double base = h->qc + h->cw * p->cdot;

		*est = (float) -(base + ip);
		*lower = (float) -(base + high);
		if (h->exact_bounds)
			*lower -= EXACT_SLACK * (float) (std::fabs(base) + (double) h->qr_norm * norm);
	}
	else
	{
		double base = norm * norm + h->qr_norm_sq;

		*est = (float) (base - 2.0 * ip);
		*lower = (float) (base - 2.0 * high);
		if (h->exact_bounds)
			*lower -= EXACT_SLACK * (float) base;
	}
}

inline PopSums
pop_generic(const uint64_t *code, const uint64_t *planes, int words)
{
	uint32_t pop = 0, s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	const uint64_t *p1 = planes + words, *p2 = planes + 2 * words, *p3 = planes + 3 * words;

	for (int w = 0; w < words; w++)
	{
		uint64_t c = code[w];

		pop += (uint32_t) __builtin_popcountll(c);
		s0 += (uint32_t) __builtin_popcountll(c & planes[w]);
		s1 += (uint32_t) __builtin_popcountll(c & p1[w]);
		s2 += (uint32_t) __builtin_popcountll(c & p2[w]);
		s3 += (uint32_t) __builtin_popcountll(c & p3[w]);
	}
	return {pop, s0 + 2 * s1 + 4 * s2 + 8 * s3};
}

#define ESTIMATE_LOOP(POPFN)                                                                       \
	do                                                                                             \
	{                                                                                              \
		const uint64_t *planes = planes_of(h);                                                     \
		int words = h->words;                                                                      \
		for (int i = 0; i < n; i++)                                                                \
		{                                                                                          \
			const VidxPosting *p = postings[i];                                                    \
			if (i + 1 < n)                                                                         \
				__builtin_prefetch(postings[i + 1]);                                               \
			PopSums ps = POPFN(vidx_posting_code(p), planes, words);                               \
			finish(h, p, ps, est + i, lower ? lower + i : nullptr);                                \
		}                                                                                          \
	} while (0)

void
estimate_default(const PrepHeader *h, const VidxPosting *const *postings, int n, float *est,
                 float *lower)
{
	ESTIMATE_LOOP(pop_generic);
}

#ifdef VIDX_X86

VIDX_TARGET("popcnt")
inline PopSums
pop_popcnt(const uint64_t *code, const uint64_t *planes, int words)
{
	uint64_t pop = 0, s0 = 0, s1 = 0, s2 = 0, s3 = 0;
	const uint64_t *p1 = planes + words, *p2 = planes + 2 * words, *p3 = planes + 3 * words;

	for (int w = 0; w < words; w++)
	{
		uint64_t c = code[w];

		pop += (uint64_t) _mm_popcnt_u64(c);
		s0 += (uint64_t) _mm_popcnt_u64(c & planes[w]);
		s1 += (uint64_t) _mm_popcnt_u64(c & p1[w]);
		s2 += (uint64_t) _mm_popcnt_u64(c & p2[w]);
		s3 += (uint64_t) _mm_popcnt_u64(c & p3[w]);
	}
	return {(uint32_t) pop, (uint32_t) (s0 + 2 * s1 + 4 * s2 + 8 * s3)};
}

VIDX_TARGET("popcnt")
void
estimate_popcnt(const PrepHeader *h, const VidxPosting *const *postings, int n, float *est,
                float *lower)
{
	ESTIMATE_LOOP(pop_popcnt);
}

#define VPOPCNT VIDX_TARGET("popcnt,avx512f,avx512vpopcntdq")

/* The query-weighted bit count of 8 code words: sum over planes b of 2^b popcount(x & q_b). */
VPOPCNT inline __m512i
weighted_pop(__m512i x, __m512i q0, __m512i q1, __m512i q2, __m512i q3)
{
	__m512i c01 =
	    _mm512_add_epi64(_mm512_popcnt_epi64(_mm512_and_si512(x, q0)),
	                     _mm512_slli_epi64(_mm512_popcnt_epi64(_mm512_and_si512(x, q1)), 1));
	__m512i c23 =
	    _mm512_add_epi64(_mm512_slli_epi64(_mm512_popcnt_epi64(_mm512_and_si512(x, q2)), 2),
	                     _mm512_slli_epi64(_mm512_popcnt_epi64(_mm512_and_si512(x, q3)), 3));

	return _mm512_add_epi64(c01, c23);
}

/* 8 words per step, masked tail: one pass for any D. */
VPOPCNT inline PopSums
pop_vpopcnt(const uint64_t *code, const uint64_t *planes, int words)
{
	if (words < 4)
		return pop_popcnt(code, planes, words);

	__m512i apop = _mm512_setzero_si512();
	__m512i asum = _mm512_setzero_si512();
	const uint64_t *p1 = planes + words, *p2 = planes + 2 * words, *p3 = planes + 3 * words;

	for (int w = 0; w < words; w += 8)
	{
		__mmask8 m = words - w >= 8 ? (__mmask8) 0xFF : (__mmask8) ((1u << (words - w)) - 1u);
		__m512i c = _mm512_maskz_loadu_epi64(m, code + w);

		apop = _mm512_add_epi64(apop, _mm512_popcnt_epi64(c));
		asum = _mm512_add_epi64(asum, weighted_pop(c, _mm512_maskz_loadu_epi64(m, planes + w),
		                                           _mm512_maskz_loadu_epi64(m, p1 + w),
		                                           _mm512_maskz_loadu_epi64(m, p2 + w),
		                                           _mm512_maskz_loadu_epi64(m, p3 + w)));
	}
	return {(uint32_t) _mm512_reduce_add_epi64(apop), (uint32_t) _mm512_reduce_add_epi64(asum)};
}

/*
 * Two postings per step: the query's planes are loaded once for both, and the
 * two postings' popcounts and horizontal sums are independent chains the core
 * overlaps (one at a time, the reductions' latency was the bound).
 */
VPOPCNT inline void
pop_vpopcnt2(const uint64_t *ca, const uint64_t *cb, const uint64_t *planes, int words, PopSums *a,
             PopSums *b)
{
	__m512i pa = _mm512_setzero_si512(), sa = _mm512_setzero_si512();
	__m512i pb = _mm512_setzero_si512(), sb = _mm512_setzero_si512();
	const uint64_t *p1 = planes + words, *p2 = planes + 2 * words, *p3 = planes + 3 * words;

	for (int w = 0; w < words; w += 8)
	{
		__mmask8 m = words - w >= 8 ? (__mmask8) 0xFF : (__mmask8) ((1u << (words - w)) - 1u);
		__m512i q0 = _mm512_maskz_loadu_epi64(m, planes + w);
		__m512i q1 = _mm512_maskz_loadu_epi64(m, p1 + w);
		__m512i q2 = _mm512_maskz_loadu_epi64(m, p2 + w);
		__m512i q3 = _mm512_maskz_loadu_epi64(m, p3 + w);
		__m512i x = _mm512_maskz_loadu_epi64(m, ca + w);
		__m512i y = _mm512_maskz_loadu_epi64(m, cb + w);

		pa = _mm512_add_epi64(pa, _mm512_popcnt_epi64(x));
		pb = _mm512_add_epi64(pb, _mm512_popcnt_epi64(y));
		sa = _mm512_add_epi64(sa, weighted_pop(x, q0, q1, q2, q3));
		sb = _mm512_add_epi64(sb, weighted_pop(y, q0, q1, q2, q3));
	}
	/* pop <= dims < 2^24 and wsum <= 15 dims: both fit one 64-bit lane sum per posting */
	__m512i ka = _mm512_add_epi64(pa, _mm512_slli_epi64(sa, 24));
	__m512i kb = _mm512_add_epi64(pb, _mm512_slli_epi64(sb, 24));
	uint64_t ra = (uint64_t) _mm512_reduce_add_epi64(ka);
	uint64_t rb = (uint64_t) _mm512_reduce_add_epi64(kb);

	*a = {(uint32_t) (ra & 0xFFFFFF), (uint32_t) (ra >> 24)};
	*b = {(uint32_t) (rb & 0xFFFFFF), (uint32_t) (rb >> 24)};
}

/*
 * finish() for 16 postings at once, the same formulas in AVX-512: one at a
 * time, its divisions, square root and branches cost more than the
 * popcounts (a 784-d and a 1024-d estimate took the same 14 ns).
 */
VPOPCNT inline void
finish16(const PrepHeader *h, const uint32_t *pop, const uint32_t *wsum, const float *dotv,
         const float *normv, const float *cdotv, float *est, float *lower)
{
	__m256 half[2];

	for (int k = 0; k < 2; k++)
	{
		__m512d p = _mm512_cvtepu32_pd(_mm256_loadu_si256((const __m256i *) (pop + 8 * k)));
		__m512d w = _mm512_cvtepu32_pd(_mm256_loadu_si256((const __m256i *) (wsum + 8 * k)));
		__m512d t = _mm512_add_pd(_mm512_mul_pd(_mm512_set1_pd(h->lo), p),
		                          _mm512_mul_pd(_mm512_set1_pd(h->delta), w));

		t = _mm512_sub_pd(_mm512_mul_pd(_mm512_set1_pd(2.0), t), _mm512_set1_pd(h->const_term));
		half[k] = _mm512_cvtpd_ps(_mm512_mul_pd(t, _mm512_set1_pd((double) h->inv_sqrt_d)));
	}
	/* (insertf64x4: AVX512F; insertf32x8 would need AVX512DQ) */
	__m512 ip_xq = _mm512_castpd_ps(_mm512_insertf64x4(
	    _mm512_castps_pd(_mm512_castps256_ps512(half[0])), _mm256_castps_pd(half[1]), 1));
	__m512 dot = _mm512_loadu_ps(dotv);
	__m512 norm = _mm512_loadu_ps(normv);
	__m512 one = _mm512_set1_ps(1.0f);

	/* not above 1e-6 (NaN included): 1e-6; above 1: 1 */
	dot = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(dot, _mm512_set1_ps(1e-6f), _CMP_GT_OQ),
	                           _mm512_set1_ps(1e-6f), dot);
	dot = _mm512_min_ps(dot, one);

	__m512 est_ip = _mm512_div_ps(ip_xq, dot);
	__m512 qr_norm = _mm512_set1_ps(h->qr_norm);
	__m512 ip_high;

	if (h->dims < MIN_DIMS_FOR_PROBABILISTIC_BOUND || h->exact_bounds)
		ip_high = qr_norm;
	else
	{
		/* as bound_error */
		__m512 spread =
		    _mm512_max_ps(_mm512_setzero_ps(), _mm512_sub_ps(one, _mm512_mul_ps(dot, dot)));
		__m512 err = _mm512_div_ps(
		    _mm512_mul_ps(_mm512_set1_ps(h->err_coef),
		                  _mm512_sqrt_ps(_mm512_add_ps(spread, _mm512_set1_ps(h->quant_sq)))),
		    dot);

		ip_high = _mm512_min_ps(_mm512_add_ps(est_ip, err), qr_norm);
	}
	ip_high = _mm512_max_ps(ip_high, est_ip);

	__m512 score, low;

	if (h->metric == VIDX_METRIC_IP)
	{
		__m512 base = _mm512_add_ps(_mm512_set1_ps(h->qc_f),
		                            _mm512_mul_ps(_mm512_set1_ps(h->cw), _mm512_loadu_ps(cdotv)));

		score =
		    _mm512_sub_ps(_mm512_setzero_ps(), _mm512_add_ps(base, _mm512_mul_ps(norm, est_ip)));
		low = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_add_ps(base, _mm512_mul_ps(norm, ip_high)));
		if (h->exact_bounds)
			low = _mm512_sub_ps(low, _mm512_mul_ps(_mm512_set1_ps(EXACT_SLACK),
			                                       _mm512_add_ps(_mm512_abs_ps(base),
			                                                     _mm512_mul_ps(norm, qr_norm))));
	}
	else
	{
		__m512 base = _mm512_add_ps(_mm512_mul_ps(norm, norm), _mm512_set1_ps(h->qr_norm_sq_f));
		__m512 two_norm = _mm512_mul_ps(_mm512_set1_ps(2.0f), norm);

		score = _mm512_sub_ps(base, _mm512_mul_ps(two_norm, est_ip));
		low = _mm512_sub_ps(base, _mm512_mul_ps(two_norm, ip_high));
		if (h->exact_bounds)
			low = _mm512_sub_ps(low, _mm512_mul_ps(_mm512_set1_ps(EXACT_SLACK), base));
	}
	_mm512_storeu_ps(est, score);
	if (lower)
		_mm512_storeu_ps(lower, low);
}

/*
 * Sixteen postings per step: their popcounts two at a time (the query's
 * planes loaded once for both), then finish16.
 */
VPOPCNT void
estimate_vpopcnt(const PrepHeader *h, const VidxPosting *const *postings, int n, float *est,
                 float *lower)
{
	const uint64_t *planes = planes_of(h);
	int words = h->words;
	int i = 0;

	for (; i + 16 <= n; i += 16)
	{
		alignas(64) uint32_t pop[16], wsum[16];
		alignas(64) float dot[16], norm[16], cdot[16];

		for (int j = 0; j < 16; j += 2)
		{
			const VidxPosting *a = postings[i + j], *b = postings[i + j + 1];
			PopSums sa, sb;

			if (i + j + 3 < n)
			{
				__builtin_prefetch(postings[i + j + 2]);
				__builtin_prefetch(postings[i + j + 3]);
			}
			if (words >= 4) /* (pop < 2^24: dims are at most VIDX_MAX_DIMS) */
				pop_vpopcnt2(vidx_posting_code(a), vidx_posting_code(b), planes, words, &sa, &sb);
			else
			{
				sa = pop_popcnt(vidx_posting_code(a), planes, words);
				sb = pop_popcnt(vidx_posting_code(b), planes, words);
			}
			pop[j] = sa.pop;
			wsum[j] = sa.wsum;
			pop[j + 1] = sb.pop;
			wsum[j + 1] = sb.wsum;
			dot[j] = a->dot;
			norm[j] = a->norm;
			cdot[j] = a->cdot;
			dot[j + 1] = b->dot;
			norm[j + 1] = b->norm;
			cdot[j + 1] = b->cdot;
		}
		finish16(h, pop, wsum, dot, norm, cdot, est + i, lower ? lower + i : nullptr);
	}
	for (; i < n; i++)
		finish(h, postings[i], pop_vpopcnt(vidx_posting_code(postings[i]), planes, words), est + i,
		       lower ? lower + i : nullptr);
}

#endif /* VIDX_X86 */

struct PrepSums
{
	double qr_sq, q_sq, qc; /* ||q - c||^2, ||q||^2, <q, c> */
	float lo, hi;           /* range of q - c */
};

/*
 * The query's norms and <q, c> in double (in float, squares below 1e-19
 * underflow: tiny vectors), and the range of q - c. 16 independent lanes so
 * the compiler vectorizes it.
 */
VIDX_CLONES PrepSums
prep_sums(const float *q, const float *c, int dims)
{
	constexpr int L = 16;
	double rr[L], qq[L], qc[L];
	float mn[L], mx[L];
	int i = 0;

	for (int j = 0; j < L; j++)
	{
		rr[j] = qq[j] = qc[j] = 0.0;
		mn[j] = std::numeric_limits<float>::infinity();
		mx[j] = -std::numeric_limits<float>::infinity();
	}
	for (; i + L <= dims; i += L)
		for (int j = 0; j < L; j++)
		{
			float r = q[i + j] - c[i + j];
			double qd = q[i + j], cd = c[i + j];

			mn[j] = r < mn[j] ? r : mn[j];
			mx[j] = r > mx[j] ? r : mx[j];
			rr[j] += (qd - cd) * (qd - cd);
			qq[j] += qd * qd;
			qc[j] += qd * cd;
		}
	for (int j = 0; i < dims; i++, j++)
	{
		float r = q[i] - c[i];
		double qd = q[i], cd = c[i];

		mn[j] = r < mn[j] ? r : mn[j];
		mx[j] = r > mx[j] ? r : mx[j];
		rr[j] += (qd - cd) * (qd - cd);
		qq[j] += qd * qd;
		qc[j] += qd * cd;
	}
	PrepSums ps{};

	ps.lo = mn[0];
	ps.hi = mx[0];
	for (int j = 0; j < L; j++)
	{
		ps.qr_sq += rr[j];
		ps.q_sq += qq[j];
		ps.qc += qc[j];
		ps.lo = mn[j] < ps.lo ? mn[j] : ps.lo;
		ps.hi = mx[j] > ps.hi ? mx[j] : ps.hi;
	}
	return ps;
}

/* The range of q itself (inner product, when q is the shorter). */
VIDX_CLONES void
range_of(const float *q, int dims, float *lo_out, float *hi_out)
{
	constexpr int L = 16;
	float mn[L], mx[L];
	int i = 0;

	for (int j = 0; j < L; j++)
	{
		mn[j] = std::numeric_limits<float>::infinity();
		mx[j] = -std::numeric_limits<float>::infinity();
	}
	for (; i + L <= dims; i += L)
		for (int j = 0; j < L; j++)
		{
			mn[j] = q[i + j] < mn[j] ? q[i + j] : mn[j];
			mx[j] = q[i + j] > mx[j] ? q[i + j] : mx[j];
		}
	for (int j = 0; i < dims; i++, j++)
	{
		mn[j] = q[i] < mn[j] ? q[i] : mn[j];
		mx[j] = q[i] > mx[j] ? q[i] : mx[j];
	}
	float lo = mn[0], hi = mx[0];

	for (int j = 0; j < L; j++)
	{
		lo = mn[j] < lo ? mn[j] : lo;
		hi = mx[j] > hi ? mx[j] : hi;
	}
	*lo_out = lo;
	*hi_out = hi;
}

struct PrepStats
{
	float lo;
	double delta, sum_qq, qerr_sq;
};

/*
 * The four bit planes of 64 4-bit values: bit j of planes[k] is bit k of
 * qq[j]. Eight values at a time: with byte i of x holding one bit of qq[i]
 * (in its lowest bit), the product below gathers those eight bits into its
 * top byte, bit i from byte i (each partial product lands on its own bit,
 * so nothing carries into it).
 */
inline void
bit_planes(const uint8_t qq[64], uint64_t planes[4])
{
	for (int k = 0; k < 4; k++)
		planes[k] = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	for (int g = 0; g < 8; g++)
	{
		uint64_t x;

		std::memcpy(&x, qq + 8 * g, 8);
		for (int k = 0; k < 4; k++)
			planes[k] |= ((((x >> k) & 0x0101010101010101ULL) * 0x0102040810204080ULL) >> 56)
			             << (8 * g);
	}
#else
	for (int j = 0; j < 64; j++)
		for (int k = 0; k < 4; k++)
			planes[k] |= (uint64_t) ((qq[j] >> k) & 1) << j;
#endif
}

/*
 * The 4-bit quantization (round to nearest) of qr = q - cw * c (cw 1 or 0)
 * over its range [lo, hi] into bit planes. In float, unless the step is extreme:
 * then in double (in float 1/delta overflows for a range below 1e-38 and the
 * error's squares underflow, tiny vectors). No allocation.
 */
VIDX_CLONES PrepStats
prep_quantize(const float *q, const float *c, float cw, float lo, float hi, int dims,
              uint64_t *planes, int words)
{
	PrepStats st{};
	/* the step as a float: the float path and the estimator use the same one */
	double delta = (float) (((double) hi - (double) lo) / 15.0);

	if (!(delta > 0) || !std::isfinite(delta))
		delta = 0;
	const bool fast = delta == 0 || (delta >= 0x1p-60 && delta <= 0x1p50);
	const float fdelta = (float) delta, finv = delta > 0 ? (float) (1.0 / delta) : 0.0f;
	const double dlo = lo, dcw = cw;
	const double inv = delta > 0 ? 1.0 / delta : 0.0;
	int64_t sum_qq = 0;
	float e2f[64];
	double e2[64];

	for (int j = 0; j < 64; j++)
	{
		e2f[j] = 0.0f;
		e2[j] = 0.0;
	}
	for (int w = 0; w < words; w++)
	{
		uint8_t qq[64];
		int base = w * 64;
		int cnt = dims - base < 64 ? dims - base : 64;

		if (fast)
			for (int j = 0; j < cnt; j++)
			{
				float r = q[base + j] - cw * c[base + j];
				float t = (r - lo) * finv + 0.5f;

				t = t > 0.0f ? t : 0.0f; /* also maps NaN to 0 */
				t = t < 15.5f ? t : 15.5f;
				int v = (int) t;
				float e = r - (lo + fdelta * (float) v);

				qq[j] = (uint8_t) v;
				e2f[j] += e * e;
			}
		else
			for (int j = 0; j < cnt; j++)
			{
				double r = (double) q[base + j] - dcw * c[base + j];
				double t = (r - dlo) * inv + 0.5;

				t = t > 0.0 ? t : 0.0;
				t = t < 15.5 ? t : 15.5;
				int v = (int) t;
				double e = r - (dlo + delta * v);

				qq[j] = (uint8_t) v;
				e2[j] += e * e;
			}
		for (int j = cnt; j < 64; j++)
			qq[j] = 0; /* padding bits stay zero */
		uint64_t b[4];

		bit_planes(qq, b);
		for (int k = 0; k < 4; k++)
		{
			planes[k * words + w] = b[k];
			sum_qq += (int64_t) __builtin_popcountll(b[k]) << k;
		}
	}
	for (int j = 0; j < 64; j++)
		st.qerr_sq += (double) e2f[j] + e2[j];
	st.lo = lo;
	st.delta = delta;
	st.sum_qq = (double) sum_qq;
	return st;
}

typedef void (*EstimateFn)(const PrepHeader *, const VidxPosting *const *, int, float *, float *);

EstimateFn
pick_estimate()
{
#ifdef VIDX_X86
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512vpopcntdq") && __builtin_cpu_supports("avx512f") &&
	    __builtin_cpu_supports("popcnt"))
		return estimate_vpopcnt;
	if (__builtin_cpu_supports("popcnt"))
		return estimate_popcnt;
#endif
	return estimate_default;
}

} // namespace

extern "C" int
vidx_code_words(int dims) noexcept
{
	return dims <= 0 ? 0 : (dims + 63) / 64;
}

extern "C" size_t
vidx_posting_size(int dims) noexcept
{
	return sizeof(VidxPosting) + 8 * (size_t) vidx_code_words(dims);
}

extern "C" bool
vidx_refine_bits_valid(int refine_bits) noexcept
{
	return refine_bits == 0 || refine_bits == 4 || refine_bits == 8;
}

extern "C" size_t
vidx_posting_size_refined(int dims, int refine_bits) noexcept
{
	size_t size = vidx_posting_size(dims);

	if (refine_bits > 0 && dims > 0)
		size += sizeof(RefineHeader) + refine_code_bytes(dims, refine_bits);
	return size;
}

extern "C" void
vidx_rabitq_encode_refined(const float *x_rot, const float *c_rot, int dims, int refine_bits,
                           VidxPosting *p) noexcept
{
	vidx_rabitq_encode(x_rot, c_rot, dims, p);
	if (refine_bits <= 0 || dims <= 0)
		return;

	RefineHeader *rh = reinterpret_cast<RefineHeader *>(reinterpret_cast<uint64_t *>(p + 1) +
	                                                    vidx_code_words(dims));
	uint8_t *code = reinterpret_cast<uint8_t *>(rh + 1);
	const int levels = 1 << refine_bits;
	double maxabs = 0;

	for (int i = 0; i < dims; i++)
		maxabs = std::max(maxabs, std::fabs((double) x_rot[i] - c_rot[i]));
	double sigma = (double) p->norm / std::sqrt((double) dims);
	/*
	 * The decoder has the step as a float (maybe a denormal, for tiny
	 * vectors): quantize with exactly that step, so that err is its error.
	 */
	double step =
	    (float) (2.0 * std::min(refine_clip_sigmas(refine_bits) * sigma, maxabs) / levels);
	double half_range = step * (levels / 2);
	double err_sq = 0;

	std::memset(code, 0, refine_code_bytes(dims, refine_bits));
	for (int i = 0; i < dims; i++)
	{
		double r = (double) x_rot[i] - c_rot[i];
		int c = step > 0 ? (int) std::floor((r + half_range) / step) : 0;

		c = std::min(std::max(c, 0), levels - 1);
		double e = r - (step * (c + 0.5) - half_range);

		err_sq += e * e;
		if (refine_bits == 8)
			code[i] = (uint8_t) c;
		else
			code[i / 2] |= (uint8_t) (c << (4 * (i & 1)));
	}
	rh->step = (float) step;
	/* Rounded up, so the bound it feeds stays a bound. */
	rh->err = (float) (std::sqrt(err_sq) * (1.0 + 1e-6)) + 1e-30f;
}

extern "C" void
vidx_rabitq_encode(const float *x_rot, const float *c_rot, int dims, VidxPosting *p) noexcept
{
	uint64_t *code = reinterpret_cast<uint64_t *>(p + 1);
	int words = vidx_code_words(dims);
	double norm_sq = 0, abs_sum = 0, cdot = 0;

	for (int w = 0; w < words; w++)
	{
		uint64_t bits = 0;
		int end = std::min(dims, (w + 1) * 64);

		for (int i = w * 64; i < end; i++)
		{
			float r = x_rot[i] - c_rot[i];

			bits |= (uint64_t) (r > 0.0f) << (i - w * 64);
			norm_sq += (double) r * r;
			abs_sum += std::fabs((double) r);
			cdot += (double) c_rot[i] * r;
		}
		code[w] = bits;
	}
	double norm = std::sqrt(norm_sq);

	p->norm = (float) norm;
	p->cdot = (float) cdot;
	if (norm > 0 && dims > 0)
	{
		double dot = abs_sum / (std::sqrt((double) dims) * norm);

		p->dot = (float) std::min(1.0, dot);
	}
	else
	{
		p->dot = 1.0f;
		std::memset(code, 0, 8 * (size_t) words);
	}
}

extern "C" size_t
vidx_query_prep_size(int dims) noexcept
{
	return sizeof(PrepHeader) + 4 * 8 * (size_t) vidx_code_words(dims) +
	       sizeof(float) * (size_t) (std::max(dims, 0) + 1);
}

extern "C" void
vidx_query_prep_refined(void *prep, VidxMetric metric, const float *q_rot, const float *c_rot,
                        int dims, int refine_bits) noexcept
{
	PrepHeader *h = static_cast<PrepHeader *>(prep);
	int words = vidx_code_words(dims);
	uint64_t *planes = reinterpret_cast<uint64_t *>(h + 1);

	std::memset(h, 0, vidx_query_prep_size(dims));
	h->magic = PREP_MAGIC;
	h->metric = (int32_t) metric;
	h->dims = dims;
	h->words = words;
	if (dims <= 0)
		return;

	PrepSums ps = prep_sums(q_rot, c_rot, dims);
	/* inner product: the shorter of q - c and q (see the top of the file) */
	const float cw = metric == VIDX_METRIC_IP && ps.q_sq < ps.qr_sq ? 0.0f : 1.0f;
	float lo_r = ps.lo, hi_r = ps.hi;

	if (cw == 0.0f)
		range_of(q_rot, dims, &lo_r, &hi_r);
	PrepStats st = prep_quantize(q_rot, c_rot, cw, lo_r, hi_r, dims, planes, words);
	double qr_sq = cw != 0.0f ? ps.qr_sq : ps.q_sq, qc = ps.qc;
	double delta = st.delta, sum_qq = st.sum_qq, qerr_sq = st.qerr_sq;
	float lo = st.lo;

	h->cw = cw;

	h->lo = lo;
	h->delta = delta;
	h->const_term = (double) lo * dims + delta * sum_qq;
	h->inv_sqrt_d = (float) (1.0 / std::sqrt((double) dims));
	h->qr_norm_sq = qr_sq;
	h->qr_norm_sq_f = (float) qr_sq;
	h->qr_norm = vidx::round_up_float(std::sqrt(qr_sq)); /* caps <u, qr>: never below */
	h->qc = qc;
	h->qc_f = (float) qc;
	h->err_coef = (float) (std::sqrt(qr_sq) * EPS0 / std::sqrt((double) std::max(dims - 1, 1)));
	/*
	 * Quantization allowance: the estimator is also off by <xbar, e>/dot, e
	 * the rounding error of qr. With ||xbar|| = 1 and code signs uncorrelated
	 * with the rounding, <xbar, e> has standard deviation ||e||/sqrt(D) (the
	 * worst case, sum|e_i|/sqrt(D), would be about sqrt(D)/2 times looser).
	 * bound_error adds it to the RaBitQ term's variance.
	 */
	h->quant_sq = qr_sq > 0 ? (float) std::min(qerr_sq * std::max(dims - 1, 1) / (qr_sq * dims),
	                                           (double) std::numeric_limits<float>::max())
	                        : 0.0f;

	if (refine_bits > 0)
	{
		float *qr = reinterpret_cast<float *>(planes + 4 * (size_t) words);
		const int half = (dims + 1) / 2;
		double sum = 0;

		for (int i = 0; i < dims; i++)
		{
			float r = q_rot[i] - cw * c_rot[i];

			/* see refine_dot: de-interleaved for 4-bit codes */
			qr[refine_bits == 4 ? (i & 1) * half + i / 2 : i] = r;
			sum += r;
		}
		if (refine_bits == 4 && (dims & 1))
			qr[2 * half - 1] = 0.0f;
		h->refine_bits = refine_bits;
		h->sum_qr = (float) sum;
		/* Below 64 dims, Cauchy-Schwarz: |<qr, e>| <= ||qr|| ||e||. */
		h->refine_coef = dims < MIN_DIMS_FOR_PROBABILISTIC_BOUND
		                     ? h->qr_norm * 1.0001f
		                     : (float) (EPS_REFINE * std::sqrt(qr_sq) / std::sqrt((double) dims));
	}
}

extern "C" void
vidx_query_prep_exact_bounds(void *prep) noexcept
{
	PrepHeader *h = static_cast<PrepHeader *>(prep);

	h->exact_bounds = 1;
	if (h->refine_bits > 0)
		h->refine_coef = h->qr_norm * 1.0001f; /* Cauchy-Schwarz, as below 64 dims */
}

extern "C" void
vidx_rabitq_estimate(const void *prep, const VidxPosting *const *postings, int n, float *est,
                     float *lower) noexcept
{
	static const EstimateFn fn = pick_estimate();
	const PrepHeader *h = static_cast<const PrepHeader *>(prep);

	if (n <= 0)
		return;
	fn(h, postings, n, est, lower);
}

extern "C" void
vidx_rabitq_estimate_tasks(const VidxEstimateTask *tasks, int ntasks, int threads) noexcept
{
	auto estimate = [&](int64_t i, int) noexcept
	{
		/* In blocks, so that a block's headers are still in cache when copied. */
		constexpr int BLOCK = 64;
		const VidxEstimateTask &t = tasks[i];
		float est[BLOCK], lower[BLOCK];

		for (int b = 0; b < t.n; b += BLOCK)
		{
			int m = std::min(BLOCK, t.n - b);

			vidx_rabitq_estimate(t.prep, t.postings + b, m, est, lower);
			for (int j = 0; j < m; j++)
				vidx_candidate_set(t.out + b + j, t.postings[b + j], est[j], lower[j]);
		}
	};

	vidx::parallel_for(threads, ntasks, 1, estimate);
}

extern "C" void
vidx_rabitq_refine(const void *prep, const VidxPosting *posting, float *est, float *lower) noexcept
{
	const PrepHeader *h = static_cast<const PrepHeader *>(prep);

	if (h->refine_bits > 0)
		refine_one(h, posting, est, lower);
}
