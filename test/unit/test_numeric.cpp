/*
 * The edges of float32: vectors at the index's element limit (VIDX_MAX_ELEMENT),
 * beyond it (1e19, FLT_MAX: refused), denormals, tiny and mixed magnitudes,
 * zero residuals. Through the exact distances, normalization, rotation,
 * encoding, estimation (finite, and bounds that hold), k-means, the tree and
 * the build's encoding.
 */
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cstring>
#include <limits>
#include <random>
#include <string>

#include "test_util.hpp"

namespace
{

const float kLimit = VIDX_MAX_ELEMENT;
const float kInf = std::numeric_limits<float>::infinity();

/* The operator's value in long double from the float inputs. */
long double
ref_distance(VidxMetric m, const float *a, const float *b, int d)
{
	long double ab = 0, aa = 0, bb = 0, l2 = 0;

	for (int i = 0; i < d; i++)
	{
		long double x = a[i], y = b[i];

		ab += x * y;
		aa += x * x;
		bb += y * y;
		l2 += (x - y) * (x - y);
	}
	if (m == VIDX_METRIC_L2)
		return std::sqrt(l2);
	if (m == VIDX_METRIC_IP)
		return -ab;
	long double c = ab / (std::sqrt(aa) * std::sqrt(bb));
	return 1 - std::min<long double>(1, std::max<long double>(-1, c));
}

/* Checks vidx_distance against the reference for every metric. */
void
expect_distances(const float *a, const float *b, int d, const char *what)
{
	long double aa = 0, bb = 0;

	for (int i = 0; i < d; i++)
	{
		aa += (long double) a[i] * a[i];
		bb += (long double) b[i] * b[i];
	}
	for (VidxMetric m : {VIDX_METRIC_L2, VIDX_METRIC_IP, VIDX_METRIC_COSINE})
	{
		double got = vidx_distance(m, a, b, d);
		long double want = ref_distance(m, a, b, d);
		/* IP: float rounding is relative to ||a|| ||b||; cosine is in [0, 2] */
		long double tol = m == VIDX_METRIC_L2   ? 1e-5L * want
		                  : m == VIDX_METRIC_IP ? 1e-5L * std::sqrt(aa) * std::sqrt(bb)
		                                        : 1e-5L;

		ASSERT_TRUE(std::isfinite(got)) << what << " d=" << d << " metric=" << m;
		EXPECT_LE(std::fabs((long double) got - want), tol)
		    << what << " d=" << d << " metric=" << m << " got " << got << " want " << (double) want;
	}
}

std::vector<float>
scaled(size_t n, uint64_t seed, float scale)
{
	auto v = vt::gaussian(n, seed);

	for (auto &x : v)
		x *= scale;
	return v;
}

TEST(Numeric, CheckIndexable)
{
	int bad = -7;

	EXPECT_EQ(kLimit, 1e15f);
	const float ok[] = {0.0f, -0.0f, kLimit, -kLimit, 1e-45f, FLT_MIN, 1.0f};
	EXPECT_EQ(VIDX_OK, vidx_vector_check_indexable(ok, 7, &bad));
	EXPECT_EQ(VIDX_OK, vidx_vector_check_indexable(ok, 0, &bad));

	const float over[] = {1.0f, 2.0f, std::nextafter(kLimit, kInf), 1e19f};
	const float cases[][3] = {{1.0f, 2.0f, 1e16f},    {1e19f, 1e19f, 1e19f}, {0.0f, FLT_MAX, 0.0f},
	                          {-3e38f, 0.0f, 0.0f},   {0.0f, 0.0f, -1e16f},  {1.0f, NAN, 1.0f},
	                          {1.0f, 1.0f, -INFINITY}};
	const int where[] = {2, 0, 1, 0, 2, 1, 2};

	EXPECT_EQ(VIDX_E_INVALID, vidx_vector_check_indexable(over, 4, &bad));
	EXPECT_EQ(2, bad);
	for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++)
	{
		bad = -7;
		EXPECT_EQ(VIDX_E_INVALID, vidx_vector_check_indexable(cases[i], 3, &bad)) << i;
		EXPECT_EQ(where[i], bad) << i;
	}
	/* the first offender of a long vector */
	std::vector<float> v(16000, kLimit);
	v[12345] = -2e15f;
	v[15000] = 3e38f;
	EXPECT_EQ(VIDX_E_INVALID, vidx_vector_check_indexable(v.data(), 16000, &bad));
	EXPECT_EQ(12345, bad);
}

