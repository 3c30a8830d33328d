import Foundation

/// SpeeChain's inference arguments for ASR (`infer_cfg`, passed to infer_func/beam_search.py: beam_searching).
public struct DecodingOptions: Sendable, Equatable {
    /// Hypotheses kept per utterance; 1 is greedy decoding.
    public var beamSize = 1
    /// Weight of the CTC prefix score: (1 − w)·attention + w·CTC.
    public var ctcWeight: Double = 0
    /// A finished hypothesis scores (Σ log p) / length^length_penalty.
    public var lengthPenalty: Double = 1
    /// The decoder's logits are divided by it before the log-softmax.
    public var temperature: Double = 1
    public var ctcTemperature: Double = 1
    /// Hypotheses stop at int(encoder frames / min_f2t_ratio) tokens including <sos> (a negative value −L: L).
    public var minF2TRatio: Double = 3
    /// Only emit <eos> when its score exceeds eos_threshold × the best other token's score.
    public var eosFiltering = false
    public var eosThreshold: Double = 1.5
    /// Skip scoring against the reference (SpeeChain's decode_only).
    public var decodeOnly = false

    public init() {}

    /// The keys of SpeeChain's beam_searching (and the model's decode_only / teacher_forcing) an infer_cfg entry
    /// may hold; those for a language model must stay off, since none is built here.
    public static let keys = ["beam_size", "ctc_weight", "length_penalty", "temperature", "ctc_temperature", "min_f2t_ratio",
                              "eos_filtering", "eos_threshold", "decode_only", "teacher_forcing", "lm_weight", "lm_temperature",
                              "lm_window_size", "ilm_sub_weight", "sent_per_beam", "return_att"]

    public init(conf: [String: ConfigValue], context: String) throws {
        let r = try ConfReader(conf, context: context, allowedKeys: Self.keys)
        beamSize = try r.int("beam_size", default: 1)
        ctcWeight = try r.double("ctc_weight", default: 0)
        lengthPenalty = try r.double("length_penalty", default: 1)
        temperature = try r.double("temperature", default: 1)
        ctcTemperature = try r.double("ctc_temperature", default: 1)
        minF2TRatio = try r.double("min_f2t_ratio", default: 3)
        eosFiltering = try r.bool("eos_filtering", default: false)
        eosThreshold = try r.double("eos_threshold", default: 1.5)
        decodeOnly = try r.bool("decode_only", default: false)
        func bad(_ key: String, _ reason: String) -> Error { ConfigError.invalidValue(context: context, key: key, reason: reason) }
        guard beamSize >= 1 else { throw bad("beam_size", "must be >= 1, found \(beamSize)") }
        guard ctcWeight >= 0 && ctcWeight <= 1 else { throw bad("ctc_weight", "must be in [0, 1], found \(ctcWeight)") }
        guard temperature > 0 else { throw bad("temperature", "must be > 0, found \(temperature)") }
        guard ctcTemperature > 0 else { throw bad("ctc_temperature", "must be > 0, found \(ctcTemperature)") }
        guard minF2TRatio != 0 else { throw bad("min_f2t_ratio", "must not be 0 (> 0: frames per token; < 0: minus the maximum length)") }
        if try r.bool("teacher_forcing", default: false) { throw bad("teacher_forcing", "only decoding is built (teacher_forcing: false)") }
        if try r.double("lm_weight", default: 0) != 0 { throw bad("lm_weight", "no language model is built here; use 0") }
        if try r.double("ilm_sub_weight", default: 0) != 0 { throw bad("ilm_sub_weight", "no language model is built here; use 0") }
        if try r.int("sent_per_beam", default: 1) != 1 { throw bad("sent_per_beam", "only 1 is built (as in SpeeChain)") }
    }

    /// SpeeChain's hypo_maxlen for a batch whose longest encoder output has `frames` frames.
    public func maximumLength(encoderFrames frames: Int) -> Int {
        minF2TRatio > 0 ? Int(Double(frames) / minF2TRatio) : Int(-minF2TRatio)
    }
}

/// One decoded utterance: the tokens (no <sos>, no <eos>), the hypothesis score (length-normalised sum of the
/// combined log-probabilities, SpeeChain's text_confid) and the encoder frames it was decoded from.
public struct DecodedUtterance: Sendable, Equatable {
    public var tokens: [Int32]
    public var score: Double
    public var encoderFrames: Int
}

