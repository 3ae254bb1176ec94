// Facts into words: the sentences every text renderer shows (report text and HTML,
// `trace`'s live lines, `top`, the snapshot the daemon serves). The correlator decides;
// this says it, in the words of the server that has the problem. Nothing here decides
// a kind or a count, and no renderer parses what it writes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tcpwhy/correlator.h"
#include "tcpwhy/format.h"  // format_endpoint()

namespace tcpwhy::explain {

// A finding in words: the verdict, the evidence lines, the fix.
struct Words {
    std::string summary;
    std::vector<std::string> evidence;
    std::string advice;
    // How the LB shows it (lb_symptom()), for every kind whose summary does not say so already; "" none.
    std::string lb_symptom;
};
Words words(const Finding& finding);

std::string summary(const Finding& finding);
std::vector<std::string> evidence(const Finding& finding);
std::string advice(const Finding& finding);

// Why one connection got its kind: "backend sent FIN after 6004 ms idle; peer data ...".
std::string evidence(const ResetEvidence& evidence);
// The mechanism part of that sentence alone (without what the backend's life adds).
std::string mechanism_evidence(const ResetEvidence& evidence);
// How the --lb preset in use shows this finding, in its own words ("the load balancer (gcp) shows
// this as 502, statusDetails failed_to_connect_to_backend"); "" when it has none for the kind.
// Words::lb_symptom carries it for every finding but the race (whose summary says it).
std::string lb_symptom(const Finding& finding);
// "SO_LINGER {1,0}", "TCP_USER_TIMEOUT 5000 ms (was 30000 ms)".
std::string option_change(const SockOptChange& change);
// "pod shop/web-1 (process node, port 8080)".
std::string backend_label(const BackendProfile& backend);

// `tcpwhy trace`'s live line for a finding reached or grown: "finding [kind] ...", "update [kind] ...".
std::string live_line(const FindingUpdate& update);

// The server idle timeout to recommend: the LB's plus a margin (5 s, or ~3% for
// long timeouts) so the LB always closes an idle connection first. 600 -> 620.
uint32_t recommended_idle_timeout_s(uint32_t lb_idle_timeout_s);

// The server behind a backend, for advice of any kind: "gunicorn 20.1.0 (gthread worker)";
// "" when it was not detected or not recognised.
std::string server_name(const BackendProfile& backend);
// What detection found, in one line for reports and top's drill-down: "gunicorn 20.1.0 (gthread
// worker); idle timeout `--keep-alive`, default 2.0 s; recognised by cmdline: python3.11 /usr/bin/gunicorn".
// "" when nothing was detected (old traces, --no-servers).
std::string server_line(const BackendProfile& backend);
// How that server spells a knob at a value (include/tcpwhy/server.h has the rows): for
// Knob::listen_backlog, Knob::graceful_shutdown, ... "`--graceful-timeout 30`"; "" when unknown.
std::string server_setting(const BackendProfile& backend, Knob knob, uint32_t seconds);

// Small shared phrasings.
std::string duration(uint64_t ms);                           // "850 ms", "6.0 s", "600 s"
std::string four_tuple(const ConnectionRecord& connection);  // "raddr:rport->laddr:lport"

}  // namespace tcpwhy::explain
