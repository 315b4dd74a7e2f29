/*-------------------------------------------------------------------------
 *
 * coalesce.c
 *	  Dedup within a transaction: row events merged per (watch, key), and
 *	  statement-level counts, both emitted at commit.
 *
 * A row's pending state is (existed before?, first old row, exists after?,
 * last new row).  A change composes onto it -- keep "before" and the first
 * old row, take "after" and the new row from the change -- and the event
 * is derived at commit:
 *
 *	before	after	event
 *	no		yes		INSERT with the last row		(INSERT...UPDATE)
 *	yes		yes		UPDATE first old -> last new	(UPDATE...UPDATE, DELETE...INSERT);
 *					nothing if no watched column differs
 *	yes		no		DELETE of the first old row		(UPDATE...DELETE)
 *	no		no		nothing							(INSERT...DELETE)
 *
 * Composition is associative, which is what makes savepoints simple: each
 * subtransaction level has its own map; at subcommit it is composed onto
 * its parent's, at subabort thrown away.  Events come out in the order of
 * each row's first change.
 *
 * Order.  The events of a transaction keep the order of the changes: while
 * anything is held, a change that is not coalesced (TRUNCATE, a table
 * without a key, dedup => false) is held too, as it is, in its place
 * (PENDING_EVENT).  A TRUNCATE is a barrier: it starts a new generation,
 * and a row changed after it is never merged with its state from before
 * (an INSERT merged across a TRUNCATE would be reported before it).
 *
 * Table versions.  Each held row keeps the Watch it was formed with (its
 * tuple descriptor, the columns of that version): DDL in the same
 * transaction (ALTER TABLE ... TYPE, DROP/ADD/RENAME COLUMN) may change the
 * table between two changes of a row.  An invalidated Watch stays alive
 * until the end of the transaction (watch_cache.c).  The event is built
 * with the Watch of the row's last change (names, columns, key), and each
 * row is read with its own descriptor, columns matched by attribute
 * number (event_frame(), event.c).
 *
 * Memory is bounded by pg_notifier.max_coalesce_events, the number of row
 * states held in the transaction (all levels).  Past it, at the top level,
 * everything held is sent, in order, and the change goes out at once; then
 * holding starts again.  Inside a savepoint the outer levels' events cannot
 * be sent (a rollback to the savepoint would take them along): there the
 * change goes out at once, possibly before events held by outer levels.
 *
 * The append path.  Most changes are a row's first in the transaction: a
 * bulk INSERT, an UPDATE or DELETE of rows that existed before.  Such a
 * change needs no lookup -- nothing is held for its key -- so it is
 * appended to its level's list as it is, without a key (no JSON key built,
 * nothing hashed).  A change that may be a row's second is looked up: the
 * level's appended changes are first entered into its map, in order, as
 * the lookups would have entered them, and the change is then merged as
 * ever.  A change is a first when
 *
 *	- it is an UPDATE or DELETE of a row version that this transaction did
 *	  not make (its xmin is not ours): had the transaction changed the row
 *	  before, it would be changing its own version now;
 *	- it is an INSERT, and no DELETE has been held in the transaction: the
 *	  key is unique (the primary key, or the replica identity index, both
 *	  immediate), so an INSERT can only meet a held state of its key after
 *	  that row was deleted.
 *
 * Both rest on every change firing the trigger: a row deleted and inserted
 * again with the trigger not firing for the DELETE (session_replication_role
 * = replica, a disabled trigger) gives two INSERT events, not one.
 *
 * Statement level: one count per (watch, operation, generation), no row
 * kept at all.
 *
 * Events are emitted at XACT_EVENT_PRE_COMMIT, before PostgreSQL queues
 * the transaction's notifications (PreCommit_Notify), where an error still
 * aborts the transaction cleanly.  A transaction that holds events cannot
 * be prepared.
 *
 * Copyright (c) 2026, pg_notifier developers; PostgreSQL Licence (LICENSE)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heaptoast.h"
#include "access/htup_details.h"
#include "access/xact.h"
#include "common/hashfn.h"
#include "executor/tuptable.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "capture/coalesce.h"
#include "capture/emit.h"
#include "capture/outbox_writer.h"
#include "capture/routed_channels.h"
#include "common/payloads.h"
#include "pg_notifier.h"
#include "common/stats.h"

/* PendingKey.op besides a ChangeOp (statement level) */
#define PENDING_ROW		(-1)	/* a row's coalesced state */
#define PENDING_EVENT	(-2)	/* one change, held as it is to keep its place */