/* Every finite float input gives a finite, correct operator value. */
TEST(Numeric, ExactDistancesAtFloatExtremes)
{
	for (int d : {1, 3, 17, 100, 1024, 16000})
	{
		std::vector<float> big(d, FLT_MAX), negbig(d, -FLT_MAX);
		expect_distances(big.data(), negbig.data(), d, "FLT_MAX vs -FLT_MAX");
		expect_distances(big.data(), big.data(), d, "FLT_MAX vs itself");

		auto a = vt::gaussian(d, 10 + d), b = vt::gaussian(d, 20 + d);
		for (float s : {1e19f, 1e30f, FLT_MAX / 5, kLimit, 1.0f, 1e-15f, 1e-20f, 1e-22f, 1e-30f,
		                1e-40f, 1e-44f})
		{
			std::vector<float> x(d), y(d);
			for (int i = 0; i < d; i++)
			{
				x[i] = a[i] * s;
				y[i] = b[i] * s;
			}
			expect_distances(x.data(), y.data(), d, "scaled");
		}

		/* mixed magnitudes: 1e15 and 1e-30 elements; the pair differs only in tiny ones */
		std::vector<float> m1(d), m2(d);
		for (int i = 0; i < d; i++)
		{
			m1[i] = i % 2 ? a[i] * 1e-30f : a[i] * kLimit;
			m2[i] = i % 2 ? b[i] * 1e-30f : m1[i];
		}
		if (d > 1)
		{
			expect_distances(m1.data(), m2.data(), d, "mixed, differing in tiny elements");
			EXPECT_GT(vidx_distance(VIDX_METRIC_L2, m1.data(), m2.data(), d), 0.0);
		}
		/* a denormal-only vector against a normal one and against a huge one */
		std::vector<float> den(d, 1e-40f);
		expect_distances(den.data(), a.data(), d, "denormal vs normal");
		expect_distances(den.data(), big.data(), d, "denormal vs FLT_MAX");
	}
	/* the distance between two tiny vectors is not lost */
	const float t1[2] = {3e-30f, 0.0f}, t2[2] = {0.0f, 4e-30f};
	EXPECT_NEAR(vidx_distance(VIDX_METRIC_L2, t1, t2, 2), 5e-30, 5e-36);
	const float u1[2] = {1e15f, 1e-30f}, u2[2] = {1e15f, 2e-30f};
	EXPECT_NEAR(vidx_distance(VIDX_METRIC_L2, u1, u2, 2), 1e-30, 1e-36);
}

/* Unit length out, whatever the input's scale (cosine's normalization). */
TEST(Numeric, NormalizeTinyHugeAndMixed)
{
	for (int d : {1, 3, 64, 1000, 16000})
	{
		auto g = vt::gaussian(d, 30 + d);
		for (float s : {FLT_MAX / 8, 1e19f, kLimit, 1.0f, 1e-20f, 1e-22f, 1e-30f, 1e-40f})
		{
			std::vector<float> v(d), out(d);
			for (int i = 0; i < d; i++)
				v[i] = g[i] * s;
			if (d == 1 || s == 1e-40f)
				v[0] = s; /* nonzero */
			vidx_normalize(v.data(), out.data(), d);
			long double n = 0, o = 0;
			for (int i = 0; i < d; i++)
				n += (long double) v[i] * v[i];
			n = std::sqrt(n);
			for (int i = 0; i < d; i++)
			{
				ASSERT_TRUE(std::isfinite(out[i]));
				ASSERT_NEAR(out[i], (double) (v[i] / n), 1e-6) << "d=" << d << " s=" << s;
				o += (long double) out[i] * out[i];
			}
			EXPECT_NEAR((double) o, 1.0, 1e-5) << "d=" << d << " s=" << s;
		}
		std::vector<float> mixed(d), out(d);
		for (int i = 0; i < d; i++)
			mixed[i] = i % 3 ? g[i] * 1e-30f : g[i] * kLimit;
		mixed[0] = kLimit;
		vidx_normalize(mixed.data(), out.data(), d);
		for (int i = 0; i < d; i++)
			ASSERT_TRUE(std::isfinite(out[i]));
	}
}

