import Foundation

/// Creates `path` and any missing parents, as `mkdir -p` does. A failure is one line naming the
/// directory at fault and the system's reason, never Foundation's error text.
public func makeDirectories(_ path: String, for purpose: String) throws {
    var prefix = path.hasPrefix("/") ? "/" : ""
    for component in path.split(separator: "/", omittingEmptySubsequences: true) {
        prefix += component
        if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
            throw CohortError("\(prefix): cannot create the directory for \(purpose): \(String(cString: strerror(errno)))")
        }
        var status = stat()
        guard stat(prefix, &status) == 0 else {
            throw CohortError("\(prefix): cannot use the directory for \(purpose): \(String(cString: strerror(errno)))")
        }
        guard status.st_mode & S_IFMT == S_IFDIR else {
            throw CohortError("\(prefix): is a file, not a directory (needed for \(purpose))")
        }
        prefix += "/"
    }
}
