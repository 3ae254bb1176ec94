// A one-line progress meter for long work (a large trace, many archive segments, an export),
// drawn on a terminal only: over itself with '\r', at most four times a second, and erased when
// the work ends, so nothing of it stays on the screen or mixes with what is printed next. When
// the stream is a file or a pipe (scripts, tests, logs) it draws nothing at all.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace tcpwhy {

class ProgressMeter {
public:
    using Clock = std::chrono::steady_clock;

    // Draws on fd when it is a terminal. The first frame waits `delay` (work that ends sooner
    // shows nothing); TCPWHY_PROGRESS_DELAY_MS in the environment overrides it.
    explicit ProgressMeter(int fd, std::chrono::milliseconds delay = std::chrono::milliseconds(500));
    ~ProgressMeter();  // erases
    ProgressMeter(const ProgressMeter&) = delete;
    ProgressMeter& operator=(const ProgressMeter&) = delete;

    bool active() const { return active_; }
    double elapsed_s() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

    // Redraws with line() when a frame is due; line is called only then.
    template <typename Line>
    void update(Line&& line) {
        if (!active_) return;
        auto now = Clock::now();
        if (now < next_frame_) return;
        next_frame_ = now + kFrameInterval;
        draw(line());
    }

    // Erases the line; nothing is drawn after.
    void finish();

    static constexpr auto kFrameInterval = std::chrono::milliseconds(250);

private:
    void draw(std::string_view text);
    void write_all(std::string_view bytes) const;

    int fd_;
    bool active_;
    size_t shown_ = 0;  // columns on the screen now
    Clock::time_point start_, next_frame_;
};

// "1.2 GiB", "340.5 MiB", "912 B".
std::string byte_size_text(uint64_t bytes);
// "3.1 M", "850 k", "12": a count, as a rate reads it.
std::string count_text(double count);
// "0:42", "1:05:00".
std::string clock_text(double seconds);
// What every meter says of its pace: "512.0 MiB of 2.0 GiB (25%), 1.5 M events/s, 0:06 left"
// ("900 B read" without a total); the time left once there is a second's pace to go by.
std::string pace_text(uint64_t bytes_read, uint64_t bytes_total, uint64_t events, double elapsed_s);

}  // namespace tcpwhy
