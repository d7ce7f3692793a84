/*
 * sidecar.c: the file of full-precision vectors beside a vidx index.
 *
 * The sidecar is an accelerator, never the source of truth: a record (the
 * vector alone, format 2: a 1024-d record is one page) is used only if it
 * hashes to the vector hash of the posting that points at it (in WAL-logged
 * index pages), and anything missing, short, stale or
 * bad makes the scan take the vector from the table instead. It lives in
 * $PGDATA/vidx/, named only from OIDs: <tablespace>_<database>_<relfilenode>.vsc,
 * so REINDEX, TRUNCATE and VACUUM FULL (new relfilenode) get a new file and an
 * aborted rebuild leaves the old one intact. It is not WAL-logged: a standby
 * or a restored backup lack it. A build syncs the file it wrote once, at its
 * end; appends by inserts are not synced, so an OS crash can lose records.
 *
 * This file holds the file I/O (build writer, appends, read-only mappings and
 * their SIGBUS guard, prefetch, prewarm, reads); the removal of files no index
 * uses any more is in sidecar_gc.c.
 */
#include "vidx.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/file_perm.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

/*
 * The one place that spells a sidecar file's name (sidecar_gc.c's parse_name
 * reads it back): <spc>_<db>_<relfilenode>.vsc, or ..._t<backend>.vsc for a
 * temporary index, in $PGDATA/vidx.
 */
char *
vidx_sidecar_path_for(Oid spc, Oid db, Oid relfilenode, bool temp)
{
	if (temp)
		return psprintf("%s/%s/%u_%u_%u_t%d.vsc", DataDir, VIDX_SIDECAR_DIR, spc, db, relfilenode,
		                MyBackendId);
	return psprintf("%s/%s/%u_%u_%u.vsc", DataDir, VIDX_SIDECAR_DIR, spc, db, relfilenode);
}

char *
vidx_sidecar_path(Relation index)
{
	return vidx_sidecar_path_for(index->rd_node.spcNode, index->rd_node.dbNode,
	                             index->rd_node.relNode, RelationUsesLocalBuffers(index));
}

static void
ensure_sidecar_dir(void)
{
	char *dir = psprintf("%s/%s", DataDir, VIDX_SIDECAR_DIR);

	if (MakePGDirectory(dir) < 0 && errno != EEXIST)
		ereport(ERROR,
		        (errcode_for_file_access(), errmsg("could not create directory \"%s\": %m", dir)));
	pfree(dir);
}

/*
 * Syncs $PGDATA/vidx, which holds the entries of new or renamed files, and the
 * data directory, which holds vidx/ itself once it is made. Returns 0, or -1
 * after reporting the failure at elevel.
 */
static int
sync_sidecar_dir(int elevel)
{
	char *dir = psprintf("%s/%s", DataDir, VIDX_SIDECAR_DIR);
	int rc = fsync_fname_ext(dir, true, false, elevel);

	if (rc == 0)
		rc = fsync_fname_ext(DataDir, true, false, elevel);
	pfree(dir);
	return rc;
}

static void
fill_header(Relation index, int dims, uint64 build_id, char *page)
{
	memset(page, 0, VIDX_SIDECAR_HEADER_SIZE);
	vidx_sidecar_header_init((VidxSidecarHeader *) page, dims, index->rd_node.dbNode,
	                         RelationGetRelid(index), index->rd_node.relNode, build_id);
}

/* ---------- sequential writer for the build ---------- */

#define BUILD_BUFFER_SIZE (1024 * 1024)

static struct
{
	int fd;
	char *path;
	int dims;
	size_t record_size;
	char *buffer;
	size_t used;
	uint64 next_slot;
} build_writer = {-1};

static void
build_flush(void)
{
	size_t done = 0;

	while (done < build_writer.used)
	{
		ssize_t n = write(build_writer.fd, build_writer.buffer + done, build_writer.used - done);

		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			ereport(ERROR, (errcode_for_file_access(),
			                errmsg("could not write vidx sidecar \"%s\": %m", build_writer.path)));
		}
		done += n;
	}
	build_writer.used = 0;
}