typedef struct PendingKey
{
	Oid			tgoid;			/* the watch */
	int			op;				/* a ChangeOp, PENDING_ROW or PENDING_EVENT */
	uint32		generation;		/* TRUNCATEs before the change */
	uint64		seq;			/* PENDING_EVENT: its order; else 0 */
	char	   *key;			/* PENDING_ROW: the event's ,"key":{...} */
} PendingKey;

typedef struct Pending
{
	PendingKey	k;				/* hash key, first */
	uint64		order;			/* first change's position in the xact */
	const Watch *watch;			/* of the last change: names, columns, key */
	TimestampTz ts;				/* statement time of the last change */
	ChangeOp	op;				/* PENDING_EVENT: the change */
	bool		existed;		/* row: the row existed before */
	bool		exists;			/* row: the row exists after */
	HeapTuple	oldtuple;		/* if existed: the row before the first change */
	const Watch *oldwatch;		/* the version oldtuple was formed with */
	HeapTuple	newtuple;		/* if exists: the row after the last change */
	const Watch *newwatch;		/* the version newtuple was formed with */
	int64		count;			/* statement level: rows affected */
} Pending;

/*
 * Appended changes are kept in chunks of this many; the first chunk starts
 * with room for APPEND_FIRST and grows (a transaction of a few rows does
 * not allocate for a thousand).
 */
#define APPEND_CHUNK 1024
#define APPEND_FIRST 8

/* what one subtransaction level holds */
typedef struct Level
{
	HTAB	   *map;			/* keyed states; NULL until needed */
	Pending   **chunks;			/* appended changes, in order (see above) */
	int			nchunks;		/* allocated length of chunks */
	int			first_room;		/* allocated length of chunks[0] */
	int64		nappended;		/* appended changes */
	int64		nindexed;		/* the first nindexed of them are in map */
} Level;

/* the state of the current transaction; everything in coalesce_cxt */
static MemoryContext coalesce_cxt = NULL;
static Level *levels = NULL;	/* by transaction nest level, from 1 */
static int	nlevels = 0;		/* allocated length of levels */
static bool deletes_held = false;	/* a DELETE went through coalesce_change */
static int	held = 0;			/* row states held, all levels */
static uint64 next_order = 0;
static uint32 generation = 0;	/* TRUNCATEs seen in the transaction */
static bool flushed = false;	/* the events went out; emit late ones at once */
static bool outbox_locked = false;	/* by lock_commit_tables() */
static bool payloads_locked = false;
static bool callbacks_registered = false;

static uint32
pending_hash(const void *key, Size keysize)
{
	const PendingKey *k = key;
	uint32		h = hash_bytes_uint32(k->tgoid) ^ (uint32) k->op;

	h = hash_combine(h, hash_bytes_uint32(k->generation));
	h = hash_combine(h, hash_bytes_uint32((uint32) k->seq));

	if (k->key)
		h = hash_combine(h, hash_bytes((const unsigned char *) k->key, strlen(k->key)));
	return h;
}

static int
pending_match(const void *key1, const void *key2, Size keysize)
{
	const PendingKey *a = key1;
	const PendingKey *b = key2;

	if (a->tgoid != b->tgoid || a->op != b->op ||
		a->generation != b->generation || a->seq != b->seq)
		return 1;
	if (a->key == NULL || b->key == NULL)
		return a->key != b->key;
	return strcmp(a->key, b->key);
}

