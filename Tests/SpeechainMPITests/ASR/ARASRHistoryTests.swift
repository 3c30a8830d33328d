import Foundation
import Testing
@testable import SpeechainMPI

/// A batch's losses, metrics and gradients are a function of the weights and that batch alone: the same batch run
/// after a larger one (whose activations fill the reused buffers beyond this batch's shape) gives bit-identical
/// results to a fresh model. A kernel that read a stale entry of a reused buffer (a padded position not rewritten,
/// a sum not cleared) would make a resumed run differ from an uninterrupted one.
@Suite struct ARASRHistoryTests {
    /// The first `n` utterances of `batch`, cut to `frames` frames and `columns` text columns (lengths clipped).
    static func cut(_ batch: Batch, utterances n: Int, frames: Int, columns: Int) -> Batch {
        let f0 = batch["feat"]!, t0 = batch["text"]!
        let d = f0.shape[2], cols = t0.shape[1]
        var out = Batch()
        let f = out.slot("feat"), x = out.slot("text")
        out.tensors[f].shape = [n, frames, d]
        out.tensors[f].floats = (0..<n).flatMap { b in f0.floats[(b * f0.shape[1] * d)..<(b * f0.shape[1] * d + frames * d)] }
        out.tensors[f].lengths = (0..<n).map { min(f0.lengths[$0], frames) }
        var ints: [Int32] = [], lengths: [Int] = []
        for b in 0..<n {
            let len = min(t0.lengths[b], columns)
            var row = Array(t0.ints[(b * cols)..<(b * cols + columns)])
            row[len - 1] = t0.ints[b * cols + t0.lengths[b] - 1]   // keep <eos> last
            for j in len..<columns { row[j] = 0 }
            ints += row; lengths.append(len)
        }
        out.tensors[x].shape = [n, columns]; out.tensors[x].ints = ints; out.tensors[x].lengths = lengths
        return out
    }

    static func step(_ model: ARASR, _ batch: Batch, training: Bool) throws -> (values: [Float], gradients: [Float]) {
        var losses = NamedValues(names: model.lossNames), metrics = NamedValues(names: model.metricNames)
        try model.forward(batch, context: ForwardContext(training: training), losses: &losses, metrics: &metrics)
        guard training else { return (losses.values + metrics.values, []) }
        model.parameters.zeroGradients([0..<model.parameters.count])
        try model.backward(loss: "loss", seed: 1, modules: model.moduleNames)
        return (losses.values + metrics.values, model.parameters.gradients.toArray())
    }

    @Test(arguments: ["bn_gelu", "nobn_relu"])
    func aBatchAfterALargerOneEqualsItAlone(_ name: String) throws {
        let used = try ARASRReferenceTests.load(name), fresh = try ARASRReferenceTests.load(name)
        let small = Self.cut(used.batch, utterances: 2, frames: 30, columns: 5)
        // evaluation then training, as after a validation; training then evaluation
        for (before, training) in [(false, true), (true, true), (true, false), (false, false)] {
            _ = try Self.step(used.model, used.batch, training: before)   // fills every buffer at the larger shape
            // the same BatchNorm running statistics on both sides (what evaluation reads)
            try fresh.model.loadBuffers(used.model.bufferTensors, source: "the used model")
            let after = try Self.step(used.model, small, training: training)
            let alone = try Self.step(fresh.model, small, training: training)
            #expect(after.values == alone.values, "\(name), \(before) then \(training): \(after.values) vs \(alone.values)")
            let differing = zip(after.gradients, alone.gradients).filter { $0 != $1 }.count
            #expect(differing == 0, "\(name), \(before) then \(training): \(differing) gradient entries depend on the batch before")
        }
    }
}