void
vidx_sidecar_build_begin(Relation index, int dims, uint64 build_id)
{
	char header[VIDX_SIDECAR_HEADER_SIZE];

	/*
	 * State left by a build that errored out is stale: its memory went with
	 * its transaction and its file was closed at abort. Overwrite it.
	 */
	build_writer.fd = -1;

	ensure_sidecar_dir();
	build_writer.path = MemoryContextStrdup(TopTransactionContext, vidx_sidecar_path(index));
	build_writer.fd = OpenTransientFilePerm(
	    build_writer.path, O_CREAT | O_TRUNC | O_RDWR | PG_BINARY, S_IRUSR | S_IWUSR);
	if (build_writer.fd < 0)
		ereport(ERROR, (errcode_for_file_access(),
		                errmsg("could not create vidx sidecar \"%s\": %m", build_writer.path)));
	/* The new file goes with the build if its transaction aborts. */
	vidx_sidecar_schedule_unlink(build_writer.path, false);
	build_writer.dims = dims;
	build_writer.record_size = vidx_sidecar_record_size(dims);
	build_writer.buffer = MemoryContextAlloc(TopTransactionContext, BUILD_BUFFER_SIZE);
	build_writer.used = 0;
	build_writer.next_slot = 0;

	fill_header(index, dims, build_id, header);
	memcpy(build_writer.buffer, header, VIDX_SIDECAR_HEADER_SIZE);
	build_writer.used = VIDX_SIDECAR_HEADER_SIZE;
}

void
vidx_sidecar_build_write(uint64 slot, const float *v)
{
	Assert(build_writer.fd >= 0 && slot == build_writer.next_slot);
	if (build_writer.used + build_writer.record_size > BUILD_BUFFER_SIZE)
		build_flush();
	vidx_sidecar_record_fill(build_writer.buffer + build_writer.used, build_writer.dims, v);
	build_writer.used += build_writer.record_size;
	build_writer.next_slot++;
}

/*
 * Reads n records from slot on of the file being built (after its last
 * write) into buf: the build reads the vectors back from the file it has just
 * written (from the page cache) instead of keeping them all in memory.
 */
void
vidx_sidecar_build_read(uint64 slot, int64 n, char *buf)
{
	off_t off = VIDX_SIDECAR_HEADER_SIZE + (off_t) slot * build_writer.record_size;
	size_t want = (size_t) n * build_writer.record_size;
	size_t done = 0;

	Assert(build_writer.fd >= 0 && slot + n <= build_writer.next_slot);
	if (build_writer.used > 0)
		build_flush();
	while (done < want)
	{
		ssize_t r = pg_pread(build_writer.fd, buf + done, want - done, off + done);

		if (r < 0)
		{
			if (errno == EINTR)
				continue;
			ereport(ERROR, (errcode_for_file_access(),
			                errmsg("could not read vidx sidecar \"%s\": %m", build_writer.path)));
		}
		if (r == 0)
			ereport(ERROR,
			        (errcode(ERRCODE_DATA_CORRUPTED),
			         errmsg("vidx sidecar \"%s\" is shorter than written during the build",
			                build_writer.path),
			         errdetail("Reading slot " UINT64_FORMAT " of " UINT64_FORMAT ".",
			                   slot + done / build_writer.record_size, build_writer.next_slot)));
		done += r;
	}
}

/*
 * Writes out the rest of the file and syncs it and its directory entry once,
 * so that the index and the records it needs survive an OS crash together (a
 * failure aborts the build, whose file then goes).
 */
void
vidx_sidecar_build_end(void)
{
	build_flush();
	if (pg_fsync(build_writer.fd) != 0)
		ereport(ERROR, (errcode_for_file_access(),
		                errmsg("could not fsync vidx sidecar \"%s\": %m", build_writer.path)));
	if (CloseTransientFile(build_writer.fd) != 0)
		ereport(ERROR, (errcode_for_file_access(),
		                errmsg("could not close vidx sidecar \"%s\": %m", build_writer.path)));
	build_writer.fd = -1;
	(void) sync_sidecar_dir(ERROR);
	pfree(build_writer.buffer);
	build_writer.buffer = NULL;
}

/*
 * Starts a new, empty sidecar file for an index that has no record yet: the
 * insert that takes slot 0 calls it, holding the metapage lock. That index was
 * built on an empty table, or it is an unlogged index that crash recovery
 * reset to its init fork (another build_id): a file already there is of an
 * earlier build and would refuse every append until REINDEX. No posting points
 * at a record of it, and no insert of a later slot can write meanwhile (the
 * lock). The header goes to a temporary file that then replaces the old one
 * (rename): a crash leaves the one or the other, and scans that have the old
 * file mapped read it until they see the new inode. Returns why the file could
 * not be made, or NULL; the caller warns after releasing the lock.
 */
