/*
 * guarddb's C guard: who may be inside one MySQL connection, and what a
 * forked child must never touch.
 *
 * It knows threads, fork and atomics, nothing of Python or MySQL.  Each
 * guarded connection holds one slot.  Slots live in chunks that are never
 * freed, so the fork child handler can walk them without a lock and
 * without allocating.
 */
#ifndef GUARDDB_GUARD_H
#define GUARDDB_GUARD_H

#include <stdint.h>

/* cffi:begin -- build.py hands what stands between these markers to cffi. */

/* Results of guard_enter_as() and friends. */
#define GUARD_OK 0
#define GUARD_FORKED 1    /* the slot was taken before a fork: this is a child */
#define GUARD_BUSY 2      /* another thread is inside the connection */
#define GUARD_NOT_OWNER 3 /* strict: the caller is not the owner */
#define GUARD_CLOSED 4    /* guarddb closed the connection (idle, orphan) */

/* Flags of guard_enter_as(). */
#define GUARD_STRICT 1 /* only the owner may enter */
#define GUARD_TIMED 2  /* note when the holder got in (mutex mode's held_since_ns) */
#define GUARD_KEEP_OWNER 4 /* the owner stays as it is (strict mode's close by any thread) */

/* cffi:end */

typedef struct guard_slot {
    /* Who is inside a call, 0 for none: the caller's identity as Python hands
       it in (an OS thread's threading.get_ident(), or a greenlet's number). */
    uintptr_t busy;
    /* The owner: creator or adopter (strict), last user (exclusive). */
    uintptr_t owner;
    /* Nested enters of the one inside (and held unbuffered results). */
    uintptr_t depth;
    /* Fork generation when the slot was taken; a mismatch means "forked". */
    uint64_t generation;
    /* Socket to point at /dev/null in a forked child (-1: none), and its
       identity, so that a number reused by another file is left alone. */
    int fd;
    uint64_t fd_dev;
    uint64_t fd_ino;
    /* 1 while a connection holds the slot. */
    int live;
    /* The flags of guard_enter_mode(): its connection's mode (guard_set_flags). */
    int flags;
    /* Mutex mode: threads waiting to enter sleep on wake_seq (a futex word),
       which a leave bumps when anyone waits; greenlets waiting in Python are
       counted too, so that the leave reports them. */
    uint32_t wake_seq;
    uint32_t waiters;
    /* Counters for guard_stats(), written by the thread inside (calls, since)
       or by a waiter that got in (waits, wait times). */
    uint64_t calls;
    uint64_t waits;
    uint64_t wait_ns_total;
    uint64_t wait_ns_max;
    uint64_t held_since_ns; /* CLOCK_MONOTONIC when the current holder got in */
    /* CLOCK_MONOTONIC_COARSE when the last call ended (or the slot was taken):
       how long the connection has been idle. */
    uint64_t last_used_ns;
} guard_slot;

/* cffi:begin */

/* A free slot, owned by `owner`; NULL if out of memory. */
guard_slot *guard_slot_new(uintptr_t owner);
/* Give the slot back: its connection is gone. */
void guard_slot_free(guard_slot *slot);
/* Record the socket to neuter in a forked child; -1 forgets it. */
void guard_set_fd(guard_slot *slot, int fd);
/* GUARD_OK if the slot is this process's and open, GUARD_FORKED in a forked
   child of the process that took it, GUARD_CLOSED once guarddb closed it. */
int guard_state(guard_slot *slot);
/* In a forked child: make an inherited slot this process's own, free, owned
   by `me`, with no socket (its connection opens a new session). */
void guard_rearm(guard_slot *slot, uintptr_t me);

/* Take the slot for guarddb's own work on a connection (the reaper, a
   reconnect): like an enter, but the owner and the call count stay as they
   were.  GUARD_OK, GUARD_BUSY, GUARD_FORKED, or GUARD_CLOSED unless
   allow_closed. */
