import Foundation
import Yams

/// Reads one YAML mapping of a config and remembers which keys were asked for, so that a key
/// nobody asked for (a typo such as `optimzer`) is an error naming the file, line and path,
/// instead of a silently ignored setting.
public final class ConfigMap {
    let file: String
    let path: String
    private let mapping: Node.Mapping
    private var used: Set<String> = []

    public init(_ node: Node, file: String, path: String) throws {
        guard case .mapping(let mapping) = node else {
            throw CohortError("\(file): \(path.isEmpty ? "the document" : path) must be a mapping of keys to values")
        }
        self.file = file
        self.path = path
        self.mapping = mapping
    }

    public func keyPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    public func node(_ key: String) -> Node? {
        used.insert(key)
        return mapping[key]
    }

    /// Blames the file and line of the value, or the `--set` that gave it (values from the
    /// command line carry no position).
    public func error(_ key: String, _ message: String) -> CohortError {
        guard let node = node(key), let mark = node.mark else {
            return has(key) ? CohortError("--set \(keyPath(key)): \(message)") : CohortError("\(file): \(keyPath(key)): \(message)")
        }
        return CohortError("\(file):\(mark.line): \(keyPath(key)): \(message)")
    }

    public func has(_ key: String) -> Bool { mapping[key] != nil }

    public func string(_ key: String) throws -> String? {
        guard let node = node(key) else { return nil }
        guard case .scalar(let scalar) = node else { throw error(key, "expected a text value") }
        if node.null != nil { return nil }
        return scalar.string
    }

    public func string(_ key: String, default value: String) throws -> String { try string(key) ?? value }

    public func requiredString(_ key: String) throws -> String {
        guard let value = try string(key) else { throw CohortError("\(file): missing key \(keyPath(key))") }
        return value
    }

    public func choice(_ key: String, _ choices: [String], default value: String) throws -> String {
        let chosen = try string(key, default: value)
        guard choices.contains(chosen) else {
            throw error(key, "'\(chosen)' is not one of \(choices.joined(separator: ", "))")
        }
        return chosen
    }

    public func int(_ key: String) throws -> Int? {
        guard let node = node(key) else { return nil }
        if node.scalar?.string == "null" || node.scalar?.string == "~" { return nil }
        guard case .scalar = node, let value = node.int else {
            throw error(key, "expected an integer, found '\(node.scalar?.string ?? "a collection")'")
        }
        return value
    }

    public func int(_ key: String, default value: Int, range: ClosedRange<Int> = Int.min...Int.max) throws -> Int {
        let chosen = try int(key) ?? value
        guard range.contains(chosen) else { throw error(key, "\(chosen) is outside \(describe(range))") }
        return chosen
    }

    public func double(_ key: String, default value: Double, range: ClosedRange<Double> = -Double.greatestFiniteMagnitude...Double.greatestFiniteMagnitude) throws -> Double {
        guard let node = node(key) else { return value }
        guard case .scalar = node, let chosen = node.float, chosen.isFinite else {
            throw error(key, "expected a number, found '\(node.scalar?.string ?? "a collection")'")
        }
        guard range.contains(chosen) else { throw error(key, "\(chosen) is outside [\(range.lowerBound), \(range.upperBound)]") }
        return chosen
    }

    public func bool(_ key: String, default value: Bool) throws -> Bool {
        guard let node = node(key) else { return value }
        guard case .scalar = node, let chosen = node.bool else {
            throw error(key, "expected true or false, found '\(node.scalar?.string ?? "a collection")'")
        }
        return chosen
    }

    public func doubles(_ key: String) throws -> [Double]? {
        guard let nodes = try list(key) else { return nil }
        return try nodes.map { node in
            guard case .scalar = node, let value = node.float, value.isFinite else { throw error(key, "expected a list of numbers") }
            return value
        }
    }

    public func strings(_ key: String) throws -> [String]? {
        guard let nodes = try list(key) else { return nil }
        return try nodes.map { node in
            guard case .scalar(let scalar) = node else { throw error(key, "expected a list of names") }
            return scalar.string
        }
    }

    public func map(_ key: String) throws -> ConfigMap? {
        guard let node = node(key) else { return nil }
        return try ConfigMap(node, file: file, path: keyPath(key))
    }

    public func list(_ key: String) throws -> [Node]? {
        guard let node = node(key) else { return nil }
        guard case .sequence(let sequence) = node else { throw error(key, "expected a list") }
        return Array(sequence)
    }

    /// Call once every key has been read: any key left over is a mistake of the user's.
    public func finish() throws {
        for (keyNode, _) in mapping {
            let key = keyNode.string ?? "?"
            if !used.contains(key) {
                guard let mark = keyNode.mark else { throw CohortError("--set \(keyPath(key)): unknown key '\(keyPath(key))'") }
                throw CohortError("\(file):\(mark.line): unknown key '\(keyPath(key))'")
            }
        }
    }