/* Rotation keeps norms at the limit (worst case for the transform's partial sums). */
TEST(Numeric, RotationAtTheLimit)
{
	for (int d : {3, 64, 1000, 16000})
	{
		std::vector<char> rot(vidx_rotation_size(d));
		vidx_rotation_init(rot.data(), d, 7);
		std::vector<float> same(d, kLimit), out(d);
		auto g = vt::gaussian(d, 40 + d);
		std::vector<float> signs(d), tiny(d);
		for (int i = 0; i < d; i++)
		{
			signs[i] = g[i] > 0 ? kLimit : -kLimit;
			tiny[i] = g[i] * 1e-30f;
		}
		for (const auto *v : {&same, &signs, &tiny})
		{
			vidx_rotation_apply(rot.data(), v->data(), out.data());
			long double n_in = 0, n_out = 0;
			for (int i = 0; i < d; i++)
			{
				ASSERT_TRUE(std::isfinite(out[i])) << "d=" << d;
				n_in += (long double) (*v)[i] * (*v)[i];
				n_out += (long double) out[i] * out[i];
			}
			EXPECT_NEAR((double) (n_out / n_in), 1.0, 1e-5) << "d=" << d;
		}
	}
}

/* A set of postings in one buffer. */
struct Postings
{
	size_t psize;
	std::vector<uint64_t> buf;
	std::vector<const VidxPosting *> ptrs;

	Postings(int d, int n, int refine_bits)
	    : psize(vidx_posting_size_refined(d, refine_bits)), buf(psize * n / 8 + 1)
	{
		for (int i = 0; i < n; i++)
			ptrs.push_back(at(i));
	}
	VidxPosting *at(int i) { return (VidxPosting *) ((char *) buf.data() + psize * i); }
};

struct EstimateCheck
{
	int64_t total = 0, covered = 0;
	double rel_err = 0; /* mean, over postings whose score is a normal float */
	int64_t rel_n = 0;
};

/*
 * Encodes xs (index space) against c, estimates them for each query and
 * compares with the truth in long double: estimates and bounds must be
 * finite, lower <= est, and lower <= truth up to the rounding of the terms
 * the estimator adds (a relative 1e-5 of them) and of a float result.
 */
EstimateCheck
check_estimates(VidxMetric metric, int d, int refine_bits, const std::vector<float> &xs,
                const std::vector<float> &c, const std::vector<float> &qs)
{
	const int n = (int) (xs.size() / d), nq = (int) (qs.size() / d);
	Postings ps(d, n, refine_bits);
	std::vector<char> prep(vidx_query_prep_size(d));
	std::vector<float> est(n), lower(n);
	EstimateCheck r;

	for (int i = 0; i < n; i++)
	{
		VidxPosting *p = ps.at(i);

		vidx_rabitq_encode_refined(&xs[(size_t) i * d], c.data(), d, refine_bits, p);
		EXPECT_TRUE(std::isfinite(p->norm) && std::isfinite(p->dot) && std::isfinite(p->cdot));
		EXPECT_GT(p->dot, 0.0f);
		EXPECT_LE(p->dot, 1.0f);
	}
	for (int j = 0; j < nq; j++)
	{
		const float *q = &qs[(size_t) j * d];

		vidx_query_prep_refined(prep.data(), metric, q, c.data(), d, refine_bits);
		vidx_rabitq_estimate(prep.data(), ps.ptrs.data(), n, est.data(), lower.data());
		for (int i = 0; i < n; i++)
		{
			if (refine_bits > 0)
				vidx_rabitq_refine(prep.data(), ps.ptrs[i], &est[i], &lower[i]);
			const float *x = &xs[(size_t) i * d];
			long double truth = 0, terms = 0, qr2 = 0, r2 = 0, qc = 0, cr = 0;

			for (int u = 0; u < d; u++)
			{
				long double qu = q[u], xu = x[u], cu = c[u];

				truth += metric == VIDX_METRIC_IP ? -qu * xu : (qu - xu) * (qu - xu);
				qr2 += (qu - cu) * (qu - cu);
				r2 += (xu - cu) * (xu - cu);
				qc += qu * cu;
				cr += cu * (xu - cu);
			}
			/* the estimator's terms: ||r||^2 + ||qr||^2 - 2 ..., or <q,c> + <c,r> + ... */
			terms = metric == VIDX_METRIC_IP ? std::fabs(qc) + std::fabs(cr) +
			                                       std::sqrt(r2 * qr2) * std::sqrt((long double) d)
			                                 : r2 + qr2 + 2 * std::sqrt(r2 * qr2 * d);
			long double slack = 1e-5L * terms + 1e-44L;

			EXPECT_TRUE(std::isfinite(est[i]) && std::isfinite(lower[i]))
			    << "d=" << d << " metric=" << metric << " bits=" << refine_bits << " est " << est[i]
			    << " lower " << lower[i];
			EXPECT_LE(lower[i], est[i]);
			r.total++;
			r.covered += (long double) lower[i] <= truth + slack;
			if (std::fabs(truth) > 1e-30L)
			{
				r.rel_err +=
				    (double) (std::fabs((long double) est[i] - truth) /
				              (metric == VIDX_METRIC_IP ? std::sqrt(qr2 * r2) + std::fabs(truth)
				                                        : truth));
				r.rel_n++;
			}
		}
	}
	if (r.rel_n)
		r.rel_err /= (double) r.rel_n;
	return r;
}

