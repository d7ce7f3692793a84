#include <gtest/gtest.h>

#include <cstring>

#include "test_util.hpp"

namespace
{

std::vector<char>
make_rotation(int d, uint64_t seed)
{
	std::vector<char> r(vidx_rotation_size(d));

	vidx_rotation_init(r.data(), d, seed);
	return r;
}

void
check_orthogonal(int d, uint64_t seed)
{
	auto rot = make_rotation(d, seed);
	auto a = vt::gaussian(d, seed * 3 + d);
	auto b = vt::gaussian(d, seed * 5 + d + 1);
	std::vector<float> ra(d), rb(d);

	vidx_rotation_apply(rot.data(), a.data(), ra.data());
	vidx_rotation_apply(rot.data(), b.data(), rb.data());

	double na = vt::dot_ref(a.data(), a.data(), d), nra = vt::dot_ref(ra.data(), ra.data(), d);
	double nb = vt::dot_ref(b.data(), b.data(), d);
	double ab = vt::dot_ref(a.data(), b.data(), d), rab = vt::dot_ref(ra.data(), rb.data(), d);

	ASSERT_NEAR(nra, na, 1e-5 * na) << "d=" << d;
	ASSERT_NEAR(rab, ab, 1e-5 * std::sqrt(na * nb)) << "d=" << d;
}

TEST(Rotation, PreservesNormsAndInnerProducts)
{
	for (int d = 1; d <= 300; d++)
		check_orthogonal(d, 42);
	for (int d : {511, 512, 513, 777, 784, 1000, 1023, 1024, 1025, 1536, 1999, 2048, 3000, 16000})
		check_orthogonal(d, 7);
}

TEST(Rotation, DeterministicBySeedAndMixes)
{
	const int d = 100;
	auto x = vt::gaussian(d, 1);
	auto r1 = make_rotation(d, 99), r2 = make_rotation(d, 99), r3 = make_rotation(d, 100);

	EXPECT_EQ(0, std::memcmp(r1.data(), r2.data(), r1.size()));
	std::vector<float> y1(d), y2(d), y3(d);

	vidx_rotation_apply(r1.data(), x.data(), y1.data());
	vidx_rotation_apply(r2.data(), x.data(), y2.data());
	vidx_rotation_apply(r3.data(), x.data(), y3.data());
	EXPECT_EQ(0, std::memcmp(y1.data(), y2.data(), d * sizeof(float)));
	EXPECT_NE(0, std::memcmp(y1.data(), y3.data(), d * sizeof(float)));

	/* A basis vector is spread over many coordinates. */
	std::vector<float> e(d, 0.0f), re(d);
	e[3] = 1.0f;
	vidx_rotation_apply(r1.data(), e.data(), re.data());
	int big = 0;
	for (float v : re)
		big += std::fabs(v) > 0.01f;
	EXPECT_GT(big, d / 2);
}

TEST(Rotation, InPlaceEqualsOutOfPlace)
{
	for (int d : {1, 5, 64, 100, 1000})
	{
		auto rot = make_rotation(d, 3);
		auto x = vt::gaussian(d, 11);
		std::vector<float> y(d), z = x;

		vidx_rotation_apply(rot.data(), x.data(), y.data());
		vidx_rotation_apply(rot.data(), z.data(), z.data());
		EXPECT_EQ(0, std::memcmp(y.data(), z.data(), d * sizeof(float))) << d;
	}
}

} // namespace
