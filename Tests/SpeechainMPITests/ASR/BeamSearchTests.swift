import Foundation
import Testing
@testable import SpeechainMPI

/// Decoding where the right answer is known from elsewhere: hand-built next-token tables (greedy and beam search
/// against the arithmetic of SpeeChain's rules), CTC posteriors whose label-sequence probabilities are summed by
/// brute force over every frame alignment, and a real ARASR whose decoded hypotheses are scored again by the
/// teacher-forced training forward (CE and CTC losses).
@Suite struct BeamSearchTests {
    // vocabulary of the table tests: 0 <blank>, 1 a, 2 b, 3 c, 4 <sos/eos>
    static let V = 5, eos = 4

    /// A decoder given by a table of next-token probabilities over (a, b, c, eos) per prefix (without <sos>);
    /// prefixes not in the table end almost surely.
    static func tableStep(_ table: [[Int32]: [Double]]) -> BeamSearch.Step {
        { rows, prefixes, _, out in
            for (k, r) in rows.enumerated() {
                let p = table[Array(prefixes[r].dropFirst())] ?? [0.01, 0.01, 0.01, 0.97]
                out[k * V] = log(1e-9)
                for c in 1..<V { out[k * V + c] = Float(log(p[c - 1])) }
            }
        }
    }

    static let trap: [[Int32]: [Double]] = [
        []: [0.5, 0.4, 0.1, 1e-9],
        [1]: [0.25, 0.25, 0.2, 0.3],
        [2]: [0.04, 0.03, 0.03, 0.9],
    ]

    static func options(beam: Int, ctcWeight: Double = 0, lengthPenalty: Double = 1) -> DecodingOptions {
        var o = DecodingOptions()
        o.beamSize = beam; o.ctcWeight = ctcWeight; o.lengthPenalty = lengthPenalty
        return o
    }

    @Test func beamSearchFindsWhatGreedyMisses() throws {
        // Finished hypotheses score log P / length. "b" = 0.4·0.9 → log 0.36 = −1.0217 is the best of all:
        // "a" = log(0.5·0.3) = −1.897, "aa" = log(0.5·0.25·0.97)/2 = −1.0551, "ab" the same, "c" = log(0.1·0.97),
        // anything longer ≤ log(0.5·0.25·0.01·0.97)/3.
        // Greedy (beam 1) takes a (0.5 > 0.4), closes "a" at step 2 but goes on (SpeeChain's is_done: the step's
        // best, log 0.15 at length 1, does not fall below the list's worst, the same value), takes a again and
        // closes "aa" (−1.0551 replaces −1.897); step 4's best (log(0.5·0.25·0.01·0.97)/3) is below → done: "aa".
        let greedy = try BeamSearch.run(batch: 1, vocab: Self.V, sosEos: Self.eos, maxLength: 10, encoderFrames: [30],
                                        options: Self.options(beam: 1), ctc: nil, step: Self.tableStep(Self.trap))
        #expect(greedy[0].tokens == [1, 1])
        #expect(abs(greedy[0].score - log(0.5 * 0.25 * 0.97) / 2) < 1e-6)
        // beam 2 keeps b at step 1 and closes "b" at step 2
        let beam = try BeamSearch.run(batch: 1, vocab: Self.V, sosEos: Self.eos, maxLength: 10, encoderFrames: [30],
                                      options: Self.options(beam: 2), ctc: nil, step: Self.tableStep(Self.trap))
        #expect(beam[0].tokens == [2])
        #expect(abs(beam[0].score - log(0.36)) < 1e-6)
        // length_penalty 0: raw log-probabilities, and "a" (log 0.15) loses to "b" (log 0.36) already with beam 1?
        // No: greedy never holds b. It closes "a" (−1.897) and then only longer, lower sums follow → "a".
        let raw = try BeamSearch.run(batch: 1, vocab: Self.V, sosEos: Self.eos, maxLength: 10, encoderFrames: [30],
                                     options: Self.options(beam: 1, lengthPenalty: 0), ctc: nil, step: Self.tableStep(Self.trap))
        #expect(raw[0].tokens == [1])
        #expect(abs(raw[0].score - log(0.15)) < 1e-6)
    }

