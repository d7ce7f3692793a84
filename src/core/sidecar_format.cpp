/*
 * sidecar_format.cpp: the sidecar file's header and records, and the 32-bit
 * hash used to validate them.
 */
#include <cstddef>
#include <cstring>

#include "internal.hpp"

namespace
{

constexpr uint64_t K1 = 0x9E3779B97F4A7C15ULL;
constexpr uint64_t K2 = 0xC2B2AE3D27D4EB4FULL;
constexpr uint64_t K3 = 0x165667B19E3779F9ULL;

inline uint64_t
rotl(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

inline uint64_t
fmix64(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xFF51AFD7ED558CCDULL;
	h ^= h >> 33;
	h *= 0xC4CEB9FE1A85EC53ULL;
	h ^= h >> 33;
	return h;
}

inline uint64_t
load64(const unsigned char *p)
{
	uint64_t v;

	std::memcpy(&v, p, 8);
	return v;
}

inline uint64_t
round64(uint64_t acc, uint64_t w)
{
	acc += w * K2;
	acc = rotl(acc, 31);
	return acc * K1;
}

constexpr size_t CHECKSUMMED = offsetof(VidxSidecarHeader, checksum);

} // namespace

extern "C" uint32_t
vidx_hash32(const void *data, size_t len) noexcept
{
	const unsigned char *p = static_cast<const unsigned char *>(data);
	uint64_t a = K3 ^ (uint64_t) len, b = K1, c = K2, d = ~K3;
	size_t i = 0;

	/* Four independent lanes over 32-byte blocks. */
	for (; i + 32 <= len; i += 32)
	{
		a = round64(a, load64(p + i));
		b = round64(b, load64(p + i + 8));
		c = round64(c, load64(p + i + 16));
		d = round64(d, load64(p + i + 24));
	}
	uint64_t h = rotl(a, 1) + rotl(b, 7) + rotl(c, 12) + rotl(d, 18);

	for (; i + 8 <= len; i += 8)
		h = round64(h, load64(p + i)) + K3;
	if (i < len)
	{
		uint64_t w = 0;

		std::memcpy(&w, p + i, len - i);
		h = round64(h ^ (uint64_t) (len - i), w);
	}
	h = fmix64(h ^ (uint64_t) len);
	return (uint32_t) (h ^ (h >> 32));
}

extern "C" uint32_t
vidx_vector_hash(const float *v, int dims) noexcept
{
	return vidx_hash32(v, dims > 0 ? 4 * (size_t) dims : 0);
}

extern "C" size_t
vidx_sidecar_record_size(int dims) noexcept
{
	if (dims < 0)
		dims = 0;
	return (4 * (size_t) dims + 15) & ~(size_t) 15;
}

extern "C" void
vidx_sidecar_header_init(VidxSidecarHeader *h, int dims, uint32_t db_oid, uint32_t index_oid,
                         uint32_t relfilenode, uint64_t build_id) noexcept
{
	std::memset(h, 0, sizeof(*h));
	h->magic = VIDX_SIDECAR_MAGIC;
	h->version = VIDX_SIDECAR_VERSION;
	h->dims = (uint32_t) (dims < 0 ? 0 : dims);
	h->record_size = (uint32_t) vidx_sidecar_record_size(dims);
	h->db_oid = db_oid;
	h->index_oid = index_oid;
	h->relfilenode = relfilenode;
	h->build_id = build_id;
	h->checksum = vidx_hash32(h, CHECKSUMMED);
}

extern "C" int
vidx_sidecar_header_check(const VidxSidecarHeader *h, int dims, uint32_t db_oid, uint32_t index_oid,
                          uint32_t relfilenode, uint64_t build_id, char *err,
                          size_t errlen) noexcept
{
	if (h->magic != VIDX_SIDECAR_MAGIC)
	{
		vidx::set_err(err, errlen, "bad magic in sidecar header");
		return VIDX_E_INVALID;
	}
	if (h->version != VIDX_SIDECAR_VERSION)
	{
		vidx::set_err(err, errlen, "unsupported version %u of sidecar (expected %d)", h->version,
		              VIDX_SIDECAR_VERSION);
		return VIDX_E_INVALID;
	}
	if (h->checksum != vidx_hash32(h, CHECKSUMMED))
	{
		vidx::set_err(err, errlen, "bad checksum in sidecar header");
		return VIDX_E_INVALID;
	}
	if (h->db_oid != db_oid || h->index_oid != index_oid || h->relfilenode != relfilenode ||
	    h->build_id != build_id)
	{
		vidx::set_err(err, errlen,
		              "sidecar belongs to another index (db %u, index %u, relfilenode %u, build "
		              "%llu; expected db %u, index %u, relfilenode %u, build %llu)",
		              h->db_oid, h->index_oid, h->relfilenode, (unsigned long long) h->build_id,
		              db_oid, index_oid, relfilenode, (unsigned long long) build_id);
		return VIDX_E_INVALID;
	}
	if ((int64_t) h->dims != (int64_t) dims)
	{
		vidx::set_err(err, errlen, "sidecar dims %u != index dims %d", h->dims, dims);
		return VIDX_E_INVALID;
	}
	if (h->record_size != vidx_sidecar_record_size(dims))
	{
		vidx::set_err(err, errlen, "sidecar record size %u != %zu", h->record_size,
		              vidx_sidecar_record_size(dims));
		return VIDX_E_INVALID;
	}
	return VIDX_OK;
}

extern "C" void
vidx_sidecar_record_fill(void *rec, int dims, const float *v) noexcept
{
	size_t bytes = dims > 0 ? 4 * (size_t) dims : 0;

	if (bytes > 0)
		std::memcpy(rec, v, bytes);
	std::memset(static_cast<char *>(rec) + bytes, 0, vidx_sidecar_record_size(dims) - bytes);
}

extern "C" const float *
vidx_sidecar_record_vector(const void *rec, int dims, uint32_t vhash) noexcept
{
	const float *v = static_cast<const float *>(rec);

	return vidx_vector_hash(v, dims) == vhash ? v : nullptr;
}
