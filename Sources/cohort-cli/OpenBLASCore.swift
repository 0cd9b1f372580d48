import CCohort
import Foundation

/// OpenBLAS 0.3.21 (Debian 12) does not recognise recent Intel and AMD cores and falls back to
/// its generic Prescott (SSE3) kernels, about 3× slower for our GEMMs. When that happened on a
/// CPU with AVX2 and FMA, and the user has not chosen a core type, run this same program again
/// with OPENBLAS_CORETYPE=Haswell (the variable is read only when the library loads, so it
/// cannot be changed in-process). Setting OPENBLAS_CORETYPE yourself always wins.
func ensureOpenBLASUsesVectorKernels() {
    guard getenv("OPENBLAS_CORETYPE") == nil, getenv("COHORT_OPENBLAS_REEXEC") == nil else { return }
    guard String(cString: cohort_openblas_corename()).lowercased() == "prescott" else { return }
    guard let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
          let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return }
    let flags = Set(flagsLine.split(separator: " ").map(String.init))
    guard flags.contains("avx2"), flags.contains("fma") else { return }
    setenv("OPENBLAS_CORETYPE", "Haswell", 1)
    setenv("COHORT_OPENBLAS_REEXEC", "1", 1)
    let arguments = CommandLine.arguments.map { strdup($0) } + [nil]
    execv("/proc/self/exe", arguments)
    // execv returns only on failure: carry on with the slower kernels.
}
