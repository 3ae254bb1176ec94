// The correlator's live connections by socket cookie, in less memory per connection than a
// node-based std::unordered_map (which spent about 40 B per entry on its node, the allocator's
// header and a bucket: bench/README.md, "B per live connection").
//
// Elements live in fixed-size chunks and never move: a pointer stays valid while other elements
// are added or erased, and an erased element's slot is reused first. An index of 4-byte entries
// finds a cookie's slot (open addressing, linear probing, a power-of-two table at most 3/4 full,
// deletion by backward shift); each entry carries 6 bits of the cookie's hash, so a probe that
// passes a foreign entry almost never reads the element it names.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <utility>
#include <vector>

namespace tcpwhy::correlator {

// T: default-constructible, with a `uint64_t cookie` member that the table sets (never 0).
template <typename T>
class CookieTable {
public:
    static constexpr uint32_t kSlotBits = 26;
    static constexpr size_t kMaxSize = (size_t{1} << kSlotBits) - 2;  // slot + 1 must fit in kSlotBits

    T* find(uint64_t cookie) { return const_cast<T*>(std::as_const(*this).find(cookie)); }
    const T* find(uint64_t cookie) const {
        if (index_.empty()) return nullptr;
        uint64_t h = hash(cookie);
        for (size_t i = home(h);; i = next(i)) {
            uint32_t entry = index_[i];
            if (entry == 0) return nullptr;
            if (tag_of(entry) == tag(h)) {
                const T& element = at(slot_of(entry));
                if (element.cookie == cookie) return &element;
            }
        }
    }

    // Hints, no effect on the contents. prefetch() starts loading the index entry find(cookie)
    // reads first; prefetch_element(), called once that entry had time to arrive, the element.
    void prefetch(uint64_t cookie) const {
        if (!index_.empty()) __builtin_prefetch(&index_[home(hash(cookie))]);
    }
    void prefetch_element(uint64_t cookie) const {
        if (index_.empty()) return;
        uint64_t h = hash(cookie);
        for (size_t i = home(h); index_[i] != 0; i = next(i)) {
            if (tag_of(index_[i]) == tag(h)) {
                __builtin_prefetch(&at(slot_of(index_[i])));
                return;
            }
        }
    }

    // The element for cookie, and whether it was added (value-initialized, with its cookie set).
    std::pair<T*, bool> try_emplace(uint64_t cookie) {
        if (T* found = find(cookie)) return {found, false};
        if ((size_ + 1) * 4 > index_.size() * 3) grow_index();
        uint32_t slot = take_slot();
        T& element = at(slot);
        element = T{};
        element.cookie = cookie;
        place(hash(cookie), slot);
        ++size_;
        return {&element, true};
    }

    // Removes the element of cookie, if any.
    void erase(uint64_t cookie) {
        if (index_.empty()) return;
        uint64_t h = hash(cookie);
        size_t i = home(h);
        for (;; i = next(i)) {
            uint32_t entry = index_[i];
            if (entry == 0) return;
            if (tag_of(entry) == tag(h) && at(slot_of(entry)).cookie == cookie) break;
        }
        uint32_t slot = slot_of(index_[i]);
        at(slot) = T{};  // cookie 0: free
        free_slots_.push_back(slot);
        --size_;
        // Backward shift: pull later entries of the probe run into the hole if that keeps them
        // reachable from their home slot.
        size_t hole = i;
        for (size_t j = next(i); index_[j] != 0; j = next(j)) {
            size_t want = home(hash(at(slot_of(index_[j])).cookie));
            bool reachable = hole <= j ? (want <= hole || want > j) : (want <= hole && want > j);
            if (reachable) {
                index_[hole] = index_[j];
                hole = j;
            }
        }
        index_[hole] = 0;
    }

    size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }

    // f(T&) for every element, in slot order. f may erase the element it is given (by its cookie).
    template <typename F>
    void for_each(F&& f) {
        for (uint32_t slot = 0; slot < slots_used_; ++slot) {
            T& element = at(slot);
            if (element.cookie != 0) f(element);
        }
    }
    template <typename F>
    void for_each(F&& f) const {
        for (uint32_t slot = 0; slot < slots_used_; ++slot) {
            const T& element = at(slot);
            if (element.cookie != 0) f(element);
        }
    }

    // Memory the table holds (elements ever used, their chunks' unused tail excluded, and the index).
    size_t bytes() const { return size_t{slots_used_} * sizeof(T) + index_.size() * sizeof(uint32_t); }

private:
    static constexpr uint32_t kChunkBits = 12;  // 4096 elements a chunk
    static constexpr uint32_t kChunkSize = 1u << kChunkBits;
    static constexpr uint32_t kSlotMask = (1u << kSlotBits) - 1;

    // splitmix64's finalizer: cookies are sequential, the index wants every bit mixed.
    static uint64_t hash(uint64_t cookie) {
        cookie ^= cookie >> 30;
        cookie *= 0xBF58476D1CE4E5B9ull;
        cookie ^= cookie >> 27;
        cookie *= 0x94D049BB133111EBull;
        return cookie ^ (cookie >> 31);
    }
    static uint32_t tag(uint64_t h) { return static_cast<uint32_t>(h & 63); }  // the index uses the top bits
    static uint32_t tag_of(uint32_t entry) { return entry >> kSlotBits; }
    static uint32_t slot_of(uint32_t entry) { return (entry & kSlotMask) - 1; }
    size_t home(uint64_t h) const { return static_cast<size_t>(h >> shift_); }
    size_t next(size_t i) const { return (i + 1) & (index_.size() - 1); }

    T& at(uint32_t slot) { return chunks_[slot >> kChunkBits][slot & (kChunkSize - 1)]; }
    const T& at(uint32_t slot) const { return chunks_[slot >> kChunkBits][slot & (kChunkSize - 1)]; }

    void place(uint64_t h, uint32_t slot) {
        size_t i = home(h);
        while (index_[i] != 0) i = next(i);
        index_[i] = (tag(h) << kSlotBits) | (slot + 1);
    }

    uint32_t take_slot() {
        if (!free_slots_.empty()) {
            uint32_t slot = free_slots_.back();
            free_slots_.pop_back();
            return slot;
        }
        if (slots_used_ >= kMaxSize) throw std::length_error("CookieTable: more elements than kMaxSize");
        if ((slots_used_ >> kChunkBits) == chunks_.size()) {
            // Reserved, not constructed: a chunk's memory is touched (and resident) as it fills.
            chunks_.emplace_back().reserve(kChunkSize);
        }
        chunks_.back().emplace_back();
        return slots_used_++;
    }

    void grow_index() {
        size_t capacity = index_.empty() ? 1024 : index_.size() * 2;
        index_.assign(capacity, 0);
        shift_ = 64 - static_cast<unsigned>(__builtin_ctzll(capacity));
        for (uint32_t slot = 0; slot < slots_used_; ++slot)
            if (uint64_t cookie = at(slot).cookie) place(hash(cookie), slot);
    }

    std::vector<std::vector<T>> chunks_;
    uint32_t slots_used_ = 0;  // slots ever handed out: chunks_ hold exactly these
    std::vector<uint32_t> free_slots_;
    std::vector<uint32_t> index_;  // 0: empty; else tag << kSlotBits | (slot + 1)
    unsigned shift_ = 64;
    size_t size_ = 0;
};

}  // namespace tcpwhy::correlator
