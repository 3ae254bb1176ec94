#include <arpa/inet.h>

#include <cstring>

#include <catch2/catch.hpp>

#include "tcpwhy/decode.h"

using namespace tcpwhy;

namespace {

tcpwhy_event raw_event(uint8_t type) {
    tcpwhy_event raw{};
    raw.type = type;
    raw.ts_ns = 123456789;
    raw.cookie = 42;
    raw.netns = 4026531840u;
    raw.family = 2;
    inet_pton(AF_INET, "10.56.5.6", raw.laddr);
    inet_pton(AF_INET, "130.211.0.143", raw.raddr);
    raw.lport = 8080;
    raw.rport = 51234;
    return raw;
}

const ResetReasonMap kReasons = reset_reason_map({"NOT_SPECIFIED", "NO_SOCKET", "TCP_INVALID_ACK_SEQUENCE"});

}  // namespace

TEST_CASE("decode: common fields, owner only when known") {
    auto raw = raw_event(TCPWHY_EV_STATE);
    raw.state.old_state = 1;
    raw.state.new_state = 4;
    raw.pid = 77;
    std::strcpy(raw.comm, "node");
    Event e = decode_event(raw, kReasons);
    CHECK(e.type == EventType::state);
    CHECK(e.ts_ns == 123456789);
    CHECK(e.cookie == 42);
    CHECK(e.netns == 4026531840u);
    CHECK(e.laddr.to_string() == "10.56.5.6");
    CHECK(e.raddr.to_string() == "130.211.0.143");
    CHECK(e.lport == 8080);
    CHECK(e.rport == 51234);
    CHECK(e.old_state == TcpState::established);
    CHECK(e.new_state == TcpState::fin_wait1);
    CHECK(e.pid == 0);  // TCPWHY_F_OWNER_KNOWN not set: softirq's "current" is not the owner
    CHECK(e.comm.empty());

    raw.flags = TCPWHY_F_OWNER_KNOWN;
    e = decode_event(raw, kReasons);
    CHECK(e.pid == 77);
    CHECK(e.comm == "node");
}

TEST_CASE("decode: comm without a terminating NUL stays within 16 bytes") {
    auto raw = raw_event(TCPWHY_EV_STATE);
    raw.flags = TCPWHY_F_OWNER_KNOWN;
    std::memset(raw.comm, 'a', sizeof(raw.comm));
    CHECK(decode_event(raw, kReasons).comm == std::string(16, 'a'));
}

TEST_CASE("decode: close event") {
    auto raw = raw_event(TCPWHY_EV_CLOSE);
    raw.close = {6004, 6010, 0, 1, 4, {}, 300, 1200};
    Event e = decode_event(raw, kReasons);
    CHECK(e.idle_rx_ms == 6004);
    CHECK(e.idle_tx_ms == 6010);
    CHECK(e.bytes_rx == 300);
    CHECK(e.bytes_tx == 1200);
    CHECK_FALSE(e.abort);
    raw.flags = TCPWHY_F_ABORT;
    CHECK(decode_event(raw, kReasons).abort);
}

TEST_CASE("decode: reset reasons by name from the kernel's table, inferred otherwise") {
    auto raw = raw_event(TCPWHY_EV_RESET_SENT);
    raw.reset.reason = 1;
    raw.reset.sk_kind = TCPWHY_SK_NONE;
    Event e = decode_event(raw, kReasons);
    CHECK(e.reason == ResetReason::no_socket);
    CHECK_FALSE(e.reason_inferred);

    raw.reset.reason = 99;  // beyond the table: infer rather than print a number
    e = decode_event(raw, kReasons);
    CHECK(e.reason == ResetReason::no_socket);
    CHECK(e.reason_inferred);

    raw.reset.reason = -1;  // the kernel has no reasons
    raw.reset.sk_kind = TCPWHY_SK_TIMEWAIT;
    e = decode_event(raw, {});
    CHECK(e.reason == ResetReason::tcp_timewait_socket);
    CHECK(e.reason_inferred);
    CHECK(e.sk_kind == SockKind::timewait);
}

