import Foundation

/// `cohort prepare csv`: a CSV table (a header row of column names, then one row per sample) as
/// Cohort data files: `features` float32 [N, D], `labels`
/// int64 [N] (classification: the label column's distinct values, sorted, as `class_names`) or
/// float32 [N] (`regression`), and attributes `columns` (the D feature names; a categorical
/// column becomes one 0/1 column per value, `name=value`), per-column `mean` and `std` of the
/// training rows (what `normalize: standardize` uses), `source` and `split`. Rows are shuffled
/// with `seed` and the last `validation` fraction written to `val.h5`. A bad row is an error
/// naming the file and its line.
public enum TablePreparation {
    public struct Summary {
        public var trainRows: Int
        public var validationRows: Int
        public var columns: [String]
        public var classNames: [String]?
        public var files: [String]
    }

    public static func prepare(input: String, label: String, features selected: [String]?, categorical: [String],
                               regression: Bool, validation: Double, seed: UInt64, outputDirectory: String) throws -> Summary {
        guard let data = FileManager.default.contents(atPath: input) else { throw CohortError("\(input): cannot read the file") }
        guard let text = String(data: data, encoding: .utf8) else { throw CohortError("\(input): not UTF-8 text") }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasSuffix("\r") ? $0.dropLast() : $0 }
        while lines.last?.isEmpty == true { lines.removeLast() }
        guard let headerLine = lines.first else { throw CohortError("\(input): the file is empty") }
        let header = try fields(headerLine, file: input, line: 1)
        guard Set(header).count == header.count else { throw CohortError("\(input): line 1: a column name appears twice") }
        guard let labelIndex = header.firstIndex(of: label) else {
            throw CohortError("\(input): no column '\(label)' (columns: \(header.joined(separator: ", ")))")
        }
        let featureNames = selected ?? header.filter { $0 != label }
        for name in featureNames + categorical where !header.contains(name) {
            throw CohortError("\(input): no column '\(name)' (columns: \(header.joined(separator: ", ")))")
        }
        guard !featureNames.contains(label) else { throw CohortError("\(input): '\(label)' is the label; it cannot be a feature too") }
        guard !featureNames.isEmpty else { throw CohortError("\(input): no feature columns") }
        var rows: [[String]] = []
        for (offset, line) in lines.enumerated().dropFirst() {
            let row = try fields(line, file: input, line: offset + 1)
            guard row.count == header.count else {
                throw CohortError("\(input): line \(offset + 1) has \(row.count) fields, the header \(header.count)")
            }
            rows.append(row)
        }
        guard rows.count >= 2 else { throw CohortError("\(input): \(rows.count) data rows are too few") }

        // Feature columns: numbers, or one-hot columns for a categorical one.
        var columns: [String] = []
        var encoders: [(index: Int, values: [String]?)] = []
        for name in featureNames {
            let index = header.firstIndex(of: name)!
            if categorical.contains(name) {
                let values = Array(Set(rows.map { $0[index] })).sorted()
                columns += values.map { "\(name)=\($0)" }
                encoders.append((index, values))
            } else {
                columns.append(name)
                encoders.append((index, nil))
            }
        }
        var features = [Float](repeating: 0, count: rows.count * columns.count)
        for (r, row) in rows.enumerated() {
            var c = 0
            for encoder in encoders {
                let field = row[encoder.index]
                if let values = encoder.values {
                    features[r * columns.count + c + values.firstIndex(of: field)!] = 1
                    c += values.count
                } else {
                    guard let value = Float(field.trimmingCharacters(in: .whitespaces)), value.isFinite else {
                        throw CohortError("\(input): line \(r + 2): column '\(header[encoder.index])' holds '\(field)', not a number (list it in --categorical?)")
                    }
                    features[r * columns.count + c] = value
                    c += 1
                }
            }
        }

