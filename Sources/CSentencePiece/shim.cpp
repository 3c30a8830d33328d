// C face of SentencePiece for the tokenizer; the Swift side never sees a C++ type, and no C++ exception crosses
// into Swift (every entry point catches).
#include "CSentencePiece.h"
#include <sentencepiece_processor.h>
#include <algorithm>
#include <cstring>
#include <new>
#include <string>
#include <vector>

struct speechain_sp {
    sentencepiece::SentencePieceProcessor processor;
};

static void write_error(char *err, size_t errlen, const std::string &message) {
    if (err == nullptr || errlen == 0) return;
    size_t n = std::min(message.size(), errlen - 1);
    std::memcpy(err, message.data(), n);
    err[n] = '\0';
}

extern "C" const char *speechain_sp_version(void) {
    static const char version[] = "libsentencepiece";
    return version;
}

extern "C" speechain_sp *speechain_sp_load(const char *path, char *err, size_t errlen) {
    try {
        auto *sp = new speechain_sp();
        auto status = sp->processor.Load(path);
        if (!status.ok()) {
            write_error(err, errlen, status.ToString());
            delete sp;
            return nullptr;
        }
        return sp;
    } catch (const std::exception &e) {
        write_error(err, errlen, e.what());
    } catch (...) {
        write_error(err, errlen, "unknown C++ exception");
    }
    return nullptr;
}

extern "C" void speechain_sp_free(speechain_sp *sp) { delete sp; }

extern "C" int32_t speechain_sp_piece_count(const speechain_sp *sp) { return sp->processor.GetPieceSize(); }

extern "C" int32_t speechain_sp_unk_id(const speechain_sp *sp) { return sp->processor.unk_id(); }

extern "C" int64_t speechain_sp_piece(const speechain_sp *sp, int32_t id, char *out, size_t cap) {
    if (id < 0 || id >= sp->processor.GetPieceSize()) return -1;
    try {
        const std::string &piece = sp->processor.IdToPiece(id);
        std::memcpy(out, piece.data(), std::min(piece.size(), cap));
        return static_cast<int64_t>(piece.size());
    } catch (...) {
        return -1;
    }
}

extern "C" int64_t speechain_sp_encode(const speechain_sp *sp, const char *text, size_t len, int32_t *out, size_t cap,
                                       char *err, size_t errlen) {
    try {
        std::vector<int> ids;
        auto status = sp->processor.Encode(std::string_view(text, len), &ids);
        if (!status.ok()) {
            write_error(err, errlen, status.ToString());
            return -1;
        }
        size_t n = std::min(ids.size(), cap);
        for (size_t i = 0; i < n; i++) out[i] = static_cast<int32_t>(ids[i]);
        return static_cast<int64_t>(ids.size());
    } catch (const std::exception &e) {
        write_error(err, errlen, e.what());
    } catch (...) {
        write_error(err, errlen, "unknown C++ exception");
    }
    return -1;
}

extern "C" int64_t speechain_sp_decode(const speechain_sp *sp, const int32_t *ids, size_t count, char *out, size_t cap,
                                       char *err, size_t errlen) {
    try {
        std::vector<int> v(ids, ids + count);
        std::string text;
        auto status = sp->processor.Decode(v, &text);
        if (!status.ok()) {
            write_error(err, errlen, status.ToString());
            return -1;
        }
        std::memcpy(out, text.data(), std::min(text.size(), cap));
        return static_cast<int64_t>(text.size());
    } catch (const std::exception &e) {
        write_error(err, errlen, e.what());
    } catch (...) {
        write_error(err, errlen, "unknown C++ exception");
    }
    return -1;
}