    private func describe(_ range: ClosedRange<Int>) -> String {
        if range.upperBound == Int.max { return "the allowed range (at least \(range.lowerBound))" }
        return "[\(range.lowerBound), \(range.upperBound)]"
    }
}

/// Parses YAML text to a node, turning libyaml's errors into one-line messages.
func parseYAML(_ text: String, file: String) throws -> Node {
    do {
        guard let node = try Yams.compose(yaml: text) else { throw CohortError("\(file): the file is empty") }
        // Aliases are expanded wherever they are used: a few hundred bytes of nested aliases can
        // stand for millions of values. No config needs more than a few thousand.
        var budget = 100_000
        guard withinBudget(node, &budget) else {
            throw CohortError("\(file): the document expands to more than 100,000 values (nested YAML aliases?); a config is far smaller")
        }
        try refuseDuplicateKeys(node, file: file, path: "")
        return node
    } catch let error as CohortError {
        throw error
    } catch let error as YamlError {
        throw CohortError("\(file): malformed YAML: \(String(describing: error).split(separator: "\n").joined(separator: " "))")
    } catch {
        throw CohortError("\(file): malformed YAML: \(error)")
    }
}

/// Counts the values of a document down from `budget`, stopping as soon as it is spent.
private func withinBudget(_ node: Node, _ budget: inout Int) -> Bool {
    budget -= 1
    guard budget >= 0 else { return false }
    switch node {
    case .mapping(let mapping):
        for (key, value) in mapping where !withinBudget(key, &budget) || !withinBudget(value, &budget) { return false }
    case .sequence(let sequence):
        for item in sequence where !withinBudget(item, &budget) { return false }
    default:
        break
    }
    return true
}

/// A key given twice in one mapping (YAML keeps the last without a word) is an error naming both lines.
private func refuseDuplicateKeys(_ node: Node, file: String, path: String) throws {
    switch node {
    case .mapping(let mapping):
        var seen: [String: Int] = [:]
        for (key, value) in mapping {
            let name = key.string ?? "\(key)"
            let line = (key.mark?.line ?? 0)
            if let first = seen[name] {
                throw CohortError("\(file):\(line): \(path.isEmpty ? name : "\(path).\(name)") is given twice (first on line \(first))")
            }
            seen[name] = line
            try refuseDuplicateKeys(value, file: file, path: path.isEmpty ? name : "\(path).\(name)")
        }
    case .sequence(let sequence):
        for (index, item) in sequence.enumerated() { try refuseDuplicateKeys(item, file: file, path: "\(path)[\(index)]") }
    default:
        break
    }
}

private func withoutMarks(_ node: Node) -> Node {
    switch node {
    case .scalar(var scalar):
        scalar.mark = nil
        return .scalar(scalar)
    case .mapping(var mapping):
        mapping.mark = nil
        return .mapping(Node.Mapping(mapping.map { (withoutMarks($0.key), withoutMarks($0.value)) }, mapping.tag, mapping.style))
    case .sequence(var sequence):
        sequence.mark = nil
        return .sequence(Node.Sequence(sequence.map(withoutMarks), sequence.tag, sequence.style))
    }
}

/// Applies `--set a.b.c=value` to a parsed config: the value is read as YAML (so `3`, `true`,
/// `[1, 2]` have their types); missing intermediate mappings are created.
func applyOverride(_ assignment: String, to root: inout Node) throws {
    guard let equals = assignment.firstIndex(of: "="), equals != assignment.startIndex else {
        throw CohortError("--set \(assignment): expected key=value")
    }
    let keys = assignment[..<equals].split(separator: ".").map(String.init)
    let valueText = String(assignment[assignment.index(after: equals)...])
    // Without positions: an error in the value is then blamed on the --set, not on a line of the file.
    let value = withoutMarks((try? Yams.compose(yaml: valueText)).flatMap { $0 } ?? Node(""))
    func assign(_ node: inout Node, _ keys: ArraySlice<String>) throws {
        guard case .mapping(var mapping) = node else {
            throw CohortError("--set \(assignment): '\(keys.first ?? "")' is not inside a mapping")
        }
        let key = keys.first!
        if keys.count == 1 {
            mapping[key] = value
        } else {
            var child = mapping[key] ?? Node([(Node, Node)]())
            try assign(&child, keys.dropFirst())
            mapping[key] = child
        }
        node = .mapping(mapping)
    }
    guard !keys.isEmpty else { throw CohortError("--set \(assignment): empty key") }
    try assign(&root, keys[...])
}