static void coalesce_xact_callback(XactEvent event, void *arg);
static void coalesce_subxact_callback(SubXactEvent event,
									  SubTransactionId mySubid,
									  SubTransactionId parentSubid, void *arg);

static bool
level_empty(Level *l)
{
	return (l->map == NULL || hash_get_num_entries(l->map) == 0) &&
		l->nappended == l->nindexed;
}

/* the i-th appended change of a level */
static inline Pending *
appended(Level *l, int64 i)
{
	return &l->chunks[i / APPEND_CHUNK][i % APPEND_CHUNK];
}

/* the map of a level, created on first use */
static HTAB *
level_map(Level *l)
{
	if (l->map == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(PendingKey);
		ctl.entrysize = sizeof(Pending);
		ctl.hash = pending_hash;
		ctl.match = pending_match;
		ctl.hcxt = coalesce_cxt;
		l->map = hash_create("pg_notifier pending events", 256, &ctl,
							 HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
	}
	return l->map;
}

/* room for one more appended change; returns it, uninitialised */
static Pending *
append_slot(Level *l)
{
	int			chunk = l->nappended / APPEND_CHUNK;

	if (chunk >= l->nchunks)
	{
		int			newlen = Max(l->nchunks * 2, 8);

		if (l->chunks == NULL)
			l->chunks = MemoryContextAllocZero(coalesce_cxt, sizeof(Pending *) * newlen);
		else
		{
			l->chunks = repalloc(l->chunks, sizeof(Pending *) * newlen);
			memset(l->chunks + l->nchunks, 0, sizeof(Pending *) * (newlen - l->nchunks));
		}
		l->nchunks = newlen;
	}
	if (chunk == 0 && l->nappended == l->first_room)
	{
		/* the first chunk grows, up to APPEND_CHUNK */
		l->first_room = l->first_room == 0 ? APPEND_FIRST :
			Min(l->first_room * 4, APPEND_CHUNK);
		if (l->chunks[0] == NULL)
			l->chunks[0] = MemoryContextAlloc(coalesce_cxt, sizeof(Pending) * l->first_room);
		else
			l->chunks[0] = repalloc(l->chunks[0], sizeof(Pending) * l->first_room);
	}
	else if (l->chunks[chunk] == NULL)
		l->chunks[chunk] = MemoryContextAlloc(coalesce_cxt, sizeof(Pending) * APPEND_CHUNK);
	return appended(l, l->nappended++);
}

/* the current nest level, set up on first use */
static Level *
current_level(void)
{
	int			nest = GetCurrentTransactionNestLevel();

	if (!callbacks_registered)
	{
		RegisterXactCallback(coalesce_xact_callback, NULL);
		RegisterSubXactCallback(coalesce_subxact_callback, NULL);
		callbacks_registered = true;
	}
	if (coalesce_cxt == NULL)
		coalesce_cxt = AllocSetContextCreate(TopTransactionContext,
											 "pg_notifier coalesce",
											 ALLOCSET_DEFAULT_SIZES);
	if (nest >= nlevels)
	{
		int			newlen = Max(nest + 1, 8);

		if (levels == NULL)
			levels = MemoryContextAllocZero(coalesce_cxt, sizeof(Level) * newlen);
		else
		{
			levels = repalloc(levels, sizeof(Level) * newlen);
			memset(levels + nlevels, 0, sizeof(Level) * (newlen - nlevels));
		}
		nlevels = newlen;
	}
	return &levels[nest];
}

/*
 * A copy of the row to hold until commit, with out-of-line (TOAST) values
 * fetched in: by commit the transaction may itself have deleted them, and
 * no snapshot is active there.
 */
static HeapTuple
copy_row(TupleTableSlot *slot)
{
	HeapTuple	tuple;

	if (slot == NULL)
		return NULL;
	tuple = ExecCopySlotHeapTuple(slot);
	if (HeapTupleHasExternal(tuple))
	{
		HeapTuple	flat = toast_flatten_tuple(tuple, slot->tts_tupleDescriptor);

		heap_freetuple(tuple);
		tuple = flat;
	}
	return tuple;
}

/*
 * Lock now what the held events of w will write at commit.  DROP
 * EXTENSION locks the extension's tables, then the watched tables (to drop
 * their triggers); a transaction holding events has its watched table
 * locked and, were it to lock notifier.outbox (or notifier.payloads, or
 * read notifier.routes) only at commit, would take them in the opposite
 * order: a deadlock, which DROP EXTENSION would lose.  Locked when the
 * first event is held, they come in DROP's order, and DROP waits.
 */
static void
lock_commit_tables(const Watch *w)
{
	DeliveryMode delivery = w->opts.delivery;

	if (!outbox_locked && delivery != DELIVERY_NOTIFY)
	{
		/* 'auto': which channels are routed is read now, not at commit */
		if (delivery == DELIVERY_OUTBOX || channel_is_routed(w->opts.channel))
		{
			outbox_lock();
			outbox_locked = true;
		}
	}
	if (!payloads_locked && (delivery != DELIVERY_OUTBOX || w->opts.notify) &&
		(w->opts.on_oversize == OVERSIZE_REFERENCE || w->opts.on_oversize == OVERSIZE_KEYS))
	{
		payload_lock();
		payloads_locked = true;
	}
}

/* a new entry: everything but its key zeroed, the next place in order */
static void
pending_init(Pending *p, const Watch *w)
{
	lock_commit_tables(w);
	memset((char *) p + sizeof(PendingKey), 0, sizeof(Pending) - sizeof(PendingKey));
	p->order = next_order++;
	p->watch = w;
}

/*
 * Compose a later state (exists, newtuple formed with newwatch) onto p;
 * takes ownership of newtuple.
 */
static void
compose(Pending *p, bool exists, HeapTuple newtuple, const Watch *newwatch)
{
	if (p->newtuple)
		heap_freetuple(p->newtuple);
	p->exists = exists;
	p->newtuple = newtuple;
	p->newwatch = newtuple ? newwatch : NULL;
}

/* is any event held, at any level? */
static bool
anything_held(void)
{
	for (int i = 1; levels != NULL && i < nlevels; i++)
		if (!level_empty(&levels[i]))
			return true;
	return false;
}

static void emit_held(Level *l);
static void free_level(int nest);

/*
 * Past the cap: may the change go out now without overtaking a held
 * event?  At the top level, yes once everything held has been sent.
 */
static void
make_room(void)
{
	if (GetCurrentTransactionNestLevel() == 1 && levels != NULL &&
		nlevels > 1)
	{
		emit_held(&levels[1]);
		free_level(1);
	}
}

/*
 * A slot to read held rows of one table version with, made again only
 * when the version changes (in cxt, which outlives the rows read).
 */
typedef struct HeldSlot
{
	const Watch *version;
	TupleTableSlot *slot;
	MemoryContext cxt;
} HeldSlot;

/* a held row in a slot of the table version it was formed with */
static TupleTableSlot *
held_row_slot(HeldSlot *hs, HeapTuple tuple, const Watch *version)
{
	if (hs->version != version)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(hs->cxt);

		if (hs->slot != NULL)
			ExecDropSingleTupleTableSlot(hs->slot);
		hs->slot = MakeSingleTupleTableSlot(version->tupdesc, &TTSOpsHeapTuple);
		hs->version = version;
		MemoryContextSwitchTo(oldcxt);
	}
	ExecStoreHeapTuple(tuple, hs->slot, false);
	slot_getallattrs(hs->slot);
	return hs->slot;
}