/* Mean of the rows of xs. */
std::vector<float>
mean_of(const std::vector<float> &xs, int d)
{
	const size_t n = xs.size() / d;
	std::vector<double> s(d, 0.0);
	std::vector<float> c(d);

	for (size_t i = 0; i < n; i++)
		for (int u = 0; u < d; u++)
			s[u] += xs[i * d + u];
	for (int u = 0; u < d; u++)
		c[u] = (float) (s[u] / (double) n);
	return c;
}

/*
 * Estimates at every scale a vector below the limit can have: finite, and
 * bounds that hold (always below 64 dimensions, where the bound is
 * Cauchy-Schwarz; for 99% of the pairs above, as the RaBitQ bound promises).
 */
TEST(Numeric, EstimatesAtEveryScale)
{
	const float scales[] = {1.0f, kLimit, 1e10f, 1e-10f, 1e-20f, 1e-22f, 1e-30f, 1e-40f};

	for (int d : {3, 16, 63, 64, 256, 1000})
		for (VidxMetric m : {VIDX_METRIC_L2, VIDX_METRIC_IP})
			for (int bits : {0, 4, 8})
			{
				const int n = d >= 1000 ? 60 : 150;
				double rel_at_1 = 0;

				for (float s : scales)
				{
					/* the same vectors at every scale */
					auto xs = scaled((size_t) n * d, 50 + d, s);
					auto qs = scaled((size_t) 8 * d, 60 + d, s);
					auto c = mean_of(xs, d);
					for (int i = 0; i < d; i++)
						qs[i] = c[i];                              /* a query at the centroid */
					std::memcpy(&qs[d], &xs[0], 4 * (size_t) d);   /* a query equal to a posting */
					std::memcpy(&xs[d], c.data(), 4 * (size_t) d); /* a posting at the centroid */
					EstimateCheck r = check_estimates(m, d, bits, xs, c, qs);
					std::string what = "d=" + std::to_string(d) + " scale=" + std::to_string(s) +
					                   " metric=" + std::to_string(m) +
					                   " bits=" + std::to_string(bits);

					if (d < 64)
					{
						EXPECT_EQ(r.covered, r.total) << what;
					}
					else
					{
						EXPECT_GE((double) r.covered / (double) r.total, 0.99) << what;
					}
					/* where the scores are normal floats, the estimates are as good as at scale 1
					 */
					if (s == 1.0f)
						rel_at_1 = r.rel_err;
					else if (s >= 1e-10f)
					{
						EXPECT_NEAR(r.rel_err, rel_at_1, 0.01 * rel_at_1 + 1e-6) << what;
					}
				}
			}
}

/* Postings and queries whose elements are at the limit or far below it, mixed. */
TEST(Numeric, EstimatesMixedMagnitudes)
{
	for (int d : {3, 64, 784})
	{
		const int n = 120;
		auto g = vt::gaussian((size_t) n * d, 70 + d);
		std::vector<float> xs((size_t) n * d);
		for (int i = 0; i < n; i++)
			for (int u = 0; u < d; u++)
			{
				float s = i % 3 == 0 ? kLimit : i % 3 == 1 ? 1e-30f : (u % 2 ? kLimit : 1e-40f);
				xs[(size_t) i * d + u] = g[(size_t) i * d + u] * s;
			}
		auto c = mean_of(xs, d);
		std::vector<float> qs(xs.begin(), xs.begin() + 6 * (size_t) d);
		for (VidxMetric m : {VIDX_METRIC_L2, VIDX_METRIC_IP})
			for (int bits : {0, 4, 8})
			{
				EstimateCheck r = check_estimates(m, d, bits, xs, c, qs);
				if (d < 64)
				{
					EXPECT_EQ(r.covered, r.total)
					    << "d=" << d << " metric=" << m << " bits=" << bits;
				}
				else
				{
					EXPECT_GE((double) r.covered / r.total, 0.99)
					    << "d=" << d << " metric=" << m << " bits=" << bits;
				}
			}
	}
}

