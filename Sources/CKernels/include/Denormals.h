#ifndef SPEECHAIN_DENORMALS_H
#define SPEECHAIN_DENORMALS_H
/* Flush-to-zero (FTZ) and denormals-are-zero (DAZ) in MXCSR, per thread. The process sets both on its first thread
   before any library initialiser runs (an ELF preinit function), so every thread created afterwards — OpenBLAS's
   workers, started when libopenblas loads, included — inherits them; SPEECHAIN_FLUSH_DENORMAL=0 in the environment
   leaves the CPU's default. */
int ck_denormals_flushed(void);
void ck_set_flush_denormal(int on);
/* 1 when the preinit function ran and set the bits (0 when the environment said not to). */
int ck_flush_denormal_at_start(void);
#endif
