#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "test_util.hpp"

namespace
{

/* A set of postings in one buffer. */
struct Postings
{
	int dims;
	size_t psize;
	std::vector<uint64_t> buf; /* uint64 for alignment */
	std::vector<const VidxPosting *> ptrs;

	Postings(int d, int n, int refine_bits = 0)
	    : dims(d), psize(vidx_posting_size_refined(d, refine_bits)), buf(psize * n / 8 + 1)
	{
		for (int i = 0; i < n; i++)
			ptrs.push_back(at(i));
	}
	VidxPosting *at(int i) { return (VidxPosting *) ((char *) buf.data() + psize * i); }
};

TEST(RaBitQ, SizesAndEncode)
{
	EXPECT_EQ(vidx_code_words(1), 1);
	EXPECT_EQ(vidx_code_words(64), 1);
	EXPECT_EQ(vidx_code_words(65), 2);
	EXPECT_EQ(sizeof(VidxPosting), 32u);
	EXPECT_EQ(vidx_posting_size(128), 32u + 16u);

	for (int d : {1, 3, 64, 65, 100, 784})
	{
		auto x = vt::gaussian(d, d), c = vt::gaussian(d, d + 1000, 0.5f);
		Postings ps(d, 1);
		VidxPosting *p = ps.at(0);

		p->heap_block = 77;
		p->heap_offset = 5;
		p->flags = 3;
		p->slot = 9;
		p->vhash = 1234;
		vidx_rabitq_encode(x.data(), c.data(), d, p);
		EXPECT_EQ(p->heap_block, 77u);
		EXPECT_EQ(p->heap_offset, 5);
		EXPECT_EQ(p->flags, 3);
		EXPECT_EQ(p->slot, 9u);
		EXPECT_EQ(p->vhash, 1234u);

		double nsq = 0, abs = 0, cdot = 0;
		const uint64_t *code = vidx_posting_code(p);
		for (int i = 0; i < d; i++)
		{
			double r = (double) x[i] - c[i];
			nsq += r * r;
			abs += std::fabs(r);
			cdot += c[i] * r;
			bool bit = (code[i / 64] >> (i % 64)) & 1;
			EXPECT_EQ(bit, r > 0) << i;
		}
		for (int i = d; i < vidx_code_words(d) * 64; i++)
			EXPECT_EQ((code[i / 64] >> (i % 64)) & 1, 0u) << "padding bit " << i;
		EXPECT_NEAR(p->norm, std::sqrt(nsq), 1e-4 * std::sqrt(nsq));
		EXPECT_NEAR(p->dot, abs / (std::sqrt((double) d) * std::sqrt(nsq)), 1e-5);
		EXPECT_NEAR(p->cdot, cdot, 1e-4 * (1 + std::fabs(cdot)));
	}

	/* zero residual */
	std::vector<float> z(10, 1.5f);
	Postings ps(10, 1);
	vidx_rabitq_encode(z.data(), z.data(), 10, ps.at(0));
	EXPECT_EQ(ps.at(0)->norm, 0.0f);
	EXPECT_EQ(ps.at(0)->dot, 1.0f);
}

/* The popcount estimator equals the exact <xbar, qr> up to 4-bit quantization. */
TEST(RaBitQ, EstimatorMatchesExactInnerProduct)
{
	for (int d : {1, 2, 63, 64, 65, 200, 255, 256, 257, 511, 600, 1000, 1536})
	{
		const int n = 40;
		auto xs = vt::gaussian((size_t) n * d, 3 * d), c = vt::gaussian(d, 5 * d, 0.3f);
		auto q = vt::gaussian(d, 7 * d);
		Postings ps(d, n);

		for (int i = 0; i < n; i++)
			vidx_rabitq_encode(xs.data() + (size_t) i * d, c.data(), d, ps.at(i));
		std::vector<char> prep(vidx_query_prep_size(d));
		vidx_query_prep_refined(prep.data(), VIDX_METRIC_L2, q.data(), c.data(), d, 0);
		std::vector<float> est(n), lower(n);
		vidx_rabitq_estimate(prep.data(), ps.ptrs.data(), n, est.data(), lower.data());

		float lo = 1e30f, hi = -1e30f;
		double qr2 = 0;
		for (int i = 0; i < d; i++)
		{
			float r = q[i] - c[i];
			lo = std::min(lo, r);
			hi = std::max(hi, r);
			qr2 += (double) r * r;
		}
		double delta = (hi - lo) / 15.0;
		for (int j = 0; j < n; j++)
		{
			const VidxPosting *p = ps.at(j);
			const uint64_t *code = vidx_posting_code(p);
			double ip = 0;
			for (int i = 0; i < d; i++)
			{
				double s = ((code[i / 64] >> (i % 64)) & 1) ? 1 : -1;
				ip += s * ((double) q[i] - c[i]);
			}
			ip /= std::sqrt((double) d);
			double exact_est = ip / p->dot;
			double got_est = ((double) p->norm * p->norm + qr2 - est[j]) / (2.0 * p->norm);
			double tol = (delta / 2 * std::sqrt((double) d)) / p->dot + 1e-3 * std::sqrt(qr2);
			EXPECT_NEAR(got_est, exact_est, tol) << "d=" << d << " j=" << j;
			EXPECT_LE(lower[j], est[j]);
		}
	}
}

struct Accuracy
{
	double mean_rel_err;
	double coverage;
};

/*
 * Postings of `xs` encoded against centroid c, queries qs: compares estimates
 * to exact scores for a metric.
 */
Accuracy
measure(VidxMetric metric, int d, const std::vector<float> &xs, const std::vector<float> &qs,
        const std::vector<float> &c, uint64_t seed, int refine_bits = 0)
{
	int n = (int) (xs.size() / d), nq = (int) (qs.size() / d);
	std::vector<char> rot(vidx_rotation_size(d));
	vidx_rotation_init(rot.data(), d, seed);
	std::vector<float> crot(d), xr((size_t) n * d), qr(d);
	vidx_rotation_apply(rot.data(), c.data(), crot.data());
	for (int i = 0; i < n; i++)
		vidx_rotation_apply(rot.data(), xs.data() + (size_t) i * d, xr.data() + (size_t) i * d);
	Postings ps(d, n, refine_bits);
	for (int i = 0; i < n; i++)
		vidx_rabitq_encode_refined(xr.data() + (size_t) i * d, crot.data(), d, refine_bits,
		                           ps.at(i));

	std::vector<char> prep(vidx_query_prep_size(d));
	std::vector<float> est(n), lower(n);
	double rel = 0;
	int64_t covered = 0, total = 0;
	for (int j = 0; j < nq; j++)
	{
		const float *q = qs.data() + (size_t) j * d;
		vidx_rotation_apply(rot.data(), q, qr.data());
		vidx_query_prep_refined(prep.data(), metric, qr.data(), crot.data(), d, refine_bits);
		vidx_rabitq_estimate(prep.data(), ps.ptrs.data(), n, est.data(), lower.data());
		for (int i = 0; i < n && refine_bits > 0; i++)
		{
			vidx_rabitq_refine(prep.data(), ps.ptrs[i], &est[i], &lower[i]);
			EXPECT_LE(lower[i], est[i]);
		}
		for (int i = 0; i < n; i++)
		{
			const float *x = xs.data() + (size_t) i * d;
			double truth = metric == VIDX_METRIC_IP ? -vt::dot_ref(q, x, d) : vt::l2sq_ref(q, x, d);
			double scale = metric == VIDX_METRIC_IP
			                   ? std::sqrt(vt::dot_ref(q, q, d) * vt::dot_ref(x, x, d))
			                   : truth;
			rel += std::fabs(est[i] - truth) / std::max(scale, 1e-9);
			covered += truth >= (double) lower[i] - 1e-4 * std::fabs(truth);
			total++;
		}
	}
	printf("  [accuracy] metric=%d d=%d refine_bits=%d rel=%.5f coverage=%.4f\n", (int) metric, d,
	       refine_bits, rel / total, (double) covered / total);
	return {rel / total, (double) covered / total};
}

TEST(RaBitQ, AccuracyAndBoundGaussian)
{
	for (int d : {128, 784})
	{
		auto xs = vt::gaussian((size_t) 1000 * d, 11 + d);
		auto qs = vt::gaussian((size_t) 20 * d, 12 + d);
		std::vector<float> c(d, 0.0f);
		for (int i = 0; i < 1000; i++)
			for (int u = 0; u < d; u++)
				c[u] += xs[(size_t) i * d + u] / 1000.0f;
		for (VidxMetric m : {VIDX_METRIC_L2, VIDX_METRIC_IP})
		{
			Accuracy a = measure(m, d, xs, qs, c, 5);
			EXPECT_LT(a.mean_rel_err, d == 128 ? 0.07 : 0.03) << "d=" << d << " metric=" << m;
			EXPECT_GE(a.coverage, 0.99) << "d=" << d << " metric=" << m;
			/*
			 * Calibrated, not just safe: eps0 = 3 standard deviations leave about
			 * 0.13% of the 20,000 true values below their bound. A bound that
			 * leaves none is looser than it says, and every candidate it lets
			 * through is re-scored (summing the code's and the query's error
			 * allowances instead of their variances did that).
			 */
			EXPECT_LE(a.coverage, 0.9995) << "d=" << d << " metric=" << m;
		}
	}
}

TEST(RaBitQ, AccuracyAndBoundClustered)
{
	for (int d : {128, 784})
	{
		std::vector<int> labels;
		std::vector<float> centers;
		auto xs = vt::clustered(1200, d, 4, 21 + d, 1.0f, 3.0f, &labels, &centers);
		/* postings of cluster 0 against their centroid; queries from all clusters */
		std::vector<float> x0, c(centers.begin(), centers.begin() + d);
		for (int i = 0; i < 1200; i++)
			if (labels[i] == 0)
				x0.insert(x0.end(), xs.begin() + (size_t) i * d, xs.begin() + (size_t) (i + 1) * d);
		/* queries: the same centers, fresh noise */
		auto noise = vt::gaussian((size_t) 24 * d, 99 + d);
		std::vector<float> qs((size_t) 24 * d);
		for (int j = 0; j < 24; j++)
			for (int u = 0; u < d; u++)
				qs[(size_t) j * d + u] =
				    centers[(size_t) (j % 4) * d + u] + noise[(size_t) j * d + u];
		Accuracy a = measure(VIDX_METRIC_L2, d, x0, qs, c, 6);
		EXPECT_LT(a.mean_rel_err, d == 128 ? 0.07 : 0.03) << "d=" << d;
		EXPECT_GE(a.coverage, 0.99) << "d=" << d;

		/* cosine: unit vectors, ranked by L2 */
		std::vector<float> un = x0, qn = qs, cn(d, 0.0f);
		auto normalize = [d](std::vector<float> &v)
		{
			for (size_t i = 0; i < v.size() / d; i++)
			{
				double s = std::sqrt(vt::dot_ref(&v[i * d], &v[i * d], d));
				for (int u = 0; u < d; u++)
					v[i * d + u] /= (float) s;
			}
		};
		normalize(un);
		normalize(qn);
		for (size_t i = 0; i < un.size() / d; i++)
			for (int u = 0; u < d; u++)
				cn[u] += un[i * d + u] / (float) (un.size() / d);
		Accuracy b = measure(VIDX_METRIC_COSINE, d, un, qn, cn, 7);
		EXPECT_LT(b.mean_rel_err, 0.06) << "d=" << d;
		EXPECT_GE(b.coverage, 0.99) << "d=" << d;
	}
}

/*
 * Refinement codes: sizes, and estimates far closer to the truth than the
 * sign code's, with bounds that still hold (clustered data, L2 and IP, at
 * the 1-bit test's dimensions plus a low one that uses Cauchy-Schwarz).
 */
TEST(RaBitQ, RefinementCodes)
{
	EXPECT_TRUE(vidx_refine_bits_valid(0));
	EXPECT_TRUE(vidx_refine_bits_valid(4));
	EXPECT_TRUE(vidx_refine_bits_valid(8));
	EXPECT_FALSE(vidx_refine_bits_valid(2));
	EXPECT_FALSE(vidx_refine_bits_valid(-1));
	EXPECT_EQ(vidx_posting_size_refined(128, 0), vidx_posting_size(128));
	EXPECT_EQ(vidx_posting_size_refined(128, 4), vidx_posting_size(128) + 8 + 64);
	EXPECT_EQ(vidx_posting_size_refined(100, 8), vidx_posting_size(100) + 8 + 104);
	EXPECT_EQ(vidx_posting_size_refined(3, 4) % 8, 0u);

	for (int d : {16, 128, 784})
	{
		std::vector<int> labels;
		std::vector<float> centers;
		auto xs = vt::clustered(1200, d, 4, 31 + d, 1.0f, 3.0f, &labels, &centers);
		std::vector<float> x0, c(centers.begin(), centers.begin() + d);
		for (int i = 0; i < 1200; i++)
			if (labels[i] == 0)
				x0.insert(x0.end(), xs.begin() + (size_t) i * d, xs.begin() + (size_t) (i + 1) * d);
		auto noise = vt::gaussian((size_t) 24 * d, 77 + d);
		std::vector<float> qs((size_t) 24 * d);
		for (int j = 0; j < 24; j++)
			for (int u = 0; u < d; u++)
				qs[(size_t) j * d + u] =
				    centers[(size_t) (j % 4) * d + u] + noise[(size_t) j * d + u];
		for (VidxMetric m : {VIDX_METRIC_L2, VIDX_METRIC_IP})
		{
			Accuracy a1 = measure(m, d, x0, qs, c, 8, 0);
			Accuracy a4 = measure(m, d, x0, qs, c, 8, 4);
			Accuracy a8 = measure(m, d, x0, qs, c, 8, 8);
			EXPECT_LT(a4.mean_rel_err, a1.mean_rel_err / 3) << "d=" << d << " metric=" << m;
			EXPECT_LT(a8.mean_rel_err, a4.mean_rel_err / 5) << "d=" << d << " metric=" << m;
			EXPECT_GE(a4.coverage, 0.999) << "d=" << d << " metric=" << m;
			EXPECT_GE(a8.coverage, 0.999) << "d=" << d << " metric=" << m;
		}
	}
}

} // namespace
