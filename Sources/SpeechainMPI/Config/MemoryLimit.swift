import Foundation

/// Sizes a user gives (layer widths, row counts, batch sizes) are checked against the machine's memory before
/// anything is allocated: a product that overflows or exceeds physical memory is one line naming the key and the
/// limit, never a crash in the allocator.
public enum MemoryLimit {
    /// Bytes of physical memory of this machine.
    public static var bytes: Int { Int(clamping: ProcessInfo.processInfo.physicalMemory) }

    /// The product of `factors` (element counts) times `bytesPerElement`, or an error naming `key` when it
    /// overflows or exceeds physical memory.
    @discardableResult
    public static func check(_ factors: [Int], bytesPerElement: Int = 4, context: String, key: String, what: String) throws -> Int {
        var total = bytesPerElement
        for f in factors {
            guard f >= 0 else { throw ConfigError.invalidValue(context: context, key: key, reason: "must not be negative, found \(f)") }
            let (p, overflow) = total.multipliedReportingOverflow(by: f)
            guard !overflow else { throw tooLarge(context: context, key: key, what: what, bytes: nil) }
            total = p
        }
        guard total <= bytes else { throw tooLarge(context: context, key: key, what: what, bytes: total) }
        return total
    }

    private static func tooLarge(context: String, key: String, what: String, bytes needed: Int?) -> ConfigError {
        let gib = { (b: Int) in String(format: "%.1f GiB", Double(b) / 1_073_741_824) }
        return .invalidValue(context: context, key: key,
                             reason: "is too large: \(what) would need \(needed.map(gib) ?? "more than 2^63 bytes"), and this machine has \(gib(bytes))")
    }
}