const char *
vidx_sidecar_start(Relation index, const VidxMetaPageData *meta)
{
	char *path = vidx_sidecar_path(index);
	char *tmp = psprintf("%s.tmp", path);
	char *dir = psprintf("%s/%s", DataDir, VIDX_SIDECAR_DIR);
	char header[VIDX_SIDECAR_HEADER_SIZE];
	const char *why = NULL;
	int fd;

	if (MakePGDirectory(dir) < 0 && errno != EEXIST)
		why = "the sidecar directory cannot be created";
	else
	{
		(void) unlink(tmp); /* left by a crash */
		fd = OpenTransientFilePerm(tmp, O_CREAT | O_EXCL | O_WRONLY | PG_BINARY, S_IRUSR | S_IWUSR);
		if (fd < 0)
			why = "a new sidecar file cannot be created";
		else
		{
			fill_header(index, meta->dims, meta->build_id, header);
			if (pg_pwrite(fd, header, VIDX_SIDECAR_HEADER_SIZE, 0) != VIDX_SIDECAR_HEADER_SIZE ||
			    pg_fsync(fd) != 0)
				why = "a new sidecar file cannot be written";
			if (CloseTransientFile(fd) != 0 && why == NULL)
				why = "a new sidecar file cannot be written";
			if (why == NULL && rename(tmp, path) != 0)
				why = "the sidecar file cannot be replaced";
			if (why != NULL)
				(void) unlink(tmp);
			else
				(void) sync_sidecar_dir(LOG); /* in place; only durability is at stake */
		}
	}
	pfree(dir);
	pfree(tmp);
	pfree(path);
	return why;
}

/* ---------- appends by inserts ---------- */

void
vidx_sidecar_append(Relation index, const VidxMetaPageData *meta, uint64 slot, const float *v)
{
	char *path = vidx_sidecar_path(index);
	size_t record_size = vidx_sidecar_record_size(meta->dims);
	char *record;
	char header[VIDX_SIDECAR_HEADER_SIZE];
	char err[256];
	int fd;
	ssize_t n;

	vidx_sidecar_sweep_once();
	ensure_sidecar_dir();
	fd = OpenTransientFilePerm(path, O_CREAT | O_RDWR | PG_BINARY, S_IRUSR | S_IWUSR);
	if (fd < 0)
	{
		/* The sidecar only speeds scans up: a failure to write it is not an error. */
		vidx_sidecar_warn(index, "the sidecar file cannot be opened for writing");
		return;
	}

	n = pg_pread(fd, header, VIDX_SIDECAR_HEADER_SIZE, 0);
	if (n == 0)
	{
		/* Missing file (created just now): start a new one; earlier records stay absent. */
		fill_header(index, meta->dims, meta->build_id, header);
		if (pg_pwrite(fd, header, VIDX_SIDECAR_HEADER_SIZE, 0) != VIDX_SIDECAR_HEADER_SIZE)
		{
			CloseTransientFile(fd);
			vidx_sidecar_warn(index, "the sidecar file cannot be written");
			return;
		}
	}
	else if (n != VIDX_SIDECAR_HEADER_SIZE ||
	         vidx_sidecar_header_check((VidxSidecarHeader *) header, meta->dims,
	                                   index->rd_node.dbNode, RelationGetRelid(index),
	                                   index->rd_node.relNode, meta->build_id, err,
	                                   sizeof(err)) != VIDX_OK)
	{
		CloseTransientFile(fd);
		vidx_sidecar_warn(index, "the sidecar file belongs to another build of the index");
		return;
	}

	record = palloc(record_size);
	vidx_sidecar_record_fill(record, meta->dims, v);
	if (pg_pwrite(fd, record, record_size, VIDX_SIDECAR_HEADER_SIZE + slot * record_size) !=
	    (ssize_t) record_size)
		vidx_sidecar_warn(index, "the sidecar file cannot be written");
	CloseTransientFile(fd);
	pfree(record);
	pfree(path);
}

/* ---------- read-only mappings for scans ---------- */

#define VIDX_SIDECAR_MAPS 8

typedef struct SidecarMap
{
	bool used;
	Oid index_oid;
	RelFileNode node;
	uint64 build_id;
	int dims;
	bool checked; /* refresh_map ran since the entry was made */
	bool usable;  /* header checked and matches */
	char *base;   /* mmap'd file or NULL */
	size_t length;
	dev_t dev;
	ino_t ino;
	uint64 last_used;
} SidecarMap;

