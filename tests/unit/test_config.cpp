// Config file parsing, environment settings and layer precedence (cachecore/util/config_file).
#include "cachecore/util/config_file.hpp"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <map>
#include <unistd.h>

using cachecore::util::merge_settings;
using cachecore::util::parse_config;
using cachecore::util::Setting;

namespace {

std::map<std::string, std::string> as_map(const std::vector<Setting>& settings) {
    std::map<std::string, std::string> out;
    for (const auto& s : settings) out[s.key] = s.value;
    return out;
}

} // namespace

TEST(ConfigFile, ParsesKeyValueLinesCommentsAndFlags) {
    auto p = parse_config("# a comment\n"
                          "\n"
                          "store = /var/cache/pycachefs   # trailing comment\n"
                          "  max-size=500M\n"
                          "Pyc_Mode = checked-hash\n"
                          "allow_other\n"
                          "log_file = \"/tmp/with # hash.log\"\n"
                          "ro\n",
                          "test.conf");
    ASSERT_TRUE(p.errors.empty()) << p.errors.front();
    ASSERT_EQ(p.settings.size(), 6u);
    EXPECT_EQ(p.settings[0].key, "store");
    EXPECT_EQ(p.settings[0].value, "/var/cache/pycachefs");
    EXPECT_EQ(p.settings[0].origin, "test.conf:3");
    EXPECT_EQ(p.settings[1].key, "max_size"); // dashes and underscores are the same key
    EXPECT_EQ(p.settings[1].value, "500M");
    EXPECT_EQ(p.settings[2].key, "pyc_mode"); // case-insensitive keys
    EXPECT_EQ(p.settings[3].key, "allow_other");
    EXPECT_EQ(p.settings[3].value, "");
    EXPECT_EQ(p.settings[4].value, "/tmp/with # hash.log");
    EXPECT_EQ(p.settings[5].key, "rw"); // ro is rw=0
    EXPECT_EQ(p.settings[5].value, "0");
}

TEST(ConfigFile, ValueKeepsInnerHashWithoutSpace) {
    auto p = parse_config("python = /opt/py#3/bin/python3\n", "c");
    ASSERT_TRUE(p.errors.empty());
    EXPECT_EQ(p.settings.at(0).value, "/opt/py#3/bin/python3");
}

TEST(ConfigFile, ReportsBadLinesWithFileAndLine) {
    auto p = parse_config("store = /x\n= nokey\nmax size = 1G\nlog_file = \"open\n", "my.conf");
    ASSERT_EQ(p.errors.size(), 3u);
    EXPECT_NE(p.errors[0].find("my.conf:2"), std::string::npos) << p.errors[0];
    EXPECT_NE(p.errors[1].find("my.conf:3"), std::string::npos) << p.errors[1];
    EXPECT_NE(p.errors[2].find("my.conf:4"), std::string::npos) << p.errors[2];
    EXPECT_EQ(p.settings.size(), 1u);
}

TEST(ConfigFile, LoadMissingFileIsNoConfigAndRealFileParses) {
    const std::string dir = ::testing::TempDir() + "pcfs-config-" + std::to_string(::getpid());
    std::filesystem::create_directories(dir);
    EXPECT_FALSE(cachecore::util::load_config_file(dir + "/absent.conf").has_value());
    { std::ofstream(dir + "/p.conf") << "max_size = 1G\n"; }
    auto loaded = cachecore::util::load_config_file(dir + "/p.conf");
    ASSERT_TRUE(loaded.has_value());
    ASSERT_EQ(loaded->settings.size(), 1u);
    EXPECT_EQ(loaded->settings[0].origin, dir + "/p.conf:1");
    std::filesystem::remove_all(dir);
}

TEST(ConfigFile, EnvironmentSettingsSplitPythonOnColons) {
    std::map<std::string, std::string> env = {
        {"PYCACHEFS_STORE", "/s"},    {"PYCACHEFS_PYTHON", "/usr/bin/python3.11::/opt/python3.12"},
        {"PYCACHEFS_MAX_SIZE", "2G"}, {"PYCACHEFS_LOG_LEVEL", ""}, // empty counts as unset
        {"PYCACHEFS_UNKNOWN", "x"},
    };
    auto settings = cachecore::util::settings_from_environment([&](const char* name) {
        auto it = env.find(name);
        return it == env.end() ? static_cast<const char*>(nullptr) : it->second.c_str();
    });
    std::vector<std::string> pythons;
    std::map<std::string, std::string> single;
    for (const auto& s : settings) {
        if (s.key == "python")
            pythons.push_back(s.value);
        else
            single[s.key] = s.value;
    }
    EXPECT_EQ(pythons, (std::vector<std::string>{"/usr/bin/python3.11", "/opt/python3.12"}));
    EXPECT_EQ(single, (std::map<std::string, std::string>{{"store", "/s"}, {"max_size", "2G"}}));
    for (const auto& s : settings) {
        if (s.key == "store") {
            EXPECT_EQ(s.origin, "PYCACHEFS_STORE");
        }
    }
}

TEST(ConfigFile, HigherLayersWinPerKey) {
    std::vector<Setting> file = {{"store", "/file", "f"},
                                 {"max_size", "1G", "f"},
                                 {"pyc_mode", "checked-hash", "f"},
                                 {"log_level", "info", "f"}};
    std::vector<Setting> env = {{"max_size", "2G", "e"}, {"pyc_mode", "unchecked-hash", "e"}};
    std::vector<Setting> o = {{"pyc_mode", "timestamp", "o"}};
    std::vector<Setting> cli = {{"log_level", "error", "c"}};
    auto merged = as_map(merge_settings({file, env, o, cli}));
    EXPECT_EQ(merged["store"], "/file");
    EXPECT_EQ(merged["max_size"], "2G");
    EXPECT_EQ(merged["pyc_mode"], "timestamp");
    EXPECT_EQ(merged["log_level"], "error");
}

TEST(ConfigFile, RepeatableKeyTakesAllValuesOfTheWinningLayerOnly) {
    std::vector<Setting> file = {{"python", "/a", "f"}, {"python", "/b", "f"}};
    std::vector<Setting> env = {{"python", "/c", "e"}, {"python", "/d", "e"}};
    auto merged = merge_settings({file, env, {}});
    ASSERT_EQ(merged.size(), 2u);
    EXPECT_EQ(merged[0].value, "/c");
    EXPECT_EQ(merged[1].value, "/d");
    // Without the env layer, the file's two values stay.
    EXPECT_EQ(merge_settings({file}).size(), 2u);
}

TEST(ConfigFile, LastValueWithinOneLayerWins) {
    auto merged = merge_settings({{{"max_size", "1G", "a"}, {"max_size", "3G", "b"}}});
    ASSERT_EQ(merged.size(), 1u);
    EXPECT_EQ(merged[0].value, "3G");
    EXPECT_EQ(merged[0].origin, "b");
}
