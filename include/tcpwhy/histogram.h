// A small log-linear histogram of millisecond durations with percentiles.
//
// Exact while small: the first kExactSamples values are kept as they are, so a
// backend with a few dozen idle closes reports its true p50/p90. Past that the
// percentiles come from the buckets: values below 16 ms have one bucket each;
// every power-of-two range above is split into 16 equal sub-buckets, and a
// percentile is the midpoint of its bucket, clamped to the exact min/max. The
// error is at most half a sub-bucket: 1/32 of the value (about 3%).
// Memory is fixed (~1.9 KB of counters) no matter how many values go in.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace tcpwhy {

class DurationHistogram {
public:
    static constexpr int kLinearBuckets = 16;  // 0..15 ms, one bucket each
    static constexpr int kSubBucketBits = 4;   // 16 sub-buckets per power of two
    static constexpr int kBucketCount = kLinearBuckets + (32 - kSubBucketBits) * (1 << kSubBucketBits);
    static constexpr size_t kExactSamples = 64;  // kept verbatim until there are more

    void add(uint32_t value_ms);
    // The same value `times` times (the kernel's tallies of ordinary closes).
    void add(uint32_t value_ms, uint64_t times);

    uint64_t count() const { return count_; }
    uint32_t min() const { return count_ ? min_ : 0; }
    uint32_t max() const { return max_; }
    // Nearest-rank percentile, p in (0, 1]: the smallest value v such that at least
    // p of the samples are <= v. 0 when empty.
    uint32_t percentile(double p) const;
    bool exact() const { return count_ <= kExactSamples; }

    // Non-empty buckets as (lowest value in bucket, count), ascending.
    std::vector<std::pair<uint32_t, uint64_t>> buckets() const;

    // Bucket geometry, public for tests and printers.
    static int bucket_of(uint32_t value_ms);
    static uint32_t bucket_low(int bucket);
    static uint32_t bucket_high(int bucket);  // inclusive

private:
    std::array<uint32_t, kBucketCount> counts_{};
    std::vector<uint32_t> exact_;  // dropped (and freed) once count_ > kExactSamples
    uint64_t count_ = 0;
    uint32_t min_ = UINT32_MAX;
    uint32_t max_ = 0;
};

}  // namespace tcpwhy