        // Labels: classes (sorted distinct values) or float targets.
        var classNames: [String]?
        var classLabels: [Int64] = []
        var targets: [Float] = []
        if regression {
            for (r, row) in rows.enumerated() {
                guard let value = Float(row[labelIndex].trimmingCharacters(in: .whitespaces)), value.isFinite else {
                    throw CohortError("\(input): line \(r + 2): label '\(row[labelIndex])' is not a number (regression)")
                }
                targets.append(value)
            }
        } else {
            let raw = rows.map { $0[labelIndex].trimmingCharacters(in: .whitespaces) }
            let distinct = Array(Set(raw))
            // Numbers sort as numbers (2 before 10), anything else as text.
            let names = distinct.allSatisfy({ Double($0) != nil }) ? distinct.sorted { Double($0)! < Double($1)! } : distinct.sorted()
            guard names.count >= 2 else { throw CohortError("\(input): the label column '\(label)' has a single value; nothing to classify") }
            guard names.count <= 1000 else {
                throw CohortError("\(input): the label column '\(label)' has \(names.count) distinct values; for a number to predict use --regression")
            }
            classNames = names
            let index = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, Int64($0)) })
            classLabels = raw.map { index[$0]! }
        }

        // A seeded shuffle, then the last `validation` fraction held out.
        var order = Array(0..<rows.count)
        var generator = Generator(seed: seed)
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, generator.nextIndex(below: i + 1)) }
        let validationCount = Int((Double(rows.count) * validation).rounded())
        let trainCount = rows.count - validationCount
        guard trainCount >= 1, validation == 0 || validationCount >= 1 else {
            throw CohortError("\(input): \(rows.count) rows are too few to hold out \(validation)")
        }
        // Per-column statistics of the training rows only (what standardization may use).
        let width = columns.count
        var mean = [Double](repeating: 0, count: width), std = [Double](repeating: 0, count: width)
        for r in order.prefix(trainCount) { for c in 0..<width { mean[c] += Double(features[r * width + c]) } }
        for c in 0..<width { mean[c] /= Double(trainCount) }
        for r in order.prefix(trainCount) { for c in 0..<width { let d = Double(features[r * width + c]) - mean[c]; std[c] += d * d } }
        for c in 0..<width { std[c] = (std[c] / Double(trainCount)).squareRoot(); if std[c] == 0 { std[c] = 1 } }

        try makeDirectories(outputDirectory, for: "the prepared table")
        var files: [String] = []
        for (split, indices) in [("train", Array(order.prefix(trainCount))), ("validation", Array(order.dropFirst(trainCount)))] where !indices.isEmpty {
            let path = "\(outputDirectory)/\(split == "train" ? "train" : "val").h5"
            let temporary = path + ".tmp-\(getpid())"
            do {
                let file = try HDF5File.create(temporary)
                try file.write("features", indices.flatMap { r in features[(r * width)..<((r + 1) * width)] }, shape: [indices.count, width])
                if regression {
                    try file.write("labels", indices.map { targets[$0] }, shape: [indices.count])
                } else {
                    try file.write("labels", indices.map { classLabels[$0] }, shape: [indices.count])
                    try file.setAttribute("class_names", classNames!)
                    try file.setAttribute("num_classes", [Int64(classNames!.count)])
                }
                try file.setAttribute("columns", columns)
                try file.setAttribute("label", label)
                try file.setAttribute("mean", mean)
                try file.setAttribute("std", std)
                try file.setAttribute("source", URL(fileURLWithPath: input).lastPathComponent)
                try file.setAttribute("split", split)
                try file.setAttribute("format", "cohort-dataset")
                try file.flush()
                file.close()
            }
            try replaceItem(at: path, with: temporary)
            files.append(path)
        }
        return Summary(trainRows: trainCount, validationRows: validationCount, columns: columns, classNames: classNames, files: files)
    }

    /// The fields of one CSV line: commas separate, double quotes enclose a field (a doubled
    /// quote inside is one quote).
    static func fields(_ line: Substring, file: String, line number: Int) throws -> [String] {
        var fields: [String] = []
        var field = ""
        var quoted = false
        var index = line.startIndex
        while index < line.endIndex {
            let character = line[index]
            if quoted {
                if character == "\"" {
                    let next = line.index(after: index)
                    if next < line.endIndex, line[next] == "\"" { field.append("\""); index = next } else { quoted = false }
                } else {
                    field.append(character)
                }
            } else if character == "\"" && field.isEmpty {
                quoted = true
            } else if character == "," {
                fields.append(field)
                field = ""
            } else {
                field.append(character)
            }
            index = line.index(after: index)
        }
        guard !quoted else { throw CohortError("\(file): line \(number): a quoted field is not closed") }
        fields.append(field)
        return fields
    }
}
