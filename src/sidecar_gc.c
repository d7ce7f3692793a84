/*
 * sidecar_gc.c: removal of sidecar files that no index uses any more.
 *
 * Files are removed, never truncated in place, by three mechanisms (see
 * src/README.md, "Sidecar file lifetime"): unlinks pending until the
 * transaction ends (at commit for files it made unused, at abort for files it
 * made), the drop hook (object_access_hook) that schedules them, and the sweep
 * over $PGDATA/vidx/. The file I/O itself is in sidecar.c.
 */
#include "vidx.h"

#include <fcntl.h>
#include <unistd.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_class.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/lmgr.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

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

void
vidx_sidecar_schedule_unlink(const char *path, bool at_commit)
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

/*
 * The parts of a sidecar file name, as vidx_sidecar_path_for spells it:
 * <spc>_<db>_<relfilenode>.vsc or ..._t<backend>.vsc
 */
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
 * read are left alone: a build writes the header first, but only with its
 * first buffer, so a file just created has none yet. Directory errors are
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
				vidx_sidecar_schedule_unlink(path, true);
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
void
vidx_sidecar_sweep_once(void)
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

			vidx_sidecar_schedule_unlink(path, true);
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

	return vidx_sidecar_path_for(spc, MyDatabaseId, cls->relfilenode,
	                             cls->relpersistence == RELPERSISTENCE_TEMP);
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
				vidx_sidecar_schedule_unlink(path_for_class(cls), true);
			ReleaseSysCache(tuple);
		}
	}
	else if (classId == DatabaseRelationId)
		schedule_database_files(objectId);
	else if (classId == ExtensionRelationId && objectId == get_extension_oid("vidx", true))
		schedule_database_files(MyDatabaseId);
}

void
vidx_sidecar_gc_init(void)
{
	RegisterXactCallback(xact_callback, NULL);
	RegisterSubXactCallback(subxact_callback, NULL);
	prev_object_access_hook = object_access_hook;
	object_access_hook = object_access;
}