/*
 * Inner product with a query much shorter than the centroid (a tiny vector,
 * or just a short one): <q, x> is small against <q - c, r> and <c, r>, so the
 * estimate must not be their difference; it is as accurate, relative to
 * ||q|| ||x||, as for a query of the centroid's length.
 */
TEST(Numeric, EstimatesForShortInnerProductQueries)
{
	for (int d : {3, 64, 784})
		for (float qs : {1e-3f, 1e-20f, 1e-40f})
			for (int bits : {0, 4})
			{
				const int n = 200;
				auto g = vt::gaussian((size_t) n * d, 600 + d);
				std::vector<float> c(d, 0.0f), xs((size_t) n * d);
				auto cdir = vt::gaussian(d, 601 + d);
				for (int u = 0; u < d; u++)
					c[u] = 3.0f * cdir[u];
				for (int i = 0; i < n; i++)
					for (int u = 0; u < d; u++)
						xs[(size_t) i * d + u] = c[u] + g[(size_t) i * d + u];
				auto q = scaled(d, 602 + d, qs);
				EstimateCheck r = check_estimates(VIDX_METRIC_IP, d, bits, xs, c, q);
				std::string what = "d=" + std::to_string(d) + " query scale " + std::to_string(qs) +
				                   " bits=" + std::to_string(bits);
				if (d < 64)
				{
					EXPECT_EQ(r.covered, r.total) << what;
				}
				else
				{
					EXPECT_GE((double) r.covered / (double) r.total, 0.99) << what;
				}
				/* the mean error, relative to ||q|| ||x||, where <q, x> is a normal float */
				Postings ps(d, n, bits);
				std::vector<char> prep(vidx_query_prep_size(d));
				std::vector<float> est(n), lower(n);
				for (int i = 0; i < n; i++)
					vidx_rabitq_encode_refined(&xs[(size_t) i * d], c.data(), d, bits, ps.at(i));
				vidx_query_prep_refined(prep.data(), VIDX_METRIC_IP, q.data(), c.data(), d, bits);
				vidx_rabitq_estimate(prep.data(), ps.ptrs.data(), n, est.data(), lower.data());
				double rel = 0;
				for (int i = 0; i < n; i++)
				{
					if (bits)
						vidx_rabitq_refine(prep.data(), ps.ptrs[i], &est[i], &lower[i]);
					const float *x = &xs[(size_t) i * d];
					long double truth = -vt::dot_ref(q.data(), x, d);
					long double scale = std::sqrt((long double) vt::dot_ref(q.data(), q.data(), d) *
					                              vt::dot_ref(x, x, d));
					rel += (double) (std::fabs(est[i] - truth) / scale);
				}
				if (qs >= 1e-20f)
				{
					EXPECT_LT(rel / n, d < 64 ? 0.3 : 0.05) << what;
				}
			}
}

/*
 * The largest terms vectors below the limit can produce, at 16,000
 * dimensions: residual and query residual of the largest norm (2 sqrt(D) x
 * limit), the residual along one axis (the smallest RaBitQ dot, 1/sqrt(D))
 * and the query residual along its code (the largest estimate).
 */
