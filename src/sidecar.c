/*
 * sidecar.c: the file of full-precision vectors beside a vidx index.
 *
 * The sidecar is an accelerator, never the source of truth: each record is
 * checked against the posting that points at it (heap TID and vector hash, both
 * in WAL-logged index pages) before use, and anything missing, short, stale or
 * bad makes the scan take the vector from the table instead. It lives in
 * $PGDATA/vidx/, named only from OIDs: <tablespace>_<database>_<relfilenode>.vsc,
 * so REINDEX, TRUNCATE and VACUUM FULL (new relfilenode) get a new file and an
 * aborted rebuild leaves the old one intact. It is not WAL-logged and not
 * fsync'd: a standby, a restored backup or an OS crash simply lack it.
 */
#include "vidx.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/xact.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_class.h"
#include "commands/defrem.h"
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
	    build_writer.path, O_CREAT | O_TRUNC | O_WRONLY | PG_BINARY, S_IRUSR | S_IWUSR);
	if (build_writer.fd < 0)
		ereport(ERROR, (errcode_for_file_access(),
		                errmsg("could not create vidx sidecar \"%s\": %m", build_writer.path)));
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

void
vidx_sidecar_build_end(void)
{
	build_flush();
	if (CloseTransientFile(build_writer.fd) != 0)
		ereport(ERROR, (errcode_for_file_access(),
		                errmsg("could not close vidx sidecar \"%s\": %m", build_writer.path)));
	build_writer.fd = -1;
	pfree(build_writer.buffer);
	build_writer.buffer = NULL;
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
} WarnedIndex;

static WarnedIndex warned[64];
static int nwarned = 0;

void
vidx_sidecar_warn(Relation index, const char *why)
{
	for (int i = 0; i < nwarned; i++)
		if (warned[i].index_oid == RelationGetRelid(index) &&
		    RelFileNodeEquals(warned[i].node, index->rd_node))
			return;
	if (nwarned < lengthof(warned))
	{
		warned[nwarned].index_oid = RelationGetRelid(index);
		warned[nwarned].node = index->rd_node;
		nwarned++;
	}
	ereport(WARNING,
	        (errcode(ERRCODE_WARNING),
	         errmsg("vidx index \"%s\" cannot use its sidecar: %s", RelationGetRelationName(index),
	                why),
	         errdetail("Query results are unaffected: full vectors are read from the table "
	                   "instead, which is slower."),
	         errhint("Rebuild the sidecar with: REINDEX INDEX %s;",
	                 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(index)),
	                                            RelationGetRelationName(index)))));
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
	const char *why = NULL;

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
	m->dev = st.st_dev;
	m->ino = st.st_ino;
	if ((size_t) st.st_size < VIDX_SIDECAR_HEADER_SIZE)
	{
		pfree(path);
		return "the sidecar file is truncated";
	}

	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0)
	{
		pfree(path);
		return "the sidecar file cannot be opened";
	}
	m->base = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	CloseTransientFile(fd);
	pfree(path);
	if (m->base == MAP_FAILED)
	{
		m->base = NULL;
		return "the sidecar file cannot be mapped";
	}
	m->length = st.st_size;
	if (vidx_sidecar_header_check((const VidxSidecarHeader *) m->base, meta->dims,
	                              index->rd_node.dbNode, RelationGetRelid(index),
	                              index->rd_node.relNode, meta->build_id, err,
	                              sizeof(err)) != VIDX_OK)
		why = "the sidecar file has a bad header";
	m->usable = (why == NULL);
	return why;
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
	const char *why = refresh_map(index, meta, find_map(index, meta), false);

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
sidecar_record(Relation index, const VidxMetaPageData *meta, const VidxPosting *p,
               const float *query, double *distance)
{
	const char *why;
	SidecarMap *m = lookup_map(index, meta, &why);
	size_t record_size;
	size_t offset;
	const float *v;

	if (!m->usable)
		return false;
	record_size = vidx_sidecar_record_size(meta->dims);
	offset = VIDX_SIDECAR_HEADER_SIZE + (size_t) p->slot * record_size;
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
	v = vidx_sidecar_record_vector(m->base + offset, meta->dims, p->heap_block, p->heap_offset,
	                               p->vhash);
	if (v != NULL && query != NULL)
		*distance = vidx_distance((VidxMetric) meta->metric, v, query, meta->dims);
	sidecar_guarded = 0;

	if (v == NULL)
		vidx_sidecar_warn(index, "a sidecar record does not match the index");
	return v != NULL;
}

