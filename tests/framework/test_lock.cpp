// Shared files on a cluster: temporaries are removed only when they provably belong to a dead
// local process; run locks hold while their owner lives and renews, and are taken over
// when it died or its lease expired.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "framework/error.h"
#include "framework/lock.h"
#include "tests/test_util.h"

extern char** environ;

using namespace cachelab;
namespace fs = std::filesystem;

namespace {

// A process that existed (its identity read while it ran) and is now gone.
ProcessId dead_process() {
  pid_t pid;
  char a0[] = "/bin/sleep", a1[] = "30";
  char* argv[] = {a0, a1, nullptr};
  BOOST_REQUIRE_EQUAL(posix_spawn(&pid, "/bin/sleep", nullptr, nullptr, argv, environ), 0);
  auto p = local_process(pid);
  kill(pid, SIGKILL);
  int status;
  waitpid(pid, &status, 0);
  BOOST_REQUIRE(p);
  return *p;
}

void touch(const std::string& path) { std::ofstream(path) << "x"; }

}  // namespace

BOOST_AUTO_TEST_SUITE(lock)

BOOST_AUTO_TEST_CASE(temporary_names_carry_their_owner) {
  const ProcessId& me = this_process();
  BOOST_REQUIRE_EQUAL(me.where.size(), 8u);  // /proc shows this namespace here
  const std::string a = temp_path("/x/run.h5"), b = temp_path("/x/run.h5");
  BOOST_CHECK(a != b);  // unique per call
  BOOST_CHECK(a.rfind("/x/run.h5.tmp." + me.host + "." + std::to_string(me.pid) + ".", 0) == 0);
  auto o = temp_owner(fs::path(a).filename().string());
  BOOST_REQUIRE(o);
  BOOST_CHECK_EQUAL(o->host, me.host);
  BOOST_CHECK_EQUAL(o->pid, me.pid);
  BOOST_CHECK_EQUAL(o->where, me.where);
  BOOST_CHECK_EQUAL(o->start, me.start);
  BOOST_CHECK(!temp_owner("run.h5.tmp.4711"));  // the old form names no provable owner
  BOOST_CHECK(!temp_owner("run.h5"));
}

BOOST_AUTO_TEST_CASE(only_temporaries_of_dead_local_processes_are_removed) {
  cachelab::testing::TempDir d;
  const ProcessId& me = this_process();
  const ProcessId dead = dead_process();
  BOOST_CHECK(owner_is_dead(dead));
  BOOST_CHECK(!owner_is_dead(me));
  ProcessId reused = me;  // this pid, another start time: the pid was reused
  reused.start += 1;
  ProcessId other_host = dead;
  other_host.host = "node-elsewhere";
  ProcessId other_ns = dead;  // another PID namespace or boot of this host
  other_ns.where = "0badf00d";
  const std::string f = d.path + "/r.h5";
  const std::string live = temp_path(f), gone = temp_path(f, dead), gone2 = temp_path(f, reused),
                    remote = temp_path(f, other_host), ns = temp_path(f, other_ns), legacy = f + ".tmp.999999";
  for (auto* p : {&live, &gone, &gone2, &remote, &ns, &legacy}) touch(*p);
  BOOST_CHECK_EQUAL(remove_dead_temporaries(d.path), 2);
  BOOST_CHECK(fs::exists(live));
  BOOST_CHECK(!fs::exists(gone));
  BOOST_CHECK(!fs::exists(gone2));
  BOOST_CHECK(fs::exists(remote));
  BOOST_CHECK(fs::exists(ns));
  BOOST_CHECK(fs::exists(legacy));
}

BOOST_AUTO_TEST_CASE(a_live_lease_holds_and_release_frees_it) {
  cachelab::testing::TempDir d;
  const std::string path = d.path + "/r.lock";
  std::string holder;
  auto a = RunLock::try_acquire(path, &holder);
  BOOST_REQUIRE(a);
  BOOST_CHECK(fs::exists(path));
  BOOST_CHECK(!RunLock::try_acquire(path, &holder));  // held by a live process (this one)
  BOOST_CHECK(holder.find("pid " + std::to_string(getpid())) != std::string::npos);
  a.reset();
  BOOST_CHECK(!fs::exists(path));
  BOOST_CHECK(RunLock::try_acquire(path));
  for (auto& e : fs::directory_iterator(d.path))  // no temporaries left behind
    BOOST_CHECK(e.path().filename().string().find(".tmp.") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(renewal_keeps_a_short_lease_alive) {
  cachelab::testing::TempDir d;
  const std::string path = d.path + "/r.lock";
  LeaseSettings lease{1.0, 0.1};
  ProcessId remote = this_process();  // not provably dead: only the lease can free it
  remote.host = "node-elsewhere";
  auto a = RunLock::try_acquire(path, nullptr, lease, remote);
  BOOST_REQUIRE(a);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  BOOST_CHECK(!RunLock::try_acquire(path, nullptr, lease));  // renewed past its first expiry
  BOOST_CHECK(!a->lost());
}

BOOST_AUTO_TEST_CASE(dead_owners_and_expired_leases_are_taken_over) {
  cachelab::testing::TempDir d;
  LeaseSettings lease{1.0, 0.1};
  // A dead local owner: taken over at once.
  const std::string p1 = d.path + "/a.lock";
  RunLock::try_acquire(p1, nullptr, lease, dead_process())->abandon();
  BOOST_REQUIRE(fs::exists(p1));
  BOOST_CHECK(RunLock::try_acquire(p1, nullptr, lease));
  // An owner on another node (or namespace) that stopped renewing: only after the lease.
  for (const char* which : {"host", "namespace"}) {
    ProcessId other = dead_process();
    if (std::string(which) == "host") other.host = "node-elsewhere";
    else other.where = "0badf00d";
    const std::string p2 = d.path + "/" + which + ".lock";
    RunLock::try_acquire(p2, nullptr, lease, other)->abandon();
    std::string holder;
    BOOST_CHECK_MESSAGE(!RunLock::try_acquire(p2, &holder, lease), which);
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));
    auto taken = RunLock::try_acquire(p2, &holder, lease);
    BOOST_CHECK_MESSAGE(taken, which << ": " << holder);
  }
}

BOOST_AUTO_TEST_CASE(a_failed_write_names_the_file_and_the_reason) {
  try {
    fail_write("/nonexistent/r.h5", "writing steps", ENOSPC);
    BOOST_FAIL("no error");
  } catch (const Error& e) {
    const std::string m = e.what();
    BOOST_CHECK(m.find("/nonexistent/r.h5") != std::string::npos);
    BOOST_CHECK(m.find("No space left on device") != std::string::npos);
  }
  BOOST_CHECK(out_of_space().find("/nonexistent/r.h5") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
