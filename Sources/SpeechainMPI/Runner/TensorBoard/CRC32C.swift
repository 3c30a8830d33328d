/// CRC-32C (Castagnoli), the checksum of TFRecord framing: the reflected polynomial 0x82F63B78, initial value
/// and final XOR 0xFFFFFFFF (RFC 3720 B.4; check value of "123456789" is 0xE3069283).
///
///     crc = ~0;  for byte b:  crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8);  result = ~crc
///
/// where table[n] is n shifted right 8 times, XORing the polynomial after each shift that drops a 1.
enum CRC32C {
    static let polynomial: UInt32 = 0x82F6_3B78

    static let table: [UInt32] = (0..<256).map { n -> UInt32 in
        var crc = UInt32(n)
        for _ in 0..<8 {
            crc = crc & 1 == 1 ? (crc >> 1) ^ polynomial : crc >> 1
        }
        return crc
    }

    /// The CRC-32C of `bytes`.
    static func checksum<Bytes: Sequence>(_ bytes: Bytes) -> UInt32 where Bytes.Element == UInt8 {
        var crc: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { table in
            for byte in bytes {
                crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8)
            }
        }
        return ~crc
    }

    /// TFRecord's masked form, which keeps a CRC stored next to the data it covers from being a likely CRC of
    /// data that itself contains CRCs: rotate right by 15 bits, then add 0xa282ead8 (wrapping).
    static func masked(_ crc: UInt32) -> UInt32 {
        ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
    }
}