int guard_claim(guard_slot *slot, int allow_closed, uintptr_t me);
/* Take the slot from `holder`, a thread that ended while holding it. */
int guard_steal(guard_slot *slot, uintptr_t holder, uintptr_t me);
/* Held by the caller: from now on every enter gets GUARD_CLOSED. */
void guard_mark_closed(guard_slot *slot);
/* The connection has a session again (reconnected, or closed by its user). */
void guard_mark_open(guard_slot *slot);
/* CLOCK_MONOTONIC_COARSE in nanoseconds (the clock of last_used_ns). */
uint64_t guard_coarse_ns(void);

/* `me` enters the connection: GUARD_OK (nested enters count), or why not. */
int guard_enter_as(guard_slot *slot, int flags, uintptr_t me);
/* The connection's mode, as flags of guard_enter_as(), for guard_enter_mode(). */
void guard_set_flags(guard_slot *slot, int flags);
/* guard_enter_as() for the calling OS thread (pthread_self(), which is an
   unpatched threading.get_ident()) with the flags guard_set_flags() gave the
   slot: the statement path of a program whose threads are OS threads, with no
   identity to hand over, in one argument (cffi passes a single argument
   without building a tuple of them: about 200 instructions less a statement). */
int guard_enter_mode(guard_slot *slot);
/* guard_enter_mode() for `me` (a greenlet). */
int guard_enter_mode_as(guard_slot *slot, uintptr_t me);
/* The one inside leaves (the last of nested enters lets others in).  Returns 1
   if that let the slot go while someone waited (greenlets waiting in Python
   are woken by the caller), else 0. */
int guard_leave(guard_slot *slot);
/* Leave on behalf of `holder`, from any thread (an unread result dropped by the
   garbage collector in another thread); nothing if `holder` is not inside.
   Returns what guard_leave() does. */
int guard_release(guard_slot *slot, uintptr_t holder);
/* Make `me` the owner; GUARD_BUSY while another is inside. */
int guard_adopt(guard_slot *slot, uintptr_t me);
/* A greenlet starts or stops waiting to enter (in Python, yielding to its hub). */
void guard_wait_begin(guard_slot *slot);
void guard_wait_end(guard_slot *slot);
/* A greenlet got in after waiting `waited_ns` (counted as guard_enter_wait counts). */
void guard_count_wait(guard_slot *slot, uint64_t waited_ns);
/* No thread owns the slot until the next adopt (a pool took the connection back). */
void guard_disown(guard_slot *slot);
/* guard_disown() if `owner` still owns the slot (it ended): 1 if it did, else 0
   (another adopted it meanwhile). */
int guard_disown_from(guard_slot *slot, uintptr_t owner);

/* The calling OS thread's id (pthread_self(), as an unpatched threading.get_ident()). */
uintptr_t guard_thread_id(void);
/* CLOCK_MONOTONIC in nanoseconds (the clock of held_since_ns). */
uint64_t guard_now_ns(void);
/* Slots held by connections. */
long guard_live_slots(void);
/* Waits to enter that got in, and the time they took, in every slot since the
   process started (a forked child starts from its parent's): they only grow. */
uint64_t guard_total_waits(void);
uint64_t guard_total_wait_ns(void);

/* cffi:end */

/* Enter, waiting up to timeout_ns for the thread inside to leave (mutex mode;
   a call that finds guarddb's lifecycle thread inside).  flags: GUARD_KEEP_OWNER
   or 0 (the owner check was made by the guard_enter_as() that said busy).
   GUARD_OK, GUARD_BUSY if still not in (the caller waits again, or gives up),
   GUARD_FORKED or GUARD_CLOSED.  since_ns: when the caller's wait began
   (guard_now_ns()), for a wait made of several calls; 0 for now.  A wait is
   counted (guard_count_wait) from then when it gets in, at the first try too
   if since_ns is given.  It blocks the OS thread (greenlets wait in
   Python instead): Python calls it through build.py's
   wrapper, which releases the GIL around it. */
int guard_enter_wait(guard_slot *slot, int flags, int64_t timeout_ns, uintptr_t me,
                     uint64_t since_ns);

#endif
