#include "MallocCounter.h"
#include <stddef.h>

// glibc's own entry points: the wrappers below count and forward to them.
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

// Per thread, so that tests running in parallel on other threads do not disturb the count.
static _Thread_local int counting = 0;
static _Thread_local long count = 0;

void *malloc(size_t n) { if (counting) count++; return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { if (counting) count++; return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { if (counting) count++; return __libc_realloc(p, n); }
void free(void *p) { __libc_free(p); }

void malloc_counter_start(void) { count = 0; counting = 1; }
long malloc_counter_stop(void) { counting = 0; return count; }