static SidecarMap maps[VIDX_SIDECAR_MAPS];
static bool debug_sidecar_shrink = false; /* vidx.debug_sidecar_shrink */
static uint64 map_clock = 0;

typedef struct WarnedIndex
{
	Oid index_oid;
	RelFileNode node;
	bool full; /* the warning that the slots ran out (else: the sidecar is unusable) */
} WarnedIndex;

static WarnedIndex warned[64];
static int nwarned = 0;

/* Whether this backend has given the warning for the index; notes that it has. */
static bool
warned_before(Relation index, bool full)
{
	for (int i = 0; i < nwarned; i++)
		if (warned[i].index_oid == RelationGetRelid(index) &&
		    RelFileNodeEquals(warned[i].node, index->rd_node) && warned[i].full == full)
			return true;
	if (nwarned < lengthof(warned))
	{
		warned[nwarned].index_oid = RelationGetRelid(index);
		warned[nwarned].node = index->rd_node;
		warned[nwarned].full = full;
		nwarned++;
	}
	return false;
}

static char *
qualified_name(Relation index)
{
	return quote_qualified_identifier(get_namespace_name(RelationGetNamespace(index)),
	                                  RelationGetRelationName(index));
}

void
vidx_sidecar_warn(Relation index, const char *why)
{
	if (warned_before(index, false))
		return;
	ereport(WARNING,
	        (errcode(ERRCODE_WARNING),
	         errmsg("vidx index \"%s\" cannot use its sidecar: %s", RelationGetRelationName(index),
	                why),
	         errdetail("Query results are unaffected: full vectors are read from the table "
	                   "instead, which is slower."),
	         errhint("Rebuild the sidecar with: REINDEX INDEX %s;", qualified_name(index))));
}

void
vidx_sidecar_warn_full(Relation index)
{
	if (warned_before(index, true))
		return;
	ereport(WARNING,
	        (errcode(ERRCODE_WARNING),
	         errmsg("vidx index \"%s\" has used all %u sidecar slots: new entries get no "
	                "sidecar record",
	                RelationGetRelationName(index), VIDX_SLOT_NONE),
	         errdetail("Query results are unaffected: their full vectors are read from the "
	                   "table instead, which is slower. Every inserted or non-HOT-updated row "
	                   "takes a slot; VACUUM frees the slots of deleted rows for reuse."),
	         errhint("REINDEX INDEX %s; compacts the sidecar.", qualified_name(index))));
}

static void
unmap(SidecarMap *m)
{
	if (m->base != NULL)
		munmap(m->base, m->length);
	m->base = NULL;
	m->length = 0;
	m->usable = false;
}

static SidecarMap *
find_map(Relation index, const VidxMetaPageData *meta)
{
	SidecarMap *victim = NULL;

	for (int i = 0; i < VIDX_SIDECAR_MAPS; i++)
	{
		SidecarMap *m = &maps[i];

		if (m->used && m->index_oid == RelationGetRelid(index) &&
		    RelFileNodeEquals(m->node, index->rd_node) && m->build_id == meta->build_id &&
		    m->dims == (int) meta->dims)
		{
			m->last_used = ++map_clock;
			return m;
		}
		if (victim == NULL || !m->used || (victim->used && m->last_used < victim->last_used))
			victim = m;
	}
	unmap(victim);
	victim->used = true;
	victim->index_oid = RelationGetRelid(index);
	victim->node = index->rd_node;
	victim->build_id = meta->build_id;
	victim->dims = meta->dims;
	victim->checked = false;
	victim->dev = 0;
	victim->ino = 0;
	victim->last_used = ++map_clock;
	return victim;
}

/*
 * (Re)maps the sidecar if the file changed since it was mapped (grown by
 * inserts, truncated, deleted, replaced). Returns a reason it cannot be used,
 * or NULL.
 */
