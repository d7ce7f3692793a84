/*
 * sidecar.c: the file of full-precision vectors beside a vidx index.
 *
 * The sidecar is an accelerator, never the source of truth: each record is
 * checked against the posting that points at it (heap TID and vector hash, both
 * in WAL-logged index pages) before use, and anything missing, short, stale or
 * bad makes the scan take the vector from the table instead. It lives in
 * $PGDATA/vidx/, named only from OIDs: <tablespace>_<database>_<relfilenode>.vsc,
 * so REINDEX, TRUNCATE and VACUUM FULL (new relfilenode) get a new file and an
 * aborted rebuild leaves the old one intact. It is not WAL-logged: a standby
 * or a restored backup lack it. A build syncs the file it wrote once, at its
 * end; appends by inserts are not synced, so an OS crash can lose records.
 */
#include "vidx.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_class.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "common/file_perm.h"
#include "storage/lmgr.h"
#include "utils/inval.h"
#include "utils/syscache.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#define VIDX_SIDECAR_DIR "vidx"

static void schedule_unlink(const char *path, bool at_commit);
static void sweep_once(void);

char *
vidx_sidecar_path(Relation index)
{
	if (RelationUsesLocalBuffers(index))
		return psprintf("%s/%s/%u_%u_%u_t%d.vsc", DataDir, VIDX_SIDECAR_DIR, index->rd_node.spcNode,
		                index->rd_node.dbNode, index->rd_node.relNode, MyBackendId);
	return psprintf("%s/%s/%u_%u_%u.vsc", DataDir, VIDX_SIDECAR_DIR, index->rd_node.spcNode,
	                index->rd_node.dbNode, index->rd_node.relNode);
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
	schedule_unlink(build_writer.path, false);
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
vidx_sidecar_build_write(uint64 slot, ItemPointer tid, const float *v)
{
	Assert(build_writer.fd >= 0 && slot == build_writer.next_slot);
	if (build_writer.used + build_writer.record_size > BUILD_BUFFER_SIZE)
		build_flush();
	vidx_sidecar_record_fill(build_writer.buffer + build_writer.used, build_writer.dims,
	                         ItemPointerGetBlockNumber(tid), ItemPointerGetOffsetNumber(tid), v);
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
vidx_sidecar_append(Relation index, const VidxMetaPageData *meta, uint64 slot, ItemPointer tid,
                    const float *v)
{
	char *path = vidx_sidecar_path(index);
	size_t record_size = vidx_sidecar_record_size(meta->dims);
	char *record;
	char header[VIDX_SIDECAR_HEADER_SIZE];
	char err[256];
	int fd;
	ssize_t n;

	sweep_once();
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
	vidx_sidecar_record_fill(record, meta->dims, ItemPointerGetBlockNumber(tid),
	                         ItemPointerGetOffsetNumber(tid), v);
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
	pfree(path);
	if (fd < 0)
		return "the sidecar file cannot be opened";
	/*
	 * The size, identity and header of the file opened (it may have been
	 * replaced since the stat). The header is read with pread, not from the
	 * mapping: the file may shrink at any moment, and a read of the mapping
	 * outside a guarded section would die of SIGBUS.
	 */
	if (fstat(fd, &st) != 0 || (size_t) st.st_size < VIDX_SIDECAR_HEADER_SIZE ||
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

	sweep_once();
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
sidecar_record(Relation index, const VidxMetaPageData *meta, ItemPointer tid, uint32 slot,
               uint32 vhash, const float *query, double *distance)
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
	v = vidx_sidecar_record_vector(m->base + offset, meta->dims, ItemPointerGetBlockNumber(tid),
	                               ItemPointerGetOffsetNumber(tid), vhash);
	if (v != NULL && query != NULL)
		*distance = vidx_distance((VidxMetric) meta->metric, v, query, meta->dims);
	sidecar_guarded = 0;

	if (v == NULL)
		vidx_sidecar_warn(index, "a sidecar record does not match the index");
	return v != NULL;
}

bool
vidx_sidecar_distance(Relation index, const VidxMetaPageData *meta, ItemPointer tid, uint32 slot,
                      uint32 vhash, const float *query, double *distance)
{
	return sidecar_record(index, meta, tid, slot, vhash, query, distance);
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
		v = vidx_sidecar_record_vector(rec, meta->dims, p->heap_block, p->heap_offset, p->vhash);
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

/*
 * Brings the sidecar into the kernel's page cache and, in one pass, maps it
 * into this backend with its page table filled in, so that the first queries
 * of this session take no page fault per record (MADV_POPULATE_READ, Linux
 * 5.14). Where that is unavailable, reads the file sequentially instead.
 * Returns the bytes brought in; 0 if the sidecar is missing or unusable.
 */
int64
vidx_sidecar_prewarm(Relation index, const VidxMetaPageData *meta)
{
	const char *why;
	SidecarMap *m = lookup_map(index, meta, &why);
	char *path;
	char *chunk;
	int64 total = 0;
	int fd;

	if (!m->usable || m->base == NULL)
		return 0;
#ifdef MADV_POPULATE_READ
	if (madvise(m->base, m->length, MADV_POPULATE_READ) == 0)
		return (int64) m->length;
#endif
	path = vidx_sidecar_path(index);
	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	pfree(path);
	if (fd < 0)
		return 0;
	chunk = palloc(1024 * 1024);
	for (;;)
	{
		ssize_t n = read(fd, chunk, 1024 * 1024);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		total += n;
		CHECK_FOR_INTERRUPTS();
	}
	CloseTransientFile(fd);
	pfree(chunk);
	return total;
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

bool
vidx_sidecar_check(Relation index, const VidxMetaPageData *meta, const VidxPosting *p)
{
	ItemPointerData tid;

	ItemPointerSet(&tid, p->heap_block, p->heap_offset);
	return sidecar_record(index, meta, &tid, p->slot, p->vhash, NULL, NULL);
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

/* ---------- removal of sidecars that no index uses any more ---------- */

/*
 * Files to unlink when the transaction ends: at commit, those that the
 * transaction made obsolete (a DROP, or a rebuild under a new relfilenode);
 * at abort, those that it made (a build whose index or relfilenode goes with
 * the transaction). Each entry remembers the subtransaction level that
 * scheduled it.
 */
typedef struct PendingUnlink
{
	char *path;
	bool at_commit; /* unlink if the transaction commits (else: if it aborts) */
	int nest_level;
	struct PendingUnlink *next;
} PendingUnlink;

static PendingUnlink *pending_unlinks = NULL;

static void
schedule_unlink(const char *path, bool at_commit)
{
	PendingUnlink *p = MemoryContextAlloc(TopMemoryContext, sizeof(PendingUnlink));

	p->path = MemoryContextStrdup(TopMemoryContext, path);
	p->at_commit = at_commit;
	p->nest_level = GetCurrentTransactionNestLevel();
	p->next = pending_unlinks;
	pending_unlinks = p;
}

static void
xact_callback(XactEvent event, void *arg)
{
	bool commit = (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT);
	bool abort = (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT);

	/*
	 * A prepared transaction ends later, maybe in another session: forget its
	 * files (the sweep removes whichever ones end up unused).
	 */
	if (!commit && !abort && event != XACT_EVENT_PREPARE)
		return;
	while (pending_unlinks != NULL)
	{
		PendingUnlink *p = pending_unlinks;

		pending_unlinks = p->next;
		if ((commit && p->at_commit) || (abort && !p->at_commit))
			(void) unlink(p->path); /* gone already is fine */
		pfree(p->path);
		pfree(p);
	}
}

static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid, SubTransactionId parentSubid,
                 void *arg)
{
	int level = GetCurrentTransactionNestLevel();
	PendingUnlink **link = &pending_unlinks;

	while (*link != NULL)
	{
		PendingUnlink *p = *link;

		if (p->nest_level >= level)
		{
			if (event == SUBXACT_EVENT_ABORT_SUB)
			{
				if (!p->at_commit)
					(void) unlink(p->path);
				*link = p->next;
				pfree(p->path);
				pfree(p);
				continue;
			}
			if (event == SUBXACT_EVENT_COMMIT_SUB)
				p->nest_level = level - 1;
		}
		link = &p->next;
	}
}

/* The parts of a sidecar file name: <spc>_<db>_<relfilenode>.vsc or ..._t<backend>.vsc */
typedef struct SidecarName
{
	Oid spc;
	Oid db;
	Oid rel;
	bool temp;
} SidecarName;

static bool
parse_name(const char *name, SidecarName *n)
{
	unsigned int spc, db, rel;
	int backend;
	char tail[32];
	char rest[8];
	size_t len;

	if (sscanf(name, "%u_%u_%u%31s", &spc, &db, &rel, tail) != 4)
		return false;
	/* A ".tmp" file (vidx_sidecar_start) is swept like the file it would replace. */
	len = strlen(tail);
	if (len > 4 && strcmp(tail + len - 4, ".tmp") == 0)
		tail[len - 4] = '\0';
	n->spc = spc;
	n->db = db;
	n->rel = rel;
	n->temp = false;
	if (strcmp(tail, ".vsc") == 0)
		return true;
	n->temp = true;
	return sscanf(tail, "_t%d%7s", &backend, rest) == 2 && strcmp(rest, ".vsc") == 0;
}

/* Reads a sidecar header; false if the file is not a readable sidecar. */
static bool
read_header(const char *path, VidxSidecarHeader *h)
{
	int fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	bool ok;

	if (fd < 0)
		return false;
	ok = pg_pread(fd, h, sizeof(*h), 0) == sizeof(*h) && h->magic == VIDX_SIDECAR_MAGIC;
	CloseTransientFile(fd);
	return ok;
}

/* Whether this transaction holds any lock on the object. */
static bool
lock_held_by_me(const LOCKTAG *tag)
{
	for (LOCKMODE mode = 1; mode <= MaxLockMode; mode++)
		if (LockHeldByMe(tag, mode))
			return true;
	return false;
}

/*
 * A file of a database that no longer exists is removed, unless the database
 * is locked (being created or dropped right now): checked again under a
 * conditional lock on the database object, after reading invalidations.
 */
static bool
remove_if_database_gone(const char *path, Oid db)
{
	LOCKTAG tag;
	bool removed = false;

	if (SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(db)))
		return false;
	SET_LOCKTAG_OBJECT(tag, InvalidOid, DatabaseRelationId, db, 0);
	if (LockAcquire(&tag, AccessExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
		return false;
	AcceptInvalidationMessages();
	if (!SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(db)))
		removed = (unlink(path) == 0);
	LockRelease(&tag, AccessExclusiveLock, false);
	return removed;
}

/* Whether relid is a relation whose current storage is the file named n. */
static bool
index_file_live(Oid relid, const SidecarName *n)
{
	HeapTuple tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	bool live = false;

	if (HeapTupleIsValid(tuple))
	{
		Form_pg_class cls = (Form_pg_class) GETSTRUCT(tuple);
		Oid spc = OidIsValid(cls->reltablespace) ? cls->reltablespace : MyDatabaseTableSpace;

		live = cls->relfilenode == n->rel && spc == n->spc &&
		       (cls->relpersistence == RELPERSISTENCE_TEMP) == n->temp;
		ReleaseSysCache(tuple);
	}
	return live;
}

/*
 * A file of this database is removed if the index named in its header no
 * longer exists or no longer has the file's relfilenode (dropped, or rebuilt
 * by a REINDEX/TRUNCATE whose session had not loaded vidx, or a build that
 * crashed). An index that is being created or rebuilt is locked by the
 * transaction doing it (AccessExclusiveLock): such files are left alone, and
 * so are the indexes this transaction itself has locked (its own pending
 * unlinks deal with them).
 */
static bool
remove_if_index_gone(const char *path, Oid relid, const SidecarName *n)
{
	LOCKTAG tag;
	bool removed = false;

	if (index_file_live(relid, n))
		return false;
	SET_LOCKTAG_RELATION(tag, MyDatabaseId, relid);
	if (lock_held_by_me(&tag))
		return false;
	if (LockAcquire(&tag, AccessShareLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
		return false;
	AcceptInvalidationMessages();
	if (!index_file_live(relid, n))
		removed = (unlink(path) == 0);
	LockRelease(&tag, AccessShareLock, false);
	return removed;
}

/*
 * One pass over $PGDATA/vidx: removes the files of databases that no longer
 * exist, and the files of this database that no index uses any more. With an
 * index (called by its build), the files of that index's earlier relfilenodes
 * are scheduled for removal at commit instead. Files whose header cannot be
 * read are left alone (a build writes its header last). Directory errors are
 * reported at elevel. Returns the number of files removed.
 */
static int
sweep(Relation index, int elevel)
{
	char *dir = psprintf("%s/%s", DataDir, VIDX_SIDECAR_DIR);
	char *mine = index != NULL ? vidx_sidecar_path(index) : NULL;
	DIR *d = AllocateDir(dir);
	struct dirent *de;
	int removed = 0;

	if (d == NULL && errno == ENOENT)
		return 0; /* no sidecar was ever made */
	while ((de = ReadDirExtended(d, dir, elevel)) != NULL)
	{
		SidecarName n;
		char *path;
		VidxSidecarHeader h;

		if (!parse_name(de->d_name, &n))
			continue;
		path = psprintf("%s/%s", dir, de->d_name);
		if (n.db != MyDatabaseId)
		{
			if (remove_if_database_gone(path, n.db))
				removed++;
		}
		else if (mine != NULL && strcmp(path, mine) == 0)
			;
		else if (read_header(path, &h))
		{
			if (index != NULL && h.index_oid == RelationGetRelid(index))
				schedule_unlink(path, true);
			else if (remove_if_index_gone(path, h.index_oid, &n))
				removed++;
		}
		pfree(path);
	}
	if (d != NULL)
		FreeDir(d);
	pfree(dir);
	if (mine != NULL)
		pfree(mine);
	return removed;
}

static bool swept_once = false;

/*
 * The first use of a sidecar in a backend (a scan or an insert) sweeps once:
 * this is what removes the files of a database dropped by a session that had
 * not loaded vidx. Nothing is swept during recovery (a standby) or in
 * parallel mode; errors reading the directory are only logged.
 */
static void
sweep_once(void)
{
	if (swept_once || RecoveryInProgress() || IsInParallelMode() || !IsTransactionState())
		return;
	swept_once = true;
	(void) sweep(NULL, LOG);
}

void
vidx_sidecar_sweep(Relation index)
{
	swept_once = true;
	(void) sweep(index, ERROR);
}

int
vidx_sidecar_sweep_all(void)
{
	if (RecoveryInProgress())
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
		                errmsg("vidx sidecar files cannot be swept during recovery")));
	swept_once = true;
	return sweep(NULL, ERROR);
}

/* Schedules every sidecar of a database for removal at commit. */
static void
schedule_database_files(Oid db)
{
	char *dir = psprintf("%s/%s", DataDir, VIDX_SIDECAR_DIR);
	DIR *d = AllocateDir(dir);
	struct dirent *de;

	if (d == NULL && errno == ENOENT)
		return;
	while ((de = ReadDir(d, dir)) != NULL)
	{
		SidecarName n;

		if (parse_name(de->d_name, &n) && n.db == db)
		{
			char *path = psprintf("%s/%s", dir, de->d_name);

			schedule_unlink(path, true);
			pfree(path);
		}
	}
	FreeDir(d);
	pfree(dir);
}

/* The sidecar path of a pg_class row of a vidx index. */
static char *
path_for_class(Form_pg_class cls)
{
	Oid spc = OidIsValid(cls->reltablespace) ? cls->reltablespace : MyDatabaseTableSpace;

	if (cls->relpersistence == RELPERSISTENCE_TEMP)
		return psprintf("%s/%s/%u_%u_%u_t%d.vsc", DataDir, VIDX_SIDECAR_DIR, spc, MyDatabaseId,
		                cls->relfilenode, MyBackendId);
	return psprintf("%s/%s/%u_%u_%u.vsc", DataDir, VIDX_SIDECAR_DIR, spc, MyDatabaseId,
	                cls->relfilenode);
}

static object_access_hook_type prev_object_access_hook = NULL;

/*
 * Drops whose files go at commit: a vidx index (DROP INDEX, TABLE, SCHEMA ...
 * CASCADE; the extension's event trigger loads vidx before any such command),
 * a database (DROP DATABASE in a session that has loaded vidx), and the vidx
 * extension itself (after which no vidx index is left in the database). The
 * drop hooks of one command all run before anything is deleted.
 */
static void
object_access(ObjectAccessType access, Oid classId, Oid objectId, int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);

	if (access != OAT_DROP || subId != 0)
		return;
	if (classId == RelationRelationId)
	{
		HeapTuple tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(objectId));

		if (HeapTupleIsValid(tuple))
		{
			Form_pg_class cls = (Form_pg_class) GETSTRUCT(tuple);

			if (cls->relkind == RELKIND_INDEX && cls->relam == get_index_am_oid("vidx", true) &&
			    OidIsValid(cls->relam))
				schedule_unlink(path_for_class(cls), true);
			ReleaseSysCache(tuple);
		}
	}
	else if (classId == DatabaseRelationId)
		schedule_database_files(objectId);
	else if (classId == ExtensionRelationId && objectId == get_extension_oid("vidx", true))
		schedule_database_files(MyDatabaseId);
}

void
vidx_sidecar_init(void)
{
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
	install_sigbus_handler();
	prev_object_access_hook = object_access_hook;
	object_access_hook = object_access;
}
