#ifndef SPEECHAIN_COPENBLAS_SHIM_H
#define SPEECHAIN_COPENBLAS_SHIM_H
#include <cblas.h>
#endif
