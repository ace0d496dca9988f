/* guarddb's C guard; see guard.h. */
#define _GNU_SOURCE /* O_CLOEXEC, fstat, syscall under -std=c11 */

#include "guard.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CHUNK_SLOTS 1024
#define MAX_CHUNKS 4096 /* about four million connections at once */

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define CAS(p, expected, desired)                                              \
    __atomic_compare_exchange_n((p), (expected), (desired), 0, __ATOMIC_ACQ_REL, \
                                __ATOMIC_ACQUIRE)

static guard_slot *chunks[MAX_CHUNKS];
static int chunk_count;
static long live_slots;
/* Every wait that got in, in any slot (guard_total_waits()): a slot's own
   counters go with its connection, these only grow. */
static uint64_t total_waits, total_wait_ns;
static long next_hint; /* where the next search for a free slot starts */
static uint64_t generation;
static pthread_mutex_t grow_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* A slot's generation once guarddb has closed its connection: never a real one. */
#define CLOSED_GENERATION UINT64_MAX

static inline uintptr_t self_id(void) { return (uintptr_t)pthread_self(); }

uint64_t guard_coarse_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

/* GUARD_OK if the slot belongs to this process and is open, else why not. */
static inline int slot_state(guard_slot *slot)
{
    uint64_t taken = LOAD(&slot->generation);
    if (taken == LOAD(&generation))
        return GUARD_OK;
    return taken == CLOSED_GENERATION ? GUARD_CLOSED : GUARD_FORKED;
}

uint64_t guard_now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

/* A private futex: no kernel object to inherit across fork, nothing to reset. */
static void futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns)
{
    struct timespec timeout = {timeout_ns / 1000000000, timeout_ns % 1000000000};
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, &timeout, NULL, 0);
}

static void futex_wake_one(uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* The one inside leaves for good: let the next one in, waking a waiter.
   Returns 1 if anyone waits (greenlets among them are woken in Python). */
static int let_go(guard_slot *slot)
{
    slot->last_used_ns = guard_coarse_ns();
    __atomic_store_n(&slot->busy, 0, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&slot->waiters, __ATOMIC_SEQ_CST)) {
        __atomic_add_fetch(&slot->wake_seq, 1, __ATOMIC_SEQ_CST);
        futex_wake_one(&slot->wake_seq);
        return 1;
    }
    return 0;
}

/* `me` got in: depth 1, the owner (unless kept), counted. */
static void got_in(guard_slot *slot, uintptr_t me, int flags)
{
    STORE(&slot->depth, 1);
    if (!(flags & GUARD_KEEP_OWNER))
        STORE(&slot->owner, me);
    slot->calls++;
}

/*
 * Runs in the child of every fork, before any Python code, including the
 * children of fork+exec.  Async-signal-safe: no lock, no allocation; only
 * atomics, fstat, open, dup2 and close.
 */
static void in_forked_child(void)
{
    uintptr_t me = self_id();
    int devnull = -1;
    int chunks_now = LOAD(&chunk_count);

    __atomic_add_fetch(&generation, 1, __ATOMIC_ACQ_REL);
    for (int c = 0; c < chunks_now; c++) {
        guard_slot *chunk = LOAD(&chunks[c]);
        for (int i = 0; chunk && i < CHUNK_SLOTS; i++) {
            guard_slot *slot = &chunk[i];
            if (!LOAD(&slot->live))
                continue;
            /* Threads other than the forking one do not exist here (a greenlet
               inside is let go too: every use of the slot is refused here
               anyway, and a reconnect rearms it). */
            if (LOAD(&slot->busy) != me) {
                STORE(&slot->depth, 0);
                STORE(&slot->busy, 0);
            }
            STORE(&slot->waiters, 0); /* the waiters were other threads */
            int fd = LOAD(&slot->fd);
            struct stat st;
            if (fd < 0 || fstat(fd, &st) != 0)
                continue;
            if ((uint64_t)st.st_dev != slot->fd_dev || (uint64_t)st.st_ino != slot->fd_ino)
                continue; /* the number now names another file: not ours */
            if (devnull < 0)
                devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
            if (devnull >= 0)
                dup2(devnull, fd); /* the parent's session never sees the child */
        }
    }
    if (devnull >= 0)
        close(devnull);
}

static void install_atfork(void) { pthread_atfork(NULL, NULL, in_forked_child); }

static guard_slot *claim_free_slot(void)
{
    long total = (long)LOAD(&chunk_count) * CHUNK_SLOTS;
    long start = total ? LOAD(&next_hint) % total : 0;

    for (long n = 0; n < total; n++) {
        long index = (start + n) % total;
        guard_slot *slot = &LOAD(&chunks[index / CHUNK_SLOTS])[index % CHUNK_SLOTS];
        int expected = 0;
        if (!LOAD(&slot->live) && CAS(&slot->live, &expected, 1)) {
            STORE(&next_hint, index + 1);
            return slot;
        }
    }
    return NULL;
}

