#include "Denormals.h"
#include <string.h>
#include <xmmintrin.h>

/* MXCSR bit 15 = FTZ (results that would be denormal become 0), bit 6 = DAZ (denormal inputs read as 0). */
#define CK_FTZ_DAZ 0x8040u

static int flushed_at_start = 0;

int ck_denormals_flushed(void) { return (_mm_getcsr() & CK_FTZ_DAZ) == CK_FTZ_DAZ; }

void ck_set_flush_denormal(int on) {
    unsigned int csr = _mm_getcsr();
    _mm_setcsr(on ? (csr | CK_FTZ_DAZ) : (csr & ~CK_FTZ_DAZ));
}

int ck_flush_denormal_at_start(void) { return flushed_at_start; }

/* Runs before the initialisers of the shared libraries (ELF .preinit_array of the executable), so threads that
   libopenblas starts in its own initialiser inherit the setting. glibc passes (argc, argv, envp). */
static void ck_preinit_flush_denormal(int argc, char **argv, char **envp) {
    (void)argc; (void)argv;
    for (char **e = envp; e && *e; e++) {
        if (strcmp(*e, "SPEECHAIN_FLUSH_DENORMAL=0") == 0) return;
    }
    ck_set_flush_denormal(1);
    flushed_at_start = 1;
}

__attribute__((section(".preinit_array"), used))
static void (*const ck_preinit_entry)(int, char **, char **) = ck_preinit_flush_denormal;
