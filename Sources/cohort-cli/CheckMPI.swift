import ArgumentParser
import Cohort
import Foundation

struct CheckMPI: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-mpi",
        abstract: "Show where every rank runs and measure the all-reduce between them.",
        discussion: """
        Rank 0 prints one line per rank (host name, network namespace, process id, BLAS threads and
        kernels). It checks that MPI_Allreduce, and Cohort's own all-reduce where the ranks share
        nodes, give every rank the exact sums (exit status 1 naming the ranks otherwise), then
        times MPI_Allreduce (sum) of 4 KiB to 16 MiB of floats: the median of --repeats runs, and
        the bus bandwidth 2·(n−1)/n · bytes / time that ring all-reduce reaches. A "cohort
        all-reduce" line follows each size: the same sum as training makes it, through node shared
        memory. Run it under mpirun like training, e.g. launch/cohort-mpirun -n 2 check-mpi
        """
    )

    @Option(help: "Timed repetitions per message size.")
    var repeats: Int = 50

    @Option(help: "Also time an all-reduce of exactly this many floats (e.g. a model's parameter count); repeatable.")
    var floats: [Int] = []

    @Flag(help: "Before each timed all-reduce, stream through 256 MB and write the buffer, as a training step leaves the caches.")
    var cold = false

    func run() throws {
        let communicator = MPICommunicator()
        defer { communicator.finalize() }
        let namespace = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")) ?? "?"
        let description = "rank \(communicator.rank): host \(ProcessInfo.processInfo.hostName), netns \(namespace), pid \(getpid()), BLAS \(blasDescription())"
        let lines = communicator.gatherStrings(description, root: 0)
        if communicator.isRoot { lines.forEach(printLine) }
        // Exact sums first, with sizes that leave some ranks of a node no slice (1, 5) or odd ones.
        for count in [1, 5, 1021, 1_000_003] + floats.filter({ $0 > 0 }) {
            for shared in [false, true] {
                guard let wrong = checkAllReduce(communicator, floats: count, shared: shared), !wrong.isEmpty else { continue }
                let method = shared ? "cohort all-reduce" : "MPI_Allreduce"
                if communicator.isRoot { printError("cohort: \(method) of \(count) floats gave wrong sums on rank(s) \(wrong.map(String.init).joined(separator: ", "))") }
                throw ExitCode(1)
            }
        }
        let shared = communicator.nodeMemory?.makeReductionBuffer(count: 1)  // collective: every rank asks
        if communicator.isRoot {
            printLine("all-reduce sums exact on every rank: MPI_Allreduce" + (shared.map { ", cohort all-reduce (\($0.description))" } ?? ""))
        }
        let extra = floats.filter { $0 > 0 }.map { $0 * 4 }
        for bytes in [4 << 10, 64 << 10, 1 << 20, 16 << 20] + extra {
            for shared in [false, true] {
                guard let seconds = measureAllReduce(communicator, floats: bytes / 4, repeats: max(repeats, 1), cold: cold, shared: shared),
                      communicator.isRoot else { continue }
                let n = Double(communicator.size)
                let busBandwidth = n > 1 ? 2 * (n - 1) / n * Double(bytes) / seconds / 1e9 : 0
                printLine((shared ? "cohort all-reduce " : "allreduce ")
                          + String(format: "%8d bytes: %9.1f µs  bus bandwidth %6.2f GB/s", bytes, seconds * 1e6, busBandwidth))
            }
        }
    }
}

struct CheckBLAS: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-blas",
        abstract: "Measure single-precision GEMM speed (GFLOP/s) with the BLAS threads of this process.",
        discussion: "The peak that model-FLOP utilisation is measured against: OPENBLAS_NUM_THREADS=1 cohort check-blas"
    )

    @Option(help: "Matrix size n of the n×n·n×n product.")
    var size: Int = 1024

    @Option(help: "Timed repetitions (the median is reported).")
    var repeats: Int = 10

    @Option(name: .customLong("verify"), help: ArgumentHelp(
        "Instead of timing: check every SGEMM that CONFIG's model makes in a training step against float64.",
        discussion: "Each distinct call (shape, transposes, strides, alpha, beta) of one forward and backward at the "
            + "config's per-rank batch, with its threads, every element within float32's rounding bound. Exit 1 if any is not.",
        valueName: "CONFIG"))
    var verifyConfig: String?

    @Option(name: .customLong("set"), help: "Override a config key of --verify's CONFIG, as for train.")
    var overrides: [String] = []

    func run() throws {
        if let verifyConfig { return try verify(verifyConfig) }
        printLine("BLAS \(blasDescription())")
        for (m, n, k) in [(size, size, size), (64, 256, 784), (784, 256, 64), (64, 784, 256)] {
            let gflops = measureGEMM(m: m, n: n, k: k, repeats: max(repeats, 1))
            printLine(String(format: "sgemm %5d×%5d×%5d: %7.1f GFLOP/s", m, n, k, gflops))
        }
    }

    private func verify(_ path: String) throws {
        var failed = false
        reportingErrors {
            let config = try TrainConfig.load(path: path, overrides: overrides).resolvingPublishedModel()
            LayerThreads.use(config.training.threads ?? LayerThreads.boundCores())
            var dataConfig = config.data
            dataConfig.checkFinite = false
            let data = try openSamples(path: config.data.train, config: dataConfig, phase: .zero, seed: config.seed, cache: false)
            let batch = config.training.batchSize
            let model = try Model(inputShape: data.sampleShape, layers: config.layers, maxBatch: batch, seed: config.seed,
                                  recomputeBlocks: config.training.recompute == .blocks)
            BLASCalls.startRecording()
            _ = LayerProfile.measure(model, batch: batch, steps: 1)
            let calls = BLASCalls.stopRecording()
            printLine("\(path): \(calls.count) distinct SGEMM calls in a step of batch \(batch), \(LayerThreads.count) thread(s); "
                      + BLASCheck.kernelsAndCPU())
            for verdict in BLASCheck.verify(calls) {
                printLine(String(format: "%@  worst error %.3f of the float32 bound  %@", verdict.call.description, verdict.worstFraction,
                                 verdict.passed ? "ok" : "WRONG"))
                if !verdict.passed { failed = true; printError("cohort: \(verdict.failureLine)") }
            }
            printLine(failed ? "the BLAS library computes wrong results for this model on this CPU"
                             : "every element of every call within float32 rounding of float64")
        }
        if failed { throw ExitCode(1) }
    }
}
