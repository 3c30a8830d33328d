import Foundation

/// A learning-rate schedule selected by SpeeChain's `type` query (e.g. `noam.NoamLr`): a pure function of the
/// real step (1-based, counted in updates) and the epoch (1-based), built from the schedule's own config keys and
/// the optimizer's configured lr. The OptimScheduler multiplies the result by ft_factor.
public protocol LRSchedule: Sendable {
    static var typeName: String { get }
    static var confKeys: [String] { get }
    init(conf: ConfReader, baseLR: Double) throws
    func lr(realStep: Int, epoch: Int) -> Double
    /// The schedule's part of SpeeChain's repr, e.g. `d_model=None, warmup_steps=4000`.
    var reprFields: String { get }
}

extension LRSchedule {
    /// The class name SpeeChain prints (`NoamLr` for `noam.NoamLr`).
    public static var className: String { String(typeName.split(separator: ".").last ?? Substring(typeName)) }
}

/// The registry schedules are looked up in; a new schedule is one type and one `register` call,
/// without touching the OptimScheduler.
public enum LRSchedules {
    nonisolated(unsafe) public private(set) static var all: [any LRSchedule.Type] = [
        NoamLr.self, ExponentDecayLr.self, WarmupCosineLr.self, WarmupLinearLr.self, StepDecayLr.self, ConstantLr.self,
    ]

    public static func register(_ schedule: any LRSchedule.Type) {
        all.removeAll { $0.typeName == schedule.typeName }
        all.append(schedule)
    }

    /// SpeeChain's code and its documentation spell some classes differently (`noam.Noamlr` in noam.py,
    /// `noam.NoamLr` in its README and every other class's style), so the query is matched without case.
    public static func type(named name: String) throws -> any LRSchedule.Type {
        guard let t = all.first(where: { $0.typeName.lowercased() == name.lowercased() }) else {
            throw ConfigError.unknownType(kind: "optim_sches type", name: name, valid: all.map { $0.typeName })
        }
        return t
    }
}

func pythonRepr(_ v: Double?) -> String { v.map { ConfigValue.format($0) } ?? "None" }
func pythonRepr(_ v: Int?) -> String { v.map(String.init) ?? "None" }

func requirePositive(_ reader: ConfReader, _ key: String, _ value: Int, allowZero: Bool = false) throws {
    guard allowZero ? value >= 0 : value > 0 else {
        throw ConfigError.invalidValue(context: reader.context, key: key, reason: "must be \(allowZero ? ">= 0" : "> 0"), found \(value)")
    }
}

/// Linear warmup factor s/w for s < w (1 once warm; 1 when w = 0).
@inline(__always) func warmupFactor(_ s: Int, _ w: Int) -> Double { w > 0 && s < w ? Double(s) / Double(w) : 1 }
