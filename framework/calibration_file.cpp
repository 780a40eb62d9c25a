#include "framework/calibration_file.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "framework/error.h"
#include "framework/lock.h"
#include "framework/paths.h"

namespace cachelab {

std::string write_calibration_file(const std::string& path, const std::string& header, const std::string& digest,
                                   const std::string& payload) {
  const std::string p = resolve_path(path);
  const auto parent = std::filesystem::path(p).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  std::ostringstream f;
  std::istringstream h(header);
  for (std::string line; std::getline(h, line);) f << "# " << line << "\n";
  f << "backbone_digest: " << digest << "\n" << payload;
  if (!payload.empty() && payload.back() != '\n') f << "\n";
  write_text_file(p, f.str(), "the calibration file");
  return p;
}

std::vector<std::string> read_calibration_file(const std::string& path, const std::string& digest,
                                               const std::string& who) {
  const std::string p = resolve_path(path);
  std::ifstream f(p);
  CL_CHECK(f.good(), who << ": no calibration file at `" << p << "`; fit it with `cachelab calibrate EXP.yaml`");
  std::vector<std::string> payload;
  std::string found;
  for (std::string line; std::getline(f, line);) {
    if (line.empty() || line[0] == '#') continue;
    if (line.rfind("backbone_digest:", 0) == 0) {
      std::istringstream in(line.substr(16));
      in >> found;
      continue;
    }
    payload.push_back(line);
  }
  CL_CHECK(!found.empty(), who << ": `" << p << "` carries no backbone digest (an older file); re-run "
                                  "`cachelab calibrate EXP.yaml` to refit it");
  CL_CHECK(found == digest, who << ": `" << p << "` was fitted on another backbone (digest " << found
                                << ", this one is " << digest << "); re-run `cachelab calibrate EXP.yaml`");
  return payload;
}

std::vector<double> calibration_numbers(const std::vector<std::string>& lines, const std::string& path,
                                        const std::string& who) {
  std::vector<double> out;
  for (auto& line : lines) {
    std::istringstream in(line);
    for (std::string tok; in >> tok;) {
      size_t used = 0;
      double v = 0;
      try {
        v = std::stod(tok, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      CL_CHECK(used == tok.size() && std::isfinite(v),
               who << ": `" << path << "` holds `" << tok << "`, not a finite number; re-run `cachelab calibrate EXP.yaml`");
      out.push_back(v);
    }
  }
  return out;
}

}  // namespace cachelab
