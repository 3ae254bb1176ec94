#include "tcpwhy/kube_api.h"

#include <curl/curl.h>
#include <pthread.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <mutex>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace tcpwhy {
namespace {

using json = nlohmann::json;

std::string read_file_trimmed(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
    return s;
}

std::string url_escape(const std::string& s) {
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') out += static_cast<char>(c);
        else out += fmt::format("%{:02X}", c);
    }
    return out;
}

// "ReplicaSet/web-5d9c7f" whose pods carry pod-template-hash=5d9c7f belongs to Deployment/web.
std::string owner_of(const json& metadata, const std::map<std::string, std::string>& labels) {
    if (!metadata.contains("ownerReferences")) return {};
    for (const auto& ref : metadata["ownerReferences"]) {
        if (!ref.value("controller", false)) continue;
        std::string kind = ref.value("kind", std::string());
        std::string name = ref.value("name", std::string());
        if (kind == "ReplicaSet") {
            auto hash = labels.find("pod-template-hash");
            if (hash != labels.end() && name.size() > hash->second.size() + 1 &&
                name.ends_with("-" + hash->second))
                return "Deployment/" + name.substr(0, name.size() - hash->second.size() - 1);
        }
        return kind + "/" + name;
    }
    return {};
}

std::optional<KubePod> pod_from(const json& object, std::string* error) {
    if (!object.is_object() || !object.contains("metadata")) {
        if (error) *error = "not a pod object (no metadata)";
        return std::nullopt;
    }
    const json& metadata = object["metadata"];
    KubePod pod;
    pod.uid = metadata.value("uid", std::string());
    pod.name = metadata.value("name", std::string());
    pod.namespace_name = metadata.value("namespace", std::string());
    if (pod.uid.empty() || pod.name.empty()) {
        if (error) *error = "pod without uid or name";
        return std::nullopt;
    }
    if (metadata.contains("labels") && metadata["labels"].is_object())
        for (const auto& [k, v] : metadata["labels"].items())
            if (v.is_string()) pod.labels[k] = v.get<std::string>();
    pod.owner = owner_of(metadata, pod.labels);
    if (object.contains("spec")) pod.node = object["spec"].value("nodeName", std::string());
    if (object.contains("status")) pod.pod_ip = object["status"].value("podIP", std::string());
    return pod;
}

struct BoundedBody {
    std::string text;
    size_t limit = 0;
    bool too_long = false;
};

size_t append_bounded(char* data, size_t size, size_t n, void* target) {
    auto* body = static_cast<BoundedBody*>(target);
    if (body->text.size() + size * n > body->limit) {
        body->too_long = true;
        return 0;  // aborts the transfer (CURLE_WRITE_ERROR)
    }
    body->text.append(data, size * n);
    return size * n;
}

struct CurlDeleter {
    void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
    void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

}  // namespace

std::optional<KubeApiOptions> KubeApiOptions::in_cluster(std::string* error) {
    const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
    const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
    if (!host || !port) {
        if (error) *error = "not in a Kubernetes pod (KUBERNETES_SERVICE_HOST/PORT unset)";
        return std::nullopt;
    }
    KubeApiOptions o;
    std::string h = host;
    o.url = h.find(':') != std::string::npos ? fmt::format("https://[{}]:{}", h, port)
                                              : fmt::format("https://{}:{}", h, port);
    if (const char* node = std::getenv("NODE_NAME")) o.node_name = node;
    return o;
}

std::optional<KubePod> parse_kube_pod(const std::string& text, std::string* error) {
    try {
        return pod_from(json::parse(text), error);
    } catch (const std::exception& e) {
        if (error) *error = e.what();
        return std::nullopt;
    }
}

KubeApiClient::KubeApiClient(KubeApiOptions options) : options_(std::move(options)) {
    static std::once_flag curl_ready;
    std::call_once(curl_ready, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    if (options_.node_name.empty()) {
        char name[256] = {};
        gethostname(name, sizeof name - 1);
        options_.node_name = name;
    }
}

KubeApiClient::~KubeApiClient() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
}

void KubeApiClient::start() {
    if (!thread_.joinable()) thread_ = std::thread([this] {
        pthread_setname_np(pthread_self(), "tcpwhy-kube-api");  // for ps and /proc/PID/task/*/comm
        run();
    });
}

KubeApiStatus KubeApiClient::status() const {
    std::lock_guard lock(mutex_);
    KubeApiStatus s = status_;
    s.pods = pods_.size();
    return s;
}

bool KubeApiClient::enrich(Workload& w) const {
    if (w.pod_uid.empty()) return false;
    std::lock_guard lock(mutex_);
    auto it = pods_.find(w.pod_uid);
    if (it == pods_.end()) return false;
    const KubePod& p = it->second;
    w.labels = p.labels;
    w.pod_ip = p.pod_ip;
    w.owner = p.owner;
    if (w.pod.empty()) w.pod = p.name;
    if (w.namespace_name.empty()) w.namespace_name = p.namespace_name;
    return true;
}

