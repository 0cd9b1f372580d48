import ArgumentParser
import CCohort
import Cohort
import Foundation

@main
struct CohortCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cohort",
        abstract: "Data-parallel neural-network training over MPI, with HDF5 datasets and OpenBLAS kernels.",
        discussion: """
        Run training under mpirun, one process per rank:
          mpirun -np 2 cohort train configs/fashion-mnist-mlp.yaml
        Exit codes: 0 success, 1 an error (printed as one line), 64 a usage error,
        75 training stopped by SIGTERM/SIGUSR1 with a checkpoint written (resume with --resume auto).
        76 training stopped by SIGTERM/SIGUSR1 during start-up, before the first step: nothing written.
        """,
        version: cohortVersion,
        subcommands: [Train.self, Evaluate.self, Predict.self, Export.self, Import.self, Embed.self, Tokenize.self, Generate.self, Prepare.self, Inspect.self, Profile.self, CheckMPI.self, CheckBLAS.self]
    )

    static func main() {
        HDF5File.skipLibraryCleanupAtExit()
        // A file-size limit (ulimit -f, a quota's cousin) makes write() fail with EFBIG, which
        // Cohort reports in one line, instead of killing the process with SIGXFSZ.
        signal(SIGXFSZ, SIG_IGN)
        ensureOpenBLASUsesVectorKernels()
        // Subnormal arithmetic is ~100× slower on x86; training never needs it (optimizer.c).
        cohort_flush_denormals()
        main(nil)
    }
}

let cohortVersion = "0.1.0"

/// Runs a single-process command, turning its errors into one line and exit status 1.
func reportingErrors(_ body: () throws -> Void) {
    do {
        try body()
    } catch let error as CohortError {
        fail(error.message)
    } catch {
        fail("\(error)")
    }
}

/// Prints a user-facing error once and exits non-zero.
func fail(_ message: String) -> Never {
    printError("cohort: \(message)")
    exit(1)
}