static void
held_slot_release(HeldSlot *hs)
{
	if (hs->slot != NULL)
		ExecDropSingleTupleTableSlot(hs->slot);
	hs->slot = NULL;
	hs->version = NULL;
}

/*
 * Enter the level's appended changes into its map, in order, as looking
 * each one up when it came would have: a new state for a key not held, or
 * composed onto the state held for it.
 */
static void
level_index(Level *l)
{
	HTAB	   *map;
	MemoryContext rowcxt;
	MemoryContext oldcxt;
	HeldSlot	hs = {0};

	if (l->nindexed == l->nappended)
		return;
	map = level_map(l);
	hs.cxt = CurrentMemoryContext;
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "pg_notifier index",
								   ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(rowcxt);
	for (; l->nindexed < l->nappended; l->nindexed++)
	{
		Pending    *e = appended(l, l->nindexed);
		ChangeEvent ev = {0};
		StringInfoData key;
		Pending    *p;
		bool		found;

		/* the key as the change's own lookup would have built it */
		if (e->exists)
		{
			ev.op = OP_INSERT;
			ev.newslot = held_row_slot(&hs, e->newtuple, e->newwatch);
		}
		else
		{
			ev.op = OP_DELETE;
			ev.oldslot = held_row_slot(&hs, e->oldtuple, e->oldwatch);
		}
		initStringInfo(&key);
		event_append_key(&key, e->watch, &ev);
		e->k.key = key.data;

		p = hash_search(map, &e->k, HASH_ENTER, &found);
		if (!found)
		{
			*p = *e;
			p->k.key = MemoryContextStrdup(coalesce_cxt, key.data);
		}
		else
		{
			/* as coalesce_change() composes a change onto a held state */
			compose(p, e->exists, e->newtuple, e->newwatch);
			p->watch = e->watch;
			p->ts = e->ts;
			if (e->oldtuple)
				heap_freetuple(e->oldtuple);
			held--;
		}
		ExecClearTuple(hs.slot);
		MemoryContextReset(rowcxt);
	}
	MemoryContextSwitchTo(oldcxt);
	held_slot_release(&hs);
	MemoryContextDelete(rowcxt);
}

