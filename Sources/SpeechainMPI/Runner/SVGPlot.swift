import Foundation

/// A line chart as a standalone SVG file a browser or image viewer opens: axes with ticks, one polyline with
/// point markers per series, a legend. Enough for training curves; no dependency.
public struct SVGPlot {
    public struct Series { public var name: String; public var points: [(x: Double, y: Double)] }
    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var series: [Series]
    public var logY = false

    public init(title: String, xLabel: String, yLabel: String, series: [Series], logY: Bool = false) {
        self.title = title; self.xLabel = xLabel; self.yLabel = yLabel; self.series = series; self.logY = logY
    }

    static let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]

    public func render(width: Double = 640, height: Double = 400) -> String {
        let left = 70.0, right = 20.0, top = 40.0, bottom = 50.0
        let plotW = width - left - right, plotH = height - top - bottom
        let all = series.flatMap(\.points).filter { $0.y.isFinite && (!logY || $0.y > 0) }
        let ty: (Double) -> Double = { logY ? Foundation.log10($0) : $0 }
        var xMin = all.map(\.x).min() ?? 0, xMax = all.map(\.x).max() ?? 1
        var yMin = all.map { ty($0.y) }.min() ?? 0, yMax = all.map { ty($0.y) }.max() ?? 1
        if xMax == xMin { xMin -= 0.5; xMax += 0.5 }
        if yMax == yMin { yMin -= 0.5; yMax += 0.5 }
        // axes span whole tick steps, so that every tick is a round number
        let yTicks = logY ? Self.niceTicks(from: yMin.rounded(.down), to: yMax.rounded(.up), roughly: 5, minimumStep: 1)
                          : Self.niceTicks(from: yMin, to: yMax, roughly: 5)
        let xTicks = Self.niceTicks(from: xMin, to: xMax, roughly: 10, minimumStep: 1)
        yMin = yTicks.first ?? yMin; yMax = yTicks.last ?? yMax
        xMin = xTicks.first ?? xMin; xMax = xTicks.last ?? xMax
        func px(_ x: Double) -> Double { left + (x - xMin) / (xMax - xMin) * plotW }
        func py(_ y: Double) -> Double { top + (1 - (ty(y) - yMin) / (yMax - yMin)) * plotH }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        func label(_ v: Double) -> String {
            let a = abs(v)
            return a != 0 && (a < 1e-3 || a >= 1e4) ? String(format: "%.1e", v) : String(format: "%.4g", v)
        }
        var s = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(f(width / 2))" y="22" text-anchor="middle" font-size="15">\(escape(title))</text>
            <rect x="\(f(left))" y="\(f(top))" width="\(f(plotW))" height="\(f(plotH))" fill="none" stroke="#444"/>

            """
        for yv in yTicks {
            let y = top + (1 - (yv - yMin) / (yMax - yMin)) * plotH
            let shown = logY ? Foundation.pow(10, yv) : yv
            s += "<line x1=\"\(f(left))\" y1=\"\(f(y))\" x2=\"\(f(left + plotW))\" y2=\"\(f(y))\" stroke=\"#ddd\"/>"
            s += "<text x=\"\(f(left - 6))\" y=\"\(f(y + 4))\" text-anchor=\"end\">\(label(shown))</text>\n"
        }
        for xv in xTicks {
            s += "<text x=\"\(f(px(xv)))\" y=\"\(f(top + plotH + 18))\" text-anchor=\"middle\">\(label(xv))</text>\n"
        }
        s += "<text x=\"\(f(left + plotW / 2))\" y=\"\(f(height - 10))\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
        s += "<text transform=\"translate(16 \(f(top + plotH / 2))) rotate(-90)\" text-anchor=\"middle\">\(escape(yLabel))</text>\n"
        for (i, series) in series.enumerated() {
            let color = Self.colors[i % Self.colors.count]
            let pts = series.points.filter { $0.y.isFinite && (!logY || $0.y > 0) }
            if pts.count > 1 {
                s += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\""
                s += pts.map { "\(f(px($0.x))),\(f(py($0.y)))" }.joined(separator: " ") + "\"/>\n"
            }
            for p in pts { s += "<circle cx=\"\(f(px(p.x)))\" cy=\"\(f(py(p.y)))\" r=\"3\" fill=\"\(color)\"/>\n" }
            let ly = top + 16 + Double(i) * 18
            s += "<line x1=\"\(f(left + plotW - 120))\" y1=\"\(f(ly - 4))\" x2=\"\(f(left + plotW - 100))\" y2=\"\(f(ly - 4))\" stroke=\"\(color)\" stroke-width=\"2\"/>"
            s += "<text x=\"\(f(left + plotW - 94))\" y=\"\(f(ly))\">\(escape(series.name))</text>\n"
        }
        return s + "</svg>\n"
    }

    /// Tick values at a round step (1, 2 or 5 × 10^k, at least `minimumStep`) covering [low, high] with about
    /// `roughly` intervals: the first tick is at or below `low`, the last at or above `high`.
    static func niceTicks(from low: Double, to high: Double, roughly count: Int, minimumStep: Double = 0) -> [Double] {
        guard low.isFinite, high.isFinite, high > low else { return [low, high] }
        let raw = (high - low) / Double(max(count, 1))
        let magnitude = Foundation.pow(10, (Foundation.log10(raw)).rounded(.down))
        let step = max(minimumStep, ([1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? 10 * magnitude))
        let first = (low / step).rounded(.down), last = (high / step).rounded(.up)
        // multiples of the step, computed from integers so that 0.1·3 prints as 0.3
        return stride(from: first, through: last, by: 1).map { ($0 * step * 1e12).rounded() / 1e12 }
    }

    private func escape(_ t: String) -> String {
        t.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
