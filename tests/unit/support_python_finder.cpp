#include "support_python_finder.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <glob.h>
#include <optional>
#include <poll.h>
#include <regex>
#include <set>
#include <signal.h>
#include <spawn.h>
#include <sstream>
#include <stdexcept>
#include <sys/stat.h>
#include <sys/wait.h>
#include <tuple>
#include <unistd.h>

namespace pycachefs::test {

namespace {

constexpr const char* k_probe_script =
    "import sys, importlib.util\n"
    "v = sys.version_info\n"
    "print(sys.implementation.name, v[0], v[1], v[2], sys.implementation.cache_tag,\n"
    "      importlib.util.MAGIC_NUMBER.hex())\n";

std::vector<std::string> glob_paths(const std::string& pattern) {
    std::vector<std::string> out;
    glob_t g{};
    if (::glob(pattern.c_str(), 0, nullptr, &g) == 0) {
        for (std::size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
    }
    ::globfree(&g);
    return out;
}

std::optional<cachecore::python::Interpreter> ask(const std::string& path) {
    auto r = run_process({path, "-I", "-S", "-c", k_probe_script}, {}, std::chrono::seconds(30));
    if (r.exit_code != 0) return std::nullopt;
    std::istringstream in(r.out);
    std::string impl, tag, magic_hex;
    cachecore::python::Interpreter it;
    if (!(in >> impl >> it.major >> it.minor >> it.micro >> tag >> magic_hex)) return std::nullopt;
    if (impl != "cpython" || it.major != 3 || it.minor < 6 || magic_hex.size() != 8)
        return std::nullopt;
    it.path = path;
    it.version =
        std::to_string(it.major) + "." + std::to_string(it.minor) + "." + std::to_string(it.micro);
    it.cache_tag = tag;
    for (int i = 0; i < 4; ++i)
        it.magic[i] = std::uint8_t(std::stoul(magic_hex.substr(i * 2, 2), nullptr, 16));
    return it;
}

std::vector<cachecore::python::Interpreter> find_all() {
    static const std::regex k_name(R"(python3\.[0-9]+)");
    std::vector<std::string> candidates = glob_paths("/root/.pyenv/versions/*/bin/python3.*");
    for (auto& p : glob_paths("/usr/bin/python3.*")) candidates.push_back(p);

    std::set<std::string> seen;
    std::vector<cachecore::python::Interpreter> out;
    for (const auto& p : candidates) {
        if (!std::regex_match(std::filesystem::path(p).filename().string(), k_name)) continue;
        std::error_code ec;
        auto real = std::filesystem::canonical(p, ec);
        if (ec || !seen.insert(real.string()).second) continue;
        if (::access(p.c_str(), X_OK) != 0) continue;
        if (auto it = ask(p)) out.push_back(*it);
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
        return std::tie(a.minor, a.micro, a.path) < std::tie(b.minor, b.micro, b.path);
    });
    return out;
}

void set_cloexec_pipe(int fds[2]) {
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
}

} // namespace

const std::vector<cachecore::python::Interpreter>& test_pythons() {
    static const std::vector<cachecore::python::Interpreter> k_all = find_all();
    return k_all;
}

std::vector<cachecore::python::Interpreter> test_pythons_with_hash_pycs() {
    std::vector<cachecore::python::Interpreter> out;
    for (const auto& p : test_pythons())
        if (p.supports_hash_pycs()) out.push_back(p);
    return out;
}

std::string describe(const cachecore::python::Interpreter& interpreter) {
    return interpreter.version + " (" + interpreter.path + ")";
}

ProcessResult run_process(const std::vector<std::string>& argv, const std::string& input,
                          std::chrono::milliseconds timeout, const std::vector<std::string>& env) {
    ProcessResult result;
    if (argv.empty()) return result;
    int in_pipe[2], out_pipe[2], err_pipe[2];
    set_cloexec_pipe(in_pipe);
    set_cloexec_pipe(out_pipe);
    set_cloexec_pipe(err_pipe);

    posix_spawn_file_actions_t actions;
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawn_file_actions_adddup2(&actions, in_pipe[0], 0);
    ::posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
    ::posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);