static int add_chunk(int seen_count)
{
    int ok = 1;
    pthread_mutex_lock(&grow_lock);
    if (LOAD(&chunk_count) == seen_count) { /* nobody grew it meanwhile */
        guard_slot *chunk = NULL;
        if (seen_count < MAX_CHUNKS)
            chunk = calloc(CHUNK_SLOTS, sizeof(guard_slot));
        if (chunk) {
            for (int i = 0; i < CHUNK_SLOTS; i++)
                chunk[i].fd = -1;
            STORE(&chunks[seen_count], chunk);
            STORE(&next_hint, (long)seen_count * CHUNK_SLOTS);
            STORE(&chunk_count, seen_count + 1);
        } else {
            ok = 0;
        }
    }
    pthread_mutex_unlock(&grow_lock);
    return ok;
}

guard_slot *guard_slot_new(uintptr_t owner)
{
    pthread_once(&atfork_once, install_atfork);
    for (;;) {
        int seen_count = LOAD(&chunk_count);
        guard_slot *slot = claim_free_slot();
        if (slot) {
            STORE(&slot->depth, 0);
            STORE(&slot->fd, -1);
            STORE(&slot->busy, 0);
            STORE(&slot->owner, owner);
            STORE(&slot->waiters, 0);
            slot->flags = 0;
            STORE(&slot->generation, LOAD(&generation));
            slot->calls = slot->waits = slot->wait_ns_total = slot->wait_ns_max = 0;
            slot->held_since_ns = 0;
            slot->last_used_ns = guard_coarse_ns();
            __atomic_add_fetch(&live_slots, 1, __ATOMIC_RELAXED);
            return slot;
        }
        if (!add_chunk(seen_count))
            return NULL;
    }
}

void guard_slot_free(guard_slot *slot)
{
    STORE(&slot->fd, -1);
    STORE(&slot->busy, 0);
    STORE(&slot->depth, 0);
    STORE(&slot->live, 0);
    __atomic_sub_fetch(&live_slots, 1, __ATOMIC_RELAXED);
}

void guard_set_fd(guard_slot *slot, int fd)
{
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        STORE(&slot->fd, -1);
        return;
    }
    STORE(&slot->fd, -1); /* never a half-written identity in a child */
    slot->fd_dev = (uint64_t)st.st_dev;
    slot->fd_ino = (uint64_t)st.st_ino;
    STORE(&slot->fd, fd);
}

void guard_set_flags(guard_slot *slot, int flags) { slot->flags = flags; }

int guard_enter_mode(guard_slot *slot) { return guard_enter_as(slot, slot->flags, self_id()); }

int guard_enter_mode_as(guard_slot *slot, uintptr_t me)
{
    return guard_enter_as(slot, slot->flags, me);
}

int guard_enter_as(guard_slot *slot, int flags, uintptr_t me)
{
    uintptr_t expected = 0;

    if (LOAD(&slot->generation) != LOAD(&generation)) {
        int state = slot_state(slot);
        /* A closed connection still tells a non-owner it is not its to use. */
        if (state == GUARD_CLOSED && (flags & GUARD_STRICT) && LOAD(&slot->owner) != me)
            return GUARD_NOT_OWNER;
        return state;
    }
    if ((flags & GUARD_STRICT) && LOAD(&slot->owner) != me)
        return GUARD_NOT_OWNER;
    if (CAS(&slot->busy, &expected, me)) {
        got_in(slot, me, flags);
        if (flags & GUARD_TIMED)
            slot->held_since_ns = guard_now_ns();
        return GUARD_OK;
    }
    if (expected == me) {
        __atomic_add_fetch(&slot->depth, 1, __ATOMIC_ACQ_REL);
        return GUARD_OK;
    }
    return GUARD_BUSY;
}

