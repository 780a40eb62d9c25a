// Calibration files of cache policies (TeaCache's coefficients, MagCache's ratios, a
// searched threshold): small text files that carry the digest of the backbone they were
// fitted on, so that a file fitted on one model is never silently used with another.
//
//   # <what the file is>
//   backbone_digest: 0123456789abcdef
//   <payload lines; `#` starts a comment>
//
// Reading and writing them is torch-free (fuzzed: tests/fuzz/fuzz_calibration.cpp); the digest
// of a backbone is caches/calibration.h's backbone_digest.
#pragma once
#include <string>
#include <vector>

namespace cachelab {

// Writes `header` (comment lines), the digest and `payload` to `path` (resolved against
// the project root; folders created). Returns the resolved path.
std::string write_calibration_file(const std::string& path, const std::string& header, const std::string& digest,
                                   const std::string& payload);

// Reads a calibration file: its payload lines (comments and the digest line dropped).
// Throws, naming `who`, when the file is missing, has no digest, or its digest differs
// from `digest` (the file was fitted on another backbone: re-run `cachelab calibrate`).
std::vector<std::string> read_calibration_file(const std::string& path, const std::string& digest,
                                               const std::string& who);

// The whitespace-separated numbers of calibration payload lines (TeaCache's coefficients,
// MagCache's ratios): every token must be a finite number, else the error names `who`, the
// file and the token (a damaged file is never read halfway).
std::vector<double> calibration_numbers(const std::vector<std::string>& lines, const std::string& path,
                                        const std::string& who);

}  // namespace cachelab
