#include <gtest/gtest.h>

#include <cstring>

#include "test_util.hpp"

namespace
{

TEST(Sidecar, Hash)
{
	const char *s = "hello, vidx";
	EXPECT_EQ(vidx_hash32(s, strlen(s)), vidx_hash32(s, strlen(s)));
	EXPECT_NE(vidx_hash32(s, strlen(s)), vidx_hash32(s, strlen(s) - 1));
	float a = 0.0f, b = -0.0f;
	EXPECT_NE(vidx_vector_hash(&a, 1), vidx_vector_hash(&b, 1));
	/* every single-bit flip changes the hash, for several lengths */
	for (size_t len : {1, 7, 8, 9, 31, 32, 33, 100, 4096})
	{
		std::vector<unsigned char> buf(len);
		for (size_t i = 0; i < len; i++)
			buf[i] = (unsigned char) (i * 37 + 11);
		uint32_t h = vidx_hash32(buf.data(), len);
		for (size_t i = 0; i < len; i += (len > 64 ? 13 : 1))
			for (int bit = 0; bit < 8; bit++)
			{
				buf[i] ^= (unsigned char) (1 << bit);
				EXPECT_NE(h, vidx_hash32(buf.data(), len)) << len << " " << i << " " << bit;
				buf[i] ^= (unsigned char) (1 << bit);
			}
	}
	auto v = vt::gaussian(100, 1);
	EXPECT_EQ(vidx_vector_hash(v.data(), 100), vidx_hash32(v.data(), 400));
}

TEST(Sidecar, Header)
{
	EXPECT_LE(sizeof(VidxSidecarHeader), (size_t) VIDX_SIDECAR_HEADER_SIZE);
	VidxSidecarHeader h;
	vidx_sidecar_header_init(&h, 4, 10, 20, 30, 99);
	char err[256];
	EXPECT_EQ(h.magic, VIDX_SIDECAR_MAGIC);
	EXPECT_EQ(h.version, (uint32_t) VIDX_SIDECAR_VERSION);
	EXPECT_EQ(h.record_size, vidx_sidecar_record_size(4));
	EXPECT_EQ(VIDX_OK, vidx_sidecar_header_check(&h, 4, 10, 20, 30, 99, err, sizeof(err)));

	auto bad = [&](VidxSidecarHeader x, int dims, uint32_t db, uint32_t idx, uint32_t rfn,
	               uint64_t build, const char *msg)
	{
		err[0] = 0;
		EXPECT_EQ(VIDX_E_INVALID,
		          vidx_sidecar_header_check(&x, dims, db, idx, rfn, build, err, sizeof(err)));
		EXPECT_NE(nullptr, strstr(err, msg)) << err;
	};
	bad(h, 4, 11, 20, 30, 99, "sidecar belongs to another index");
	bad(h, 4, 10, 21, 30, 99, "sidecar belongs to another index");
	bad(h, 4, 10, 20, 31, 99, "sidecar belongs to another index");
	bad(h, 4, 10, 20, 30, 98, "sidecar belongs to another index");
	bad(h, 3, 10, 20, 30, 99, "sidecar dims 4 != index dims 3");
	VidxSidecarHeader x = h;
	x.index_oid = 21; /* without fixing the checksum */
	bad(x, 4, 10, 21, 30, 99, "bad checksum");
	x = h;
	x.magic ^= 1;
	bad(x, 4, 10, 20, 30, 99, "bad magic");
	x = h;
	x.version = 1; /* format 1 (records with a TID prefix): refused, REINDEX writes format 2 */
	bad(x, 4, 10, 20, 30, 99, "unsupported version 1 of sidecar (expected 2)");
	vidx_sidecar_header_init(&x, 3, 10, 20, 30, 99);
	bad(x, 4, 10, 20, 30, 99, "sidecar dims 3 != index dims 4");
}

TEST(Sidecar, Records)
{
	/* At 1024 dimensions a record is exactly one 4 kB page, after a one-page header. */
	EXPECT_EQ(4096u, vidx_sidecar_record_size(1024));
	EXPECT_EQ(0, VIDX_SIDECAR_HEADER_SIZE % 4096);
	for (int d : {1, 3, 4, 5, 100, 16000})
	{
		size_t rs = vidx_sidecar_record_size(d);
		EXPECT_EQ(rs % 16, 0u);
		EXPECT_GE(rs, 4 * (size_t) d);
		EXPECT_LT(rs, 4 * (size_t) d + 16);
		auto v = vt::gaussian(d, d);
		std::vector<uint64_t> buf(rs / 8, ~0ULL);
		vidx_sidecar_record_fill(buf.data(), d, v.data());
		/* the vector first, then zero padding: nothing of the ~0 fill is left */
		for (size_t b = 4 * (size_t) d; b < rs; b++)
			EXPECT_EQ(0, ((const char *) buf.data())[b]) << "d=" << d << " byte " << b;
		uint32_t vh = vidx_vector_hash(v.data(), d);
		const float *got = vidx_sidecar_record_vector(buf.data(), d, vh);
		ASSERT_NE(got, nullptr);
		EXPECT_EQ(0, std::memcmp(got, v.data(), 4 * (size_t) d));
		EXPECT_EQ(nullptr, vidx_sidecar_record_vector(buf.data(), d, vh + 1));
		/* a flipped byte in the stored vector */
		char *bytes = (char *) buf.data() + 4 * (d / 2) + 1;
		*bytes ^= 0x10;
		EXPECT_EQ(nullptr, vidx_sidecar_record_vector(buf.data(), d, vh));
		*bytes ^= 0x10;
		EXPECT_NE(nullptr, vidx_sidecar_record_vector(buf.data(), d, vh));
		/* an all-zero record (never written) */
		std::vector<uint64_t> zero(rs / 8, 0);
		EXPECT_EQ(nullptr, vidx_sidecar_record_vector(zero.data(), d, vh));
	}
}

} // namespace