static const char *
refresh_map(Relation index, const VidxMetaPageData *meta, SidecarMap *m, bool grow)
{
	char *path = vidx_sidecar_path(index);
	struct stat st;
	int fd;
	char err[256];
	VidxSidecarHeader header;

	m->checked = true;
	if (stat(path, &st) != 0)
	{
		unmap(m);
		pfree(path);
		return "the sidecar file is missing";
	}
	/*
	 * Same file, not shorter: the mapping stays valid. Inserts grow the file
	 * all the time; remapping it for each would cost every scan its page
	 * faults again, so grow the mapping only when a record beyond it is needed.
	 */
	if (m->base != NULL && st.st_dev == m->dev && st.st_ino == m->ino &&
	    ((size_t) st.st_size == m->length || ((size_t) st.st_size > m->length && !grow)))
	{
		pfree(path);
		return m->usable ? NULL : "the sidecar file has a bad header";
	}

	unmap(m);
	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0)
	{
		pfree(path);
		return "the sidecar file cannot be opened";
	}
	/*
	 * The size, identity and header of the file opened (it may have been
	 * replaced since the stat). The header is read with pread, not from the
	 * mapping: the file may shrink at any moment, and a read of the mapping
	 * outside a guarded section would die of SIGBUS.
	 */
	if (fstat(fd, &st) != 0)
	{
		CloseTransientFile(fd);
		pfree(path);
		return "the sidecar file cannot be read";
	}
	if (debug_sidecar_shrink && truncate(path, 0) != 0)
		elog(ERROR, "vidx: could not truncate \"%s\" (vidx.debug_sidecar_shrink): %m", path);
	pfree(path);
	if ((size_t) st.st_size < VIDX_SIDECAR_HEADER_SIZE ||
	    pg_pread(fd, &header, sizeof(header), 0) != sizeof(header))
	{
		CloseTransientFile(fd);
		return "the sidecar file is truncated";
	}
	m->dev = st.st_dev;
	m->ino = st.st_ino;
	m->base = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	CloseTransientFile(fd);
	if (m->base == MAP_FAILED)
	{
		m->base = NULL;
		return "the sidecar file cannot be mapped";
	}
	m->length = st.st_size;
	/*
	 * Records are read one by one, in no order: without this, a page fault
	 * on a file that is not cached reads 128 kB around the record.
	 */
	(void) madvise(m->base, m->length, MADV_RANDOM);
	m->usable = vidx_sidecar_header_check(&header, meta->dims, index->rd_node.dbNode,
	                                      RelationGetRelid(index), index->rd_node.relNode,
	                                      meta->build_id, err, sizeof(err)) == VIDX_OK;
	return m->usable ? NULL : "the sidecar file has a bad header";
}

/* The mapping for an index, (re)mapped if it was not mapped yet. */
static SidecarMap *
lookup_map(Relation index, const VidxMetaPageData *meta, const char **why)
{
	SidecarMap *m = find_map(index, meta);

	*why = NULL;
	if (!m->checked)
		*why = refresh_map(index, meta, m, false);
	else if (!m->usable)
		*why = "the sidecar file has a bad header";
	return m;
}

void
vidx_sidecar_refresh(Relation index, const VidxMetaPageData *meta)
{
	const char *why;

	vidx_sidecar_sweep_once();
	why = refresh_map(index, meta, find_map(index, meta), false);

	if (why != NULL)
		vidx_sidecar_warn(index, why);
}

/*
 * A sidecar truncated under a live mapping raises SIGBUS on access. Reads of
 * the mapping happen only inside guarded sections: the handler jumps back to
 * the guard, which treats the record as missing and stops using the file.
 * Inside a section only pure core math runs (hash, distance): nothing that
 * holds a lock or memory, so jumping out of it is safe.
 */
static sigjmp_buf sidecar_jump;
static volatile sig_atomic_t sidecar_guarded = 0;
static struct sigaction previous_sigbus;

static void
sigbus_handler(int signo, siginfo_t *info, void *context)
{
	if (sidecar_guarded)
	{
		sidecar_guarded = 0;
		siglongjmp(sidecar_jump, 1);
	}
	/* Not ours: hand over to whatever was there (default: terminate). */
	if ((previous_sigbus.sa_flags & SA_SIGINFO) && previous_sigbus.sa_sigaction != NULL)
		previous_sigbus.sa_sigaction(signo, info, context);
	else if (previous_sigbus.sa_handler != SIG_DFL && previous_sigbus.sa_handler != SIG_IGN)
		previous_sigbus.sa_handler(signo);
	else
	{
		sigaction(SIGBUS, &previous_sigbus, NULL);
		raise(SIGBUS);
	}
}

static void
install_sigbus_handler(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = sigbus_handler;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, &previous_sigbus);
}

