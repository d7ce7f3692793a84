// libFuzzer target: vidx_sidecar_header_check over an arbitrary header and
// vidx_sidecar_record_vector over an arbitrary record (a stale, torn or
// corrupt sidecar file is arbitrary bytes).
#include <cstdint>
#include <cstring>
#include <vector>

#include "../../src/core/vidx_core.h"

extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 16)
		return 0;
	uint32_t p[4];
	std::memcpy(p, data, sizeof(p));
	data += 16;
	size -= 16;
	int dims = static_cast<int>(p[0] % 300) + 1;
	VidxSidecarHeader h;
	std::memset(&h, 0, sizeof(h));
	std::memcpy(&h, data, size < sizeof(h) ? size : sizeof(h));
	char err[256];
	(void) vidx_sidecar_header_check(&h, dims, p[1], p[2], p[3], p[1] ^ p[2], err, sizeof(err));
	(void) vidx_sidecar_header_check(&h, static_cast<int>(h.dims), h.db_oid, h.index_oid,
	                                 h.relfilenode, h.build_id, err, sizeof(err));
	size_t rs = vidx_sidecar_record_size(dims);
	std::vector<uint64_t> rec(rs / 8 + 1);
	std::memcpy(rec.data(), data, size < rs ? size : rs);
	const float *v = vidx_sidecar_record_vector(rec.data(), dims, p[3]);
	(void) v;
	/* the record's own hash: the valid path */
	v = vidx_sidecar_record_vector(
	    rec.data(), dims, vidx_vector_hash(reinterpret_cast<const float *>(rec.data()), dims));
	if (v != nullptr)
	{
		volatile float s = 0;
		for (int i = 0; i < dims; i++)
			s = s + v[i]; // the vector must lie inside the record
	}
	return 0;
}
