// libFuzzer target: the strict config reader and command-line overrides. Input: a YAML
// document, optionally followed by a line `#overrides` and one `key=value` per line. Bad input
// must end in a cachelab::Error (a clear message); anything else escaping, a crash or a
// sanitizer report is a bug. Built with -DCACHELAB_FUZZ=ON (clang); the ctest entry
// `fuzz_config_corpus` replays tests/fuzz/corpus/config.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "framework/config.h"
#include "framework/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find("\n#overrides\n");
  const std::string yaml = input.substr(0, split);
  try {
    cachelab::ConfigNode root = cachelab::parse_config_string(yaml, "fuzz.yaml");
    if (split != std::string::npos) {
      std::istringstream lines(input.substr(split + 12));
      for (std::string line; std::getline(lines, line);) {
        try {
          cachelab::apply_override(root, line);
        } catch (const cachelab::Error&) {
        }
      }
    }
    (void)cachelab::to_yaml(root);
  } catch (const cachelab::Error&) {
  }
  return 0;
}
