// Every attach path this kernel offers (fentry, kprobe, tracepoints), forced in turn: each RST
// the kernel sends is reported exactly once, whichever program sees it.
#include <algorithm>
#include <set>

#include "harness.h"

using namespace tcpwhy;
using namespace tcpwhy::test;

namespace {

constexpr uint16_t kPort = 8090;

std::string attached(const Tracer& tracer, const std::string& hook) {
    for (const auto& h : tracer.hooks())
        if (h.hook == hook) return h.attached;
    return "";
}

struct Variant {
    const char* name;
    TracerOptions options;
};

std::vector<Variant> variants() {
    TracerOptions best, no_fentry, tracepoints;
    no_fentry.allow_fentry = false;
    tracepoints.allow_fentry = tracepoints.allow_kprobe = false;
    return {{"best path", best}, {"fentry disabled", no_fentry}, {"tracepoints only", tracepoints}};
}

// Waits for `expected` resets sent from the server port, then a little longer for duplicates.
std::vector<Event> resets_on_port(EventCollector& events, size_t expected, int wait_ms) {
    auto on_port = [](const Event& e) { return e.type == EventType::reset_sent && e.lport == kPort; };
    events.wait_for(on_port, wait_ms, expected);
    sleep_ms(200);  // a duplicate from a second program would arrive by now
    return events.matching(on_port);
}

// Waits until the pod's end of lport<->rport, closed by its owner, has become a timewait socket:
// that takes the peer's ACK of our FIN, which under emulation (qemu TCG) can arrive well after the
// FIN itself did. ss shows such an orphan in substate FIN-WAIT-2 with the timewait timer; a full
// socket in FIN_WAIT2 (the ACK arrived while close() still held the socket lock, so the kernel
// armed the FIN_WAIT2 timer instead) shows the keepalive timer and answers data with
// TCP_ABORT_ON_DATA, another shape of the race that this case is not about.
bool wait_for_time_wait(const Netns& ns, uint16_t lport, uint16_t rport, int timeout_ms) {
    auto command = fmt::format(
        "ip netns exec {} ss -Htno state fin-wait-2 '( sport = :{} and dport = :{} )' | grep -q 'timer:(timewait'",
        ns.name(), lport, rport);
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        if (std::system(command.c_str()) == 0) return true;
        sleep_ms(20);
    }
    return false;
}

}  // namespace