/*
 * Is the change the first of its row in the transaction, nothing held for
 * its key (see the append path above)?  false when unsure.  The row's raw
 * xmin, not the one visibility reads: a row this transaction wrote frozen
 * (COPY FREEZE) is still its own.
 */
static bool
first_change(const ChangeEvent *ev)
{
	TupleTableSlot *slot = ev->oldslot;
	HeapTuple	tuple;

	if (ev->op == OP_INSERT)
		return !deletes_held;
	if (slot == NULL || !(TTS_IS_BUFFERTUPLE(slot) || TTS_IS_HEAPTUPLE(slot)))
		return false;
	tuple = ((HeapTupleTableSlot *) slot)->tuple;
	if (tuple == NULL || tuple->t_data == NULL)
		return false;
	return !TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetRawXmin(tuple->t_data));
}

/*
 * Hold a row change until commit, merged with the row's earlier changes.
 */
void
coalesce_change(const Watch *w, const ChangeEvent *ev)
{
	Level	   *l;
	HTAB	   *map;
	MemoryContext oldcxt;
	StringInfoData key;
	PendingKey	k;
	Pending    *p;
	bool		found;

	if (flushed)
	{
		emit_event(w, ev);
		return;
	}

	l = current_level();
	memset(&k, 0, sizeof(k));
	k.tgoid = w->tgoid;
	k.op = PENDING_ROW;
	k.generation = generation;

	if (first_change(ev))
	{
		if (held >= notifier_max_coalesce_events)
		{
			/* over the cap: this one goes out now, after what is held */
			make_room();
			emit_event(w, ev);
			return;
		}
		oldcxt = MemoryContextSwitchTo(coalesce_cxt);
		p = append_slot(l);
		p->k = k;
		pending_init(p, w);
		p->existed = ev->op != OP_INSERT;
		p->oldtuple = copy_row(ev->oldslot);
		p->oldwatch = p->oldtuple ? w : NULL;
		compose(p, ev->op != OP_DELETE, copy_row(ev->newslot), w);
		p->ts = ev->ts;
		held++;
		MemoryContextSwitchTo(oldcxt);
		if (ev->op == OP_DELETE)
			deletes_held = true;
		return;
	}

	/* maybe not the first: look it up, with everything appended before */
	level_index(l);
	map = level_map(l);

	/* the key, built in the caller's (per-row) context */
	initStringInfo(&key);
	event_append_key(&key, w, ev);
	k.key = key.data;

	p = hash_search(map, &k, HASH_FIND, &found);
	if (!found && held >= notifier_max_coalesce_events)
	{
		/* over the cap: this one goes out now, after what is held */
		make_room();
		emit_event(w, ev);
		return;
	}

	oldcxt = MemoryContextSwitchTo(coalesce_cxt);
	if (!found)
	{
		k.key = pstrdup(key.data);
		p = hash_search(map, &k, HASH_ENTER, NULL);
		pending_init(p, w);
		p->existed = ev->op != OP_INSERT;
		p->oldtuple = copy_row(ev->oldslot);
		p->oldwatch = p->oldtuple ? w : NULL;
		held++;
	}

	compose(p, ev->op != OP_DELETE, copy_row(ev->newslot), w);
	p->watch = w;
	p->ts = ev->ts;
	MemoryContextSwitchTo(oldcxt);
	if (ev->op == OP_DELETE)
		deletes_held = true;
}