/*
 * Checks the posting's sidecar record and, with a query, computes the exact
 * distance from it. False if the record is missing, short, stale or bad.
 */
static bool
sidecar_record(Relation index, const VidxMetaPageData *meta, uint32 slot, uint32 vhash,
               const float *query, double *distance)
{
	const char *why;
	SidecarMap *m;
	size_t record_size;
	size_t offset;
	const float *v;

	if (slot == VIDX_SLOT_NONE)
		return false; /* stored without a record (the slots ran out): no warning */
	m = lookup_map(index, meta, &why);
	if (!m->usable)
		return false;
	record_size = vidx_sidecar_record_size(meta->dims);
	offset = VIDX_SIDECAR_HEADER_SIZE + (size_t) slot * record_size;
	if (offset + record_size > m->length)
	{
		/* Grown since mapped? Remap; a slot beyond the end stays missing. */
		if (refresh_map(index, meta, m, true) != NULL || offset + record_size > m->length)
		{
			vidx_sidecar_warn(index, "the sidecar file is shorter than the index");
			return false;
		}
	}

	if (sigsetjmp(sidecar_jump, 0) != 0)
	{
		/* The file shrank under the mapping. */
		unmap(m);
		vidx_sidecar_warn(index, "the sidecar file was truncated while in use");
		return false;
	}
	sidecar_guarded = 1;
	v = vidx_sidecar_record_vector(m->base + offset, meta->dims, vhash);
	if (v != NULL && query != NULL)
		*distance = vidx_distance((VidxMetric) meta->metric, v, query, meta->dims);
	sidecar_guarded = 0;

	if (v == NULL)
		vidx_sidecar_warn(index, "a sidecar record does not match the index");
	return v != NULL;
}

bool
vidx_sidecar_distance(Relation index, const VidxMetaPageData *meta, uint32 slot, uint32 vhash,
                      const float *query, double *distance)
{
	return sidecar_record(index, meta, slot, vhash, query, distance);
}

/*
 * Reads the vectors of n postings from their sidecar records into out (n x
 * dims) with pread: a leaf split reads a few hundred records, and remapping
 * a file that inserts keep growing would cost more than that. found[i] is
 * false where the record is missing or not valid for its posting. With out
 * NULL, only checks the records (VACUUM, before it frees their slots).
 */
void
vidx_sidecar_read_vectors(Relation index, const VidxMetaPageData *meta,
                          const VidxPosting *const *postings, int n, float *out, bool *found)
{
	char *path = vidx_sidecar_path(index);
	size_t record_size = vidx_sidecar_record_size(meta->dims);
	char header[VIDX_SIDECAR_HEADER_SIZE];
	char err[256];
	char *rec;
	int fd;

	memset(found, 0, sizeof(bool) * n);
	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	pfree(path);
	if (fd < 0)
		return;
	if (pg_pread(fd, header, VIDX_SIDECAR_HEADER_SIZE, 0) != VIDX_SIDECAR_HEADER_SIZE ||
	    vidx_sidecar_header_check((const VidxSidecarHeader *) header, meta->dims,
	                              index->rd_node.dbNode, RelationGetRelid(index),
	                              index->rd_node.relNode, meta->build_id, err,
	                              sizeof(err)) != VIDX_OK)
	{
		CloseTransientFile(fd);
		return;
	}
	rec = palloc(record_size);
	for (int i = 0; i < n; i++)
	{
		const VidxPosting *p = postings[i];
		const float *v;

		if (p->slot == VIDX_SLOT_NONE ||
		    pg_pread(fd, rec, record_size,
		             VIDX_SIDECAR_HEADER_SIZE + (off_t) p->slot * record_size) !=
		        (ssize_t) record_size)
			continue;
		v = vidx_sidecar_record_vector(rec, meta->dims, p->vhash);
		if (v != NULL)
		{
			if (out != NULL)
				memcpy(out + (Size) i * meta->dims, v, sizeof(float) * meta->dims);
			found[i] = true;
		}
	}
	pfree(rec);
	CloseTransientFile(fd);
}

/* A value from a "key value" file (/proc/meminfo, memory.stat), or -1. */
static int64
stat_value(const char *path, const char *key)
{
	FILE *f = AllocateFile(path, "r");
	char line[256];
	size_t keylen = strlen(key);
	int64 value = -1;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, key, keylen) == 0 && (line[keylen] == ' ' || line[keylen] == ':'))
		{
			value = strtoll(line + keylen + 1 + strspn(line + keylen + 1, " :"), NULL, 10);
			break;
		}
	FreeFile(f);
	return value;
}