    @Test func utterancesOfABatchAreDecodedIndependently() throws {
        // two utterances in one call: the same table gives each the same answer as alone; a maximum length of 2
        // (<sos> + 1 token) leaves unfinished beams, which then join the list as they are
        let both = try BeamSearch.run(batch: 2, vocab: Self.V, sosEos: Self.eos, maxLength: 10, encoderFrames: [30, 12],
                                      options: Self.options(beam: 2), ctc: nil, step: Self.tableStep(Self.trap))
        #expect(both.map(\.tokens) == [[2], [2]])
        #expect(both.map(\.encoderFrames) == [30, 12])
        let short = try BeamSearch.run(batch: 1, vocab: Self.V, sosEos: Self.eos, maxLength: 2, encoderFrames: [30],
                                       options: Self.options(beam: 2), ctc: nil, step: Self.tableStep(Self.trap))
        // after one step: beams "a" (log 0.5) and "b" (log 0.4), neither closed → "a", score log 0.5 / 1
        #expect(short[0].tokens == [1])
        #expect(abs(short[0].score - log(0.5)) < 1e-6)
    }

    @Test func maximumLengthFollowsSpeeChain() {
        var o = DecodingOptions()
        #expect(o.maximumLength(encoderFrames: 50) == 16)   // int(50 / 3)
        o.minF2TRatio = 1.5
        #expect(o.maximumLength(encoderFrames: 50) == 33)
        o.minF2TRatio = -7
        #expect(o.maximumLength(encoderFrames: 50) == 7)
    }

    // MARK: CTC

    /// log P(y | x) of every label sequence y up to `maxLabels`, by summing over all V^T frame paths (collapse
    /// repeats, drop blanks) — independent of any forward recursion.
    static func bruteForceCTC(_ logp: [[Double]], vocab: Int, skipping skipped: Int) -> [[Int32]: Double] {
        let T = logp.count
        var out: [[Int32]: Double] = [:]
        var path = [Int](repeating: 0, count: T)
        let symbols = (0..<vocab).filter { $0 != skipped }
        func visit(_ t: Int, _ lp: Double) {
            if t == T {
                var y: [Int32] = [], prev = -1
                for c in path { if c != prev && c != 0 { y.append(Int32(c)) }; prev = c }
                out[y, default: 0] += exp(lp)
                return
            }
            for c in symbols { path[t] = c; visit(t + 1, lp + logp[t][c]) }
        }
        visit(0, 0)
        return out.mapValues { log($0) }
    }

    /// Frame posteriors (logits) of 5 frames that favour "c a": c, blank, a, a, blank.
    static let ctcLogits: [[Float]] = [
        [0.5, 0.2, 0.1, 2.5, 0.0],
        [2.0, 0.3, 0.1, 0.8, 0.0],
        [0.4, 2.2, 0.6, 0.2, 0.0],
        [0.6, 1.5, 0.3, 0.2, 0.0],
        [1.9, 0.5, 0.4, 0.3, 0.0],
    ]

