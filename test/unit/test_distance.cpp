#include <gtest/gtest.h>

#include "test_util.hpp"

namespace
{

const int kDims[] = {1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 128, 784, 1536, 16000};

TEST(Distance, KernelsMatchDoubleReference)
{
	for (int d : kDims)
	{
		for (int rep = 0; rep < 3; rep++)
		{
			auto a = vt::gaussian(d, 100 + d * 7 + rep);
			auto b = vt::gaussian(d, 200 + d * 7 + rep, 2.0f, 0.5f);
			double l2 = vt::l2sq_ref(a.data(), b.data(), d);
			double dot = vt::dot_ref(a.data(), b.data(), d);
			double na = vt::dot_ref(a.data(), a.data(), d);
			double tol = 1e-5 * d + 1e-5;

			EXPECT_NEAR(vidx_l2sq(a.data(), b.data(), d), l2, tol * (1 + l2)) << "d=" << d;
			/* the dot's error scales with ||a|| ||b||, not with the dot */
			double nb = vt::dot_ref(b.data(), b.data(), d);
			EXPECT_NEAR(vidx_dot(a.data(), b.data(), d), dot, 1e-5 * std::sqrt(na * nb) + 1e-6)
			    << "d=" << d;
			EXPECT_NEAR(vidx_norm_sq(a.data(), d), na, tol * (1 + na)) << "d=" << d;
		}
	}
}

TEST(Distance, UnalignedInputsAndZeroDims)
{
	auto buf = vt::gaussian(1000, 5);
	for (int off = 0; off < 5; off++)
	{
		const float *a = buf.data() + off, *b = buf.data() + 500 + off;
		int d = 333;

		EXPECT_NEAR(vidx_l2sq(a, b, d), vt::l2sq_ref(a, b, d), 1e-3);
		EXPECT_NEAR(vidx_dot(a, b, d), vt::dot_ref(a, b, d), 1e-3);
	}
	EXPECT_EQ(vidx_l2sq(buf.data(), buf.data(), 0), 0.0f);
	EXPECT_EQ(vidx_dot(buf.data(), buf.data(), 0), 0.0f);
	EXPECT_EQ(vidx_norm_sq(buf.data(), 0), 0.0f);
}

TEST(Distance, PerMetric)
{
	const float a[3] = {1, 2, 3};
	const float b[3] = {4, 6, 3};

	EXPECT_NEAR(vidx_distance(VIDX_METRIC_L2, a, b, 3), 5.0, 1e-6);
	EXPECT_NEAR(vidx_distance(VIDX_METRIC_IP, a, b, 3), -(4 + 12 + 9), 1e-6);
	double cosv = 25.0 / (std::sqrt(14.0) * std::sqrt(61.0));
	EXPECT_NEAR(vidx_distance(VIDX_METRIC_COSINE, a, b, 3), 1 - cosv, 1e-6);

	/* identical and opposite vectors: clamped to [0, 2] */
	const float c[3] = {-1, -2, -3};
	EXPECT_GE(vidx_distance(VIDX_METRIC_COSINE, a, a, 3), 0.0);
	EXPECT_NEAR(vidx_distance(VIDX_METRIC_COSINE, a, a, 3), 0.0, 1e-6);
	EXPECT_LE(vidx_distance(VIDX_METRIC_COSINE, a, c, 3), 2.0);
	EXPECT_NEAR(vidx_distance(VIDX_METRIC_COSINE, a, c, 3), 2.0, 1e-6);

	const float z[3] = {0, 0, 0};
	EXPECT_TRUE(std::isnan(vidx_distance(VIDX_METRIC_COSINE, a, z, 3)));
	EXPECT_EQ(vidx_distance(VIDX_METRIC_L2, a, a, 3), 0.0);
}

} // namespace

TEST(Distance, HugeValuesFallBackToDouble)
{
	// Float sums overflow beyond ~1e19; the operator value must stay finite.
	const float a[2] = {3e20f, 4e20f};
	const float b[2] = {0.0f, 0.0f};
	const float c[2] = {6e20f, 8e20f};
	EXPECT_NEAR(vidx_distance(VIDX_METRIC_L2, a, b, 2), 5e20, 5e20 * 1e-6);
	EXPECT_NEAR(vidx_distance(VIDX_METRIC_IP, a, c, 2), -(18e40 + 32e40), 50e40 * 1e-6);
	EXPECT_NEAR(vidx_distance(VIDX_METRIC_COSINE, a, c, 2), 0.0, 1e-9);
}

TEST(Distance, NormalizeHandlesOverflowAndUnderflow)
{
	const float big[2] = {3e20f, 4e20f};
	const float tiny[2] = {3e-30f, 4e-30f};
	float out[2];
	vidx_normalize(big, out, 2);
	EXPECT_NEAR(out[0], 0.6f, 1e-6);
	EXPECT_NEAR(out[1], 0.8f, 1e-6);
	vidx_normalize(tiny, out, 2);
	EXPECT_NEAR(out[0], 0.6f, 1e-6);
	EXPECT_NEAR(out[1], 0.8f, 1e-6);
}