/// SpeeChain's batched beam search (infer_func/beam_search.py), over any decoder that scores the next token of a
/// set of equally long prefixes. Each of the B utterances holds `beam` hypotheses (B·beam rows, utterance-major);
/// at every step each row's next-token log-probabilities (plus, with ctc_weight, the CTC prefix score) are added
/// to the row's score, the best 2·beam of the utterance's beam·V candidates are scanned in order, an <eos> among
/// the first `beam` closes a hypothesis (score / length^length_penalty into the utterance's n-best list), other
/// tokens extend the beams until `beam` are found; an utterance is done when its list is full and the best score
/// of the step, normalised by the current length, cannot beat the list's worst. Hypotheses stop at
/// `maximumLength` tokens including <sos>; unfinished beams then join the list as they are.
///
/// One difference from SpeeChain: the blank / padding token 0 is never a candidate. SpeeChain gives it −1e20 when
/// ctc_weight > 0 and nothing without; but when fewer than 2·beam real candidates are finite (first step, small
/// vocabulary) its topk still returns the blank, and the CTC state of a blank-extended prefix is not a prefix
/// state: ψ_prev = −1e20 while the next increments are finite, so the hypothesis' score jumps back to ≈ 0 and
/// a hypothesis "<blank>" can win (found by BeamSearchTests with ctc_weight 1).
public enum BeamSearch {
    /// `step(rows, prefixes, length, out)`: for each row index in `rows`, the log-probabilities (V values, after
    /// the temperature) of the token after its prefix (`prefixes[row]`, `length` tokens starting with <sos>),
    /// written to out[k·V ..< (k+1)·V] for the k-th listed row.
    public typealias Step = (_ rows: [Int], _ prefixes: [[Int32]], _ length: Int, _ out: UnsafeMutablePointer<Float>) throws -> Void

    public static let minusInfinity: Float = -1e20

    public static func run(batch: Int, vocab V: Int, sosEos: Int, maxLength: Int, encoderFrames: [Int], options o: DecodingOptions,
                           ctc: CTCPrefixScorer?, step: Step) throws -> [DecodedUtterance] {
        let beam = o.beamSize
        precondition(beam + 1 <= V, "beam_size + 1 must not exceed the vocabulary")
        let n = batch * beam
        var prefixes = [[Int32]](repeating: [Int32(sosEos)], count: n)
        var scores = [Float](repeating: -.infinity, count: n)
        for b in 0..<batch { scores[b * beam] = 0 }
        var lists = (0..<batch).map { _ in NBestList(size: beam, lengthPenalty: o.lengthPenalty) }
        var done = [Bool](repeating: false, count: batch)
        let w = Float(o.ctcWeight)
        var next = [Float](repeating: 0, count: n * V)
        var ctcNext = [Float](repeating: 0, count: n * V)
        var length = 1
        while length < maxLength {
            let rows = (0..<n).filter { !done[$0 / beam] }
            try next.withUnsafeMutableBufferPointer { out in
                var compact = [Float](repeating: 0, count: rows.count * V)
                try compact.withUnsafeMutableBufferPointer { try step(rows, prefixes, length, $0.baseAddress!) }
                for (k, r) in rows.enumerated() {
                    for c in 0..<V { out[r * V + c] = compact[k * V + c] }
                }
            }
            for r in rows { next[r * V] = minusInfinity }
            if let ctc, w > 0 {
                ctcNext.withUnsafeMutableBufferPointer { ctc.scores(rows: rows, prefixes: prefixes, into: $0.baseAddress!) }
                for r in rows {
                    for c in 0..<V { next[r * V + c] = (1 - w) * next[r * V + c] + w * ctcNext[r * V + c] }
                    // (ψ − ψ_prev of a prefix CTC cannot emit is −1e20 − (−1e20) = 0: keep blank out regardless)
                    next[r * V] = minusInfinity
                }
            }
            var chosen: [(score: Float, token: Int32, row: Int)] = []
            chosen.reserveCapacity(n)
            for b in 0..<batch {
                if done[b] { for _ in 0..<beam { chosen.append((0, 0, 0)) }; continue }
                // candidates of the utterance: beam-major flat index j = beam_id·V + token
                var cand = [(Float, Int)]()
                cand.reserveCapacity(beam * V)
                for k in 0..<beam {
                    let r = b * beam + k
                    for c in 1..<V { cand.append((next[r * V + c] + scores[r], k * V + c)) }   // never <blank>
                }
                // the best 2·beam, highest first (equal scores: lower index first)
                cand.sort { $0.0 != $1.0 ? $0.0 > $1.0 : $0.1 < $1.1 }
                let top = cand.prefix(2 * beam)
                var picked: [(score: Float, token: Int32, row: Int)] = []
                for (rank, (s, j)) in top.enumerated() {
                    let row = b * beam + j / V, token = j % V
                    if token == sosEos {
                        if rank >= beam { continue }
                        if o.eosFiltering {
                            let base = row * V
                            var best = -Float.infinity
                            for c in 0..<V where c != sosEos { best = max(best, next[base + c]) }
                            if Double(next[base + sosEos]) <= o.eosThreshold * Double(best) { continue }
                        }
                        lists[b].add(Array(prefixes[row].dropFirst()), score: Double(s))
                    } else {
                        picked.append((s, Int32(token), row))
                    }
                    if picked.count == beam { break }
                }
                // SpeeChain's is_done: a full list whose worst beats the step's best at the current length
                done[b] = lists[b].isDone(bestSum: Double(top.first?.0 ?? -.infinity), length: length - 1)
                chosen.append(contentsOf: picked)
            }
            if done.allSatisfy({ $0 }) { break }
            guard chosen.count == n else {
                // fewer than `beam` continuations (possible only with beam·2 > V − 2): keep the rows' count
                throw ModelError.dataMismatch("beam search found \(chosen.count) continuations for \(n) hypotheses; lower beam_size")
            }
            let old = prefixes
            if let ctc, w > 0 { ctc.select(rows: chosen.map { $0.row }, tokens: chosen.map { Int($0.token) }) }
            for i in 0..<n {
                var p = old[chosen[i].row]
                p.append(chosen[i].token)
                prefixes[i] = p
                scores[i] = chosen[i].score
            }
            length += 1
        }
        for b in 0..<batch where !done[b] {
            for k in 0..<beam {
                let r = b * beam + k
                lists[b].add(Array(prefixes[r].dropFirst()), score: Double(scores[r]))
            }
        }
        return (0..<batch).map { b in
            let best = lists[b].best ?? (tokens: [], score: -.infinity)
            return DecodedUtterance(tokens: best.tokens, score: best.score, encoderFrames: encoderFrames[b])
        }
    }
}

