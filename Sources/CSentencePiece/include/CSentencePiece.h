#ifndef SPEECHAIN_CSENTENCEPIECE_H
#define SPEECHAIN_CSENTENCEPIECE_H
// A C face for the few SentencePiece calls the tokenizer needs (the library's API is C++).
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// The linked library's version text (e.g. "0.1.97"), to prove the library is there.
const char *speechain_sp_version(void);

#ifdef __cplusplus
}
#endif
#endif
