// `cachelab profile` and `cachelab schedule` (argv[1] is the subcommand).
#pragma once

namespace cachelab {
int schedule_commands(int argc, char** argv);
}
