#ifndef SPEECHAIN_CSoxr_SHIM_H
#define SPEECHAIN_CSoxr_SHIM_H
#include <soxr.h>
#endif