TEST(Numeric, EstimatesFiniteAtTheLargestTerms)
{
	for (int d : {3, 64, 16000})
	{
		const double big = std::sqrt((double) d) * kLimit; /* the largest norm of a vector */
		std::vector<float> c(d, 0.0f), x(d, 0.0f), q(d);
		c[0] = (float) -big;
		x[0] = (float) big;
		/* the code of r = x - c is (+, -, -, ...); q - c along it */
		for (int u = 0; u < d; u++)
			q[u] = c[u] + (float) (2 * big / std::sqrt((double) d)) * (u == 0 ? 1.0f : -1.0f);
		for (VidxMetric m : {VIDX_METRIC_L2, VIDX_METRIC_IP})
			for (int bits : {0, 4, 8})
			{
				Postings ps(d, 2, bits);
				vidx_rabitq_encode_refined(x.data(), c.data(), d, bits, ps.at(0));
				vidx_rabitq_encode_refined(q.data(), c.data(), d, bits, ps.at(1));
				std::vector<char> prep(vidx_query_prep_size(d));
				float est[2], lower[2];
				vidx_query_prep_refined(prep.data(), m, q.data(), c.data(), d, bits);
				vidx_rabitq_estimate(prep.data(), ps.ptrs.data(), 2, est, lower);
				for (int i = 0; i < 2; i++)
				{
					if (bits)
						vidx_rabitq_refine(prep.data(), ps.ptrs[i], &est[i], &lower[i]);
					EXPECT_TRUE(std::isfinite(est[i]) && std::isfinite(lower[i]))
					    << "d=" << d << " metric=" << m << " bits=" << bits << " est " << est[i]
					    << " lower " << lower[i];
					EXPECT_LE(lower[i], est[i]);
				}
			}
	}
}

std::vector<char>
records(const std::vector<float> &v, int64_t n, int d)
{
	size_t rs = vidx_sidecar_record_size(d);
	std::vector<char> r(rs * n);

	for (int64_t i = 0; i < n; i++)
		vidx_sidecar_record_fill(r.data() + rs * i, d, v.data() + (size_t) i * d);
	return r;
}

/*
 * The build's whole core path on rows of every magnitude (limit, normal,
 * tiny, denormal-only, zero): k-means, the tree and its check, encoding, and
 * each row estimated from its own vector is among the best estimates of its
 * leaf with a bound that holds.
 */
TEST(Numeric, BuildPathAtEveryMagnitude)
{
	for (int d : {3, 100, 16000})
		for (VidxMetric m : {VIDX_METRIC_L2, VIDX_METRIC_IP, VIDX_METRIC_COSINE})
		{
			const int64_t n = d == 16000 ? 60 : 600;
			const int k = d == 16000 ? 4 : 16;
			auto g = vt::clustered(n, d, 6, 80 + d, 0.3f, 2.0f);
			for (int64_t i = 0; i < n; i++)
			{
				float s = i % 10 == 1 ? kLimit : i % 10 == 2 ? 1e-30f : i % 10 == 3 ? 1e-40f : 1.0f;
				for (int u = 0; u < d; u++)
				{
					float &e = g[(size_t) i * d + u];
					e = std::max(-kLimit, std::min(kLimit, e * s));
					if (i % 10 == 4) /* mixed within the vector */
						e = u % 2 ? e * 1e-30f : (e > 0 ? kLimit : -kLimit);
					if (i % 10 == 5 && m != VIDX_METRIC_COSINE)
						e = 0.0f;
				}
				if (s == 1e-40f)
					g[(size_t) i * d] = 1e-40f; /* nonzero for cosine */
				int bad;
				ASSERT_EQ(VIDX_OK, vidx_vector_check_indexable(&g[(size_t) i * d], d, &bad));
			}
			auto recs = records(g, n, d);
			std::vector<VidxHeapTid> tids(n, VidxHeapTid{1, 1, 0});
			const size_t rs = vidx_sidecar_record_size(d), ps = vidx_posting_size(d);
			std::vector<char> rot(vidx_rotation_size(d));
			vidx_rotation_init(rot.data(), d, 3);
			std::vector<float> r((size_t) n * d), cent((size_t) k * d);
			vidx_build_rotate(recs.data(), n, rs, d, m, rot.data(), r.data(), 2);
			for (float e : r)
				ASSERT_TRUE(std::isfinite(e));
			char err[256] = "";
			ASSERT_EQ(VIDX_OK, vidx_kmeans_balanced(r.data(), n, d, k, 10, 5, cent.data(), 2,
			                                        nullptr, nullptr, err, sizeof(err)))
			    << err;
			for (float e : cent)
				ASSERT_TRUE(std::isfinite(e)) << "d=" << d << " metric=" << m;

			std::vector<float> scratch((size_t) n * d);
			std::vector<char> post(ps * n);
			std::vector<int32_t> a(n);
			ASSERT_EQ(VIDX_OK, vidx_build_encode(recs.data(), tids.data(), n, rs, d, 0, m,
			                                     rot.data(), cent.data(), k, 0, scratch.data(),
			                                     post.data(), a.data(), 2, err, sizeof(err)))
			    << err;
			std::vector<uint32_t> counts(k, 0);
			for (int64_t i = 0; i < n; i++)
				counts[a[i]]++;
			size_t size = 0;
			void *tree =
			    vidx_tree_build(cent.data(), counts.data(), k, d, 2, 9, &size, 2, err, sizeof(err));
			ASSERT_NE(nullptr, tree) << err;
			EXPECT_EQ(VIDX_OK, vidx_tree_check(tree, size, err, sizeof(err))) << err;

			/* each row as a query: its leaf is found, and its own estimate bound holds */
			std::vector<char> state(vidx_tree_search_size(tree)), prep(vidx_query_prep_size(d));
			for (int64_t i = 0; i < n; i += d == 16000 ? 3 : 2)
			{
				const float *q = &r[(size_t) i * d];
				VidxMetric tm = m == VIDX_METRIC_IP ? VIDX_METRIC_L2 : m; /* inserts route by L2 */
				vidx_tree_search_begin(state.data(), tree, tm, q);
				float key, prev = -kInf;
				int32_t node;
				bool found = false;
				while ((node = vidx_tree_search_next(state.data(), tree, &key)) >= 0)
				{
					ASSERT_TRUE(std::isfinite(key));
					ASSERT_GE(key, prev);
					prev = key;
					const VidxTreeNode *nd = vidx_tree_node(tree, (uint32_t) node);
					if ((int32_t) nd->leaf_id != a[i])
						continue;
					found = true;
					const VidxPosting *p =
					    reinterpret_cast<const VidxPosting *>(post.data() + ps * i);
					float est, lower;
					vidx_query_prep_refined(prep.data(), m, q, vidx_tree_centroid(nd), d, 0);
					vidx_rabitq_estimate(prep.data(), &p, 1, &est, &lower);
					ASSERT_TRUE(std::isfinite(est) && std::isfinite(lower)) << "row " << i;
					if (m != VIDX_METRIC_IP)
					{
						EXPECT_LE(lower, 4e-5f * (p->norm * p->norm) + 1e-38f)
						    << "row " << i << " d=" << d << " metric=" << m;
					}
				}
				EXPECT_TRUE(found) << "row " << i;
			}
			vidx_tree_free(tree);
		}
}