    std::vector<char*> c_argv, c_env;
    for (const auto& a : argv) c_argv.push_back(const_cast<char*>(a.c_str()));
    c_argv.push_back(nullptr);
    for (const auto& e : env) c_env.push_back(const_cast<char*>(e.c_str()));
    c_env.push_back(nullptr);

    pid_t pid = -1;
    int rc = ::posix_spawn(&pid, argv[0].c_str(), &actions, nullptr, c_argv.data(), c_env.data());
    ::posix_spawn_file_actions_destroy(&actions);
    ::close(in_pipe[0]);
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    if (rc != 0) {
        ::close(in_pipe[1]);
        ::close(out_pipe[0]);
        ::close(err_pipe[0]);
        result.err = std::string("posix_spawn: ") + std::strerror(rc);
        return result;
    }

    // Non-blocking stdin so a child that never reads cannot wedge us.
    ::fcntl(in_pipe[1], F_SETFL, O_NONBLOCK);
    std::size_t written = 0;
    int in_fd = in_pipe[1];
    if (input.empty()) {
        ::close(in_fd);
        in_fd = -1;
    }
    int out_fd = out_pipe[0], err_fd = err_pipe[0];
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buf[65536];
    while (out_fd >= 0 || err_fd >= 0) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            result.timed_out = true;
            ::kill(pid, SIGKILL);
            break;
        }
        pollfd fds[3];
        int n = 0;
        int idx_in = -1, idx_out = -1, idx_err = -1;
        if (in_fd >= 0) fds[idx_in = n++] = {in_fd, POLLOUT, 0};
        if (out_fd >= 0) fds[idx_out = n++] = {out_fd, POLLIN, 0};
        if (err_fd >= 0) fds[idx_err = n++] = {err_fd, POLLIN, 0};
        int pr = ::poll(fds, n, int(std::min<long long>(left.count(), 1000)));
        if (pr < 0 && errno != EINTR) break;
        if (pr <= 0) continue;
        if (idx_in >= 0 && fds[idx_in].revents) {
            ssize_t w = ::write(in_fd, input.data() + written, input.size() - written);
            if (w > 0) written += std::size_t(w);
            if (w < 0 && errno != EAGAIN && errno != EINTR) written = input.size();
            if (written >= input.size()) {
                ::close(in_fd);
                in_fd = -1;
            }
        }
        auto drain = [&](int idx, int& fd, std::string& sink) {
            if (idx < 0 || !fds[idx].revents) return;
            ssize_t r = ::read(fd, buf, sizeof buf);
            if (r > 0) {
                sink.append(buf, std::size_t(r));
            } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
                ::close(fd);
                fd = -1;
            }
        };
        drain(idx_out, out_fd, result.out);
        drain(idx_err, err_fd, result.err);
    }
    for (int fd : {in_fd, out_fd, err_fd})
        if (fd >= 0) ::close(fd);

    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
    return result;
}

TempDir::TempDir(const std::string& prefix) {
    std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    m_path = tmpl;
}

TempDir::~TempDir() {
    std::error_code ec;
    // Undo permission tricks a test may have played so removal cannot fail half way.
    for (auto it = std::filesystem::recursive_directory_iterator(
             m_path, std::filesystem::directory_options::skip_permission_denied, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
        if (it->is_directory(ec) && !it->is_symlink(ec)) ::chmod(it->path().c_str(), 0700);
    }
    std::filesystem::remove_all(m_path, ec);
}

void write_file(const std::filesystem::path& path, const std::string& data) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error("cannot write " + path.string());
    out.write(data.data(), std::streamsize(data.size()));
    if (!out) throw std::runtime_error("short write " + path.string());
}

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path.string());
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

} // namespace pycachefs::test