/* The number a file starts with (0 for "max"), or -1. */
static int64
file_number(const char *path)
{
	FILE *f = AllocateFile(path, "r");
	char line[64];
	int64 value = -1;

	if (f == NULL)
		return -1;
	if (fgets(line, sizeof(line), f) != NULL)
		value = strtoll(line, NULL, 10);
	FreeFile(f);
	return value;
}

/* The memory limit of this process's cgroup (v1 or v2) and what it cannot reclaim, or false. */
static bool
cgroup_memory(int64 *limit, int64 *unreclaimable)
{
	FILE *f = AllocateFile("/proc/self/cgroup", "r");
	char line[1024];
	char path[MAXPGPATH];
	bool found = false;

	if (f == NULL)
		return false;
	while (!found && fgets(line, sizeof(line), f) != NULL)
	{
		char *group = strchr(line, '/');

		if (group == NULL)
			continue;
		group[strcspn(group, "\n")] = '\0';
		if (strstr(line, ":memory:") != NULL)
		{
			/* cgroup v1 */
			snprintf(path, sizeof(path), "/sys/fs/cgroup/memory%s/memory.limit_in_bytes", group);
			*limit = file_number(path);
			snprintf(path, sizeof(path), "/sys/fs/cgroup/memory%s/memory.stat", group);
			*unreclaimable =
			    Max(0, stat_value(path, "total_rss")) + Max(0, stat_value(path, "total_shmem"));
			found = true;
		}
		else if (strncmp(line, "0::", 3) == 0)
		{
			/* cgroup v2 */
			snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", group);
			*limit = file_number(path);
			snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.stat", group);
			*unreclaimable = Max(0, stat_value(path, "anon")) + Max(0, stat_value(path, "shmem"));
			found = true;
		}
	}
	FreeFile(f);
	/* no limit: "max" (v2, read as 0) or a huge number (v1) */
	return found && *limit > 0 && *limit < ((int64) 1 << 50);
}

/*
 * Bytes of page cache a prewarm may fill: three quarters of what the kernel
 * says is available and, inside a memory cgroup, of the group's limit less
 * what it cannot reclaim (process memory, shared buffers), so that warming a
 * sidecar larger than memory neither evicts what queries need nor pushes the
 * group into reclaim.
 */
static int64
page_cache_budget(void)
{
	int64 available = stat_value("/proc/meminfo", "MemAvailable");
	int64 limit;
	int64 unreclaimable;
	int64 budget = available > 0 ? available * 1024 / 4 * 3 : INT64_MAX; /* meminfo is in kB */

	if (cgroup_memory(&limit, &unreclaimable))
		budget = Min(budget, Max(0, limit - unreclaimable) / 4 * 3);
	return budget;
}

/*
 * Brings the sidecar into the kernel's page cache and maps it into this
 * backend with its page table filled in, so that the first queries of this
 * session take no page fault per record (MADV_POPULATE_READ, Linux 5.14;
 * elsewhere the file is read). Only as much as fits (page_cache_budget),
 * from the start. Returns the bytes brought in; 0 if the sidecar is missing
 * or unusable.
 */