/*
 * Best-first search returns leaves in exact centroid order at every scale,
 * also where the squared distances underflow float (tiny vectors), and an
 * inner-product query whose norm underflows still gets lower bounds.
 */
TEST(Numeric, TreeOrderAtEveryScale)
{
	const int d = 8, nleaves = 60;
	for (float s : {kLimit, 1.0f, 1e-20f, 1e-24f, 1e-40f})
		for (VidxMetric m : {VIDX_METRIC_L2, VIDX_METRIC_IP})
		{
			auto leaves = scaled((size_t) nleaves * d, 100, s);
			char err[256] = "";
			size_t size = 0;
			void *tree = vidx_tree_build(leaves.data(), nullptr, nleaves, d, 3, 1, &size, 2, err,
			                             sizeof(err));
			ASSERT_NE(nullptr, tree) << err;
			ASSERT_EQ(VIDX_OK, vidx_tree_check(tree, size, err, sizeof(err))) << err;
			std::vector<char> state(vidx_tree_search_size(tree));
			for (int qi = 0; qi < 5; qi++)
			{
				auto q = scaled(d, 200 + qi, s);
				/* inner product: also a query far smaller than the centroids */
				if (m == VIDX_METRIC_IP && qi == 4)
					q = scaled(d, 300, s * 1e-20f);
				vidx_tree_search_begin(state.data(), tree, m, q.data());
				long double prev = -INFINITY;
				int32_t node;
				int count = 0;
				while ((node = vidx_tree_search_next(state.data(), tree, nullptr)) >= 0)
				{
					const float *c = vidx_tree_centroid(vidx_tree_node(tree, (uint32_t) node));
					long double key = 0;
					for (int u = 0; u < d; u++)
						key += m == VIDX_METRIC_IP ? -(long double) q[u] * c[u]
						                           : ((long double) q[u] - c[u]) * (q[u] - c[u]);
					/* the leaves' exact keys come out in order, up to float rounding */
					EXPECT_GE(key, prev - 1e-5L * std::fabs(prev))
					    << "scale " << s << " metric " << m << " query " << qi << " leaf " << count;
					prev = key;
					count++;
				}
				EXPECT_EQ(count, nleaves);
			}
			vidx_tree_free(tree);
		}
}

