// The daemon's default free-space floor, on a real filesystem: it never takes a nearly full
// node below the kubelet's DiskPressure eviction threshold (10% free, 15% for imagefs).
#include <sys/statvfs.h>

#include "daemon_process.h"
#include "harness.h"

using namespace tcpwhy;
using namespace tcpwhy::test;

TEST_CASE("archive floor: by default the daemon stops archiving before the node reaches DiskPressure") {
    TCPWHY_REQUIRE_ROOT();
    TempDir dir;
    // A 4 GiB filesystem whose image is sparse: the node's other files take 83% of it by
    // fallocate (no data written), leaving 17% free: above the kubelet's 15%, close to it, and
    // far more than a fixed floor of a few hundred MiB would protect.
    fs::path image = dir.path / "node.img", small = dir.path / "small";
    fs::create_directories(small);
    run(fmt::format("truncate -s 4G {0} && mkfs.ext4 -q -F -m 0 {0}", image.string()));
    if (std::system(fmt::format("mount -o loop {} {} 2>/dev/null", image.string(), small.string()).c_str()) != 0) {
        WARN("SKIPPED: cannot mount a loop device here (no loop module?)");
        return;
    }
    struct Unmount {
        fs::path path;
        ~Unmount() { std::system(fmt::format("umount {} >/dev/null 2>&1", path.string()).c_str()); }
    } unmount{small};
    auto free_share = [&] {
        struct statvfs vfs{};
        statvfs(small.c_str(), &vfs);
        return 100.0 * static_cast<double>(vfs.f_bavail) / static_cast<double>(vfs.f_blocks);
    };
    struct statvfs vfs{};
    statvfs(small.c_str(), &vfs);
    uint64_t total = static_cast<uint64_t>(vfs.f_blocks) * vfs.f_frsize;
    uint64_t available = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    run(fmt::format("fallocate -l {} {}/images", available - total * 17 / 100, small.string()));
    INFO("free: " << free_share() << "%");
    REQUIRE(free_share() > 15);
    REQUIRE(free_share() < 20);

    Netns ns("floor");
    // No --archive-min-free (nor in the DaemonSet's args: check_manifests.py): the default floor.
    DaemonProcess daemon(dir.path, "--segment-size 64K --archive-max 4M", small / "archive", "", true);
    INFO(daemon.stderr_text());
    const uint16_t port = unique_port();
    ns.enter([port] {
        Fd listener = tcp_listen_v4("127.0.0.1", port);
        for (int i = 0; i < 1500; ++i) {
            Fd client = tcp_connect_v4("127.0.0.1", port);
            accept_one(listener).reset();
        }
        return 0;
    });
    sleep_ms(1500);
    std::string metrics = daemon.get("/metrics");
    INFO(metrics);
    CHECK(metric(metrics, "tcpwhy_events_dropped_total", {"where=\"archive_low_disk\""}) > 0);
    CHECK(free_share() > 15);  // never pushed under the kubelet's threshold
    CHECK(daemon.get("/healthz").rfind("ok\n", 0) == 0);  // tracing goes on
    CHECK(daemon.stop(SIGTERM) == 0);
}
