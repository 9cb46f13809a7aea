#pragma once

#include <string>

namespace fs::cli {

// Detaches into the background while the foreground process waits for the outcome: the command
// returns only once the mount is live, or fails with the daemon's one-line error.
class DaemonHandshake {
public:
    // Forks. Returns in the child (the daemon); the parent exits with the daemon's verdict.
    void detach();
    void report_ready();                         // releases the parent with exit code 0
    void report_failure(const std::string& why); // parent prints `why`, exits 1
    bool detached() const { return m_fd >= 0; }

private:
    int m_fd = -1;
};

} // namespace fs::cli