/*
 * A query far from most centroids (a vector near the limit in an index of
 * small ones): its squared distances to them differ by less than float's
 * resolution, yet leaves come out in exact order, so an insert goes to its
 * nearest leaf.
 */
TEST(Numeric, TreeOrderForFarQueries)
{
	for (int d : {3, 64, 1000})
	{
		const int nleaves = 60;
		auto leaves = vt::gaussian((size_t) nleaves * d, 400 + d);
		/* two leaves as long as the queries: the root's radius does not show which are short */
		auto far = scaled(2 * (size_t) d, 401 + d, kLimit);
		std::copy(far.begin(), far.end(), leaves.begin() + 7 * (size_t) d);
		char err[256] = "";
		size_t size = 0;
		void *tree =
		    vidx_tree_build(leaves.data(), nullptr, nleaves, d, 3, 1, &size, 2, err, sizeof(err));
		ASSERT_NE(nullptr, tree) << err;
		std::vector<char> state(vidx_tree_search_size(tree));
		for (int qi = 0; qi < 6; qi++)
		{
			auto q = scaled(d, 500 + qi, qi < 3 ? kLimit : 1e8f);
			long double qn = 0;
			for (int u = 0; u < d; u++)
				qn += (long double) q[u] * q[u];
			qn = std::sqrt(qn);
			/* g = ||c||^2 - 2 <q, c> = d^2 - ||q||^2, exactly enough in long double */
			auto g_of = [&](const float *c)
			{
				long double g = 0;
				for (int u = 0; u < d; u++)
					g += (long double) c[u] * c[u] - 2 * (long double) q[u] * c[u];
				return g;
			};
			long double best = INFINITY;
			for (int i = 0; i < nleaves; i++)
				best = std::min(best, g_of(&leaves[(size_t) i * d]));
			vidx_tree_search_begin(state.data(), tree, VIDX_METRIC_L2, q.data());
			long double prev = -INFINITY;
			int32_t node;
			int count = 0;
			float key;
			while ((node = vidx_tree_search_next(state.data(), tree, &key)) >= 0)
			{
				const float *c = vidx_tree_centroid(vidx_tree_node(tree, (uint32_t) node));
				long double g = g_of(c), cn = 0;
				for (int u = 0; u < d; u++)
					cn += (long double) c[u] * c[u];
				long double tol = 1e-5L * (cn + 2 * qn * std::sqrt(cn));
				if (count == 0)
				{
					EXPECT_LE(g, best + tol) << "d=" << d << " query " << qi << ": not the nearest";
				}
				EXPECT_GE(g, prev - tol) << "d=" << d << " query " << qi << " leaf " << count;
				double dist = (double) std::sqrt(qn * qn + g);
				EXPECT_NEAR(key, dist, 1e-6 * std::max((double) qn, dist));
				prev = g;
				count++;
			}
			EXPECT_EQ(count, nleaves);
		}
		vidx_tree_free(tree);
	}
}

/* Vectors beyond float's squares (refused by the glue) would make a tree the check rejects. */
TEST(Numeric, TreeCheckRejectsOverflowedCentroids)
{
	const int d = 3, n = 40;
	std::vector<float> pts((size_t) n * d);
	auto g = vt::gaussian(pts.size(), 90);
	for (size_t i = 0; i < pts.size(); i++)
		pts[i] = g[i];
	for (int u = 0; u < d; u++)
		pts[u] = 3e38f;
	std::vector<char> rot(vidx_rotation_size(d));
	vidx_rotation_init(rot.data(), d, 3);
	for (int i = 0; i < n; i++)
		vidx_rotation_apply(rot.data(), &pts[(size_t) i * d], &pts[(size_t) i * d]);
	std::vector<float> cent(4 * d);
	char err[256] = "";
	(void) vidx_kmeans_balanced(pts.data(), n, d, 4, 10, 5, cent.data(), 2, nullptr, nullptr, err,
	                            sizeof(err));
	size_t size = 0;
	void *tree = vidx_tree_build(cent.data(), nullptr, 4, d, 2, 9, &size, 2, err, sizeof(err));
	ASSERT_NE(nullptr, tree);
	EXPECT_EQ(VIDX_E_INVALID, vidx_tree_check(tree, size, err, sizeof(err)));
	EXPECT_NE(nullptr, std::strstr(err, "non-finite")) << err;
	vidx_tree_free(tree);
}

} // namespace
