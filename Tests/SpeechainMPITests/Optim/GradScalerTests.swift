import Foundation
import Testing
@testable import SpeechainMPI

/// torch.amp.GradScaler's documented behaviour: defaults, unscaling with inf/NaN detection, back-off and growth.
@Suite struct GradScalerTests {
    @Test func defaultsAreTorchs() {
        let s = GradScaler()
        #expect(s.scale == 65536)
        #expect(s.growthFactor == 2)
        #expect(s.backoffFactor == 0.5)
        #expect(s.growthInterval == 2000)
        #expect(s.growthTracker == 0)
        #expect(s.enabled)
        #expect(s.lossScale == 65536)
    }

    @Test func confDefaultsMatchTheInitializer() throws {
        let s = try GradScaler(conf: ConfReader([:], context: "t", allowedKeys: GradScaler.confKeys))
        #expect(s == GradScaler())
        let custom = try GradScaler(conf: ConfReader(["init_scale": 128, "growth_factor": 4, "backoff_factor": 0.25, "growth_interval": 3],
                                                     context: "t", allowedKeys: GradScaler.confKeys))
        #expect(custom == GradScaler(initScale: 128, growthFactor: 4, backoffFactor: 0.25, growthInterval: 3))
    }

    @Test(arguments: [("init_scale", ConfigValue.int(0)), ("growth_factor", .double(1)), ("backoff_factor", .double(1)),
                      ("backoff_factor", .int(0)), ("growth_interval", .int(0))])
    func confRejectsInvalidValues(key: String, value: ConfigValue) throws {
        do {
            _ = try GradScaler(conf: ConfReader([key: value], context: "t", allowedKeys: GradScaler.confKeys))
            Issue.record("\(key)=\(value) accepted")
        } catch let ConfigError.invalidValue(_, k, _) {
            #expect(k == key)
        }
    }

    @Test func unscaleMultipliesByTheInverseScaleOnlyInsideTheRanges() {
        let scaler = GradScaler(initScale: 1024)
        var rng = Xoshiro256(seed: 1)
        let original = (0..<40).map { _ in rng.uniform(-100, 100) }
        var g = original
        let ranges = [2..<19, 25..<38]
        let foundInf = g.withUnsafeMutableBufferPointer { scaler.unscale($0.baseAddress!, ranges: ranges) }
        #expect(!foundInf)
        for i in 0..<40 {
            let inside = ranges.contains { $0.contains(i) }
            // 1/1024 is a power of two, so the product is exact.
            #expect(g[i] == (inside ? original[i] / 1024 : original[i]), "i=\(i)")
        }
        #expect(scaler.scale == 1024, "unscale leaves the scale alone")
    }

    @Test func unscaleUsesTheInverseRoundedOnceToFloat() {
        // torch computes inv_scale = 1/scale in double and rounds it to float32; g·inv_scale follows.
        let scaler = GradScaler(initScale: 3)
        var g: [Float] = [3, 6, 1, -0.5]
        let inv = Float(1.0 / 3.0)
        _ = g.withUnsafeMutableBufferPointer { scaler.unscale($0.baseAddress!, ranges: [0..<4]) }
        #expect(g == [3 * inv, 6 * inv, 1 * inv, -0.5 * inv])
    }

    static let badValues: [Float] = [.infinity, -.infinity, .nan]

    @Test(arguments: badValues, [0, 5, 16, 17, 30])
    func unscaleReportsNonFiniteGradients(bad: Float, position: Int) {
        let scaler = GradScaler(initScale: 256)
        var g = [Float](repeating: 0.5, count: 40)
        g[position] = bad
        let foundInf = g.withUnsafeMutableBufferPointer { scaler.unscale($0.baseAddress!, ranges: [0..<10, 12..<35]) }
        #expect(foundInf)
    }

    @Test func unscaleIgnoresNonFiniteValuesOutsideTheRanges() {
        let scaler = GradScaler(initScale: 256)
        var g = [Float](repeating: 0.5, count: 40)
        g[11] = .nan; g[39] = .infinity
        let foundInf = g.withUnsafeMutableBufferPointer { scaler.unscale($0.baseAddress!, ranges: [0..<10, 12..<35]) }
        #expect(!foundInf)
        #expect(g[11].isNaN && g[39] == .infinity)
    }

