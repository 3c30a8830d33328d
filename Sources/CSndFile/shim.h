#ifndef SPEECHAIN_CSndFile_SHIM_H
#define SPEECHAIN_CSndFile_SHIM_H
#include <sndfile.h>
#endif
