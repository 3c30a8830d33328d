#ifndef SPEECHAIN_CSENTENCEPIECE_H
#define SPEECHAIN_CSENTENCEPIECE_H
// A C face for the few SentencePiece calls the tokenizer needs (the library's API is C++). Every function that
// can fail writes a NUL-terminated reason into `err` (at most `errlen` bytes) and returns NULL or -1.
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// The linked library's name, to prove the library is there.
const char *speechain_sp_version(void);

/// A loaded SentencePiece model (a `SentencePieceProcessor`). Encoding and decoding are safe from several threads.
typedef struct speechain_sp speechain_sp;

/// Loads the model file at `path`; NULL on failure.
speechain_sp *speechain_sp_load(const char *path, char *err, size_t errlen);
void speechain_sp_free(speechain_sp *sp);

/// The number of pieces (ids 0 ..< count) and the id of the unknown piece.
int32_t speechain_sp_piece_count(const speechain_sp *sp);
int32_t speechain_sp_unk_id(const speechain_sp *sp);

/// The UTF-8 text of piece `id`: writes min(length, cap) bytes (no NUL) and returns the length; -1 for an id out of
/// range.
int64_t speechain_sp_piece(const speechain_sp *sp, int32_t id, char *out, size_t cap);

/// Encodes `len` bytes of UTF-8 `text` into piece ids: writes min(n, cap) ids and returns n (call again with a
/// larger `out` when n > cap), or -1.
int64_t speechain_sp_encode(const speechain_sp *sp, const char *text, size_t len, int32_t *out, size_t cap,
                            char *err, size_t errlen);

/// Decodes `count` ids into UTF-8 text: writes min(n, cap) bytes (no NUL) and returns n, or -1.
int64_t speechain_sp_decode(const speechain_sp *sp, const int32_t *ids, size_t count, char *out, size_t cap,
                            char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
