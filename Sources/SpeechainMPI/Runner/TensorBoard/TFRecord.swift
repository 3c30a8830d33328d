/// TFRecord framing, the container of TensorBoard event files. Each record is
///
///     uint64 length | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)
///
/// with every integer little-endian and the CRC masked as in `CRC32C.masked`.
enum TFRecord {
    /// Appends `data` framed as one record to `output`.
    static func append(_ data: [UInt8], to output: inout [UInt8]) {
        let lengthStart = output.count
        appendLittleEndian(UInt64(data.count), to: &output)
        appendLittleEndian(CRC32C.masked(CRC32C.checksum(output[lengthStart...])), to: &output)
        output.append(contentsOf: data)
        appendLittleEndian(CRC32C.masked(CRC32C.checksum(data)), to: &output)
    }

    /// Splits a whole file's bytes into the records' data, checking both CRCs of each record. `path` names the
    /// file in errors: a file cut inside a record is `InteropError.truncated`, a CRC mismatch `.malformedHeader`.
    static func records(in bytes: [UInt8], path: String) throws -> [[UInt8]] {
        var records: [[UInt8]] = []
        var offset = 0
        while offset < bytes.count {
            let recordStart = offset
            guard bytes.count - offset >= 12 else {
                throw InteropError.truncated(path: path, reason: "record at byte \(recordStart) ends inside its 12-byte header")
            }
            let lengthBytes = bytes[offset..<offset + 8]
            let length = readLittleEndian(UInt64.self, bytes, at: offset)
            let headerCRC = readLittleEndian(UInt32.self, bytes, at: offset + 8)
            guard CRC32C.masked(CRC32C.checksum(lengthBytes)) == headerCRC else {
                throw InteropError.malformedHeader(path: path, reason: "record at byte \(recordStart) fails its length CRC-32C check")
            }
            offset += 12
            guard length <= UInt64(bytes.count - offset), bytes.count - offset - Int(length) >= 4 else {
                throw InteropError.truncated(
                    path: path, reason: "record at byte \(recordStart) promises \(length) bytes of data and a CRC, but the file ends first")
            }
            let data = Array(bytes[offset..<offset + Int(length)])
            offset += Int(length)
            guard CRC32C.masked(CRC32C.checksum(data)) == readLittleEndian(UInt32.self, bytes, at: offset) else {
                throw InteropError.malformedHeader(path: path, reason: "record at byte \(recordStart) fails its data CRC-32C check")
            }
            offset += 4
            records.append(data)
        }
        return records
    }

    private static func appendLittleEndian<T: FixedWidthInteger>(_ value: T, to output: inout [UInt8]) {
        for shift in stride(from: 0, to: T.bitWidth, by: 8) {
            output.append(UInt8(truncatingIfNeeded: value >> shift))
        }
    }

    private static func readLittleEndian<T: FixedWidthInteger>(_: T.Type, _ bytes: [UInt8], at offset: Int) -> T {
        var value: T = 0
        for index in 0..<(T.bitWidth / 8) {
            value |= T(bytes[offset + index]) << (8 * index)
        }
        return value
    }
}
