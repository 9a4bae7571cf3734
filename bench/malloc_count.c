/* malloc_count.c - an LD_PRELOAD shim that counts malloc/calloc/realloc/aligned allocations
 * of the whole process (every thread, C and C++ included), for measuring what a C library
 * (librbd) allocates per I/O. tests/bdev_no_alloc.rs reads the counter through
 * dlsym("pollux_malloc_count") when the shim is loaded:
 *   gcc -O2 -shared -fPIC -o /tmp/malloc_count.so bench/malloc_count.c -ldl
 *   LD_PRELOAD=/tmp/malloc_count.so cargo test --test bdev_no_alloc rbd -- --nocapture
 */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdatomic.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static atomic_ulong count;
static __thread unsigned long tcount;

unsigned long pollux_malloc_count(void) { return atomic_load(&count); }
/* This thread's allocations only. */
unsigned long pollux_malloc_count_thread(void) { return tcount; }

void *malloc(size_t n) { atomic_fetch_add_explicit(&count, 1, memory_order_relaxed); tcount++; return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { atomic_fetch_add_explicit(&count, 1, memory_order_relaxed); tcount++; return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { atomic_fetch_add_explicit(&count, 1, memory_order_relaxed); tcount++; return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { atomic_fetch_add_explicit(&count, 1, memory_order_relaxed); tcount++; return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { return memalign(a, n); }
int posix_memalign(void **p, size_t a, size_t n) { *p = memalign(a, n); return *p ? 0 : 12; }
void free(void *p) { __libc_free(p); }