/*
 * A change that is not coalesced: sent at once when nothing is held, else
 * held as it is, behind what is held, so that it cannot overtake it.
 */
void
coalesce_in_order(const Watch *w, const ChangeEvent *ev)
{
	HTAB	   *map;
	MemoryContext oldcxt;
	PendingKey	k;
	Pending    *p;

	if (flushed || !anything_held())
		emit_event(w, ev);
	else if (held >= notifier_max_coalesce_events)
	{
		make_room();
		emit_event(w, ev);
	}
	else
	{
		map = level_map(current_level());
		memset(&k, 0, sizeof(k));
		k.tgoid = w->tgoid;
		k.op = PENDING_EVENT;
		k.generation = generation;
		k.seq = next_order + 1; /* unique, never 0 */

		oldcxt = MemoryContextSwitchTo(coalesce_cxt);
		p = hash_search(map, &k, HASH_ENTER, NULL);
		pending_init(p, w);
		p->op = ev->op;
		p->ts = ev->ts;
		p->existed = ev->oldslot != NULL;
		p->oldtuple = copy_row(ev->oldslot);
		p->oldwatch = p->oldtuple ? w : NULL;
		compose(p, ev->newslot != NULL, copy_row(ev->newslot), w);
		held++;
		MemoryContextSwitchTo(oldcxt);
	}

	/* a row changed after a TRUNCATE is not merged with its state before */
	if (ev->op == OP_TRUNCATE)
		generation++;
}

/*
 * Statement level: count a row change.
 */
void
coalesce_count(const Watch *w, ChangeOp op, TimestampTz ts)
{
	HTAB	   *map = level_map(current_level());
	PendingKey	k = {w->tgoid, op, generation, 0, NULL};
	Pending    *p;
	bool		found;

	if (op == OP_TRUNCATE)
		generation++;
	if (flushed)
	{
		emit_statement_event(w, op, 1, ts);
		return;
	}

	p = hash_search(map, &k, HASH_ENTER, &found);
	if (!found)
		pending_init(p, w);
	p->count++;
	p->ts = ts;
}

/* free what a pending entry owns */
static void
pending_free(Pending *p)
{
	if (p->k.key)
		pfree(p->k.key);
	if (p->oldtuple)
		heap_freetuple(p->oldtuple);
	if (p->newtuple)
		heap_freetuple(p->newtuple);
}

/* forget a level's map and appended list (what they own is freed or moved) */
static void
level_reset(Level *l)
{
	if (l->map != NULL)
		hash_destroy(l->map);
	for (int i = 0; i < l->nchunks && l->chunks[i] != NULL; i++)
		pfree(l->chunks[i]);
	if (l->chunks != NULL)
		pfree(l->chunks);
	memset(l, 0, sizeof(Level));
}

/*
 * Subcommit: compose the level's states onto its parent's.
 */
