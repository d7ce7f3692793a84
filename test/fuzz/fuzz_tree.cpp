// libFuzzer target: vidx_tree_check over an arbitrary blob (as read back from
// tree pages); when it accepts the blob, a best-first search over it must
// terminate, yielding each leaf at most once.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../../src/core/vidx_core.h"

extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	VidxMetric metric = static_cast<VidxMetric>(1 + data[0] % 3);
	data++;
	size--;
	// the glue hands the core an 8-aligned copy of the pages' bytes
	std::vector<uint64_t> buf((size + 7) / 8 + 1);
	std::memcpy(buf.data(), data, size);
	char err[256];
	if (vidx_tree_check(buf.data(), size, err, sizeof(err)) != VIDX_OK)
		return 0;
	const VidxTreeHeader *h = static_cast<const VidxTreeHeader *>(static_cast<void *>(buf.data()));
	if (h->dims == 0 || h->dims > VIDX_MAX_DIMS)
		return 0;
	std::vector<float> q(h->dims);
	for (uint32_t i = 0; i < h->dims; i++)
		q[i] = std::sin(static_cast<float>(i));
	std::vector<uint64_t> state(vidx_tree_search_size(buf.data()) / 8 + 1);
	vidx_tree_search_begin(state.data(), buf.data(), metric, q.data());
	std::vector<uint8_t> seen(h->nnodes, 0); /* by node: leaf ids are labels */
	for (uint32_t i = 0; i <= h->nnodes; i++)
	{
		float key;
		int32_t leaf = vidx_tree_search_next(state.data(), buf.data(), &key);
		if (leaf < 0)
			return 0;
		if (static_cast<uint32_t>(leaf) >= h->nnodes)
			abort(); // not a node
		const VidxTreeNode *n = vidx_tree_node(buf.data(), static_cast<uint32_t>(leaf));
		if (n->nchildren != 0 || seen[leaf]++)
			abort(); // not a leaf, or a leaf twice
	}
	abort(); // more leaves than nodes: the search does not terminate
}