TEST_CASE("attach paths: each reset is reported once by whichever program the hook got") {
    TCPWHY_REQUIRE_ROOT();
    std::set<std::string> tried;
    for (const auto& variant : variants()) {
        LbAndPod net;
        EventCollector events([&](const Event& e) { return e.netns == net.pod.inode(); }, variant.options);
        const Tracer& tracer = events.tracer();
        const std::string active = attached(tracer, "reset_active"), reply = attached(tracer, "reset_reply");
        const std::string close = attached(tracer, "close");
        if (!tried.insert(close + "|" + active + "|" + reply).second) continue;  // same paths as before
        INFO(variant.name << ": close " << close << ", reset_active " << active << ", reset_reply " << reply);
        // a reply path that sees timewait and socketless resets: fentry/kprobe, or the 6.10+ tracepoint
        const bool reply_complete = reply.rfind("tp_btf/", 0) != 0 || tracer.features().reset_tracepoint_complete();
        Fd listener = net.pod.enter([] { return tcp_listen_v4(LbAndPod::kPodAddr, kPort); });

        {
            // close with unread data: tcp_send_active_reset, no segment
            Fd client = net.lb.enter([] { return tcp_connect_v4(LbAndPod::kPodAddr, kPort); });
            Fd server = accept_one(listener);
            send_all(client, "unread");
            sleep_ms(50);
            server.reset();
            auto resets = resets_on_port(events, 1, 3000);
            INFO(events.dump());
            REQUIRE(resets.size() == 1);
            CHECK(resets[0].sk_kind == SockKind::full);
            CHECK_FALSE(resets[0].has_skb);
            CHECK(resets[0].reason == ResetReason::tcp_abort_on_close);
            CHECK(resets[0].unread_bytes == 6);
            CHECK(resets[0].cookie != 0);
            auto closes = events.matching(of_type(EventType::close));
            REQUIRE(closes.size() == 1);
            CHECK(closes[0].cookie == resets[0].cookie);
        }
        {
            // the keep-alive race, third shape: the FIN was acknowledged, the socket is a timewait
            // socket (same cookie) when the next request arrives; tcp_v4_send_reset replies.
            // Whether the kernel makes a timewait socket or keeps a full FIN_WAIT2 one depends on
            // a race with close() (see wait_for_time_wait), so a few connections are tried.
            Fd client;
            bool time_wait = false;
            for (int attempt = 0; attempt < 5 && !time_wait; ++attempt) {
                client = net.lb.enter([] { return tcp_connect_v4(LbAndPod::kPodAddr, kPort); });
                Fd server = accept_one(listener);
                server.reset();
                REQUIRE(recv_some(client).empty());  // the FIN arrived
                sockaddr_in client_addr{};
                socklen_t len = sizeof(client_addr);
                REQUIRE(getsockname(client.get(), reinterpret_cast<sockaddr*>(&client_addr), &len) == 0);
                time_wait = wait_for_time_wait(net.pod, kPort, ntohs(client_addr.sin_port), 1500);
            }
            REQUIRE(time_wait);  // and was acknowledged
            size_t before = events.matching(of_type(EventType::reset_sent)).size();
            send_all(client, "GET /next HTTP/1.1\r\n\r\n");
            auto resets = resets_on_port(events, before + 1, reply_complete ? 3000 : 500);
            INFO(events.dump());
            REQUIRE(resets.size() == before + (reply_complete ? 1 : 0));
            if (reply_complete) {
                const Event& rst = resets.back();
                CHECK(rst.sk_kind == SockKind::timewait);
                CHECK(rst.reason == ResetReason::tcp_timewait_socket);
                CHECK(rst.has_skb);
                auto closes = events.matching(of_type(EventType::close));
                CHECK(std::count_if(closes.begin(), closes.end(),
                                    [&](const Event& c) { return c.cookie == rst.cookie; }) == 1);
                CHECK(rst.raddr.to_string() == LbAndPod::kLbAddr);
            }
        }
        {
            // a SYN to a port nobody listens on, IPv4 and IPv6: tcp_v4/v6_send_reset without a socket
            auto is_socketless = [](const Event& e) {
                return e.type == EventType::reset_sent && e.sk_kind == SockKind::none;
            };
            size_t before = events.matching(is_socketless).size();
            net.lb.enter([] {
                Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
                auto sa = v4(LbAndPod::kPodAddr, 9);
                CHECK(connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == -1);
                return 0;
            });
            net.pod.enter([] {
                Fd fd(socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
                sockaddr_in6 sa{};
                sa.sin6_family = AF_INET6;
                sa.sin6_port = htons(9);
                sa.sin6_addr = in6addr_loopback;
                CHECK(connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == -1);
                return 0;
            });
            const size_t expected = reply_complete ? 2 : 0;
            events.wait_for(is_socketless, reply_complete ? 3000 : 500, before + 2);
            sleep_ms(200);
            auto socketless = events.matching(is_socketless);
            INFO(events.dump());
            REQUIRE(socketless.size() == before + expected);
            if (reply_complete) {
                CHECK(socketless[before].reason == ResetReason::no_socket);
                CHECK(socketless[before].raddr.to_string() == LbAndPod::kLbAddr);
                CHECK(socketless[before + 1].reason == ResetReason::no_socket);
                CHECK(socketless[before + 1].laddr.to_string() == "::1");
                CHECK(socketless[before + 1].lport == 9);
            }
        }
    }
}
