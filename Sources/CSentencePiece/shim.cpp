// C face of SentencePiece for the tokenizer; the Swift side never sees a C++ type.
#include "CSentencePiece.h"
#include <sentencepiece_processor.h>

extern "C" const char *speechain_sp_version(void) {
    static const char version[] = "libsentencepiece";
    return version;
}
