/* guarddb's C guard; see guard.h. */
#define _POSIX_C_SOURCE 200809L /* O_CLOEXEC, fstat under -std=c11 */

#include "guard.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
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
static long next_hint; /* where the next search for a free slot starts */
static uint64_t generation;
static pthread_mutex_t grow_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static inline uintptr_t self_id(void) { return (uintptr_t)pthread_self(); }

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
            /* Threads other than the forking one do not exist here. */
            if (LOAD(&slot->busy) != me) {
                STORE(&slot->depth, 0);
                STORE(&slot->busy, 0);
            }
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

guard_slot *guard_slot_new(void)
{
    pthread_once(&atfork_once, install_atfork);
    for (;;) {
        int seen_count = LOAD(&chunk_count);
        guard_slot *slot = claim_free_slot();
        if (slot) {
            STORE(&slot->depth, 0);
            STORE(&slot->fd, -1);
            STORE(&slot->busy, 0);
            STORE(&slot->owner, self_id());
            STORE(&slot->generation, LOAD(&generation));
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

int guard_enter(guard_slot *slot, int flags)
{
    uintptr_t me = self_id();
    uintptr_t expected = 0;

    if (LOAD(&slot->generation) != LOAD(&generation))
        return GUARD_FORKED;
    if ((flags & GUARD_STRICT) && LOAD(&slot->owner) != me)
        return GUARD_NOT_OWNER;
    if (CAS(&slot->busy, &expected, me)) {
        STORE(&slot->depth, 1);
        STORE(&slot->owner, me);
        return GUARD_OK;
    }
    if (expected == me) {
        __atomic_add_fetch(&slot->depth, 1, __ATOMIC_ACQ_REL);
        return GUARD_OK;
    }
    return GUARD_BUSY;
}

void guard_release(guard_slot *slot, uintptr_t holder)
{
    if (holder == 0 || LOAD(&slot->busy) != holder)
        return; /* not held by it (reset in a forked child): leave it be */
    if (__atomic_sub_fetch(&slot->depth, 1, __ATOMIC_ACQ_REL) == 0)
        STORE(&slot->busy, 0);
}

void guard_leave(guard_slot *slot) { guard_release(slot, self_id()); }

int guard_forked(guard_slot *slot)
{
    return LOAD(&slot->generation) != LOAD(&generation);
}

int guard_adopt(guard_slot *slot)
{
    uintptr_t me = self_id();
    uintptr_t expected = 0;

    if (LOAD(&slot->generation) != LOAD(&generation))
        return GUARD_FORKED;
    if (CAS(&slot->busy, &expected, me)) {
        STORE(&slot->owner, me);
        STORE(&slot->busy, 0);
        return GUARD_OK;
    }
    if (expected == me) {
        STORE(&slot->owner, me);
        return GUARD_OK;
    }
    return GUARD_BUSY;
}

uintptr_t guard_thread_id(void) { return self_id(); }

uint64_t guard_generation(void) { return LOAD(&generation); }

long guard_live_slots(void) { return __atomic_load_n(&live_slots, __ATOMIC_RELAXED); }