/// SpeeChain's BeamHypotheses: the n best finished hypotheses of one utterance.
struct NBestList {
    let size: Int
    let lengthPenalty: Double
    private(set) var items: [(tokens: [Int32], score: Double)] = []
    private var worst = 1e9

    init(size: Int, lengthPenalty: Double) { self.size = size; self.lengthPenalty = lengthPenalty }

    mutating func add(_ tokens: [Int32], score sum: Double) {
        let score = sum / pow(Double(tokens.count) + 1e-20, lengthPenalty)
        guard items.count < size || score > worst else { return }
        items.append((tokens, score))
        if items.count > size {
            let order = items.indices.sorted { items[$0].score < items[$1].score }
            worst = items[order[1]].score
            items.remove(at: order[0])
        } else {
            worst = min(score, worst)
        }
    }

    func isDone(bestSum: Double, length: Int) -> Bool {
        guard items.count >= size else { return false }
        return bestSum / pow(Double(length) + 1e-20, lengthPenalty) < worst
    }

    /// The highest score (of equal ones, the one added last, as Python's stable sort then pop()).
    var best: (tokens: [Int32], score: Double)? {
        var pick: (tokens: [Int32], score: Double)?
        for item in items where pick == nil || item.score >= pick!.score { pick = item }
        return pick
    }
}

/// The CTC prefix score of Watanabe et al. (2017), Algorithm 2, as SpeeChain's CTCPrefixScorer computes it for
/// batched beams. For each hypothesis row (prefix g) it keeps r_t^n(g), r_t^b(g) — the log-probabilities of the
/// first t+1 frames emitting g and ending in a non-blank / blank — and ψ(g); for every candidate c it gives
/// log p(g·c… | x) − ψ(g) (for c = <eos>: log p(g | x), the whole utterance), so that the sum of the increments
/// along a finished hypothesis is the CTC log-likelihood of that hypothesis. Frames past an utterance's length
/// emit only blank (probability 1). The <eos> column of the CTC logits is −1e20 before the log-softmax; blank is
/// never a candidate.
public final class CTCPrefixScorer {
    let frames: Int, vocab: Int, blank: Int, eos: Int, beam: Int
    let lengths: [Int]
    /// log-probabilities [B, T, V] with the masking above
    private var x: [Float]
    /// per row: r [T, 2] of its prefix, and ψ of its prefix
    private var r: [[Float]]
    private var psiPrev: [Float]
    /// the last step's candidates per row: r [T, 2, V] and ψ [V]
    private var rNew: [[Float]]
    private var psiNew: [[Float]]

