import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One job per run directory: rank 0 holds an exclusive `flock` on `<run_dir>/.lock` (which
/// records its host and pid) for as long as the process lives; the kernel releases it when the
/// process ends, however it ends. A second job on the same directory is refused, naming the first.
public final class RunDirectoryLock {
    public let path: String
    private let descriptor: Int32

    public init(directory: String) throws {
        try makeDirectories(directory, for: "the run")
        path = "\(directory)/.lock"
        descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw CohortError("\(path): cannot open the run directory's lock: \(String(cString: strerror(errno)))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            close(descriptor)
            throw CohortError("\(directory): another job is using this run directory (\(holder.isEmpty ? "holder unknown" : holder)); wait for it or choose another run_dir")
        }
        var host = [UInt8](repeating: 0, count: 256)
        gethostname(&host, host.count - 1)
        let text = "host \(String(decoding: host.prefix { $0 != 0 }, as: UTF8.self)) pid \(getpid())\n"
        ftruncate(descriptor, 0)
        _ = text.withCString { write(descriptor, $0, strlen($0)) }
    }

    deinit { close(descriptor) }
}
