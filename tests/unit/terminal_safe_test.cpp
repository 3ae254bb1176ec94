// Names from other processes cannot reach a terminal as control sequences.
#include <catch2/catch.hpp>

#include "tcpwhy/format.h"

using namespace tcpwhy;

TEST_CASE("terminal_safe: controls become visible escapes, printable text and UTF-8 stay", "[format]") {
    CHECK(terminal_safe("nginx") == "nginx");
    CHECK(terminal_safe("default/web-5d9c7f-abcde") == "default/web-5d9c7f-abcde");
    // OSC (retitle the window), then clear the screen
    CHECK(terminal_safe("\x1b]0;pwn\x07\x1b[2J") == "\\x1b]0;pwn\\x07\\x1b[2J");
    CHECK(terminal_safe(std::string("a\0b", 3)) == "a\\x00b");
    CHECK(terminal_safe("line\nforged") == "line\\x0aforged");
    CHECK(terminal_safe("tab\there") == "tab\\x09here");
    CHECK(terminal_safe("del\x7f") == "del\\x7f");
    // a bare C1 CSI byte (not UTF-8) and the same control as UTF-8
    CHECK(terminal_safe("\x9b" "31m") == "\\x9b31m");
    CHECK(terminal_safe("\xc2\x9b" "31m") == "\\u009b31m");
    // a right-to-left override that would reverse what follows on screen
    CHECK(terminal_safe("\xe2\x80\xae" "gnp.exe") == "\\u202egnp.exe");
    // other UTF-8 is left alone; broken or overlong sequences are not
    CHECK(terminal_safe("caf\xc3\xa9 \xe2\x96\x88") == "caf\xc3\xa9 \xe2\x96\x88");
    CHECK(terminal_safe("\xc3") == "\\xc3");
    CHECK(terminal_safe("\xc0\xaf") == "\\xc0\\xaf");
    CHECK(terminal_safe("\xed\xa0\x80") == "\\xed\\xa0\\x80");  // a surrogate
    CHECK(terminal_safe("\xf8\x88\x80\x80\x80") == "\\xf8\\x88\\x80\\x80\\x80");
}

TEST_CASE("terminal_safe_text: a rendered text keeps its lines and tabs, loses its controls", "[format]") {
    CHECK(terminal_safe_text("a\tb\nc\x1b[2Jd\n") == "a\tb\nc\\x1b[2Jd\n");
    CHECK(terminal_safe_text("cr\rover") == "cr\\x0dover");
}