void KubeApiClient::fail(const std::string& error) {
    std::lock_guard lock(mutex_);
    status_.errors++;
    status_.last_error = error;
}

void KubeApiClient::run() {
    uint32_t backoff_ms = options_.initial_backoff_ms;
    auto pause_ms = [this](uint32_t ms) {
        for (uint32_t waited = 0; waited < ms && !stop_; waited += 50)
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
    };
    // A failed list or watch waits before the next list, doubling each time; only a watch
    // that worked resets the wait. (A list that works followed by a watch that fails at once
    // is a failure too: otherwise every node relists as fast as the API answers.)
    auto failed = [&] {
        pause_ms(backoff_ms);
        backoff_ms = std::min(backoff_ms * 2, options_.max_backoff_ms);
    };
    while (!stop_) {
        std::string version;
        if (!list(&version)) {
            failed();
            continue;
        }
        WatchEnd end = WatchEnd::resume;
        while (!stop_ && end == WatchEnd::resume) {
            end = watch(&version);
            if (end == WatchEnd::resume) backoff_ms = options_.initial_backoff_ms;
        }
        if (stop_) break;
        if (end == WatchEnd::failed) failed();
        else pause_ms(200);  // the version expired (410): relist from the cache
    }
}

namespace {

// One request's handle with what every request needs: the token, the CA, timeouts.
std::unique_ptr<CURL, CurlDeleter> make_request(const KubeApiOptions& o, const std::string& url, curl_slist** headers,
                                                const std::string& token) {
    std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
    if (!curl) return curl;
    curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
    // The token goes over TLS or not at all: no http://, and no redirect anywhere.
    curl_easy_setopt(curl.get(), CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(curl.get(), CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl.get(), CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(o.connect_timeout_ms));
    curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
    // A connection whose peer vanished (node failover, a NAT that forgot it) is noticed by the
    // kernel's keep-alive probes and by the low-speed limit, not after hours.
    curl_easy_setopt(curl.get(), CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(curl.get(), CURLOPT_TCP_KEEPIDLE, 30L);
    curl_easy_setopt(curl.get(), CURLOPT_TCP_KEEPINTVL, 10L);
    curl_easy_setopt(curl.get(), CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl.get(), CURLOPT_LOW_SPEED_TIME, static_cast<long>(o.low_speed_time_s));
    if (!o.ca_file.empty()) curl_easy_setopt(curl.get(), CURLOPT_CAINFO, o.ca_file.c_str());
    *headers = curl_slist_append(*headers, "Accept: application/json");
    if (!token.empty()) *headers = curl_slist_append(*headers, ("Authorization: Bearer " + token).c_str());
    curl_easy_setopt(curl.get(), CURLOPT_HTTPHEADER, *headers);
    return curl;
}

}  // namespace

bool KubeApiClient::list(std::string* resource_version) {
    if (!options_.url.starts_with("https://")) {
        fail(fmt::format("refusing to send the service-account token to {}: only https:// is used", options_.url));
        return false;
    }
    std::string token = read_file_trimmed(options_.token_file);  // projected tokens rotate: read per request
    // resourceVersion=0: served from the API server's watch cache, not a quorum read of etcd
    // (every node lists at once after a control-plane restart).
    std::string url = fmt::format("{}/api/v1/pods?fieldSelector={}&resourceVersion=0", options_.url,
                                  url_escape("spec.nodeName=" + options_.node_name));
    curl_slist* raw_headers = nullptr;
    auto curl = make_request(options_, url, &raw_headers, token);
    std::unique_ptr<curl_slist, SlistDeleter> headers(raw_headers);
    if (!curl) {
        fail("curl_easy_init failed");
        return false;
    }
    BoundedBody body{{}, options_.max_list_bytes};
    curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, append_bounded);
    curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, 30000L);
    CURLcode rc = curl_easy_perform(curl.get());
    long http = 0;
    curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &http);
    if (body.too_long) {
        fail(fmt::format("list pods from {}: answer larger than {} bytes", options_.url, options_.max_list_bytes));
        return false;
    }
    if (rc != CURLE_OK) {
        fail(fmt::format("list pods from {}: {}", options_.url, curl_easy_strerror(rc)));
        return false;
    }
    if (http != 200) {
        fail(fmt::format("list pods from {}: HTTP {}", options_.url, http));
        return false;
    }
    try {
        json list = json::parse(body.text);
        std::unordered_map<std::string, KubePod> pods;
        for (const auto& item : list.at("items")) {
            std::string error;
            if (auto pod = pod_from(item, &error)) pods[pod->uid] = std::move(*pod);
        }
        *resource_version = list.at("metadata").value("resourceVersion", std::string());
        std::lock_guard lock(mutex_);
        pods_ = std::move(pods);
        status_.synced = true;
        status_.lists++;
    } catch (const std::exception& e) {
        fail(fmt::format("list pods: bad response: {}", e.what()));
        return false;
    }
    generation_++;
    return true;
}