    /// `logits` [B, T, V] of the CTC layer; `lengths` the encoder frames of each utterance.
    public init(logits: UnsafePointer<Float>, batch: Int, frames T: Int, vocab V: Int, lengths: [Int], beam: Int,
                blank: Int, eos: Int, temperature: Double) {
        self.frames = T; self.vocab = V; self.blank = blank; self.eos = eos; self.beam = beam; self.lengths = lengths
        let mi = BeamSearch.minusInfinity
        x = [Float](repeating: 0, count: batch * T * V)
        var row = [Float](repeating: 0, count: V)
        let inv = Float(1 / temperature)
        for b in 0..<batch {
            for t in 0..<T {
                let base = (b * T + t) * V
                if t >= lengths[b] {
                    for c in 0..<V { x[base + c] = c == blank ? 0 : mi }
                    continue
                }
                for c in 0..<V { row[c] = (c == eos ? mi : logits[base + c]) * inv }
                var m = -Float.infinity
                for c in 0..<V { m = max(m, row[c]) }
                var s: Double = 0
                for c in 0..<V { s += Double(expf(row[c] - m)) }
                let lse = m + Float(log(s))
                for c in 0..<V { x[base + c] = row[c] - lse }
            }
        }
        let n = batch * beam
        r = []
        psiPrev = [Float](repeating: 0, count: n)
        rNew = [[Float]](repeating: [], count: n)
        psiNew = [[Float]](repeating: [], count: n)
        // the empty prefix: r^n = −∞, r^b_t = Σ_{τ≤t} log p_τ(blank)
        for i in 0..<n {
            let b = i / beam
            var initial = [Float](repeating: mi, count: T * 2)
            var c: Float = 0
            for t in 0..<T { c += x[(b * T + t) * V + blank]; initial[t * 2 + 1] = c }
            r.append(initial)
        }
    }

    @inline(__always) private static func lse(_ a: Float, _ b: Float) -> Float {
        let m = max(a, b)
        return m + log1pf(expf(min(a, b) - m))
    }

    /// For each row: out[row·V + c] = ψ(g·c) − ψ(g).
    func scores(rows: [Int], prefixes: [[Int32]], into out: UnsafeMutablePointer<Float>) {
        let T = frames, V = vocab, mi = BeamSearch.minusInfinity
        for row in rows {
            let b = row / beam
            let g = prefixes[row].dropFirst()
            let prefixLength = g.count
            let last = prefixLength > 0 ? Int(g.last!) : blank
            let rp = r[row]
            var rn = [Float](repeating: mi, count: T * 2 * V)
            var rsum = [Float](repeating: 0, count: T)
            for t in 0..<T { rsum[t] = Self.lse(rp[t * 2], rp[t * 2 + 1]) }
            @inline(__always) func phi(_ t: Int, _ c: Int) -> Float { c == last ? rp[t * 2 + 1] : rsum[t] }
            let xb = (b * T) * V
            if prefixLength == 0 { for c in 0..<V { rn[c] = x[xb + c] } }
            let start = max(1, prefixLength)
            var psi = [Float](repeating: 0, count: V)
            for c in 0..<V { psi[c] = start - 1 < T ? rn[((start - 1) * 2) * V + c] : mi }
            if start < T {
                for t in start..<T {
                    let xt = xb + t * V, xBlank = x[xt + blank]
                    let prevN = ((t - 1) * 2) * V, prevB = prevN + V, curN = (t * 2) * V, curB = curN + V
                    for c in 0..<V {
                        let p = phi(t - 1, c)
                        rn[curN + c] = Self.lse(rn[prevN + c], p) + x[xt + c]
                        rn[curB + c] = Self.lse(rn[prevN + c], rn[prevB + c]) + xBlank
                        psi[c] = Self.lse(psi[c], p + x[xt + c])
                    }
                }
            }
            psi[eos] = rsum[lengths[b] - 1]
            psi[blank] = mi
            let prev = psiPrev[row]
            for c in 0..<V { out[row * V + c] = psi[c] - prev }
            rNew[row] = rn
            psiNew[row] = psi
        }
    }

    /// The new rows: row i continues row `rows[i]` with token `tokens[i]`.
    func select(rows: [Int], tokens: [Int]) {
        let T = frames, V = vocab
        var r2 = r, p2 = psiPrev
        for (i, (src, c)) in zip(rows, tokens).enumerated() {
            guard !rNew[src].isEmpty else { continue }   // a finished utterance's filler row
            var s = [Float](repeating: 0, count: T * 2)
            for t in 0..<T { s[t * 2] = rNew[src][(t * 2) * V + c]; s[t * 2 + 1] = rNew[src][(t * 2 + 1) * V + c] }
            r2[i] = s
            p2[i] = psiNew[src][c]
        }
        r = r2; psiPrev = p2
        for i in rNew.indices { rNew[i] = []; psiNew[i] = [] }
    }
}
