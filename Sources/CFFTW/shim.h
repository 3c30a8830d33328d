#ifndef SPEECHAIN_CFFTW_SHIM_H
#define SPEECHAIN_CFFTW_SHIM_H
#include <fftw3.h>
#endif