static void
merge_level(int nest)
{
	Level	   *child = &levels[nest];
	Level	   *parent = &levels[nest - 1];
	HASH_SEQ_STATUS status;
	Pending    *c;

	/* nothing held by the parent: it takes the child's as they are */
	if (level_empty(parent))
	{
		level_reset(parent);
		*parent = *child;
		memset(child, 0, sizeof(Level));
		return;
	}

	if (child->map != NULL && hash_get_num_entries(child->map) > 0)
	{
		HTAB	   *map;

		/* the parent's appended changes may be what the child's compose onto */
		level_index(parent);
		map = level_map(parent);
		hash_seq_init(&status, child->map);
		while ((c = hash_seq_search(&status)) != NULL)
		{
			bool		found;
			Pending    *p = hash_search(map, &c->k, HASH_ENTER, &found);

			if (!found)
			{
				*p = *c;		/* moves the tuples and the key */
				continue;
			}
			if (c->k.op >= 0)
				p->count += c->count;
			else
			{
				compose(p, c->exists, c->newtuple, c->newwatch);
				held--;
			}
			p->watch = c->watch;
			p->ts = c->ts;
			c->newtuple = NULL; /* moved to p, or never set */
			pending_free(c);
		}
	}

	/*
	 * The child's appended changes are firsts in the whole transaction: they
	 * follow the parent's, in order, tuples and all.
	 */
	for (int64 i = child->nindexed; i < child->nappended; i++)
	{
		MemoryContext oldcxt = MemoryContextSwitchTo(coalesce_cxt);

		*append_slot(parent) = *appended(child, i);
		MemoryContextSwitchTo(oldcxt);
	}
	level_reset(child);
}

/*
 * Subabort (or sent): forget the level's states.
 */
static void
free_level(int nest)
{
	Level	   *l = &levels[nest];
	HASH_SEQ_STATUS status;
	Pending    *p;

	if (l->map != NULL)
	{
		hash_seq_init(&status, l->map);
		while ((p = hash_seq_search(&status)) != NULL)
		{
			if (p->k.op < 0)
				held--;
			pending_free(p);
		}
	}
	for (int64 i = l->nindexed; i < l->nappended; i++)
	{
		held--;
		pending_free(appended(l, i));
	}
	level_reset(l);
}

static int
pending_order_cmp(const void *a, const void *b)
{
	const Pending *pa = *(Pending *const *) a;
	const Pending *pb = *(Pending *const *) b;

	return pa->order < pb->order ? -1 : pa->order > pb->order ? 1 : 0;
}

/* emit one held row state as the event it amounts to */
static void
emit_pending_row(Pending *p, HeldSlot *oldhs, HeldSlot *newhs)
{
	const Watch *w = p->watch;
	ChangeEvent ev = {0};
	bool		send = true;

	if (p->k.op == PENDING_EVENT && p->op == OP_TRUNCATE)
	{
		ev.op = OP_TRUNCATE;
		ev.ts = p->ts;
		emit_event(w, &ev);
		return;
	}
	if (!p->existed && !p->exists)
		return;					/* INSERT ... DELETE */

	ev.ts = p->ts;
	if (p->existed)
		ev.oldslot = held_row_slot(oldhs, p->oldtuple, p->oldwatch);
	if (p->exists)
		ev.newslot = held_row_slot(newhs, p->newtuple, p->newwatch);

	/* DDL between the changes: read each row as its version had it */
	if ((p->existed && p->oldwatch != w) || (p->exists && p->newwatch != w))
		w = event_frame(w, p->existed ? p->oldwatch : NULL,
						p->exists ? p->newwatch : NULL, &ev);

	if (!p->existed)
		ev.op = OP_INSERT;
	else if (!p->exists)
		ev.op = OP_DELETE;
	else
	{
		ev.op = OP_UPDATE;
		ev.changed = palloc(sizeof(bool) * Max(w->ncolumns, 1));
		if (!event_columns_differ(ev.oldcols ? ev.oldcols : w->columns,
								  ev.newcols ? ev.newcols : w->columns,
								  w->ncolumns, ev.oldslot, ev.newslot,
								  ev.changed))
		{
			stats_count(COUNT_NOOP_UPDATES);	/* ended as it began */
			send = false;
		}
	}
	if (send)
		emit_event(w, &ev);

	if (ev.oldslot)
		ExecClearTuple(ev.oldslot);
	if (ev.newslot)
		ExecClearTuple(ev.newslot);
}

