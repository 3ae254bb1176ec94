#include <catch2/catch.hpp>

#include "tcpwhy/histogram.h"

using tcpwhy::DurationHistogram;

TEST_CASE("histogram buckets tile the whole u32 range") {
    for (uint32_t v = 0; v < 16; ++v) CHECK(DurationHistogram::bucket_of(v) == static_cast<int>(v));
    CHECK(DurationHistogram::bucket_of(16) == 16);
    CHECK(DurationHistogram::bucket_of(UINT32_MAX) == DurationHistogram::kBucketCount - 1);
    CHECK(DurationHistogram::bucket_high(DurationHistogram::kBucketCount - 1) == UINT32_MAX);
    for (int b = 0; b + 1 < DurationHistogram::kBucketCount; ++b) {
        INFO("bucket " << b);
        REQUIRE(DurationHistogram::bucket_high(b) + 1 == DurationHistogram::bucket_low(b + 1));
        REQUIRE(DurationHistogram::bucket_of(DurationHistogram::bucket_low(b)) == b);
        REQUIRE(DurationHistogram::bucket_of(DurationHistogram::bucket_high(b)) == b);
    }
    // 6000 ms lands in [5888, 6143]: 16 sub-buckets of 256 ms between 4096 and 8191.
    int b = DurationHistogram::bucket_of(6000);
    CHECK(DurationHistogram::bucket_low(b) == 5888);
    CHECK(DurationHistogram::bucket_high(b) == 6143);
}

TEST_CASE("percentiles are exact (nearest rank) for small counts") {
    DurationHistogram h;
    CHECK(h.percentile(0.5) == 0);
    CHECK(h.max() == 0);
    for (uint32_t v : {10u, 1u, 9u, 2u, 8u, 3u, 7u, 4u, 6u, 5u}) h.add(v);
    CHECK(h.exact());
    CHECK(h.count() == 10);
    CHECK(h.percentile(0.5) == 5);
    CHECK(h.percentile(0.9) == 9);
    CHECK(h.percentile(1.0) == 10);
    CHECK(h.min() == 1);
    CHECK(h.max() == 10);

    DurationHistogram one;
    one.add(6003);
    CHECK(one.percentile(0.5) == 6003);
    CHECK(one.percentile(0.9) == 6003);
}

TEST_CASE("percentiles come from bucket midpoints past the exact samples") {
    DurationHistogram h;
    for (uint32_t v = 1; v <= 1000; ++v) h.add(v);
    CHECK_FALSE(h.exact());
    // rank 500 -> value 500 in [496, 511], midpoint 503; rank 900 -> 900 in [896, 927], midpoint 911.
    CHECK(h.percentile(0.5) == 503);
    CHECK(h.percentile(0.9) == 911);
    CHECK(h.max() == 1000);
    CHECK(h.percentile(1.0) == 1000);  // the top bucket's midpoint (1007) is clamped to the exact max

    // Error bound: within 1/32 of the true value.
    DurationHistogram idle;
    for (int i = 0; i < 100; ++i) idle.add(6000);
    CHECK(idle.percentile(0.5) == 6000);  // midpoint 6015 clamped to max
    idle.add(7000);
    CHECK(idle.percentile(0.5) == 6015);
    CHECK(std::abs(static_cast<int>(idle.percentile(0.5)) - 6000) <= 6000 / 32);
}

TEST_CASE("histogram buckets report non-empty ranges") {
    DurationHistogram h;
    h.add(3);
    h.add(3);
    h.add(6000);
    auto buckets = h.buckets();
    REQUIRE(buckets.size() == 2);
    CHECK(buckets[0] == std::pair<uint32_t, uint64_t>{3, 2});
    CHECK(buckets[1] == std::pair<uint32_t, uint64_t>{5888, 1});
}