    @Test func unscaleKeepsLargeFiniteGradientsFinite() {
        // The largest finite gradients are not reported as overflow.
        let scaler = GradScaler(initScale: 2)
        var g: [Float] = [.greatestFiniteMagnitude, -.greatestFiniteMagnitude]
        #expect(!g.withUnsafeMutableBufferPointer { scaler.unscale($0.baseAddress!, ranges: [0..<2]) })
        #expect(g == [.greatestFiniteMagnitude / 2, -.greatestFiniteMagnitude / 2])
    }

    @Test func infBacksOffAndResetsTheTracker() {
        var s = GradScaler(initScale: 1024, growthInterval: 3)
        s.update(foundInf: false)
        s.update(foundInf: false)
        #expect(s.growthTracker == 2)
        s.update(foundInf: true)
        #expect(s.scale == 512)
        #expect(s.growthTracker == 0)
        s.update(foundInf: true)
        #expect(s.scale == 256)
        #expect(s.growthTracker == 0)
    }

    @Test func growsAfterExactlyGrowthIntervalCleanUpdates() {
        var s = GradScaler(initScale: 1024, growthInterval: 3)
        s.update(foundInf: false)
        #expect(s.scale == 1024 && s.growthTracker == 1)
        s.update(foundInf: false)
        #expect(s.scale == 1024 && s.growthTracker == 2)
        s.update(foundInf: false)
        #expect(s.scale == 2048 && s.growthTracker == 0)
        // The count starts again: three more clean updates for the next growth.
        s.update(foundInf: false); s.update(foundInf: false)
        #expect(s.scale == 2048)
        s.update(foundInf: false)
        #expect(s.scale == 4096)
    }

    @Test func anInfBetweenCleanUpdatesDelaysGrowth() {
        // Factors that are not each other's inverse, so that backing off cannot pass for dividing by growth.
        var s = GradScaler(initScale: 1024, growthFactor: 3, backoffFactor: 0.25, growthInterval: 3)
        var scales: [Float] = []
        for inf in [false, false, true, false, false, false, false] {
            s.update(foundInf: inf)
            scales.append(s.scale)
        }
        // Two clean, an inf (×0.25), then growth (×3) on the third clean update after it, not before.
        #expect(scales == [1024, 1024, 256, 256, 256, 768, 768])
    }

    @Test func growthThatWouldOverflowIsNotKept() {
        var s = GradScaler(initScale: .greatestFiniteMagnitude / 1.5, growthInterval: 1)
        let before = s.scale
        s.update(foundInf: false)
        #expect(s.scale == before)
        #expect(s.scale.isFinite)
        #expect(s.growthTracker == 0)
    }

    @Test func disabledScalerDoesNothing() {
        var s = GradScaler(initScale: 1024, growthInterval: 1, enabled: false)
        #expect(s.lossScale == 1)
        var g: [Float] = [4, .nan, .infinity, -8]
        let foundInf = g.withUnsafeMutableBufferPointer { s.unscale($0.baseAddress!, ranges: [0..<4]) }
        #expect(!foundInf)
        #expect(g[0] == 4 && g[1].isNaN && g[2] == .infinity && g[3] == -8)
        s.update(foundInf: false)
        #expect(s.scale == 1024 && s.growthTracker == 0)
        s.update(foundInf: true)
        #expect(s.scale == 1024 && s.growthTracker == 0)
        s.update(foundInf: false)
        #expect(s.scale == 1024 && s.growthTracker == 0)
    }

    @Test func codableRoundTrip() throws {
        var s = GradScaler(initScale: 4096, growthFactor: 3, backoffFactor: 0.125, growthInterval: 7)
        s.update(foundInf: false); s.update(foundInf: false)
        let decoded = try JSONDecoder().decode(GradScaler.self, from: try JSONEncoder().encode(s))
        #expect(decoded == s)
        #expect(decoded.growthTracker == 2 && decoded.scale == 4096 && decoded.growthInterval == 7)
        // The restored scaler continues exactly where the original would.
        var a = s, b = decoded
        for inf in [false, false, false, false, false, true] { a.update(foundInf: inf); b.update(foundInf: inf) }
        #expect(a == b)
        let disabled = GradScaler(enabled: false)
        #expect(try JSONDecoder().decode(GradScaler.self, from: try JSONEncoder().encode(disabled)) == disabled)
    }
}
