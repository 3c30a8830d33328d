import Foundation
import Testing
@testable import SpeechainMPI

/// The iterators against `scripts/reference/iterator_ref.py`: SpeeChain's batching rules restated in Python with
/// numpy's own RandomState shuffling, on a fixed list of 41 lengths with ties.
@Suite struct BatchIteratorTests {
    struct Reference: Decodable {
        struct Epoch: Decodable { let epoch: Int; let batches: [[Int]]; let shares: [[[Int]]] }
        struct Case: Decodable {
            let kind: String; let arg: Int; let is_descending: Bool?; let world: Int; let batches_per_epoch: Int?
            let seed: Int; let planned: [[Int]]; let epochs: [Epoch]
        }
        struct Permutation: Decodable { let seed: UInt32; let n: Int; let perm: [Int] }
        let lengths: [Int]; let cases: [Case]; let permutations: [Permutation]
    }

    static let reference: Reference = {
        let url = TestResources.url("iterator_refs/iterator_ref.json")
        return try! JSONDecoder().decode(Reference.self, from: Data(contentsOf: url))
    }()

    @Test func numpyShuffleIsReproduced() {
        for p in Self.reference.permutations {
            var items = Array(0..<p.n)
            var random = NumpyRandomState(seed: p.seed)
            random.shuffle(&items)
            #expect(items == p.perm, "RandomState(\(p.seed)).shuffle(range(\(p.n)))")
        }
    }

    /// The Mersenne Twister's published check value: the 10000th output for init_genrand(5489) is 4123659995.
    @Test func mersenneTwisterCheckValue() {
        var random = NumpyRandomState(seed: 5489)
        var last: UInt32 = 0
        for _ in 0..<10000 { last = random.nextUInt32() }
        #expect(last == 4_123_659_995)
    }

    static func iterator(_ c: Reference.Case) -> BatchIterator {
        BatchIterator(lengths: reference.lengths, strategy: c.kind == "fixed" ? .fixed(batchSize: c.arg) : .block(batchLength: c.arg),
                      isDescending: c.is_descending, world: c.world, shuffle: true, seed: c.seed, batchesPerEpoch: c.batches_per_epoch)
    }

    @Test func plannedBatchesAreSpeeChains() {
        #expect(Self.reference.cases.count == 108)
        for c in Self.reference.cases {
            #expect(Self.iterator(c).planned == c.planned, "\(c.kind) \(c.arg) desc \(String(describing: c.is_descending)) world \(c.world)")
        }
    }

    /// Where every planned batch has an item for every rank, the epochs' batch order and every rank's share are
    /// SpeeChain's exactly.
    @Test func epochOrderAndRankSharesAreSpeeChains() {
        var compared = 0
        for c in Self.reference.cases where c.planned.allSatisfy({ $0.count >= c.world }) {
            let it = Self.iterator(c)
            for e in c.epochs {
                let batches = it.batches(epoch: e.epoch)
                #expect(batches == e.batches, "\(c.kind) \(c.arg) world \(c.world) per-epoch \(String(describing: c.batches_per_epoch)) epoch \(e.epoch)")
                for r in 0..<c.world { #expect(batches.map { it.share(of: $0, rank: r) } == e.shares[r]) }
                compared += 1
            }
        }
        #expect(compared >= 100, "only \(compared) epochs compared")
    }

    /// Where SpeeChain would leave a rank without an item, the batch is left out for every rank; what remains keeps
    /// its planned order, every rank has an item in every batch, and the ranks' shares cover each batch exactly.
    @Test func batchesTooSmallForEveryRankAreLeftOut() {
        var seen = 0
        for c in Self.reference.cases where c.world > 1 {
            let it = Self.iterator(c)
            #expect(it.usable == c.planned.filter { $0.count >= c.world })
            if it.usable.count < c.planned.count { seen += 1 }
            for batch in it.batches(epoch: 2) {
                let shares = (0..<c.world).map { it.share(of: batch, rank: $0) }
                #expect(shares.allSatisfy { !$0.isEmpty })
                #expect(shares.flatMap { $0 }.sorted() == batch.sorted())
            }
            #expect(it.batches(epoch: 3).count == it.stepsPerEpoch)
        }
        #expect(seen > 0, "no case exercised the rule")
    }

    /// Block batches close when their summed length reaches batch_len (a rule, not the reference).
    @Test func blockBatchesCloseAtBatchLen() {
        let lengths = Self.reference.lengths
        let it = BatchIterator(lengths: lengths, strategy: .block(batchLength: 9000), isDescending: true, world: 1, shuffle: false)
        for (k, b) in it.planned.enumerated() {
            let total = b.map { lengths[$0] }.reduce(0, +)
            if k < it.planned.count - 1 { #expect(total >= 9000 && total - lengths[b.last!] < 9000) }
        }
        #expect(it.planned.flatMap { $0 } == BatchIterator.order(lengths, isDescending: true))
    }
}
