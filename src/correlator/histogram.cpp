#include "tcpwhy/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace tcpwhy {
namespace {

constexpr int kSubBuckets = 1 << DurationHistogram::kSubBucketBits;

// Nearest rank of percentile p among n samples, 1-based.
uint64_t nearest_rank(double p, uint64_t n) {
    p = std::clamp(p, 0.0, 1.0);
    auto rank = static_cast<uint64_t>(std::ceil(p * static_cast<double>(n)));
    return std::clamp<uint64_t>(rank, 1, n);
}

}  // namespace

int DurationHistogram::bucket_of(uint32_t value) {
    if (value < kLinearBuckets) return static_cast<int>(value);
    int power = std::bit_width(value) - 1;  // >= 4
    int shift = power - kSubBucketBits;
    int sub = static_cast<int>((value >> shift) & (kSubBuckets - 1));
    return kLinearBuckets + (power - kSubBucketBits) * kSubBuckets + sub;
}

uint32_t DurationHistogram::bucket_low(int bucket) {
    if (bucket < kLinearBuckets) return static_cast<uint32_t>(bucket);
    int range = (bucket - kLinearBuckets) / kSubBuckets;
    int sub = (bucket - kLinearBuckets) % kSubBuckets;
    int power = range + kSubBucketBits;
    return (1u << power) + (static_cast<uint32_t>(sub) << (power - kSubBucketBits));
}

uint32_t DurationHistogram::bucket_high(int bucket) {
    if (bucket < kLinearBuckets) return static_cast<uint32_t>(bucket);
    int power = (bucket - kLinearBuckets) / kSubBuckets + kSubBucketBits;
    return bucket_low(bucket) + ((1u << (power - kSubBucketBits)) - 1);
}

void DurationHistogram::add(uint32_t value) {
    ++counts_[static_cast<size_t>(bucket_of(value))];
    ++count_;
    min_ = std::min(min_, value);
    max_ = std::max(max_, value);
    if (count_ <= kExactSamples) {
        exact_.push_back(value);
    } else if (!exact_.empty()) {
        std::vector<uint32_t>().swap(exact_);  // release: the buckets take over
    }
}

void DurationHistogram::add(uint32_t value, uint64_t times) {
    for (; times && count_ <= kExactSamples; --times) add(value);
    if (!times) return;
    auto& bucket = counts_[static_cast<size_t>(bucket_of(value))];
    bucket = static_cast<uint32_t>(std::min<uint64_t>(UINT32_MAX, bucket + times));
    count_ += times;
    min_ = std::min(min_, value);
    max_ = std::max(max_, value);
}

uint32_t DurationHistogram::percentile(double p) const {
    if (count_ == 0) return 0;
    uint64_t rank = nearest_rank(p, count_);
    if (exact()) {
        std::vector<uint32_t> sorted = exact_;
        std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(rank - 1), sorted.end());
        return sorted[rank - 1];
    }
    uint64_t seen = 0;
    for (int b = 0; b < kBucketCount; ++b) {
        seen += counts_[static_cast<size_t>(b)];
        if (seen >= rank) {
            uint32_t low = bucket_low(b), high = bucket_high(b);
            uint32_t mid = low + (high - low) / 2;
            return std::clamp(mid, min_, max_);
        }
    }
    return max_;
}

std::vector<std::pair<uint32_t, uint64_t>> DurationHistogram::buckets() const {
    std::vector<std::pair<uint32_t, uint64_t>> out;
    for (int b = 0; b < kBucketCount; ++b)
        if (counts_[static_cast<size_t>(b)]) out.emplace_back(bucket_low(b), counts_[static_cast<size_t>(b)]);
    return out;
}

}  // namespace tcpwhy
