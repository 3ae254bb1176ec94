// Four-tuple key -> socket cookie for connections that closed or were reset, so a later reset
// for the same tuple (sent by the listener or with no socket) finds its connection.
//
// One entry is written per closed connection: at a few thousand connections per second a
// node-based std::unordered_map cost tcpwhy trace a third of its CPU in cache misses (a
// bucket, then a node, per write). Open addressing keeps an entry in one 16-byte slot:
// linear probing, a power-of-two table, deletion by backward shift (no tombstones).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace tcpwhy::correlator {

class TupleIndex {
public:
    // Cookies are never 0 for an indexed connection: 0 marks an empty slot.
    void set(uint64_t key, uint64_t cookie) {
        if (cookie == 0) return;
        if ((size_ + 1) * 2 > slots_.size()) grow();
        size_t i = home(key);
        while (slots_[i].cookie != 0 && slots_[i].key != key) i = next(i);
        if (slots_[i].cookie == 0) ++size_;
        slots_[i] = {key, cookie};
    }

    // Starts loading the slot set(key) and get(key) read first (a hint).
    void prefetch(uint64_t key) const {
        if (!slots_.empty()) __builtin_prefetch(&slots_[home(key)]);
    }

    std::optional<uint64_t> get(uint64_t key) const {
        if (slots_.empty()) return std::nullopt;
        for (size_t i = home(key); slots_[i].cookie != 0; i = next(i))
            if (slots_[i].key == key) return slots_[i].cookie;
        return std::nullopt;
    }

    // Removes key only while it still maps to cookie (a newer connection may own the tuple now).
    void erase_if(uint64_t key, uint64_t cookie) {
        if (slots_.empty()) return;
        size_t i = home(key);
        while (slots_[i].cookie != 0 && slots_[i].key != key) i = next(i);
        if (slots_[i].cookie != cookie || cookie == 0) return;
        // Backward shift: pull later entries of the probe run into the hole if that keeps them
        // reachable from their home slot.
        size_t hole = i;
        for (size_t j = next(i); slots_[j].cookie != 0; j = next(j)) {
            size_t want = home(slots_[j].key);
            bool reachable = hole <= j ? (want <= hole || want > j) : (want <= hole && want > j);
            if (reachable) {
                slots_[hole] = slots_[j];
                hole = j;
            }
        }
        slots_[hole] = {};
        --size_;
    }

    size_t size() const { return size_; }

private:
    struct Slot {
        uint64_t key = 0;
        uint64_t cookie = 0;
    };

    size_t home(uint64_t key) const { return (key * 0x9E3779B97F4A7C15ull) >> shift_; }
    size_t next(size_t i) const { return (i + 1) & (slots_.size() - 1); }

    void grow() {
        std::vector<Slot> old = std::move(slots_);
        size_t capacity = old.empty() ? 1024 : old.size() * 2;
        slots_.assign(capacity, Slot{});
        shift_ = 64 - static_cast<unsigned>(__builtin_ctzll(capacity));
        size_ = 0;
        for (const Slot& s : old)
            if (s.cookie != 0) set(s.key, s.cookie);
    }

    std::vector<Slot> slots_;
    unsigned shift_ = 64;
    size_t size_ = 0;
};

}  // namespace tcpwhy::correlator
