import Foundation
import XCTest

/// The folders of `Sources/Cohort` depend on each other one way, in the order data flows: a
/// file may use what its own folder and the folders before it declare, never what a later
/// folder declares. (One module, so the compiler cannot tell; this test reads the sources.)
final class DependencyDirectionTests: XCTestCase {
    static let order = ["Support", "Communication", "HDF5", "Data", "Model", "Loss", "Optimizer", "Reporting", "Config",
                        "Checkpoint", "Training", "Generation"]

    func test_foldersDependOnlyOnEarlierFolders() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources/Cohort")
        let folders = try FileManager.default.contentsOfDirectory(atPath: root.path).sorted()
        XCTAssertEqual(Set(folders), Set(Self.order), "every folder of Sources/Cohort has its place in the order")
        var sources: [(folder: String, file: String, text: String)] = []
        for folder in folders {
            for file in try FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent(folder).path).sorted()
            where file.hasSuffix(".swift") {
                let text = try String(contentsOf: root.appendingPathComponent("\(folder)/\(file)"), encoding: .utf8)
                sources.append((folder, file, Self.code(text)))
            }
        }
        // Top-level types and free functions, by the folder that declares them. A function name
        // some type also declares as a method is left out (a call cannot be told apart by name).
        let typePattern = try NSRegularExpression(pattern: #"^(?:public |internal |open )?(?:final )?(?:indirect )?(?:class|struct|enum|protocol|typealias|actor) ([A-Z]\w*)"#,
                                                  options: .anchorsMatchLines)
        let functionPattern = try NSRegularExpression(pattern: #"^(?:public |internal )?func ([a-z]\w*)"#, options: .anchorsMatchLines)
        let methodPattern = try NSRegularExpression(pattern: #"^[ \t]+(?:(?:public|internal|private|fileprivate|static|override|mutating|@\w+) )*func ([a-z]\w*)"#,
                                                    options: .anchorsMatchLines)
        var owner: [String: String] = [:]
        var methods = Set<String>()
        for source in sources {
            for name in Self.captures(typePattern, in: source.text) { owner[name] = owner[name] ?? source.folder }
            for name in Self.captures(functionPattern, in: source.text) { owner[name + "("] = owner[name + "("] ?? source.folder }
            methods.formUnion(Self.captures(methodPattern, in: source.text))
        }
        for name in methods { owner[name + "("] = nil }
        XCTAssertGreaterThan(owner.count, 100, "the declarations were found")
        // Free functions too: a method pattern that crossed blank lines (`^\s+`) once took 36 of 38 for methods.
        let functions = owner.keys.filter { $0.hasSuffix("(") }.count
        print("dependency direction: \(owner.count - functions) types and \(functions) free functions checked")
        XCTAssertGreaterThan(functions, 30, "the free functions were found")

        var violations: [String] = []
        for source in sources {
            let position = try XCTUnwrap(Self.order.firstIndex(of: source.folder))
            for (name, folder) in owner where Self.order.firstIndex(of: folder)! > position {
                let pattern = name.hasSuffix("(") ? #"(?<![\w.])(?<!func )"# + NSRegularExpression.escapedPattern(for: String(name.dropLast())) + #"\("#
                                                  : #"\b"# + NSRegularExpression.escapedPattern(for: name) + #"\b"#
                if try NSRegularExpression(pattern: pattern).firstMatch(in: source.text, range: NSRange(source.text.startIndex..., in: source.text)) != nil {
                    violations.append("\(source.folder)/\(source.file) uses \(name.hasSuffix("(") ? name + ")" : name) from \(folder)")
                }
            }
        }
        XCTAssertEqual(violations.sorted(), [], "order: \(Self.order.joined(separator: " → "))")
    }

    /// The text without comments and string literals.
    static func code(_ text: String) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            var kept = ""
            var inString = false
            var previous: Character = " "
            for character in line {
                if !inString && character == "/" && previous == "/" { kept.removeLast(); break }
                if character == "\"" && previous != "\\" { inString.toggle(); kept.append("\""); previous = character; continue }
                if !inString { kept.append(character) }
                previous = character
            }
            return kept
        }.joined(separator: "\n")
    }

    static func captures(_ pattern: NSRegularExpression, in text: String) -> [String] {
        pattern.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap { match in
            Range(match.range(at: 1), in: text).map { String(text[$0]) }
        }
    }
}