/*
 * Send everything a level holds (the top level's): its keyed states and
 * its appended changes, in the order of first changes.  The caller has a
 * snapshot active: output functions may run queries.
 */
static void
emit_held(Level *l)
{
	HASH_SEQ_STATUS status;
	Pending    *p;
	Pending   **keyed;
	long		nkeyed = 0;
	long		k = 0;
	int64		a = l->nindexed;
	MemoryContext cxt;
	MemoryContext oldcxt;
	HeldSlot	oldhs = {0};
	HeldSlot	newhs = {0};

	/* the keyed states in order; the appended ones are */
	keyed = MemoryContextAlloc(coalesce_cxt, sizeof(Pending *) *
							   Max(l->map ? hash_get_num_entries(l->map) : 0, 1));
	if (l->map != NULL)
	{
		hash_seq_init(&status, l->map);
		while ((p = hash_seq_search(&status)) != NULL)
			keyed[nkeyed++] = p;
		if (nkeyed > 1)
			qsort(keyed, nkeyed, sizeof(Pending *), pending_order_cmp);
	}

	oldhs.cxt = newhs.cxt = CurrentMemoryContext;
	cxt = AllocSetContextCreate(CurrentMemoryContext, "pg_notifier flush",
								ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(cxt);
	outbox_batch_begin();
	while (k < nkeyed || a < l->nappended)
	{
		if (a == l->nappended ||
			(k < nkeyed && keyed[k]->order < appended(l, a)->order))
			p = keyed[k++];
		else
			p = appended(l, a++);
		if (p->k.op >= 0)
			emit_statement_event(p->watch, p->k.op, p->count, p->ts);
		else
			emit_pending_row(p, &oldhs, &newhs);
		MemoryContextReset(cxt);
	}
	outbox_batch_end();
	MemoryContextSwitchTo(oldcxt);
	held_slot_release(&oldhs);
	held_slot_release(&newhs);
	MemoryContextDelete(cxt);
	pfree(keyed);
}

/*
 * Pre-commit: send everything held, in the order of first changes.
 */
static void
flush_pending(void)
{
	if (levels == NULL || nlevels < 2 ||
		(levels[1].map == NULL && levels[1].nappended == 0))
		return;
	flushed = true;

	/* nothing is active at pre-commit */
	PushActiveSnapshot(GetTransactionSnapshot());
	emit_held(&levels[1]);
	PopActiveSnapshot();
}

static void
reset_state(void)
{
	/* the memory goes with TopTransactionContext */
	coalesce_cxt = NULL;
	levels = NULL;
	nlevels = 0;
	held = 0;
	next_order = 0;
	generation = 0;
	flushed = false;
	deletes_held = false;
	outbox_locked = payloads_locked = false;
}

static void
coalesce_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			flush_pending();
			break;
		case XACT_EVENT_PRE_PREPARE:
			if (levels != NULL && nlevels > 1 && !level_empty(&levels[1]))
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that has pending pg_notifier events"),
						 errhint("Events are sent at commit, as NOTIFY is; watch with \"coalesce\" => false to send them as they happen, or do not use two-phase commit here.")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			reset_state();
			break;
		default:
			break;
	}
}

static void
coalesce_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						  SubTransactionId parentSubid, void *arg)
{
	int			nest = GetCurrentTransactionNestLevel();

	if (levels == NULL || nest >= nlevels ||
		(levels[nest].map == NULL && levels[nest].nappended == 0))
		return;
	if (event == SUBXACT_EVENT_PRE_COMMIT_SUB)
		merge_level(nest);
	else if (event == SUBXACT_EVENT_ABORT_SUB)
		free_level(nest);
}
