#include "tcpwhy/live_view.h"

namespace tcpwhy {

// Placeholder until `tcpwhy top` lands: feeds the correlator, snapshot is empty.
struct LiveView::Impl {
    explicit Impl(CorrelatorConfig config) : correlator(std::move(config)) {}
    Correlator correlator;
};

LiveView::LiveView(CorrelatorConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}
LiveView::~LiveView() = default;
void LiveView::on_event(const Event& event) { impl_->correlator.on_event(event); }
void LiveView::tick(uint64_t now_ns, const LiveStatus&) { impl_->correlator.expire(now_ns); }
Correlator& LiveView::correlator() { return impl_->correlator; }
const Correlator& LiveView::correlator() const { return impl_->correlator; }
std::string LiveView::snapshot_json() const { return "{}"; }

}  // namespace tcpwhy
