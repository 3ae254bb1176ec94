// The correlator's tuple index against std::unordered_map: the same answers after every operation.
#include <catch2/catch.hpp>

#include <random>
#include <unordered_map>

#include "tuple_index.h"

using tcpwhy::correlator::TupleIndex;

TEST_CASE("tuple index: set, get and erase_if agree with a map, through growth and wrapped probe runs") {
    TupleIndex index;
    std::unordered_map<uint64_t, uint64_t> reference;
    std::mt19937_64 random(8);
    // Few distinct keys relative to the operations: runs collide, wrap the table's end and shift back.
    std::uniform_int_distribution<uint64_t> key_of(1, 3000), cookie_of(1, 50);
    for (int step = 0; step < 200000; ++step) {
        uint64_t key = key_of(random), cookie = cookie_of(random);
        switch (step % 3) {
        case 0:
            index.set(key, cookie);
            reference[key] = cookie;
            break;
        case 1: {
            index.erase_if(key, cookie);
            auto it = reference.find(key);
            if (it != reference.end() && it->second == cookie) reference.erase(it);
            break;
        }
        case 2: {
            auto got = index.get(key);
            auto it = reference.find(key);
            REQUIRE(got.has_value() == (it != reference.end()));
            if (got) REQUIRE(*got == it->second);
            break;
        }
        }
        REQUIRE(index.size() == reference.size());
    }
    for (const auto& [key, cookie] : reference) REQUIRE(index.get(key) == cookie);
    // Every key that is not there is not found (probe runs end at an empty slot).
    for (uint64_t key = 3001; key < 6000; ++key) REQUIRE_FALSE(index.get(key));
}

TEST_CASE("tuple index: a tuple reused by a newer connection is not erased by the older one") {
    TupleIndex index;
    index.set(42, 1001);
    index.set(42, 1002);  // the same four-tuple, a new socket
    index.erase_if(42, 1001);
    CHECK(index.get(42) == 1002u);
    index.erase_if(42, 1002);
    CHECK_FALSE(index.get(42));
    CHECK(index.size() == 0);
}