int guard_enter_wait(guard_slot *slot, int flags, int64_t timeout_ns, uintptr_t me,
                     uint64_t since_ns)
{
    int rc = guard_enter_as(slot, flags | GUARD_TIMED, me);
    if (rc == GUARD_OK && since_ns)
        guard_count_wait(slot, guard_now_ns() - since_ns); /* let go between two waits */
    if (rc != GUARD_BUSY)
        return rc;
    uint64_t start = guard_now_ns();
    uint64_t deadline = start + (uint64_t)(timeout_ns > 0 ? timeout_ns : 0);
    if (!since_ns)
        since_ns = start;
    for (;;) {
        /* Count ourselves as waiting before the last try, so a leave that
           comes after the try sees us and bumps wake_seq. */
        uint32_t seq = __atomic_load_n(&slot->wake_seq, __ATOMIC_SEQ_CST);
        int state = slot_state(slot);
        if (state != GUARD_OK)
            return state; /* closed by guarddb while we waited (or forked) */
        __atomic_add_fetch(&slot->waiters, 1, __ATOMIC_SEQ_CST);
        uintptr_t expected = 0;
        if (__atomic_compare_exchange_n(&slot->busy, &expected, me, 0, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST)) {
            __atomic_sub_fetch(&slot->waiters, 1, __ATOMIC_SEQ_CST);
            uint64_t now = guard_now_ns();
            got_in(slot, me, flags);
            slot->held_since_ns = now;
            guard_count_wait(slot, now - since_ns);
            return GUARD_OK;
        }
        uint64_t now = guard_now_ns();
        if (now < deadline && slot_state(slot) == GUARD_OK)
            futex_wait(&slot->wake_seq, seq, (int64_t)(deadline - now));
        __atomic_sub_fetch(&slot->waiters, 1, __ATOMIC_SEQ_CST);
        if (guard_now_ns() >= deadline)
            return GUARD_BUSY;
    }
}

int guard_leave(guard_slot *slot)
{
    /* Only the one inside calls it (its enter said GUARD_OK): no identity to check. */
    if (__atomic_sub_fetch(&slot->depth, 1, __ATOMIC_ACQ_REL) == 0)
        return let_go(slot);
    return 0;
}

int guard_release(guard_slot *slot, uintptr_t holder)
{
    if (holder == 0 || LOAD(&slot->busy) != holder)
        return 0; /* not held by it (reset in a forked child): leave it be */
    return guard_leave(slot);
}

void guard_wait_begin(guard_slot *slot) { __atomic_add_fetch(&slot->waiters, 1, __ATOMIC_SEQ_CST); }

void guard_wait_end(guard_slot *slot) { __atomic_sub_fetch(&slot->waiters, 1, __ATOMIC_SEQ_CST); }

void guard_count_wait(guard_slot *slot, uint64_t waited_ns)
{
    slot->waits++;
    slot->wait_ns_total += waited_ns;
    if (waited_ns > slot->wait_ns_max)
        slot->wait_ns_max = waited_ns;
    __atomic_add_fetch(&total_waits, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&total_wait_ns, waited_ns, __ATOMIC_RELAXED);
}

int guard_state(guard_slot *slot) { return slot_state(slot); }

int guard_claim(guard_slot *slot, int allow_closed, uintptr_t me)
{
    uintptr_t expected = 0;
    int state = slot_state(slot);
    if (state == GUARD_FORKED || (state == GUARD_CLOSED && !allow_closed))
        return state;
    if (!CAS(&slot->busy, &expected, me))
        return GUARD_BUSY;
    STORE(&slot->depth, 1);
    return GUARD_OK;
}

int guard_steal(guard_slot *slot, uintptr_t holder, uintptr_t me)
{
    if (holder == 0 || !CAS(&slot->busy, &holder, me))
        return GUARD_BUSY;
    STORE(&slot->depth, 1);
    return GUARD_OK;
}

void guard_mark_closed(guard_slot *slot) { STORE(&slot->generation, CLOSED_GENERATION); }

void guard_mark_open(guard_slot *slot)
{
    if (LOAD(&slot->generation) == CLOSED_GENERATION)
        STORE(&slot->generation, LOAD(&generation));
}

void guard_rearm(guard_slot *slot, uintptr_t me)
{
    STORE(&slot->fd, -1);
    STORE(&slot->depth, 0);
    STORE(&slot->busy, 0);
    STORE(&slot->waiters, 0);
    STORE(&slot->owner, me);
    slot->held_since_ns = 0;
    STORE(&slot->generation, LOAD(&generation));
}

int guard_adopt(guard_slot *slot, uintptr_t me)
{
    uintptr_t expected = 0;

    if (slot_state(slot) == GUARD_FORKED)
        return GUARD_FORKED;
    if (CAS(&slot->busy, &expected, me)) {
        STORE(&slot->owner, me);
        let_go(slot);
        return GUARD_OK;
    }
    if (expected == me) {
        STORE(&slot->owner, me);
        return GUARD_OK;
    }
    return GUARD_BUSY;
}

void guard_disown(guard_slot *slot) { STORE(&slot->owner, 0); }

int guard_disown_from(guard_slot *slot, uintptr_t owner)
{
    return owner != 0 && CAS(&slot->owner, &owner, 0);
}

uintptr_t guard_thread_id(void) { return self_id(); }

long guard_live_slots(void) { return __atomic_load_n(&live_slots, __ATOMIC_RELAXED); }

uint64_t guard_total_waits(void) { return __atomic_load_n(&total_waits, __ATOMIC_RELAXED); }

uint64_t guard_total_wait_ns(void) { return __atomic_load_n(&total_wait_ns, __ATOMIC_RELAXED); }
