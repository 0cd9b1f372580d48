import Foundation

/// Per-class precision, recall, F1 and support from a confusion matrix, as scikit-learn's
/// `classification_report` computes them (a class with no predictions has precision 0, one with
/// no support recall 0), with macro and support-weighted averages and accuracy.
public struct ClassificationReport: Equatable, Sendable {
    public struct Row: Equatable, Sendable {
        public var name: String
        public var precision, recall, f1: Double
        public var support: Int
    }

    public let classNames: [String]
    /// confusion[true][predicted]
    public let confusion: [[Int]]
    public let rows: [Row]
    public let accuracy: Double
    public let macro: Row
    public let weighted: Row
    public let loss: Double?

    public init(confusion: [[Int]], classNames: [String], loss: Double? = nil) {
        self.confusion = confusion
        self.classNames = classNames
        self.loss = loss
        let classes = confusion.count
        let total = confusion.reduce(0) { $0 + $1.reduce(0, +) }
        var rows: [Row] = []
        for k in 0..<classes {
            let truePositives = Double(confusion[k][k])
            let predicted = Double((0..<classes).reduce(0) { $0 + confusion[$1][k] })
            let support = confusion[k].reduce(0, +)
            let precision = predicted > 0 ? truePositives / predicted : 0
            let recall = support > 0 ? truePositives / Double(support) : 0
            let f1 = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0
            rows.append(Row(name: k < classNames.count ? classNames[k] : "class \(k)", precision: precision, recall: recall, f1: f1, support: support))
        }
        self.rows = rows
        accuracy = total > 0 ? Double((0..<classes).reduce(0) { $0 + confusion[$1][$1] }) / Double(total) : 0
        let count = Double(max(classes, 1))
        macro = Row(name: "macro avg", precision: rows.reduce(0) { $0 + $1.precision } / count,
                    recall: rows.reduce(0) { $0 + $1.recall } / count, f1: rows.reduce(0) { $0 + $1.f1 } / count, support: total)
        let weight = { (row: Row) in Double(row.support) / Double(max(total, 1)) }
        weighted = Row(name: "weighted avg", precision: rows.reduce(0) { $0 + $1.precision * weight($1) },
                       recall: rows.reduce(0) { $0 + $1.recall * weight($1) }, f1: rows.reduce(0) { $0 + $1.f1 * weight($1) }, support: total)
    }

    /// The table users know from scikit-learn, then the confusion matrix.
    public func table() -> String {
        let width = max(12, (rows.map(\.name.count).max() ?? 0) + 2)
        func pad(_ text: String) -> String { text.count >= width ? text : text + String(repeating: " ", count: width - text.count) }
        func line(_ row: Row) -> String {
            pad(row.name) + String(format: "%10.4f %10.4f %10.4f %9d", row.precision, row.recall, row.f1, row.support)
        }
        func right(_ text: String, _ width: Int) -> String { String(repeating: " ", count: max(width - text.count, 0)) + text }
        var lines = [pad("") + right("precision", 10) + " " + right("recall", 10) + " " + right("f1-score", 10) + " " + right("support", 9)]
        lines += rows.map(line)
        lines.append("")
        lines.append(pad("accuracy") + String(format: "%32.4f %9d", accuracy, macro.support))
        lines.append(line(macro))
        lines.append(line(weighted))
        lines.append("")
        lines.append("confusion matrix (rows: true class, columns: predicted)")
        let cell = max(6, String(confusion.flatMap { $0 }.max() ?? 0).count + 1)
        lines.append(String(repeating: " ", count: 6) + (0..<confusion.count).map { String(format: "%\(cell)d", $0) }.joined())
        for (k, counts) in confusion.enumerated() {
            lines.append(String(format: "%5d ", k) + counts.map { String(format: "%\(cell)d", $0) }.joined())
        }
        return lines.joined(separator: "\n")
    }

    public func json() -> String {
        func row(_ row: Row) -> [String: Any] {
            ["precision": row.precision, "recall": row.recall, "f1": row.f1, "support": row.support]
        }
        var object: [String: Any] = [
            "classes": rows.map { ["name": $0.name] .merging(row($0)) { $1 } },
            "accuracy": accuracy,
            "macro_avg": row(macro),
            "weighted_avg": row(weighted),
            "confusion_matrix": confusion,
            "class_names": classNames,
        ]
        if let loss { object["loss"] = loss }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}