bool
vidx_sidecar_distance(Relation index, const VidxMetaPageData *meta, const VidxPosting *p,
                      const float *query, double *distance)
{
	return sidecar_record(index, meta, p, query, distance);
}

bool
vidx_sidecar_check(Relation index, const VidxMetaPageData *meta, const VidxPosting *p)
{
	return sidecar_record(index, meta, p, NULL, NULL);
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
 * Files to unlink when the transaction that made them obsolete commits (a
 * DROP, or a rebuild under a new relfilenode); forgotten if it aborts. Each
 * entry remembers the subtransaction level that scheduled it.
 */
typedef struct PendingUnlink
{
	char *path;
	int nest_level;
	struct PendingUnlink *next;
} PendingUnlink;

static PendingUnlink *pending_unlinks = NULL;

static void
schedule_unlink(const char *path)
{
	PendingUnlink *p = MemoryContextAlloc(TopMemoryContext, sizeof(PendingUnlink));

	p->path = MemoryContextStrdup(TopMemoryContext, path);
	p->nest_level = GetCurrentTransactionNestLevel();
	p->next = pending_unlinks;
	pending_unlinks = p;
}

static void
xact_callback(XactEvent event, void *arg)
{
	bool commit = (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT);

	if (!commit && event != XACT_EVENT_ABORT && event != XACT_EVENT_PARALLEL_ABORT)
		return;
	while (pending_unlinks != NULL)
	{
		PendingUnlink *p = pending_unlinks;

		pending_unlinks = p->next;
		if (commit)
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

/* DROP INDEX, DROP TABLE, DROP SCHEMA ... CASCADE: the sidecar goes at commit. */
static void
object_access(ObjectAccessType access, Oid classId, Oid objectId, int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);

	if (access == OAT_DROP && classId == RelationRelationId && subId == 0)
	{
		HeapTuple tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(objectId));

		if (HeapTupleIsValid(tuple))
		{
			Form_pg_class cls = (Form_pg_class) GETSTRUCT(tuple);

			if (cls->relkind == RELKIND_INDEX && cls->relam == get_index_am_oid("vidx", true) &&
			    OidIsValid(cls->relam))
				schedule_unlink(path_for_class(cls));
			ReleaseSysCache(tuple);
		}
	}
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

/*
 * Called by a build of index (under its new relfilenode): schedules the
 * sidecars of the index's earlier relfilenodes (REINDEX, TRUNCATE, VACUUM
 * FULL) for removal at commit, and removes right away the sidecars of this
 * database whose index no longer exists (dropped in a session that had not
 * loaded vidx). A file whose index may be being created by another
 * transaction is left alone: that transaction holds a lock on the index.
 */
void
vidx_sidecar_sweep(Relation index)
{
	char *dir = psprintf("%s/%s", DataDir, VIDX_SIDECAR_DIR);
	char *mine = vidx_sidecar_path(index);
	DIR *d = AllocateDir(dir);
	struct dirent *de;

	if (d == NULL)
		return;
	while ((de = ReadDir(d, dir)) != NULL)
	{
		unsigned int spc, db, rel;
		char tail[16];
		char *path;
		VidxSidecarHeader h;

		if (sscanf(de->d_name, "%u_%u_%u%15s", &spc, &db, &rel, tail) != 4 ||
		    strcmp(tail, ".vsc") != 0 || db != MyDatabaseId)
			continue;
		path = psprintf("%s/%s", dir, de->d_name);
		if (strcmp(path, mine) != 0 && read_header(path, &h))
		{
			Oid oid = h.index_oid;

			if (oid == RelationGetRelid(index))
				schedule_unlink(path);
			else if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(oid)) &&
			         ConditionalLockRelationOid(oid, AccessShareLock))
			{
				AcceptInvalidationMessages();
				if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(oid)))
					(void) unlink(path);
				UnlockRelationOid(oid, AccessShareLock);
			}
		}
		pfree(path);
	}
	FreeDir(d);
	pfree(dir);
	pfree(mine);
}