void KubeApiClient::apply_event(const std::string& line, std::string* resource_version, bool* expired) {
    try {
        json event = json::parse(line);
        std::string type = event.value("type", std::string());
        const json& object = event.at("object");
        if (type == "ERROR") {
            // 410 Gone: the version is too old; relist.
            *expired = true;
            fail(fmt::format("watch: {}", object.value("message", std::string("error event"))));
            return;
        }
        if (object.contains("metadata"))
            *resource_version = object["metadata"].value("resourceVersion", *resource_version);
        if (type == "BOOKMARK") return;
        std::string error;
        auto pod = pod_from(object, &error);
        if (!pod) {
            fail("watch: " + error);
            return;
        }
        {
            std::lock_guard lock(mutex_);
            if (type == "DELETED") pods_.erase(pod->uid);
            else pods_[pod->uid] = std::move(*pod);
            status_.watch_events++;
        }
        generation_++;
    } catch (const std::exception& e) {
        fail(fmt::format("watch: bad event: {}", e.what()));
    }
}

KubeApiClient::WatchEnd KubeApiClient::watch(std::string* resource_version) {
    std::string token = read_file_trimmed(options_.token_file);
    std::string url = fmt::format("{}/api/v1/pods?fieldSelector={}&watch=1&allowWatchBookmarks=true&timeoutSeconds=300"
                                  "&resourceVersion={}",
                                  options_.url, url_escape("spec.nodeName=" + options_.node_name),
                                  url_escape(*resource_version));
    curl_slist* raw_headers = nullptr;
    auto curl = make_request(options_, url, &raw_headers, token);
    std::unique_ptr<curl_slist, SlistDeleter> headers(raw_headers);
    if (!curl) return WatchEnd::failed;

    struct Stream {
        KubeApiClient* self;
        std::string buffer;
        std::string version;
        size_t max_line_bytes;
        bool expired = false;
        bool line_too_long = false;
        uint64_t events = 0;
    } stream{this, {}, *resource_version, options_.max_line_bytes};
    auto on_data = +[](char* data, size_t size, size_t n, void* target) -> size_t {
        auto* s = static_cast<Stream*>(target);
        s->buffer.append(data, size * n);
        size_t start = 0, newline;
        while ((newline = s->buffer.find('\n', start)) != std::string::npos) {
            std::string line = s->buffer.substr(start, newline - start);
            start = newline + 1;
            if (!line.empty()) {
                s->self->apply_event(line, &s->version, &s->expired);
                ++s->events;
            }
        }
        s->buffer.erase(0, start);
        // What an API server (or whatever answers in its place) sends without a newline must
        // not grow without bound.
        if (s->buffer.size() > s->max_line_bytes) {
            s->line_too_long = true;
            return 0;  // aborts the transfer
        }
        return size * n;
    };
    auto on_progress = +[](void* self, curl_off_t, curl_off_t, curl_off_t, curl_off_t) -> int {
        return static_cast<KubeApiClient*>(self)->stop_.load() ? 1 : 0;  // non-zero aborts the transfer
    };
    curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &stream);
    curl_easy_setopt(curl.get(), CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl.get(), CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl.get(), CURLOPT_XFERINFODATA, this);
    auto started = std::chrono::steady_clock::now();
    CURLcode rc = curl_easy_perform(curl.get());
    long http = 0;
    curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &http);
    if (stop_) return WatchEnd::relist;
    if (stream.line_too_long) {
        fail(fmt::format("watch pods: an event line longer than {} bytes", options_.max_line_bytes));
        return WatchEnd::failed;
    }
    if (http != 200) {
        fail(rc != CURLE_OK ? fmt::format("watch pods: {}", curl_easy_strerror(rc))
                            : fmt::format("watch pods: HTTP {}", http));
        return WatchEnd::failed;
    }
    if (stream.expired) return WatchEnd::relist;
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        // Silent past the low-speed limit: counted, and listed again (from the cache) on a new
        // connection.
        fail(fmt::format("watch pods: nothing received for {} s; reconnecting", options_.low_speed_time_s));
        *resource_version = stream.version;
        return WatchEnd::relist;
    }
    if (rc != CURLE_OK) {
        fail(fmt::format("watch pods: {}", curl_easy_strerror(rc)));
        return WatchEnd::failed;
    }
    // The server ended the watch (timeoutSeconds): resume from where it was, unless it ended
    // at once with nothing in it, which is a failure that must not be retried in a loop.
    *resource_version = stream.version;
    bool brief = std::chrono::steady_clock::now() - started < std::chrono::seconds(1);
    if (brief && stream.events == 0) {
        fail("watch pods: the server ended the watch at once");
        return WatchEnd::failed;
    }
    return WatchEnd::resume;
}

}  // namespace tcpwhy
