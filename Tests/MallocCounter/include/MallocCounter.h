#ifndef SPEECHAIN_MALLOC_COUNTER_H
#define SPEECHAIN_MALLOC_COUNTER_H
/// Counts heap allocations (malloc, calloc, realloc) made by the calling thread between start and stop.
/// Linked into the test bundle only: its malloc/calloc/realloc/free take precedence over glibc's and forward to them.
void malloc_counter_start(void);
long malloc_counter_stop(void);
#endif