    @Test(arguments: [1.0, 0.5, 0.3])
    func ctcPrefixScoresAddUpToTheSequenceProbability(_ weight: Double) throws {
        let T = Self.ctcLogits.count, V = Self.V
        let flat = Self.ctcLogits.flatMap { $0 }
        // the scorer's distribution: <eos> removed before the log-softmax (SpeeChain sets its logit to −1e20)
        let logp: [[Double]] = Self.ctcLogits.map { row in
            let kept = row.enumerated().filter { $0.offset != Self.eos }.map { Double($0.element) }
            let lse = log(kept.map { exp($0) }.reduce(0, +))
            return row.enumerated().map { $0.offset == Self.eos ? -1e30 : Double($0.element) - lse }
        }
        let sequences = Self.bruteForceCTC(logp, vocab: V, skipping: Self.eos)
        // the attention side: a table that mildly prefers "a" first
        let table: [[Int32]: [Double]] = [[]: [0.4, 0.3, 0.3 - 1e-6, 1e-6]]
        func attention(_ y: [Int32]) -> Double {
            var s = 0.0
            for i in 0...y.count {
                let p = table[Array(y.prefix(i))] ?? [0.01, 0.01, 0.01, 0.97]
                s += log(i < y.count ? p[Int(y[i]) - 1] : p[3])
            }
            return s
        }
        let expectedBest = sequences.keys.filter { !$0.isEmpty }.max { a, b in
            ((1 - weight) * attention(a) + weight * sequences[a]!) / Double(a.count) < ((1 - weight) * attention(b) + weight * sequences[b]!) / Double(b.count)
        }!
        let result = try flat.withUnsafeBufferPointer { z in
            let scorer = CTCPrefixScorer(logits: z.baseAddress!, batch: 1, frames: T, vocab: V, lengths: [T], beam: 4, blank: 0, eos: Self.eos, temperature: 1)
            return try BeamSearch.run(batch: 1, vocab: V, sosEos: Self.eos, maxLength: 6, encoderFrames: [T],
                                      options: Self.options(beam: 4, ctcWeight: weight), ctc: scorer, step: Self.tableStep(table))
        }
        let y = result[0].tokens
        try #require(y.allSatisfy { $0 >= 1 && $0 <= 3 }, "ctc_weight \(weight): decoded \(y), score \(result[0].score)")
        let expectedScore = ((1 - weight) * attention(y) + weight * sequences[y]!) / Double(y.count)
        #expect(y == expectedBest, "ctc_weight \(weight): decoded \(y), best by brute force \(expectedBest)")
        #expect(abs(result[0].score - expectedScore) < 1e-4 * abs(expectedScore), "\(result[0].score) vs \(expectedScore)")
        if weight == 1.0 { #expect(y == [3, 1]) }   // the posteriors' "c a"
    }

    @Test func paddedFramesOfAShorterUtteranceEmitNothing() throws {
        // utterance 1 has 3 of the 5 frames: its sequence probabilities are those of its first 3 frames alone
        let T = 5, V = Self.V
        let two = Self.ctcLogits + Self.ctcLogits
        let flat = two.flatMap { $0 }
        let logp3: [[Double]] = Self.ctcLogits.prefix(3).map { row in
            let kept = row.enumerated().filter { $0.offset != Self.eos }.map { Double($0.element) }
            let lse = log(kept.map { exp($0) }.reduce(0, +))
            return row.enumerated().map { $0.offset == Self.eos ? -1e30 : Double($0.element) - lse }
        }
        let sequences = Self.bruteForceCTC(logp3, vocab: V, skipping: Self.eos)
        let uniform: [[Int32]: [Double]] = [:]
        let result = try flat.withUnsafeBufferPointer { z in
            let scorer = CTCPrefixScorer(logits: z.baseAddress!, batch: 2, frames: T, vocab: V, lengths: [T, 3], beam: 3, blank: 0, eos: Self.eos, temperature: 1)
            return try BeamSearch.run(batch: 2, vocab: V, sosEos: Self.eos, maxLength: 6, encoderFrames: [T, 3],
                                      options: Self.options(beam: 3, ctcWeight: 1), ctc: scorer, step: Self.tableStep(uniform))
        }
        let y = result[1].tokens
        let best = sequences.keys.filter { !$0.isEmpty }.max { sequences[$0]! / Double($0.count) < sequences[$1]! / Double($1.count) }!
        #expect(y == best)
        #expect(abs(result[1].score - sequences[y]! / Double(y.count)) < 1e-4)
    }

    // MARK: the real model

    /// A small ARASR on random features: every hypothesis decoded (beam 3, with and without CTC) is scored again by
    /// the teacher-forced forward with that hypothesis as the text — SpeeChain's CE (summed per sentence, label
    /// smoothing 0) and CTC losses — and the loss must be minus the hypotheses' summed scores.
    @Test(arguments: [0.0, 0.4])
    func decodedScoresEqualTheTeacherForcedLosses(_ ctcWeight: Double) throws {
        var p = ARASR.Parts(vocabSize: 7)
        p.ctcWeight = 0.4; p.labelSmoothing = 0
        p.featDim = 8; p.convDims = [4, 4]; p.lnrDims = [16]
        for conf in [\ARASR.Parts.encoder, \ARASR.Parts.decoder] {
            p[keyPath: conf].dModel = 16; p[keyPath: conf].heads = 2; p[keyPath: conf].ffnSize = 32; p[keyPath: conf].layers = 2
        }
        let model = try ARASR(p, seed: 7)
        // <eos> a little likelier than at random, so that most hypotheses close before the maximum length
        let eosBias = model.parameters.info("decoder.postnet.linear.bias")!.offset + model.sosEos
        model.parameters.values.pointer[eosBias] += 3
        var rng = Xoshiro256(seed: 3)
        var batch = Batch()
        let f = batch.slot("feat")
        let frames = 40, lengths = [40, 31, 25]
        batch.tensors[f].shape = [3, frames, 8]
        batch.tensors[f].floats = (0..<(3 * frames * 8)).map { _ in rng.normal() }
        batch.tensors[f].lengths = lengths
        var o = DecodingOptions()
        o.beamSize = 3; o.ctcWeight = ctcWeight; o.minF2TRatio = -12
        let decoded = try model.decode(batch, options: o)
        #expect(decoded.count == 3)
        var checked = 0
        for (i, u) in decoded.enumerated() where !u.tokens.isEmpty && (ctcWeight == 0 || u.tokens.count < 11) {
            let closed = u.tokens.count < 11   // else stopped at the maximum length (12 with <sos>), no <eos> scored
            #expect(!u.tokens.contains(0) && !u.tokens.contains(Int32(model.sosEos)))
            // the utterance alone, its hypothesis as the text
            var one = Batch()
            let ff = one.slot("feat"), tt = one.slot("text")
            one.tensors[ff].shape = [1, lengths[i], 8]
            one.tensors[ff].floats = Array(batch.tensors[f].floats[(i * frames * 8)..<(i * frames * 8 + lengths[i] * 8)])
            one.tensors[ff].lengths = [lengths[i]]
            let text = [Int32(model.sosEos)] + u.tokens + [Int32(model.sosEos)]
            one.tensors[tt].shape = [1, text.count]; one.tensors[tt].ints = text; one.tensors[tt].lengths = [text.count]
            var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
            try model.forward(one, context: ForwardContext(training: false), losses: &losses, metrics: &metrics)
            // the attention side from the teacher-forced logits [1, L, V]: Σ log_softmax at the hypothesis' tokens
            // (and at <eos> when the hypothesis was closed by it)
            let L = text.count - 1, Vv = model.vocabSize
            var attention = 0.0
            for j in 0..<(closed ? L : L - 1) {
                let row = (0..<Vv).map { Double(model.logits.pointer[j * Vv + $0]) }
                let m = row.max()!
                let lse = m + log(row.map { exp($0 - m) }.reduce(0, +))
                attention += row[Int(text[j + 1])] - lse
            }
            if closed { #expect(abs(attention + Double(metrics["ce_loss"]!)) < 1e-4 * max(1, abs(attention)), "the CE loss is the summed NLL") }
            // CTC as the decoder scores it: SpeeChain removes <eos> from the CTC distribution (logit −1e20) before
            // the log-softmax; the training CTC loss, on these logits, gives −log P(hypothesis)
            let s = model.encFrames, d = model.dModel, V = model.vocabSize
            var z = [Float](repeating: 0, count: s * V)
            z.withUnsafeMutableBufferPointer { zp in
                model.ctcLayer!.forward(Matrix(model.encoder.output.pointer, rows: s, cols: d), Matrix(zp.baseAddress!, rows: s, cols: V),
                                        context: ForwardContext(training: false))
            }
            for t in 0..<s { z[t * V + model.sosEos] = -1e20 }
            let ctcLoss = CTCLoss(blank: 0, zeroInfinity: false)
            let ctc = Double(z.withUnsafeBufferPointer { zp in
                u.tokens.withUnsafeBufferPointer { y in
                    ctcLoss.forward(logits: zp.baseAddress!, batch: 1, maxFrames: s, vocab: V, inputLengths: [model.encLengths[0]],
                                    targets: y.baseAddress!, targetStride: max(1, y.count), targetLengths: [y.count])
                }
            })
            let expected = ctcWeight == 0 ? attention : (1 - ctcWeight) * attention - ctcWeight * ctc
            let summed = u.score * Double(u.tokens.count)
            #expect(abs(summed - expected) <= 1e-4 * max(1, abs(expected)), "utterance \(i): \(summed) vs teacher-forced \(expected)")
            checked += 1
        }
        #expect(checked >= 2, "only \(checked) hypotheses checked: \(decoded.map(\.tokens))")
        // the batch decodes as its utterances alone, up to rounding of the padded shapes
        for i in 0..<3 {
            var one = Batch()
            let ff = one.slot("feat")
            one.tensors[ff].shape = [1, lengths[i], 8]
            one.tensors[ff].floats = Array(batch.tensors[f].floats[(i * frames * 8)..<(i * frames * 8 + lengths[i] * 8)])
            one.tensors[ff].lengths = [lengths[i]]
            let alone = try model.decode(one, options: o)[0]
            #expect(alone.tokens == decoded[i].tokens)
            #expect(abs(alone.score - decoded[i].score) < 1e-4 * max(1, abs(alone.score)))
        }
    }
}
