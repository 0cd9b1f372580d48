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
        let (header, rows) = try readTable(input)
        guard let labelIndex = header.firstIndex(of: label) else {
            throw CohortError("\(input): no column '\(label)' (columns: \(header.joined(separator: ", ")))")
        }
        let featureNames = selected ?? header.filter { $0 != label }
        for name in featureNames + categorical where !header.contains(name) {
            throw CohortError("\(input): no column '\(name)' (columns: \(header.joined(separator: ", ")))")
        }
        guard !featureNames.contains(label) else { throw CohortError("\(input): '\(label)' is the label; it cannot be a feature too") }
        guard !featureNames.isEmpty else { throw CohortError("\(input): no feature columns") }
        let (columns, features) = try encodeFeatures(rows, header: header, names: featureNames, categorical: categorical, input: input)
        let labels = try encodeLabels(rows.map { $0[labelIndex] }, regression: regression, label: label, input: input)

        // A seeded shuffle, then the last `validation` fraction held out.
        var order = Array(0..<rows.count)
        var generator = Generator(seed: seed)
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, generator.nextIndex(below: i + 1)) }
        let validationCount = Int((Double(rows.count) * validation).rounded())
        let trainCount = rows.count - validationCount
        guard trainCount >= 1, validation == 0 || validationCount >= 1 else {
            throw CohortError("\(input): \(rows.count) rows are too few to hold out \(validation)")
        }
        let width = columns.count
        let (mean, std) = statistics(features, width: width, rows: order.prefix(trainCount))
        try makeDirectories(outputDirectory, for: "the prepared table")
        var files: [String] = []
        for (split, indices) in [("train", Array(order.prefix(trainCount))), ("validation", Array(order.dropFirst(trainCount)))] where !indices.isEmpty {
            let path = "\(outputDirectory)/\(split == "train" ? "train" : "val").h5"
            let temporary = path + ".tmp-\(getpid())"
            let file = try HDF5File.create(temporary)
            try file.write("features", indices.flatMap { r in features[(r * width)..<((r + 1) * width)] }, shape: [indices.count, width])
            switch labels {
            case .targets(let targets):
                try file.write("labels", indices.map { targets[$0] }, shape: [indices.count])
            case .classes(let names, let ids):
                try file.write("labels", indices.map { ids[$0] }, shape: [indices.count])
                try file.setAttribute("class_names", names)
                try file.setAttribute("num_classes", [Int64(names.count)])
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
            try replaceItem(at: path, with: temporary)
            files.append(path)
        }
        return Summary(trainRows: trainCount, validationRows: validationCount, columns: columns, classNames: labels.classNames, files: files)
    }

    /// The header's column names and the data rows, each with as many fields as the header.
    private static func readTable(_ input: String) throws -> (header: [String], rows: [[String]]) {
        guard let data = FileManager.default.contents(atPath: input) else { throw CohortError("\(input): cannot read the file") }
        guard let text = String(data: data, encoding: .utf8) else { throw CohortError("\(input): not UTF-8 text") }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasSuffix("\r") ? $0.dropLast() : $0 }
        while lines.last?.isEmpty == true { lines.removeLast() }
        guard let headerLine = lines.first else { throw CohortError("\(input): the file is empty") }
        let header = try fields(headerLine, file: input, line: 1)
        guard Set(header).count == header.count else { throw CohortError("\(input): line 1: a column name appears twice") }
        var rows: [[String]] = []
        for (offset, line) in lines.enumerated().dropFirst() {
            let row = try fields(line, file: input, line: offset + 1)
            guard row.count == header.count else {
                throw CohortError("\(input): line \(offset + 1) has \(row.count) fields, the header \(header.count)")
            }
            rows.append(row)
        }
        guard rows.count >= 2 else { throw CohortError("\(input): \(rows.count) data rows are too few") }
        return (header, rows)
    }

    /// The feature columns' names and the [rows, columns] values: numbers, or one 0/1 column per
    /// value of a categorical column (`name=value`).
    private static func encodeFeatures(_ rows: [[String]], header: [String], names: [String], categorical: [String],
                                       input: String) throws -> (columns: [String], values: [Float]) {
        var columns: [String] = []
        var encoders: [(index: Int, values: [String: Int]?)] = []
        for name in names {
            guard let index = header.firstIndex(of: name) else { continue }
            if categorical.contains(name) {
                let values = Array(Set(rows.map { $0[index] })).sorted()
                columns += values.map { "\(name)=\($0)" }
                encoders.append((index, Dictionary(uniqueKeysWithValues: values.enumerated().map { ($1, $0) })))
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
                    features[r * columns.count + c + (values[field] ?? 0)] = 1
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
        return (columns, features)
    }

    /// What the label column holds: a regression's float targets, or class ids into its sorted distinct values.
    enum Labels {
        case targets([Float])
        case classes(names: [String], ids: [Int64])
        var classNames: [String]? { if case .classes(let names, _) = self { names } else { nil } }
    }

    private static func encodeLabels(_ fields: [String], regression: Bool, label: String, input: String) throws -> Labels {
        if regression {
            return .targets(try fields.enumerated().map { r, field in
                guard let value = Float(field.trimmingCharacters(in: .whitespaces)), value.isFinite else {
                    throw CohortError("\(input): line \(r + 2): label '\(field)' is not a number (regression)")
                }
                return value
            })
        }
        let raw = fields.map { $0.trimmingCharacters(in: .whitespaces) }
        let distinct = Array(Set(raw))
        // Numbers sort as numbers (2 before 10), anything else as text.
        let numbers = distinct.compactMap { name in Double(name).map { (name, $0) } }
        let names = numbers.count == distinct.count ? numbers.sorted { $0.1 < $1.1 }.map(\.0) : distinct.sorted()
        guard names.count >= 2 else { throw CohortError("\(input): the label column '\(label)' has a single value; nothing to classify") }
        guard names.count <= 1000 else {
            throw CohortError("\(input): the label column '\(label)' has \(names.count) distinct values; for a number to predict use --regression")
        }
        let index = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, Int64($0)) })
        return .classes(names: names, ids: raw.map { index[$0] ?? 0 })
    }

    /// Per-column mean and std of the training rows only (what standardization may use; a
    /// constant column's std is 1).
    private static func statistics(_ features: [Float], width: Int, rows: ArraySlice<Int>) -> (mean: [Double], std: [Double]) {
        var mean = [Double](repeating: 0, count: width), std = [Double](repeating: 0, count: width)
        for r in rows { for c in 0..<width { mean[c] += Double(features[r * width + c]) } }
        for c in 0..<width { mean[c] /= Double(rows.count) }
        for r in rows { for c in 0..<width { let d = Double(features[r * width + c]) - mean[c]; std[c] += d * d } }
        for c in 0..<width { std[c] = (std[c] / Double(rows.count)).squareRoot(); if std[c] == 0 { std[c] = 1 } }
        return (mean, std)
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
