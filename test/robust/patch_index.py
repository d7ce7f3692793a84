#!/usr/bin/python3
"""Changes a vidx index file of a stopped cluster, for tests that need a state
that normal use reaches only after billions of inserts or never.

  patch_index.py next-slot FILE N [--checksums]
      sets the metapage's next sidecar slot to N; prints the old value
  patch_index.py corrupt FILE CASE [--checksums]
      damages the chain of the first leaf with 3 or more pages; prints what
      vidx_verify must then report. CASE:
        link-past-end  its last page links to a block past the relation's end
        cycle          its last page links back to its head
        last           its head says another page is the last one
        hint           its head's insert hint is a page of another chain
        orphan         its head links past its second page, which no chain reaches
        head-free      its head is marked free (an insert routed to the leaf must fail)

With --checksums (the cluster has data checksums), each page's checksum is
checked against PostgreSQL's algorithm before the change and recomputed after.
"""
import argparse
import struct
import sys

BLCKSZ = 8192
META = 24                 # PageGetContents: MAXALIGN(SizeOfPageHeaderData)
MAGIC = 0x56494458        # "VIDX"
NEXT_SLOT = META + 56     # offsetof(VidxMetaPageData, next_slot)
PD_CHECKSUM = 8           # offsetof(PageHeaderData, pd_checksum)
PD_SPECIAL = 16           # offsetof(PageHeaderData, pd_special)
POSTING = 3               # VIDX_PAGE_POSTING
FREE = 4                  # VIDX_PAGE_FREE
PAGE_ID = 0xFF8A
INVALID = 0xFFFFFFFF
# VidxPageOpaqueData: next, head, last, insert_hint, leaf_id, npostings (uint32),
# flags, page_type, page_id, split_refused (uint16)
OPAQUE = struct.Struct("<6I4H")
FIELDS = ("next", "head", "last", "insert_hint", "leaf_id", "npostings", "flags", "page_type",
          "page_id", "split_refused")

# src/include/storage/checksum_impl.h (PostgreSQL 15)
N_SUMS = 32
FNV_PRIME = 16777619
BASE = [0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2,
        0x83E13D2C, 0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C,
        0xF718902A, 0x0B1C9CDB, 0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979,
        0xCCA6C0B2, 0x304A0979, 0x85AA43D4, 0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E,
        0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756]


def pg_checksum_page(page, blkno):
    p = bytearray(page)
    p[PD_CHECKSUM:PD_CHECKSUM + 2] = b"\0\0"
    words = struct.unpack("<%dI" % (BLCKSZ // 4), bytes(p))
    sums = list(BASE)
    for i in range(BLCKSZ // (4 * N_SUMS)):
        for j in range(N_SUMS):
            t = sums[j] ^ words[i * N_SUMS + j]
            sums[j] = ((t * FNV_PRIME) & 0xFFFFFFFF) ^ (t >> 17)
    for _ in range(2):
        for j in range(N_SUMS):
            t = sums[j]
            sums[j] = ((t * FNV_PRIME) & 0xFFFFFFFF) ^ (t >> 17)
    result = 0
    for s in sums:
        result ^= s
    return ((result ^ blkno) % 65535) + 1


class IndexFile:
    def __init__(self, path, checksums):
        self.f = open(path, "r+b")
        self.checksums = checksums
        self.f.seek(0, 2)
        self.nblocks = self.f.tell() // BLCKSZ

    def read(self, blkno):
        self.f.seek(blkno * BLCKSZ)
        page = bytearray(self.f.read(BLCKSZ))
        if self.checksums and any(page):
            stored = struct.unpack_from("<H", page, PD_CHECKSUM)[0]
            if stored != pg_checksum_page(page, blkno):
                sys.exit("block %d: the stored checksum %d is not PostgreSQL's %d"
                         % (blkno, stored, pg_checksum_page(page, blkno)))
        return page

    def write(self, blkno, page):
        if self.checksums:
            struct.pack_into("<H", page, PD_CHECKSUM, pg_checksum_page(page, blkno))
        self.f.seek(blkno * BLCKSZ)
        self.f.write(page)

    def opaque(self, page):
        special = struct.unpack_from("<H", page, PD_SPECIAL)[0]
        return special, dict(zip(FIELDS, OPAQUE.unpack_from(page, special)))

    def set_opaque(self, blkno, **fields):
        page = self.read(blkno)
        special, o = self.opaque(page)
        o.update(fields)
        OPAQUE.pack_into(page, special, *(o[k] for k in FIELDS))
        self.write(blkno, page)

    def chains(self):
        """head block -> its pages in chain order, for every posting chain"""
        heads = {}
        for b in range(1, self.nblocks):
            page = self.read(b)
            if not any(page):
                continue
            _, o = self.opaque(page)
            if o["page_id"] == PAGE_ID and o["page_type"] == POSTING and o["head"] == b:
                heads[b] = None
        for h in heads:
            pages, b = [], h
            while b != INVALID and len(pages) <= self.nblocks:
                pages.append(b)
                b = self.opaque(self.read(b))[1]["next"]
            heads[h] = pages
        return heads


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    n = sub.add_parser("next-slot")
    n.add_argument("file")
    n.add_argument("value", type=int)
    n.add_argument("--checksums", action="store_true")
    c = sub.add_parser("corrupt")
    c.add_argument("file")
    c.add_argument("case", choices=["link-past-end", "cycle", "last", "hint", "orphan", "head-free"])
    c.add_argument("--checksums", action="store_true")
    a = p.parse_args()
    f = IndexFile(a.file, a.checksums)
    meta = f.read(0)
    if struct.unpack_from("<I", meta, META)[0] != MAGIC:
        sys.exit("%s: block 0 is not a vidx metapage" % a.file)
    if a.cmd == "next-slot":
        print(struct.unpack_from("<Q", meta, NEXT_SLOT)[0])
        struct.pack_into("<Q", meta, NEXT_SLOT, a.value)
        f.write(0, meta)
        return
    chains = f.chains()
    long_chains = [c for c in chains.values() if len(c) >= 3]
    if not long_chains or len(chains) < 2:
        sys.exit("%s: needs a chain of 3 or more pages and another chain" % a.file)
    chain = long_chains[0]
    head, second, end = chain[0], chain[1], chain[-1]
    leaf = f.opaque(f.read(head))[1]["leaf_id"]
    if a.case == "link-past-end":
        f.set_opaque(end, next=f.nblocks + 5)
        print("chain of leaf %d points at block %d, out of range" % (leaf, f.nblocks + 5))
    elif a.case == "cycle":
        f.set_opaque(end, next=head)
        print("block %d is reached twice" % head)
    elif a.case == "last":
        f.set_opaque(head, last=second)
        print("chain of leaf %d ends at block %d, but its head says %d" % (leaf, end, second))
    elif a.case == "hint":
        other = next(h for h in chains if h != head)
        f.set_opaque(head, insert_hint=other)
        print("insert hint %d of leaf %d is not in its chain" % (other, leaf))
    elif a.case == "orphan":
        f.set_opaque(head, next=chain[2])
        print("block %d is in use but belongs to no chain" % second)
    elif a.case == "head-free":
        f.set_opaque(head, page_type=FREE)
        print("block %d is not the head of the chain of leaf %d" % (head, leaf))


if __name__ == "__main__":
    main()
