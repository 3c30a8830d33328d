/// SpeeChain's iterators (speechain/iterator/abs.py and block.py): which items make each global batch of an epoch,
/// and which of them each rank takes. Items are dataset positions 0..<count; lengths (samples or frames) come from
/// the dataset (`idx2wav_len`) and matter for sorting and for `block.BlockIterator`.
///
/// The plan, made once:
/// 1. order: a stable sort by length, descending (`is_descending: true`, SpeeChain's default), ascending (false),
///    or the file's order (null);
/// 2. batches: `abs.Iterator` cuts runs of `batch_size` items (the last run may be shorter);
///    `block.BlockIterator` appends items until their summed length reaches `batch_len` (the rest is a last batch);
/// 3. with `world` ranks every batch passes its last `count % world` items on to the front of the next, and what is
///    left over after the last batch becomes one more batch (SpeeChain's even split over GPUs).
///
/// Each epoch: `batches_per_epoch` batches from the cursor `(batches_per_epoch · (epoch − 1)) mod total`, wrapping
/// around; with `shuffle` the epoch's batches are permuted by numpy's `RandomState(epoch + seed).shuffle`, exactly as
/// SpeeChain does, so the order of batches is SpeeChain's for the same seed.
///
/// Each rank takes every world-th item of a global batch, starting at `world − rank − 1` when is_descending is true
/// or null (so that rank 0 gets the shortest items) and at `rank` otherwise.
///
/// Where we differ, on purpose: SpeeChain drops the empty per-rank batches at set-up, so with a leftover batch of
/// fewer than `world` items one rank has a batch the others do not, the ranks' shuffles then permute lists of
/// different lengths and they train on different global batches from then on. Here every batch with fewer items
/// than ranks is left out of the plan (it is at most the one leftover batch and batches emptied by the even split),
/// so all ranks run the same steps over the same global batches. Nothing else changes.
public struct BatchIterator: Sendable {
    public enum Strategy: Sendable, Equatable {
        /// `abs.Iterator` with `batch_size` items per global batch.
        case fixed(batchSize: Int)
        /// `block.BlockIterator` with `batch_len`: the summed length at which a batch is closed.
        case block(batchLength: Int)
    }

    public let strategy: Strategy
    public let isDescending: Bool?
    public let world: Int
    public let shuffle: Bool
    public let seed: Int
    public let batchesPerEpoch: Int?
    /// The global batches in planned order, after the even split over ranks (SpeeChain's `self.batches` before the
    /// per-rank clip), including any batch too small for every rank.
    public let planned: [[Int]]
    /// The planned batches every rank can take a share of (at least `world` items).
    public let usable: [[Int]]

    public init(lengths: [Int], strategy: Strategy, isDescending: Bool? = true, world: Int = 1, shuffle: Bool = true,
                seed: Int = 0, batchesPerEpoch: Int? = nil) {
        precondition(world >= 1)
        self.strategy = strategy; self.isDescending = isDescending; self.world = world
        self.shuffle = shuffle; self.seed = seed; self.batchesPerEpoch = batchesPerEpoch
        let order = Self.order(lengths, isDescending: isDescending)
        var batches: [[Int]]
        switch strategy {
        case .fixed(let size): batches = Self.fixed(order, batchSize: size)
        case .block(let length): batches = Self.block(order, lengths: lengths, batchLength: length)
        }
        planned = Self.balance(batches, world: world)
        usable = planned.filter { $0.count >= world }
    }

    /// A stable sort of positions by length: descending, ascending, or none (nil).
    public static func order(_ lengths: [Int], isDescending: Bool?) -> [Int] {
        let positions = Array(lengths.indices)
        guard let descending = isDescending else { return positions }
        // Swift's sort is not guaranteed stable: the position breaks ties, which is what a stable sort does
        return positions.sorted { a, b in
            lengths[a] != lengths[b] ? (descending ? lengths[a] > lengths[b] : lengths[a] < lengths[b]) : a < b
        }
    }

    public static func fixed(_ order: [Int], batchSize: Int) -> [[Int]] {
        precondition(batchSize > 0)
        return stride(from: 0, to: order.count, by: batchSize).map { Array(order[$0..<min($0 + batchSize, order.count)]) }
    }

    public static func block(_ order: [Int], lengths: [Int], batchLength: Int) -> [[Int]] {
        precondition(batchLength > 0)
        var batches: [[Int]] = [], current: [Int] = [], total = 0
        for i in order {
            current.append(i)
            total += lengths[i]
            if total >= batchLength { batches.append(current); current = []; total = 0 }
        }
        if !current.isEmpty { batches.append(current) }
        return batches
    }

    /// SpeeChain's even split: each batch keeps a multiple of `world` items and hands the rest to the next.
    public static func balance(_ batches: [[Int]], world: Int) -> [[Int]] {
        guard world > 1 else { return batches }
        var out: [[Int]] = [], carry: [Int] = []
        for batch in batches {
            let b = carry + batch
            let rest = b.count % world
            carry = Array(b.suffix(rest))
            out.append(Array(b.dropLast(rest)))
        }
        if !carry.isEmpty { out.append(carry) }
        return out
    }

    /// The global batches of `epoch` (1-based), in the order they are trained.
    public func batches(epoch: Int) -> [[Int]] {
        let all = usable
        guard !all.isEmpty else { return [] }
        var chosen: [[Int]]
        if let n = batchesPerEpoch, n != all.count {
            chosen = []
            chosen.reserveCapacity(n)
            var cursor = (n * (epoch - 1)) % all.count
            while chosen.count < n {
                let take = min(n - chosen.count, all.count - cursor)
                chosen += all[cursor..<(cursor + take)]
                cursor = (cursor + take) % all.count
            }
        } else {
            chosen = all
        }
        if shuffle {
            var random = NumpyRandomState(seed: UInt32(truncatingIfNeeded: epoch + seed))
            random.shuffle(&chosen)
        }
        return chosen
    }

    /// The items of a global batch that `rank` takes.
    public func share(of batch: [Int], rank: Int) -> [Int] {
        Self.share(of: batch, rank: rank, world: world, isDescending: isDescending)
    }

    public static func share(of batch: [Int], rank: Int, world: Int, isDescending: Bool?) -> [Int] {
        let start = (isDescending ?? true) ? world - rank - 1 : rank
        guard start < batch.count else { return [] }
        return Array(stride(from: start, to: batch.count, by: world).map { batch[$0] })
    }

    /// Steps of one epoch (the same on every rank).
    public var stepsPerEpoch: Int { usable.isEmpty ? 0 : (batchesPerEpoch ?? usable.count) }
}