int64
vidx_sidecar_prewarm(Relation index, const VidxMetaPageData *meta)
{
	const char *why;
	SidecarMap *m = lookup_map(index, meta, &why);
	const size_t step = 64 * 1024 * 1024;
	size_t length;
	size_t done = 0;
	char *path;
	char *chunk;
	int fd;

	if (!m->usable || m->base == NULL)
		return 0;
	length = Min(m->length, (size_t) page_cache_budget());
#ifdef MADV_POPULATE_READ
	/* read ahead in large blocks while populating; the mapping is MADV_RANDOM otherwise */
	(void) madvise(m->base, length, MADV_SEQUENTIAL);
	while (done < length)
	{
		size_t n = Min(step, length - done);

		if (madvise(m->base + done, n, MADV_POPULATE_READ) != 0)
			break;
		done += n;
		CHECK_FOR_INTERRUPTS();
	}
	(void) madvise(m->base, m->length, MADV_RANDOM);
	if (done == length)
		return (int64) done;
#endif
	path = vidx_sidecar_path(index);
	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	pfree(path);
	if (fd < 0)
		return (int64) done;
	chunk = palloc(1024 * 1024);
	while (done < length)
	{
		ssize_t n = pg_pread(fd, chunk, Min(1024 * 1024, length - done), done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		done += n;
		CHECK_FOR_INTERRUPTS();
	}
	CloseTransientFile(fd);
	pfree(chunk);
	return (int64) done;
}

/*
 * Hints the CPU to fetch a record that is about to be read. Only touches an
 * existing mapping (a prefetch never faults), so it needs no guard.
 */
void
vidx_sidecar_prefetch(Relation index, const VidxMetaPageData *meta, uint32 slot)
{
	const char *why;
	SidecarMap *m;
	size_t record_size = vidx_sidecar_record_size(meta->dims);
	size_t offset = VIDX_SIDECAR_HEADER_SIZE + (size_t) slot * record_size;

	if (slot == VIDX_SLOT_NONE)
		return;
	m = lookup_map(index, meta, &why);
	if (!m->usable || offset + record_size > m->length)
		return;
	for (size_t o = 0; o < record_size; o += 64)
		__builtin_prefetch(m->base + offset + o, 0, 1);
}

/*
 * The page-aligned range of the mapping that holds a slot's record, or false
 * (no record, sidecar unusable, or beyond the mapping). A 1024-d record is
 * one 4 kB page (format 2).
 */
static bool
record_pages(Relation index, const VidxMetaPageData *meta, uint32 slot, char **start, size_t *len)
{
	static size_t page = 0;
	const char *why;
	SidecarMap *m;
	size_t record_size = vidx_sidecar_record_size(meta->dims);
	size_t offset = VIDX_SIDECAR_HEADER_SIZE + (size_t) slot * record_size;
	size_t first;

	if (slot == VIDX_SLOT_NONE)
		return false;
	m = lookup_map(index, meta, &why);
	if (!m->usable || offset + record_size > m->length)
		return false;
	if (page == 0)
		page = (size_t) sysconf(_SC_PAGESIZE);
	first = offset & ~(page - 1);
	*start = m->base + first;
	*len = offset + record_size - first;
	return true;
}

/*
 * Whether a record's first page is in the page cache (mincore: no fault, no
 * read). A scan asks for its first records; one that is not tells it the
 * sidecar does not fit in memory, and it switches to reading ahead
 * (vidx_sidecar_willneed).
 */
bool
vidx_sidecar_resident(Relation index, const VidxMetaPageData *meta, uint32 slot)
{
	char *start;
	size_t len;
	unsigned char first_page = 1;

	if (!record_pages(index, meta, slot, &start, &len) || mincore(start, 1, &first_page) != 0)
		return true;
	return (first_page & 1) != 0;
}

/*
 * Starts reading a record from disk without waiting (MADV_WILLNEED on its
 * pages: the kernel queues the reads and returns), so that the reads of the
 * records a scan will re-score next run in parallel instead of one page
 * fault after another. A no-op for pages already cached.
 */
void
vidx_sidecar_willneed(Relation index, const VidxMetaPageData *meta, uint32 slot)
{
	char *start;
	size_t len;

	if (record_pages(index, meta, slot, &start, &len))
		(void) madvise(start, len, MADV_WILLNEED);
}

bool
vidx_sidecar_check(Relation index, const VidxMetaPageData *meta, const VidxPosting *p)
{
	return sidecar_record(index, meta, p->slot, p->vhash, NULL, NULL);
}

const char *
vidx_sidecar_state(Relation index, const VidxMetaPageData *meta, uint64 *records)
{
	SidecarMap *m = find_map(index, meta);
	const char *why = refresh_map(index, meta, m, true);

	*records = 0;
	if (m->base != NULL && m->length >= VIDX_SIDECAR_HEADER_SIZE)
		*records = (m->length - VIDX_SIDECAR_HEADER_SIZE) / vidx_sidecar_record_size(meta->dims);
	return why;
}

void
vidx_sidecar_init(void)
{
	install_sigbus_handler();
	DefineCustomBoolVariable(
	    "vidx.debug_sidecar_shrink", "Fault injection for vidx's tests: do not use",
	    "The next (re)mapping of a sidecar in this session truncates the file to 0 bytes between "
	    "reading its size and reading its header (test/t/17_sidecar_shrink.sql).",
	    &debug_sidecar_shrink, false, PGC_SUSET, GUC_NOT_IN_SAMPLE, NULL, NULL, NULL);
}
