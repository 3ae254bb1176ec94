// The IPv6 addresses the correlator's live connections hold, each stored once with a count of
// its holders: a connection keeps a 4-byte index instead of 16 bytes. A load balancer talks from
// a few addresses and a pod has one, so most connections share their entries; an entry goes when
// its last holder does, so the pool stays as small as the live connections' set of addresses.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <unordered_map>
#include <vector>

namespace tcpwhy::correlator {

class AddressPool {
public:
    using Bytes = std::array<uint8_t, 16>;

    // The index of bytes, with one more holder.
    uint32_t hold(const Bytes& bytes) {
        auto [it, added] = by_bytes_.try_emplace(Key::of(bytes), 0);
        if (added) {
            if (free_.empty()) {
                it->second = static_cast<uint32_t>(entries_.size());
                entries_.emplace_back();
            } else {
                it->second = free_.back();
                free_.pop_back();
            }
            entries_[it->second] = {bytes, 0};
        }
        ++entries_[it->second].holders;
        return it->second;
    }

    // One holder fewer; the entry is freed with its last.
    void release(uint32_t index) {
        Entry& entry = entries_[index];
        if (--entry.holders > 0) return;
        by_bytes_.erase(Key::of(entry.bytes));
        free_.push_back(index);
    }

    const Bytes& at(uint32_t index) const { return entries_[index].bytes; }
    size_t size() const { return by_bytes_.size(); }

private:
    struct Entry {
        Bytes bytes{};
        uint32_t holders = 0;
    };
    struct Key {
        uint64_t high = 0, low = 0;
        static Key of(const Bytes& bytes) {
            Key key;
            std::memcpy(&key.high, bytes.data(), 8);
            std::memcpy(&key.low, bytes.data() + 8, 8);
            return key;
        }
        bool operator==(const Key&) const = default;
    };
    struct KeyHash {
        size_t operator()(const Key& k) const { return (k.high * 0x9E3779B97F4A7C15ull) ^ (k.low * 0xC2B2AE3D27D4EB4Full); }
    };

    std::vector<Entry> entries_;
    std::vector<uint32_t> free_;
    std::unordered_map<Key, uint32_t, KeyHash> by_bytes_;
};

}  // namespace tcpwhy::correlator
