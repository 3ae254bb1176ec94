#include <catch2/catch.hpp>

#include "tcpwhy/cidr.h"

using namespace tcpwhy;

TEST_CASE("IPv4 CIDR membership") {
    auto set = CidrSet::parse_list(kGcpLbRanges);
    REQUIRE(set);
    CHECK(set->contains(*IpAddr::parse("130.211.0.143")));
    CHECK(set->contains(*IpAddr::parse("130.211.3.255")));
    CHECK_FALSE(set->contains(*IpAddr::parse("130.211.4.0")));
    CHECK(set->contains(*IpAddr::parse("35.191.200.1")));
    CHECK_FALSE(set->contains(*IpAddr::parse("35.192.0.1")));
    CHECK_FALSE(set->contains(*IpAddr::parse("10.56.5.6")));
}

TEST_CASE("IPv4-mapped IPv6 peers match IPv4 ranges") {
    auto set = CidrSet::parse_list("130.211.0.0/22");
    REQUIRE(set);
    CHECK(set->contains(*IpAddr::parse("::ffff:130.211.0.143")));
    CHECK_FALSE(set->contains(*IpAddr::parse("::ffff:10.0.0.1")));
}

TEST_CASE("IPv6 CIDR, /0, /32 and /128") {
    auto v6 = Cidr::parse("2600:2d00:1:b029::/64");
    REQUIRE(v6);
    CHECK(v6->contains(*IpAddr::parse("2600:2d00:1:b029::1")));
    CHECK_FALSE(v6->contains(*IpAddr::parse("2600:2d00:1:b02a::1")));
    CHECK_FALSE(v6->contains(*IpAddr::parse("130.211.0.1")));

    auto all4 = Cidr::parse("0.0.0.0/0");
    REQUIRE(all4);
    CHECK(all4->contains(*IpAddr::parse("1.2.3.4")));
    CHECK_FALSE(all4->contains(*IpAddr::parse("::1")));

    auto host = Cidr::parse("10.56.5.6");
    REQUIRE(host);
    CHECK(host->prefix == 32);
    CHECK(host->contains(*IpAddr::parse("10.56.5.6")));
    CHECK_FALSE(host->contains(*IpAddr::parse("10.56.5.7")));

    auto host6 = Cidr::parse("::1/128");
    REQUIRE(host6);
    CHECK(host6->contains(*IpAddr::parse("::1")));
    CHECK_FALSE(host6->contains(*IpAddr::parse("::2")));
    auto all6 = Cidr::parse("::/0");
    REQUIRE(all6);
    CHECK(all6->contains(*IpAddr::parse("2001:db8::1")));
}

TEST_CASE("malformed CIDRs are rejected with a reason") {
    std::string error;
    CHECK_FALSE(Cidr::parse("130.211.0.0/33", &error));
    CHECK(error.find("prefix length") != std::string::npos);
    CHECK_FALSE(Cidr::parse("130.211.0.0/", &error));
    CHECK_FALSE(Cidr::parse("130.211.0.0/2x", &error));
    CHECK_FALSE(Cidr::parse("300.1.1.1/8", &error));
    CHECK(error.find("not an IPv4 or IPv6") != std::string::npos);
    CHECK_FALSE(Cidr::parse("130.211.1.0/22", &error));
    CHECK(error.find("did you mean 130.211.0.0/22") != std::string::npos);
    CHECK_FALSE(Cidr::parse("::1/129", &error));
    CHECK_FALSE(Cidr::parse("", &error));
    CHECK_FALSE(CidrSet::parse_list("130.211.0.0/22,,35.191.0.0/16", &error));
    CHECK(error.find("empty entry") != std::string::npos);
    CHECK_FALSE(CidrSet::parse_list("130.211.0.0/22,nope", &error));
}

TEST_CASE("CIDR set prints back what it parsed") {
    auto set = CidrSet::parse_list(" 130.211.0.0/22 , 2600:2d00:1:1::/64");
    REQUIRE(set);
    CHECK(set->to_string() == "130.211.0.0/22,2600:2d00:1:1::/64");
}

TEST_CASE("IPv4 address parsing: exact dotted quads only") {
    CHECK(IpAddr::parse("0.0.0.0")->to_string() == "0.0.0.0");
    CHECK(IpAddr::parse("255.255.255.255")->to_string() == "255.255.255.255");
    CHECK(IpAddr::parse("130.211.0.143")->bytes[3] == 143);
    for (const char* bad : {"1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.4 ", "1..3.4", "1.2.3.", "a.b.c.d",
                            "1.2.3.1000", "-"})
        CHECK_FALSE(IpAddr::parse(bad));
    CHECK(IpAddr::parse("::ffff:1.2.3.4")->family == 6);
}
