import ArgumentParser
import Cohort
import Foundation

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe an HDF5 file: groups, datasets (shape, type, chunks), attributes, and the label histogram."
    )

    @Argument(help: "An HDF5 file (a dataset or a checkpoint).")
    var file: String

    @Option(help: "Integer dataset to histogram.")
    var labels: String = "labels"

    func run() throws {
        reportingErrors {
            let h5 = try HDF5File.open(file)
            printLine(file)
            for name in h5.attributeNames() { printLine("  @\(name) = \(abbreviate(h5.describeAttribute(name)))") }
            try walk(h5, group: "/", depth: 1)
            if TokenCorpus.isTokenFile(file) {
                // A token file: its length, vocabulary and the start of its text.
                let corpus = try TokenCorpus(path: file, cache: false)
                printLine("token file: \(corpus.count) tokens, vocabulary \(corpus.vocabulary.count) (\(corpus.tokenizer))")
                let shown = corpus.vocabulary.prefix(96).map { String(reflecting: $0).dropFirst().dropLast() }.joined(separator: " ")
                printLine("  vocabulary: \(shown)\(corpus.vocabulary.count > 96 ? " …" : "")")
                let shownCount = min(200, corpus.count)
                let excerpt = try corpus.withTokens(start: 0, length: shownCount) { ids in try corpus.decode((0..<shownCount).map { Int(ids[$0]) }) }
                printLine("  first \(shownCount) tokens: \(String(reflecting: excerpt))")
            }
            if h5.exists(labels), let dataset = try? h5.dataset(labels), case .integer = dataset.elementType, dataset.shape.count == 1 {
                let values: [Int64] = try dataset.readAll()
                var counts: [Int64: Int] = [:]
                for value in values { counts[value, default: 0] += 1 }
                let names = (try? h5.stringsAttribute("class_names")) ?? []
                printLine("label histogram of \(labels) (\(values.count) rows):")
                for (value, count) in counts.sorted(by: { $0.key < $1.key }) {
                    let name = value >= 0 && Int(value) < names.count ? "  \(names[Int(value)])" : ""
                    printLine(String(format: "  %6lld %8d", value, count) + name)
                }
            }
        }
    }

    private func walk(_ h5: HDF5File, group: String, depth: Int) throws {
        let indent = String(repeating: "  ", count: depth)
        for member in try h5.members(of: group) {
            let path = group == "/" ? member : "\(group)/\(member)"
            if h5.isGroup(path) {
                printLine("\(indent)\(member)/")
                for name in h5.attributeNames(on: path) { printLine("\(indent)  @\(name) = \(abbreviate(h5.describeAttribute(name, on: path)))") }
                try walk(h5, group: path, depth: depth + 1)
            } else {
                let dataset = try h5.dataset(path)
                let chunks = dataset.chunkShape.map { "chunks \($0)" } ?? "contiguous"
                printLine("\(indent)\(member)  \(dataset.elementType) \(dataset.shape)  \(chunks)")
                for name in h5.attributeNames(on: path) { printLine("\(indent)  @\(name) = \(abbreviate(h5.describeAttribute(name, on: path)))") }
            }
        }
    }

    private func abbreviate(_ text: String) -> String {
        let oneLine = text.replacingOccurrences(of: "\n", with: "⏎")
        return oneLine.count > 120 ? String(oneLine.prefix(117)) + "…" : oneLine
    }
}
