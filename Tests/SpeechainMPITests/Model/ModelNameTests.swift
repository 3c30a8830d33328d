import Foundation
import Testing
@testable import SpeechainMPI

/// A model whose loss and metric names collide is refused at set-up with one line (the trainer's reports are keyed
/// by name; the first validation would otherwise trap).
@Suite struct ModelNameTests {
    final class Colliding: Model {
        let parameters = ParameterStore()
        let lossNames = ["loss"]
        let metricNames: [String]
        init(metrics: [String]) { metricNames = metrics }
        func forward(_ batch: Batch, context: ForwardContext, losses: inout NamedValues, metrics: inout NamedValues) throws {}
        func backward(loss: String, seed: Float, modules: [String]) throws {}
        var description: String { "Colliding" }
    }

    @Test func collidingNamesAreRefusedAndDistinctOnesPass() throws {
        #expect(throws: ModelError.self) { try Models.checkNames(of: Colliding(metrics: ["accuracy", "loss"]), type: "test.Colliding") }
        #expect(throws: ModelError.self) { try Models.checkNames(of: Colliding(metrics: ["accuracy", "accuracy"]), type: "test.Colliding") }
        try Models.checkNames(of: Colliding(metrics: ["ce_loss", "accuracy"]), type: "test.Colliding")
        do { try Models.checkNames(of: Colliding(metrics: ["loss"]), type: "t"); Issue.record("'loss' twice was accepted") } catch {
            #expect("\(error)" == "model_type 't' reports 'loss' twice among its losses (loss) and metrics (loss); every name must be unique")
        }
    }
}