TEST_CASE("inferred reasons follow the keep-alive race shapes") {
    Event e;
    e.type = EventType::reset_sent;
    e.sk_kind = SockKind::full;
    e.sk_state = TcpState::fin_wait1;
    e.has_skb = true;
    CHECK(infer_reset_reason(e) == ResetReason::tcp_abort_on_data);
    e.sk_state = TcpState::fin_wait2;
    CHECK(infer_reset_reason(e) == ResetReason::tcp_abort_on_data);
    // before 6.10, fentry/kprobe on tcp_v4_send_reset see the socket after tcp_reset() closed it
    e.sk_state = TcpState::close;
    CHECK(infer_reset_reason(e) == ResetReason::tcp_abort_on_data);
    e.has_skb = false;
    e.unread_bytes = 10;
    CHECK(infer_reset_reason(e) == ResetReason::tcp_abort_on_close);
    e.unread_bytes = 0;
    e.opts.set(SockOpt::so_linger, 0);
    CHECK(infer_reset_reason(e) == ResetReason::tcp_state);
    e.sk_state = TcpState::established;
    e.opts = {};
    e.opts.set(SockOpt::so_keepalive, 1);
    CHECK(infer_reset_reason(e) == ResetReason::tcp_keepalive_timeout);
    e.opts = {};
    CHECK(infer_reset_reason(e) == ResetReason::not_specified);
}

TEST_CASE("decode: setsockopt carries the kernel's option bit and the values") {
    auto raw = raw_event(TCPWHY_EV_SETSOCKOPT);
    raw.sockopt = {1, 13, 1, 0, TCPWHY_OPT_SO_LINGER, {}};
    Event e = decode_event(raw, kReasons);
    CHECK(e.opt == SockOpt::so_linger);
    CHECK(level_name(e.opt) == "SOL_SOCKET");
    CHECK(e.value == 1);
    CHECK(e.value2 == 0);
    raw.sockopt = {6, 18, 30000, 0, TCPWHY_OPT_TCP_USER_TIMEOUT, {}};
    e = decode_event(raw, kReasons);
    CHECK(e.opt == SockOpt::tcp_user_timeout);
    CHECK(level_name(e.opt) == "IPPROTO_TCP");
    CHECK(e.value == 30000);
    // Both time layouts of the receive timeout are one option (SO_RCVTIMEO_NEW is 66).
    raw.sockopt = {1, 66, 2'500'000, 0, TCPWHY_OPT_SO_RCVTIMEO, {}};
    CHECK(decode_event(raw, kReasons).opt == SockOpt::so_rcvtimeo);
}

TEST_CASE("reset reasons: one name table, a newer kernel's unknown names kept apart") {
    auto map = reset_reason_map({"NOT_SPECIFIED", "NO_SOCKET", "TCP_SOMETHING_NEW", ""});
    CHECK(map == ResetReasonMap{ResetReason::not_specified, ResetReason::no_socket, ResetReason::unrecognised,
                                ResetReason::none});
    for (size_t i = 0; i < kResetReasonCount; ++i) {
        auto reason = static_cast<ResetReason>(i);
        CHECK(reset_reason_from_string(to_string(reason)) == reason);
    }
}

TEST_CASE("decode: a dual-stack socket's IPv4-mapped addresses become plain IPv4") {
    auto raw = raw_event(TCPWHY_EV_STATE);
    raw.family = 10;
    inet_pton(AF_INET6, "::ffff:130.211.0.143", raw.raddr);
    inet_pton(AF_INET6, "::ffff:10.56.5.6", raw.laddr);
    Event e = decode_event(raw, kReasons);
    CHECK(e.raddr.family == 4);
    CHECK(e.raddr.to_string() == "130.211.0.143");
    CHECK(e.laddr.to_string() == "10.56.5.6");
}

TEST_CASE("decode: IPv6 addresses") {
    auto raw = raw_event(TCPWHY_EV_STATE);
    raw.family = 10;
    inet_pton(AF_INET6, "2600:2d00:1:b029::5", raw.raddr);
    inet_pton(AF_INET6, "fd00::6", raw.laddr);
    Event e = decode_event(raw, kReasons);
    CHECK(e.raddr.family == 6);
    CHECK(e.raddr.to_string() == "2600:2d00:1:b029::5");
    CHECK(e.laddr.to_string() == "fd00::6");
}
