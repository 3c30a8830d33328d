import Foundation

/// ARASR's inference (SpeeChain's `ARASR.inference` without teacher forcing): the encoder runs once in eval mode
/// (no dropout, no SpecAugment, the normalisation's stored statistics), then BeamSearch asks the decoder for the
/// next token of every unfinished hypothesis. Like SpeeChain's `asr_decode_fn`, each step runs the decoder over
/// the whole prefix (causal self-attention, cross-attention over the utterance's encoder output) and reads the
/// last position; the CTC prefix score comes from the CTC layer's log-softmax once per batch.
extension ARASR {
    /// <sos/eos> is the last token of SpeeChain's vocabularies, <blank> (padding) the first.
    public var sosEos: Int { vocabSize - 1 }

    /// Decodes the utterances of a batch holding `feat` (waveforms or features; `text`, if present, is not read).
    public func decode(_ batch: Batch, options: DecodingOptions) throws -> [DecodedUtterance] {
        guard let feat = batch["feat"] else {
            throw ModelError.dataMismatch("\(Self.typeName) decodes batches with 'feat' (speech_text.SpeechTextDataset)")
        }
        let b = feat.count
        guard b >= 1, feat.lengths.count == b else { throw ModelError.dataMismatch("a batch of \(b) utterances with \(feat.lengths.count) lengths") }
        guard options.beamSize + 1 <= vocabSize else {
            throw ConfigError.invalidValue(context: "infer_cfg", key: "beam_size",
                                           reason: "beam_size + 1 must not exceed the vocabulary of \(vocabSize) tokens, found \(options.beamSize)")
        }
        if options.ctcWeight > 0 && ctcLayer == nil {
            throw ConfigError.invalidValue(context: "infer_cfg", key: "ctc_weight",
                                           reason: "the model has no CTC layer (trained with ctc_weight 0); use 0, found \(options.ctcWeight)")
        }
        let context = ForwardContext(training: false)
        try encode(feat, context: context)
        let d = dModel, s = encFrames, V = vocabSize
        let enc = [Float](UnsafeBufferPointer(start: encoder.output.pointer, count: b * s * d))
        let lengths = encLengths

        var scorer: CTCPrefixScorer?
        if options.ctcWeight > 0, let ctcLayer {
            let m = b * s
            let z = FloatBuffer(count: m * V)
            enc.withUnsafeBufferPointer {
                ctcLayer.forward(Matrix(UnsafeMutablePointer(mutating: $0.baseAddress!), rows: m, cols: d), Matrix(z.pointer, rows: m, cols: V), context: context)
            }
            scorer = CTCPrefixScorer(logits: z.pointer, batch: b, frames: s, vocab: V, lengths: lengths, beam: options.beamSize,
                                     blank: 0, eos: sosEos, temperature: options.ctcTemperature)
        }
        let beam = options.beamSize
        let source = FloatBuffer(count: 0), last = FloatBuffer(count: 0), stepLogits = FloatBuffer(count: 0)
        var tokens: [Int32] = []
        let invT = Float(1 / options.temperature)
        return try BeamSearch.run(batch: b, vocab: V, sosEos: sosEos, maxLength: options.maximumLength(encoderFrames: s),
                                  encoderFrames: lengths, options: options, ctc: scorer) { rows, prefixes, length, out in
            let n = rows.count
            source.resize(to: n * s * d)
            tokens.removeAll(keepingCapacity: true)
            var sourceLengths = [Int](repeating: 0, count: n)
            enc.withUnsafeBufferPointer { e in
                for (k, r) in rows.enumerated() {
                    let u = r / beam
                    (source.pointer + k * s * d).update(from: e.baseAddress! + u * s * d, count: s * d)
                    sourceLengths[k] = lengths[u]
                    tokens.append(contentsOf: prefixes[r])
                }
            }
            try tokens.withUnsafeBufferPointer { t in
                for i in 0..<t.count where t[i] < 0 || Int(t[i]) >= V { throw ModelError.dataMismatch("token \(t[i]) outside the vocabulary") }
                embedding.forward(t.baseAddress!, count: n * length)
            }
            decoder.forward(embedding.output.pointer, batch: n, tokens: length, tokenLengths: [Int](repeating: length, count: n),
                            source: source.pointer, sourceFrames: s, sourceLengths: sourceLengths, context: context)
            last.resize(to: n * d)
            for k in 0..<n { (last.pointer + k * d).update(from: decoder.output.pointer + (k * length + length - 1) * d, count: d) }
            stepLogits.resize(to: n * V)
            postnet.forward(Matrix(last.pointer, rows: n, cols: d), Matrix(stepLogits.pointer, rows: n, cols: V), context: context)
            for k in 0..<n {
                let z = stepLogits.pointer + k * V, o = out + k * V
                var m = -Float.infinity
                for c in 0..<V { o[c] = z[c] * invT; m = max(m, o[c]) }
                var sum: Double = 0
                for c in 0..<V { sum += Double(expf(o[c] - m)) }
                let lse = m + Float(log(sum))
                for c in 0..<V { o[c] -= lse }
            }
        }
    }
}
