import Foundation

/// One key of a config section: its YAML name, how it is read into the section, and how it is
/// written back. A section's keys are one table (`ConfigSection.keys`) that both reading and
/// writing go through; a key's default is the section's own value before it is read (its Swift
/// initializer's default), so it is stated nowhere else. A new key: the property with its
/// default, one line in the table, one row in configs/README.md.
struct ConfigKey<Section> {
    let name: String
    let read: (ConfigMap, inout Section) throws -> Void
    /// The value as YAML; nil leaves the key out (an optional that is unset).
    let write: (Section) -> String?
}

extension ConfigKey {
    static func int(_ name: String, _ path: WritableKeyPath<Section, Int>, _ range: ClosedRange<Int>) -> ConfigKey {
        ConfigKey(name: name, read: { map, section in section[keyPath: path] = try map.int(name, default: section[keyPath: path], range: range) },
                  write: { "\($0[keyPath: path])" })
    }

    /// An integer that may be left unset; `check` says what is wrong with a value, or nil.
    static func int(_ name: String, _ path: WritableKeyPath<Section, Int?>, check: @escaping (Int) -> String?) -> ConfigKey {
        ConfigKey(name: name, read: { map, section in
            section[keyPath: path] = try map.int(name).map { value in
                if let problem = check(value) { throw map.error(name, problem) }
                return value
            }
        }, write: { $0[keyPath: path].map { "\($0)" } })
    }

    static func double(_ name: String, _ path: WritableKeyPath<Section, Double>, _ range: ClosedRange<Double>) -> ConfigKey {
        ConfigKey(name: name, read: { map, section in
            section[keyPath: path] = try map.double(name, default: section[keyPath: path], range: range)
        }, write: { "\($0[keyPath: path])" })
    }

    /// A float32 setting, read as a number in `range`.
    static func float(_ name: String, _ path: WritableKeyPath<Section, Float>, _ range: ClosedRange<Double>) -> ConfigKey {
        ConfigKey(name: name, read: { map, section in
            guard map.has(name) else { return }
            section[keyPath: path] = Float(try map.double(name, default: 0, range: range))
        }, write: { "\($0[keyPath: path])" })
    }

    static func bool(_ name: String, _ path: WritableKeyPath<Section, Bool>) -> ConfigKey {
        ConfigKey(name: name, read: { map, section in section[keyPath: path] = try map.bool(name, default: section[keyPath: path]) },
                  write: { "\($0[keyPath: path])" })
    }

    /// One of an enumeration's raw values, offered in its case order.
    static func choice<Value: RawRepresentable & CaseIterable>(_ name: String, _ path: WritableKeyPath<Section, Value>) -> ConfigKey
        where Value.RawValue == String {
        ConfigKey(name: name, read: { map, section in
            let chosen = try map.choice(name, Value.allCases.map(\.rawValue), default: section[keyPath: path].rawValue)
            guard let value = Value(rawValue: chosen) else { throw map.error(name, "unknown value '\(chosen)'") }
            section[keyPath: path] = value
        }, write: { $0[keyPath: path].rawValue })
    }

    static func string(_ name: String, _ path: WritableKeyPath<Section, String>) -> ConfigKey {
        ConfigKey(name: name, read: { map, section in section[keyPath: path] = try map.string(name, default: section[keyPath: path]) },
                  write: { yamlQuoted($0[keyPath: path]) })
    }

    static func string(_ name: String, _ path: WritableKeyPath<Section, String?>) -> ConfigKey {
        ConfigKey(name: name, read: { map, section in section[keyPath: path] = try map.string(name) },
                  write: { $0[keyPath: path].map(yamlQuoted) })
    }

    static func numbers(_ name: String, _ path: WritableKeyPath<Section, [Double]?>) -> ConfigKey {
        ConfigKey(name: name, read: { map, section in section[keyPath: path] = try map.doubles(name) },
                  write: { $0[keyPath: path].map { "[" + $0.map { "\($0)" }.joined(separator: ", ") + "]" } })
    }
}

/// A config section read and written through its table of keys.
protocol ConfigSection {
    static var keys: [ConfigKey<Self>] { get }
}

extension ConfigSection {
    /// Reads every key of the table present in `map` over `defaults`, in the table's order.
    /// The caller checks what spans keys, then calls `map.finish()` (unknown keys are refused there).
    static func read(_ map: ConfigMap, over defaults: Self) throws -> Self {
        var section = defaults
        for key in keys { try key.read(map, &section) }
        return section
    }

    /// `read`, then every key of `map` must have been one of the table's.
    static func parse(_ map: ConfigMap, over defaults: Self) throws -> Self {
        let section = try read(map, over: defaults)
        try map.finish()
        return section
    }

    /// The section's keys as YAML lines under their section ("  key: value"), sorted by key.
    var yamlLines: [String] {
        Self.keys.compactMap { key in key.write(self).map { (key.name, $0) } }.sorted { $0.0 < $1.0 }.map { "  \($0.0): \($0.1)" }
    }
}
