#!/usr/bin/python3
"""Sets the next sidecar slot in the metapage of a vidx index file (block 0)
of a stopped cluster, so that tests reach what 4 billion inserts would.

  patch_meta.py FILE NEXT_SLOT [--checksums]

With --checksums (the cluster has data checksums), checks that the page's
checksum is what PostgreSQL's algorithm gives before the change, then writes
the new one. Prints the old next_slot.
"""
import argparse
import struct
import sys

BLCKSZ = 8192
META = 24                 # PageGetContents: MAXALIGN(SizeOfPageHeaderData)
MAGIC = 0x56494458        # "VIDX"
NEXT_SLOT = META + 56     # offsetof(VidxMetaPageData, next_slot)
PD_CHECKSUM = 8           # offsetof(PageHeaderData, pd_checksum)

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

    def comp(j, value):
        t = sums[j] ^ value
        sums[j] = ((t * FNV_PRIME) & 0xFFFFFFFF) ^ (t >> 17)

    for i in range(BLCKSZ // (4 * N_SUMS)):
        for j in range(N_SUMS):
            comp(j, words[i * N_SUMS + j])
    for _ in range(2):
        for j in range(N_SUMS):
            comp(j, 0)
    result = 0
    for s in sums:
        result ^= s
    return ((result ^ blkno) % 65535) + 1


def main():
    p = argparse.ArgumentParser()
    p.add_argument("file")
    p.add_argument("next_slot", type=int)
    p.add_argument("--checksums", action="store_true")
    a = p.parse_args()
    with open(a.file, "r+b") as f:
        page = bytearray(f.read(BLCKSZ))
        if len(page) != BLCKSZ or struct.unpack_from("<I", page, META)[0] != MAGIC:
            sys.exit("%s: block 0 is not a vidx metapage" % a.file)
        if a.checksums:
            stored = struct.unpack_from("<H", page, PD_CHECKSUM)[0]
            if stored != pg_checksum_page(page, 0):
                sys.exit("%s: the stored checksum %d is not PostgreSQL's %d" %
                         (a.file, stored, pg_checksum_page(page, 0)))
        old = struct.unpack_from("<Q", page, NEXT_SLOT)[0]
        struct.pack_into("<Q", page, NEXT_SLOT, a.next_slot)
        if a.checksums:
            struct.pack_into("<H", page, PD_CHECKSUM, pg_checksum_page(page, 0))
        f.seek(0)
        f.write(page)
    print(old)


if __name__ == "__main__":
    main()
