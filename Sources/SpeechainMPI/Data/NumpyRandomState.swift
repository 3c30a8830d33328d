/// The part of numpy's legacy `np.random.RandomState` that SpeeChain's iterators use: the 32-bit Mersenne
/// Twister (MT19937, Matsumoto & Nishimura 1998) seeded from one integer as `RandomState(seed)` seeds it, and
/// `shuffle` of a list (Fisher–Yates from the end, each index drawn by masked rejection). SpeeChain shuffles the
/// batches of an epoch with `RandomState(epoch + seed)`, so the same seed gives the same batch order here and there.
public struct NumpyRandomState {
    private var state = [UInt32](repeating: 0, count: 624)
    private var position = 624

    /// `RandomState(seed)` for 0 ≤ seed < 2^32 (numpy's own range for an integer seed).
    public init(seed: UInt32) {
        state[0] = seed
        for i in 1..<624 {
            let previous = state[i - 1]
            state[i] = 1_812_433_253 &* (previous ^ (previous >> 30)) &+ UInt32(i)
        }
        position = 624
    }

    private mutating func twist() {
        for i in 0..<624 {
            let y = (state[i] & 0x8000_0000) | (state[(i + 1) % 624] & 0x7FFF_FFFF)
            var next = state[(i + 397) % 624] ^ (y >> 1)
            if y & 1 != 0 { next ^= 0x9908_B0DF }
            state[i] = next
        }
        position = 0
    }

    /// The next 32-bit output (genrand_int32).
    public mutating func nextUInt32() -> UInt32 {
        if position >= 624 { twist() }
        var y = state[position]
        position += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    /// A uniform integer in [0, max] by masked rejection, as numpy's `random_interval` draws it (32-bit draws for
    /// max < 2^32, which covers every list this project shuffles).
    public mutating func interval(_ max: Int) -> Int {
        guard max > 0 else { return 0 }
        precondition(max <= Int(UInt32.max))
        var mask = UInt32(max)
        mask |= mask >> 1; mask |= mask >> 2; mask |= mask >> 4; mask |= mask >> 8; mask |= mask >> 16
        while true {
            let value = nextUInt32() & mask
            if value <= UInt32(max) { return Int(value) }
        }
    }

    /// `RandomState.shuffle(list)`: for i from n−1 down to 1, swap element i with element interval(i).
    public mutating func shuffle<T>(_ items: inout [T]) {
        guard items.count > 1 else { return }
        for i in stride(from: items.count - 1, through: 1, by: -1) {
            items.swapAt(i, interval(i))
        }
    }
}
