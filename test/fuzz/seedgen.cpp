// Writes seed corpora for the fuzz targets: valid tree blobs (built by the
// core), valid sidecar headers and records, and real postings.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../../src/core/vidx_core.h"

static void
put(const std::string &path, const void *a, size_t alen, const void *b = nullptr, size_t blen = 0)
{
	FILE *f = fopen(path.c_str(), "wb");
	if (!f)
	{
		perror(path.c_str());
		exit(1);
	}
	fwrite(a, 1, alen, f);
	if (b)
		fwrite(b, 1, blen, f);
	fclose(f);
}

int
main(int argc, char **argv)
{
	std::string dir = argc > 1 ? argv[1] : "corpus";
	int files = 0;
	for (int dims : {2, 7, 16, 64})
		for (int nleaves : {1, 3, 9, 40})
			for (int fanout : {2, 4, 64})
			{
				std::vector<float> cents(nleaves * dims);
				for (size_t i = 0; i < cents.size(); i++)
					cents[i] = std::sin(i * 0.7f + dims);
				size_t sz = 0;
				char err[256];
				void *blob = vidx_tree_build(cents.data(), nullptr, nleaves, dims, fanout, 42, &sz,
				                             1, err, sizeof(err));
				if (!blob)
					continue;
				uint8_t metric = files % 3;
				put(dir + "/tree/seed" + std::to_string(files++), &metric, 1, blob, sz);
				vidx_tree_free(blob);
			}
	for (int dims : {1, 3, 16, 100})
	{
		std::vector<float> v(dims);
		for (int i = 0; i < dims; i++)
			v[i] = i * 0.5f - 1;
		/* p[3]: the hash a posting would hold, so the seed takes the valid path */
		uint32_t p[4] = {static_cast<uint32_t>(dims - 1), 5, 16384,
		                 vidx_vector_hash(v.data(), dims)};
		VidxSidecarHeader h;
		vidx_sidecar_header_init(&h, dims, 5, 16384, 16390, 5 ^ 16384);
		std::vector<char> buf(16 + sizeof(h) + vidx_sidecar_record_size(dims));
		memcpy(buf.data(), p, 16);
		memcpy(buf.data() + 16, &h, sizeof(h));
		std::vector<char> rec(vidx_sidecar_record_size(dims));
		vidx_sidecar_record_fill(rec.data(), dims, v.data());
		buf.resize(16 + sizeof(h));
		buf.insert(buf.end(), rec.begin(), rec.end());
		put(dir + "/sidecar/seed" + std::to_string(dims), buf.data(), buf.size());
	}
	for (int dims : {3, 64, 130})
	{
		uint8_t head[4] = {static_cast<uint8_t>(dims - 1), static_cast<uint8_t>((dims - 1) >> 8), 0,
		                   3};
		std::vector<float> qc(2 * dims);
		for (int i = 0; i < 2 * dims; i++)
			qc[i] = std::cos(i * 0.3f);
		std::vector<char> buf(head, head + 4);
		buf.insert(buf.end(), reinterpret_cast<char *>(qc.data()),
		           reinterpret_cast<char *>(qc.data() + 2 * dims));
		std::vector<float> q(dims), c(dims);
		for (int i = 0; i < dims; i++)
			q[i] = qc[2 * i], c[i] = qc[2 * i + 1];
		std::vector<char> post(vidx_posting_size(dims));
		for (int k = 0; k < 4; k++)
		{
			q[k % dims] += 0.5f;
			vidx_rabitq_encode(q.data(), c.data(), dims,
			                   reinterpret_cast<VidxPosting *>(post.data()));
			buf.insert(buf.end(), post.begin(), post.end());
		}
		put(dir + "/rabitq/seed" + std::to_string(dims), buf.data(), buf.size());
	}
	printf("seeds written to %s\n", dir.c_str());
	return 0;
}
