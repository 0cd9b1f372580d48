import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Notices a rank that stops arriving at the step's collectives (a frozen, swapped or
/// descheduled node) instead of letting the others spin in the all-reduce forever, as PyTorch's
/// gloo/NCCL watchdog and Horovod's stall check do.
///
/// Each rank keeps a record in `<run_dir>/.progress/rank-R` (no collective): the step it has
/// started (written as the step starts, and again as an epoch's end or a checkpoint starts),
/// and a heartbeat its watchdog thread writes every second (a frozen process writes none).
/// The step's last collective (or the epoch's end, the checkpoint) disarms it. A rank that stays armed for `timeout` seconds reads every
/// record, names the ranks that did not reach this step or show no sign of life, and ends its
/// process with status 1, so that mpirun ends the job; nothing is written over the last
/// checkpoint. The first rank to fire prints the line; the others leave silently.
final class StallWatchdog: @unchecked Sendable {
    let timeout: Double
    let rank: Int
    let size: Int
    let directory: String
    private let lock = NSLock()
    private var armedAt: UInt64?
    private var step = 0
    private var descriptor: Int32 = -1

    init(timeout: Double, rank: Int, size: Int, runDirectory: String) {
        self.timeout = timeout
        self.rank = rank
        self.size = size
        directory = "\(runDirectory)/.progress"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        descriptor = open("\(directory)/rank-\(rank)", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        unlink("\(directory)/stall-reported")  // a previous job's
        // Who this rank is, for the line that names it: its pid and host after step and heartbeat.
        var pid = Int64(getpid())
        var host = [CChar](repeating: 0, count: 64)
        gethostname(&host, 63)
        if descriptor >= 0 { _ = pwrite(descriptor, &pid, 8, 16); _ = pwrite(descriptor, host, 64, 24) }
        let thread = Thread { [unowned self] in self.watch() }
        thread.name = "cohort-watchdog"
        thread.start()
    }

    /// This rank has reached the collectives of `step` (1-based; 0: start-up's).
    func arm(step: Int) {
        var value = Int64(step)
        if descriptor >= 0 { _ = pwrite(descriptor, &value, 8, 0) }
        lock.withLock {
            self.step = step
            armedAt = monotonicNanoseconds()
        }
    }

    /// The step's collectives completed on this rank.
    func disarm() { lock.withLock { armedAt = nil } }

    private func watch() {
        while true {
            var now = Date().timeIntervalSince1970
            if descriptor >= 0 { _ = pwrite(descriptor, &now, 8, 8) }
            sleep(1)
            let (since, step) = lock.withLock { (armedAt, self.step) }
            guard let since, seconds(since: since) >= timeout else { continue }
            fire(step: step)
        }
    }

    private func fire(step: Int) -> Never {
        var behind: [String] = []
        var stalled = Set<Int>()
        var unknown = false
        let quiet = max(1.5, timeout / 2)
        for other in 0..<size where other != rank {
            var value: Int64 = 0
            var heartbeat = 0.0
            var pid: Int64 = 0
            var host = [CChar](repeating: 0, count: 65)
            let file = open("\(directory)/rank-\(other)", O_RDONLY)
            if file >= 0, pread(file, &value, 8, 0) == 8, pread(file, &heartbeat, 8, 8) == 8 {
                let silent = Date().timeIntervalSince1970 - heartbeat
                if value < step || silent > quiet {
                    stalled.insert(other)
                    let identity = pread(file, &pid, 8, 16) == 8 && pread(file, &host, 64, 24) == 64 && pid > 0
                        ? "pid \(pid) on \(String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)), " : ""
                    behind.append("rank \(other) (\(identity)last step \(value)"
                                  + (silent > quiet ? String(format: ", no sign of life for %.0f s)", silent) : ")"))
                }
            } else {
                unknown = true
            }
            if file >= 0 { close(file) }
        }
        // One line for the job: the first rank to fire creates the marker and prints; any other
        // leaves silently. (Electing the lowest rank not named left a job silent when that rank
        // was killed by mpirun before its own watchdog fired; and two ranks that named each
        // other both printed.)
        let marker = open("\(directory)/stall-reported", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if marker >= 0 || errno != EEXIST {
            let who = behind.isEmpty
                ? (unknown ? "ranks whose progress this rank cannot read (\(directory) is not shared?)" : "no rank is behind in its record")
                : behind.joined(separator: ", ")
            printError("cohort: stall: \(step == 0 ? "start-up (the initial synchronization)" : "step \(step)") did not complete within \(Int(timeout)) s (training.stall_timeout); "
                       + "not arrived: \(who); ending the job, the last checkpoint untouched")
        }
        _exit(1)
    }
}
