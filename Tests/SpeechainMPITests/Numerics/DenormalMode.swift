import CKernels

/// The process flushes denormals (FTZ+DAZ in MXCSR, set before main; SPEECHAIN_FLUSH_DENORMAL=0 turns it off). Tests
/// whose references need IEEE subnormals — Swift's software Float16 conversions, a subnormal result checked against
/// its definition — run their body with both bits cleared on the current thread, and restore them after.
enum DenormalMode {
    static func kept<R>(_ body: () throws -> R) rethrows -> R {
        let flushed = ck_denormals_flushed() != 0
        if flushed { ck_set_flush_denormal(0) }
        defer { if flushed { ck_set_flush_denormal(1) } }
        return try body()
    }

    /// Runs `body` with FTZ+DAZ set on the current thread (as the trainer runs), restoring the mode after.
    static func flushed<R>(_ body: () throws -> R) rethrows -> R {
        let was = ck_denormals_flushed() != 0
        if !was { ck_set_flush_denormal(1) }
        defer { if !was { ck_set_flush_denormal(0) } }
        return try body()
    }
}
